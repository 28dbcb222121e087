"""Pure readers of Kubernetes API objects (the JSON the server sent, as dicts): ages, pod
states, rollout status as ``kubectl rollout status`` computes it, images, selectors, the
fields ``k8s.describe`` shows, event rows and a deployment's revisions.

StatefulSets and DaemonSets keep their revisions in ControllerRevisions, not ReplicaSets:
:func:`controlled_revisions`, :func:`find_history`, :func:`revision_template` and
:func:`statefulset_status` / :func:`daemonset_status` follow kubectl's ``rollout`` helpers
for them (``k8s.io/kubectl/pkg/polymorphichelpers``: ``history.go``, ``rollback.go``,
``rollout_status.go``).

Nothing here calls the API or imports the ``kubernetes`` library: every function takes
objects and returns values (see tests/test_k8s_objects.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from opsbot.durations import format_duration

# -- API vocabulary --------------------------------------------------------------------------

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
HASH_LABEL = "pod-template-hash"
#: the label the StatefulSet and DaemonSet controllers put on their ControllerRevisions and pods
REVISION_HASH_LABEL = "controller-revision-hash"

#: the kinds the rollout skills act on, as kubectl names them (``deployment``,
#: ``statefulset``, ``daemonset``), with their API kind
WORKLOAD_KINDS = {
    "deployment": "Deployment",
    "statefulset": "StatefulSet",
    "daemonset": "DaemonSet",
}

#: container states that make a pod "troubled" (listed first by ``k8s.pods`` and ``k8s.logs``)
TROUBLE = (
    "CrashLoopBackOff",
    "Error",
    "ImagePullBackOff",
    "ErrImagePull",
    "OOMKilled",
    "CreateContainerConfigError",
    "Evicted",
)


# -- times -----------------------------------------------------------------------------------


def timestamp(value: str | None) -> datetime | None:
    """An RFC 3339 time of the API (``2026-11-01T10:00:00Z``); None when absent or invalid."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(value: str | None, now: datetime | None = None) -> str:
    """How long ago ``value`` was, as kubectl shows ages (``3d4h``); "?" when unknown."""
    started = timestamp(value)
    if started is None:
        return "?"
    now = now or datetime.now(UTC)
    return format_duration(now - started) if now > started else "0s"


# -- labels and selectors --------------------------------------------------------------------


def selector_of(obj: dict[str, Any]) -> dict[str, str]:
    """``spec.selector.matchLabels`` of a workload."""
    return dict(obj.get("spec", {}).get("selector", {}).get("matchLabels", {}) or {})


def selector_string(labels: dict[str, str]) -> str:
    """A label selector for the API: ``app=checkout,tier=web`` (sorted)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def parse_selector(text: str) -> dict[str, str]:
    """The equality terms of a label selector (``app=checkout,tier=web``); others are ignored."""
    return dict(p.split("=", 1) for p in text.split(",") if "=" in p)


def matches(obj: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether the object carries every label of ``labels``."""
    own = obj.get("metadata", {}).get("labels", {}) or {}
    return all(own.get(k) == v for k, v in labels.items())


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    """``metadata.annotations`` ({} when there are none)."""
    return dict(obj.get("metadata", {}).get("annotations", {}) or {})


# -- pods ------------------------------------------------------------------------------------


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


def pod_rank(pod: dict[str, Any]) -> tuple[int, str]:
    """Sort key, troubled pods first: 0 failing, 1 starting or stopping, 2 not ready, 3 fine;
    then by name."""
    reason, ready, total, _ = pod_state(pod)
    if reason in TROUBLE:
        rank = 0
    elif reason in ("Pending", "ContainerCreating", "Terminating"):
        rank = 1
    elif ready < total:
        rank = 2
    else:
        rank = 3
    return rank, pod["metadata"]["name"]


def pod_row(pod: dict[str, Any], now: datetime | None = None) -> list[str]:
    """``k8s.pods``' row: pod, status, ready, restarts, age, node."""
    reason, ready, total, restarts = pod_state(pod)
    return [
        pod["metadata"]["name"],
        reason,
        f"{ready}/{total}",
        str(restarts),
        age(pod["metadata"].get("creationTimestamp"), now),
        pod.get("spec", {}).get("nodeName", ""),
    ]


