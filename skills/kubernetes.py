"""Kubernetes skills: inspect (``k8s.pods``, ``k8s.describe``, ``k8s.events``, ``k8s.logs``,
``k8s.rollout.status``, ``k8s.rollout.history``) and act (``k8s.restart``, ``k8s.scale``,
``k8s.rollback``) with the API semantics of ``kubectl``:

- ``k8s.restart`` = ``kubectl rollout restart``: a strategic-merge patch of the pod
  template's ``kubectl.kubernetes.io/restartedAt`` annotation (``fieldManager=kubectl-rollout``);
- ``k8s.scale`` = ``kubectl scale``: a merge patch of the ``scale`` subresource;
- ``k8s.rollback`` = ``kubectl rollout undo``: a JSON patch replacing ``/spec/template`` with the
  target revision's ReplicaSet template (``pod-template-hash`` label removed) and
  ``/metadata/annotations`` as kubectl computes them.

Each write previews with a server-side dry run (``dryRun=All``) before approval and, once
executed, follows the rollout until it completes, fails or times out.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from opsbot.durations import Duration, format_duration, parse_duration
from opsbot.intent.grounding import ground
from opsbot.model import Code, SkillResult, Table, Text
from opsbot.redact import redact
from opsbot.skills.base import NotConfigured, Risk, Skill, SkillContext, SkillError
from opsbot.skills.kubeapi import (
    JSON_PATCH,
    STRATEGIC_MERGE,
    Identity,
    ImpersonatingApiClient,
    Kube,
    KubeNotFound,
    load_configuration,
)
from pydantic import BaseModel, Field

DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
HASH_LABEL = "pod-template-hash"
# annotations `kubectl rollout undo` keeps from the Deployment instead of taking the ReplicaSet's
ANNOTATIONS_TO_SKIP = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
}
MAX_LOG_CHARS = 3500
MAX_LOG_PODS = 3

Name = Field(pattern=DNS_NAME, max_length=253, description="object name, e.g. checkout")
Namespace = Field(pattern=DNS_LABEL, max_length=63, description="Kubernetes namespace, e.g. shop")


def kube(ctx: SkillContext) -> Kube:
    """The API for this actor: impersonating their mapped Kubernetes user, if any."""
    mapped = ctx.services.policy.identity_for(ctx.actor)
    return kube_as(
        ctx.services, Identity(mapped.user, tuple(mapped.groups)) if mapped else Identity()
    )


def kube_as(services: Any, identity: Identity) -> Kube:
    """The API as ``identity`` (``Identity()``: opsbot's own credentials); clients are cached."""
    settings = services.settings
    if "kubernetes.config" not in services.clients:
        services.clients["kubernetes.config"] = load_configuration(
            settings.kubeconfig, settings.k8s_context
        )
    key = f"kubernetes:{identity.user}:{','.join(identity.groups)}"
    if key not in services.clients:
        services.clients[key] = ImpersonatingApiClient(
            services.clients["kubernetes.config"], identity
        )
    return Kube(services.clients[key], identity, settings.backend_timeout)


# -- reading objects -------------------------------------------------------------------------


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(value: str | None) -> str:
    started = _ts(value)
    if started is None:
        return "?"
    return format_duration(datetime.now(UTC) - started) if datetime.now(UTC) > started else "0s"


def selector_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj.get("spec", {}).get("selector", {}).get("matchLabels", {}) or {})


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def matches(obj: dict[str, Any], labels: dict[str, str]) -> bool:
    own = obj.get("metadata", {}).get("labels", {}) or {}
    return all(own.get(k) == v for k, v in labels.items())


def pod_state(pod: dict[str, Any]) -> tuple[str, int, int, int]:
    """(status as kubectl shows it, ready containers, containers, restarts)."""
    status = pod.get("status", {})
    phase = status.get("phase", "Unknown")
    statuses = status.get("containerStatuses", []) or []
    reason = status.get("reason") or phase
    for cs in statuses:
        state = cs.get("state", {})
        waiting = state.get("waiting", {})
        terminated = state.get("terminated", {})
        if waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated.get("reason") and phase != "Succeeded":
            reason = terminated["reason"]
    if pod.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    ready = sum(1 for cs in statuses if cs.get("ready"))
    total = len(statuses) or len(pod.get("spec", {}).get("containers", []))
    restarts = sum(int(cs.get("restartCount", 0)) for cs in statuses)
    return reason, ready, total, restarts


