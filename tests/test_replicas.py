"""Several ``opsbot serve`` processes on one real PostgreSQL (issue 16, items 3-5):

- three replicas started together on an empty database: the migrations run once, under the
  advisory lock, and every replica comes up on the current schema;
- the same approval clicked on every replica at once (three approvers, one per replica), 100
  rounds: the Kubernetes API (kmock) receives exactly one write per round;
- the leader (a ``coordination.k8s.io/v1`` Lease on the kmock cluster, the fake Lease API)
  killed with SIGKILL while it runs an action and follows a rollout: the other replica takes
  the Lease within the lease's duration, connects the Discord gateway (tests/fakes/
  discord_server.py), resumes the rollout follow-up (the write is not repeated), and reports
  the interrupted action ``unknown`` after ``OPSBOT_EXECUTION_UNKNOWN_AFTER`` (not run again);
- SIGTERM during a burst of approval clicks: every click accepted is finished by the replica
  stopping, the others go to the other replica (as a load balancer retries a refused
  connection), none is lost and none runs twice; pending approvals stay pending.

Clicks are Slack interactions (signed ``block_actions`` posts to ``/slack/events``); what the
bot says goes to the fake Slack Web API. The measured failover time and the exactly-once
counts are printed (``-s``) for the issue's note.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp.web
import httpx
import pytest
from kmock import KubernetesEmulator
from sqlalchemy import text

from opsbot.adapters.slack_blocks import APPROVE
from opsbot.approvals import Approvals, State
from opsbot.followups import FollowUp, FollowUps, FollowUpState
from opsbot.model import Actor, Invocation, Request
from opsbot.policy import NeedsApproval
from opsbot.store import Store, open_store, scratch_database
from tests.conftest import PG_URL, unavailable
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.kube import (
    DEPLOYMENTS,
    ClusterEmulator,
    complete_rollout,
    deployment,
    seed,
    write_kubeconfig,
)
from tests.fakes.slack_api import FakeSlack

SECRET = "replicas-signing-secret"
CHANNEL = "CREPL"
APPROVERS = ("UBOB", "UCAROL", "UDAVE")
POLICY = """
groups:
  sre: [slack:UALICE]
  oncall: [slack:UBOB, slack:UCAROL, slack:UDAVE]
rules:
  - name: everyone reads
    subjects: ["*"]
    skills: ["k8s.pods", "k8s.describe", "k8s.rollout.*", "help"]
    effect: allow
  - name: sre restarts with one on-call approval
    subjects: [group:sre]
    skills: [k8s.restart]
    namespaces: [shop]
    effect: approve
    approvers: [group:oncall]
    min_approvals: 1
    ttl: 15m
