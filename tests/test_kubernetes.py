"""Kubernetes skills through the official ``kubernetes`` client against kmock.

Each write is asserted against the request ``kubectl`` sends for the same operation. The
reference was captured from kubectl v1.32.4 (Debian package ``kubectl`` 1:528.0.0-0) run
against a kmock server seeded with the same objects:

==========================================  ======  ==============================================================  =====================================  ===============================================
kubectl command                             verb    path and query                                                  Content-Type                           body
==========================================  ======  ==============================================================  =====================================  ===============================================
rollout restart deployment/checkout -n shop GET     /apis/apps/v1/namespaces/shop/deployments/checkout
\\                                          PATCH   /apis/apps/v1/namespaces/shop/deployments/checkout              application/strategic-merge-patch+json  {"spec":{"template":{"metadata":{"annotations":
                                                    ?fieldManager=kubectl-rollout                                                                          {"kubectl.kubernetes.io/restartedAt":"<RFC3339>"}}}}}
scale deployment/checkout --replicas=5      GET     /apis/apps/v1/namespaces/shop/deployments/checkout
\\                                          PATCH   /apis/apps/v1/namespaces/shop/deployments/checkout/scale        application/merge-patch+json           {"spec":{"replicas":5}}
scale ... --dry-run=server                  PATCH   .../deployments/checkout/scale?dryRun=All                       application/merge-patch+json           {"spec":{"replicas":4}}
rollout undo deployment/checkout            GET     /apis/apps/v1/namespaces/shop/deployments/checkout (twice)
--to-revision=2                             GET     /apis/apps/v1/namespaces/shop/replicasets?labelSelector=app%3Dcheckout
\\                                          PATCH   /apis/apps/v1/namespaces/shop/deployments/checkout              application/json-patch+json            [{"op":"replace","path":"/spec/template","value":<rev 2
                                                                                                                                                           template without pod-template-hash>},{"op":"replace",
                                                                                                                                                           "path":"/metadata/annotations","value":{...}}]
--as alice@example.com --as-group sre get   GET     /apis/apps/v1/namespaces/shop/deployments/checkout  headers Impersonate-User: alice@example.com, Impersonate-Group: sre
==========================================  ======  ==============================================================  =====================================  ===============================================

Differences, deliberately: kubectl's rollback template carries Go's zero values
(``"creationTimestamp": null``, ``"resources": {}``) that opsbot, sending the ReplicaSet's JSON as
the server stored it, does not; and opsbot adds the ``dryRun=All`` variant of each write for
its approval preview.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kmock import KubernetesEmulator

from opsbot.approvals import State, VoteStatus
from opsbot.audit import AuditEvent
from opsbot.engine import Engine
from opsbot.model import Actor, Invocation, Plan, Request, Run
from opsbot.policy import Policy
from opsbot.services import Services, build_services
from opsbot.skills.base import Impersonation
from opsbot.skills.kubernetes import Kubernetes
from tests.conftest import ROOT, Thread, make_settings
from tests.fakes.kube import (
    DEPLOYMENTS,
    ClusterEmulator,
    complete_rollout,
    deployment,
    seed,
    write_kubeconfig,
)

pytestmark = pytest.mark.kmock(cls=ClusterEmulator)

ALICE, BOB, CAROL, EVE = (Actor(id=f"shell:{n}") for n in ("alice", "bob", "carol", "eve"))
DEP_PATH = "/apis/apps/v1/namespaces/shop/deployments/checkout"


def policy_with_identities(tmp_path: Path, identities: str = "{}") -> Policy:
    text = (
        (ROOT / "policies" / "default.yaml")
        .read_text()
        .replace("identities: {}", f"identities: {identities}")
    )
    (tmp_path / "policy.yaml").write_text(text)
    return Policy.load(tmp_path / "policy.yaml")


async def make_engine(
    kmock: KubernetesEmulator, tmp_path: Path, policy: Policy, **settings: Any
) -> Services:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    config = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'k.db'}",
        tmp_path,
        rollout_poll=0.05,
        rollout_timeout=5.0,
        **settings,
    )
    return await build_services(
        config, policy=policy, backends={"kubernetes": {"kubeconfig": kubeconfig}}
    )


def kubernetes(services: Services) -> Kubernetes:
    backend = services.registry.backend("kubernetes")
    assert isinstance(backend, Kubernetes)
    return backend


@pytest.fixture
async def k8s(kmock: KubernetesEmulator, tmp_path: Path) -> AsyncIterator[Engine]:
    seed(kmock)
    services = await make_engine(kmock, tmp_path, policy_with_identities(tmp_path))
    yield Engine(services)
    await services.close()


async def say(engine: Engine, text: str, actor: Actor = ALICE) -> Thread:
    thread = Thread()
    await engine.handle(Request(actor=actor, channel="ops", text=text), thread)
    return thread


def patches(kmock: KubernetesEmulator, *, dry_run: bool) -> list[Any]:
    return [
        r
        for r in kmock
        if r.method.value == "PATCH" and (r.params.get("dryRun") == "All") == dry_run
    ]


async def controller(
    kmock: KubernetesEmulator, namespace: str, name: str, delay: float = 0.3
) -> None:
    await asyncio.sleep(delay)
    complete_rollout(kmock, namespace, name)


# -- writes, each through approval, matched to kubectl --------------------------------------


async def test_restart_is_approved_sent_once_and_followed(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    thread = await say(k8s, "restart checkout in shop")
    [approval_id] = thread.approval_ids
    assert (
        "rolling restart of deployment shop/checkout: 2 replicas, images app=shop/checkout:1.3"
        in thread.text
    )
    assert "server-side dry run (dryRun=All): accepted" in thread.text
    [dry] = patches(kmock, dry_run=True)
    assert dry.url.path == DEP_PATH and dry.params["fieldManager"] == "kubectl-rollout"
    assert patches(kmock, dry_run=False) == []
    assert (
        kmock.objects[kmock.resource(*DEPLOYMENTS), "shop", "checkout"].raw["metadata"][
            "generation"
        ]
        == 4
    )

    task = asyncio.create_task(controller(kmock, "shop", "checkout"))
    outcome = await k8s.decide(approval_id, BOB, "approve", thread)
    await task
    assert outcome.status is VoteStatus.APPROVED
    [sent] = patches(kmock, dry_run=False)
    assert sent.url.path == DEP_PATH and dict(sent.params) == {"fieldManager": "kubectl-rollout"}
    assert sent.headers["Content-Type"] == "application/strategic-merge-patch+json"
    restarted_at = sent.data["spec"]["template"]["metadata"]["annotations"][
        "kubectl.kubernetes.io/restartedAt"
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", restarted_at)
    assert sent.data == {
        "spec": {
            "template": {
                "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": restarted_at}}
            }
        }
    }
    assert "rollout complete: deployment 'checkout' successfully rolled out" in thread.text
    events = [r.event for r in await k8s.services.audit.search(skill="k8s.restart")]
    for step in (
        AuditEvent.PLAN,
        AuditEvent.POLICY,
        AuditEvent.APPROVAL_REQUESTED,
        AuditEvent.APPROVAL_APPROVED,
        AuditEvent.EXECUTION,
        AuditEvent.RESULT,
        AuditEvent.FOLLOW_UP,
    ):
        assert step in events
    # a second click changes nothing
    assert (await k8s.decide(approval_id, CAROL, "approve", thread)).status is VoteStatus.DECIDED
    assert len(patches(kmock, dry_run=False)) == 1


async def test_scale_patches_the_scale_subresource(k8s: Engine, kmock: KubernetesEmulator) -> None:
    thread = await say(k8s, "scale checkout to 5 replicas in shop")
    [approval_id] = thread.approval_ids
    assert "scale deployment shop/checkout: 2 -> 5 replicas (2 ready now)" in thread.text
    [dry] = patches(kmock, dry_run=True)
    assert (
        dry.url.path == f"{DEP_PATH}/scale"
        and dry.headers["Content-Type"] == "application/merge-patch+json"
    )
    assert (
        kmock.objects[kmock.resource(*DEPLOYMENTS), "shop", "checkout"].raw["spec"]["replicas"] == 2
    )

    task = asyncio.create_task(controller(kmock, "shop", "checkout"))
    await k8s.decide(approval_id, CAROL, "approve", thread)
    await task
    [sent] = patches(kmock, dry_run=False)
    assert (sent.url.path, dict(sent.params)) == (f"{DEP_PATH}/scale", {})
    assert sent.headers["Content-Type"] == "application/merge-patch+json"
    assert sent.data == {"spec": {"replicas": 5}}
    assert (
        kmock.objects[kmock.resource(*DEPLOYMENTS), "shop", "checkout"].raw["spec"]["replicas"] == 5
    )
    assert "scaled from 2 to 5 replicas" in thread.text and "rollout complete" in thread.text


async def test_rollback_needs_two_approvers_and_sends_kubectls_json_patch(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    thread = await say(k8s, "roll back checkout in shop")
    [approval_id] = thread.approval_ids
    assert (
        "roll back deployment shop/checkout from revision 3 to 2 (deploy shop/checkout:1.2)"
        in thread.text
    )
    assert "images: app=shop/checkout:1.3 -> app=shop/checkout:1.2" in thread.text
    assert (await k8s.decide(approval_id, BOB, "approve", thread)).status is VoteStatus.RECORDED
    assert patches(kmock, dry_run=False) == []
    task = asyncio.create_task(controller(kmock, "shop", "checkout"))
    assert (await k8s.decide(approval_id, CAROL, "approve", thread)).status is VoteStatus.APPROVED
    await task
    [sent] = patches(kmock, dry_run=False)
    assert (
        sent.url.path == DEP_PATH and sent.headers["Content-Type"] == "application/json-patch+json"
    )
    [template_op, annotations_op] = sent.data
    assert (template_op["op"], template_op["path"]) == ("replace", "/spec/template")
    assert template_op["value"]["metadata"]["labels"] == {
        "app": "checkout"
    }  # pod-template-hash removed
    assert template_op["value"]["spec"]["containers"][0]["image"] == "shop/checkout:1.2"
    assert annotations_op == {
        "op": "replace",
        "path": "/metadata/annotations",
        "value": {
            "deployment.kubernetes.io/revision": "3",
            "kubernetes.io/change-cause": "deploy shop/checkout:1.2",
        },
    }
    live = kmock.objects[kmock.resource(*DEPLOYMENTS), "shop", "checkout"].raw
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "shop/checkout:1.2"
    listed = [r for r in kmock if r.url.path.endswith("/replicasets")]
    assert listed and listed[0].params["labelSelector"] == "app=checkout"
    approval = await k8s.services.approvals.get(approval_id)
    assert approval is not None and approval.state is State.EXECUTED


async def test_rollout_that_never_completes_is_reported(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    seed(kmock)
    services = await make_engine(
        kmock,
        tmp_path,
        policy_with_identities(tmp_path),
    )
    services.settings.rollout_timeout = 0.3
    try:
        engine = Engine(services)
        thread = await say(engine, "restart cart in staging")
        await engine.decide(thread.approval_ids[0], BOB, "approve", thread)
        assert (
            "rollout not complete after 0.3s: Waiting for deployment 'cart' spec update to be observed"
            in thread.text
        )
    finally:
        await services.close()


# -- policy and RBAC -----------------------------------------------------------------------


async def test_read_only_identity_is_denied_by_policy(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    thread = await say(k8s, "restart checkout in shop", actor=EVE)
    assert (
        "no policy rule allows shell:eve to call k8s.restart" in thread.text
        or "Refused" in thread.text
    )
    assert not [r for r in kmock if r.method.value == "PATCH"]


async def test_namespace_scope_applies_to_writes(k8s: Engine, kmock: KubernetesEmulator) -> None:
    kmock.objects[kmock.resource(*DEPLOYMENTS), "kube-system", "coredns"] = deployment(
        "coredns", "kube-system"
    )
    thread = await say(k8s, "restart coredns in kube-system")
    assert (
        "no policy rule allows shell:alice to call k8s.restart in namespace kube-system"
        in thread.text
    )
    assert not patches(kmock, dry_run=True) and not patches(kmock, dry_run=False)


async def test_mapped_identity_is_impersonated_and_rbac_denial_is_reported(
    kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    seed(kmock)
    policy = policy_with_identities(
        tmp_path,
        "{shell:alice: {user: alice@example.com, groups: [sre, oncall]}, shell:bob: bob@example.com}",
    )
    services = await make_engine(kmock, tmp_path, policy)
    (
        kmock["patch", kmock.resource(*DEPLOYMENTS)]
        << 403
        << {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "Forbidden",
            "code": 403,
            "message": 'deployments.apps "checkout" is forbidden: User "alice@example.com" cannot patch resource',
        }
    )
    try:
        engine = Engine(services)
        thread = await say(engine, "restart checkout in shop")
        assert (
            "Kubernetes RBAC denied patch deployment shop/checkout for alice@example.com"
            in thread.text
        )
        assert thread.approval_ids == []  # a write the cluster forbids is not put up for approval
        get = next(r for r in kmock if r.method.value == "GET" and r.url.path == DEP_PATH)
        raw = get._raw_request
        assert raw is not None
        assert raw.headers.getall("Impersonate-User") == ["alice@example.com"]
        assert raw.headers.getall("Impersonate-Group") == ["sre", "oncall"]
        reads = await say(engine, "show pods in shop", actor=BOB)
        assert "checkout-bbb-2" in reads.text
        bob_get = [r for r in kmock if r.url.path == "/api/v1/namespaces/shop/pods"][-1]
        assert bob_get.headers["Impersonate-User"] == "bob@example.com"
        eve = await say(engine, "show pods in shop", actor=EVE)
        assert "checkout-bbb-2" in eve.text
        eve_get = [r for r in kmock if r.url.path == "/api/v1/namespaces/shop/pods"][-1]
        assert "Impersonate-User" not in eve_get.headers  # unmapped: opsbot's own credentials
        assert (await services.audit.verify()).ok
    finally:
        await services.close()


# -- reads ---------------------------------------------------------------------------------


async def test_pods_troubled_first(k8s: Engine) -> None:
    thread = await say(k8s, "list the pods of checkout in namespace shop")
    lines = [line for line in thread.text.splitlines() if line.startswith("checkout-")]
    assert lines[0].startswith("checkout-bbb-2 | CrashLoopBackOff | 0/1 | 7")
    assert lines[1].startswith("checkout-bbb-1 | Running | 1/1 | 0")
    assert "payments" not in "\n".join(lines)
    assert "2 pods for checkout in shop, 1 not ready" in thread.text


async def test_describe_deployment_with_events(k8s: Engine) -> None:
    thread = await say(k8s, "describe deployment checkout -n shop")
    assert "replicas | 2 desired, 2 updated, 2 ready, 2 available" in thread.text
    assert "images | app=shop/checkout:1.3" in thread.text and "revision | 3" in thread.text
    assert "ScalingReplicaSet" in thread.text
    pod_thread = await say(k8s, "describe pod checkout-bbb-2 in shop")
    assert "status | CrashLoopBackOff" in pod_thread.text and "restarts | 7" in pod_thread.text


async def test_events_warnings_first_and_since(k8s: Engine) -> None:
    thread = await say(k8s, "events in shop in the last 30m")
    rows = [line for line in thread.text.splitlines() if line.startswith(("pod/", "deployment/"))]
    assert rows[0].startswith("pod/checkout-bbb-2") and "Warning | BackOff" in rows[0]
    assert len(rows) == 2  # the 5h old event is outside the window
    assert "2 events (1 warnings)" in thread.text


async def test_logs_of_a_deployment_are_bounded_and_redacted(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    (
        kmock["get /api/v1/namespaces/shop/pods/checkout-bbb-2/log"]
        << b"boot\npassword=hunter2\nerror: db down\n"
    )
    kmock["get /api/v1/namespaces/shop/pods/checkout-bbb-1/log"] << b"ok\n"
    thread = await say(k8s, "last 200 lines of logs from checkout, namespace shop")
    assert (
        "error: db down" in thread.text
        and "hunter2" not in thread.text
        and "[REDACTED]" in thread.text
    )
    log_requests = [r for r in kmock if r.url.path.endswith("/log")]
    assert {r.params["tailLines"] for r in log_requests} == {"200"}
    assert log_requests[0].url.path.endswith("checkout-bbb-2/log")  # the troubled pod first


async def test_rollout_status_and_history(k8s: Engine, kmock: KubernetesEmulator) -> None:
    status = await say(k8s, "is the checkout rollout done in shop?")
    assert "deployment 'checkout' successfully rolled out" in status.text
    kmock.objects[kmock.resource(*DEPLOYMENTS), "shop", "checkout"].patch(
        {"status": {"updatedReplicas": 1}}
    )
    waiting = await say(k8s, "rollout status checkout -n shop")
    assert "1 out of 2 new replicas have been updated" in waiting.text
    history = await say(k8s, "show the rollout history of checkout in shop")
    assert "3 (current) | deploy shop/checkout:1.3 | app=shop/checkout:1.3" in history.text
    assert "2 | deploy shop/checkout:1.2 | app=shop/checkout:1.2" in history.text


# -- grounding -----------------------------------------------------------------------------


async def test_names_and_namespaces_are_grounded_in_the_cluster(k8s: Engine) -> None:
    typo = await say(k8s, "how many pods does chekout have in shop")
    assert "k8s.pods namespace=shop name=checkout" in typo.text
    inferred = await say(k8s, "roll back payments")  # payments exists only in shop
    assert "k8s.rollback name=payments namespace=shop" in inferred.text
    ambiguous = await say(k8s, "restart checkout")
    assert "checkout exists in several namespaces: shop, staging. Which one?" in ambiguous.text
    assert ambiguous.approval_ids == []


# -- the backend ---------------------------------------------------------------------------


async def test_backend_health_inventory_and_one_client_per_identity(
    kmock: KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    seed(kmock)
    kmock["/version/"] << {"major": "1", "minor": "32", "gitVersion": "v1.32.4"}
    services = await make_engine(kmock, tmp_path, policy_with_identities(tmp_path))
    try:
        backend = kubernetes(services)
        health = await backend.health()
        assert (health.ok, health.version) == (True, "v1.32.4")
        assert await backend.inventory() == {
            "namespace": {"shop", "staging"},
            "deployment": {"checkout", "payments", "cart"},
            "deployment/shop": {"checkout", "payments"},
            "deployment/staging": {"checkout", "cart"},
            "statefulset": set(),  # listed: the shop has none (tests/test_k8s_workloads.py)
            "daemonset": set(),
        }
        alice = Impersonation("alice@example.com", ("sre",))
        assert await backend.api(alice) is await backend.api(alice)
        assert await backend.api(alice) is not await backend.api()
        backend.config.kubeconfig = tmp_path / "nope"
        assert backend.missing() == []  # checked once, until the backend is closed
        await backend.aclose()
        assert backend.missing() == ["KUBECONFIG"]
        assert (await backend.health()).missing == ("KUBECONFIG",)
    finally:
        await services.close()


# -- bad input -----------------------------------------------------------------------------


async def test_unknown_deployment_and_namespace(k8s: Engine, kmock: KubernetesEmulator) -> None:
    thread = await say(k8s, "restart chckout in shop", actor=ALICE)  # grounding corrects this one
    assert "name=checkout" in thread.text
    scripted = Engine(
        k8s.services,
        Scripted(Invocation(skill="k8s.restart", args={"name": "chekout", "namespace": "shop"})),
    )
    wrong = await say(scripted, "x")
    assert "There is no deployment chekout in namespace shop; did you mean checkout?" in wrong.text
    assert wrong.approval_ids == []
    scripted = Engine(
        k8s.services,
        Scripted(
            Invocation(skill="k8s.rollout.status", args={"name": "cart", "namespace": "stagin"})
        ),
    )
    assert (
        "Namespace stagin does not exist; did you mean staging?" in (await say(scripted, "x")).text
    )
    assert not patches(kmock, dry_run=False)


class Scripted:
    name = "scripted"

    def __init__(self, invocation: Invocation) -> None:
        self.invocation = invocation

    async def plan(self, request: Request, catalog: Any, tools: Any = None) -> Plan:
        return Run(invocations=[self.invocation], planner="scripted")

    async def explain(self, request: Request, withheld: Any) -> str | None:
        return None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            {"name": "checkout", "namespace": "shop", "replicas": -1},
            "Invalid arguments for k8s.scale: replicas",
        ),
        (
            {"name": "checkout", "namespace": "shop", "replicas": 500},
            "above the configured maximum of 50",
        ),
    ],
)
async def test_bad_replicas(
    k8s: Engine, kmock: KubernetesEmulator, args: dict[str, Any], expected: str
) -> None:
    thread = await say(
        Engine(k8s.services, Scripted(Invocation(skill="k8s.scale", args=args))), "x"
    )
    assert expected in thread.text and thread.approval_ids == []
    assert not patches(kmock, dry_run=False)


async def test_policy_limits_replicas(kmock: KubernetesEmulator, tmp_path: Path) -> None:
    seed(kmock)
    text = (
        (ROOT / "policies" / "default.yaml")
        .read_text()
        .replace(
            "    namespaces: [shop, staging]\n    effect: approve\n    approvers: [group:oncall]",
            "    namespaces: [shop, staging]\n    effect: approve\n    limits: {replicas: 10}\n    approvers: [group:oncall]",
            1,
        )
    )
    (tmp_path / "p.yaml").write_text(text)
    services = await make_engine(kmock, tmp_path, Policy.load(tmp_path / "p.yaml"))
    try:
        thread = await say(Engine(services), "scale checkout to 12 in shop")
        assert (
            "replicas=12 is above the limit 10 of rule" in thread.text and thread.approval_ids == []
        )
    finally:
        await services.close()


async def test_rollback_without_previous_or_unknown_revision(
    k8s: Engine, kmock: KubernetesEmulator
) -> None:
    none_before = await say(k8s, "roll back payments in shop")
    assert "deployment payments has no previous revision to roll back to" in none_before.text
    unknown = await say(k8s, "rollback checkout in shop to revision 9")
    assert "deployment checkout has no revision 9 (revisions: 2, 3)" in unknown.text
    assert none_before.approval_ids == [] and unknown.approval_ids == []
    assert not patches(kmock, dry_run=False)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, "the Kubernetes API answered 500 to get deployment shop/checkout"),
        (409, "conflict on get deployment shop/checkout"),
    ],
)
async def test_server_errors_are_reported(
    k8s: Engine, kmock: KubernetesEmulator, status: int, expected: str
) -> None:
    kmock[f"get {DEP_PATH}"] << status << {"kind": "Status", "code": status, "message": "boom"}
    thread = await say(k8s, "rollout status checkout -n shop")
    assert expected in thread.text
    after = await say(k8s, "help")
    assert "k8s.pods" in after.text


async def test_slow_and_unreachable_clusters(kmock: KubernetesEmulator, tmp_path: Path) -> None:
    seed(kmock)
    kmock[f"get {DEP_PATH}"] << (lambda: asyncio.sleep(3)) << {}
    services = await make_engine(
        kmock, tmp_path, policy_with_identities(tmp_path), backend_timeout=0.5
    )
    try:
        engine = Engine(services)
        slow = await say(engine, "rollout status checkout -n shop")
        assert "did not answer within 0.5s" in slow.text
        backend = kubernetes(services)
        await backend.aclose()  # the next call reads the kubeconfig again
        assert backend.config.kubeconfig is not None
        write_kubeconfig(backend.config.kubeconfig, "http://127.0.0.1:9")
        down = await say(engine, "rollout status checkout -n shop")
        assert "the Kubernetes API at http://127.0.0.1:9 is unreachable" in down.text
    finally:
        await services.close()


async def test_missing_or_invalid_kubeconfig(
    tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "nope"
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}", tmp_path)
    services = await build_services(
        settings, policy=policy, backends={"kubernetes": {"kubeconfig": missing}}
    )
    try:
        engine = Engine(services)
        thread = await say(engine, "show pods in shop")
        assert f"Kubernetes is not configured: no kubeconfig at {missing}" in thread.text
        (tmp_path / "bad").write_text("clusters: [oops\n")
        backend = kubernetes(services)
        backend.config.kubeconfig = tmp_path / "bad"
        await backend.aclose()
        invalid = await say(engine, "show pods in shop")
        assert f"invalid kubeconfig {tmp_path / 'bad'}" in invalid.text
        assert "k8s.pods" in (await say(engine, "help")).text  # and it keeps serving
    finally:
        await services.close()