_TROUBLE = (
    "CrashLoopBackOff",
    "Error",
    "ImagePullBackOff",
    "ErrImagePull",
    "OOMKilled",
    "CreateContainerConfigError",
    "Evicted",
)


def _pod_rank(pod: dict[str, Any]) -> tuple[int, str]:
    reason, ready, total, _ = pod_state(pod)
    if reason in _TROUBLE:
        rank = 0
    elif reason in ("Pending", "ContainerCreating", "Terminating"):
        rank = 1
    elif ready < total:
        rank = 2
    else:
        rank = 3
    return rank, pod["metadata"]["name"]


def rollout_status(dep: dict[str, Any]) -> tuple[bool, bool, str]:
    """(done, failed, message), following kubectl's DeploymentStatusViewer."""
    meta, spec, status = dep.get("metadata", {}), dep.get("spec", {}), dep.get("status", {}) or {}
    name = meta.get("name", "?")
    if int(meta.get("generation", 0)) > int(status.get("observedGeneration", 0)):
        return False, False, f"Waiting for deployment {name!r} spec update to be observed..."
    for cond in status.get("conditions", []) or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return False, True, f"deployment {name!r} exceeded its progress deadline"
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    if updated < want:
        return (
            False,
            False,
            f"Waiting for deployment {name!r} rollout to finish: {updated} out of {want} new replicas have been updated...",
        )
    if total > updated:
        return (
            False,
            False,
            f"Waiting for deployment {name!r} rollout to finish: {total - updated} old replicas are pending termination...",
        )
    if available < updated:
        return (
            False,
            False,
            f"Waiting for deployment {name!r} rollout to finish: {available} of {updated} updated replicas are available...",
        )
    return True, False, f"deployment {name!r} successfully rolled out"


def images(template: dict[str, Any]) -> str:
    containers = template.get("spec", {}).get("containers", []) or []
    return ", ".join(f"{c.get('name')}={c.get('image')}" for c in containers)


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