"""


class Cluster(ClusterEmulator):
    """The kmock cluster (and its Lease API), recording each write as it arrives and able
    to hold it (``patch_delay``), so that a replica can be killed while it waits."""

    patch_delay = 0.0
    arrived: list[str]

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.method == "PATCH" and raw_request.query.get("dryRun") != "All":
            if not hasattr(self, "arrived"):
                self.arrived = []
            self.arrived.append(raw_request.path)
            if self.patch_delay:
                await asyncio.sleep(self.patch_delay)
        return await super().__call__(raw_request)


pytestmark = pytest.mark.kmock(cls=Cluster)


def writes(kmock: KubernetesEmulator, name: str = "") -> list[str]:
    """The non-dry-run PATCHes the cluster received (of deployment ``name``)."""
    arrived: list[str] = getattr(kmock, "arrived", [])
    return [p for p in arrived if not name or f"/deployments/{name}" in p]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(check: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {within:g}s")
        await asyncio.sleep(0.05)


@dataclass
class Replica:
    name: str
    port: int
    log: Path
    proc: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def said(self) -> str:
        return self.log.read_text(errors="replace")

    async def health(self, client: httpx.AsyncClient) -> dict[str, Any] | None:
        if self.proc.returncode is not None:
            return None
        try:
            answer = await client.get(f"{self.url}/healthz", timeout=2)
        except httpx.TransportError:
            return None
        return dict(answer.json()) if answer.is_success else None


@dataclass
class Rig:
    """Replicas on one scratch database, with the fake Slack and the kmock cluster."""

    tmp_path: Path
    url: str
    store: Store
    slack: FakeSlack
    kmock: KubernetesEmulator
    client: httpx.AsyncClient
    replicas: list[Replica] = field(default_factory=list)
    _n: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OPSBOT_", "SLACK_", "DISCORD_", "POD_"))
            and k not in ("PROMETHEUS_URL", "ALERTMANAGER_URL", "LOKI_URL", "KUBECONFIG")
        }
        (self.tmp_path / "policy.yaml").write_text(POLICY)
        kubeconfig = write_kubeconfig(self.tmp_path / "kubeconfig", str(self.kmock.url).rstrip("/"))
        return {
            **base,
            "OPSBOT_DATABASE_URL": self.url,
            "OPSBOT_POLICY_PATH": str(self.tmp_path / "policy.yaml"),
            "OPSBOT_CHART_DIR": str(self.tmp_path / "charts"),
            "OPSBOT_HTTP_HOST": "127.0.0.1",
            "OPSBOT_ADAPTERS": "slack",
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": self.slack.base_url,
            "KUBECONFIG": str(kubeconfig),
            "OPSBOT_ROLLOUT_TIMEOUT": "0.5",
            "OPSBOT_ROLLOUT_POLL": "0.2",
            **extra,
        }

    async def start(self, count: int, **extra: str) -> list[Replica]:
        env = self.env(**extra)
        started = []
        for _ in range(count):
            name = f"replica-{len(self.replicas)}"
            port = free_port()
            log = self.tmp_path / f"{name}.log"
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "opsbot.cli",
                    "serve",
                    env={**env, "OPSBOT_HTTP_PORT": str(port), "POD_NAME": name},
                    cwd=self.tmp_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            replica = Replica(name, port, log, proc)
            self.replicas.append(replica)
            started.append(replica)
        for replica in started:

            async def up(replica: Replica = replica) -> bool:
                assert replica.proc.returncode is None, replica.said()
                return await replica.health(self.client) is not None

            await until(up, 60, f"{replica.name} did not start")
        return started

    async def leader(self, among: list[Replica] | None = None) -> Replica | None:
        leading = []
        for replica in among or self.replicas:
            health = await replica.health(self.client)
            if health and health.get("leader"):
                leading.append(replica)
        assert len(leading) <= 1, [r.name for r in leading]
        return leading[0] if leading else None

    async def approval(self, name: str = "checkout") -> tuple[str, str]:
        """A pending approval of ``k8s.restart name`` in shop, opened by alice in a thread of
        its own: (its id, its thread's ts)."""
        self._n += 1
        ts = f"1700000000.{self._n:06d}"
        opened = await Approvals(self.store).open(
            Request(
                actor=Actor(id="slack:UALICE"),
                channel=CHANNEL,
                text=f"restart {name} in shop",
                thread=f"slack:{CHANNEL}:{ts}",
            ),
            Invocation(skill="k8s.restart", args={"name": name, "namespace": "shop"}),
            NeedsApproval(
                rule="sre restarts with one on-call approval",
                approvers=("group:oncall",),
                min_approvals=1,
                ttl=timedelta(minutes=15),
            ),
        )
        return opened.id, ts

    async def click(self, replica: Replica, user: str, approval_id: str, ts: str) -> int:
        """``user`` clicks Approve on the card of ``approval_id`` (in thread ``ts``), the
        interaction sent to ``replica``: the HTTP status (0: the connection failed)."""
        payload = {
            "type": "block_actions",
            "team": {"id": "T1"},
            "user": {"id": user, "username": user.lower()},
            "api_app_id": "A1",
            "token": "x",
            "trigger_id": self.slack.issue_trigger(f"trig-{uuid.uuid4().hex[:8]}"),
            "response_url": self.slack.response_url(f"click-{uuid.uuid4().hex[:8]}"),
            "container": {"type": "message", "message_ts": ts, "channel_id": CHANNEL},
            "channel": {"id": CHANNEL},
            "message": {"ts": ts, "text": "approval"},
            "actions": [
                {
                    "action_id": APPROVE,
                    "block_id": f"approval:{approval_id}",
                    "value": approval_id,
                    "type": "button",
                    "action_ts": str(time.time()),
                }
            ],
        }
        body = urlencode({"payload": json.dumps(payload)})
        return await self.signed(replica, body, "application/x-www-form-urlencoded")

    async def signed(self, replica: Replica, body: str, content_type: str) -> int:
        stamp = str(int(time.time()))
        signature = hmac.new(SECRET.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256)
        try:
            answer = await self.client.post(
                f"{replica.url}/slack/events",
                content=body.encode(),
                headers={
                    "Content-Type": content_type,
                    "X-Slack-Request-Timestamp": stamp,
                    "X-Slack-Signature": "v0=" + signature.hexdigest(),
                },
                timeout=10,
            )
        except httpx.TransportError:
            return 0
        return answer.status_code

    async def mention(self, replica: Replica, event_id: str, ts: str, text: str) -> int:
        """Slack delivers event ``event_id`` (alice mentions the bot) to ``replica``."""
        body = {
            "token": "x",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": {
                "type": "app_mention",
                "user": "UALICE",
                "text": f"<@UBOT> {text}",
                "ts": ts,
                "channel": CHANNEL,
                "event_ts": ts,
            },
        }
        return await self.signed(replica, json.dumps(body), "application/json")

    async def state(self, approval_id: str) -> State | None:
        found = await Approvals(self.store).get(approval_id)
        return found.state if found else None

    async def settled(self, approval_id: str, within: float = 20) -> State:
        async def done() -> State | None:
            state = await self.state(approval_id)
            return state if state in (State.EXECUTED, State.FAILED, State.UNKNOWN) else None

        found: State = await until(done, within, f"approval {approval_id} not settled")
        return found

    def thread_text(self, ts: str) -> str:
        return "\n".join(
            str(c.params.get("text", ""))
            for c in self.slack.posted()
            if c.params.get("thread_ts") == ts
        )

    def says(self, ts: str, words: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return words in self.thread_text(ts)

        return check

    async def events(self, event: str, request_id: str) -> int:
        async with self.store.sessions() as session:
            return int(
                await session.scalar(
                    text(
                        "SELECT count(*) FROM audit_events WHERE event = :event AND "
                        "request_id = :request_id"
                    ),
                    {"event": event, "request_id": request_id},
                )
                or 0
            )

    async def stop(self) -> None:
        for replica in self.replicas:
            if replica.proc.returncode is None:
                replica.proc.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            try:
                await asyncio.wait_for(replica.proc.wait(), 30)
            except TimeoutError:
                replica.proc.kill()
                await replica.proc.wait()


@pytest.fixture
async def rig(kmock: KubernetesEmulator, tmp_path: Path) -> AsyncIterator[Rig]:
    if not PG_URL:
        unavailable("OPSBOT_TEST_POSTGRES_URL is not set")
    seed(kmock)
    async with (
        scratch_database(PG_URL, "opsbot_repl") as url,
        FakeSlack() as slack,
        httpx.AsyncClient() as client,
    ):
        store = await open_store(url, migrate=False)  # the replicas migrate the empty database
        rig = Rig(tmp_path, url, store, slack, kmock, client)
        try:
            yield rig
        finally:
            await rig.stop()
            await store.close()


def report(line: str) -> None:
    """A measured number for the issue's note (shown with ``pytest -s``)."""
    print(f"\n[replicas] {line}", file=sys.stderr)


# -- migrations ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_three_processes_migrate_an_empty_database_once() -> None:
    """Three processes open the same empty database at once: one migrates under the
    advisory lock, the others wait, then find the schema current (none fails)."""
    if not PG_URL:
        unavailable("OPSBOT_TEST_POSTGRES_URL is not set")
    async with scratch_database(PG_URL, "opsbot_migr") as url:
        code = (
            "import asyncio, sys\nfrom opsbot.store import open_store\n"
            "async def main():\n    store = await open_store(sys.argv[1])\n"
            "    await store.close()\nasyncio.run(main())\n"
        )
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, url, stderr=subprocess.PIPE
            )
            for _ in range(3)
        ]
        outs = await asyncio.gather(*(p.communicate() for p in procs))
        assert [p.returncode for p in procs] == [0, 0, 0], [o[1].decode()[-2000:] for o in outs]
        store = await open_store(url, migrate=False)
        try:
            async with store.sessions() as session:
                versions = (
                    await session.execute(text("SELECT version_num FROM alembic_version"))
                ).all()
        finally:
            await store.close()
        assert [v[0] for v in versions] == ["0007"]


