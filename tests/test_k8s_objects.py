"""The pure readers of Kubernetes objects (opsbot.skills.kubernetes.objects) and the patch
builders of the write skills, on API JSON as a server sends it: no cluster, no kmock."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opsbot.skills.base import SkillError
from opsbot.skills.kubernetes.objects import (
    age,
    condition_rows,
    describe_fields,
    event_row,
    history_rows,
    images,
    matches,
    owned_revisions,
    parse_selector,
    pod_rank,
    pod_row,
    pod_state,
    recent_events,
    rollout_status,
    selector_of,
    selector_string,
    template_without_hash,
    timestamp,
)
from opsbot.skills.kubernetes.write import (
    restart_patch,
    rollback_target,
    scale_patch,
    undo_patch,
)

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "checkout",
            "namespace": "shop",
            "uid": "uid-checkout",
            "generation": 4,
            "creationTimestamp": "2026-11-18T09:30:00Z",
            "labels": {"team": "payments", "app": "checkout"},
            "annotations": {
                "deployment.kubernetes.io/revision": "3",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "kubernetes.io/change-cause": "deploy shop/checkout:1.3",
            },
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "checkout"}},
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"app": "checkout"}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "shop/checkout:1.3"},
                        {"name": "envoy", "image": "envoyproxy/envoy:v1.31"},
                    ]
                },
            },
        },
        "status": {
            "observedGeneration": 4,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": 3,
            "availableReplicas": 3,
            **status,
        },
    }


def replicaset(revision: int, image: str, pod_hash: str, owner: str = "uid-checkout") -> Any:
    labels = {"app": "checkout", "pod-template-hash": pod_hash}
    return {
        "metadata": {
            "name": f"checkout-{pod_hash}",
            "namespace": "shop",
            "labels": labels,
            "creationTimestamp": "2026-11-20T12:00:00Z",
            "annotations": {
                "deployment.kubernetes.io/revision": str(revision),
                "kubernetes.io/change-cause": f"deploy {image}",
            },
            "ownerReferences": [{"kind": "Deployment", "name": "checkout", "uid": owner}],
        },
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"prometheus.io/scrape": "true"}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def pod(name: str, *, state: dict[str, Any], ready: bool, restarts: int = 0, **status: Any) -> Any:
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"app": "checkout", "pod-template-hash": "bbb"},
            "creationTimestamp": "2026-11-21T09:15:00Z",
        },
        "spec": {"nodeName": "worker-2", "containers": [{"name": "app", "image": "shop/c:1"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.3.7",
            "containerStatuses": [
                {"name": "app", "ready": ready, "restartCount": restarts, "state": state}
            ],
            **status,
        },
    }


RUNNING = {"running": {"startedAt": "2026-11-21T09:16:00Z"}}
CRASHING = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}


# -- times -----------------------------------------------------------------------------------


def test_timestamps_and_ages() -> None:
    assert timestamp("2026-11-21T09:15:00Z") == datetime(2026, 11, 21, 9, 15, tzinfo=UTC)
    assert timestamp("") is None and timestamp(None) is None and timestamp("yesterday") is None
    assert age("2026-11-21T09:15:00Z", NOW) == "2h45m"
    assert age("2026-11-18T09:30:00Z", NOW) == "3d2h30m"
    assert age("2026-11-21T12:05:00Z", NOW) == "0s"  # clock skew: not negative
    assert age(None, NOW) == "?" and age("garbage", NOW) == "?"


# -- selectors -------------------------------------------------------------------------------


def test_selectors() -> None:
    dep = deployment()
    assert selector_of(dep) == {"app": "checkout"}
    assert selector_of({"spec": {}}) == {}
    assert selector_string({"tier": "web", "app": "checkout"}) == "app=checkout,tier=web"
    assert selector_string({}) == ""
    assert parse_selector("app=checkout,tier in (web),env=prod") == {
        "app": "checkout",
        "env": "prod",
    }
    assert matches(dep, {"app": "checkout"}) and matches(dep, {})
    assert not matches(dep, {"app": "payments"})
    assert not matches({"metadata": {}}, {"app": "checkout"})


# -- pods ------------------------------------------------------------------------------------


def test_pod_state_as_kubectl_shows_it() -> None:
    assert pod_state(pod("a", state=RUNNING, ready=True)) == ("Running", 1, 1, 0)
    assert pod_state(pod("b", state=CRASHING, ready=False, restarts=7)) == (
        "CrashLoopBackOff",
        0,
        1,
        7,
    )
    oom = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    assert pod_state(pod("c", state=oom, ready=False, restarts=2)) == ("OOMKilled", 0, 1, 2)
    completed = pod("d", state={"terminated": {"reason": "Completed"}}, ready=False)
    completed["status"]["phase"] = "Succeeded"
    assert pod_state(completed)[0] == "Succeeded"
    leaving = pod("e", state=RUNNING, ready=True)
    leaving["metadata"]["deletionTimestamp"] = "2026-11-21T11:59:00Z"
    assert pod_state(leaving)[0] == "Terminating"
    evicted = {
        "metadata": {"name": "f"},
        "spec": {"containers": [{"name": "app"}, {"name": "sidecar"}]},
        "status": {"phase": "Failed", "reason": "Evicted"},
    }
    assert pod_state(evicted) == ("Evicted", 0, 2, 0)  # no statuses: containers from the spec


def test_troubled_pods_rank_first() -> None:
    fine = pod("checkout-1", state=RUNNING, ready=True)
    starting = pod("checkout-2", state={"waiting": {"reason": "ContainerCreating"}}, ready=False)
    unready = pod("checkout-3", state=RUNNING, ready=False)
    crashing = pod("checkout-4", state=CRASHING, ready=False, restarts=7)
    ranked = sorted([fine, unready, starting, crashing], key=pod_rank)
    assert [p["metadata"]["name"] for p in ranked] == [
        "checkout-4",
        "checkout-2",
        "checkout-3",
        "checkout-1",
    ]
    assert [pod_rank(p)[0] for p in ranked] == [0, 1, 2, 3]


def test_pod_row() -> None:
    crashing = pod("checkout-bbb-2", state=CRASHING, ready=False, restarts=7)
    assert pod_row(crashing, NOW) == [
        "checkout-bbb-2",
        "CrashLoopBackOff",
        "0/1",
        "7",
        "2h45m",
        "worker-2",
    ]


# -- deployments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, (True, False, "deployment 'checkout' successfully rolled out")),
        (
            {"metadata": {"generation": 5}},
            (False, False, "Waiting for deployment 'checkout' spec update to be observed..."),
        ),
        (
            {"status": {"updatedReplicas": 1}},
            (
                False,
                False,
                "Waiting for deployment 'checkout' rollout to finish: 1 out of 3 new replicas have been updated...",
            ),
        ),
        (
            {"status": {"replicas": 4}},
            (
                False,
                False,
                "Waiting for deployment 'checkout' rollout to finish: 1 old replicas are pending termination...",
            ),
        ),
        (
            {"status": {"availableReplicas": 2}},
            (
                False,
                False,
                "Waiting for deployment 'checkout' rollout to finish: 2 of 3 updated replicas are available...",
            ),
        ),
        (
            {
                "status": {
                    "updatedReplicas": 1,
                    "conditions": [
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                        }
                    ],
                }
            },
            (False, True, "deployment 'checkout' exceeded its progress deadline"),
        ),
    ],
)
def test_rollout_status_follows_kubectl(
    change: dict[str, dict[str, Any]], expected: tuple[bool, bool, str]
) -> None:
    dep = deployment(**change.get("status", {}))
    dep["metadata"].update(change.get("metadata", {}))
    assert rollout_status(dep) == expected


def test_images() -> None:
    dep = deployment()
    assert images(dep["spec"]["template"]) == "app=shop/checkout:1.3, envoy=envoyproxy/envoy:v1.31"
    assert images({}) == ""


def test_revisions_owned_matching_and_numbered() -> None:
    dep = deployment()
    rev2 = replicaset(2, "shop/checkout:1.2", "aaa")
    rev3 = replicaset(3, "shop/checkout:1.3", "bbb")
    foreign = replicaset(9, "shop/checkout:9", "zzz", owner="uid-other")
    unnumbered = replicaset(4, "shop/checkout:1.4", "ccc")
    unnumbered["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "x"
    other_app = replicaset(5, "shop/cart:1", "ddd")
    other_app["metadata"]["labels"] = {"app": "cart"}
    found = owned_revisions(dep, [rev3, foreign, rev2, unnumbered, other_app])
    assert found == {2: rev2, 3: rev3}
    assert history_rows(found, "3", NOW) == [
        ["3 (current)", "deploy shop/checkout:1.3", "app=shop/checkout:1.3", "1d"],
        ["2", "deploy shop/checkout:1.2", "app=shop/checkout:1.2", "1d"],
    ]


def test_template_without_hash_leaves_the_replicaset_alone() -> None:
    rs = replicaset(2, "shop/checkout:1.2", "aaa")
    assert template_without_hash(rs) == {
        "metadata": {
            "labels": {"app": "checkout"},
            "annotations": {"prometheus.io/scrape": "true"},
        },
        "spec": {"containers": [{"name": "app", "image": "shop/checkout:1.2"}]},
    }
    assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == "aaa"


# -- describe --------------------------------------------------------------------------------


def test_describe_deployment() -> None:
    assert describe_fields("deployment", deployment(readyReplicas=2), NOW) == [
        ["name", "checkout"],
        ["namespace", "shop"],
        ["age", "3d2h30m"],
        ["labels", "app=checkout, team=payments"],
        ["replicas", "3 desired, 3 updated, 2 ready, 3 available"],
        ["images", "app=shop/checkout:1.3, envoy=envoyproxy/envoy:v1.31"],
        ["strategy", "RollingUpdate"],
        ["selector", "app=checkout"],
        ["revision", "3"],
    ]


def test_describe_pod_with_last_exit() -> None:
    crashing = pod("checkout-bbb-2", state=CRASHING, ready=False, restarts=7)
    crashing["status"]["containerStatuses"][0]["lastState"] = {
        "terminated": {"reason": "Error", "exitCode": 1}
    }
    assert describe_fields("pod", crashing, NOW) == [
        ["name", "checkout-bbb-2"],
        ["namespace", "shop"],
        ["age", "2h45m"],
        ["labels", "app=checkout, pod-template-hash=bbb"],
        ["status", "CrashLoopBackOff"],
        ["ready", "0/1"],
        ["restarts", "7"],
        ["node", "worker-2"],
        ["pod IP", "10.0.3.7"],
        ["images", "app=shop/c:1"],
        ["app last exit", "Error (code 1)"],
    ]


def test_describe_service_node_and_daemonset() -> None:
    service = {
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.12.4",
            "ports": [{"port": 80, "targetPort": 8080}, {"port": 9090, "protocol": "UDP"}],
            "selector": {"app": "checkout"},
        },
    }
    assert describe_fields("service", service, NOW) == [
        ["name", "checkout"],
        ["namespace", "shop"],
        ["age", "?"],
        ["type", "ClusterIP"],
        ["cluster IP", "10.96.12.4"],
        ["ports", "80/TCP->8080, 9090/UDP->"],
        ["selector", "app=checkout"],
    ]
    node = {
        "metadata": {"name": "worker-1", "creationTimestamp": "2026-10-01T12:00:00Z"},
        "spec": {"unschedulable": True},
        "status": {
            "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "Debian GNU/Linux 12"},
            "allocatable": {"cpu": "3920m", "memory": "15Gi", "pods": "110"},
        },
    }
    assert describe_fields("node", node, NOW) == [
        ["name", "worker-1"],
        ["age", "7w2d"],
        ["kubelet", "v1.32.4"],
        ["os image", "Debian GNU/Linux 12"],
        ["allocatable", "cpu 3920m, memory 15Gi, pods 110"],
        ["unschedulable", "True"],
    ]
    daemonset = {
        "metadata": {"name": "fluent-bit", "namespace": "logging"},
        "spec": {"template": {"spec": {"containers": [{"name": "fb", "image": "fb:3"}]}}},
        "status": {"desiredNumberScheduled": 4, "numberReady": 3},
    }
    assert describe_fields("daemonset", daemonset, NOW)[3:] == [
        ["pods", "4 desired, 3 ready"],
        ["images", "fb=fb:3"],
    ]


def test_condition_rows() -> None:
    long = "x" * 150
    dep = deployment(
        conditions=[
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": long,
            },
        ]
    )
    assert condition_rows(dep) == [
        ["Available", "True", "MinimumReplicasAvailable", ""],
        ["Progressing", "True", "NewReplicaSetAvailable", "x" * 100],
    ]
    assert condition_rows({"status": None}) == []


# -- events ----------------------------------------------------------------------------------


def event(obj: str, reason: str, type_: str, at: str, kind: str = "Pod") -> dict[str, Any]:
    return {
        "metadata": {"name": f"{obj}.{reason}", "creationTimestamp": "2026-11-01T00:00:00Z"},
        "involvedObject": {"kind": kind, "name": obj},
        "reason": reason,
        "message": f"{reason} of {obj}",
        "type": type_,
        "lastTimestamp": at,
    }


def test_event_rows() -> None:
    backoff = event("checkout-bbb-2", "BackOff", "Warning", "2026-11-21T11:55:00Z")
    assert event_row(backoff, NOW) == [
        "pod/checkout-bbb-2",
        "5m",
        "Warning",
        "BackOff",
        "BackOff of checkout-bbb-2",
    ]
    dated_by_creation = event("checkout", "ScalingReplicaSet", "Normal", "", kind="Deployment")
    assert event_row(dated_by_creation, NOW)[:2] == ["deployment/checkout", "2w6d12h"]


def test_recent_events_warnings_first_then_newest() -> None:
    now = datetime.now(UTC)

    def ago(minutes: int) -> str:
        return (now - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

    events = [
        event("checkout-1", "Pulled", "Normal", ago(2)),
        event("checkout-2", "BackOff", "Warning", ago(20)),
        event("payments-1", "Pulled", "Normal", ago(300)),
        event("checkout", "ScalingReplicaSet", "Normal", ago(10), kind="Deployment"),
        event("checkout-1", "Unhealthy", "Warning", ago(5)),
    ]
    recent = recent_events(events, now - timedelta(hours=1))
    assert [(e["involvedObject"]["name"], e["reason"]) for e in recent] == [
        ("checkout-1", "Unhealthy"),
        ("checkout-2", "BackOff"),
        ("checkout-1", "Pulled"),
        ("checkout", "ScalingReplicaSet"),
    ]
    about = recent_events(events, now - timedelta(days=1), "payments")
    assert [e["reason"] for e in about] == ["Pulled"]


# -- the patches kubectl sends ---------------------------------------------------------------


def test_restart_and_scale_patches() -> None:
    assert restart_patch(datetime(2026, 11, 21, 12, 0, 5, 123, tzinfo=UTC)) == {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-21T12:00:05Z"}
                }
            }
        }
    }
    assert scale_patch(5) == {"spec": {"replicas": 5}}


def test_rollback_target() -> None:
    known = {1: "rs1", 2: "rs2", 3: "rs3"}
    assert rollback_target("checkout", 3, known) == 2
    assert rollback_target("checkout", 3, known, 1) == 1
    with pytest.raises(
        SkillError, match=r"^deployment checkout has no revision 9 \(revisions: 1, 2, 3\)$"
    ):
        rollback_target("checkout", 3, known, 9)
    with pytest.raises(
        SkillError, match=r"^deployment payments has no previous revision to roll back to$"
    ):
        rollback_target("payments", 1, {1: "rs1"})
    with pytest.raises(SkillError, match=r"\(revisions: none\)"):
        rollback_target("cart", 0, {}, 2)


def test_undo_patch_as_kubectl_rollout_undo() -> None:
    dep = deployment()
    rs = replicaset(2, "shop/checkout:1.2", "aaa")
    assert undo_patch(dep, rs) == [
        {
            "op": "replace",
            "path": "/spec/template",
            "value": {
                "metadata": {
                    "labels": {"app": "checkout"},
                    "annotations": {"prometheus.io/scrape": "true"},
                },
                "spec": {"containers": [{"name": "app", "image": "shop/checkout:1.2"}]},
            },
        },
        {
            "op": "replace",
            "path": "/metadata/annotations",
            "value": {
                # kept from the deployment
                "deployment.kubernetes.io/revision": "3",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                # taken from the ReplicaSet
                "kubernetes.io/change-cause": "deploy shop/checkout:1.2",
            },
        },
    ]


def test_importing_the_package_leaves_the_kubernetes_library_unloaded() -> None:
    code = "import sys, opsbot.skills.kubernetes; assert 'kubernetes' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
