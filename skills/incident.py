"""Incident triage: ``incident.triage``, a bounded, read-only investigation of an alert, a
service or a namespace that ends with suggested actions as buttons.

Every read runs through the engine (``ctx.read``): ``alerts.list``, ``service.health``,
``logs.errors``, ``k8s.pods``, ``k8s.events`` and ``k8s.rollout.history`` are each
policy-checked, audited and posted in the thread as if typed. The details those results do
not carry in a structured form (an alert's annotations and start, exact rollout times, which
deployment a pod belongs to, the series to chart) are then read from the same backends
(``ctx.peer``; on Kubernetes as the actor), and only for the reads the policy let run.

1. **the alert** (Alertmanager): labels, annotations (summary, description, runbook_url), its
   start; the service and namespace come from its labels. Asked about a service, the alerts
   firing on it are looked up the same way, and the oldest gives the start;
2. **RED metrics** (``service.health`` and its PromQL templates) and a chart of the request
   rate and the error ratio over the window, the alert's start (and deploys) marked;
3. **error patterns** (``logs.errors``): new patterns (first seen after the start) first;
4. **Kubernetes**: warning events, pods restarting or not ready, and the rollouts of the
   service's deployments in the window (revision, image, time against the start);
5. **a summary** tying them together in plain words (rule-based: a deploy shortly before the
   start, the error ratio since, a new error pattern, crash-looping pods);
6. **suggested actions** as :class:`~opsbot.model.ActionButton`: roll back a deploy that came
   shortly before the start, restart crash-looping deployments, silence the alert. A click
   runs the action as the clicker's own request, through policy and approval.

Bounds: the whole triage has ``OPSBOT_BACKEND_TIMEOUT`` x 3 (the engine's limit for a skill)
less a margin to answer; after the alert, the evidence steps run in parallel, each call with
its own timeout within what is left. A backend that is not configured is skipped with a line
saying so; one that fails, refuses or is too slow is named with the reason; the triage always
answers with what it gathered (an alert nothing else knows: from the alert's own data).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from opsbot.durations import Duration, format_duration, parse_duration
from opsbot.model import (
    ActionButton,
    Block,
    ButtonStyle,
    Image,
    Invocation,
    SkillResult,
    Table,
    Text,
)
from opsbot.redact import redact
from opsbot.skills.alertmanager import SEVERITY_ORDER, Alertmanager
from opsbot.skills.base import (
    Backend,
    NoSettings,
    NotConfigured,
    Risk,
    Skill,
    SkillContext,
    SkillError,
)
from opsbot.skills.kubernetes import Kubernetes
from opsbot.skills.kubernetes.objects import (
    CHANGE_CAUSE,
    REVISION,
    TROUBLE,
    annotations_of,
    event_time,
    images,
    matches,
    owned_revisions,
    pod_state,
    selector_of,
    timestamp,
)
from opsbot.skills.loki import Loki
from opsbot.skills.prometheus import Prometheus

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: the whole triage may take this many backend timeouts (the engine's limit for one skill)
BUDGET_FACTOR = 3
#: kept back from the budget to write the answer
ANSWER_SECONDS = 0.5
#: kept back, after the evidence, to draw the chart
CHART_SECONDS = 2.0
#: a rollout this long before the start (or up to DEPLOY_AFTER after it) is a suspect
DEPLOY_BEFORE = timedelta(minutes=30)
DEPLOY_AFTER = timedelta(minutes=2)
#: errors begin before an alert fires (``for:``, rate windows): a pattern first seen up to
#: this long before the start still counts as new
NEW_LEAD = timedelta(minutes=2)
MAX_SINCE = timedelta(days=7)
#: points of a chart's series
MAX_POINTS = 240
#: deployments whose rollout history is read
MAX_DEPLOYMENTS = 3
MAX_BUTTONS = 5
#: error patterns, pods and events listed
SHOWN = 5
SILENCE_FOR = "1h"
#: pod states a restart may clear (an image that cannot be pulled it does not)
RESTARTABLE = ("CrashLoopBackOff", "Error", "OOMKilled")
ALERT_NAME = r"^[A-Za-z_:][A-Za-z0-9_:.-]{0,199}$"
LABEL_VALUE = r"^[A-Za-z0-9_.:/-]{1,253}$"
NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
#: alert labels that name the service, in order (then a pod's deployment, then the container)
SERVICE_LABELS = ("service", "app", "app_kubernetes_io_name", "deployment", "workload")
NAMESPACE_LABELS = ("namespace", "kubernetes_namespace", "exported_namespace")
#: labels a silence keeps besides the alert name (a pod or an instance comes and goes)
SILENCE_LABELS = ("service", "app", "deployment", "container", "namespace", "job")
POD_NAME = re.compile(r"^(?P<owner>[a-z0-9][a-z0-9-]*?)-[a-z0-9]{6,10}-[a-z0-9]{5}$")
#: a pasted Alertmanager notification: "[FIRING:1] HighErrorRate (checkout shop critical)"
PASTED = re.compile(r"\[(?:FIRING|RESOLVED)(?::\d+)?\]\s*([A-Za-z_:][A-Za-z0-9_:]*)", re.I)
WORKLOAD_WORDS = re.compile(
    r"\b(?:service|app|deployment|on|for|of|with)\s+([a-z][a-z0-9-]*[a-z0-9])\b", re.I
)
NOT_NAMES = {
    "the", "a", "an", "it", "its", "this", "that", "them", "me", "us", "now", "alert", "alerts",
    "service", "pods", "pod", "namespace", "last", "past", "all", "every", "runbook", "errors",
    "error", "things", "everything", "anything", "something", "stuff", "latency", "logs",
    "traffic", "requests", "what", "wrong", "going", "up", "on", "is", "are", "be", "down",
    "triage", "investigate", "dig", "look", "check", "debug", "diagnose", "happening",
    "broken", "failing", "slow", "fine", "ok",
    # how a service misbehaves ("why does checkout keep erroring in shop")
    "erroring", "crashing", "flapping", "hanging", "stuck", "timing", "dying", "degraded",
    "lagging", "throwing", "restarting", "crashlooping", "leaking", "misbehaving", "acting",
    "struggling", "dead", "unhealthy", "unavailable", "unreachable", "keep", "keeps", "still",
}  # fmt: skip


class Incident(Backend[NoSettings]):
    """Investigations across the other backends (no settings, no client of its own)."""

    name = "incident"


# -- arguments -------------------------------------------------------------------------------


class TriageArgs(BaseModel):
    alert: str | None = Field(
        None, pattern=ALERT_NAME, description="alert name (alertname), e.g. HighErrorRate"
    )
    service: str | None = Field(
        None, pattern=LABEL_VALUE, description="service (the service label or deployment)"
    )
    namespace: str | None = Field(None, pattern=NAMESPACE, description="Kubernetes namespace")
    since: Duration = Field(
        "1h", description="how far back to look, e.g. 30m, 6h (widened to cover the start)"
    )
    started_at: AwareDatetime | None = Field(
        None, description="when the incident started (the alert's startsAt), RFC 3339"
    )

    @field_validator("since")
    @classmethod
    def _bounded(cls, value: str) -> str:
        if parse_duration(value) > MAX_SINCE:
            raise ValueError("a triage looks back at most 7d")
        return value

    @model_validator(mode="after")
    def _something(self) -> TriageArgs:
        if not (self.alert or self.service or self.namespace):
            raise ValueError("say what to triage: an alert name, a service or a namespace")
        return self


# -- evidence --------------------------------------------------------------------------------


class Refused(SkillError):
    """A read the policy did not let run (or sent to approval)."""


class Empty(SkillError):
    """A backend answered that it holds nothing on the subject (no logs of the service, no
    metrics for it): evidence of a kind, not a failure."""


@dataclass
class Gap:
    """Evidence not gathered: ``kind`` skipped (not configured, not applicable), failed
    (an error, a refusal, no answer in time) or empty (asked, nothing there)."""

    source: str
    why: str
    kind: str = "failed"

    def line(self) -> str:
        if self.kind == "skipped":
            return f"{self.source} skipped: {self.why}"
        if self.kind == "empty":
            return f"{self.source}: {self.why}"
        return f"{self.source} failed: {self.why}"


@dataclass
class Alert:
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    started: datetime | None
    fingerprint: str = ""
    silenced: bool = False
    #: other alerts the same lookup found (``Name{labels}``)
    others: list[str] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def key_labels(self) -> str:
        shown = {k: v for k, v in sorted(self.labels.items()) if k not in ("alertname", "severity")}
        return ", ".join(f"{k}={v}" for k, v in shown.items())


@dataclass
class Rollout:
    deployment: str
    namespace: str
    revision: int
    at: datetime | None
    image: str
    cause: str = ""
    previous: int | None = None
    previous_image: str = ""


@dataclass
class Pods:
    """Pods of one deployment (``""``: owned by none found) that restart or are not ready."""

    deployment: str
    rows: list[tuple[str, str, str, int]] = field(
        default_factory=list
    )  # pod, status, ready, restarts

    @property
    def reasons(self) -> Counter[str]:
        return Counter(status for _, status, _, _ in self.rows)

    def describe(self) -> str:
        """``4 pods in CrashLoopBackOff``, ``1 pod not ready``."""
        parts = []
        for reason, n in self.reasons.most_common():
            what = "not ready" if reason in ("Running", "NotReady") else f"in {reason}"
            parts.append(f"{n} pod{'s' if n != 1 else ''} {what}")
        return ", ".join(parts)


@dataclass
class Findings:
    alert: Alert | None = None
    health: dict[str, Any] = field(default_factory=dict)
    rate: list[tuple[float, float]] = field(default_factory=list)
    errors: list[tuple[float, float]] = field(default_factory=list)
    #: the chart's caption: its queries, the rate window and resolution
    queries: list[str] = field(default_factory=list)
    #: Alertmanager was asked for the alerts on the subject
    alerts_checked: bool = False
    patterns: list[dict[str, Any]] = field(default_factory=list)
    logs_read: bool = False
    rollouts: list[Rollout] = field(default_factory=list)
    pods: list[Pods] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    kube_read: bool = False
    chart: bytes = b""
    gaps: list[Gap] = field(default_factory=list)


def _when(iso: Any) -> datetime | None:
    if not isinstance(iso, str) or not iso:
        return None
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _clock(moment: datetime) -> str:
    """``14:02 UTC``, with the day when it is not today's."""
    if moment.date() == datetime.now(UTC).date():
        return f"{moment:%H:%M} UTC"
    return f"{moment:%b %d %H:%M} UTC"


