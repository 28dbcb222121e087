"""A local Kubernetes API for ``opsbot demo``: the shop the demo exporter serves, as a cluster.

No real API server can run on a laptop without a container runtime, so :class:`DemoCluster`
emulates the part of the Kubernetes REST API that opsbot's ``k8s.*`` skills and ``kubectl``
``get``/``describe``/``logs``/``scale``/``rollout`` use, with the server's semantics:

- discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/apps``, ``/apis/apps/v1``)
  and server-side printing (``Accept: ...;as=Table``), so ``kubectl`` works unmodified;
- namespaces, nodes, pods (``pods/log`` with ``container``, ``tailLines``, ``sinceSeconds``,
  ``sinceTime``, ``timestamps``, ``previous``, ``limitBytes``, ``follow``), services,
  events, deployments (with the
  ``scale`` subresource), replicasets, statefulsets, daemonsets and controllerrevisions: GET,
  LIST (``labelSelector``, ``fieldSelector``, ``limit``/``continue``), WATCH, PATCH (strategic
  merge, JSON merge and JSON patch), PUT (optimistic concurrency on ``resourceVersion``),
  POST and DELETE; ``dryRun=All`` answers the would-be object and keeps nothing;
- errors as ``Status`` objects with the API server's reasons and messages (400 BadRequest,
  401 Unauthorized, 404 NotFound, 405 MethodNotAllowed, 409 Conflict/AlreadyExists,
  415 UnsupportedMediaType, 422 Invalid);
- a controller loop playing the deployment, replicaset, scheduler and kubelet parts: a changed
  pod template makes a new ReplicaSet revision (an older template brings its revision back as
  the newest, as ``rollout undo`` does), pods are replaced one at a time with surge 25 % /
  unavailable 25 %, ``status`` (``observedGeneration``, ``updatedReplicas``,
  ``readyReplicas``, ``availableReplicas``, conditions) follows, replicas follow ``scale``,
  events are recorded, and a crash-looping pod keeps restarting; a statefulset controller
  (``OrderedReady`` pods ``<name>-0..N-1``, a ControllerRevision per template whose ``data``
  is the template as a ``$patch: replace`` strategic merge patch, the live template's revision
  renumbered highest, RollingUpdate from the highest ordinal down, one pod at a time, and
  ``status`` ``currentRevision``/``updateRevision``/``updatedReplicas``/``readyReplicas``), as
  https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/ describes it. With the default
  :class:`Timings` (0.25 s loop, a new pod ready after 1 s, a deleted one gone after 1 s,
  a restart every 30 s) a three-replica rollout completes in about four seconds.

It is seeded with the shop of :mod:`opsbot.demo` (checkout, payments, cart and frontend in
``shop``; checkout and cart in ``staging``; coredns in ``kube-system``), each deployment with
two or three revisions, the statefulset ``redis`` in ``shop`` (three pods, two revisions), and one payments pod in ``CrashLoopBackOff``. Pod logs are generated
from each pod's app and state. It listens on loopback only: a bearer token other than the
kubeconfig's is refused (401), a request without one is served (kubectl sends none over plain
http); impersonation headers are accepted and recorded, and there is no RBAC.

``python -m opsbot.demo_cluster --kubeconfig FILE`` runs it on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import hashlib
import itertools
import json
import logging
import random
import re
import secrets
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

JSON = dict[str, Any]
log = logging.getLogger(__name__)

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4-opsbot-demo",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-04-22T00:00:00Z",
    "goVersion": "go1.23.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE = "kubernetes.io/change-cause"
HASH_LABEL = "pod-template-hash"
# deployment annotations the controller does not copy to its ReplicaSets
_NOT_COPIED = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's rand.SafeEncodeString
MAX_EVENTS = 400  # per namespace; the oldest go first


# -- resources --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps`` / ``pods``: how the API server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


_RW = ["create", "delete", "get", "list", "patch", "update", "watch"]
RESOURCES: dict[tuple[str, str], Resource] = {
    (r.group, r.plural): r
    for r in (
        Resource("", "v1", "namespaces", "Namespace", False, ("ns",)),
        Resource("", "v1", "nodes", "Node", False, ("no",)),
        Resource("", "v1", "pods", "Pod", True, ("po",), ("all",), ("log", "status")),
        Resource("", "v1", "services", "Service", True, ("svc",), ("all",)),
        Resource("", "v1", "events", "Event", True, ("ev",)),
        Resource(
            "apps", "v1", "deployments", "Deployment", True, ("deploy",), ("all",), ("scale",)
        ),
        Resource("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("all",), ("scale",)),
        Resource("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("all",), ("scale",)),
        Resource("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("all",)),
        Resource("apps", "v1", "controllerrevisions", "ControllerRevision", True),
    )
}
NAMESPACES = RESOURCES["", "namespaces"]
NODES = RESOURCES["", "nodes"]
PODS = RESOURCES["", "pods"]
SERVICES = RESOURCES["", "services"]
EVENTS = RESOURCES["", "events"]
DEPLOYMENTS = RESOURCES["apps", "deployments"]
REPLICASETS = RESOURCES["apps", "replicasets"]
STATEFULSETS = RESOURCES["apps", "statefulsets"]
CONTROLLERREVISIONS = RESOURCES["apps", "controllerrevisions"]
REVISION_HASH = (
    "controller-revision-hash"  # the StatefulSet controller's label on revisions and pods
)
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


class ApiError(Exception):
    """An answer that is not a success, sent as a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> JSON:
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{res.qualified} "{name}" not found',
        {"name": name, "group": res.group, "kind": res.plural},
    )


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        {"name": name, "group": res.group, "kind": res.plural},
    )