# -- exactly once --------------------------------------------------------------------------


@pytest.mark.timeout(150)
async def test_the_same_approval_clicked_on_three_replicas_at_once_runs_once_100_times(
    rig: Rig,
) -> None:
    # three replicas started together on the empty database: they race the migrations too
    replicas = await rig.start(3, OPSBOT_LEADER_ELECTION="postgres")
    async with rig.store.sessions() as session:
        versions = (await session.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert [v[0] for v in versions] == ["0007"]
    leader = await until(rig.leader, 10, "no leader")
    rounds, lanes, started = 100, 5, time.monotonic()
    for lane in range(lanes):  # five deployments, one round at a time on each
        rig.kmock.objects[rig.kmock.resource(*DEPLOYMENTS), "shop", f"svc{lane}"] = deployment(
            f"svc{lane}", "shop"
        )
    statuses: list[int] = []

    async def play(lane: int) -> None:
        name = f"svc{lane}"
        for n in range(rounds // lanes):
            approval_id, ts = await rig.approval(name)
            answers = await asyncio.gather(
                *(
                    rig.click(replica, user, approval_id, ts)
                    for replica, user in zip(replicas, APPROVERS, strict=True)
                )
            )
            statuses.extend(answers)
            assert await rig.settled(approval_id) is State.EXECUTED, rig.thread_text(ts)
            assert len(writes(rig.kmock, name)) == n + 1, (
                f"{name} round {n}: {writes(rig.kmock, name)}"
            )

    await asyncio.gather(*(play(lane) for lane in range(lanes)))
    took = time.monotonic() - started
    assert statuses == [200] * (3 * rounds)
    assert len(writes(rig.kmock)) == rounds
    # each approval: one approved vote, one execution; the other two clicks were refused
    async with rig.store.sessions() as session:
        counts = (
            await session.execute(
                text(
                    "SELECT request_id, event, count(*) FROM audit_events WHERE event IN "
                    "('approval.approved', 'skill.execution', 'approval.refused') "
                    "GROUP BY request_id, event"
                )
            )
        ).all()
    by_event: dict[str, list[int]] = {}
    for _request, event, count in counts:
        by_event.setdefault(event, []).append(int(count))
    assert by_event["approval.approved"] == [1] * rounds
    assert by_event["skill.execution"] == [1] * rounds
    assert sum(by_event["approval.refused"]) == 2 * rounds
    report(
        f"exactly once: {rounds} rounds x 3 replicas clicked at once -> "
        f"{len(writes(rig.kmock))} writes received by the cluster, "
        f"{rounds} approvals executed, {sum(by_event['approval.refused'])} clicks refused "
        f"as already decided ({took:.1f}s; leader {leader.name})"
    )

    # the follow-ups of the writes ran on the leader only
    # one Slack event delivered to every replica at once (retries landing on another pod):
    # handled once
    for n in range(5):
        ts = f"1700000100.{n:06d}"
        answers = await asyncio.gather(
            *(rig.mention(replica, f"EvDup{n}", ts, "help") for replica in replicas)
        )
        assert answers == [200, 200, 200]
    thread_ts = [f"1700000100.{n:06d}" for n in range(5)]
    await until(rig.says(thread_ts[-1], "help"), 10, "the mention was not answered")
    await asyncio.sleep(0.5)
    async with rig.store.sessions() as session:
        received = (
            await session.execute(
                text(
                    "SELECT thread, count(*) FROM audit_events WHERE event = 'request.received' "
                    "AND thread LIKE :prefix GROUP BY thread"
                ),
                {"prefix": f"slack:{CHANNEL}:1700000100.%"},
            )
        ).all()
    assert sorted(count for _, count in received) == [1] * 5, received

    async def all_kept() -> bool:  # kept after the result is posted: the last may lag
        return len(await FollowUps(rig.store).find()) == rounds

    await until(all_kept, 10, "a follow-up was not kept")
    for replica in replicas:
        if replica is not leader:
            assert "leader.elected" not in replica.said()


# -- the leader killed -----------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_the_leader_killed_mid_action_is_replaced_within_the_lease(rig: Rig) -> None:
    duration, retry = 3.0, 0.5
    async with FakeDiscord() as discord:
        replicas = await rig.start(
            2,
            OPSBOT_ADAPTERS="slack,discord",
            DISCORD_TOKEN="discord-test-token",
            DISCORD_API_URL=discord.api_url,
            DISCORD_GATEWAY_URL=discord.gateway_url,
            OPSBOT_LEADER_ELECTION="lease",
            OPSBOT_LEASE_NAMESPACE="default",
            OPSBOT_LEASE_DURATION=str(duration),
            OPSBOT_LEASE_RENEW_DEADLINE="2",
            OPSBOT_LEASE_RETRY_PERIOD=str(retry),
            OPSBOT_EXECUTION_UNKNOWN_AFTER="4",
            OPSBOT_ROLLOUT_TIMEOUT="60",
            OPSBOT_ROLLOUT_POLL="0.3",
            OPSBOT_BACKEND_TIMEOUT="10",
        )
        leader = await until(rig.leader, 10, "no leader")
        [other] = [r for r in replicas if r is not leader]
        leases = getattr(rig.kmock, "leases", None)
        assert leases is not None
        held = leases.holder("default", "opsbot")
        assert held == (await leader.health(rig.client) or {}).get("identity")

        async def one_gateway() -> bool:
            return len(discord.sessions) == 1 and discord.sessions[0].ready

        await until(one_gateway, 10, "the leader did not connect the Discord gateway")
        await asyncio.sleep(1.5)
        assert len(discord.identifies) == 1  # the follower holds no gateway session

        # a restart whose rollout the leader follows (it never completes by itself)
        followed, followed_ts = await rig.approval("checkout")
        assert await rig.click(other, "UBOB", followed, followed_ts) == 200
        assert await rig.settled(followed) is State.EXECUTED
        queue = FollowUps(rig.store)

        async def followed_by_leader() -> bool:
            rows = await queue.find(FollowUpState.RUNNING)
            return bool(rows) and rows[0].runner == held

        await until(followed_by_leader, 10, "the leader did not take the follow-up")
        # an action running on the leader when it dies: its write is on its way
        rig.kmock.patch_delay = 8.0  # type: ignore[attr-defined]
        cut, cut_ts = await rig.approval("payments")
        assert await rig.click(leader, "UCAROL", cut, cut_ts) == 200

        async def write_sent() -> bool:
            return bool(writes(rig.kmock, "payments"))

        await until(write_sent, 10, "the leader did not send the write")
        assert await rig.state(cut) is State.EXECUTING
        identifies = len(discord.identifies)
        leader.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await leader.proc.wait()

        async def took_over() -> bool:
            health = await other.health(rig.client)
            return bool(health and health.get("leader"))

        await until(took_over, duration + 5, "the other replica did not take the Lease")
        elected = time.monotonic() - killed

        async def reconnected() -> bool:
            return len(discord.identifies) > identifies and any(s.ready for s in discord.sessions)

        await until(reconnected, 10, "the new leader did not connect the Discord gateway")
        gateway = time.monotonic() - killed
        assert elected <= duration + retry + 1.5, elected
        spec = leases.objects[("default", "opsbot")]["spec"]
        survivor = (await other.health(rig.client) or {}).get("identity")
        assert spec["holderIdentity"] == survivor and spec["leaseTransitions"] == 1
        assert len(discord.sessions) == 1
        report(
            f"failover: leader SIGKILLed, Lease taken by the other replica after {elected:.2f}s "
            f"(lease duration {duration:g}s, retry {retry:g}s), Discord gateway reconnected "
            f"after {gateway:.2f}s"
        )

        # the follow-up is resumed by the new leader, and the write is not repeated
        await until(rig.says(followed_ts, "again"), 10, "follow-up not resumed")
        complete_rollout(rig.kmock, "shop", "checkout")
        await until(
            rig.says(followed_ts, "rollout complete"), 10, "the resumed follow-up did not report"
        )

        async def ended() -> FollowUp | None:
            [row] = [f for f in await queue.find() if f.approval_id == followed]
            return row if row.state == FollowUpState.DONE else None

        row = await until(ended, 10, "the resumed follow-up did not end")
        assert row.attempts == 2 and row.runner == survivor
        assert len(writes(rig.kmock, "checkout")) == 1

        # the action cut off: executing, then unknown, told in its thread; never run again
        assert await rig.settled(cut, within=15) is State.UNKNOWN
        await until(rig.says(cut_ts, "may or may not have run"), 10, "unknown not told")

        async def card_unknown() -> bool:  # the card as approvers see it now (after the line)
            return any(
                f"Approval `{cut}` *unknown*" in json.dumps(c.params)
                for c in rig.slack.calls
                if c.method in ("chat.postMessage", "chat.update") and c.answer.get("ok")
            )

        await until(card_unknown, 10, "the card does not show the state unknown")
        await asyncio.sleep(1.5)
        assert len(writes(rig.kmock, "payments")) == 1
        assert await rig.state(cut) is State.UNKNOWN
        deployment = rig.kmock.objects[rig.kmock.resource(*DEPLOYMENTS), "shop", "payments"]
        assert deployment is not None


# -- SIGTERM -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_sigterm_during_a_burst_of_clicks_loses_none_and_runs_none_twice(rig: Rig) -> None:
    stopping, other = await rig.start(
        2, OPSBOT_LEADER_ELECTION="postgres", OPSBOT_SHUTDOWN_GRACE="20"
    )
    await until(rig.leader, 10, "no leader")
    rig.kmock.patch_delay = 0.4  # type: ignore[attr-defined]  # each action takes a while
    burst = [await rig.approval() for _ in range(30)]
    untouched = [await rig.approval() for _ in range(2)]
    acked = asyncio.Event()
    accepted: list[int] = []
    rerouted: list[str] = []

    async def click(index: int, approval_id: str, ts: str) -> None:
        await asyncio.sleep(index * 0.06)
        user = APPROVERS[index % 3]
        status = await rig.click(stopping, user, approval_id, ts)
        if status == 200:
            accepted.append(index)
            if len(accepted) == 10:
                acked.set()
            return
        rerouted.append(approval_id)  # refused: the load balancer sends it to the other one
        assert await rig.click(other, user, approval_id, ts) == 200

    clicks = [asyncio.create_task(click(i, *a)) for i, a in enumerate(burst)]
    await asyncio.wait_for(acked.wait(), 10)
    stopping.proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*clicks)
    code = await asyncio.wait_for(stopping.proc.wait(), 30)
    states = [await rig.settled(approval_id, within=30) for approval_id, _ in burst]
    assert states == [State.EXECUTED] * len(burst)
    assert len(writes(rig.kmock, "checkout")) == len(burst)  # none lost, none twice
    for approval_id, _ in burst:
        found = await Approvals(rig.store).get(approval_id)
        assert found is not None
        assert await rig.events("skill.execution", found.request_id) == 1
    said = stopping.said()
    stopping_line = next(json.loads(x) for x in said.splitlines() if "serve.stopping" in x)
    stopped_line = next(json.loads(x) for x in said.splitlines() if "serve.stopped" in x)
    assert code == 0 and stopped_line["drained"] is True, said[-3000:]
    assert stopping_line["in_flight"] >= 1  # SIGTERM came while actions were running
    report(
        f"SIGTERM mid-burst: {len(accepted)} clicks accepted by the stopping replica "
        f"({stopping_line['in_flight']} in flight at SIGTERM, drained in "
        f"{stopped_line['took']}s), {len(rerouted)} sent to the other; {len(burst)} approvals "
        f"executed, {len(writes(rig.kmock, 'checkout'))} writes"
    )
    # pending approvals are left as they were: the other replica decides them
    for approval_id, ts in untouched:
        assert await rig.state(approval_id) is State.PENDING
        assert await rig.click(other, "UBOB", approval_id, ts) == 200
        assert await rig.settled(approval_id) is State.EXECUTED
    assert await until(lambda: rig.leader([other]), 10, "the other replica does not lead")
