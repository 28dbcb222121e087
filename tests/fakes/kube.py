"""A Kubernetes API fake: kmock's emulator plus two behaviours of a real API server the
skills rely on, and builders of the objects the tests seed.

- ``?dryRun=All`` requests are answered with the would-be object and change nothing;
- a change to a Deployment's, StatefulSet's or DaemonSet's ``spec`` increments
  ``metadata.generation`` (the controller's ``status.observedGeneration`` then lags until
  :func:`complete_rollout` plays the controller).

kmock itself ignores label and field selectors, does plain merges and has no PUT; it also
cannot parse ``/api/v1/namespaces``, which this fake answers from the seeded objects. The
``coordination.k8s.io/v1`` Leases (leader election: replace with a ``resourceVersion``, 409
when it is stale) are answered by :class:`tests.fakes.lease.Leases` (``leases``).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp.web
from kmock import KubernetesEmulator, action
from kmock._internal.rendering import Request

from tests.fakes.lease import Leases

DEPLOYMENTS = ("apps", "v1", "deployments")
REPLICASETS = ("apps", "v1", "replicasets")
STATEFULSETS = ("apps", "v1", "statefulsets")
DAEMONSETS = ("apps", "v1", "daemonsets")
CONTROLLERREVISIONS = ("apps", "v1", "controllerrevisions")
PODS = ("", "v1", "pods")
EVENTS = ("", "v1", "events")


class ClusterEmulator(KubernetesEmulator):
    #: the Lease API (leader election), with the API server's optimistic concurrency
    leases: Leases | None = None

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path.startswith("/apis/coordination.k8s.io/"):
            if self.leases is None:
                self.leases = Leases()
            answer = await self.leases.handle(raw_request)
            if answer is not None:
                return answer
        # kmock 0.8 cannot parse the cluster-scoped path /api/v1/namespaces: answer it here,
        # with the namespaces the seeded objects live in (as a NamespaceList).
        if raw_request.method == "GET" and raw_request.path == "/api/v1/namespaces":
            names = sorted({ns for (_, ns, _) in self.objects if ns})
            items = [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names
            ]
            return aiohttp.web.json_response(
                {"kind": "NamespaceList", "apiVersion": "v1", "items": items}
            )
        return await super().__call__(raw_request)

    async def _handle(self, request: Request) -> aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        is_update = (
            request.action == action.UPDATE and request.name is not None and key in self.objects
        )
        before = copy.deepcopy(self.objects[key].raw) if is_update else None
        response = await super()._handle(request)  # user reactions (e.g. a 403) still apply
        if before is None:
            return response
        if request.params.get("dryRun") == "All":
            self.objects[key] = before  # a dry run answers the would-be object and keeps nothing
        elif request.resource in (
            self.resource(*DEPLOYMENTS),
            self.resource(*STATEFULSETS),
            self.resource(*DAEMONSETS),
        ):
            obj = self.objects[key]
            if obj.raw.get("spec") != before.get("spec"):
                obj.patch(
                    {"metadata": {"generation": int(before["metadata"].get("generation", 1)) + 1}}
                )
        return response


def deployment(
    name: str, namespace: str, *, replicas: int = 2, image: str = "", revision: int = 3
) -> dict[str, Any]:
    image = image or f"shop/{name}:1.{revision}"
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "generation": 4,
            "creationTimestamp": "2026-11-01T10:00:00Z",
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
        "status": {
            "observedGeneration": 4,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        },
    }


def replicaset(dep: dict[str, Any], revision: int, image: str, pod_hash: str) -> dict[str, Any]:
    name, namespace = dep["metadata"]["name"], dep["metadata"]["namespace"]
    labels = {"app": name, "pod-template-hash": pod_hash}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{name}-{pod_hash}",
            "namespace": namespace,
            "labels": labels,
            "creationTimestamp": "2026-11-01T10:00:00Z",
            "annotations": {
                "deployment.kubernetes.io/revision": str(revision),
                "kubernetes.io/change-cause": f"deploy {image}",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": name,
                    "uid": dep["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def pod(
    name: str,
    namespace: str,
    app: str,
    *,
    reason: str = "",
    ready: bool = True,
    restarts: int = 0,
    phase: str = "Running",
) -> dict[str, Any]:
    state: dict[str, Any] = (
        {"waiting": {"reason": reason}}
        if reason
        else {"running": {"startedAt": "2026-11-21T00:00:00Z"}}
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": app, "pod-template-hash": "bbb"},
            "creationTimestamp": "2026-11-20T10:00:00Z",
        },
        "spec": {
            "nodeName": "worker-1",
            "containers": [{"name": "app", "image": f"shop/{app}:1.3"}],
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "app", "ready": ready, "restartCount": restarts, "state": state}
            ],
        },
    }


def event(
    namespace: str,
    obj: str,
    reason: str,
    message: str,
    *,
    kind: str = "Pod",
    type_: str = "Normal",
    at: str = "",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{obj}.{reason.lower()}", "namespace": namespace},
        "involvedObject": {"kind": kind, "name": obj, "namespace": namespace},
        "reason": reason,
        "message": message,
        "type": type_,
        "lastTimestamp": at,
    }


def statefulset(
    name: str, namespace: str, *, replicas: int = 3, image: str = "", revision: int = 2
) -> dict[str, Any]:
    """A StatefulSet as the API server returns it (``updateStrategy`` defaulted to
    RollingUpdate with partition 0), rolled out at ControllerRevision ``<name>-r<revision>``."""
    image = image or f"shop/{name}:1.{revision}"
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-sts-{namespace}-{name}",
            "generation": 2,
            "creationTimestamp": "2026-11-01T10:00:00Z",
        },
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "currentReplicas": replicas,
            "updatedReplicas": replicas,
            "currentRevision": f"{name}-r{revision}",
            "updateRevision": f"{name}-r{revision}",
        },
    }


def daemonset(name: str, namespace: str, *, nodes: int = 3, image: str = "") -> dict[str, Any]:
    """A DaemonSet as the API server returns it, rolled out on ``nodes`` nodes."""
    image = image or f"shop/{name}:1.2"
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-ds-{namespace}-{name}",
            "generation": 2,
            "creationTimestamp": "2026-11-01T10:00:00Z",
        },
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
            },
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
        "status": {
            "observedGeneration": 2,
            "currentNumberScheduled": nodes,
            "desiredNumberScheduled": nodes,
            "numberReady": nodes,
            "numberAvailable": nodes,
            "updatedNumberScheduled": nodes,
            "numberMisscheduled": 0,
        },
    }


def controller_revision(
    owner: dict[str, Any], revision: int, image: str, *, cause: str = ""
) -> dict[str, Any]:
    """The ControllerRevision the StatefulSet or DaemonSet controller records for ``owner``'s
    template with ``image``: ``data`` is the template as a strategic merge patch with
    ``$patch: replace`` (the controllers' ``getPatch``), owned by ``owner`` as controller."""
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    template = copy.deepcopy(owner["spec"]["template"])
    template["spec"]["containers"][0]["image"] = image
    template["$patch"] = "replace"
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": f"{name}-r{revision}",
            "namespace": namespace,
            "labels": {"app": name, "controller-revision-hash": f"r{revision}"},
            "creationTimestamp": "2026-11-01T10:00:00Z",
            "annotations": {"kubernetes.io/change-cause": cause} if cause else {},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner["kind"],
                    "name": name,
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {"spec": {"template": template}},
        "revision": revision,
    }