async def revisions(api: Kube, dep: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The deployment's ReplicaSets by revision (owned by it and matching its selector)."""
    labels = selector_of(dep)
    uid = dep["metadata"].get("uid")
    found: dict[int, dict[str, Any]] = {}
    for rs in await api.replicasets(dep["metadata"]["namespace"], selector_string(labels) or None):
        owners = rs["metadata"].get("ownerReferences", []) or []
        if uid and not any(o.get("uid") == uid for o in owners):
            continue
        if not matches(rs, labels):
            continue
        rev = (rs["metadata"].get("annotations", {}) or {}).get(REVISION)
        if rev and rev.isdigit():
            found[int(rev)] = rs
    return found


def template_without_hash(rs: dict[str, Any]) -> dict[str, Any]:
    template = dict(rs.get("spec", {}).get("template", {}))
    meta = dict(template.get("metadata", {}) or {})
    labels = {k: v for k, v in (meta.get("labels", {}) or {}).items() if k != HASH_LABEL}
    meta["labels"] = labels
    template["metadata"] = meta
    return template


# -- argument models ---------------------------------------------------------------------------


class PodsArgs(BaseModel):
    namespace: str = Namespace
    name: str | None = Field(
        None, pattern=DNS_NAME, description="deployment/app whose pods to show"
    )
    selector: str | None = Field(
        None, max_length=500, description="label selector, e.g. app=checkout"
    )


class DescribeArgs(BaseModel):
    kind: Literal["deployment", "pod", "statefulset", "daemonset", "service", "node"] = "deployment"
    name: str = Name
    namespace: str | None = Field(None, pattern=DNS_LABEL, description="namespace (not for nodes)")


class EventsArgs(BaseModel):
    namespace: str = Namespace
    name: str | None = Field(
        None, pattern=DNS_NAME, description="object (or name prefix) the events are about"
    )
    since: Duration = Field("1h", description="how far back, e.g. 30m")


class LogsArgs(BaseModel):
    name: str = Field(pattern=DNS_NAME, description="pod, or deployment whose pods to read")
    namespace: str = Namespace
    container: str | None = Field(None, pattern=DNS_LABEL, description="container name")
    since: Duration | None = Field(None, description="only lines newer than this, e.g. 15m")
    tail: int = Field(100, ge=1, le=2000, description="last N lines per pod")


class WorkloadArgs(BaseModel):
    name: str = Field(
        pattern=DNS_NAME, max_length=253, description="deployment name, e.g. checkout"
    )
    namespace: str = Namespace


class ScaleArgs(WorkloadArgs):
    replicas: int = Field(ge=0, description="desired number of replicas")


class RollbackArgs(WorkloadArgs):
    revision: int | None = Field(
        None, ge=1, description="revision to roll back to; default: the previous one"
    )


# -- read skills -------------------------------------------------------------------------------


class _Kube:
    """Shared declarations of the Kubernetes skills."""

    requires: ClassVar[tuple[str, ...]] = ()

    def missing_config(self, settings: Any) -> list[str]:
        try:
            load_configuration(settings.kubeconfig, settings.k8s_context)
        except NotConfigured:
            return ["KUBECONFIG"]
        return []


class K8sPods(_Kube, Skill[PodsArgs]):
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
        "crashloop": 2.0,
        "crash": 1.5,
        "container": 0.5,
        "=running": 0.5,
        "log": -1.5,
        "describe": -2.0,
        "event": -1.5,
        "scale": -1.0,
        "restart": -1.0,
        "delete": -1.0,
    }

    async def run(self, args: PodsArgs, ctx: SkillContext) -> SkillResult:
        api = kube(ctx)
        labels: dict[str, str] = {}
        if args.selector:
            labels = dict(p.split("=", 1) for p in args.selector.split(",") if "=" in p)
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
        pods.sort(key=_pod_rank)
        rows = []
        for pod in pods:
            reason, ready, total, restarts = pod_state(pod)
            rows.append(
                [
                    pod["metadata"]["name"],
                    reason,
                    f"{ready}/{total}",
                    str(restarts),
                    age(pod["metadata"].get("creationTimestamp")),
                    pod.get("spec", {}).get("nodeName", ""),
                ]
            )
        troubled = sum(1 for p in pods if _pod_rank(p)[0] < 3)
        table = Table.bounded(
            ["pod", "status", "ready", "restarts", "age", "node"],
            rows,
            ctx.services.settings.max_rows,
            "pods",
        )
        return SkillResult(
            summary=f"{len(pods)} pods for {what}, {troubled} not ready",
            blocks=[table],
            data={"pods": len(pods), "troubled": troubled},
        )

    async def inventory(self, services: Any) -> dict[str, set[str]]:
        """Namespaces and deployments, for grounding (``deployment/<ns>`` lists per namespace)."""
        api = kube_as(services, Identity())
        found: dict[str, set[str]] = {"namespace": set(await api.namespaces()), "deployment": set()}
        for dep in await api.deployments():
            ns, name = dep["metadata"].get("namespace", ""), dep["metadata"]["name"]
            found["deployment"].add(name)
            found.setdefault(f"deployment/{ns}", set()).add(name)
        return found


class K8sDescribe(_Kube, Skill[DescribeArgs]):
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
    keywords = {"describe": 3.0, "detail": 1.5, "inspect": 1.5, "spec": 1.0}

    async def run(self, args: DescribeArgs, ctx: SkillContext) -> SkillResult:
        api = kube(ctx)
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
        rows = describe_fields(args.kind, obj)
        conditions = [
            [
                c.get("type", ""),
                c.get("status", ""),
                c.get("reason", ""),
                (c.get("message") or "")[:100],
            ]
            for c in (obj.get("status", {}) or {}).get("conditions", []) or []
        ]
        blocks: list[Any] = [Table(columns=["field", "value"], rows=rows)]
        if conditions:
            blocks.append(
                Table(columns=["condition", "status", "reason", "message"], rows=conditions)
            )
        if namespace:
            events = [
                e
                for e in await api.events(namespace, args.name)
                if e.get("involvedObject", {}).get("name") == args.name
            ]
            events.sort(key=_event_time, reverse=True)
            if events:
                blocks.append(
                    Table.bounded(
                        ["last seen", "type", "reason", "message"],
                        [_event_row(e)[1:] for e in events],
                        8,
                        "events",
                    )
                )
        return SkillResult(summary=f"{args.kind} {args.name}", blocks=blocks)


