"""The workload skills for StatefulSets and DaemonSets (``kind``), through the official
``kubernetes`` client against kmock, each write asserted against the request ``kubectl``
sends for the same operation (``k8s.io/kubectl/pkg/polymorphichelpers``). The reference was
captured with ``kubectl -v=8`` (v1.32.4) against the demo cluster (``opsbot.demo_cluster``)
for ``rollout restart sts/redis``, ``scale sts/redis --replicas=4`` and ``rollout undo
sts/redis --dry-run=server``:

=========================================  ======  ===================================================  =====================================  ==========================================
kubectl command                            verb    path and query                                       Content-Type                           body
=========================================  ======  ===================================================  =====================================  ==========================================
rollout restart sts/inventory -n shop      PATCH   /apis/apps/v1/namespaces/shop/statefulsets/inventory application/strategic-merge-patch+json  {"spec":{"template":{"metadata":{"annotations":
                                                   ?fieldManager=kubectl-rollout                                                              {"kubectl.kubernetes.io/restartedAt":...}}}}}
rollout restart ds/log-agent               PATCH   .../daemonsets/log-agent?fieldManager=kubectl-rollout  (the same)
scale sts/inventory --replicas=5           PATCH   .../statefulsets/inventory/scale                     application/merge-patch+json           {"spec":{"replicas":5}}
rollout undo sts/inventory                 GET     .../statefulsets/inventory
\\                                         GET     .../controllerrevisions?labelSelector=app%3Dinventory
\\                                         PATCH   .../statefulsets/inventory                           application/strategic-merge-patch+json  the target ControllerRevision's ``data``
=========================================  ======  ===================================================  =====================================  ==========================================

kubectl's undo of a StatefulSet or DaemonSet goes to the second highest revision among the
ControllerRevisions the object *controls* (``metav1.IsControlledBy``), or ``--to-revision``,
and sends nothing when the live template already is that revision's. kmock ignores label
selectors and merges patches plainly, so the selection is asserted on what opsbot asked for
and kept, and the rollback on the request body, not on the merged object.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kmock import KubernetesEmulator

from opsbot.approvals import VoteStatus
from opsbot.engine import Engine
from opsbot.model import Invocation, Request, Run
from opsbot.skills.kubernetes.objects import (
    controlled_revisions,
    current_revision,
    daemonset_status,
    find_history,
    revision_template,
    statefulset_status,
)
from opsbot.skills.kubernetes.read import WorkloadArgs
from opsbot.skills.kubernetes.write import ScaleArgs
from tests.fakes.kube import (
    CONTROLLERREVISIONS,
    DAEMONSETS,
    DEPLOYMENTS,
    STATEFULSETS,
    ClusterEmulator,
    complete_daemonset,
    complete_statefulset,
    controller_revision,
    daemonset,
    seed,
    seed_workloads,
    statefulset,
)
from tests.test_kubernetes import (
    ALICE,
    BOB,
    CAROL,
    Scripted,
    kubernetes,
    make_engine,
    patches,
    policy_with_identities,
    say,
)

pytestmark = pytest.mark.kmock(cls=ClusterEmulator)

STS_PATH = "/apis/apps/v1/namespaces/shop/statefulsets/inventory"
DS_PATH = "/apis/apps/v1/namespaces/shop/daemonsets/log-agent"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


@pytest.fixture
async def k8s(kmock: KubernetesEmulator, tmp_path: Path) -> AsyncIterator[Engine]:
    seed(kmock)
    seed_workloads(kmock)
    services = await make_engine(kmock, tmp_path, policy_with_identities(tmp_path))
    yield Engine(services)
    await services.close()


def scripted(engine: Engine, skill: str, **args: Any) -> Engine:
    return Engine(engine.services, Scripted(Invocation(skill=skill, args=args)))


async def later(fn: Any, kmock: KubernetesEmulator, name: str, delay: float = 0.3) -> None:
    await asyncio.sleep(delay)
    fn(kmock, "shop", name)


def live(kmock: KubernetesEmulator, resource: tuple[str, str, str], name: str) -> dict[str, Any]:
    raw: dict[str, Any] = kmock.objects[kmock.resource(*resource), "shop", name].raw
    return raw


# -- the arguments -----------------------------------------------------------------------------


def test_kind_defaults_to_deployment_and_is_left_out_of_a_deployments_invocation() -> None:
    """Additive: a deployment's invocation reads as before ``kind`` existed (plans, approvals,
    audit records and buttons unchanged); another kind is carried."""
    assert WorkloadArgs(name="checkout", namespace="shop").kind == "deployment"
    assert WorkloadArgs(name="checkout", namespace="shop").model_dump() == {
        "name": "checkout",
        "namespace": "shop",
    }
    sts = WorkloadArgs.model_validate({"kind": "statefulset", "name": "db", "namespace": "data"})
    assert sts.model_dump(mode="json") == {"kind": "statefulset", "name": "db", "namespace": "data"}
    assert ScaleArgs.model_validate({"name": "x", "namespace": "y", "replicas": 2}).kind == (
        "deployment"
    )
    with pytest.raises(ValueError, match="kind"):
        WorkloadArgs.model_validate({"kind": "pod", "name": "x", "namespace": "y"})
    schema = WorkloadArgs.model_json_schema()["properties"]["kind"]
    assert schema["enum"] == ["deployment", "statefulset", "daemonset"]
    assert schema["default"] == "deployment"


# -- routing: the words and kubectl's TYPE/NAME fill kind ------------------------------------


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        (
            "restart the inventory statefulset in shop",
            "k8s.restart",
            {"kind": "statefulset", "name": "inventory", "namespace": "shop"},
        ),
        (
            "scale the inventory statefulset to 3 in shop",
            "k8s.scale",
            {"kind": "statefulset", "name": "inventory", "namespace": "shop", "replicas": 3},
        ),
        (
            "show the rollout history of sts/inventory in shop",
            "k8s.rollout.history",
            {"kind": "statefulset", "name": "inventory", "namespace": "shop"},
        ),
        (
            "rollout status of the log-agent daemonset in shop",
            "k8s.rollout.status",
            {"kind": "daemonset", "name": "log-agent", "namespace": "shop"},
        ),
        ("restart the checkout pods in shop", "k8s.restart", {"name": "checkout"}),
        ("roll back payments", "k8s.rollback", {"name": "payments", "namespace": "shop"}),
    ],
)
async def test_requests_plan_the_kind_they_name(
    k8s: Engine, text: str, skill: str, args: dict[str, Any]
) -> None:
    plan = await k8s.planner.plan(_request(text), k8s.catalog(ALICE, "ops"))
    assert isinstance(plan, Run), plan
    [invocation] = plan.invocations
    assert invocation.skill == skill
    assert invocation.args == {**invocation.args, **args}
    if "kind" not in args:
        assert "kind" not in invocation.args  # "the checkout pods": the deployment


def _request(text: str) -> Request:
    return Request(actor=ALICE, channel="ops", text=text)


@pytest.mark.parametrize(
    ("command", "skill", "args"),
    [
        (
            "kubectl rollout restart sts/inventory -n shop",
            "k8s.restart",
            {"kind": "statefulset", "name": "inventory", "namespace": "shop"},
        ),
        (
            "kubectl rollout undo statefulset/inventory -n shop --to-revision=1",
            "k8s.rollback",
            {"kind": "statefulset", "name": "inventory", "namespace": "shop", "revision": 1},
        ),
        (
            "kubectl scale sts/inventory --replicas=4 -n shop",
            "k8s.scale",
            {"kind": "statefulset", "name": "inventory", "namespace": "shop", "replicas": 4},
        ),
        (
            "kubectl rollout status ds/log-agent -n shop",
            "k8s.rollout.status",
            {"kind": "daemonset", "name": "log-agent", "namespace": "shop"},
        ),
        (
            "kubectl rollout restart deploy/checkout -n shop",
            "k8s.restart",
            {"name": "checkout", "namespace": "shop"},  # a deployment's reads as before
        ),
    ],
)
async def test_a_kubectl_command_plans_the_kind_it_names(
    k8s: Engine, command: str, skill: str, args: dict[str, Any]
) -> None:
    plan = await k8s.planner.plan(_request(command), k8s.catalog(ALICE, "ops"))
    assert isinstance(plan, Run), plan
    assert (plan.invocations[0].skill, plan.invocations[0].args) == (skill, args)


# -- restart ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "resource", "name", "controller", "preview", "done"),
    [
        (
            "restart the inventory statefulset in shop",
            STS_PATH,
            STATEFULSETS,
            "inventory",
            complete_statefulset,
            "rolling restart of statefulset shop/inventory: 3 replicas, images app=shop/inventory:1.2",
            "statefulset 'inventory': partitioned roll out complete: 3 new pods have been updated",
        ),
        (
            "restart the log-agent daemonset in shop",
            DS_PATH,
            DAEMONSETS,
            "log-agent",
            complete_daemonset,
            "rolling restart of daemonset shop/log-agent: 3 pods (one per node), images app=shop/log-agent:1.3",
            "daemon set 'log-agent' successfully rolled out",
        ),
    ],
)
async def test_restart_stamps_the_template_as_kubectl_does(
    k8s: Engine,
    kmock: KubernetesEmulator,
    text: str,
    path: str,
    resource: tuple[str, str, str],
    name: str,
    controller: Any,
    preview: str,
    done: str,
) -> None:
    thread = await say(k8s, text)
    [approval_id] = thread.approval_ids
    assert preview in thread.text and "server-side dry run (dryRun=All): accepted" in thread.text
    [dry] = patches(kmock, dry_run=True)
    assert dry.url.path == path and dry.params["fieldManager"] == "kubectl-rollout"
    assert RESTARTED_AT not in (live(kmock, resource, name)["spec"]["template"]["metadata"])
    task = asyncio.create_task(later(controller, kmock, name))
    assert (await k8s.decide(approval_id, BOB, "approve", thread)).status is VoteStatus.APPROVED
    await task
    [sent] = patches(kmock, dry_run=False)
    assert (sent.url.path, dict(sent.params)) == (path, {"fieldManager": "kubectl-rollout"})
    assert sent.headers["Content-Type"] == "application/strategic-merge-patch+json"
    stamp = sent.data["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    assert sent.data == {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    assert live(kmock, resource, name)["metadata"]["generation"] == 3  # the spec changed
    assert f"rollout complete: {done}" in thread.text


async def test_a_statefulset_rollout_that_waits_is_followed_until_it_completes(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    """Follow-up polls the statefulset (not a deployment of that name) with kubectl's
    StatefulSet status: the spec update observed, then every replica ready."""
    thread = await say(k8s, "restart the inventory statefulset in shop")
    obj = kmock.objects[kmock.resource(*STATEFULSETS), "shop", "inventory"]

    async def controller() -> None:
        await asyncio.sleep(0.2)
        obj.patch({"status": {"observedGeneration": 3, "readyReplicas": 1}})
        await asyncio.sleep(0.3)
        complete_statefulset(kmock, "shop", "inventory")

    task = asyncio.create_task(controller())
    await k8s.decide(thread.approval_ids[0], BOB, "approve", thread)
    await task
    assert "rollout complete: statefulset 'inventory'" in thread.text
    polled = [r for r in kmock if r.method.value == "GET" and r.url.path == STS_PATH]
    assert len(polled) >= 3
    assert not [r for r in kmock if "/deployments/inventory" in r.url.path]


# -- scale --------------------------------------------------------------------------------------


async def test_scale_a_statefulset_patches_its_scale_subresource(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    thread = await say(k8s, "scale the inventory statefulset to 5 in shop")
    [approval_id] = thread.approval_ids
    assert "scale statefulset shop/inventory: 3 -> 5 replicas (3 ready now)" in thread.text
    [dry] = patches(kmock, dry_run=True)
    assert dry.url.path == f"{STS_PATH}/scale"
    assert dry.headers["Content-Type"] == "application/merge-patch+json"
    task = asyncio.create_task(later(complete_statefulset, kmock, "inventory"))
    await k8s.decide(approval_id, CAROL, "approve", thread)
    await task
    [sent] = patches(kmock, dry_run=False)
    assert (sent.url.path, dict(sent.params)) == (f"{STS_PATH}/scale", {})
    assert sent.headers["Content-Type"] == "application/merge-patch+json"
    assert sent.data == {"spec": {"replicas": 5}}
    assert live(kmock, STATEFULSETS, "inventory")["spec"]["replicas"] == 5
    assert "statefulset shop/inventory scaled from 3 to 5 replicas" in thread.text


async def test_scale_of_a_statefulset_keeps_the_max_replicas_check(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    kubernetes(k8s.services).config.max_replicas = 4
    engine = scripted(
        k8s, "k8s.scale", kind="statefulset", name="inventory", namespace="shop", replicas=5
    )
    thread = await say(engine, "x")
    assert "5 replicas is above the configured maximum of 4" in thread.text
    assert thread.approval_ids == [] and not [r for r in kmock if r.method.value == "PATCH"]


async def test_scale_refuses_a_daemonset_clearly(k8s: Engine, kmock: KubernetesEmulator) -> None:
    thread = await say(k8s, "scale the log-agent daemonset to 3 in shop")
    assert "k8s.scale kind=daemonset name=log-agent namespace=shop replicas=3" in thread.text
    assert (
        "daemonset shop/log-agent cannot be scaled: a daemonset runs one pod on each eligible node"
        in thread.text
    )
    assert thread.approval_ids == [] and not [r for r in kmock if r.method.value == "PATCH"]


# -- rollback (rollout undo) -------------------------------------------------------------------


async def test_rollback_of_a_statefulset_sends_the_revisions_data(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    thread = await say(k8s, "roll back the inventory statefulset in shop")
    [approval_id] = thread.approval_ids
    # revision 7 is owned but not controlled, ledger-r5 is another statefulset's: neither counts
    assert (
        "roll back statefulset shop/inventory from revision 2 to 1 (deploy shop/inventory:1.1)"
        in thread.text
    )
    assert "images: app=shop/inventory:1.2 -> app=shop/inventory:1.1" in thread.text
    listed = [r for r in kmock if r.url.path == "/apis/apps/v1/namespaces/shop/controllerrevisions"]
    assert listed and listed[0].params["labelSelector"] == "app=inventory"
    [dry] = patches(kmock, dry_run=True)
    assert dry.url.path == STS_PATH
    assert dry.headers["Content-Type"] == "application/strategic-merge-patch+json"
    assert await k8s.decide(approval_id, BOB, "approve", thread)
    assert patches(kmock, dry_run=False) == []  # two approvers
    task = asyncio.create_task(later(complete_statefulset, kmock, "inventory"))
    await k8s.decide(approval_id, CAROL, "approve", thread)
    await task
    [sent] = patches(kmock, dry_run=False)
    assert (sent.url.path, dict(sent.params)) == (STS_PATH, {})
    assert sent.headers["Content-Type"] == "application/strategic-merge-patch+json"
    revision = kmock.objects[kmock.resource(*CONTROLLERREVISIONS), "shop", "inventory-r1"].raw
    assert sent.data == revision["data"]  # as kubectl: the revision's data, unchanged
    assert sent.data["spec"]["template"]["$patch"] == "replace"
    assert "rolled back statefulset shop/inventory from revision 2 to 1" in thread.text


async def test_rollback_of_a_daemonset_to_a_revision(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    thread = await say(k8s, "roll back the log-agent daemonset in shop to revision 1")
    assert "roll back daemonset shop/log-agent from revision 3 to 1" in thread.text
    assert "images: app=shop/log-agent:1.3 -> app=shop/log-agent:1.1" in thread.text
    [dry] = patches(kmock, dry_run=True)
    revision = kmock.objects[kmock.resource(*CONTROLLERREVISIONS), "shop", "log-agent-r1"].raw
    assert dry.url.path == DS_PATH and dry.data == revision["data"]
    previous = await say(
        scripted(k8s, "k8s.rollback", kind="daemonset", name="log-agent", namespace="shop"), "x"
    )
    assert "from revision 3 to 2" in previous.text


async def test_rollback_refusals_of_controller_revisions(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    same = await say(
        scripted(
            k8s, "k8s.rollback", kind="daemonset", name="log-agent", namespace="shop", revision=3
        ),
        "x",
    )
    assert (
        "skipped rollback: the current template of daemonset log-agent already matches revision 3"
        in same.text
    )
    unknown = await say(
        scripted(
            k8s, "k8s.rollback", kind="statefulset", name="inventory", namespace="shop", revision=7
        ),
        "x",
    )
    assert "statefulset inventory has no revision 7 (revisions: 1, 2)" in unknown.text
    alone = await say(
        scripted(k8s, "k8s.rollback", kind="statefulset", name="ledger", namespace="shop"), "x"
    )
    assert "statefulset ledger has no previous revision to roll back to" in alone.text
    assert same.approval_ids == unknown.approval_ids == alone.approval_ids == []
    assert not [r for r in kmock if r.method.value == "PATCH"]


# -- reads --------------------------------------------------------------------------------------


async def test_rollout_status_of_a_statefulset_and_a_daemonset(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    done = await say(k8s, "rollout status of the inventory statefulset in shop")
    assert (
        "statefulset 'inventory': partitioned roll out complete: 3 new pods have been updated"
        in done.text
    )
    kmock.objects[kmock.resource(*STATEFULSETS), "shop", "inventory"].patch(
        {"status": {"readyReplicas": 1}}
    )
    waiting = await say(
        scripted(k8s, "k8s.rollout.status", kind="statefulset", name="inventory", namespace="shop"),
        "x",
    )
    assert "Waiting for 2 pods of statefulset 'inventory' to be ready" in waiting.text
    kmock.objects[kmock.resource(*DAEMONSETS), "shop", "log-agent"].patch(
        {"status": {"updatedNumberScheduled": 1}}
    )
    ds = await say(k8s, "rollout status of the log-agent daemonset in shop")
    assert (
        "Waiting for daemon set 'log-agent' rollout to finish: 1 out of 3 new pods have been updated"
        in ds.text
    )


async def test_rollout_history_of_a_statefulset_lists_its_controller_revisions(
    k8s: Engine,
) -> None:
    history = await say(k8s, "show the rollout history of sts/inventory in shop")
    assert "2 (current) | deploy shop/inventory:1.2 | app=shop/inventory:1.2" in history.text
    assert "1 | deploy shop/inventory:1.1 | app=shop/inventory:1.1" in history.text
    assert "shop/inventory:0.9" not in history.text  # not controlled by it
    assert "2 revisions of statefulset shop/inventory" in history.text
    ds = await say(
        scripted(k8s, "k8s.rollout.history", kind="daemonset", name="log-agent", namespace="shop"),
        "x",
    )
    assert "3 (current) | <none> | app=shop/log-agent:1.3" in ds.text


# -- a kind the name is not -------------------------------------------------------------------


async def test_a_statefulset_that_is_a_deployment_gets_a_clear_error(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    thread = await say(
        scripted(k8s, "k8s.restart", kind="statefulset", name="checkout", namespace="shop"), "x"
    )
    assert (
        "There is no statefulset checkout in namespace shop: checkout is a deployment "
        "(ask for deployment checkout, or leave the kind out)." in thread.text
    )
    assert thread.approval_ids == [] and not [r for r in kmock if r.method.value == "PATCH"]
    reverse = await say(
        scripted(k8s, "k8s.rollout.status", name="inventory", namespace="shop"), "x"
    )
    assert (
        "There is no deployment inventory in namespace shop: inventory is a statefulset "
        "(ask for statefulset inventory)." in reverse.text
    )
    typo = await say(
        scripted(k8s, "k8s.rollout.history", kind="statefulset", name="inventry", namespace="shop"),
        "x",
    )
    assert (
        "There is no statefulset inventry in namespace shop; did you mean inventory?" in typo.text
    )
    none = await say(
        scripted(k8s, "k8s.rollout.status", kind="daemonset", name="agent", namespace="staging"),
        "x",
    )
    assert "There is no daemonset agent in namespace staging." in none.text
    assert live(kmock, DEPLOYMENTS, "checkout")["metadata"]["generation"] == 4


# -- grounding and the backend ----------------------------------------------------------------


async def test_inventory_lists_statefulsets_and_daemonsets(k8s: Engine) -> None:
    inventory = await kubernetes(k8s.services).inventory()
    assert inventory["statefulset"] == {"inventory", "ledger"}
    assert inventory["statefulset/shop"] == {"inventory", "ledger"}
    assert inventory["daemonset"] == inventory["daemonset/shop"] == {"log-agent"}
    assert "inventory" not in inventory["deployment"]
    # a name said without its namespace finds the one namespace that has it
    thread = await say(k8s, "restart the inventory statefulset")
    assert "k8s.restart kind=statefulset name=inventory namespace=shop" in thread.text


async def test_inventory_without_the_right_to_list_statefulsets_still_grounds_deployments(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    forbidden = {"kind": "Status", "code": 403, "reason": "Forbidden", "message": "forbidden"}
    kmock["get /apis/apps/v1/statefulsets"] << 403 << forbidden
    inventory = await kubernetes(k8s.services).inventory()
    assert "statefulset" not in inventory and inventory["daemonset"] == {"log-agent"}
    assert inventory["deployment"] == {"checkout", "payments", "cart"}


# -- the pure readers (kubectl's status viewers and history helpers) -------------------------


def _sts(**status: Any) -> dict[str, Any]:
    obj = statefulset("db", "data")
    obj["status"].update(status)
    return obj


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (_sts(), (True, False, "statefulset 'db': partitioned roll out complete: 3 new pods")),
        (_sts(observedGeneration=1), (False, False, "Waiting for statefulset 'db' spec update")),
        (_sts(observedGeneration=0), (False, False, "Waiting for statefulset 'db' spec update")),
        (
            _sts(readyReplicas=2),
            (False, False, "Waiting for 1 pods of statefulset 'db' to be ready"),
        ),
        (
            _sts(updatedReplicas=1),
            (
                False,
                False,
                "Waiting for partitioned roll out of statefulset 'db' to finish: 1 out of 3",
            ),
        ),
    ],
)
def test_statefulset_status_follows_kubectl(obj: dict[str, Any], expected: tuple[Any, ...]) -> None:
    done, failed, message = statefulset_status(obj)
    assert (done, failed) == expected[:2] and message.startswith(expected[2]), message


def test_statefulset_status_without_partition_and_on_delete() -> None:
    obj = _sts(currentRevision="db-r1", updateRevision="db-r2", updatedReplicas=1)
    del obj["spec"]["updateStrategy"]["rollingUpdate"]
    assert statefulset_status(obj) == (
        False,
        False,
        "waiting for statefulset 'db' rolling update to complete 1 pods at revision db-r2...",
    )
    obj["status"]["currentRevision"] = "db-r2"
    assert statefulset_status(obj)[:2] == (True, False)
    obj["spec"]["updateStrategy"] = {"type": "OnDelete"}
    done, _, message = statefulset_status(obj)
    assert done and "only available for RollingUpdate strategy type" in message


def test_daemonset_status_follows_kubectl() -> None:
    obj = daemonset("agent", "logging")
    assert daemonset_status(obj) == (True, False, "daemon set 'agent' successfully rolled out")
    obj["status"]["numberAvailable"] = 2
    assert daemonset_status(obj)[2] == (
        "Waiting for daemon set 'agent' rollout to finish: 2 of 3 updated pods are available..."
    )
    obj["metadata"]["generation"] = 3
    assert (
        daemonset_status(obj)[2] == "Waiting for daemon set 'agent' spec update to be observed..."
    )


def test_controller_revisions_kubectl_would_use() -> None:
    sts = statefulset("db", "data", revision=3)
    mine = [controller_revision(sts, n, f"db:{n}") for n in (1, 3, 2)]
    adopted = controller_revision(sts, 9, "db:9")
    adopted["metadata"]["ownerReferences"][0]["controller"] = False
    relabelled = controller_revision(sts, 8, "db:8")
    relabelled["metadata"]["labels"] = {"app": "other"}
    found = controlled_revisions(sts, [*mine, adopted, relabelled])
    assert sorted(found) == [1, 2, 3]
    assert find_history("db", "statefulset", found) == 2  # the second highest
    assert find_history("db", "statefulset", found, 1) == 1
    with pytest.raises(
        ValueError, match="statefulset db has no revision 9 \\(revisions: 1, 2, 3\\)"
    ):
        find_history("db", "statefulset", found, 9)
    with pytest.raises(ValueError, match="no previous revision"):
        find_history("db", "statefulset", {3: found[3]})
    assert revision_template(found[1])["spec"]["containers"][0]["image"] == "db:1"
    assert "$patch" not in revision_template(found[1])
    assert current_revision(sts, found) == 3  # status.updateRevision names db-r3
    del sts["status"]["updateRevision"]
    sts["spec"]["template"] = revision_template(found[2])
    assert current_revision(sts, found) == 2  # the revision whose template is live


async def test_a_paused_deployment_is_not_restarted(k8s: Engine, kmock: KubernetesEmulator) -> None:
    """As kubectl's defaultObjectRestarter: "can't restart paused deployment (run rollout
    resume first)"; a statefulset or daemonset has no pause."""
    kmock.objects[kmock.resource(*DEPLOYMENTS), "shop", "payments"].patch(
        {"spec": {"paused": True}}
    )
    thread = await say(k8s, "restart payments in shop")
    assert "can't restart paused deployment shop/payments (run rollout resume first)" in thread.text
    assert thread.approval_ids == [] and not [r for r in kmock if r.method.value == "PATCH"]
