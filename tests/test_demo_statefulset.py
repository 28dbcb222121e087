"""The demo cluster's statefulset ``redis`` (shop) driven by the real workload skills with
``kind: statefulset``: its controller keeps ControllerRevisions as the StatefulSet controller
does and replaces pods from the highest ordinal down, so restart, scale and rollback run
through approval and their rollouts complete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from opsbot.demo_cluster import (
    CONTROLLERREVISIONS,
    EVENTS,
    PODS,
    STATEFULSETS,
    DemoCluster,
    running,
)
from opsbot.engine import Engine
from opsbot.policy import Policy
from opsbot.services import build_services
from tests.conftest import make_settings
from tests.test_demo_cluster import BOB, CAROL, FAST, rows, say


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[DemoCluster]:
    async with running(tmp_path / "kubeconfig", timings=FAST) as started:
        yield started


@pytest.fixture
async def engine(
    cluster: DemoCluster, tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Engine]:
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


def redis(cluster: DemoCluster) -> dict[str, Any]:
    found = cluster.get(STATEFULSETS, "shop", "redis")
    assert found is not None
    return found


def pods(cluster: DemoCluster) -> dict[str, str]:
    """pod name -> image of redis's live pods."""
    return {
        p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
        for p in cluster.items(PODS, "shop")
        if p["metadata"]["labels"].get("app") == "redis"
        and not p["metadata"].get("deletionTimestamp")
    }


def controller_revisions(cluster: DemoCluster) -> dict[int, str]:
    """revision -> image of redis's ControllerRevisions."""
    return {
        r["revision"]: r["data"]["spec"]["template"]["spec"]["containers"][0]["image"]
        for r in cluster.items(CONTROLLERREVISIONS, "shop")
        if r["metadata"]["ownerReferences"][0]["uid"] == redis(cluster)["metadata"]["uid"]
    }


IMAGE = "docker.io/library/redis"


def test_the_seeded_statefulset_is_rolled_out_at_its_last_revision(cluster: DemoCluster) -> None:
    sts = redis(cluster)
    status = sts["status"]
    assert status["currentRevision"] == status["updateRevision"]
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (3, 3, 3)
    assert controller_revisions(cluster) == {1: f"{IMAGE}:7.2.4", 2: f"{IMAGE}:7.2.5"}
    assert pods(cluster) == {f"redis-{i}": f"{IMAGE}:7.2.5" for i in range(3)}
    [current] = [
        r
        for r in cluster.items(CONTROLLERREVISIONS, "shop")
        if r["metadata"]["name"] == status["updateRevision"]
    ]
    assert current["data"]["spec"]["template"]["$patch"] == "replace"


async def test_history_and_status_of_the_statefulset(engine: Engine) -> None:
    history = await say(engine, "show the rollout history of sts/redis in shop")
    cells = rows(history, ("2", "1"))
    assert cells[0][:3] == [
        "2 (current)",
        "redis 7.2.5: CVE-2024-31449 fix",
        f"redis={IMAGE}:7.2.5",
    ]
    assert cells[1][:3] == ["1", "redis 7.2.4", f"redis={IMAGE}:7.2.4"]
    status = await say(engine, "rollout status of the redis statefulset in shop")
    assert "statefulset 'redis': partitioned roll out complete: 3 new pods have been updated" in (
        status.text
    )


async def test_restart_replaces_the_pods_highest_ordinal_first(
    engine: Engine, cluster: DemoCluster
) -> None:
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.items(PODS, "shop")}
    thread = await say(engine, "restart the redis statefulset in shop")
    assert "rolling restart of statefulset shop/redis: 3 replicas" in thread.text
    outcome = await engine.decide(thread.approval_ids[0], BOB, "approve", thread)
    assert outcome.status.name == "APPROVED"
    assert "rollout complete: statefulset 'redis': partitioned roll out complete" in thread.text
    after = {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in cluster.items(PODS, "shop")
        if p["metadata"]["name"].startswith("redis-")
    }
    assert set(after) == {"redis-0", "redis-1", "redis-2"}
    assert all(after[name] != before[name] for name in after)  # every pod replaced
    assert sorted(controller_revisions(cluster)) == [1, 2, 3]  # the stamped template
    deletes = [  # in the order they were recorded
        e["message"]
        for e in cluster.items(EVENTS, "shop")
        if e["reason"] == "SuccessfulDelete" and e["involvedObject"]["name"] == "redis"
    ]
    assert deletes == [f"delete Pod redis-{i} in StatefulSet redis successful" for i in (2, 1, 0)]
    status = redis(cluster)["status"]
    assert status["currentRevision"] == status["updateRevision"]


async def test_rollback_goes_to_the_previous_revision_which_is_renumbered(
    engine: Engine, cluster: DemoCluster
) -> None:
    thread = await say(engine, "roll back the redis statefulset in shop")
    assert "roll back statefulset shop/redis from revision 2 to 1 (redis 7.2.4)" in thread.text
    assert f"images: redis={IMAGE}:7.2.5 -> redis={IMAGE}:7.2.4" in thread.text
    [approval_id] = thread.approval_ids
    await engine.decide(approval_id, BOB, "approve", thread)
    await engine.decide(approval_id, CAROL, "approve", thread)
    assert "rollout complete: statefulset 'redis'" in thread.text
    assert pods(cluster) == {f"redis-{i}": f"{IMAGE}:7.2.4" for i in range(3)}
    # the StatefulSet controller renumbers the live template's revision highest
    assert controller_revisions(cluster) == {2: f"{IMAGE}:7.2.5", 3: f"{IMAGE}:7.2.4"}
    again = await say(engine, "roll back the redis statefulset in shop")
    assert "from revision 3 to 2" in again.text


async def test_scale_the_statefulset_up_and_down(engine: Engine, cluster: DemoCluster) -> None:
    up = await say(engine, "scale the redis statefulset to 4 in shop")
    assert "scale statefulset shop/redis: 3 -> 4 replicas" in up.text
    await engine.decide(up.approval_ids[0], BOB, "approve", up)
    assert "rollout complete" in up.text and set(pods(cluster)) == {f"redis-{i}" for i in range(4)}
    down = await say(engine, "scale the redis statefulset to 2 in shop")
    await engine.decide(down.approval_ids[0], BOB, "approve", down)
    assert "rollout complete" in down.text
    for _ in range(40):  # the removed pods terminate, highest ordinal first
        if set(pods(cluster)) == {"redis-0", "redis-1"}:
            break
        await asyncio.sleep(0.05)
    assert set(pods(cluster)) == {"redis-0", "redis-1"}
    assert redis(cluster)["status"]["replicas"] == 2