def invalid(res: Resource, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422, one cause per (field, message), as the API server words validation errors."""
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    if len(causes) > 1:
        text = f"[{text}]"
    return ApiError(
        422,
        "Invalid",
        f'{res.qualified_kind} "{name}" is invalid: {text}',
        {
            "name": name,
            "group": res.group,
            "kind": res.kind,
            "causes": [
                {"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes
            ],
        },
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


# -- small helpers ------------------------------------------------------------------------------


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration`` (kubectl's AGE column)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        days = hours // 24
        return f"{days}d" if hours % 24 == 0 else f"{days}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years, days = hours // 24 // 365, hours // 24 % 365
    return f"{years}y{days}d" if hours < 24 * 365 * 8 and days else f"{years}y"


def safe_hash(data: Any, length: int = 10) -> str:
    """A stable short name suffix from ``data`` in the API server's safe alphabet."""
    digest = int.from_bytes(hashlib.sha256(json.dumps(data, sort_keys=True).encode()).digest())
    out = []
    for _ in range(length):
        digest, index = divmod(digest, len(SAFE_ALPHABET))
        out.append(SAFE_ALPHABET[index])
    return "".join(out)


def prune(value: Any) -> Any:
    """Drop nulls and empty maps/lists, as a typed Go round trip with ``omitempty`` does
    (``"creationTimestamp": null`` and ``"resources": {}`` in kubectl's rollback template)."""
    if isinstance(value, dict):
        out = {k: prune(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in out.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [prune(v) for v in value]
    return value


def meta(obj: JSON) -> JSON:
    m: JSON = obj.setdefault("metadata", {})
    return m


def annotations_of(obj: JSON) -> dict[str, str]:
    m = meta(obj)
    if m.get("annotations") is None:
        m["annotations"] = {}
    found: dict[str, str] = m["annotations"]
    return found


def controller_uid(obj: JSON) -> str | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def owner_ref(owner: JSON, res: Resource) -> JSON:
    return {
        "apiVersion": res.api_version,
        "kind": res.kind,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def revision_of(rs: JSON) -> int:
    value = annotations_of(rs).get(REVISION, "0")
    return int(value) if value.isdigit() else 0


def without_hash(template: JSON) -> JSON:
    out = copy.deepcopy(template)
    labels = (out.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    return prune(out)  # type: ignore[no-any-return]


def resolve_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%") and text[:-1].isdigit():
        scaled = int(text[:-1]) * total
        return -(-scaled // 100) if round_up else scaled // 100
    return int(text) if text.isdigit() else 0


# -- selectors ----------------------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|!=|=)\s*(?P<value>[A-Za-z0-9_.-]*)|"
    r"\s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


def _split_top(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


LabelTest = Callable[[dict[str, str]], bool]


def parse_label_selector(text: str) -> list[LabelTest]:
    """``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``."""
    tests: list[LabelTest] = []
    for part in _split_top(text):
        m = _REQUIREMENT.match(part)
        if not m or (m["neg"] and (m["op"] or m["setop"])):
            raise bad_request(f"unable to parse requirement: {part.strip()!r}")
        if m["neg"]:
            tests.append(_label_test(m["key"], "absent", frozenset()))
        elif m["op"]:
            tests.append(_label_test(m["key"], m["op"], frozenset([m["value"]])))
        elif m["setop"]:
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            tests.append(_label_test(m["key"], m["setop"], values))
        else:
            tests.append(_label_test(m["key"], "exists", frozenset()))
    return tests


def _label_test(key: str, op: str, values: frozenset[str]) -> LabelTest:
    def test(labels: dict[str, str]) -> bool:
        if op == "exists":
            return key in labels
        if op == "absent":
            return key not in labels
        if op in ("=", "==", "in"):
            return labels.get(key) in values
        return labels.get(key) not in values  # != and notin also match a missing label

    return test


def selector_from_labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "events": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "replicasets": ("status.replicas",),
    "namespaces": ("status.phase",),
    "nodes": ("spec.unschedulable",),
}


def field_value(obj: JSON, path: str) -> str:
    if path == "source":
        return str((obj.get("source") or {}).get("component", ""))
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_field_selector(res: Resource, text: str) -> list[Callable[[JSON], bool]]:
    tests: list[Callable[[JSON], bool]] = []
    allowed = ("metadata.name", "metadata.namespace", *_FIELDS.get(res.plural, ()))
    for part in text.split(","):
        if not part.strip():
            continue
        m = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        path, op, value = m.groups()
        if path not in allowed:
            raise bad_request(f'field label not supported: "{path}"')
        tests.append(_field_test(path, op != "!=", value))
    return tests


def _field_test(path: str, equal: bool, value: str) -> Callable[[JSON], bool]:
    def test(obj: JSON) -> bool:
        return (field_value(obj, path) == value) is equal

    return test


# -- patches ------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# list fields merged element by element in a strategic merge patch, and their merge keys
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
}
_SET_LISTS = {"finalizers"}


def strategic_merge(target: Any, patch: Any) -> Any:
    """A strategic merge patch as the API server applies one to the built-in types: lists of
    containers, env, volumes, ports... merge by their key; ``$patch: replace|delete``,
    ``$retainKeys`` and ``$deleteFromPrimitiveList/...`` are honoured; ``$setElementOrder``
    directives are accepted."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    patch = dict(patch)
    directive = patch.pop("$patch", None)
    if directive == "replace":
        return copy.deepcopy(patch)
    if directive == "delete":
        return None
    retain = patch.pop("$retainKeys", None)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key in [k for k in patch if k.startswith("$setElementOrder/")]:
        patch.pop(key)
    for key in [k for k in patch if k.startswith("$deleteFromPrimitiveList/")]:
        name = key.split("/", 1)[1]
        drop = patch.pop(key) or []
        out[name] = [v for v in out.get(name) or [] if v not in drop]
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list):
            out[key] = _merge_list(key, out.get(key), value)
        elif isinstance(value, dict):
            merged = strategic_merge(out.get(key), value)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        else:
            out[key] = value
    if retain is not None:
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(key: str, existing: Any, patch: list[Any]) -> list[Any]:
    current: list[Any] = [copy.deepcopy(v) for v in existing] if isinstance(existing, list) else []
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [copy.deepcopy(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    if key in _SET_LISTS:
        return current + [v for v in patch if v not in current]
    merge_key = _MERGE_KEYS.get(key)
    if key == "ports" and patch and isinstance(patch[0], dict):
        merge_key = "containerPort" if "containerPort" in patch[0] else "port"
    if merge_key is None or not all(isinstance(v, dict) for v in patch):
        return [copy.deepcopy(v) for v in patch]
    for item in patch:
        index = next(
            (i for i, c in enumerate(current) if c.get(merge_key) == item.get(merge_key)), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                current.pop(index)
        elif index is None:
            current.append(strategic_merge({}, item))
        else:
            current[index] = strategic_merge(current[index], item)
    return current


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"json patch: invalid path {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise ApiError(
                422,
                "Invalid",
                f'the server rejected our request due to an error in our request: doc is missing path: "{path}"',
            )
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise bad_request("json patch: the body must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"json patch: invalid operation {op!r}")
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        if kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = copy.deepcopy(_walk(doc, source, op.get("from", "")))
            if kind == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            doc = json_patch(doc, [{"op": "add", "path": path, "value": value}])
            continue
        if kind == "test":
            if _walk(doc, parts, path) != op.get("value"):
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our request: testing value {path} failed",
                )
            continue
        if not parts:
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op.get("value"))
                continue
            raise bad_request("json patch: cannot remove the whole document")
        parent = _walk(doc, parts[:-1], path)
        last = parts[-1]
        if isinstance(parent, dict):
            if kind in ("remove", "replace") and last not in parent:
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our request: {kind} operation does not apply: doc is missing key: {path}",
                )
            if kind == "remove":
                del parent[last]
            elif kind in ("add", "replace"):
                parent[last] = copy.deepcopy(op.get("value"))
            else:
                raise bad_request(f"json patch: unknown operation {kind!r}")
        elif isinstance(parent, list):
            index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
            if index < 0 or index > len(parent) or (kind != "add" and index == len(parent)):
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our request: index out of range: {path}",
                )
            if kind == "remove":
                parent.pop(index)
            elif kind == "add":
                parent.insert(index, copy.deepcopy(op.get("value")))
            elif kind == "replace":
                parent[index] = copy.deepcopy(op.get("value"))
            else:
                raise bad_request(f"json patch: unknown operation {kind!r}")
        else:
            raise ApiError(
                422, "Invalid", f"the server rejected our request: cannot apply {kind} at {path}"
            )
    return doc


STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def apply_patch(content_type: str, obj: JSON, body: Any) -> JSON:
    if content_type == STRATEGIC_MERGE:
        if not isinstance(body, dict):
            raise bad_request("a strategic merge patch must be a JSON object")
        result = strategic_merge(obj, body)
    elif content_type == MERGE_PATCH:
        if not isinstance(body, dict):
            raise bad_request("a merge patch must be a JSON object")
        result = merge_patch(obj, body)
    elif content_type == JSON_PATCH:
        result = json_patch(obj, body)
    else:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types "
            f"include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE}"
            + (" (server-side apply is not emulated)" if content_type == APPLY_PATCH else ""),
        )
    if not isinstance(result, dict):
        raise bad_request("the patch did not produce an object")
    return result


# -- the seeded shop -------------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    namespace: str
    name: str
    replicas: int
    #: (revision, version, change-cause or "", deployed this many hours ago), oldest first
    revisions: tuple[tuple[int, str, str, float], ...]
    image: str = ""
    crashing: int = 0  # pods of the current revision in CrashLoopBackOff
    port: int = 8080
    cpu: str = "100m"
    memory: str = "128Mi"
    tier: str = "backend"

    def image_for(self, version: str) -> str:
        return f"{self.image or 'ghcr.io/acme-shop/' + self.name}:{version}"


SHOP: tuple[App, ...] = (
    App(
        "shop",
        "checkout",
        3,
        (
            (1, "1.7.2", "deploy 1.7.2: faster cart totals", 24 * 21),
            (2, "1.7.3", "deploy 1.7.3: retry idempotent payment calls", 24 * 6),
            (3, "1.8.0", "deploy 1.8.0: new tax service client", 3),
        ),
        cpu="250m",
        memory="256Mi",
    ),
    App(
        "shop",
        "payments",
        3,
        (
            (4, "2.3.0", "deploy 2.3.0: SEPA instant", 24 * 30),
            (5, "2.4.0", "deploy 2.4.0: ledger batching", 24 * 9),
            (6, "2.4.1", "deploy 2.4.1: ledger retry fix", 26),
        ),
        crashing=1,
        memory="192Mi",
    ),
    App(
        "shop",
        "cart",
        2,
        (
            (1, "3.1.0", "deploy 3.1.0: initial release", 24 * 40),
            (2, "3.2.0", "deploy 3.2.0: redis 7 client", 24 * 6),
        ),
    ),
    App(
        "shop",
        "frontend",
        2,
        (
            (11, "5.0.3", "deploy 5.0.3: cache headers", 24 * 14),
            (12, "5.1.0", "deploy 5.1.0: new product page", 24 * 4),
            (13, "5.1.1", "deploy 5.1.1: fix image lazy loading", 20),
        ),
        port=3000,
        tier="web",
    ),
    App(
        "staging",
        "checkout",
        1,
        (
            (4, "1.8.0", "deploy 1.8.0: new tax service client", 24 * 2),
            (5, "1.9.0-rc.1", "deploy 1.9.0-rc.1: tax service timeouts", 5),
        ),
    ),
    App(
        "staging",
        "cart",
        1,
        (
            (2, "3.2.0", "deploy 3.2.0: redis 7 client", 24 * 8),
            (3, "3.3.0-rc.1", "deploy 3.3.0-rc.1: saved carts", 24),
        ),
    ),
    App(
        "kube-system",
        "coredns",
        2,
        ((1, "v1.11.3", "", 24 * 60),),
        image="registry.k8s.io/coredns/coredns",
        port=53,
        cpu="100m",
        memory="70Mi",
        tier="control-plane",
    ),
)
#: statefulsets (the ``revisions`` are ControllerRevision numbers)
STATEFUL: tuple[App, ...] = (
    App(
        "shop",
        "redis",
        3,
        (
            (1, "7.2.4", "redis 7.2.4", 24 * 30),
            (2, "7.2.5", "redis 7.2.5: CVE-2024-31449 fix", 24 * 5),
        ),
        image="docker.io/library/redis",
        port=6379,
        memory="256Mi",
        tier="cache",
    ),
)
NODE_NAMES = ("worker-1", "worker-2", "worker-3")


# -- pod simulation and logs ------------------------------------------------------------------


@dataclass
class PodSim:
    """What the kubelet would know about a pod: when it becomes ready, whether it crashes."""

    ready_at: float
    crash: bool = False
    next_crash: float = 0.0
    gone_at: float | None = None


@dataclass(frozen=True)
class Timings:
    """Seconds the controller takes: its loop ``tick``, a new pod until ready (``pod_start``),
    a deleted pod until gone (``pod_stop``), and between restarts of a crash-looping pod."""

    tick: float = 0.25
    pod_start: float = 1.0
    pod_stop: float = 1.0
    crash_every: float = 30.0
    progress_deadline: float | None = None  # default: each deployment's progressDeadlineSeconds


_LINES: dict[str, tuple[list[str], list[str], float]] = {
    # app -> (normal lines, error lines, share of errors); {ms} {id} {n} are filled in
    "checkout": (
        [
            "INFO  POST /api/checkout 200 {ms}ms order=ord_{id} items={n}",
            "INFO  GET /api/checkout/quote 200 {ms}ms cart=c_{id}",
            "WARN  tax-service: slow response {ms}ms (budget 250ms) order=ord_{id}",
        ],
        [
            'ERROR POST /api/checkout 500 {ms}ms order=ord_{id} error="tax-service: rpc error: code = Unavailable desc = connection reset by peer"',
            'ERROR POST /api/checkout 502 {ms}ms order=ord_{id} error="payments: context deadline exceeded"',
        ],
        0.2,
    ),
    "payments": (
        [
            "INFO  POST /v1/charges 200 {ms}ms charge=ch_{id} amount={n}.00 currency=EUR",
            "INFO  ledger: wrote batch of {n} entries in {ms}ms",
            "INFO  GET /v1/charges/ch_{id} 200 {ms}ms",
        ],
        ["WARN  ledger: write retried (attempt 2/5) after {ms}ms: serialization failure"],
        0.02,
    ),
    "cart": (
        [
            "INFO  GET /api/cart 200 {ms}ms cart=c_{id}",
            "INFO  POST /api/cart/items 201 {ms}ms cart=c_{id} sku=SKU-{n}",
            "INFO  redis: pool stats active={n} idle=8",
        ],
        [],
        0.0,
    ),
    "frontend": (
        [
            'INFO  GET / 200 {ms}ms ua="Mozilla/5.0"',
            "INFO  GET /products/{n} 200 {ms}ms",
            "INFO  GET /static/app.{id}.js 304 {ms}ms",
        ],
        ["WARN  GET /api/recommendations 504 {ms}ms upstream timed out"],
        0.03,
    ),
    "coredns": (
        [
            '[INFO] 10.244.1.{n}:5{ms} - {n}{n} "A IN checkout.shop.svc.cluster.local. udp 52 false 512" NOERROR qr,aa,rd 106 0.00{n}s',
            '[INFO] 10.244.2.{n}:4{ms} - {n}{n} "AAAA IN payments.shop.svc.cluster.local. udp 53 false 512" NOERROR qr,aa,rd 146 0.00{n}s',
        ],
        [],
        0.0,
    ),
}


def _startup_lines(app: str, image: str) -> list[str]:
    version = image.rsplit(":", 1)[-1]
    if app == "coredns":
        return [
            ".:53",
            "[INFO] plugin/reload: Running configuration SHA512 = 591cf328cccc12bc490481273e738df59329c62c0b729d94e8b61db9961c2fa5f046dd37f1cf888b953814040d180f52594972691cd6ff41be96639138a43908",
            f"CoreDNS-{version.lstrip('v')}",
            "linux/amd64, go1.22.7, 3d4ac9b",
        ]
    lines = [
        f"INFO  starting {app} {version} (go1.23.6, GOMAXPROCS=2)",
        "INFO  config: env=production region=eu-west-1 log_level=info",
    ]
    if app == "payments":
        lines.append(
            "INFO  ledger: connecting to postgres://payments:s3cr3t-ledger@ledger-db.shop.svc:5432/ledger"
        )
    lines.append(f"INFO  listening on :{8080 if app != 'frontend' else 3000}")
    return lines


_CRASH_LINES = [
    "ERROR ledger: dial tcp 10.96.14.7:5432: connect: connection refused (attempt 5/5)",
    "ERROR ledger: could not open connection pool: too many clients already",
    "panic: ledger: no connection available after 5 attempts",
    "",
    "goroutine 1 [running]:",
    "main.mustLedger(...)",
    "\t/src/cmd/payments/main.go:88 +0x1c5",
    "main.main()",
    "\t/src/cmd/payments/main.go:41 +0x2f8",
]


def pod_log(pod: JSON, sim: PodSim | None, now: float, *, previous: bool = False) -> list[str]:
    """The log of the pod's (current or previous) container run as (RFC 3339 time, line)
    pairs joined with a space: startup lines, then for a running pod one request line about
    every two seconds (errors at the app's error share), for a crash loop its fatal error."""
    app = (meta(pod).get("labels") or {}).get("app", "app")
    containers = pod["spec"].get("containers") or [{}]
    image = str(containers[0].get("image", "app:0"))
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    status = statuses[0]
    crash = bool(sim and sim.crash)
    if previous or crash:
        run = (status.get("lastState") or {}).get("terminated") or {}
        start, end = parse_time(run.get("startedAt")), parse_time(run.get("finishedAt"))
        if start is None or end is None:
            return []
        startup = [t for t in _startup_lines(app, image) if "listening on" not in t]
        lines = [(start + i * 0.05, text) for i, text in enumerate(startup)]
        if app == "payments":
            lines += [(end - 0.5 + i * 0.01, text) for i, text in enumerate(_CRASH_LINES)]
        else:
            lines.append((end - 1, f"WARN  memory: heap in use near the container limit ({app})"))
    else:
        started = parse_time(((status.get("state") or {}).get("running") or {}).get("startedAt"))
        if started is None:
            return []
        lines = [(started + i * 0.05, text) for i, text in enumerate(_startup_lines(app, image))]
        normal, errors, share = _LINES.get(app, _LINES["cart"])
        first = max(started + 1, now - 3600)
        step = 2.0
        k0 = int((first - started) // step)
        for k in range(k0, int((now - started) // step) + 1):
            at = started + k * step + 0.37
            if at <= started + 0.5 or at > now:
                continue
            rng = random.Random(f"{meta(pod).get('name')}/{k}")
            pool = errors if errors and rng.random() < share else normal
            text = rng.choice(pool).format(
                ms=rng.randint(8, 900), id=secrets_free_id(rng), n=rng.randint(1, 9)
            )
            lines.append((at, text))
    return [f"{iso_nano(at)} {text}" for at, text in lines]


def iso_nano(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def secrets_free_id(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(8))


# -- server-side printing (kubectl get) ---------------------------------------------------------


def _age(obj: JSON, now: float) -> str:
    created = parse_time(meta(obj).get("creationTimestamp"))
    return human_duration(now - created) if created else "<unknown>"


def _containers(template: JSON) -> tuple[str, str]:
    cs = (template.get("spec") or {}).get("containers") or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def pod_status_text(pod: JSON) -> tuple[str, int, int, int, float | None]:
    """(STATUS as kubectl prints it, ready, total, restarts, last restart time)."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase", "Unknown")
    statuses = status.get("containerStatuses") or []
    restarts, last = 0, None
    for cs in statuses:
        restarts += int(cs.get("restartCount", 0))
        finished = parse_time(
            ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        )
        if finished and (last is None or finished > last):
            last = finished
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif (state.get("terminated") or {}).get("reason"):
            reason = state["terminated"]["reason"]
    if meta(pod).get("deletionTimestamp"):
        reason = "Terminating"
    ready = sum(1 for cs in statuses if cs.get("ready"))
    total = len((pod.get("spec") or {}).get("containers") or [])
    return reason, ready, total, restarts, last


def table_columns(res: Resource) -> list[tuple[str, str, int, str]]:
    """(name, type, priority, description) per column, as the API server's table printers."""
    name = ("Name", "string", 0, "Name must be unique within a namespace.")
    age = ("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time.")
    columns: dict[str, list[tuple[str, str, int, str]]] = {
        "deployments": [
            name,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            (
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            (
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age,
            ("Containers", "string", 1, "Names of each container in the template."),
            ("Images", "string", 1, "Images referenced by each container in the template."),
            ("Selector", "string", 1, "Label selector for pods."),
        ],
        "statefulsets": [  # kubectl get sts: NAME READY AGE (-o wide: CONTAINERS IMAGES)
            name,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            age,
            ("Containers", "string", 1, "Names of each container in the template."),
            ("Images", "string", 1, "Images referenced by each container in the template."),
        ],
        "controllerrevisions": [
            name,
            ("Controller", "string", 0, "Controller of the object"),
            ("Revision", "integer", 0, "Revision of the ControllerRevision"),
            age,
        ],
        "replicasets": [
            name,
            ("Desired", "integer", 0, "Number of desired replicas."),
            ("Current", "integer", 0, "Number of actual replicas."),
            ("Ready", "integer", 0, "The number of ready replicas for this replica set."),
            age,
            ("Containers", "string", 1, "Names of each container in the template."),
            ("Images", "string", 1, "Images referenced by each container in the template."),
            ("Selector", "string", 1, "Label selector for pods."),
        ],
        "pods": [
            name,
            (
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            ("Status", "string", 0, "The aggregate status of the containers in this pod."),
            (
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age,
            ("IP", "string", 1, "IP address allocated to the pod."),
            ("Node", "string", 1, "Name of the Node this pod is assigned to."),
            ("Nominated Node", "string", 1, "Name of the node nominated for the pod."),
            ("Readiness Gates", "string", 1, "Readiness gates of the pod."),
        ],
        "services": [
            name,
            ("Type", "string", 0, "The type of the service."),
            ("Cluster-IP", "string", 0, "The cluster IP of the service."),
            ("External-IP", "string", 0, "External IPs of the service."),
            ("Port(s)", "string", 0, "The ports of the service."),
            age,
            ("Selector", "string", 1, "The selector of the service."),
        ],
        "namespaces": [name, ("Status", "string", 0, "The status of the namespace"), age],
        "nodes": [
            name,
            ("Status", "string", 0, "The status of the node"),
            ("Roles", "string", 0, "The roles of the node"),
            age,
            ("Version", "string", 0, "Kubelet Version reported by the node."),
            ("Internal-IP", "string", 1, "Internal IP of the node."),
            ("External-IP", "string", 1, "External IP of the node."),
            ("OS-Image", "string", 1, "OS Image reported by the node."),
            ("Kernel-Version", "string", 1, "Kernel Version reported by the node."),
            ("Container-Runtime", "string", 1, "Container Runtime Version reported by the node."),
        ],
        "events": [
            ("Last Seen", "string", 0, "Time since the most recent occurrence of this event."),
            ("Type", "string", 0, "Type of this event."),
            ("Reason", "string", 0, "Reason why this event was generated."),
            ("Object", "string", 0, "The object that this event is about."),
            ("Subobject", "string", 1, "The subobject this event is about."),
            ("Source", "string", 1, "The component reporting this event."),
            (
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
            ),
            ("First Seen", "string", 1, "Time since the first occurrence of this event."),
            ("Count", "string", 1, "The number of times this event has occurred."),
            ("Name", "string", 1, "The name of this event."),
        ],
    }
    return columns.get(res.plural, [name, age])


def table_cells(res: Resource, obj: JSON, now: float) -> list[Any]:
    m, spec, status = meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    if res.plural == "deployments":
        names, imgs = _containers(spec.get("template") or {})
        return [
            m["name"],
            f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            status.get("updatedReplicas", 0),
            status.get("availableReplicas", 0),
            _age(obj, now),
            names,
            imgs,
            selector_from_labels((spec.get("selector") or {}).get("matchLabels") or {}),
        ]
    if res.plural == "statefulsets":
        names, imgs = _containers(spec.get("template") or {})
        return [
            m["name"],
            f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            _age(obj, now),
            names,
            imgs,
        ]
    if res.plural == "controllerrevisions":
        owner: JSON = next((o for o in m.get("ownerReferences") or [] if o.get("controller")), {})
        controller = (
            f"{str(owner.get('kind', '')).lower()}.{owner.get('apiVersion', '').split('/')[0]}/{owner.get('name')}"
            if owner
            else "<none>"
        )
        return [m["name"], controller, obj.get("revision", 0), _age(obj, now)]
    if res.plural == "replicasets":
        names, imgs = _containers(spec.get("template") or {})
        return [
            m["name"],
            spec.get("replicas", 1),
            status.get("replicas", 0),
            status.get("readyReplicas", 0),
            _age(obj, now),
            names,
            imgs,
            selector_from_labels((spec.get("selector") or {}).get("matchLabels") or {}),
        ]
    if res.plural == "pods":
        reason, ready, total, restarts, last = pod_status_text(obj)
        shown = (
            f"{restarts} ({human_duration(now - last)} ago)" if restarts and last else str(restarts)
        )
        return [
            m["name"],
            f"{ready}/{total}",
            reason,
            shown,
            _age(obj, now),
            status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>",
            "<none>",
            "<none>",
        ]
    if res.plural == "services":
        ports = ",".join(
            f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []
        )
        return [
            m["name"],
            spec.get("type", "ClusterIP"),
            spec.get("clusterIP", "<none>"),
            "<none>",
            ports or "<none>",
            _age(obj, now),
            selector_from_labels(spec.get("selector") or {}) or "<none>",
        ]
    if res.plural == "namespaces":
        return [m["name"], status.get("phase", "Active"), _age(obj, now)]
    if res.plural == "nodes":
        info = status.get("nodeInfo") or {}
        ready_condition: JSON = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        state = "Ready" if ready_condition.get("status") == "True" else "NotReady"
        if spec.get("unschedulable"):
            state += ",SchedulingDisabled"
        roles = [
            k.split("/", 1)[1]
            for k in m.get("labels") or {}
            if k.startswith("node-role.kubernetes.io/")
        ]
        addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
        return [
            m["name"],
            state,
            ",".join(roles) or "<none>",
            _age(obj, now),
            info.get("kubeletVersion", ""),
            addresses.get("InternalIP", "<none>"),
            "<none>",
            info.get("osImage", ""),
            info.get("kernelVersion", ""),
            info.get("containerRuntimeVersion", ""),
        ]
    if res.plural == "events":
        inv = obj.get("involvedObject") or {}
        seen = parse_time(obj.get("lastTimestamp")) or now
        first = parse_time(obj.get("firstTimestamp")) or seen
        return [
            human_duration(now - seen),
            obj.get("type", ""),
            obj.get("reason", ""),
            f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
            inv.get("fieldPath", ""),
            ", ".join(
                v
                for v in (
                    (obj.get("source") or {}).get("component"),
                    (obj.get("source") or {}).get("host"),
                )
                if v
            ),
            obj.get("message", ""),
            human_duration(now - first),
            str(obj.get("count", 1)),
            m.get("name", ""),
        ]
    return [m["name"], _age(obj, now)]


def wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


# -- the cluster ---------------------------------------------------------------------------------


@dataclass
class Recorded:
    """One request the emulator answered (kept for the curious: ``cluster.requests``)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    impersonate_user: str | None
    status: int = 0


@dataclass(eq=False)
class _Watch:
    res: Resource
    namespace: str | None
    queue: asyncio.Queue[tuple[int, str, JSON] | None] = field(default_factory=asyncio.Queue)


class DemoCluster:
    """The API server, its store and the controllers, in this event loop.

    ``await cluster.start()`` serves on ``127.0.0.1`` (a free port unless ``port`` is given)
    and starts the controller; ``cluster.write_kubeconfig(path)`` writes a kubeconfig for
    ``kubectl`` and opsbot; ``await cluster.stop()`` stops both.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timings: Timings | None = None,
        token: str | None = None,
        seed: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.timings = timings or Timings()
        self.token = token or secrets.token_urlsafe(24)
        self.store: dict[tuple[str, str], dict[tuple[str, str], JSON]] = {
            key: {} for key in RESOURCES
        }
        self.sims: dict[tuple[str, str], PodSim] = {}
        self.requests: deque[Recorded] = deque(maxlen=1000)
        self._rv = 1000
        self._history: deque[tuple[int, str, tuple[str, str], JSON]] = deque(maxlen=2000)
        self._watches: set[_Watch] = set()
        self._kick = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._ips = itertools.count(10)
        self._rng = random.Random(42)
        if seed:
            self.seed()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> DemoCluster:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        self._task = asyncio.create_task(self._control_loop(), name="demo-cluster-controller")
        return self

    async def stop(self) -> None:
        self._stopping.set()
        for watch in list(self._watches):
            watch.queue.put_nowait(None)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DemoCluster:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def kubeconfig(self, namespace: str = "shop") -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "opsbot-demo", "cluster": {"server": self.url}}],
                "users": [{"name": "opsbot-demo", "user": {"token": self.token}}],
                "contexts": [
                    {
                        "name": "opsbot-demo",
                        "context": {
                            "cluster": "opsbot-demo",
                            "user": "opsbot-demo",
                            "namespace": namespace,
                        },
                    }
                ],
                "current-context": "opsbot-demo",
                "preferences": {},
            },
            sort_keys=False,
        )

    def write_kubeconfig(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.kubeconfig())
        path.chmod(0o600)
        return path

    # -- store --------------------------------------------------------------------------------

    def now(self) -> float:
        return time.time()

    def get(self, res: Resource, namespace: str | None, name: str) -> JSON | None:
        return self.store[res.group, res.plural].get((namespace or "", name))

    def items(self, res: Resource, namespace: str | None = None) -> list[JSON]:
        objects = self.store[res.group, res.plural]
        return [objects[key] for key in sorted(objects) if namespace is None or key[0] == namespace]

    def save(self, res: Resource, obj: JSON) -> JSON:
        """Store ``obj`` (a new resourceVersion; watchers told) when it differs from the stored one."""
        m = meta(obj)
        key = (m.get("namespace", "") if res.namespaced else "", m["name"])
        objects = self.store[res.group, res.plural]
        before = objects.get(key)
        if before is not None:
            stripped = {**before, "metadata": {**before["metadata"], "resourceVersion": None}}
            candidate = {**obj, "metadata": {**m, "resourceVersion": None}}
            if stripped == candidate:
                return before
        self._rv += 1
        m["resourceVersion"] = str(self._rv)
        objects[key] = obj
        self._notify("MODIFIED" if before is not None else "ADDED", res, obj)
        return obj

    def delete(self, res: Resource, namespace: str | None, name: str) -> JSON | None:
        obj = self.store[res.group, res.plural].pop((namespace or "", name), None)
        if obj is not None:
            self._rv += 1
            obj = copy.deepcopy(obj)
            meta(obj)["resourceVersion"] = str(self._rv)
            self._notify("DELETED", res, obj)
            if res is PODS:
                self.sims.pop((namespace or "", name), None)
        return obj

    def _notify(self, kind: str, res: Resource, obj: JSON) -> None:
        snapshot = copy.deepcopy(obj)
        self._history.append((self._rv, kind, (res.group, res.plural), snapshot))
        for watch in self._watches:
            if watch.res is res and watch.namespace in (None, meta(obj).get("namespace")):
                watch.queue.put_nowait((self._rv, kind, snapshot))

    def _uid(self, *parts: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "opsbot-demo/" + "/".join(parts)))

    # -- seeding ------------------------------------------------------------------------------

    def seed(self) -> None:
        """The shop: namespaces, nodes, services, deployments with their revisions' ReplicaSets,
        the current revision's pods (one payments pod crash-looping) and recent events."""
        now = self.now()
        for name, days in (("default", 90), ("kube-system", 90), ("shop", 60), ("staging", 45)):
            self.save(
                NAMESPACES,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": name,
                        "uid": self._uid("ns", name),
                        "creationTimestamp": rfc3339(now - days * 86400),
                        "labels": {"kubernetes.io/metadata.name": name},
                    },
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )
        for i, name in enumerate(NODE_NAMES, start=1):
            self.save(NODES, self._node(name, i, now))
        self.save(
            SERVICES,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "uid": self._uid("svc", "default", "kubernetes"),
                    "creationTimestamp": rfc3339(now - 90 * 86400),
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": "10.96.0.1",
                    "clusterIPs": ["10.96.0.1"],
                    "ports": [
                        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}
                    ],
                },
                "status": {"loadBalancer": {}},
            },
        )
        for index, app in enumerate(SHOP):
            self._seed_app(app, index, now)
        for app in STATEFUL:
            self._seed_statefulset(app, now)
        self._seed_events(now)

    def _node(self, name: str, index: int, now: float) -> JSON:
        ready_since = rfc3339(now - 30 * 86400)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": self._uid("node", name),
                "creationTimestamp": rfc3339(now - 90 * 86400),
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node-role.kubernetes.io/worker": "",
                    "topology.kubernetes.io/zone": f"eu-west-1{'abc'[index - 1]}",
                },
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"podCIDR": f"10.244.{index}.0/24", "providerID": f"demo://{name}"},
            "status": {
                "capacity": {
                    "cpu": "4",
                    "memory": "16375436Ki",
                    "pods": "110",
                    "ephemeral-storage": "102626232Ki",
                },
                "allocatable": {
                    "cpu": "3800m",
                    "memory": "15224460Ki",
                    "pods": "110",
                    "ephemeral-storage": "94580335255",
                },
                "conditions": [
                    {
                        "type": t,
                        "status": "False",
                        "reason": reason,
                        "message": message,
                        "lastHeartbeatTime": rfc3339(now),
                        "lastTransitionTime": ready_since,
                    }
                    for t, reason, message in (
                        (
                            "MemoryPressure",
                            "KubeletHasSufficientMemory",
                            "kubelet has sufficient memory available",
                        ),
                        (
                            "DiskPressure",
                            "KubeletHasNoDiskPressure",
                            "kubelet has no disk pressure",
                        ),
                        (
                            "PIDPressure",
                            "KubeletHasSufficientPID",
                            "kubelet has sufficient PID available",
                        ),
                    )
                ]
                + [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": rfc3339(now),
                        "lastTransitionTime": ready_since,
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": f"172.18.0.{index + 1}"},
                    {"type": "Hostname", "address": name},
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.32.4",
                    "kubeProxyVersion": "v1.32.4",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "kernelVersion": "6.1.0-31-cloud-amd64",
                    "containerRuntimeVersion": "containerd://1.7.24",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "machineID": hashlib.md5(name.encode()).hexdigest(),
                    "systemUUID": self._uid("node-system", name),
                    "bootID": self._uid("node-boot", name),
                },
            },
        }

    def _template(self, app: App, version: str) -> JSON:
        return self._default_template(
            {
                "metadata": {"labels": {"app": app.name, "tier": app.tier}},
                "spec": {
                    "containers": [
                        {
                            "name": app.name,
                            "image": app.image_for(version),
                            "ports": [{"name": "http", "containerPort": app.port}],
                            "env": [
                                {"name": "LOG_LEVEL", "value": "info"},
                                {"name": "OTEL_SERVICE_NAME", "value": app.name},
                            ],
                            "resources": {
                                "requests": {"cpu": app.cpu, "memory": app.memory},
                                "limits": {"memory": app.memory},
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 5,
                            },
                        }
                    ]
                },
            }
        )

    @staticmethod
    def _default_template(template: JSON) -> JSON:
        """The API server's defaulting of a pod template (the fields kubectl shows back)."""
        template = prune(copy.deepcopy(template))
        spec = template.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        for container in spec.get("containers") or []:
            if not isinstance(container, dict):
                continue
            image = str(container.get("image", ""))
            latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if isinstance(container.get(probe), dict):
                    defaults = {"timeoutSeconds": 1, "periodSeconds": 10}
                    defaults |= {"successThreshold": 1, "failureThreshold": 3}
                    container[probe] = {**defaults, **container[probe]}
                    if isinstance(container[probe].get("httpGet"), dict):
                        container[probe]["httpGet"].setdefault("scheme", "HTTP")
        return template

    def _seed_app(self, app: App, index: int, now: float) -> None:
        ns, name = app.namespace, app.name
        current_rev, current_version, current_cause, current_age = app.revisions[-1]
        dep_uid = self._uid("deploy", ns, name)
        created = now - max(h for *_, h in app.revisions) * 3600 - 3600
        dep_annotations = {REVISION: str(current_rev)}
        if current_cause:
            dep_annotations[CHANGE_CAUSE] = current_cause
        generation = len(app.revisions) + 2
        dep: JSON = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": dep_uid,
                "generation": generation,
                "creationTimestamp": rfc3339(created),
                "labels": {"app": name, "tier": app.tier},
                "annotations": dep_annotations,
            },
            "spec": {
                "replicas": app.replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": self._template(app, current_version),
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                },
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
            },
            "status": {"observedGeneration": generation},
        }
        self.save(DEPLOYMENTS, dep)
        rs_current: JSON = {}
        for rev, version, cause, hours in app.revisions:
            rs = self._replicaset(dep, self._template(app, version), rev, now - hours * 3600)
            if cause:
                annotations_of(rs)[CHANGE_CAUSE] = cause
            if rev == current_rev:
                rs["spec"]["replicas"] = app.replicas
                rs_current = rs
            self.save(REPLICASETS, rs)
        self.save(
            SERVICES,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": self._uid("svc", ns, name),
                    "creationTimestamp": rfc3339(created),
                    "labels": {"app": name},
                },
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": f"10.96.{index + 10}.{17 + index * 3}",
                    "clusterIPs": [f"10.96.{index + 10}.{17 + index * 3}"],
                    "selector": {"app": name},
                    "ports": [
                        {
                            "name": "http" if app.port != 53 else "dns",
                            "port": 80 if app.port != 53 else 53,
                            "protocol": "TCP" if app.port != 53 else "UDP",
                            "targetPort": app.port,
                        }
                    ],
                    "sessionAffinity": "None",
                },
                "status": {"loadBalancer": {}},
            },
        )
        started = now - current_age * 3600
        rng = random.Random(f"{ns}/{name}")
        for i in range(app.replicas):
            crash = i < app.crashing
            pod = self._pod(
                rs_current, NODE_NAMES[(index + i) % len(NODE_NAMES)], rng, started + i * 20
            )
            sim = PodSim(ready_at=started + i * 20 + 8, crash=crash)
            restarts = 0
            if crash:
                restarts = 23
                sim.next_crash = now + self.timings.crash_every
            elif name == "checkout" and ns == "shop" and i == 1:
                restarts = 2  # OOM-killed twice under load, running again since
                killed = now - 41 * 60
                pod["status"]["containerStatuses"] = [
                    {
                        "name": name,
                        "state": {"running": {"startedAt": rfc3339(killed + 9)}},
                        "lastState": {
                            "terminated": {
                                "exitCode": 137,
                                "reason": "OOMKilled",
                                "startedAt": rfc3339(killed - 25 * 60),
                                "finishedAt": rfc3339(killed),
                            }
                        },
                    }
                ]
            self.sims[ns, meta(pod)["name"]] = sim
            self._pod_status(pod, sim, now, restarts=restarts)
            self.save(PODS, pod)
        self._sync_replicaset(rs_current, now)
        self._deployment_status(dep, now, progressed=False)

    def _seed_statefulset(self, app: App, now: float) -> None:
        """A statefulset with a ControllerRevision per version of ``app.revisions`` and its
        pods at the last one, as the controller leaves them (OrderedReady, RollingUpdate with
        partition 0: the API server's defaults)."""
        ns, name = app.namespace, app.name
        created = now - max(h for *_, h in app.revisions) * 3600 - 3600
        generation = len(app.revisions)
        sts: JSON = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": self._uid("sts", ns, name),
                "generation": generation,
                "creationTimestamp": rfc3339(created),
                "labels": {"app": name, "tier": app.tier},
            },
            "spec": {
                "replicas": app.replicas,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": self._template(app, app.revisions[-1][1]),
                "podManagementPolicy": "OrderedReady",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "revisionHistoryLimit": 10,
                "persistentVolumeClaimRetentionPolicy": {
                    "whenDeleted": "Retain",
                    "whenScaled": "Retain",
                },
            },
            "status": {"observedGeneration": generation},
        }
        self.save(STATEFULSETS, sts)
        current: JSON = {}
        for number, version, cause, hours in app.revisions:
            rev = self._controller_revision(
                sts, self._template(app, version), number, now - hours * 3600
            )
            if cause:
                meta(rev)["annotations"] = {CHANGE_CAUSE: cause}
            current = self.save(CONTROLLERREVISIONS, rev)
        started = now - app.revisions[-1][3] * 3600
        for ordinal in range(app.replicas):
            pod = self._stateful_pod(sts, current, ordinal, started + ordinal * 30)
            sim = PodSim(ready_at=started + ordinal * 30 + 5)
            self.sims[ns, meta(pod)["name"]] = sim
            self._pod_status(pod, sim, now)
            self.save(PODS, pod)
        status = sts["status"]
        status["currentRevision"] = status["updateRevision"] = meta(current)["name"]
        self._statefulset_status(sts)

    def _controller_revision(
        self, owner: JSON, template: JSON, number: int, created: float
    ) -> JSON:
        """A ControllerRevision of a statefulset: ``data`` is the template as the strategic
        merge patch ``{"spec": {"template": {..., "$patch": "replace"}}}`` (the controller's
        ``getPatch``), named ``<owner>-<hash>`` and labelled with the owner's selector and the
        hash."""
        om = meta(owner)
        template = copy.deepcopy(template)
        digest = safe_hash(template)
        return {
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": f"{om['name']}-{digest}",
                "namespace": om["namespace"],
                "uid": self._uid("cr", om["namespace"], om["name"], digest),
                "creationTimestamp": rfc3339(created),
                "labels": {**owner["spec"]["selector"]["matchLabels"], REVISION_HASH: digest},
                "ownerReferences": [owner_ref(owner, STATEFULSETS)],
            },
            "data": {"spec": {"template": {**template, "$patch": "replace"}}},
            "revision": number,
        }

    def _stateful_pod(self, sts: JSON, rev: JSON, ordinal: int, created: float) -> JSON:
        """Pod ``<name>-<ordinal>`` of a statefulset at revision ``rev`` (its template, its
        hash label), on a node by ordinal."""
        sm = meta(sts)
        name = f"{sm['name']}-{ordinal}"
        template = copy.deepcopy(rev["data"]["spec"]["template"])
        template.pop("$patch", None)
        carrier = {"metadata": {**sm, "name": name}, "spec": {"template": template}}
        pod = self._pod(carrier, NODE_NAMES[ordinal % len(NODE_NAMES)], self._rng, created)
        pm = meta(pod)
        pm["name"] = name
        pm.pop("generateName", None)
        pm["uid"] = self._uid("pod", sm["namespace"], name, str(created))
        pm["labels"] = {
            **pm.get("labels", {}),
            REVISION_HASH: meta(rev)["name"],
            POD_NAME_LABEL: name,
            POD_INDEX_LABEL: str(ordinal),
        }
        pm["ownerReferences"] = [owner_ref(sts, STATEFULSETS)]
        pod["spec"]["hostname"] = name
        pod["spec"]["subdomain"] = sts["spec"].get("serviceName", sm["name"])
        return pod

    def _sync_statefulset(self, sts: JSON, now: float) -> None:
        """The statefulset controller: the live template's ControllerRevision (new, or an
        older one renumbered highest: ``rollout undo``), pods created in ordinal order each
        once the ones before are ready, removed from the highest ordinal down, and replaced
        from the highest ordinal down when at another revision (RollingUpdate, ordinals at
        or above ``partition``); one pod at a time, and only while all others are ready."""
        sm, spec = meta(sts), sts["spec"]
        if sm.get("deletionTimestamp"):
            return
        owned = self._owned(CONTROLLERREVISIONS, sts)
        template = spec["template"]
        highest = max((int(r.get("revision", 0)) for r in owned), default=0)
        update = next(
            (
                r
                for r in owned
                if {k: v for k, v in r["data"]["spec"]["template"].items() if k != "$patch"}
                == template
            ),
            None,
        )
        if update is None:
            update = self.save(
                CONTROLLERREVISIONS, self._controller_revision(sts, template, highest + 1, now)
            )
        elif int(update.get("revision", 0)) < highest:
            update = copy.deepcopy(update)
            update["revision"] = highest + 1
            update = self.save(CONTROLLERREVISIONS, update)
        status = sts.setdefault("status", {})
        status["updateRevision"] = meta(update)["name"]
        status.setdefault("currentRevision", meta(update)["name"])
        want = int(spec.get("replicas", 1))
        strategy = spec.get("updateStrategy") or {}
        partition = int(((strategy.get("rollingUpdate") or {}).get("partition")) or 0)
        pods = {int(meta(p)["labels"].get(POD_INDEX_LABEL, -1)): p for p in self._owned(PODS, sts)}
        terminating = any(meta(p).get("deletionTimestamp") for p in pods.values())
        healthy = not terminating and all(self._is_ready(p) for p in pods.values())
        missing = [o for o in range(want) if o not in pods]
        if missing and all(self._is_ready(pods[o]) for o in pods if o < missing[0]):
            ordinal = missing[0]
            pod = self._stateful_pod(sts, update, ordinal, now)
            sim = PodSim(ready_at=now + self.timings.pod_start)
            self.sims[sm["namespace"], meta(pod)["name"]] = sim
            self._pod_status(pod, sim, now)
            pod = self.save(PODS, pod)
            self.event(
                sts,
                "Normal",
                "SuccessfulCreate",
                f"create Pod {meta(pod)['name']} in StatefulSet {sm['name']} successful",
                "statefulset-controller",
            )
        elif healthy and (extra := sorted(o for o in pods if o >= want)):
            self._stateful_delete(sts, pods[extra[-1]], now)
        elif healthy and strategy.get("type", "RollingUpdate") == "RollingUpdate":
            stale = sorted(
                o
                for o, p in pods.items()
                if o >= partition and meta(p)["labels"].get(REVISION_HASH) != meta(update)["name"]
            )
            if stale:
                self._stateful_delete(sts, pods[stale[-1]], now)
        self._statefulset_status(sts)

    def _stateful_delete(self, sts: JSON, pod: JSON, now: float) -> None:
        self._terminate(pod, now)
        self.event(
            sts,
            "Normal",
            "SuccessfulDelete",
            f"delete Pod {meta(pod)['name']} in StatefulSet {meta(sts)['name']} successful",
            "statefulset-controller",
        )

    def _statefulset_status(self, sts: JSON) -> None:
        """``status`` as the statefulset controller reports it; ``currentRevision`` becomes
        ``updateRevision`` once every replica is updated and ready."""
        want = int(sts["spec"].get("replicas", 1))
        status = sts.setdefault("status", {})
        pods = [p for p in self._owned(PODS, sts) if not meta(p).get("deletionTimestamp")]
        update, current = status.get("updateRevision"), status.get("currentRevision")
        ready = sum(1 for p in pods if self._is_ready(p))
        updated = sum(1 for p in pods if meta(p)["labels"].get(REVISION_HASH) == update)
        if updated == want == ready and len(pods) == want:
            current = update
        status.update(
            {
                "observedGeneration": int(meta(sts).get("generation", 1)),
                "replicas": len(pods),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "currentReplicas": sum(
                    1 for p in pods if meta(p)["labels"].get(REVISION_HASH) == current
                ),
                "updatedReplicas": updated,
                "currentRevision": current,
                "updateRevision": update,
                "collisionCount": 0,
            }
        )
        self.save(STATEFULSETS, sts)

    def _replicaset(self, dep: JSON, template: JSON, revision: int, created: float) -> JSON:
        template = copy.deepcopy(template)
        pod_hash = safe_hash(without_hash(template))
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels[HASH_LABEL] = pod_hash
        dm = meta(dep)
        copied = {k: v for k, v in (dm.get("annotations") or {}).items() if k not in _NOT_COPIED}
        copied.pop(CHANGE_CAUSE, None)
        replicas = int(dep["spec"].get("replicas", 1))
        surge = resolve_percent(
            ((dep["spec"].get("strategy") or {}).get("rollingUpdate") or {}).get("maxSurge", "25%"),
            replicas,
            True,
        )
        return {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{dm['name']}-{pod_hash}",
                "namespace": dm["namespace"],
                "uid": self._uid("rs", dm["namespace"], dm["name"], pod_hash, str(created)),
                "generation": 1,
                "creationTimestamp": rfc3339(created),
                "labels": dict(labels),
                "annotations": {
                    **copied,
                    DESIRED_REPLICAS: str(replicas),
                    MAX_REPLICAS: str(replicas + surge),
                    REVISION: str(revision),
                },
                "ownerReferences": [owner_ref(dep, DEPLOYMENTS)],
            },
            "spec": {
                "replicas": 0,
                "selector": {
                    "matchLabels": {**dep["spec"]["selector"]["matchLabels"], HASH_LABEL: pod_hash}
                },
                "template": template,
            },
            "status": {"replicas": 0, "observedGeneration": 1},
        }

    def _pod(self, rs: JSON, node: str, rng: random.Random, created: float) -> JSON:
        rm = meta(rs)
        while True:
            name = f"{rm['name']}-{''.join(rng.choice(SAFE_ALPHABET) for _ in range(5))}"
            if self.get(PODS, rm["namespace"], name) is None:
                break
        template = copy.deepcopy(rs["spec"]["template"])
        tm = template.get("metadata") or {}
        pod: JSON = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "generateName": f"{rm['name']}-",
                "namespace": rm["namespace"],
                "uid": self._uid("pod", rm["namespace"], name, str(created)),
                "creationTimestamp": rfc3339(created),
                "labels": dict(tm.get("labels") or {}),
                "ownerReferences": [owner_ref(rs, REPLICASETS)],
            },
            "spec": {
                **template.get("spec", {}),
                "nodeName": node,
                "serviceAccountName": "default",
                "enableServiceLinks": True,
                "priority": 0,
                "preemptionPolicy": "PreemptLowerPriority",
                "tolerations": [
                    {
                        "key": f"node.kubernetes.io/{t}",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }
                    for t in ("not-ready", "unreachable")
                ],
            },
            "status": {},
        }
        if tm.get("annotations"):
            meta(pod)["annotations"] = dict(tm["annotations"])
        node_index = NODE_NAMES.index(node) + 1 if node in NODE_NAMES else 1
        pod["status"] = {
            "hostIP": f"172.18.0.{node_index + 1}",
            "podIP": f"10.244.{node_index}.{next(self._ips) % 250 + 2}",
        }
        return pod

    def _pod_status(self, pod: JSON, sim: PodSim, now: float, restarts: int | None = None) -> None:
        """Fill in ``status`` as the kubelet reports it for the pod's simulated state."""
        status = pod["status"]
        created = parse_time(meta(pod).get("creationTimestamp")) or now
        containers = pod["spec"].get("containers") or []
        old = {cs.get("name"): cs for cs in status.get("containerStatuses") or []}
        running = now >= sim.ready_at
        statuses = []
        for c in containers:
            prev = old.get(c.get("name"), {})
            count = restarts if restarts is not None else int(prev.get("restartCount", 0))
            cs: JSON = {
                "name": c.get("name"),
                "image": c.get("image"),
                "imageID": f"{str(c.get('image')).rsplit(':', 1)[0]}@sha256:{hashlib.sha256(str(c.get('image')).encode()).hexdigest()}",
                "restartCount": count,
                "started": running and not sim.crash,
                "ready": running and not sim.crash,
                "state": {},
                "lastState": prev.get("lastState") or {},
            }
            if running:
                cs["containerID"] = (
                    f"containerd://{hashlib.sha256((meta(pod)['uid'] + str(count)).encode()).hexdigest()}"
                )
            if not running:
                cs["state"] = {"waiting": {"reason": "ContainerCreating"}}
            elif sim.crash:
                last = (cs["lastState"] or {}).get("terminated")
                if not last:
                    finished = now - self._rng.uniform(5, 25)
                    cs["lastState"] = {
                        "terminated": {
                            "exitCode": 2,
                            "reason": "Error",
                            "startedAt": rfc3339(finished - 3),
                            "finishedAt": rfc3339(finished),
                            "containerID": f"containerd://{hashlib.sha256((meta(pod)['uid'] + str(count - 1)).encode()).hexdigest()}",
                        }
                    }
                cs["state"] = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off 5m0s restarting failed container={c.get('name')} pod={meta(pod)['name']}_{meta(pod)['namespace']}({meta(pod)['uid']})",
                    }
                }
            else:
                previous = ((prev.get("state") or {}).get("running") or {}).get("startedAt")
                cs["state"] = {"running": {"startedAt": previous or rfc3339(sim.ready_at - 1)}}
            statuses.append(cs)
        ready = running and not sim.crash
        ready_text = "True" if ready else "False"
        conditions: list[JSON] = [
            {"type": "PodReadyToStartContainers", "status": "True" if running else "False"},
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": ready_text},
            {"type": "ContainersReady", "status": ready_text},
            {"type": "PodScheduled", "status": "True"},
        ]
        old_conditions = {c["type"]: c for c in status.get("conditions") or []}
        for cond in conditions:
            before = old_conditions.get(cond["type"])
            cond["lastProbeTime"] = None
            if before and before.get("status") == cond["status"]:
                cond["lastTransitionTime"] = before["lastTransitionTime"]
            elif before:
                cond["lastTransitionTime"] = rfc3339(now)
            elif cond["status"] == "False" or cond["type"] in ("Initialized", "PodScheduled"):
                cond["lastTransitionTime"] = rfc3339(created)
            else:
                cond["lastTransitionTime"] = rfc3339(min(now, max(created, sim.ready_at)))
            if cond["type"] in ("Ready", "ContainersReady") and not ready:
                cond["reason"] = "ContainersNotReady"
                cond["message"] = (
                    f"containers with unready status: [{' '.join(str(c.get('name')) for c in containers)}]"
                )
        status.update(
            {
                "phase": "Running" if running else "Pending",
                "conditions": conditions,
                "startTime": rfc3339(created),
                "containerStatuses": statuses,
                "qosClass": "Burstable",
                "podIPs": [{"ip": status.get("podIP")}],
            }
        )

    def _seed_events(self, now: float) -> None:
        crash = next(
            p
            for p in self.items(PODS, "shop")
            if self.sims.get(("shop", meta(p)["name"]), PodSim(0)).crash
        )
        checkout = [
            p for p in self.items(PODS, "shop") if meta(p)["labels"].get("app") == "checkout"
        ]
        cm = meta(crash)
        self.event(
            crash,
            "Normal",
            "Pulled",
            f'Container image "{crash["spec"]["containers"][0]["image"]}" already present on machine',
            "kubelet",
            now - 95 * 60,
            count=23,
            field_path="spec.containers{payments}",
        )
        self.event(
            crash,
            "Warning",
            "BackOff",
            "Back-off restarting failed container payments in pod "
            + f"{cm['name']}_shop({cm['uid']})",
            "kubelet",
            now - 95 * 60,
            count=412,
            field_path="spec.containers{payments}",
            last=now - 20,
        )
        self.event(
            crash,
            "Warning",
            "Unhealthy",
            'Readiness probe failed: Get "http://'
            + f'{crash["status"]["podIP"]}:8080/healthz": dial tcp {crash["status"]["podIP"]}:8080: connect: connection refused',
            "kubelet",
            now - 94 * 60,
            count=96,
            field_path="spec.containers{payments}",
            last=now - 75,
        )
        self.event(
            checkout[1],
            "Warning",
            "Unhealthy",
            "Readiness probe failed: HTTP probe failed with statuscode: 503",
            "kubelet",
            now - 14 * 60,
            count=7,
            field_path="spec.containers{checkout}",
            last=now - 4 * 60,
        )
        for ns, name in (("shop", "checkout"), ("shop", "frontend"), ("staging", "checkout")):
            dep = self.get(DEPLOYMENTS, ns, name)
            assert dep is not None
            rss = sorted(
                (
                    rs
                    for rs in self.items(REPLICASETS, ns)
                    if controller_uid(rs) == meta(dep)["uid"]
                ),
                key=revision_of,
            )
            at = parse_time(meta(rss[-1])["creationTimestamp"]) or now
            if now - at > 6 * 3600:
                continue
            self.event(
                dep,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {meta(rss[-1])['name']} to {dep['spec']['replicas']} from 0",
                "deployment-controller",
                at,
            )
            self.event(
                dep,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled down replica set {meta(rss[-2])['name']} to 0 from {dep['spec']['replicas']}",
                "deployment-controller",
                at + 40,
            )
        staging = self.items(PODS, "staging")
        if staging:
            self.event(
                staging[0],
                "Warning",
                "Unhealthy",
                'Liveness probe failed: Get "http://'
                + f'{staging[0]["status"]["podIP"]}:8080/healthz": context deadline exceeded (Client.Timeout exceeded while awaiting headers)',
                "kubelet",
                now - 50 * 60,
                count=2,
                field_path="spec.containers{" + staging[0]["spec"]["containers"][0]["name"] + "}",
                last=now - 48 * 60,
            )

    def event(
        self,
        obj: JSON,
        type_: str,
        reason: str,
        message: str,
        component: str,
        at: float | None = None,
        *,
        count: int = 1,
        field_path: str = "",
        last: float | None = None,
    ) -> JSON:
        """Record an event about ``obj`` (one with the same object, reason and message is
        counted up instead, as the event recorder aggregates)."""
        at = self.now() if at is None else at
        m = meta(obj)
        ns = m.get("namespace") or "default"
        kind = obj.get("kind") or "Object"
        for existing in self.items(EVENTS, ns):
            inv = existing["involvedObject"]
            if (inv.get("uid"), existing.get("reason"), existing.get("message")) == (
                m.get("uid"),
                reason,
                message,
            ):
                existing = copy.deepcopy(existing)
                existing["count"] = int(existing.get("count", 1)) + count
                existing["lastTimestamp"] = rfc3339(last or at)
                return self.save(EVENTS, existing)
        name = f"{m['name']}.{int(at * 1e9) + self._rng.randint(0, 1 << 20):x}"
        involved: JSON = {
            "kind": kind,
            "namespace": ns,
            "name": m["name"],
            "uid": m.get("uid", ""),
            "apiVersion": obj.get("apiVersion", "v1"),
            "resourceVersion": m.get("resourceVersion", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        node = (obj.get("spec") or {}).get("nodeName") if component == "kubelet" else None
        event: JSON = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": self._uid("event", ns, name),
                "creationTimestamp": rfc3339(at),
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": {"component": component, **({"host": node} if node else {})},
            "firstTimestamp": rfc3339(at),
            "lastTimestamp": rfc3339(last or at),
            "count": count,
            "type": type_,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": node or "",
        }
        saved = self.save(EVENTS, event)
        events = self.items(EVENTS, ns)
        if len(events) > MAX_EVENTS:
            events.sort(key=lambda e: str(e.get("lastTimestamp", "")))
            for old in events[: len(events) - MAX_EVENTS]:
                self.delete(EVENTS, ns, meta(old)["name"])
        return saved

    # -- controllers --------------------------------------------------------------------------

    def kick(self) -> None:
        """Run the controllers now (after a write), not at the next tick."""
        self._kick.set()

    async def _control_loop(self) -> None:
        while True:
            try:
                self.reconcile()
            except Exception as exc:  # a controller bug must not stop the demo cluster
                log.exception("demo cluster: controller error: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.timings.tick)
            self._kick.clear()

    def reconcile(self) -> None:
        """One pass of the kubelet, deployment, replicaset and statefulset controllers."""
        now = self.now()
        self._kubelet(now)
        for dep in self.items(DEPLOYMENTS):
            self._sync_deployment(copy.deepcopy(dep), now)
        for sts in self.items(STATEFULSETS):
            self._sync_statefulset(copy.deepcopy(sts), now)
        for rs in self.items(REPLICASETS):
            if controller_uid(rs) is None or not any(
                meta(d)["uid"] == controller_uid(rs)
                for d in self.items(DEPLOYMENTS, meta(rs)["namespace"])
            ):
                self._sync_replicaset(copy.deepcopy(rs), now)  # orphans keep their pods

    def _kubelet(self, now: float) -> None:
        for pod in self.items(PODS):
            pm = meta(pod)
            key = (pm["namespace"], pm["name"])
            sim = self.sims.setdefault(key, PodSim(ready_at=now + self.timings.pod_start))
            if pm.get("deletionTimestamp"):
                if sim.gone_at is None:
                    sim.gone_at = now + self.timings.pod_stop
                if now >= sim.gone_at:
                    self.delete(PODS, *key)
                continue
            updated = copy.deepcopy(pod)
            was_running = pod["status"].get("phase") == "Running"
            restarts = None
            if sim.crash and now >= sim.ready_at and sim.next_crash and now >= sim.next_crash:
                sim.next_crash = now + self.timings.crash_every
                cs = (updated["status"].get("containerStatuses") or [{}])[0]
                restarts = int(cs.get("restartCount", 0)) + 1
                cs["lastState"] = {
                    "terminated": {
                        "exitCode": 2,
                        "reason": "Error",
                        "startedAt": rfc3339(now - 3),
                        "finishedAt": rfc3339(now),
                        "containerID": f"containerd://{hashlib.sha256((pm['uid'] + str(restarts)).encode()).hexdigest()}",
                    }
                }
                name = updated["spec"]["containers"][0]["name"]
                self.event(
                    updated,
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {name} in pod {pm['name']}_{pm['namespace']}({pm['uid']})",
                    "kubelet",
                    field_path=f"spec.containers{{{name}}}",
                )
            elif sim.crash and not sim.next_crash:
                sim.next_crash = now + self.timings.crash_every
            self._pod_status(updated, sim, now, restarts=restarts)
            if not was_running and updated["status"]["phase"] == "Running":
                for c in updated["spec"].get("containers") or []:
                    path = f"spec.containers{{{c.get('name')}}}"
                    self.event(
                        updated,
                        "Normal",
                        "Pulled",
                        f'Container image "{c.get("image")}" already present on machine',
                        "kubelet",
                        field_path=path,
                    )
                    self.event(
                        updated,
                        "Normal",
                        "Created",
                        f"Created container: {c.get('name')}",
                        "kubelet",
                        field_path=path,
                    )
                    self.event(
                        updated,
                        "Normal",
                        "Started",
                        f"Started container {c.get('name')}",
                        "kubelet",
                        field_path=path,
                    )
            self.save(PODS, updated)

    def _owned(self, res: Resource, owner: JSON) -> list[JSON]:
        uid = meta(owner)["uid"]
        return [o for o in self.items(res, meta(owner)["namespace"]) if controller_uid(o) == uid]

    def _active_pods(self, rs: JSON) -> list[JSON]:
        return [p for p in self._owned(PODS, rs) if not meta(p).get("deletionTimestamp")]

    @staticmethod
    def _is_ready(pod: JSON) -> bool:
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )

    def _sync_deployment(self, dep: JSON, now: float) -> None:
        dm, spec = meta(dep), dep["spec"]
        if dm.get("deletionTimestamp"):
            return
        owned = sorted(self._owned(REPLICASETS, dep), key=revision_of)
        template = spec["template"]
        new = next(
            (rs for rs in owned if without_hash(rs["spec"]["template"]) == without_hash(template)),
            None,
        )
        max_rev = max((revision_of(rs) for rs in owned), default=0)
        progressed = False
        if new is None:
            new = self._replicaset(dep, template, max_rev + 1, now)
            cause = (dm.get("annotations") or {}).get(CHANGE_CAUSE)
            if cause:
                annotations_of(new)[CHANGE_CAUSE] = cause
            new = self.save(REPLICASETS, new)
            owned.append(new)
            progressed = True
        elif revision_of(new) < max_rev:  # an older template is back (rollout undo)
            new = copy.deepcopy(new)
            ann = annotations_of(new)
            history = [h for h in ann.get(REVISION_HISTORY, "").split(",") if h]
            ann[REVISION_HISTORY] = ",".join([*history, ann.get(REVISION, "")])
            ann[REVISION] = str(max_rev + 1)
            for key, value in (dm.get("annotations") or {}).items():
                if key not in _NOT_COPIED:
                    ann[key] = value
            new = self.save(REPLICASETS, new)
            owned = sorted(
                [rs for rs in owned if meta(rs)["uid"] != meta(new)["uid"]] + [new], key=revision_of
            )
            progressed = True
        if annotations_of(dep).get(REVISION) != str(revision_of(new)):
            annotations_of(dep)[REVISION] = str(revision_of(new))
        olds = [rs for rs in owned if meta(rs)["uid"] != meta(new)["uid"]]
        if not spec.get("paused"):
            progressed = self._roll(dep, new, olds, now) or progressed
        limit = int(spec.get("revisionHistoryLimit", 10))
        idle = [
            rs
            for rs in olds
            if int(rs["spec"].get("replicas", 0)) == 0 and not self._owned(PODS, rs)
        ]
        for rs in idle[: max(0, len(idle) - limit)]:
            self.delete(REPLICASETS, meta(rs)["namespace"], meta(rs)["name"])
        for rs in self._owned(REPLICASETS, dep):
            self._sync_replicaset(copy.deepcopy(rs), now)
        self._deployment_status(dep, now, progressed)

    def _scale_rs(self, dep: JSON, rs: JSON, replicas: int) -> JSON:
        before = int(rs["spec"].get("replicas", 0))
        if before == replicas:
            return rs
        rs = copy.deepcopy(rs)
        rs["spec"]["replicas"] = replicas
        meta(rs)["generation"] = int(meta(rs).get("generation", 1)) + 1
        want = int(dep["spec"].get("replicas", 1))
        annotations_of(rs)[DESIRED_REPLICAS] = str(want)
        rs = self.save(REPLICASETS, rs)
        direction = "up" if replicas > before else "down"
        self.event(
            dep,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {direction} replica set {meta(rs)['name']} to {replicas} from {before}",
            "deployment-controller",
        )
        return rs

    def _roll(self, dep: JSON, new: JSON, olds: list[JSON], now: float) -> bool:
        """One step of the Recreate or RollingUpdate strategy; True when it changed something."""
        spec = dep["spec"]
        want = int(spec.get("replicas", 1))
        active_olds = [rs for rs in olds if int(rs["spec"].get("replicas", 0)) > 0]
        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            if active_olds:
                for rs in active_olds:
                    self._scale_rs(dep, rs, 0)
                return True
            if any(self._owned(PODS, rs) for rs in olds):
                return False
            return self._scale_rs(dep, new, want) is not new
        if not active_olds:  # a scaling, or the end of a rollout
            return self._scale_rs(dep, new, want) is not new
        rolling = strategy.get("rollingUpdate") or {}
        surge = resolve_percent(rolling.get("maxSurge", "25%"), want, True)
        unavailable = resolve_percent(rolling.get("maxUnavailable", "25%"), want, False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        new_replicas = int(new["spec"].get("replicas", 0))
        total = new_replicas + sum(int(rs["spec"].get("replicas", 0)) for rs in active_olds)
        if new_replicas < want and total < want + surge:
            self._scale_rs(dep, new, min(want, new_replicas + want + surge - total))
            return True
        if new_replicas > want:
            self._scale_rs(dep, new, want)
            return True
        min_available = want - unavailable
        new_ready = sum(1 for p in self._active_pods(new) if self._is_ready(p))
        budget = total - min_available - (new_replicas - new_ready)
        if budget <= 0:
            return False
        # first the old replicas that are not ready, then ready ones beyond the minimum
        for rs in active_olds:
            replicas = int(rs["spec"].get("replicas", 0))
            unhealthy = replicas - sum(1 for p in self._active_pods(rs) if self._is_ready(p))
            take = min(budget, max(0, unhealthy))
            if take:
                self._scale_rs(dep, rs, replicas - take)
                return True
        ready_total = sum(
            1 for rs in [new, *active_olds] for p in self._active_pods(rs) if self._is_ready(p)
        )
        removable = ready_total - min_available
        for rs in active_olds:
            replicas = int(rs["spec"].get("replicas", 0))
            take = min(removable, replicas)
            if take > 0:
                self._scale_rs(dep, rs, replicas - take)
                return True
        return False

    def _sync_replicaset(self, rs: JSON, now: float) -> None:
        """The replicaset controller: create or delete pods to match ``spec.replicas``."""
        want = int(rs["spec"].get("replicas", 0))
        active = self._active_pods(rs)
        if len(active) < want:
            counts = {n: 0 for n in NODE_NAMES}
            for pod in self.items(PODS):
                node = pod["spec"].get("nodeName")
                if node in counts and not meta(pod).get("deletionTimestamp"):
                    counts[node] += 1
            for _ in range(want - len(active)):
                node = min(NODE_NAMES, key=lambda n: (counts[n], n))
                counts[node] += 1
                pod = self._pod(rs, node, self._rng, now)
                sim = PodSim(ready_at=now + self.timings.pod_start)
                self.sims[meta(pod)["namespace"], meta(pod)["name"]] = sim
                self._pod_status(pod, sim, now)
                pod = self.save(PODS, pod)
                self.event(
                    rs,
                    "Normal",
                    "SuccessfulCreate",
                    f"Created pod: {meta(pod)['name']}",
                    "replicaset-controller",
                )
                self.event(
                    pod,
                    "Normal",
                    "Scheduled",
                    f"Successfully assigned {meta(pod)['namespace']}/{meta(pod)['name']} to {node}",
                    "default-scheduler",
                )
        elif len(active) > want:
            # not ready before ready, more restarts first, newest first (the controller's ranking)
            def rank(pod: JSON) -> tuple[int, int, float]:
                _, _, _, restarts, _ = pod_status_text(pod)
                created = parse_time(meta(pod).get("creationTimestamp")) or 0.0
                return (1 if self._is_ready(pod) else 0, -restarts, -created)

            for pod in sorted(active, key=rank)[: len(active) - want]:
                self._terminate(pod, now)
                self.event(
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    f"Deleted pod: {meta(pod)['name']}",
                    "replicaset-controller",
                )
        active = self._active_pods(rs)
        ready = sum(1 for p in active if self._is_ready(p))
        updated = copy.deepcopy(rs)
        updated["status"] = {
            "replicas": len(active),
            "fullyLabeledReplicas": len(active),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": int(meta(rs).get("generation", 1)),
        }
        updated["status"] = {
            k: v
            for k, v in updated["status"].items()
            if v or k in ("replicas", "observedGeneration")
        }
        self.save(REPLICASETS, updated)

    def _terminate(self, pod: JSON, now: float) -> None:
        pod = copy.deepcopy(pod)
        pm = meta(pod)
        if pm.get("deletionTimestamp"):
            return
        grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        pm["deletionTimestamp"] = rfc3339(now + grace)
        pm["deletionGracePeriodSeconds"] = grace
        self.sims.setdefault((pm["namespace"], pm["name"]), PodSim(ready_at=now)).gone_at = (
            now + self.timings.pod_stop
        )
        for c in pod["spec"].get("containers") or []:
            self.event(
                pod,
                "Normal",
                "Killing",
                f"Stopping container {c.get('name')}",
                "kubelet",
                field_path=f"spec.containers{{{c.get('name')}}}",
            )
        self.save(PODS, pod)

    def _deployment_status(self, dep: JSON, now: float, progressed: bool) -> None:
        spec, dm = dep["spec"], meta(dep)
        want = int(spec.get("replicas", 1))
        owned = self._owned(REPLICASETS, dep)
        new = next(
            (
                rs
                for rs in owned
                if without_hash(rs["spec"]["template"]) == without_hash(spec["template"])
            ),
            None,
        )
        active = [p for rs in owned for p in self._active_pods(rs)]
        updated = len(self._active_pods(new)) if new else 0
        ready = sum(1 for p in active if self._is_ready(p))
        new_ready = sum(1 for p in self._active_pods(new) if self._is_ready(p)) if new else 0
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        unavailable = resolve_percent(rolling.get("maxUnavailable", "25%"), want, False)
        total_spec = sum(int(rs["spec"].get("replicas", 0)) for rs in owned)
        before = dep.get("status") or {}
        status: JSON = {
            "observedGeneration": int(dm.get("generation", 1)),
            "replicas": len(active),
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, total_spec - ready),
        }
        status = {k: v for k, v in status.items() if v or k == "observedGeneration"}
        conditions = {c["type"]: c for c in copy.deepcopy(before.get("conditions") or [])}
        stamp = rfc3339(now)

        def set_condition(type_: str, value: str, reason: str, message: str, touch: bool) -> None:
            old: JSON = conditions.get(type_) or {}
            changed = old.get("status") != value
            touched = changed or touch or old.get("reason") != reason
            conditions[type_] = {
                "type": type_,
                "status": value,
                "lastUpdateTime": stamp if touched else old.get("lastUpdateTime", stamp),
                "lastTransitionTime": stamp if changed else old.get("lastTransitionTime", stamp),
                "reason": reason,
                "message": message,
            }

        if ready >= want - unavailable:
            set_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                False,
            )
        else:
            set_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                False,
            )
        new_name = meta(new)["name"] if new else ""
        complete = updated == want and len(active) == updated and new_ready == updated
        progressing = conditions.get("Progressing")
        counts_changed = any(
            before.get(k, 0) != status.get(k, 0)
            for k in ("replicas", "updatedReplicas", "readyReplicas")
        )
        deadline = self.timings.progress_deadline or float(spec.get("progressDeadlineSeconds", 600))
        reason = (progressing or {}).get("reason")
        if complete:
            if reason != "NewReplicaSetAvailable" or progressed:
                set_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{new_name}" has successfully progressed.',
                    True,
                )
        elif progressed or (counts_changed and progressing and reason != "NewReplicaSetAvailable"):
            set_condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{new_name}" is progressing.',
                True,
            )
        elif progressing is None:  # first seen with nothing in progress (the seeded shop)
            set_condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{new_name}" has successfully progressed.',
                True,
            )
        elif reason == "ReplicaSetUpdated" and progressing is not None:
            last = parse_time(progressing.get("lastUpdateTime")) or now
            if now - last > deadline:
                set_condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{new_name}" has timed out progressing.',
                    True,
                )
        status["conditions"] = [
            conditions[t] for t in ("Available", "Progressing") if t in conditions
        ]
        current = self.get(DEPLOYMENTS, dm["namespace"], dm["name"])
        if current is None or meta(current)["uid"] != dm["uid"]:
            return
        # the controller writes status and its revision annotation on the latest object
        updated_obj = copy.deepcopy(current)
        updated_obj["status"] = status
        annotations_of(updated_obj)[REVISION] = annotations_of(dep).get(REVISION, "")
        self.save(DEPLOYMENTS, updated_obj)

    # -- validation -----------------------------------------------------------------------------

    def _validate(self, res: Resource, obj: JSON, before: JSON | None) -> None:
        m = meta(obj)
        name = str(m.get("name", ""))
        causes: list[tuple[str, str]] = []
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
            causes.append(
                (
                    "metadata.name",
                    f"Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                )
            )
        for value in (m.get("labels") or {}).values():
            if not isinstance(value, str) or len(value) > 63:
                causes.append(
                    (
                        "metadata.labels",
                        f'Invalid value: "{value}": must be no more than 63 characters',
                    )
                )
        if res in (DEPLOYMENTS, REPLICASETS) or res.plural == "statefulsets":
            spec = obj.get("spec") or {}
            replicas = spec.get("replicas", 1)
            if not isinstance(replicas, int) or isinstance(replicas, bool):
                causes.append(
                    ("spec.replicas", f"Invalid value: {json.dumps(replicas)}: must be an integer")
                )
            elif replicas < 0:
                causes.append(
                    (
                        "spec.replicas",
                        f"Invalid value: {replicas}: must be greater than or equal to 0",
                    )
                )
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            if not selector:
                causes.append(("spec.selector", "Required value"))
            template = spec.get("template") or {}
            labels = (template.get("metadata") or {}).get("labels") or {}
            if selector and any(labels.get(k) != v for k, v in selector.items()):
                causes.append(
                    (
                        "spec.template.metadata.labels",
                        f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`",
                    )
                )
            containers = (template.get("spec") or {}).get("containers")
            if not containers:
                causes.append(("spec.template.spec.containers", "Required value"))
            for i, c in enumerate(containers or []):
                if not isinstance(c, dict) or not c.get("name"):
                    causes.append((f"spec.template.spec.containers[{i}].name", "Required value"))
                if not isinstance(c, dict) or not c.get("image"):
                    causes.append((f"spec.template.spec.containers[{i}].image", "Required value"))
            if before is not None:
                old_selector = (before.get("spec") or {}).get("selector")
                if old_selector != spec.get("selector"):
                    causes.append(
                        (
                            "spec.selector",
                            f"Invalid value: {json.dumps(spec.get('selector'))}: field is immutable",
                        )
                    )
            strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
            if res is DEPLOYMENTS and strategy not in ("RollingUpdate", "Recreate"):
                causes.append(
                    (
                        "spec.strategy.type",
                        f'Unsupported value: "{strategy}": supported values: "Recreate", "RollingUpdate"',
                    )
                )
        if res is PODS and before is not None:

            def mutable(pod: JSON) -> JSON:
                spec = copy.deepcopy(pod.get("spec") or {})
                for c in spec.get("containers") or []:
                    c.pop("image", None)
                spec.pop("activeDeadlineSeconds", None)
                spec.pop("tolerations", None)
                return spec

            if mutable(obj) != mutable(before):
                causes.append(
                    (
                        "spec",
                        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                    )
                )
        if causes:
            raise invalid(res, name, causes)

    # -- HTTP ------------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        record = Recorded(
            request.method,
            request.path,
            dict(request.query),
            request.headers.get("Content-Type", ""),
            request.headers.get("Impersonate-User"),
        )
        self.requests.append(record)
        try:
            response = await self._route(request)
        except ApiError as exc:
            response = web.json_response(exc.status(), status=exc.code)
        except Exception as exc:  # an emulator bug answers as the API server's 500 would
            error = ApiError(500, "InternalError", f"Internal error occurred: {exc!r}")
            response = web.json_response(error.status(), status=500)
        record.status = response.status
        return response

    def _authenticated(self, request: web.Request) -> bool:
        """A wrong token is refused; none is accepted: client-go (kubectl) does not send a
        bearer token over plain http, so loopback without one is trusted, as the API server's
        old localhost insecure port was."""
        header = request.headers.get("Authorization")
        return header is None or secrets.compare_digest(header, f"Bearer {self.token}")

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return web.json_response(SERVER_VERSION)
        if not self._authenticated(request):
            raise ApiError(401, "Unauthorized", "Unauthorized")
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"]:
            if len(parts) == 1:
                return web.json_response(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                        ],
                    }
                )
            if parts[1] != "v1":
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if len(parts) == 2:
                return web.json_response(self._resource_list(""))
            return await self._resource_request(request, "", parts[2:])
        if parts[:1] == ["apis"]:
            if len(parts) == 1:
                return web.json_response(
                    {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group("apps")]}
                )
            if parts[1] != "apps":
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if len(parts) == 2:
                return web.json_response(
                    {"kind": "APIGroup", "apiVersion": "v1", **self._group("apps")}
                )
            if parts[2] != "v1":
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if len(parts) == 3:
                return web.json_response(self._resource_list("apps"))
            return await self._resource_request(request, "apps", parts[3:])
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    @staticmethod
    def _group(name: str) -> JSON:
        version = {"groupVersion": f"{name}/v1", "version": "v1"}
        return {"name": name, "versions": [version], "preferredVersion": version}

    @staticmethod
    def _resource_list(group: str) -> JSON:
        resources: list[JSON] = []
        for res in RESOURCES.values():
            if res.group != group:
                continue
            verbs = ["get", "list", "watch"] if res in (NAMESPACES, NODES) else _RW
            entry: JSON = {
                "name": res.plural,
                "singularName": res.kind.lower(),
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": verbs + (["deletecollection"] if res is EVENTS else []),
            }
            if res.short_names:
                entry["shortNames"] = list(res.short_names)
            if res.categories:
                entry["categories"] = list(res.categories)
            resources.append(entry)
            for sub in res.subresources:
                if sub == "scale":
                    resources.append(
                        {
                            "name": f"{res.plural}/scale",
                            "singularName": "",
                            "namespaced": True,
                            "group": "autoscaling",
                            "version": "v1",
                            "kind": "Scale",
                            "verbs": ["get", "patch", "update"],
                        }
                    )
                elif sub == "log":
                    resources.append(
                        {
                            "name": f"{res.plural}/log",
                            "singularName": "",
                            "namespaced": True,
                            "kind": res.kind,
                            "verbs": ["get"],
                        }
                    )
                else:
                    resources.append(
                        {
                            "name": f"{res.plural}/{sub}",
                            "singularName": "",
                            "namespaced": True,
                            "kind": res.kind,
                            "verbs": ["get", "patch", "update"],
                        }
                    )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/v1" if group else "v1",
            "resources": resources,
        }

    async def _resource_request(
        self, request: web.Request, group: str, parts: list[str]
    ) -> web.StreamResponse:
        """``[namespaces/NS/]PLURAL[/NAME[/SUBRESOURCE]]`` under one group version."""
        namespace: str | None = None
        if len(parts) >= 3 and parts[0] == "namespaces":
            namespace, parts = parts[1], parts[2:]
        res = RESOURCES.get((group, parts[0]))
        if res is None or (namespace is not None and not res.namespaced) or len(parts) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = parts[1] if len(parts) > 1 else None
        sub = parts[2] if len(parts) > 2 else None
        if sub is not None and sub not in res.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if res.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        method = request.method
        if name is None:
            if method == "GET":
                return await self._list(request, res, namespace)
            if method == "POST":
                return await self._create(request, res, namespace)
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        if sub == "log":
            if method != "GET":
                raise ApiError(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )
            return await self._log(request, namespace or "", name)
        if sub == "scale":
            return await self._scale(request, res, namespace or "", name)
        if method == "GET":
            obj = self.get(res, namespace, name)
            if obj is None:
                raise not_found(res, name)
            if sub == "status" or not wants_table(request):
                return web.json_response(obj)
            return web.json_response(self._table(res, [obj], request))
        if method in ("PATCH", "PUT"):
            return await self._write(request, res, namespace, name, status_only=sub == "status")
        if method == "DELETE":
            return self._delete_request(request, res, namespace, name)
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    # -- reads --------------------------------------------------------------------------------

    def _select(self, request: web.Request, res: Resource, namespace: str | None) -> list[JSON]:
        objects = self.items(res, namespace)
        label_selector = request.query.get("labelSelector")
        if label_selector:
            tests = parse_label_selector(label_selector)
            objects = [o for o in objects if all(t(meta(o).get("labels") or {}) for t in tests)]
        field_selector = request.query.get("fieldSelector")
        if field_selector:
            field_tests = parse_field_selector(res, field_selector)
            objects = [o for o in objects if all(t(o) for t in field_tests)]
        return objects

    async def _list(
        self, request: web.Request, res: Resource, namespace: str | None
    ) -> web.StreamResponse:
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, res, namespace)
        objects = self._select(request, res, namespace)
        token = request.query.get("continue")
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ApiError(
                    400,
                    "BadRequest",
                    "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                ) from exc
            objects = [o for o in objects if self._key(o) > tuple(start)]
        limit = request.query.get("limit", "")
        more = None
        if limit.isdigit() and 0 < int(limit) < len(objects):
            objects, more = objects[: int(limit)], objects[int(limit) - 1]
        list_meta: JSON = {"resourceVersion": str(self._rv)}
        if more is not None:
            list_meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"start": list(self._key(more))}).encode()
            ).decode()
            list_meta["remainingItemCount"] = len(self._select(request, res, namespace)) - len(
                objects
            )
        if wants_table(request):
            table = self._table(res, objects, request)
            table["metadata"] = list_meta
            return web.json_response(table)
        items = []
        for obj in objects:
            item = dict(obj)
            item.pop("kind", None)
            item.pop("apiVersion", None)
            items.append(item)
        return web.json_response(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": list_meta,
                "items": items,
            }
        )

    @staticmethod
    def _key(obj: JSON) -> tuple[str, str]:
        return (meta(obj).get("namespace", ""), meta(obj)["name"])

    def _table(self, res: Resource, objects: Iterable[JSON], request: web.Request) -> JSON:
        now = self.now()
        include = request.query.get("includeObject", "Metadata")
        rows = []
        for obj in objects:
            row: JSON = {"cells": table_cells(res, obj, now)}
            if include == "Object":
                row["object"] = obj
            elif include != "None":
                row["object"] = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                }
            rows.append(row)
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "columnDefinitions": [
                {
                    "name": n,
                    "type": t,
                    "format": "name" if n == "Name" else "",
                    "description": d,
                    "priority": p,
                }
                for n, t, p, d in table_columns(res)
            ],
            "rows": rows,
        }

    async def _watch(
        self, request: web.Request, res: Resource, namespace: str | None
    ) -> web.StreamResponse:
        label_tests = parse_label_selector(request.query.get("labelSelector", ""))
        field_tests = parse_field_selector(res, request.query.get("fieldSelector", ""))
        table = wants_table(request)

        def selected(obj: JSON) -> bool:
            return all(t(meta(obj).get("labels") or {}) for t in label_tests) and all(
                t(obj) for t in field_tests
            )

        since = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds", "") or 1800)
        watch = _Watch(res, namespace)
        backlog: list[tuple[int, str, JSON]] = []
        if request.query.get("sendInitialEvents") == "true" or since in ("", "0"):
            backlog = [(self._rv, "ADDED", o) for o in self.items(res, namespace) if selected(o)]
        elif since.isdigit():
            oldest = self._history[0][0] if self._history else self._rv
            if int(since) < oldest - 1 and int(since) < self._rv:
                gone = ApiError(410, "Expired", f"too old resource version: {since} ({oldest - 1})")
                response = web.StreamResponse(headers={"Content-Type": "application/json"})
                await response.prepare(request)
                await response.write(
                    json.dumps({"type": "ERROR", "object": gone.status()}).encode() + b"\n"
                )
                return response
            backlog = [
                (rv, kind, obj)
                for rv, kind, key, obj in self._history
                if rv > int(since)
                and key == (res.group, res.plural)
                and namespace in (None, meta(obj).get("namespace"))
            ]
        self._watches.add(watch)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def send(kind: str, obj: JSON) -> None:
            body: JSON = self._table(res, [obj], request) if table and kind != "BOOKMARK" else obj
            await response.write(json.dumps({"type": kind, "object": body}).encode() + b"\n")

        try:
            for _, kind, obj in backlog:
                if selected(obj):
                    await send(kind, obj)
            if request.query.get("sendInitialEvents") == "true":
                await send(
                    "BOOKMARK",
                    {
                        "kind": res.kind,
                        "apiVersion": res.api_version,
                        "metadata": {
                            "resourceVersion": str(self._rv),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                )
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watch.queue.get(), min(remaining, 30.0))
                except TimeoutError:
                    if request.query.get("allowWatchBookmarks") == "true":
                        await send(
                            "BOOKMARK",
                            {
                                "kind": res.kind,
                                "apiVersion": res.api_version,
                                "metadata": {"resourceVersion": str(self._rv)},
                            },
                        )
                    continue
                if item is None:
                    break
                _, kind, obj = item
                if selected(obj):
                    await send(kind, obj)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watches.discard(watch)
        return response

    async def _log(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        pod = self.get(PODS, namespace, name)
        if pod is None:
            raise not_found(PODS, name)
        names = [str(c.get("name")) for c in pod["spec"].get("containers") or []]
        container = request.query.get("container")
        if container is None:
            if len(names) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
                )
            container = names[0]
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        previous = request.query.get("previous") in ("true", "1")
        sim = self.sims.get((namespace, name))
        cs: JSON = next(
            (c for c in pod["status"].get("containerStatuses") or [] if c.get("name") == container),
            {},
        )
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if previous and not (cs.get("lastState") or {}).get("terminated"):
            raise bad_request(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        if not previous and waiting.get("reason") == "ContainerCreating":
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        now = self.now()
        lines = pod_log(pod, sim, now, previous=previous)
        since = request.query.get("sinceSeconds", "")
        since_time = parse_time(request.query.get("sinceTime"))
        cutoff = now - int(since) if since.isdigit() else since_time
        if cutoff is not None:
            lines = [line for line in lines if (parse_time(line.split(" ", 1)[0]) or now) >= cutoff]
        tail = request.query.get("tailLines", "")
        if tail.isdigit():
            lines = lines[-int(tail) :] if int(tail) else []
        stamped = request.query.get("timestamps") in ("true", "1")

        def render(chunk: list[str]) -> str:
            return "".join((line if stamped else line.split(" ", 1)[1]) + "\n" for line in chunk)

        text = render(lines)
        limit = request.query.get("limitBytes", "")
        if limit.isdigit():
            text = text[: int(limit)]
        follow = request.query.get("follow") in ("true", "1") and not previous
        if not follow or (sim is not None and sim.crash):
            return web.Response(text=text, content_type="text/plain")
        # kubectl logs -f: the lines so far, then new ones as the pod writes them
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(text.encode())
        last = self.now()
        with contextlib.suppress(ConnectionResetError):
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                current = self.get(PODS, namespace, name)
                if current is None or meta(current).get("deletionTimestamp"):
                    break
                now = self.now()
                fresh = [
                    line
                    for line in pod_log(current, sim, now)
                    if last < (parse_time(line.split(" ", 1)[0]) or 0) <= now
                ]
                last = now
                if fresh:
                    await response.write(render(fresh).encode())
        return response

    # -- writes --------------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            if request.content_type in ("application/yaml", APPLY_PATCH):
                return yaml.safe_load(raw)
            return json.loads(raw or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the body of the request could not be decoded: {exc}") from exc

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        values = request.query.getall("dryRun", [])
        if any(v != "All" for v in values):
            raise bad_request(f'Invalid dryRun value: "{values[0]}": supported values: "All"')
        return bool(values)

    def _check_field_manager(self, request: web.Request) -> None:
        manager = request.query.get("fieldManager", "")
        if len(manager) > 128:
            raise bad_request("fieldManager: Too long: may not be longer than 128 characters")

    async def _write(
        self,
        request: web.Request,
        res: Resource,
        namespace: str | None,
        name: str,
        *,
        status_only: bool = False,
    ) -> web.Response:
        dry_run = self._dry_run(request)
        self._check_field_manager(request)
        before = self.get(res, namespace, name)
        if before is None:
            raise not_found(res, name)
        body = await self._body(request)
        if request.method == "PATCH":
            content_type = request.content_type
            result = apply_patch(content_type, before, body)
        else:
            if not isinstance(body, dict):
                raise bad_request("the body of the request must be an object")
            result = copy.deepcopy(body)
            rv = meta(result).get("resourceVersion")
            if not rv:
                raise invalid(
                    res,
                    name,
                    [
                        (
                            "metadata.resourceVersion",
                            "Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                )
        rv = meta(result).get("resourceVersion")
        if rv and rv != meta(before).get("resourceVersion"):
            raise conflict(res, name)
        if meta(result).get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta(result).get('name')}) does not match the name on the URL ({name})"
            )
        if res.namespaced and meta(result).get("namespace", namespace) != namespace:
            raise bad_request(
                "the namespace of the object does not match the namespace on the request"
            )
        result = self._server_fields(res, result, before, status_only=status_only)
        self._validate(res, result, before)
        if dry_run:
            return web.json_response(result)
        saved = self.save(res, result)
        self.kick()
        return web.json_response(saved)

    def _server_fields(
        self, res: Resource, obj: JSON, before: JSON, *, status_only: bool = False
    ) -> JSON:
        """What the API server keeps or sets whatever the client sent: identity, timestamps,
        ``status`` (only through ``/status``), ``generation`` (+1 when ``spec`` changes) and
        the defaults of a pod template."""
        obj = copy.deepcopy(obj)
        if status_only:
            updated = copy.deepcopy(before)
            updated["status"] = obj.get("status")
            return updated
        m, bm = meta(obj), meta(before)
        for key in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "deletionTimestamp",
            "ownerReferences" if res is PODS else "",
        ):
            if key and key in bm:
                m[key] = bm[key]
            elif key:
                m.pop(key, None)
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        if "status" in before or "status" in obj:
            obj["status"] = copy.deepcopy(before.get("status"))
        if isinstance(obj.get("spec"), dict) and isinstance(obj["spec"].get("template"), dict):
            obj["spec"]["template"] = self._default_template(obj["spec"]["template"])
        if m.get("annotations") == {}:
            m.pop("annotations")
        if obj.get("spec") != before.get("spec") and "generation" in bm:
            m["generation"] = int(bm["generation"]) + 1
        return obj

    async def _scale(
        self, request: web.Request, res: Resource, namespace: str, name: str
    ) -> web.Response:
        target = self.get(res, namespace, name)
        if target is None:
            raise not_found(res, name)

        def scale_of(obj: JSON) -> JSON:
            m = meta(obj)
            return {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {
                    k: m[k]
                    for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                    if k in m
                },
                "spec": {"replicas": int(obj["spec"].get("replicas", 1))},
                "status": {
                    "replicas": int((obj.get("status") or {}).get("replicas", 0)),
                    "selector": selector_from_labels(
                        (obj["spec"].get("selector") or {}).get("matchLabels") or {}
                    ),
                },
            }

        if request.method == "GET":
            return web.json_response(scale_of(target))
        if request.method not in ("PATCH", "PUT"):
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        dry_run = self._dry_run(request)
        self._check_field_manager(request)
        body = await self._body(request)
        current = scale_of(target)
        scale = (
            apply_patch(request.content_type, current, body) if request.method == "PATCH" else body
        )
        if not isinstance(scale, dict):
            raise bad_request("the body of the request must be a Scale object")
        rv = meta(scale).get("resourceVersion")
        if rv and rv != meta(target).get("resourceVersion"):
            raise conflict(res, name)
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(
                422,
                "Invalid",
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0',
                {
                    "name": name,
                    "group": "autoscaling",
                    "kind": "Scale",
                    "causes": [
                        {
                            "reason": "FieldValueInvalid",
                            "message": f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0",
                            "field": "spec.replicas",
                        }
                    ],
                },
            )
        updated = copy.deepcopy(target)
        updated["spec"]["replicas"] = replicas
        if updated["spec"] != target["spec"]:
            meta(updated)["generation"] = int(meta(target).get("generation", 1)) + 1
        if dry_run:
            return web.json_response(scale_of(updated))
        saved = self.save(res, updated)
        self.kick()
        return web.json_response(scale_of(saved))

    async def _create(
        self, request: web.Request, res: Resource, namespace: str | None
    ) -> web.Response:
        dry_run = self._dry_run(request)
        obj = await self._body(request)
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be an object")
        m = meta(obj)
        if not m.get("name") and m.get("generateName"):
            m["name"] = m["generateName"] + "".join(
                self._rng.choice(SAFE_ALPHABET) for _ in range(5)
            )
        name = str(m.get("name", ""))
        if not name:
            raise invalid(
                res, "", [("metadata.name", "Required value: name or generateName is required")]
            )
        if res.namespaced:
            if namespace is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if m.get("namespace", namespace) != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            if self.get(NAMESPACES, None, namespace) is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
            m["namespace"] = namespace
        if self.get(res, namespace, name) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{res.qualified} "{name}" already exists',
                {"name": name, "group": res.group, "kind": res.plural},
            )
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        for key in ("resourceVersion", "deletionTimestamp"):
            m.pop(key, None)
        m["uid"] = str(uuid.uuid4())
        m["creationTimestamp"] = rfc3339(self.now())
        if isinstance(obj.get("spec"), dict):
            if res in (DEPLOYMENTS, REPLICASETS) or res.plural == "statefulsets":
                m["generation"] = 1
                obj["spec"].setdefault("replicas", 1)
                if isinstance(obj["spec"].get("template"), dict):
                    obj["spec"]["template"] = self._default_template(obj["spec"]["template"])
            if res is DEPLOYMENTS:
                obj["spec"].setdefault(
                    "strategy",
                    {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                    },
                )
                obj["spec"].setdefault("revisionHistoryLimit", 10)
                obj["spec"].setdefault("progressDeadlineSeconds", 600)
        obj["status"] = {"phase": "Active"} if res is NAMESPACES else {}
        if res is PODS and not obj.get("spec", {}).get("nodeName"):
            obj.setdefault("spec", {})["nodeName"] = NODE_NAMES[
                len(self.items(PODS)) % len(NODE_NAMES)
            ]
        self._validate(res, obj, None)
        if dry_run:
            return web.json_response(obj, status=201)
        if res is PODS:
            self.sims[namespace or "", name] = PodSim(ready_at=self.now() + self.timings.pod_start)
            obj["status"] = {
                "podIP": f"10.244.9.{next(self._ips) % 250 + 2}",
                "hostIP": "172.18.0.9",
            }
            self._pod_status(obj, self.sims[namespace or "", name], self.now())
        saved = self.save(res, obj)
        self.kick()
        return web.json_response(saved, status=201)

    def _delete_request(
        self, request: web.Request, res: Resource, namespace: str | None, name: str
    ) -> web.Response:
        dry_run = self._dry_run(request)
        obj = self.get(res, namespace, name)
        if obj is None:
            raise not_found(res, name)
        if res is NAMESPACES and name in ("default", "kube-system"):
            raise ApiError(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
            )
        if dry_run:
            return web.json_response(obj)
        if res is PODS:
            self._terminate(obj, self.now())
            self.kick()
            return web.json_response(self.get(res, namespace, name))
        self._cascade(obj)
        self.delete(res, namespace, name)
        if res is NAMESPACES:
            for other in RESOURCES.values():
                if other.namespaced:
                    for item in self.items(other, name):
                        self.delete(other, name, meta(item)["name"])
        self.kick()
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": res.group,
                    "kind": res.plural,
                    "uid": meta(obj).get("uid"),
                },
            }
        )

    def _cascade(self, owner: JSON) -> None:
        """Background garbage collection: what ``owner`` controls goes too."""
        uid = meta(owner).get("uid")
        namespace = meta(owner).get("namespace")
        if not namespace:
            return
        for res in (REPLICASETS, PODS):
            for obj in self.items(res, namespace):
                if controller_uid(obj) == uid:
                    self._cascade(obj)
                    if res is PODS:
                        self._terminate(obj, self.now())
                    else:
                        self.delete(res, namespace, meta(obj)["name"])


# -- running it beside synchronous code (opsbot demo) -------------------------------------------


class BackgroundCluster:
    """A :class:`DemoCluster` on its own event loop in a daemon thread, with its kubeconfig
    written to ``kubeconfig``: ``start()`` returns once it answers, ``stop()`` ends it."""

    def __init__(self, kubeconfig: Path, *, timings: Timings | None = None, port: int = 0) -> None:
        self.kubeconfig = kubeconfig
        self._timings, self._port = timings, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.cluster: DemoCluster | None = None

    @property
    def url(self) -> str:
        return self.cluster.url if self.cluster else ""

    def start(self) -> BackgroundCluster:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="demo-cluster", daemon=True)
        self._thread.start()

        async def boot() -> DemoCluster:
            return await DemoCluster(timings=self._timings, port=self._port).start()

        self.cluster = asyncio.run_coroutine_threadsafe(boot(), loop).result(timeout=30)
        self.cluster.write_kubeconfig(self.kubeconfig)
        return self

    def stop(self) -> None:
        loop, cluster = self._loop, self.cluster
        if loop is None:
            return
        if cluster is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(cluster.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self.cluster = None

    def __enter__(self) -> BackgroundCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def running(
    kubeconfig: Path | None = None, *, timings: Timings | None = None
) -> AsyncIterator[DemoCluster]:
    """``async with running(path) as cluster``: a started cluster (kubeconfig written to
    ``path`` when given), stopped on exit."""
    cluster = await DemoCluster(timings=timings).start()
    try:
        if kubeconfig is not None:
            cluster.write_kubeconfig(kubeconfig)
        yield cluster
    finally:
        await cluster.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m opsbot.demo_cluster",
        description="Serve the opsbot demo's emulated Kubernetes API until interrupted.",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path("demo-kubeconfig"),
        help="where to write the kubeconfig",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)"
    )
    args = parser.parse_args(argv)

    async def serve() -> None:
        cluster = await DemoCluster(port=args.port).start()
        cluster.write_kubeconfig(args.kubeconfig)
        print(
            f"Kubernetes API (emulated) at {cluster.url}; try: kubectl --kubeconfig {args.kubeconfig} get deploy -n shop",
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await cluster.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