def describe_fields(kind: str, obj: dict[str, Any]) -> list[list[str]]:
    meta, spec, status = (
        obj.get("metadata", {}),
        obj.get("spec", {}) or {},
        obj.get("status", {}) or {},
    )
    rows = [["name", meta.get("name", "")], ["age", age(meta.get("creationTimestamp"))]]
    if meta.get("namespace"):
        rows.insert(1, ["namespace", meta["namespace"]])
    labels = meta.get("labels", {}) or {}
    if labels:
        rows.append(["labels", ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))[:200]])
    if kind in ("deployment", "statefulset"):
        rows += [
            [
                "replicas",
                f"{spec.get('replicas', 1)} desired, {status.get('updatedReplicas', 0)} updated, "
                f"{status.get('readyReplicas', 0)} ready, {status.get('availableReplicas', 0)} available",
            ],
            ["images", images(spec.get("template", {}))],
            [
                "strategy",
                (spec.get("strategy", {}) or {}).get(
                    "type", spec.get("updateStrategy", {}).get("type", "")
                ),
            ],
            ["selector", selector_string(selector_of(obj))],
        ]
        revision = (meta.get("annotations", {}) or {}).get(REVISION)
        if revision:
            rows.append(["revision", revision])
    elif kind == "daemonset":
        rows += [
            [
                "pods",
                f"{status.get('desiredNumberScheduled', 0)} desired, {status.get('numberReady', 0)} ready",
            ],
            ["images", images(spec.get("template", {}))],
        ]
    elif kind == "pod":
        reason, ready, total, restarts = pod_state(obj)
        rows += [
            ["status", reason],
            ["ready", f"{ready}/{total}"],
            ["restarts", str(restarts)],
            ["node", spec.get("nodeName", "")],
            ["pod IP", status.get("podIP", "")],
            ["images", images(obj)],
        ]
        for cs in status.get("containerStatuses", []) or []:
            last = (cs.get("lastState", {}) or {}).get("terminated")
            if last:
                rows.append(
                    [
                        f"{cs.get('name')} last exit",
                        f"{last.get('reason', '')} (code {last.get('exitCode', '?')})",
                    ]
                )
    elif kind == "service":
        ports = ", ".join(
            f"{p.get('port')}/{p.get('protocol', 'TCP')}->{p.get('targetPort', '')}"
            for p in spec.get("ports", []) or []
        )
        rows += [
            ["type", spec.get("type", "")],
            ["cluster IP", spec.get("clusterIP", "")],
            ["ports", ports],
            [
                "selector",
                ", ".join(f"{k}={v}" for k, v in (spec.get("selector", {}) or {}).items()),
            ],
        ]
    elif kind == "node":
        info = status.get("nodeInfo", {}) or {}
        alloc = status.get("allocatable", {}) or {}
        rows += [
            ["kubelet", info.get("kubeletVersion", "")],
            ["os image", info.get("osImage", "")],
            [
                "allocatable",
                f"cpu {alloc.get('cpu', '?')}, memory {alloc.get('memory', '?')}, pods {alloc.get('pods', '?')}",
            ],
            ["unschedulable", str(bool(spec.get("unschedulable")))],
        ]
    return rows