def _span(delta: timedelta) -> str:
    """A duration as people say it: ``40s``, ``12 min``, ``3h10m``."""
    seconds = abs(int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return format_duration(timedelta(seconds=seconds // 60 * 60))


def relative(moment: datetime, start: datetime | None, now: datetime) -> str:
    """``12 min before the alert``, ``3 min after the alert started``; without a start,
    ``20 min ago``."""
    if start is None:
        return f"{_span(now - moment)} ago"
    if moment <= start:
        return f"{_span(start - moment)} before the alert"
    return f"{_span(moment - start)} after the alert started"


def _percent(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "no data"
    return f"{value * 100:.1f} %"


def _mean(points: Sequence[tuple[float, float]]) -> float | None:
    values = [v for _, v in points if math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _valid(pattern: str, value: str | None) -> bool:
    return bool(value) and re.match(pattern, value or "") is not None


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def service_of(labels: dict[str, str], service_label: str = "service") -> str | None:
    """The service an alert is about, from its labels: the service label, ``app``,
    ``deployment``..., else the deployment a ``pod`` label's name belongs to, else the
    ``container``."""
    for key in dict.fromkeys((service_label, *SERVICE_LABELS)):
        value = labels.get(key, "")
        if _valid(LABEL_VALUE, value):
            return value
    if m := POD_NAME.match(labels.get("pod", "")):
        return m.group("owner")
    container = labels.get("container", "")
    return container if _valid(LABEL_VALUE, container) and container != "POD" else None


def namespace_of(labels: dict[str, str], namespace_label: str = "namespace") -> str | None:
    for key in dict.fromkeys((namespace_label, *NAMESPACE_LABELS)):
        value = labels.get(key, "")
        if _valid(NAMESPACE, value):
            return value
    return None


def owns(dep: dict[str, Any], service: str) -> bool:
    """Whether deployment ``dep`` runs ``service``: by name, or by its app labels."""
    meta = dep.get("metadata", {})
    if meta.get("name") == service:
        return True
    labels = {**(meta.get("labels") or {}), **selector_of(dep)}
    return service in {
        labels.get(k) for k in ("app", "app.kubernetes.io/name", "service", "k8s-app")
    }


def rollout_of(
    dep: dict[str, Any], replicasets: list[dict[str, Any]], events: list[dict[str, Any]]
) -> Rollout | None:
    """The deployment's current revision and when it was rolled out: its ReplicaSet's
    creation, or a later scale-up of that ReplicaSet from zero (a rollback to an old one)."""
    revisions = owned_revisions(dep, replicasets)
    current = annotations_of(dep).get(REVISION, "")
    if not current.isdigit() or int(current) not in revisions:
        return None
    revision = int(current)
    rs = revisions[revision]
    name = dep["metadata"]["name"]
    at = timestamp(rs["metadata"].get("creationTimestamp"))
    scaled_up = re.compile(rf"Scaled up replica set {re.escape(rs['metadata']['name'])} from 0 to")
    for event in events:
        obj = event.get("involvedObject", {}) or {}
        if (
            obj.get("kind") == "Deployment"
            and obj.get("name") == name
            and event.get("reason") == "ScalingReplicaSet"
            and scaled_up.search(event.get("message", ""))
        ):
            moment = timestamp(event_time(event))
            if moment and (at is None or moment > at):
                at = moment
    older = [r for r in revisions if r < revision]
    previous = max(older) if older else None
    return Rollout(
        deployment=name,
        namespace=dep["metadata"].get("namespace", ""),
        revision=revision,
        at=at,
        image=images(rs.get("spec", {}).get("template", {})),
        cause=annotations_of(rs).get(CHANGE_CAUSE, ""),
        previous=previous,
        previous_image=images(revisions[previous].get("spec", {}).get("template", {}))
        if previous
        else "",
    )


def troubled_pods(
    pods: list[dict[str, Any]], deployments: list[dict[str, Any]], since: datetime
) -> list[Pods]:
    """Pods that are failing, not ready, or restarted within the window, by deployment
    (worst first)."""
    groups: dict[str, Pods] = {}
    for pod in pods:
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        reason, ready, total, restarts = pod_state(pod)
        recent = _restarted_since(pod, since)
        if reason not in TROUBLE and ready >= total and not recent:
            continue
        owner = next((d["metadata"]["name"] for d in deployments if _runs(d, pod)), "")
        status = (
            reason if reason in TROUBLE or reason != "Running" or ready >= total else "NotReady"
        )
        groups.setdefault(owner, Pods(owner)).rows.append(
            (pod["metadata"]["name"], status, f"{ready}/{total}", restarts)
        )
    return sorted(groups.values(), key=lambda g: (-len(g.rows), g.deployment))


def _runs(dep: dict[str, Any], pod: dict[str, Any]) -> bool:
    selector = selector_of(dep)
    return bool(selector) and matches(pod, selector)


def _restarted_since(pod: dict[str, Any], since: datetime) -> bool:
    for cs in pod.get("status", {}).get("containerStatuses", []) or []:
        last = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        moment = timestamp(last)
        if moment and moment >= since:
            return True
    return False


def action_id(key: str, invocation: Invocation) -> str:
    """A short id for a suggested action, the same for the same incident and invocation."""
    body = json.dumps({"skill": invocation.skill, "args": invocation.args}, sort_keys=True)
    return hashlib.sha1(f"{key}\n{body}".encode()).hexdigest()[:12]


# -- the investigation -----------------------------------------------------------------------


class Triage:
    """One run of ``incident.triage``: what it was asked, its budget, what it found."""

    def __init__(self, args: TriageArgs, ctx: SkillContext[Incident]) -> None:
        self.args = args
        self.ctx = ctx
        timeout = ctx.settings.backend_timeout
        self.backend_timeout = timeout
        self.started = time.monotonic()
        self.deadline = self.started + timeout * BUDGET_FACTOR - max(ANSWER_SECONDS, timeout * 0.1)
        self.now = datetime.now(UTC)
        self.found = Findings()
        self.service = args.service
        self.namespace = args.namespace
        self.start: datetime | None = args.started_at.astimezone(UTC) if args.started_at else None
        self.window_start = self.now - parse_duration(args.since)
        self.since = args.since
        self.service_label = "service"
        self.namespace_label = "namespace"
        try:
            health = ctx.peer(Prometheus).config.health
            self.service_label, self.namespace_label = health.service_label, health.namespace_label
        except NotConfigured:
            pass

    # -- plumbing ----------------------------------------------------------------------------

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def gap(self, source: str, why: str, kind: str = "failed") -> None:
        self.found.gaps.append(Gap(source, why.strip().rstrip(".") or "no reason given", kind))

    async def bounded(
        self, source: str, work: Coroutine[Any, Any, T], seconds: float | None = None
    ) -> T | None:
        """``work`` within ``seconds`` (default: one backend timeout) and what is left of the
        budget; a failure, a refusal or a timeout is recorded as a gap and gives None."""
        limit = min(seconds or self.backend_timeout * 2, self.left())
        if limit <= 0.05:
            work.close()
            self.gap(source, "not started: the triage's time budget was used up")
            return None
        try:
            return await asyncio.wait_for(work, limit)
        except TimeoutError:
            self.gap(source, f"no answer within {limit:.1f}s (the triage's time budget)")
        except Empty as exc:
            self.gap(source, str(exc), "empty")
        except SkillError as exc:  # Refused, NotConfigured, a backend's own message
            self.gap(source, str(exc) or type(exc).__name__)
        except Exception as exc:
            log.exception("triage.step_failed", source=source)
            self.gap(source, f"{type(exc).__name__}: {exc}")
        return None

    def peer(self, kind: type[Any], source: str, what: str) -> Any:
        """The installed, configured backend of class ``kind``; None (with a line saying
        why ``what`` is skipped) otherwise."""
        try:
            backend = self.ctx.peer(kind)
        except NotConfigured:
            self.gap(source, f"not installed: no {what}", "skipped")
            return None
        missing = backend.missing()
        if missing:
            self.gap(source, f"not configured (set {', '.join(missing)}): no {what}", "skipped")
            return None
        return backend

    async def read(self, skill: str, args: dict[str, Any], why: str) -> SkillResult:
        """Run the read skill ``skill`` as this request (policy, audit, the thread); raises
        :class:`Refused` when it was not run, :class:`SkillError` when it failed."""
        invocation = Invocation(skill=skill, args=args, rationale=f"triage: {why}")
        if self.ctx.read is not None:
            result = await self.ctx.read(invocation)
            if result is None:
                raise Refused(f"{skill} was not run for you here (see its policy line)")
        else:  # outside the engine (a library call): run it directly
            result = await self._direct(invocation)
        if not result.ok:
            if result.data.get("found") is False or result.summary.startswith(
                ("no ", "too little")
            ):
                raise Empty(result.summary)
            raise SkillError(result.summary)
        return result

    async def _direct(self, invocation: Invocation) -> SkillResult:
        for backend in self.ctx.backends:
            for cls in type(backend).skills:
                if cls.name == invocation.skill:
                    skill = cls()
                    sub: SkillContext[Any] = replace(self.ctx, backend=backend, read=None)  # type: ignore[arg-type]
                    return await skill.run(skill.parse_args(invocation.args), sub)
        raise NotConfigured(f"{invocation.skill} is not installed")

    def args_for(
        self, skill: Skill[Any, Any] | type[Skill[Any, Any]], args: dict[str, Any]
    ) -> bool:
        try:
            skill.Args.model_validate(args)
        except ValidationError:
            return False
        return True

    # -- 1. the alert ------------------------------------------------------------------------

    async def alert_step(self) -> None:
        args = self.args
        if args.alert:
            matchers = {"alertname": args.alert}
        elif args.service:
            matchers = {self.service_label: args.service}
        else:
            matchers = {self.namespace_label: args.namespace or ""}
        what = "alert details" if args.alert else "alerts on it"
        am: Alertmanager | None = self.peer(Alertmanager, "Alertmanager", what)
        if am is None:
            return
        listed = await self.bounded(
            "alerts.list", self.read("alerts.list", {"matchers": matchers}, "alerts")
        )
        if listed is None:  # refused, or Alertmanager failed: nothing of it is used
            return
        alerts = await self.bounded("Alertmanager", am.alerts(matchers))
        if alerts is None:
            return
        self.found.alerts_checked = True
        if not alerts:
            if args.alert:
                self.gap(
                    "Alertmanager",
                    f"no alert {args.alert} is firing now (resolved, or not sent yet)",
                    "empty",
                )
            return
        self.found.alert = alert = self.pick(alerts)
        if self.start is None and alert.started is not None:
            self.start = alert.started
        if self.service is None:
            self.service = service_of(alert.labels, self.service_label)
        if self.namespace is None:
            self.namespace = namespace_of(alert.labels, self.namespace_label)

    def pick(self, alerts: list[dict[str, Any]]) -> Alert:
        """The alert to triage: the one on the service (and namespace) asked about, the most
        severe, the oldest."""

        def rank(a: dict[str, Any]) -> tuple[int, int, int, str]:
            labels = a.get("labels", {})
            service = self.args.service and self.args.service in (
                service_of(labels, self.service_label),
                labels.get(self.service_label),
            )
            namespace = self.args.namespace and namespace_of(labels) == self.args.namespace
            return (
                0 if service or not self.args.service else 1,
                0 if namespace or not self.args.namespace else 1,
                SEVERITY_ORDER.get(labels.get("severity", ""), 9),
                a.get("startsAt", ""),
            )

        ordered = sorted(alerts, key=rank)
        chosen = ordered[0]
        labels = {str(k): str(v) for k, v in chosen.get("labels", {}).items()}
        others = []
        for a in ordered[1:]:
            other = a.get("labels", {})
            shown = ", ".join(
                f"{k}={v}" for k, v in sorted(other.items()) if k not in ("alertname", "severity")
            )
            others.append(f"{other.get('alertname', '?')}{{{shown}}}")
        return Alert(
            name=labels.get("alertname", self.args.alert or "?"),
            labels=labels,
            annotations={
                str(k): redact(str(v)) for k, v in (chosen.get("annotations") or {}).items()
            },
            started=_when(chosen.get("startsAt")),
            fingerprint=str(chosen.get("fingerprint", "")),
            silenced=bool((chosen.get("status") or {}).get("silencedBy")),
            others=others,
        )

    def widen(self) -> None:
        """Look back far enough to see before the start: half the window before it at least."""
        span = parse_duration(self.args.since)
        if self.start is not None:
            self.start = min(self.start, self.now)
            needed = (self.now - self.start) + span / 2
            span = min(max(span, needed), MAX_SINCE)
        minutes = math.ceil(span.total_seconds() / 60)
        self.window_start = self.now - timedelta(minutes=minutes)
        self.since = format_duration(timedelta(minutes=minutes))

    # -- 2. metrics --------------------------------------------------------------------------

    async def metrics_step(self) -> None:
        if not self.service:
            self.gap("Prometheus", "no service named, so no RED metrics", "skipped")
            return
        prom: Prometheus | None = self.peer(Prometheus, "Prometheus", "RED metrics")
        if prom is None:
            return
        # the triage draws its own chart (with the alert's start marked): none from health
        args: dict[str, Any] = {"service": self.service}
        if self.namespace:
            args["namespace"] = self.namespace
        args["chart"] = False
        from opsbot.skills.prometheus import ServiceHealth

        if not self.args_for(ServiceHealth, args):
            self.gap(
                "Prometheus", f"{self.service} is not a label value service.health takes", "skipped"
            )
            return
        health = await self.bounded(
            "service.health", self.read("service.health", args, "RED metrics")
        )
        if health is None:
            return
        self.found.health = dict(health.data)
        series = await self.bounded("Prometheus", self.series(prom))
        if series is not None:
            self.found.rate, self.found.errors = series

    async def series(
        self, prom: Prometheus
    ) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The request rate and error ratio over the window, from service.health's templates
        (rates over 4 steps, as its own chart takes them)."""
        tpl = prom.config.health
        selector = f'{tpl.service_label}="{self.service}"'
        if self.namespace:
            selector += f',{tpl.namespace_label}="{self.namespace}"'
        span = (self.now - self.window_start).total_seconds()
        step = timedelta(seconds=max(1, int(span // MAX_POINTS)))
        window = format_duration(4 * step)

        async def points(template: str) -> list[tuple[float, float]]:
            query = template.format(selector=selector, window=window)
            result = await prom.range(query, self.window_start, self.now, step)
            values = result[0].get("values", []) if result else []
            return [(float(t), float(v)) for t, v in values]

        rate, errors = await asyncio.gather(points(tpl.rate), points(tpl.errors))
        self.found.queries = [
            f"request rate: {tpl.rate.format(selector=selector, window=window)}",
            f"error ratio: {tpl.errors.format(selector=selector, window=window)}",
            f"rates over {window}, a point every {format_duration(step)}",
        ]
        return rate, errors

    # -- 3. logs -----------------------------------------------------------------------------

    async def logs_step(self) -> None:
        if not self.service:
            self.gap("Loki", "no service named, so no error patterns", "skipped")
            return
        loki: Loki | None = self.peer(Loki, "Loki", "error patterns")
        if loki is None:
            return
        args: dict[str, Any] = {"service": self.service, "since": self.since, "top": 10}
        if self.namespace:
            args["namespace"] = self.namespace
        from opsbot.skills.loki import LogsErrors

        if not self.args_for(LogsErrors, args):
            self.gap("Loki", f"{self.service} is not a service name logs.errors takes", "skipped")
            return
        result = await self.bounded("Loki", self.read("logs.errors", args, "error patterns"))
        if result is None:
            return
        self.found.logs_read = True
        self.found.patterns = self.classify(list(result.data.get("patterns") or []))

    def classify(self, patterns: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each pattern with ``status``: new (first seen after the start, less NEW_LEAD),
        ongoing (seen before and after), stopped (not since); new first, then by count."""
        cut = self.start - NEW_LEAD if self.start else None
        order = {"new": 0, "ongoing": 1, "seen": 1, "stopped": 2}
        out = []
        for p in patterns:
            first, last = _when(p.get("first_seen")), _when(p.get("last_seen"))
            if cut is None or first is None or last is None:
                status = "seen"
            elif first >= cut:
                status = "new"
            elif last >= cut:
                status = "ongoing"
            else:
                status = "stopped"
            out.append({**p, "status": status})
        out.sort(key=lambda p: (order[p["status"]], -int(p.get("count", 0))))
        return out

    # -- 4. Kubernetes -----------------------------------------------------------------------

    async def kube_step(self) -> None:
        kube: Kubernetes | None = self.peer(Kubernetes, "Kubernetes", "events, pods or rollouts")
        if kube is None:
            return
        api = await self.bounded("Kubernetes", kube.api(self.ctx.impersonate))
        if api is None:
            return
        if not self.namespace:
            if not self.service:
                return
            every = await self.bounded("Kubernetes", api.deployments())
            if every is None:
                return
            homes = sorted(
                {d["metadata"].get("namespace", "") for d in every if owns(d, self.service)}
            )
            if len(homes) != 1:
                why = (
                    f"{self.service} runs in {', '.join(homes)}: ask again with a namespace"
                    if homes
                    else f"no deployment runs {self.service} in any namespace"
                )
                self.gap("Kubernetes", why, "skipped" if homes else "empty")
                return
            self.namespace = homes[0]
        namespace = self.namespace
        deps, replicasets, pods, events = await asyncio.gather(
            self.bounded("Kubernetes", api.deployments(namespace)),
            self.bounded("Kubernetes", api.replicasets(namespace, None)),
            self.bounded("Kubernetes", api.pods(namespace)),
            self.bounded("Kubernetes", api.events(namespace)),
        )
        ours = [d for d in deps or [] if owns(d, self.service)] if self.service else []
        rollouts = {
            r.deployment: r
            for d in (ours or deps or [])
            if (r := rollout_of(d, replicasets or [], events or [])) is not None
        }
        if self.service:
            watched = [d["metadata"]["name"] for d in ours][:MAX_DEPLOYMENTS]
            if not ours and deps is not None:
                self.gap("Kubernetes", f"no deployment in {namespace} runs {self.service}", "empty")
        else:  # a namespace: the deployments rolled out in the window
            recent = [r for r in rollouts.values() if r.at and r.at >= self.window_start]
            watched = [r.deployment for r in sorted(recent, key=lambda r: r.at or self.now)]
            watched = watched[-MAX_DEPLOYMENTS:]
        reads = await asyncio.gather(
            self.bounded("k8s.pods", self.read("k8s.pods", {"namespace": namespace}, "pods")),
            self.bounded(
                "k8s.events",
                self.read("k8s.events", {"namespace": namespace, "since": self.since}, "events"),
            ),
            *(
                self.bounded(
                    "k8s.rollout.history",
                    self.read(
                        "k8s.rollout.history",
                        {"name": name, "namespace": namespace},
                        "rollouts",
                    ),
                )
                for name in watched
            ),
        )
        pods_read, events_read, *histories = reads
        self.found.kube_read = any(r is not None for r in reads)
        for name, history in zip(watched, histories, strict=True):
            if history is not None and name in rollouts:
                self.found.rollouts.append(rollouts[name])
        if pods_read is not None and pods is not None:
            self.found.pods = troubled_pods(pods, deps or [], self.window_start)
        if events_read is not None and events is not None:
            self.found.warnings = [
                e
                for e in events
                if e.get("type") == "Warning"
                and (timestamp(event_time(e)) or self.now) >= self.window_start
            ]
            self.found.warnings.sort(key=event_time, reverse=True)

    # -- chart -------------------------------------------------------------------------------

    async def chart_step(self) -> None:
        if not self.found.rate and not self.found.errors:
            return
        from opsbot.skills.charts import RATIO, Marker, Panel, Unit, render

        markers = []
        if self.start is not None:
            name = self.found.alert.name if self.found.alert else "incident"
            markers.append(Marker(self.start, f"{name} started {self.start:%H:%M}"))
        for r in self.found.rollouts:
            if r.at is not None and r.at >= self.window_start:
                markers.append(Marker(r.at, f"{r.deployment} rev {r.revision}", color="#1f77b4"))
        where = self.service or ""
        where += f" in {self.namespace}" if self.namespace else ""
        panels = [
            Panel(Unit("req/s"), [("", self.found.rate)]),
            Panel(RATIO, [("", self.found.errors)]),
        ]
        # from a little before the first point or marker: young data is not a sliver
        first = min(
            [
                datetime.fromtimestamp(pts[0][0], UTC)
                for pts in (self.found.rate, self.found.errors)
                if pts
            ]
            + [m.at for m in markers]
        )
        start = max(self.window_start, first - max((self.now - first) * 0.1, timedelta(seconds=30)))
        span = f"last {self.since}" if start == self.window_start else f"since {start:%H:%M:%S} UTC"
        png = await self.bounded(
            "chart",
            asyncio.to_thread(
                render,
                f"{where}: request rate and error ratio, {span}",
                panels,
                start,
                self.now,
                markers=markers,
                caption=self.found.queries,
            ),
            max(self.left(), 0.1),
        )
        self.found.chart = png or b""

    # -- run ---------------------------------------------------------------------------------

    async def run(self) -> SkillResult:
        if self.args.alert or self.args.service or self.args.namespace:
            await self.alert_step()
        self.widen()
        steps = [self.metrics_step(), self.logs_step(), self.kube_step()]
        chart_reserve = CHART_SECONDS if self.service else 0.0
        self.deadline -= chart_reserve
        await asyncio.gather(*steps)
        self.deadline += chart_reserve
        await self.chart_step()
        return Report(self).result()


# -- the answer ------------------------------------------------------------------------------


class Report:
    """The triage's answer: summary, evidence, what could not be checked, suggestions."""

    def __init__(self, triage: Triage) -> None:
        self.t = triage
        self.f = triage.found
        self.now = triage.now
        self.start = triage.start
        self.suspects = self._suspects()

    @property
    def subject(self) -> str:
        t = self.t
        where = t.service or ""
        if t.namespace:
            where = f"{where} in {t.namespace}" if where else f"namespace {t.namespace}"
        return where or (t.args.alert or "?")

    @property
    def key(self) -> str:
        """What the suggested actions' ids are made from: this request and this incident."""
        t = self.t
        alert = self.f.alert
        incident = alert.fingerprint if alert and alert.fingerprint else self.subject
        return (
            f"{t.ctx.request.thread_key}|{incident}|{self.start.isoformat() if self.start else ''}"
        )

    def _suspects(self) -> list[Rollout]:
        """Rollouts shortly before the start (or, with no start, in the window while
        something is wrong)."""
        out = []
        for r in self.f.rollouts:
            if r.at is None:
                continue
            if self.start is not None:
                if -DEPLOY_AFTER <= self.start - r.at <= DEPLOY_BEFORE:
                    out.append(r)
            elif r.at >= self.t.window_start and self._something_wrong():
                out.append(r)
        return out

    def _something_wrong(self) -> bool:
        ratio = self.f.health.get("error ratio")
        return bool(
            (isinstance(ratio, float) and ratio > 0.01)
            or any(p["status"] == "new" for p in self.f.patterns)
            or self.f.pods
            or self.f.warnings
        )

    # -- sentences ---------------------------------------------------------------------------

    def headline(self) -> list[str]:
        alert = self.f.alert
        lines = []
        if alert is not None:
            text = f"**{alert.name}**" + (f" ({alert.severity})" if alert.severity else "")
            if alert.started:
                text += f" firing since {_clock(alert.started)} ({_span(self.now - alert.started)})"
            text += f" on {self.subject}" if self.t.service or self.t.namespace else ""
            if alert.silenced:
                text += ", silenced"
            summary = alert.annotations.get("summary") or alert.annotations.get("description")
            lines.append(text + (f": {summary}" if summary else "") + ".")
        elif self.start is not None:
            lines.append(f"Triage of **{self.subject}** from {_clock(self.start)}.")
        else:
            lines.append(f"Triage of **{self.subject}** over the last {self.t.since}.")
        if alert is None and self.f.alerts_checked:
            lines.append("No alert is firing on it.")
        return lines

    def findings(self) -> list[str]:
        f, start = self.f, self.start
        lines = []
        for r in self.suspects:
            when = relative(r.at, start, self.now) if r.at else "recently"
            lines.append(
                f"A deploy of **{r.deployment}** (revision {r.revision}, `{r.image}`) {when}."
            )
        if f.errors or f.health:
            lines.append(self._metrics())
        new = [p for p in f.patterns if p["status"] == "new"]
        if new:
            first = new[0]
            more = f" and {_n(len(new) - 1, 'more')}" if len(new) > 1 else ""
            since = "since the start" if start else "in the window"
            lines.append(
                f"New error pattern {since}: `{_short(first.get('pattern', ''), 100)}` "
                f"({first.get('count', 0)}×){more}."
            )
        elif f.logs_read and f.patterns and start is not None:
            lines.append("No new error pattern since the start: the same errors as before.")
        for group in f.pods[:3]:
            owner = group.deployment or "pods of no deployment"
            names = ", ".join(f"{n} ({s}, {r} restarts)" for n, s, _, r in group.rows[:3])
            lines.append(f"**{owner}**: {group.describe()}: {names}.")
        if f.warnings:
            reasons = Counter(
                (e.get("reason", ""), (e.get("involvedObject") or {}).get("name", ""))
                for e in f.warnings
            )
            top = ", ".join(f"{reason} on {obj}" for (reason, obj), _ in reasons.most_common(3))
            lines.append(f"{_n(len(f.warnings), 'warning event')} in {self.t.namespace}: {top}.")
        verdict = self.verdict()
        if verdict:
            lines.append(verdict)
        return lines

    def _metrics(self) -> str:
        f, start = self.f, self.start
        health = f.health
        parts = []
        if start is not None and f.errors:
            before = _mean([p for p in f.errors if p[0] < start.timestamp()])
            after = _mean([p for p in f.errors if p[0] >= start.timestamp()])
            text = f"Error ratio {_percent(after)} since the start"
            text += (
                f" ({_percent(before)} before)" if before is not None else " (no data before it)"
            )
            parts.append(text)
        elif isinstance(health.get("error ratio"), float):
            parts.append(f"Error ratio {_percent(health['error ratio'])} now")
        rate = health.get("request rate")
        if isinstance(rate, float) and math.isfinite(rate):
            parts.append(f"{rate:.3g} req/s")
        p95 = health.get("p95 latency")
        if isinstance(p95, float) and math.isfinite(p95):
            parts.append(f"p95 {p95 * 1000:.0f} ms")
        window = health.get("window")
        return "; ".join(parts) + (f" (rates over {window})." if window else ".")

    def verdict(self) -> str:
        """One rule-based sentence on the likely cause."""
        f = self.f
        new = any(p["status"] == "new" for p in f.patterns)
        rising = self._error_rose()
        if self.suspects:
            r = self.suspects[0]
            signs = []
            if rising:
                signs.append("the error ratio rose after it")
            if new:
                signs.append("a new error pattern began")
            if any(g.deployment == r.deployment for g in f.pods):
                signs.append(f"{r.deployment} pods are failing")
            why = f": {_and(signs)}" if signs else ""
            return f"Most likely cause: the {r.deployment} deploy (revision {r.revision}){why}."
        others = [g for g in f.pods if g.deployment and g.deployment != self.t.service]
        if others:
            g = others[0]
            return (
                f"No deploy of {self.t.service or 'it'} before the start; {g.deployment} in the "
                f"same namespace is failing ({g.describe()}): a dependency?"
            )
        if f.pods:
            return "No deploy before the start; its pods are failing: see their events and logs."
        if new:
            return "No deploy before the start; the new error pattern is the best lead."
        if f.health or f.patterns or f.kube_read:
            return "No deploy, failing pod or new error pattern found: check its dependencies and the runbook."
        return ""

    def _error_rose(self) -> bool:
        if self.start is None or not self.f.errors:
            return False
        before = _mean([p for p in self.f.errors if p[0] < self.start.timestamp()])
        after = _mean([p for p in self.f.errors if p[0] >= self.start.timestamp()])
        return after is not None and after > 0.01 and (before is None or after > 2 * before)

    # -- blocks ------------------------------------------------------------------------------

    def alert_block(self) -> Text | None:
        alert = self.f.alert
        if alert is None:
            return None
        lines = [f"**Alert** `{alert.name}` {{{alert.key_labels}}}"]
        if alert.started:
            lines.append(f"started {alert.started:%Y-%m-%d %H:%M:%S} UTC")
        description = alert.annotations.get("description")
        if description and description != alert.annotations.get("summary"):
            lines.append(_short(description, 400))
        runbook = alert.annotations.get("runbook_url") or alert.annotations.get("runbook")
        if runbook and re.match(r"^https?://\S+$", runbook):
            lines.append(f"[runbook]({runbook})")
        elif runbook:
            lines.append(f"runbook: {_short(runbook, 200)}")
        if alert.others:
            more = f" and {len(alert.others) - 3} more" if len(alert.others) > 3 else ""
            lines.append("also firing: " + ", ".join(alert.others[:3]) + more)
        return Text(text="\n".join(lines))

    def patterns_table(self) -> Table | None:
        if not self.f.patterns:
            return None
        rows = []
        for p in self.f.patterns:
            first = _when(p.get("first_seen"))
            rows.append(
                [
                    p["status"],
                    str(p.get("count", 0)),
                    relative(first, self.start, self.now) if first else "?",
                    _short(str(p.get("pattern", "")), 120),
                ]
            )
        return Table.bounded(["errors", "count", "first seen", "pattern"], rows, SHOWN, "patterns")

    def kube_table(self) -> Table | None:
        rows = []
        for r in self.f.rollouts:
            when = relative(r.at, self.start, self.now) if r.at else "?"
            rows.append(
                [
                    "rollout",
                    f"deployment/{r.deployment}",
                    f"revision {r.revision} ({r.image})",
                    when,
                ]
            )
        for group in self.f.pods:
            for name, status, ready, restarts in group.rows:
                rows.append(
                    ["pod", f"pod/{name}", f"{status}, ready {ready}", f"{restarts} restarts"]
                )
        for e in self.f.warnings:
            obj = e.get("involvedObject") or {}
            moment = timestamp(event_time(e))
            rows.append(
                [
                    "warning",
                    f"{str(obj.get('kind', '')).lower()}/{obj.get('name', '')}",
                    f"{e.get('reason', '')}: {_short(e.get('message') or '', 100)}",
                    relative(moment, self.start, self.now) if moment else "?",
                ]
            )
        if not rows:
            return None
        return Table.bounded(["what", "object", "state", "when"], rows, SHOWN * 3, "rows")

    def buttons(self) -> list[ActionButton]:
        t, f = self.t, self.f
        namespace = t.namespace
        offered: list[tuple[str, Invocation, ButtonStyle]] = []
        rolled_back = set()
        for r in self.suspects:
            if r.previous is None or not namespace or not _valid(DNS_NAME, r.deployment):
                continue
            when = relative(r.at, self.start, self.now) if r.at else "recently"
            offered.append(
                (
                    f"roll back {r.deployment} to revision {r.previous} "
                    f"(revision {r.revision} deployed {when})",
                    Invocation(
                        skill="k8s.rollback",
                        args={"name": r.deployment, "namespace": namespace, "revision": r.previous},
                    ),
                    ButtonStyle.DANGER,
                )
            )
            rolled_back.add(r.deployment)
        for group in f.pods:
            crashing = sum(n for reason, n in group.reasons.items() if reason in RESTARTABLE)
            if not crashing or not group.deployment or group.deployment in rolled_back:
                continue
            if not namespace or not _valid(DNS_NAME, group.deployment):
                continue
            reason = next(r for r, _ in group.reasons.most_common() if r in RESTARTABLE)
            offered.append(
                (
                    f"restart {group.deployment} ({_n(crashing, 'pod')} in {reason})",
                    Invocation(
                        skill="k8s.restart", args={"name": group.deployment, "namespace": namespace}
                    ),
                    ButtonStyle.PRIMARY,
                )
            )
        alert = f.alert
        if alert is not None and not alert.silenced:
            matchers = {"alertname": alert.name}
            for label in dict.fromkeys((t.service_label, *SILENCE_LABELS, t.namespace_label)):
                if label in alert.labels:
                    matchers[label] = alert.labels[label]
            scope = ", ".join(f"{k}={v}" for k, v in matchers.items() if k != "alertname")
            offered.append(
                (
                    f"silence {alert.name}"
                    + (f" ({scope})" if scope else "")
                    + f" for {SILENCE_FOR}",
                    Invocation(
                        skill="alerts.silence",
                        args={
                            "matchers": matchers,
                            "duration": SILENCE_FOR,
                            "comment": f"triage of {alert.name} on {self.subject} "
                            f"(opsbot, thread {t.ctx.request.thread_key})",
                        },
                    ),
                    ButtonStyle.DEFAULT,
                )
            )
        buttons = []
        seen = set()
        for label, invocation, style in offered[:MAX_BUTTONS]:
            button_id = action_id(self.key, invocation)
            if button_id in seen:
                continue
            seen.add(button_id)
            buttons.append(
                ActionButton(id=button_id, label=label[:200], invocation=invocation, style=style)
            )
        return buttons

    def result(self) -> SkillResult:
        t, f = self.t, self.f
        headline = self.headline()
        findings = self.findings()
        buttons = self.buttons()
        blocks: list[Block] = [Text(text="\n".join([*headline, *findings]))]
        if alert := self.alert_block():
            blocks.append(alert)
        if f.chart:
            blocks.append(
                Image(
                    title=f"{self.subject}: request rate and error ratio",
                    data=f.chart,
                    alt="request rate and error ratio"
                    + (f", {f.alert.name if f.alert else 'start'} marked" if self.start else ""),
                )
            )
        if table := self.patterns_table():
            blocks.append(Text(text="**Error patterns** (Loki), new first:"))
            blocks.append(table)
        if table := self.kube_table():
            blocks.append(Text(text=f"**Kubernetes** ({t.namespace}):"))
            blocks.append(table)
        if f.gaps:
            blocks.append(
                Text(text="**Not gathered:**\n" + "\n".join(f"- {g.line()}" for g in f.gaps))
            )
        if buttons:
            blocks.append(
                Text(text="**Suggested actions** (each asks for approval as its policy says):")
            )
            blocks.extend(buttons)
        failed = [g.source for g in f.gaps if g.kind == "failed"]
        summary = self.summary(len(buttons), failed)
        return SkillResult(
            summary=summary,
            blocks=blocks,
            data=self.data(buttons),
        )

    def summary(self, buttons: int, failed: list[str]) -> str:
        f = self.f
        parts = [f"{f.alert.name} on {self.subject}" if f.alert else self.subject]
        if self.suspects:
            r = self.suspects[0]
            when = relative(r.at, self.start, self.now) if r.at else "recently"
            parts.append(f"deploy of {r.deployment} (revision {r.revision}) {when}")
        if f.errors and self.start is not None:
            after = _mean([p for p in f.errors if p[0] >= self.start.timestamp()])
            if after is not None:
                parts.append(f"error ratio {_percent(after)} since the start")
        new = sum(1 for p in f.patterns if p["status"] == "new")
        if new:
            parts.append(_n(new, "new error pattern"))
        crashing = sum(len(g.rows) for g in f.pods)
        if crashing:
            parts.append(f"{_n(crashing, 'pod')} failing or restarting")
        if failed:
            parts.append(f"{', '.join(dict.fromkeys(failed))} failed")
        parts.append(_n(buttons, "suggested action"))
        return "; ".join(parts)

    def data(self, buttons: list[ActionButton]) -> dict[str, Any]:
        f, t = self.f, self.t
        alert = f.alert
        return {
            "service": t.service,
            "namespace": t.namespace,
            "since": t.since,
            "started_at": self.start.isoformat() if self.start else None,
            "alert": {
                "name": alert.name,
                "labels": alert.labels,
                "annotations": alert.annotations,
                "started_at": alert.started.isoformat() if alert.started else None,
                "fingerprint": alert.fingerprint,
                "silenced": alert.silenced,
            }
            if alert
            else None,
            "health": {
                k: v for k, v in f.health.items() if not isinstance(v, float) or math.isfinite(v)
            },
            "patterns": f.patterns,
            "rollouts": [
                {
                    "deployment": r.deployment,
                    "revision": r.revision,
                    "image": r.image,
                    "at": r.at.isoformat() if r.at else None,
                    "previous": r.previous,
                    "suspect": r in self.suspects,
                }
                for r in f.rollouts
            ],
            "pods": [
                {"deployment": g.deployment, "pods": [list(row) for row in g.rows]} for g in f.pods
            ],
            "warnings": len(f.warnings),
            "gaps": [{"source": g.source, "kind": g.kind, "why": g.why} for g in f.gaps],
            "verdict": self.verdict(),
            "actions": [
                {"id": b.id, "label": b.label, "skill": b.invocation.skill} for b in buttons
            ],
        }


def _and(parts: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- the skill -------------------------------------------------------------------------------


class IncidentTriage(Skill[TriageArgs, Incident]):
    name = "incident.triage"
    summary = (
        "Investigate an alert, a service or a namespace: the alert, RED metrics and a chart, "
        "new error patterns, Kubernetes events, pods and rollouts; a summary and suggested fixes"
    )
    Args = TriageArgs
    risk = Risk.READ
    examples = [
        "why is checkout slow?",
        "what's wrong with payments in shop",
        "look into KubePodCrashLooping",
        "frontend is throwing 500s, dig in",
        "triage HighErrorRate",
        "investigate payments in shop, customers report failures",
        "[FIRING:1] HighErrorRate (checkout shop critical)",
    ]
    keywords = {
        "triage": 4.0,
        "investigat": 3.5,
        "dig": 3.0,
        "look into": 3.0,
        "root cause": 3.5,
        "why": 2.0,
        "wrong": 2.5,
        "what be up": 2.0,
        "still": 0.8,
        "going on": 1.5,
        "slow": 1.5,
        "broken": 2.0,
        "down": 1.0,  # "checkout down?"; not the scale idioms ("spin cart down"):
        "spin * down": -2.0,
        "take * down": -2.0,
        "scale * down": -2.0,
        "shut * down": -2.0,
        "bring * down": -2.0,
        "runbook": -2.0,  # "show me the runbook for X": no skill has runbooks
        "keep": 1.5,
        "leak": 2.0,
        "spike": 1.5,
        "cause": 2.0,  # "what's causing the errors on payments?"  # "the 5xx spike on checkout", "latency spike"
        "what do i do": 2.0,  # "X firing for cart, what do I do"
        "what should i do": 2.0,
        # a service said to be failing, not its error log: "cart has been erroring"
        "=erroring": 2.5,
        "=crashing": 2.0,
        "crashloop": 1.0,  # with "why": "why is the checkout pod crashlooping"  # "I think cart is leaking memory": not a memory chart  # "payments keeps crashing / OOMing / timing out"
        "=ooming": 2.0,
        "outage": 2.5,
        "still fail": 2.0,
        "customer": 1.0,
        "<alertname>": 1.2,
        "500": 1.0,
        "502": 1.5,  # "users are seeing 502s on cart"
        "503": 1.5,
        "504": 1.5,
        "user": 1.0,
        "diagnose": 3.0,  # (a cue is a word: "diagnos" stemmed to "diagno" met no request)
        "diagnosis": 3.0,
        "debug": 2.0,
        "query": -1.5,
        "<promql>": -2.0,
        "<logql>": -3.0,
        "list": -1.0,
        "silence": -1.5,
        "history": -1.5,
        # a pasted notification's "[FIRING:3]" (one token; the alert name may be taken for
        # PromQL by then, so the signal must outweigh <promql>)
        **{f"=firing:{n}": 5.0 for n in range(1, 21)},
    }

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        """A pasted notification (``[FIRING:1] HighErrorRate ...``) names the alert; "X in
        <namespace>" names the service; with an alert named, the service is only taken from
        words that name one ("on checkout", a pod's deployment), never the alert name."""
        text = str(getattr(parsed, "text", ""))
        if m := PASTED.search(text):
            found["alert"] = m.group(1)
        since = str(found.get("since", ""))
        if re.fullmatch(r"[1-5]\d\ds", since) and not re.search(
            rf"\b(?:last|past|since|over|for)\s+{since}\b", text, re.I
        ):
            del found["since"]  # "throwing 500s": HTTP statuses, not 500 seconds
        namespace = found.get("namespace")
        if found.get("alert") and "service" not in found:
            service = None
            for token in re.findall(r"[a-z0-9][a-z0-9-]+", text):
                if m := POD_NAME.match(token):
                    service = m.group("owner")
                    break
            if service is None:
                for m in WORKLOAD_WORDS.finditer(text):
                    word = m.group(1).lower()
                    if word not in NOT_NAMES and word != namespace:
                        service = word
                        break
            found["service"] = service  # None: the router does not guess one
        return found

    async def run(self, args: TriageArgs, ctx: SkillContext[Incident]) -> SkillResult:
        return await Triage(args, ctx).run()


Incident.skills = (IncidentTriage,)
