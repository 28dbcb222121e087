"""Leader election (opsbot.leader) in one process: the Lease elector against the fake Lease
API (tests/fakes/lease.py: 409 on a stale resourceVersion, as the API server), the advisory
lock elector on the real PostgreSQL, the Leadership runner (work started on election, stopped
when the leadership is lost or cannot be renewed), and the settings that refuse to start."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from opsbot.config import Settings
from opsbot.errors import ConfigError
from opsbot.leader import (
    AdvisoryLockElector,
    Leadership,
    LeaseElector,
    Solo,
    elector_for,
    lease_api,
    lock_key,
)
from opsbot.store import open_store
from tests.conftest import PG_URL, unavailable
from tests.fakes.kube import write_kubeconfig
from tests.fakes.lease import LeaseServer

ROOT = Path(__file__).resolve().parent.parent
LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Ask ``check`` every 50 ms until it says True; when it did (monotonic time)."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return time.monotonic()
        assert time.monotonic() < deadline, f"not within {within}s"
        await asyncio.sleep(0.05)


def elector(
    server: LeaseServer, tmp_path: Path, holder: str, duration: float = 1.0
) -> LeaseElector:
    kubeconfig = write_kubeconfig(tmp_path / f"kubeconfig-{holder}", server.url)
    return LeaseElector(
        lease_api(str(kubeconfig)),
        name="opsbot",
        namespace="default",
        duration=duration,
        timeout=2.0,
        holder=holder,
    )


async def test_the_fake_lease_api_refuses_a_stale_resource_version() -> None:
    """What the elector relies on, as the API server does it: create once (409
    AlreadyExists), replace with the resourceVersion read (a stale one is 409 Conflict),
    MicroTime checked."""
    async with LeaseServer() as server, httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get(f"{LEASES}/opsbot")).status_code == 404
        body = {"metadata": {"name": "opsbot"}, "spec": {"holderIdentity": "a"}}
        created = await client.post(LEASES, json=body)
        assert created.status_code == 201
        assert (await client.post(LEASES, json=body)).json()["reason"] == "AlreadyExists"
        version = created.json()["metadata"]["resourceVersion"]
        first = {"metadata": {"name": "opsbot", "resourceVersion": version}}
        spec = {"holderIdentity": "b", "renewTime": "2026-11-24T10:00:00.000000Z"}
        assert (await client.put(f"{LEASES}/opsbot", json={**first, "spec": spec})).is_success
        stale = await client.put(
            f"{LEASES}/opsbot", json={**first, "spec": {"holderIdentity": "c"}}
        )
        assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
        assert server.leases.holder("default", "opsbot") == "b"
        bad = {"holderIdentity": "d", "renewTime": "2026-11-24T10:00:00Z"}  # no microseconds
        assert (await client.put(f"{LEASES}/opsbot", json={"spec": bad})).status_code == 422


async def test_one_of_two_electors_leads_and_the_other_takes_over_when_it_stops(
    tmp_path: Path,
) -> None:
    async with LeaseServer() as server:
        a, b = elector(server, tmp_path, "a"), elector(server, tmp_path, "b")
        won = await asyncio.gather(a.try_lead(), b.try_lead())
        assert sorted(won) == [False, True]  # one create wins, the other gets 409
        leader, follower = (a, b) if won[0] else (b, a)
        assert server.leases.holder("default", "opsbot") == leader.identity
        assert server.leases.conflicts() or server.leases.calls[-1].status == 409
        # the leader renews; the follower waits while the record keeps changing
        for _ in range(4):
            assert await leader.try_lead() and not await follower.try_lead()
            seen = time.monotonic()  # when the follower last saw the record change
            await asyncio.sleep(0.3)
        # the leader stops renewing: the follower takes it once it has seen it unchanged for
        # the lease's duration (its own clock), not before
        took = await eventually(follower.try_lead, within=3)
        waited = took - seen
        assert 0.95 <= waited < 1.4, waited
        lease = server.leases.objects[("default", "opsbot")]["spec"]
        assert lease["holderIdentity"] == follower.identity and lease["leaseTransitions"] == 1
        assert not await leader.try_lead()  # the old leader sees it is held
        # a release empties the holder: the other takes it at its next try
        await follower.release()
        assert server.leases.holder("default", "opsbot") == ""
        assert await leader.try_lead()
        for e in (a, b):
            await e.close()


async def test_two_electors_racing_on_a_replace_both_read_one_wins(tmp_path: Path) -> None:
    """Both read an expired Lease and write themselves in with the same resourceVersion: the
    API server takes the first and refuses the second with 409."""
    async with LeaseServer() as server:
        old = elector(server, tmp_path, "old")
        assert await old.try_lead()
        contenders = [elector(server, tmp_path, f"c{i}") for i in range(5)]
        for c in contenders:
            assert not await c.try_lead()  # seen held
        await asyncio.sleep(1.1)
        won = await asyncio.gather(*(c.try_lead() for c in contenders))
        assert won.count(True) == 1, won
        assert len(server.leases.conflicts()) >= 1
        for e in (old, *contenders):
            await e.close()


async def test_leadership_runs_the_work_on_the_leader_and_stops_it_when_renewing_fails(
    tmp_path: Path,
) -> None:
    async with LeaseServer() as server:
        ran: dict[str, list[str]] = {"a": [], "b": []}

        def runner(name: str) -> Leadership:
            leadership = Leadership(
                elector(server, tmp_path, name), renew_deadline=0.6, retry_period=0.15
            )

            async def work() -> None:
                ran[name].append("started")
                try:
                    await asyncio.Future()
                finally:
                    ran[name].append("stopped")

            leadership.add("work", work)
            return leadership

        a, b = runner("a"), runner("b")
        task_a = asyncio.create_task(a.run())
        assert await a.wait(True, within=3)
        task_b = asyncio.create_task(b.run())
        await asyncio.sleep(0.5)
        assert ran == {"a": ["started"], "b": []} and not b.leading
        # the API stops answering: the leader stops its work within the renew deadline, and
        # nobody leads while nobody can renew
        server.leases.down = True
        assert await a.wait(False, within=2)
        assert ran["a"] == ["started", "stopped"] and not b.leading
        server.leases.down = False  # back: one of them leads again, and only one

        async def someone_leads() -> bool:
            return a.leading or b.leading

        await eventually(someone_leads, within=4)
        assert a.leading != b.leading
        # the leader shuts down: it releases the Lease, and the other takes over at once
        leader, other, other_task = (a, b, task_b) if a.leading else (b, a, task_a)
        (task_a if leader is a else task_b).cancel()
        await leader.stop()
        started = time.monotonic()
        assert await other.wait(True, within=2)
        assert time.monotonic() - started < 0.6  # one retry period, not the lease duration
        other_task.cancel()
        await other.stop()
        await asyncio.gather(task_a, task_b, return_exceptions=True)


async def test_an_advisory_lock_is_held_by_one_and_freed_when_its_session_ends() -> None:
    if not PG_URL:
        unavailable("OPSBOT_TEST_POSTGRES_URL is not set")
    store = await open_store(PG_URL, migrate=False)
    try:
        name = f"test-{os.getpid()}-{time.monotonic_ns()}"
        a, b = (AdvisoryLockElector(store, name=name, timeout=2.0, holder=h) for h in ("a", "b"))
        assert sorted(await asyncio.gather(a.try_lead(), b.try_lead())) == [False, True]
        leader, follower = (a, b) if a._conn is not None else (b, a)
        assert await leader.try_lead() and not await follower.try_lead()
        await leader._drop()  # its connection ends (as when the process dies)
        assert await follower.try_lead()
        assert not await leader.try_lead()
        await follower.release()
        assert await leader.try_lead()
        for e in (a, b):
            await e.close()
        assert lock_key(name) == lock_key(name) != lock_key(name + "x")
    finally:
        await store.close()


async def test_the_elector_is_chosen_by_the_setting(tmp_path: Path) -> None:
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'o.db'}", migrate=False)
    try:
        assert isinstance(elector_for(Settings(leader_election="auto"), store), Solo)
        assert isinstance(elector_for(Settings(leader_election="off"), store), Solo)
        with pytest.raises(ConfigError, match="OPSBOT_LEADER_ELECTION=postgres needs PostgreSQL"):
            elector_for(Settings(leader_election="postgres"), store)
        os.environ["KUBECONFIG"] = str(tmp_path / "missing")
        try:
            with pytest.raises(ConfigError, match="OPSBOT_LEADER_ELECTION=lease needs"):
                elector_for(Settings(leader_election="lease"), store)
        finally:
            del os.environ["KUBECONFIG"]
    finally:
        await store.close()


def serve_refuses(tmp_path: Path, **env: str) -> str:
    """``opsbot serve`` with ``env``: it must exit 1 at once; its error output."""
    done = subprocess.run(
        [sys.executable, "-m", "opsbot.cli", "serve"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("OPSBOT_")},
            "OPSBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'o.db'}",
            "OPSBOT_HTTP_PORT": "0",
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1, done
    return done.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"OPSBOT_LEASE_DURATION": "10", "OPSBOT_LEASE_RENEW_DEADLINE": "12"},
            "OPSBOT_LEASE_RENEW_DEADLINE='12'",
        ),
        ({"OPSBOT_LEASE_DURATION": "soon"}, "OPSBOT_LEASE_DURATION='soon'"),
        ({"OPSBOT_LEADER_ELECTION": "raft"}, "OPSBOT_LEADER_ELECTION='raft'"),
        ({"OPSBOT_SHUTDOWN_GRACE": "-1"}, "OPSBOT_SHUTDOWN_GRACE='-1'"),
        (
            {"OPSBOT_LEADER_ELECTION": "postgres"},
            "OPSBOT_LEADER_ELECTION=postgres needs PostgreSQL",
        ),
        ({"OPSBOT_DATABASE_URL": "mysql://u:hunter2@db/opsbot"}, "unsupported database URL"),
    ],
)
def test_a_bad_setting_refuses_to_start_and_names_it(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    said = serve_refuses(tmp_path, **env)
    assert named in said, said
    assert "Traceback" not in said and "hunter2" not in said