# -- deployments -----------------------------------------------------------------------------


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


def statefulset_status(sts: dict[str, Any]) -> tuple[bool, bool, str]:
    """(done, failed, message), following kubectl's StatefulSetStatusViewer: the spec update
    observed, every replica ready, then (RollingUpdate with a partition, which the API server
    defaults to 0) ``updatedReplicas`` reaching ``replicas - partition``, else
    ``currentRevision`` reaching ``updateRevision``. An ``OnDelete`` StatefulSet has no
    rollout to follow (kubectl: "rollout status is only available for RollingUpdate strategy
    type"): reported as done, with that message."""
    meta, spec, status = sts.get("metadata", {}), sts.get("spec", {}), sts.get("status", {}) or {}
    name = meta.get("name", "?")
    strategy = spec.get("updateStrategy", {}) or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return (
            True,
            False,
            f"statefulset {name!r}: rollout status is only available for RollingUpdate strategy "
            f"type (it is {strategy.get('type')}: pods are replaced only when deleted)",
        )
    observed = int(status.get("observedGeneration", 0))
    if observed == 0 or int(meta.get("generation", 0)) > observed:
        return False, False, f"Waiting for statefulset {name!r} spec update to be observed..."
    want = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas", 0))
    updated = int(status.get("updatedReplicas", 0))
    if ready < want:
        return (
            False,
            False,
            f"Waiting for {want - ready} pods of statefulset {name!r} to be ready...",
        )
    rolling = strategy.get("rollingUpdate")
    if rolling is not None:
        partition = int(rolling.get("partition", 0) or 0)
        if updated < want - partition:
            return (
                False,
                False,
                f"Waiting for partitioned roll out of statefulset {name!r} to finish: "
                f"{updated} out of {want - partition} new pods have been updated...",
            )
        return (
            True,
            False,
            f"statefulset {name!r}: partitioned roll out complete: {updated} new pods have been updated...",
        )
    if status.get("updateRevision") != status.get("currentRevision"):
        return (
            False,
            False,
            f"waiting for statefulset {name!r} rolling update to complete {updated} pods at "
            f"revision {status.get('updateRevision')}...",
        )
    return (
        True,
        False,
        f"statefulset {name!r} rolling update complete {status.get('currentReplicas', 0)} pods at "
        f"revision {status.get('currentRevision')}...",
    )


def daemonset_status(ds: dict[str, Any]) -> tuple[bool, bool, str]:
    """(done, failed, message), following kubectl's DaemonSetStatusViewer:
    ``updatedNumberScheduled`` then ``numberAvailable`` reaching ``desiredNumberScheduled``
    once the spec update is observed (``OnDelete``: no rollout to follow, as for a
    StatefulSet)."""
    meta, spec, status = ds.get("metadata", {}), ds.get("spec", {}), ds.get("status", {}) or {}
    name = meta.get("name", "?")
    strategy = (spec.get("updateStrategy", {}) or {}).get("type", "RollingUpdate")
    if strategy != "RollingUpdate":
        return (
            True,
            False,
            f"daemon set {name!r}: rollout status is only available for RollingUpdate strategy "
            f"type (it is {strategy}: pods are replaced only when deleted)",
        )
    if int(meta.get("generation", 0)) > int(status.get("observedGeneration", 0)):
        return False, False, f"Waiting for daemon set {name!r} spec update to be observed..."
    desired = int(status.get("desiredNumberScheduled", 0))
    updated = int(status.get("updatedNumberScheduled", 0))
    available = int(status.get("numberAvailable", 0))
    if updated < desired:
        return (
            False,
            False,
            f"Waiting for daemon set {name!r} rollout to finish: {updated} out of {desired} new pods have been updated...",
        )
    if available < desired:
        return (
            False,
            False,
            f"Waiting for daemon set {name!r} rollout to finish: {available} of {desired} updated pods are available...",
        )
    return True, False, f"daemon set {name!r} successfully rolled out"