def complete_rollout(kmock: KubernetesEmulator, namespace: str, name: str) -> None:
    """Play the deployment controller: status catches up with the spec."""
    obj = kmock.objects[kmock.resource(*DEPLOYMENTS), namespace, name]
    replicas = obj.raw["spec"].get("replicas", 1)
    obj.patch(
        {
            "status": {
                "observedGeneration": obj.raw["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            }
        }
    )


def complete_statefulset(kmock: KubernetesEmulator, namespace: str, name: str) -> None:
    """Play the StatefulSet controller: every pod updated and ready at a new revision."""
    obj = kmock.objects[kmock.resource(*STATEFULSETS), namespace, name]
    replicas = obj.raw["spec"].get("replicas", 1)
    revision = f"{name}-r{int(obj.raw['metadata']['generation']) + 10}"
    obj.patch(
        {
            "status": {
                "observedGeneration": obj.raw["metadata"]["generation"],
                "replicas": replicas,
                "readyReplicas": replicas,
                "currentReplicas": replicas,
                "updatedReplicas": replicas,
                "currentRevision": revision,
                "updateRevision": revision,
            }
        }
    )


def complete_daemonset(kmock: KubernetesEmulator, namespace: str, name: str) -> None:
    """Play the DaemonSet controller: every node's pod updated and available."""
    obj = kmock.objects[kmock.resource(*DAEMONSETS), namespace, name]
    nodes = obj.raw["status"]["desiredNumberScheduled"]
    obj.patch(
        {
            "status": {
                "observedGeneration": obj.raw["metadata"]["generation"],
                "updatedNumberScheduled": nodes,
                "numberAvailable": nodes,
                "numberReady": nodes,
            }
        }
    )


def seed_workloads(kmock: KubernetesEmulator) -> None:
    """Beside :func:`seed`'s deployments: the statefulset inventory in shop (revisions 1 and 2
    of its own, one of another statefulset's and one not controlled by it), the daemonset
    log-agent in shop (revisions 1 to 3)."""
    inventory = statefulset("inventory", "shop", revision=2)
    kmock.objects[kmock.resource(*STATEFULSETS), "shop", "inventory"] = inventory
    revisions = kmock.resource(*CONTROLLERREVISIONS)
    kmock.objects[revisions, "shop", "inventory-r1"] = controller_revision(
        inventory, 1, "shop/inventory:1.1", cause="deploy shop/inventory:1.1"
    )
    kmock.objects[revisions, "shop", "inventory-r2"] = controller_revision(
        inventory, 2, "shop/inventory:1.2", cause="deploy shop/inventory:1.2"
    )
    adopted = controller_revision(inventory, 7, "shop/inventory:0.9")
    adopted["metadata"]["ownerReferences"][0]["controller"] = False  # owned, not controlled
    kmock.objects[revisions, "shop", "inventory-r7"] = adopted
    other = statefulset("ledger", "shop")
    kmock.objects[kmock.resource(*STATEFULSETS), "shop", "ledger"] = other
    kmock.objects[revisions, "shop", "ledger-r5"] = controller_revision(other, 5, "shop/ledger:0.5")
    agent = daemonset("log-agent", "shop", image="shop/log-agent:1.3")
    kmock.objects[kmock.resource(*DAEMONSETS), "shop", "log-agent"] = agent
    for number in (1, 2, 3):
        kmock.objects[revisions, "shop", f"log-agent-r{number}"] = controller_revision(
            agent, number, f"shop/log-agent:1.{number}"
        )


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: test, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: opsbot, user: {token: test-token}}]\n"
        "contexts: [{name: test, context: {cluster: test, user: opsbot}}]\n"
        "current-context: test\n"
    )
    return path