def _event_time(event: dict[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )


def _event_row(event: dict[str, Any]) -> list[str]:
    obj = event.get("involvedObject", {}) or {}
    return [
        f"{(obj.get('kind') or '').lower()}/{obj.get('name', '')}",
        age(_event_time(event)),
        event.get("type", ""),
        event.get("reason", ""),
        (event.get("message") or "")[:140],
    ]


class K8sEvents(_Kube, Skill[EventsArgs]):
    name = "k8s.events"
    summary = "Recent events in a namespace (warnings first), optionally about one object"
    Args = EventsArgs
    risk = Risk.READ
    examples = ["any warning events for payments in shop in the last 30m?", "events in staging"]
    keywords = {"event": 3.0, "warning": 1.0, "what happened": 1.0}

    async def run(self, args: EventsArgs, ctx: SkillContext) -> SkillResult:
        api = kube(ctx)
        cutoff = datetime.now(UTC) - parse_duration(args.since)
        events = await api.events(args.namespace)
        if args.name:
            events = [
                e
                for e in events
                if (e.get("involvedObject", {}) or {}).get("name", "").startswith(args.name)
            ]
        events = [e for e in events if (_ts(_event_time(e)) or datetime.now(UTC)) >= cutoff]
        events.sort(key=_event_time, reverse=True)
        events.sort(
            key=lambda e: e.get("type") != "Warning"
        )  # stable: warnings first, newest first
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
            [_event_row(e) for e in events],
            ctx.services.settings.max_rows,
            "events",
        )
        return SkillResult(
            summary=f"{len(events)} events ({warnings} warnings) for {what}",
            blocks=[table],
            data={"events": len(events), "warnings": warnings},
        )


class K8sLogs(_Kube, Skill[LogsArgs]):
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
        "line": 1.0,
        "stdout": 1.0,
        "output": 0.5,
        "<logql>": -3.0,
        "<selector>": -2.0,
        "logql": -3.0,
        "error": -0.8,
        "top": -0.5,
    }

    async def run(self, args: LogsArgs, ctx: SkillContext) -> SkillResult:
        api = kube(ctx)
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
            found.sort(key=_pod_rank)
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


class K8sRolloutStatus(_Kube, Skill[WorkloadArgs]):
    name = "k8s.rollout.status"
    summary = "Whether a deployment's rollout is complete (as kubectl rollout status)"
    Args = WorkloadArgs
    risk = Risk.READ
    examples = ["is the checkout rollout done in shop?", "rollout status payments -n shop"]
    keywords = {
        "rollout status": 3.0,
        "rollout": 1.5,
        "roll out": 1.5,
        "status": 0.8,
        "=done": 1.0,
        "finished": 1.0,
        "complete": 1.0,
        "progress": 1.0,
        "history": -2.5,
        "undo": -3.0,
        "back": -1.5,
        "revision": -1.0,
    }

    async def run(self, args: WorkloadArgs, ctx: SkillContext) -> SkillResult:
        dep = await resolve_deployment(kube(ctx), args.namespace, args.name)
        done, failed, message = rollout_status(dep)
        return SkillResult(ok=not failed, summary=message, data={"done": done, "failed": failed})


class K8sRolloutHistory(_Kube, Skill[WorkloadArgs]):
    name = "k8s.rollout.history"
    summary = "A deployment's revisions with change-cause and images"
    Args = WorkloadArgs
    risk = Risk.READ
    examples = ["show the rollout history of checkout in shop", "revisions of payments in shop"]
    keywords = {
        "history": 2.5,
        "revision": 1.5,
        "rollout history": 1.5,
        "version": 0.5,
        "rollback": -2.0,
        "roll back": -2.0,
        "undo": -2.0,
    }

    async def run(self, args: WorkloadArgs, ctx: SkillContext) -> SkillResult:
        api = kube(ctx)
        dep = await resolve_deployment(api, args.namespace, args.name)
        revs = await revisions(api, dep)
        current = (dep["metadata"].get("annotations", {}) or {}).get(REVISION, "")
        rows = [
            [
                str(rev) + (" (current)" if str(rev) == current else ""),
                (rs["metadata"].get("annotations", {}) or {}).get(CHANGE_CAUSE, "<none>"),
                images(rs.get("spec", {}).get("template", {})),
                age(rs["metadata"].get("creationTimestamp")),
            ]
            for rev, rs in sorted(revs.items(), reverse=True)
        ]
        if not rows:
            return SkillResult(summary=f"no revisions recorded for {args.name}", blocks=[])
        table = Table.bounded(
            ["revision", "change-cause", "images", "age"],
            rows,
            ctx.services.settings.max_rows,
            "revisions",
        )
        return SkillResult(
            summary=f"{len(rows)} revisions of {args.namespace}/{args.name}", blocks=[table]
        )