def workload_status(kind: str, obj: dict[str, Any]) -> tuple[bool, bool, str]:
    """:func:`rollout_status`, :func:`statefulset_status` or :func:`daemonset_status`."""
    if kind == "statefulset":
        return statefulset_status(obj)
    if kind == "daemonset":
        return daemonset_status(obj)
    return rollout_status(obj)


def images(template: dict[str, Any]) -> str:
    """``container=image, ...`` of a pod template (or a pod)."""
    containers = template.get("spec", {}).get("containers", []) or []
    return ", ".join(f"{c.get('name')}={c.get('image')}" for c in containers)


def owned_revisions(
    dep: dict[str, Any], replicasets: Iterable[dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """The deployment's ReplicaSets by revision: those it owns (by uid, when it has one) that
    match its selector and carry a numeric revision annotation."""
    labels = selector_of(dep)
    uid = dep["metadata"].get("uid")
    found: dict[int, dict[str, Any]] = {}
    for rs in replicasets:
        owners = rs["metadata"].get("ownerReferences", []) or []
        if uid and not any(o.get("uid") == uid for o in owners):
            continue
        if not matches(rs, labels):
            continue
        rev = annotations_of(rs).get(REVISION)
        if rev and rev.isdigit():
            found[int(rev)] = rs
    return found


def history_rows(
    revisions: dict[int, dict[str, Any]], current: str, now: datetime | None = None
) -> list[list[str]]:
    """``k8s.rollout.history``' rows, newest first: revision (``(current)`` marked),
    change-cause, images, age."""
    return [
        [
            str(rev) + (" (current)" if str(rev) == current else ""),
            annotations_of(rs).get(CHANGE_CAUSE, "<none>"),
            images(rs.get("spec", {}).get("template", {})),
            age(rs["metadata"].get("creationTimestamp"), now),
        ]
        for rev, rs in sorted(revisions.items(), reverse=True)
    ]


def template_without_hash(rs: dict[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template without the ``pod-template-hash`` label the controller
    added: the template to put back into the deployment (``kubectl rollout undo``)."""
    template = dict(rs.get("spec", {}).get("template", {}))
    meta = dict(template.get("metadata", {}) or {})
    labels = {k: v for k, v in (meta.get("labels", {}) or {}).items() if k != HASH_LABEL}
    meta["labels"] = labels
    template["metadata"] = meta
    return template


# -- ControllerRevisions (StatefulSets, DaemonSets) -------------------------------------------


def controlled_revisions(
    obj: dict[str, Any], revisions: Iterable[dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """The ControllerRevisions of a StatefulSet or DaemonSet by ``revision``, as kubectl's
    ``controlledHistory`` finds them: listed with the object's label selector, and kept only
    when controlled by it (an owner reference with ``controller: true`` and its uid)."""
    uid = obj.get("metadata", {}).get("uid")
    labels = selector_of(obj)
    found: dict[int, dict[str, Any]] = {}
    for rev in revisions:
        owners = rev.get("metadata", {}).get("ownerReferences", []) or []
        if not any(o.get("controller") and o.get("uid") == uid for o in owners):
            continue
        if not matches(rev, labels):
            continue
        number = rev.get("revision")
        if isinstance(number, int) and not isinstance(number, bool):
            found[number] = rev
    return found


def find_history(name: str, kind: str, known: dict[int, Any], wanted: int | None = None) -> int:
    """The revision ``kubectl rollout undo`` goes to for a StatefulSet or DaemonSet (kubectl's
    ``findHistory``): ``wanted`` if it is one of ``known``; else (None) the second highest
    revision, the controller always numbering the live template's revision highest. Raises
    :class:`ValueError` with kubectl's reasons."""
    if wanted is not None:
        if wanted not in known:
            listed = ", ".join(str(r) for r in sorted(known)) or "none"
            raise ValueError(f"{kind} {name} has no revision {wanted} (revisions: {listed})")
        return wanted
    if len(known) <= 1:
        raise ValueError(f"{kind} {name} has no previous revision to roll back to")
    return sorted(known)[-2]


def revision_template(rev: dict[str, Any]) -> dict[str, Any]:
    """The pod template a ControllerRevision holds: its ``data`` is the strategic merge patch
    ``{"spec": {"template": {..., "$patch": "replace"}}}`` the controllers record (and
    ``kubectl rollout undo`` sends back), so the template is that value without the
    directive."""
    data = rev.get("data", {}) or {}
    template = dict((data.get("spec", {}) or {}).get("template", {}) or {})
    template.pop("$patch", None)
    return template


def current_revision(obj: dict[str, Any], revisions: dict[int, dict[str, Any]]) -> int | None:
    """The revision the object's live template is: a StatefulSet's ``status.updateRevision``
    names its ControllerRevision; otherwise (a DaemonSet) the one whose template is the live
    one, else the highest (the controllers renumber the live template's revision highest)."""
    wanted = (obj.get("status", {}) or {}).get("updateRevision")
    for number, rev in revisions.items():
        if wanted and rev.get("metadata", {}).get("name") == wanted:
            return number
    live = obj.get("spec", {}).get("template", {})
    for number, rev in sorted(revisions.items(), reverse=True):
        if revision_template(rev) == live:
            return number
    return max(revisions) if revisions else None


def controller_history_rows(
    revisions: dict[int, dict[str, Any]], current: int | None, now: datetime | None = None
) -> list[list[str]]:
    """:func:`history_rows` for ControllerRevisions: revision, change-cause (the revision's
    ``kubernetes.io/change-cause`` annotation, as kubectl's ``printHistory``), images, age."""
    return [
        [
            str(number) + (" (current)" if number == current else ""),
            annotations_of(rev).get(CHANGE_CAUSE, "<none>"),
            images(revision_template(rev)),
            age(rev.get("metadata", {}).get("creationTimestamp"), now),
        ]
        for number, rev in sorted(revisions.items(), reverse=True)
    ]


# -- describe --------------------------------------------------------------------------------


def describe_fields(kind: str, obj: dict[str, Any], now: datetime | None = None) -> list[list[str]]:
    """The (field, value) rows ``k8s.describe`` shows for an object of ``kind``."""
    meta, spec, status = (
        obj.get("metadata", {}),
        obj.get("spec", {}) or {},
        obj.get("status", {}) or {},
    )
    rows = [["name", meta.get("name", "")], ["age", age(meta.get("creationTimestamp"), now)]]
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


def condition_rows(obj: dict[str, Any]) -> list[list[str]]:
    """``status.conditions`` as rows: condition, status, reason, message (100 characters)."""
    return [
        [
            c.get("type", ""),
            c.get("status", ""),
            c.get("reason", ""),
            (c.get("message") or "")[:100],
        ]
        for c in (obj.get("status", {}) or {}).get("conditions", []) or []
    ]


# -- events ----------------------------------------------------------------------------------


def event_time(event: dict[str, Any]) -> str:
    """When the event last happened: ``lastTimestamp``, else ``eventTime``, else its creation."""
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )


def event_row(event: dict[str, Any], now: datetime | None = None) -> list[str]:
    """object (``pod/checkout-1``), last seen, type, reason, message (140 characters)."""
    obj = event.get("involvedObject", {}) or {}
    return [
        f"{(obj.get('kind') or '').lower()}/{obj.get('name', '')}",
        age(event_time(event), now),
        event.get("type", ""),
        event.get("reason", ""),
        (event.get("message") or "")[:140],
    ]


def recent_events(
    events: Iterable[dict[str, Any]], since: datetime, about: str | None = None
) -> list[dict[str, Any]]:
    """Events not older than ``since`` (undated ones count as now), about objects whose name
    starts with ``about`` when given; warnings first, then newest first."""
    now = datetime.now(UTC)
    found = [
        e
        for e in events
        if (not about or (e.get("involvedObject", {}) or {}).get("name", "").startswith(about))
        and (timestamp(event_time(e)) or now) >= since
    ]
    found.sort(key=event_time, reverse=True)
    found.sort(key=lambda e: e.get("type") != "Warning")  # stable: warnings first, newest first
    return found