def seed(kmock: KubernetesEmulator) -> None:
    """The shop: checkout (revisions 2 and 3, one crash-looping pod) and payments in shop,
    cart and another checkout in staging, and a few events. The API serves statefulsets,
    daemonsets and controllerrevisions (none yet: :func:`seed_workloads` adds some), as a real
    API server does."""
    for resource in (STATEFULSETS, DAEMONSETS, CONTROLLERREVISIONS):
        kmock.resources["/".join(resource)] = {}
    checkout = deployment("checkout", "shop", revision=3)
    kmock.objects[kmock.resource(*DEPLOYMENTS), "shop", "checkout"] = checkout
    kmock.objects[kmock.resource(*DEPLOYMENTS), "shop", "payments"] = deployment(
        "payments", "shop", revision=1
    )
    kmock.objects[kmock.resource(*DEPLOYMENTS), "staging", "cart"] = deployment("cart", "staging")
    kmock.objects[kmock.resource(*DEPLOYMENTS), "staging", "checkout"] = deployment(
        "checkout", "staging"
    )
    kmock.objects[kmock.resource(*REPLICASETS), "shop", "checkout-aaa"] = replicaset(
        checkout, 2, "shop/checkout:1.2", "aaa"
    )
    kmock.objects[kmock.resource(*REPLICASETS), "shop", "checkout-bbb"] = replicaset(
        checkout, 3, "shop/checkout:1.3", "bbb"
    )
    kmock.objects[kmock.resource(*PODS), "shop", "checkout-bbb-1"] = pod(
        "checkout-bbb-1", "shop", "checkout"
    )
    kmock.objects[kmock.resource(*PODS), "shop", "checkout-bbb-2"] = pod(
        "checkout-bbb-2", "shop", "checkout", reason="CrashLoopBackOff", ready=False, restarts=7
    )
    kmock.objects[kmock.resource(*PODS), "shop", "payments-ccc-1"] = pod(
        "payments-ccc-1", "shop", "payments"
    )
    now = datetime.now(UTC)
    recent = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = (now - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for name, ev in {
        "a": event(
            "shop",
            "checkout-bbb-2",
            "BackOff",
            "Back-off restarting failed container",
            type_="Warning",
            at=recent,
        ),
        "b": event(
            "shop",
            "checkout",
            "ScalingReplicaSet",
            "Scaled up replica set checkout-bbb to 2",
            kind="Deployment",
            at=recent,
        ),
        "c": event("shop", "payments-ccc-1", "Pulled", "image pulled", at=old),
    }.items():
        kmock.objects[kmock.resource(*EVENTS), "shop", name] = ev