# -- write skills --------------------------------------------------------------------------


class _Write(_Kube):
    """Writes follow the rollout after they ran (see :meth:`follow_up`)."""

    async def follow_up(self, args: WorkloadArgs, ctx: SkillContext) -> SkillResult:
        """Poll the deployment until its rollout completes, fails or ``rollout_timeout`` passes."""
        api = kube(ctx)
        settings = ctx.services.settings
        deadline = time.monotonic() + settings.rollout_timeout
        message = ""
        while True:
            dep = await api.deployment(args.namespace, args.name)
            done, failed, message = rollout_status(dep)
            if done:
                return SkillResult(summary=f"rollout complete: {message}")
            if failed:
                return SkillResult(ok=False, summary=f"rollout failed: {message}")
            if time.monotonic() >= deadline:
                return SkillResult(
                    ok=False,
                    summary=f"rollout not complete after {settings.rollout_timeout:g}s: {message}",
                )
            await asyncio.sleep(settings.rollout_poll)


def dry_run_note(result: dict[str, Any]) -> str:
    return f"server-side dry run (dryRun=All): accepted; resulting images {images(result.get('spec', {}).get('template', {}))}"


class K8sRestart(_Write, Skill[WorkloadArgs]):
    name = "k8s.restart"
    summary = "Rolling restart of a deployment (kubectl rollout restart)"
    Args = WorkloadArgs
    risk = Risk.WRITE
    examples = [
        "restart checkout in shop",
        "please do a rolling restart of the payments deployment in namespace shop",
        "bounce cart in staging",
    ]
    keywords = {
        "restart": 3.0,
        "bounce": 3.0,
        "rolling restart": 1.0,
        "recycle": 2.0,
        "reboot": 2.0,
        "kick": 1.5,
        "cycle": 1.5,
        "=restarted": -2.0,
        "who": -2.5,
        "=bounced": -2.0,
    }

    @staticmethod
    def patch() -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}

    async def preview(self, args: WorkloadArgs, ctx: SkillContext) -> str:
        api = kube(ctx)
        dep = await resolve_deployment(api, args.namespace, args.name)
        last = (
            (dep["spec"].get("template", {}).get("metadata", {}) or {}).get("annotations", {}) or {}
        ).get(RESTARTED_AT)
        result = await api.patch_deployment(
            args.namespace,
            args.name,
            self.patch(),
            content_type=STRATEGIC_MERGE,
            field_manager="kubectl-rollout",
            dry_run=True,
        )
        return "\n".join(
            [
                f"rolling restart of deployment {args.namespace}/{args.name}: {dep['spec'].get('replicas', 1)} replicas, "
                f"images {images(dep['spec'].get('template', {}))}",
                f"last restart: {last or 'never (by annotation)'}",
                dry_run_note(result),
            ]
        )

    async def run(self, args: WorkloadArgs, ctx: SkillContext) -> SkillResult:
        api = kube(ctx)
        await resolve_deployment(api, args.namespace, args.name)
        await api.patch_deployment(
            args.namespace,
            args.name,
            self.patch(),
            content_type=STRATEGIC_MERGE,
            field_manager="kubectl-rollout",
        )
        return SkillResult(summary=f"deployment {args.namespace}/{args.name} restarted")


