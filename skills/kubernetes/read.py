"""The read skills: ``k8s.pods``, ``k8s.describe``, ``k8s.events``, ``k8s.logs``,
``k8s.rollout.status``, ``k8s.rollout.history``; and the lookups the write skills share
(:func:`resolve_deployment`, :func:`resolve_workload`, :func:`revisions`,
:func:`workload_revisions`).

The rollout skills and the writes take a ``kind`` (``deployment``, the default,
``statefulset`` or ``daemonset``), as ``kubectl rollout status/history/undo/restart`` and
``kubectl scale`` take ``deploy/x``, ``sts/x`` or ``ds/x``.

Every call runs as the actor's impersonated identity (``ctx.impersonate``), so the cluster's
RBAC decides what each person may read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from opsbot.durations import Duration, parse_duration
from opsbot.grounding import ground
from opsbot.meaning import Count, Flag, Grounded, ObjectKind, Since
from opsbot.model import Code, SkillResult, Table, Text
from opsbot.redact import redact
from opsbot.skills.base import Risk, Skill, SkillContext, SkillError
from opsbot.skills.kubernetes.errors import KubeNotFound
from opsbot.skills.kubernetes.objects import (
    REVISION,
    annotations_of,
    condition_rows,
    controlled_revisions,
    controller_history_rows,
    current_revision,
    describe_fields,
    event_row,
    event_time,
    history_rows,
    matches,
    owned_revisions,
    parse_selector,
    pod_rank,
    pod_row,
    recent_events,
    selector_of,
    selector_string,
    workload_status,
)

if TYPE_CHECKING:
    from opsbot.skills.kubernetes import Kubernetes
    from opsbot.skills.kubernetes.client import Kube

DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
MAX_LOG_CHARS = 3500
MAX_LOG_PODS = 3

Name = Field(pattern=DNS_NAME, max_length=253, description="object name, e.g. checkout")
Namespace = Field(pattern=DNS_LABEL, max_length=63, description="Kubernetes namespace, e.g. shop")
#: what the arguments mean (opsbot.meaning): grounded against the inventory by both planners
InNamespace = Annotated[str, Grounded("namespace")]
Deployment = Annotated[str, Grounded("deployment")]
DeploymentOrPod = Annotated[str, Grounded("deployment", also=("pod",))]
#: the kinds ``kubectl rollout`` acts on (``kubectl scale``: not a daemonset)
WorkloadKind = Literal["deployment", "statefulset", "daemonset"]
WORKLOAD_KINDS: tuple[str, ...] = ("deployment", "statefulset", "daemonset")


# -- lookups ---------------------------------------------------------------------------------


async def resolve_deployment(api: Kube, namespace: str, name: str) -> dict[str, Any]:
    """GET the deployment; when it does not exist, say what does ("did you mean")."""
    try:
        return await api.deployment(namespace, name)
    except KubeNotFound:
        pass
    existing = [d["metadata"]["name"] for d in await api.deployments(namespace)]
    if not existing:
        hint = ""
        try:
            namespaces = await api.namespaces()
        except SkillError:
            namespaces = []
        if namespaces and namespace not in namespaces:
            guess = ground(namespace, namespaces)
            hint = f" Namespace {namespace} does not exist" + (
                f"; did you mean {guess.value}?" if guess.value else "."
            )
        raise SkillError(f"There is no deployment {name} in namespace {namespace}.{hint}")
    guess = ground(name, existing)
    if guess.value:
        raise SkillError(
            f"There is no deployment {name} in namespace {namespace}; did you mean {guess.value}?"
        )
    if guess.candidates:
        raise SkillError(
            f"There is no deployment {name} in namespace {namespace}; which one: {', '.join(guess.candidates)}?"
        )
    raise SkillError(
        f"There is no deployment {name} in namespace {namespace} (it has: {', '.join(sorted(existing)[:10])})."
    )


async def resolve_workload(api: Kube, kind: str, namespace: str, name: str) -> dict[str, Any]:
    """GET the deployment, statefulset or daemonset; when it does not exist, say what does:
    the same name as another kind ("There is no statefulset checkout in namespace shop:
    checkout is a deployment"), else a close name of the kind ("did you mean")."""
    if kind == "deployment":
        try:
            return await api.deployment(namespace, name)
        except KubeNotFound:
            pass
    else:
        try:
            return await api.read(kind, namespace, name)
        except KubeNotFound:
            pass
    for other in WORKLOAD_KINDS:
        if other == kind:
            continue
        try:
            await api.read(other, namespace, name)
        except KubeNotFound:
            continue
        except SkillError:
            break  # no right to read it (RBAC): say what the kind has instead
        raise SkillError(
            f"There is no {kind} {name} in namespace {namespace}: {name} is a {other}"
            f" (ask for {other} {name}"
            + (", or leave the kind out" if other == "deployment" else "")
            + ")."
        )
    if kind == "deployment":
        await resolve_deployment(api, namespace, name)  # raises, saying what there is
    existing = [o["metadata"]["name"] for o in await api.workloads(kind, namespace)]
    guess = ground(name, existing) if existing else None
    if guess and guess.value:
        raise SkillError(
            f"There is no {kind} {name} in namespace {namespace}; did you mean {guess.value}?"
        )
    if guess and guess.candidates:
        raise SkillError(
            f"There is no {kind} {name} in namespace {namespace}; which one: {', '.join(guess.candidates)}?"
        )
    has = f" (it has: {', '.join(sorted(existing)[:10])})" if existing else ""
    raise SkillError(f"There is no {kind} {name} in namespace {namespace}{has}.")


async def workload_revisions(
    api: Kube, kind: str, obj: dict[str, Any]
) -> dict[int, dict[str, Any]]:
    """A workload's revisions by number: a deployment's ReplicaSets (:func:`revisions`), a
    statefulset's or daemonset's ControllerRevisions (listed with its label selector, kept
    when it controls them: kubectl's ``controlledHistory``)."""
    if kind == "deployment":
        return await revisions(api, obj)
    selector = selector_string(selector_of(obj)) or None
    listed = await api.controller_revisions(obj["metadata"]["namespace"], selector)
    return controlled_revisions(obj, listed)


async def revisions(api: Kube, dep: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The deployment's ReplicaSets by revision (owned by it and matching its selector)."""
    selector = selector_string(selector_of(dep)) or None
    return owned_revisions(dep, await api.replicasets(dep["metadata"]["namespace"], selector))


# -- argument models ---------------------------------------------------------------------------


class PodsArgs(BaseModel):
    namespace: InNamespace = Namespace
    name: Annotated[str | None, Grounded("deployment")] = Field(
        None, pattern=DNS_NAME, description="deployment/app whose pods to show"
    )
    selector: Annotated[str | None, Flag("selector")] = Field(
        None, max_length=500, description="label selector, e.g. app=checkout"
    )


class DescribeArgs(BaseModel):
    kind: Annotated[
        Literal["deployment", "pod", "statefulset", "daemonset", "service", "node"], ObjectKind()
    ] = "deployment"
    name: Annotated[str, Grounded("deployment", kind_field="kind")] = Name
    namespace: Annotated[str | None, Grounded("namespace")] = Field(
        None, pattern=DNS_LABEL, description="namespace (not for nodes)"
    )


class EventsArgs(BaseModel):
    namespace: InNamespace = Namespace
    name: Annotated[str | None, Grounded("deployment", also=("pod",))] = Field(
        None, pattern=DNS_NAME, description="object (or name prefix) the events are about"
    )
    since: Annotated[Duration, Since()] = Field("1h", description="how far back, e.g. 30m")


class LogsArgs(BaseModel):
    name: DeploymentOrPod = Field(
        pattern=DNS_NAME, description="pod, or deployment whose pods to read"
    )
    namespace: InNamespace = Namespace
    container: Annotated[str | None, Flag("container")] = Field(
        None, pattern=DNS_LABEL, description="container name"
    )
    since: Annotated[Duration | None, Since()] = Field(
        None, description="only lines newer than this, e.g. 15m"
    )
    tail: Annotated[int, Count("lines")] = Field(
        100, ge=1, le=2000, description="last N lines per pod"
    )


class WorkloadArgs(BaseModel):
    """A workload: ``kind`` (``kubectl``'s ``deploy/x``, ``sts/x``, ``ds/x``; the default,
    ``deployment``, is left out of the arguments an invocation carries, so a deployment's
    plan, approval and audit record read as before ``kind`` existed), name and namespace."""

    kind: Annotated[WorkloadKind, ObjectKind()] = Field(
        "deployment", description="deployment (default), statefulset or daemonset"
    )
    name: Annotated[str, Grounded("deployment", kind_field="kind")] = Field(
        pattern=DNS_NAME, max_length=253, description="workload name, e.g. checkout"
    )
    namespace: InNamespace = Namespace

    @model_serializer(mode="wrap")
    def _without_default_kind(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        if dumped.get("kind") == "deployment":
            dumped.pop("kind")
        return dumped


class WorkloadRouting:
    """``route_args`` of the workload skills (offline router): a kind they do not act on
    ("restart the checkout pods", "roll back the payments service") means the deployment,
    the default; so does no kind said."""

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        if found.get("kind") not in WORKLOAD_KINDS:
            return {**found, "kind": "deployment"}
        return found


# -- skills ------------------------------------------------------------------------------------


class K8sPods(Skill[PodsArgs, "Kubernetes"]):
    name = "k8s.pods"
    summary = "Pods with status, readiness, restarts, age and node (troubled pods first)"
    Args = PodsArgs
    risk = Risk.READ
    examples = [
        "show pods in shop",
        "list the pods of checkout in namespace shop",
        "which pods are crashlooping in staging?",
    ]
    keywords = {
        "pod": 2.5,
        "<recipe>": -1.5,  # "top 5 pods by CPU": a PromQL recipe, not the pod list
        "crashloop": 2.0,
        "crash": 1.5,
        "container": 0.5,
        "=running": 1.2,  # "what's running in staging"
        "why": -2.0,  # "why is the checkout pod crashlooping": a diagnosis
        "line": -1.5,  # "pull the last 100 lines from the payments pods": their logs
        "node": 1.5,  # "what node is checkout on": the pods' node column
        "=deployments": 2.0,  # "show deployments in shop": the pods, by workload
        "=workloads": 2.0,
        "log": -1.5,
        "describe": -2.0,
        "event": -1.5,
        "scale": -1.0,
        "restart": -1.0,
        "delete": -1.0,
    }

    async def run(self, args: PodsArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        api = await ctx.backend.api(ctx.impersonate)
        labels: dict[str, str] = {}
        if args.selector:
            labels = parse_selector(args.selector)
        elif args.name:
            try:
                labels = selector_of(await api.deployment(args.namespace, args.name))
            except KubeNotFound:
                labels = {}
        pods = await api.pods(args.namespace, selector_string(labels) or None)
        if labels:
            pods = [p for p in pods if matches(p, labels)]
        elif args.name:
            pods = [p for p in pods if p["metadata"]["name"].startswith(args.name)]
        what = f"{args.name or args.selector or 'all'} in {args.namespace}"
        if not pods:
            return SkillResult(
                summary=f"no pods for {what}", blocks=[Text(text=f"No pods for {what}.")]
            )
        pods.sort(key=pod_rank)
        troubled = sum(1 for p in pods if pod_rank(p)[0] < 3)
        table = Table.bounded(
            ["pod", "status", "ready", "restarts", "age", "node"],
            [pod_row(p) for p in pods],
            ctx.settings.max_rows,
            "pods",
        )
        return SkillResult(
            summary=f"{len(pods)} pods for {what}, {troubled} not ready",
            blocks=[table],
            data={"pods": len(pods), "troubled": troubled},
        )


class K8sDescribe(Skill[DescribeArgs, "Kubernetes"]):
    name = "k8s.describe"
    summary = (
        "The fields an SRE reads about a deployment, pod, statefulset, daemonset, service or node"
    )
    Args = DescribeArgs
    risk = Risk.READ
    examples = [
        "describe deployment payments -n shop",
        "describe pod checkout-7d9f8b6c5-x2k4p in shop",
        "details of node worker-1",
    ]
    keywords = {
        "describe": 3.0,  # and "details", "inspect", "spec" (the lexicon's synonyms)
        "how many replica": 1.5,  # what the deployment says: replicas, image, strategy
        "replica of": 2.0,  # "replicas of checkout in shop"
        "image": 1.5,
        "what version": 1.5,  # "what version of checkout is running": its image
        "resource limit": 2.0,  # "what's the resource limit on checkout"
        "resource request": 2.0,
        "which version": 1.5,
    }

    async def run(self, args: DescribeArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        api = await ctx.backend.api(ctx.impersonate)
        namespace = None if args.kind == "node" else args.namespace
        if args.kind != "node" and not namespace:
            raise SkillError(f"describing a {args.kind} needs a namespace")
        try:
            obj = await api.read(args.kind, namespace, args.name)
        except KubeNotFound as exc:
            if args.kind == "deployment" and namespace:
                await resolve_deployment(api, namespace, args.name)  # raises with "did you mean"
            raise SkillError(
                f"There is no {args.kind} {args.name}"
                + (f" in namespace {namespace}." if namespace else ".")
            ) from exc
        blocks: list[Any] = [
            Table(columns=["field", "value"], rows=describe_fields(args.kind, obj))
        ]
        if conditions := condition_rows(obj):
            blocks.append(
                Table(columns=["condition", "status", "reason", "message"], rows=conditions)
            )
        if namespace:
            events = [
                e
                for e in await api.events(namespace, args.name)
                if e.get("involvedObject", {}).get("name") == args.name
            ]
            events.sort(key=event_time, reverse=True)
            if events:
                blocks.append(
                    Table.bounded(
                        ["last seen", "type", "reason", "message"],
                        [event_row(e)[1:] for e in events],
                        8,
                        "events",
                    )
                )
        return SkillResult(summary=f"{args.kind} {args.name}", blocks=blocks)


class K8sEvents(Skill[EventsArgs, "Kubernetes"]):
    name = "k8s.events"
    summary = "Recent events in a namespace (warnings first), optionally about one object"
    Args = EventsArgs
    risk = Risk.READ
    examples = ["any warning events for payments in shop in the last 30m?", "events in staging"]
    keywords = {"event": 3.0, "warning": 1.0, "=warnings": 1.5, "what happened": 1.0}

    async def run(self, args: EventsArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        api = await ctx.backend.api(ctx.impersonate)
        cutoff = datetime.now(UTC) - parse_duration(args.since)
        events = recent_events(await api.events(args.namespace), cutoff, args.name)
        what = (
            f"{args.name + ' in ' if args.name else ''}{args.namespace} over the last {args.since}"
        )
        if not events:
            return SkillResult(
                summary=f"no events for {what}", blocks=[Text(text=f"No events for {what}.")]
            )
        warnings = sum(1 for e in events if e.get("type") == "Warning")
        table = Table.bounded(
            ["object", "last seen", "type", "reason", "message"],
            [event_row(e) for e in events],
            ctx.settings.max_rows,
            "events",
        )
        return SkillResult(
            summary=f"{len(events)} events ({warnings} warnings) for {what}",
            blocks=[table],
            data={"events": len(events), "warnings": warnings},
        )


class K8sLogs(Skill[LogsArgs, "Kubernetes"]):
    name = "k8s.logs"
    summary = "Recent log lines of a pod or of a deployment's pods (bounded, secrets redacted)"
    Args = LogsArgs
    risk = Risk.READ
    examples = [
        "tail the logs of checkout in shop",
        "last 200 lines of logs from payments, namespace shop",
    ]
    keywords = {
        "log": 2.5,
        "tail": 1.5,
        "line": 2.0,  # "pull the last 100 lines from the payments pods"
        "output": 0.5,
        "<logql>": -3.0,
        "<selector>": -2.0,
        "logql": -3.0,
        "match": -1.0,  # "logs from checkout matching 'timeout'": a line filter (logs.query)
        "error": -0.8,
        "top": -0.5,
    }

    async def run(self, args: LogsArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        api = await ctx.backend.api(ctx.impersonate)
        try:
            await api.read("pod", args.namespace, args.name)
            pods = [args.name]
        except KubeNotFound:
            dep = await resolve_deployment(api, args.namespace, args.name)
            labels = selector_of(dep)
            found = [
                p
                for p in await api.pods(args.namespace, selector_string(labels))
                if matches(p, labels)
            ]
            found.sort(key=pod_rank)
            pods = [p["metadata"]["name"] for p in found[:MAX_LOG_PODS]]
            if not pods:
                raise SkillError(
                    f"deployment {args.name} in {args.namespace} has no pods"
                ) from None
        since = int(parse_duration(args.since).total_seconds()) if args.since else None
        blocks: list[Any] = []
        budget = MAX_LOG_CHARS
        for pod in pods:
            text = await api.pod_log(
                args.namespace,
                pod,
                container=args.container,
                since_seconds=since,
                tail_lines=args.tail,
            )
            text = redact(text.rstrip())
            if len(text) > budget:
                text = "…" + text[-budget:]
            budget = max(500, budget - len(text))
            blocks.append(
                Text(
                    text=f"`{pod}` (last {args.tail} lines{', since ' + args.since if args.since else ''}):"
                )
            )
            blocks.append(Code(code=text or "(no output)", language="text"))
        return SkillResult(summary=f"logs of {len(pods)} pod(s) of {args.name}", blocks=blocks)


class K8sRolloutStatus(WorkloadRouting, Skill[WorkloadArgs, "Kubernetes"]):
    name = "k8s.rollout.status"
    summary = "Whether a deployment's, statefulset's or daemonset's rollout is complete (as kubectl rollout status)"
    Args = WorkloadArgs
    risk = Risk.READ
    examples = ["is the checkout rollout done in shop?", "rollout status payments -n shop"]
    keywords = {
        "rollout status": 3.0,
        "be * roll out": 2.0,  # "is checkout rolled out in shop"
        "finish deploy": 2.0,  # "has checkout finished deploying?"
        "rollout": 1.5,
        "roll out": 1.5,
        "status": 0.8,
        "=done": 1.0,
        "finished": 1.0,
        "complete": 1.0,
        "progress": 1.0,
        "history": -2.5,
        "undo": -3.0,
        "restart": -2.0,  # "rollout restart" is k8s.restart
        "back": -1.5,
        "revision": -1.0,
    }

    async def run(self, args: WorkloadArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        """kubectl's status viewers: a deployment's updated/available replicas, a
        statefulset's ready and updated replicas (``currentRevision``/``updateRevision``), a
        daemonset's ``desiredNumberScheduled``/``updatedNumberScheduled``/``numberAvailable``
        (:func:`~opsbot.skills.kubernetes.objects.workload_status`)."""
        api = await ctx.backend.api(ctx.impersonate)
        obj = await resolve_workload(api, args.kind, args.namespace, args.name)
        done, failed, message = workload_status(args.kind, obj)
        return SkillResult(ok=not failed, summary=message, data={"done": done, "failed": failed})


class K8sRolloutHistory(WorkloadRouting, Skill[WorkloadArgs, "Kubernetes"]):
    name = "k8s.rollout.history"
    summary = "A deployment's, statefulset's or daemonset's revisions with change-cause and images"
    Args = WorkloadArgs
    risk = Risk.READ
    examples = ["show the rollout history of checkout in shop", "revisions of payments in shop"]
    keywords = {
        "history": 2.5,
        "deploy": 1.2,  # "when was checkout last deployed"
        "release": 1.0,
        "revision": 1.5,
        "rollout history": 1.5,
        "version": 0.5,
    }

    async def run(self, args: WorkloadArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        """kubectl's history viewers: a deployment's ReplicaSets by their revision
        annotation; a statefulset's or daemonset's ControllerRevisions by ``revision``, the
        change-cause from each revision's annotation."""
        api = await ctx.backend.api(ctx.impersonate)
        obj = await resolve_workload(api, args.kind, args.namespace, args.name)
        found = await workload_revisions(api, args.kind, obj)
        if args.kind == "deployment":
            rows = history_rows(found, annotations_of(obj).get(REVISION, ""))
        else:
            rows = controller_history_rows(found, current_revision(obj, found))
        what = f"{args.kind} {args.name}" if args.kind != "deployment" else args.name
        if not rows:
            return SkillResult(summary=f"no revisions recorded for {what}", blocks=[])
        table = Table.bounded(
            ["revision", "change-cause", "images", "age"],
            rows,
            ctx.settings.max_rows,
            "revisions",
        )
        where = f"{args.namespace}/{args.name}"
        return SkillResult(
            summary=f"{len(rows)} revisions of "
            + (f"{args.kind} {where}" if args.kind != "deployment" else where),
            blocks=[table],
        )