class K8sScale(_Write, Skill[ScaleArgs]):
    name = "k8s.scale"
    summary = "Set a deployment's replicas (kubectl scale)"
    Args = ScaleArgs
    risk = Risk.WRITE
    examples = [
        "scale checkout to 5 replicas in shop",
        "scale payments in shop down to 2",
        "set replicas of cart to 0 in staging",
    ]
    keywords = {"scale": 3.0, "replica": 2.0, "<number>": 0.3, "=scaled": -2.0, "who": -2.5}

    def _check_max(self, args: ScaleArgs, ctx: SkillContext) -> None:
        limit = ctx.services.settings.k8s_max_replicas
        if args.replicas > limit:
            raise SkillError(
                f"{args.replicas} replicas is above the configured maximum of {limit} (OPSBOT_K8S_MAX_REPLICAS)"
            )

    async def preview(self, args: ScaleArgs, ctx: SkillContext) -> str:
        self._check_max(args, ctx)
        api = kube(ctx)
        dep = await resolve_deployment(api, args.namespace, args.name)
        await api.patch_scale(args.namespace, args.name, args.replicas, dry_run=True)
        current = dep["spec"].get("replicas", 1)
        ready = (dep.get("status", {}) or {}).get("readyReplicas", 0)
        return (
            f"scale deployment {args.namespace}/{args.name}: {current} -> {args.replicas} replicas "
            f"({ready} ready now)\nserver-side dry run (dryRun=All): accepted"
        )

    async def run(self, args: ScaleArgs, ctx: SkillContext) -> SkillResult:
        self._check_max(args, ctx)
        api = kube(ctx)
        dep = await resolve_deployment(api, args.namespace, args.name)
        await api.patch_scale(args.namespace, args.name, args.replicas)
        return SkillResult(
            summary=f"deployment {args.namespace}/{args.name} scaled from "
            f"{dep['spec'].get('replicas', 1)} to {args.replicas} replicas"
        )


class K8sRollback(_Write, Skill[RollbackArgs]):
    name = "k8s.rollback"
    summary = "Roll a deployment back to the previous or a given revision (kubectl rollout undo)"
    Args = RollbackArgs
    risk = Risk.DANGEROUS
    examples = [
        "roll back checkout in shop",
        "rollback payments in shop to revision 41",
        "undo the last rollout of cart in staging",
    ]
    keywords = {
        "roll * back": 3.0,
        "rollback": 3.0,
        "undo": 2.5,
        "revert": 2.5,
        "previous version": 1.5,
        "=rolled": -1.0,
        "who": -2.5,
    }

    async def plan(self, args: RollbackArgs, ctx: SkillContext) -> tuple[list[dict[str, Any]], str]:
        """The JSON patch kubectl would send, and a description of it."""
        api = kube(ctx)
        dep = await resolve_deployment(api, args.namespace, args.name)
        revs = await revisions(api, dep)
        annotations = dep["metadata"].get("annotations", {}) or {}
        current = int(annotations.get(REVISION, "0") or 0)
        if args.revision is not None:
            if args.revision not in revs:
                known = ", ".join(str(r) for r in sorted(revs)) or "none"
                raise SkillError(
                    f"deployment {args.name} has no revision {args.revision} (revisions: {known})"
                )
            target = args.revision
        else:
            older = [r for r in revs if r < current]
            if not older:
                raise SkillError(f"deployment {args.name} has no previous revision to roll back to")
            target = max(older)
        rs = revs[target]
        template = template_without_hash(rs)
        current_template = dep["spec"].get("template", {})
        if template == current_template:
            raise SkillError(
                f"skipped rollback: the current template of {args.name} already matches revision {target}"
            )
        new_annotations = {k: v for k, v in annotations.items() if k in ANNOTATIONS_TO_SKIP}
        for key, value in (rs["metadata"].get("annotations", {}) or {}).items():
            if key not in ANNOTATIONS_TO_SKIP:
                new_annotations[key] = value
        patch = [
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": new_annotations},
        ]
        cause = (rs["metadata"].get("annotations", {}) or {}).get(CHANGE_CAUSE, "")
        text = (
            f"roll back deployment {args.namespace}/{args.name} from revision {current} to {target}"
            f"{f' ({cause})' if cause else ''}\nimages: {images(current_template)} -> {images(template)}"
        )
        return patch, text

    async def preview(self, args: RollbackArgs, ctx: SkillContext) -> str:
        patch, text = await self.plan(args, ctx)
        result = await kube(ctx).patch_deployment(
            args.namespace, args.name, patch, content_type=JSON_PATCH, dry_run=True
        )
        return f"{text}\n{dry_run_note(result)}"

    async def run(self, args: RollbackArgs, ctx: SkillContext) -> SkillResult:
        patch, text = await self.plan(args, ctx)
        await kube(ctx).patch_deployment(args.namespace, args.name, patch, content_type=JSON_PATCH)
        return SkillResult(summary=text.splitlines()[0].replace("roll back", "rolled back", 1))
