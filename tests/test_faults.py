"""Faults a replica meets, in one process (the process-level ones are tests/test_replicas.py):

- an action whose replica stopped while running it: ``executing``, then ``unknown`` after
  ``OPSBOT_EXECUTION_UNKNOWN_AFTER`` (the thread told, the card showing it), never run again;
  one that won the vote but never started: ``failed`` (not run);
- follow-ups of writes kept for the leader: run there, resumed by the next runner when one
  stops heartbeating, reported (not watched) when their time ran out, claimed once each;
- the database lost mid-flight (PostgreSQL behind a TCP proxy the test cuts): a request is
  answered with a message in its thread and nothing runs; a click is not counted and the
  approval stays pending, and is decided once the database is back;
- the database unreachable at start (``opsbot serve``): alive, not ready, one log line naming
  the setting without the password, ready once it answers;
- the work in flight, counted for a shutdown to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import BaseModel

from opsbot.approvals import State, VoteStatus
from opsbot.engine import Engine, InFlight
from opsbot.followups import FollowUps, FollowUpState
from opsbot.model import Actor, Invocation, Message, Request, SkillResult
from opsbot.policy import Policy
from opsbot.services import Services, build_services
from opsbot.skills.base import Risk, Skill, SkillContext
from opsbot.store import normalise_url, open_store, scratch_database
from opsbot.testing import Thread
from tests.conftest import PG_URL, make_settings, registry_with, unavailable

ALICE, BOB, CAROL = Actor(id="shell:alice"), Actor(id="shell:bob"), Actor(id="shell:carol")
POLICY = """
groups:
  sre: [shell:alice]
  oncall: [shell:bob, shell:carol]
rules:
  - name: bumps need one on-call approval
    subjects: [group:sre]
    skills: [test.bump]
    effect: approve
    approvers: [group:oncall]
    min_approvals: 1
    ttl: 15m
"""


class Target(BaseModel):
    name: str


class Bump(Skill[Target, Any]):
    """A write that counts its runs; its follow-up waits ``follow_for`` seconds."""

    name = "test.bump"
    summary = "Bump a counter"
    Args = Target
    risk = Risk.WRITE
    examples: ClassVar[list[str]] = ["bump web"]
    runs: ClassVar[list[str]] = []
    follow_for: ClassVar[float] = 0.0
    followed: ClassVar[list[str]] = []

    async def preview(self, args: Target, ctx: SkillContext[Any]) -> str:
        return f"would bump {args.name}"

    async def run(self, args: Target, ctx: SkillContext[Any]) -> SkillResult:
        Bump.runs.append(args.name)
        return SkillResult(summary=f"bumped {args.name}")

    async def follow_up(self, args: Target, ctx: SkillContext[Any]) -> SkillResult:
        await asyncio.sleep(Bump.follow_for)
        Bump.followed.append(args.name)
        return SkillResult(summary=f"{args.name} settled")


@pytest.fixture
async def bot(db_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    Bump.runs, Bump.followed, Bump.follow_for = [], [], 0.0
    (tmp_path / "policy.yaml").write_text(POLICY)
    services = await build_services(
        make_settings(db_url, tmp_path, execution_unknown_after=0.3),
        registry=registry_with(Bump()),
        policy=Policy.load(tmp_path / "policy.yaml"),
    )
    yield services
    await services.close()


async def ask_approval(engine: Engine, thread: Thread, name: str = "web") -> str:
    request = Request(actor=ALICE, channel="ops", text=f"bump {name}", thread=f"t-{name}")
    await engine.run(
        Invocation(skill="test.bump", args={"name": name}),
        ALICE,
        thread,
        channel="ops",
        thread=request.thread,
    )
    [approval] = [a for a in await engine.services.approvals.find() if a.args["name"] == name]
    return approval.id


async def test_an_action_whose_replica_stopped_becomes_unknown_and_is_not_run_again(
    bot: Services,
) -> None:
    engine, thread = Engine(bot), Thread()
    approvals = bot.approvals
    # replica A won the vote and marked it executing, then died before it finished
    executing = await ask_approval(engine, thread, "web")
    won = await approvals.vote(executing, BOB, "approve", bot.policy)
    assert won.status is VoteStatus.APPROVED
    assert await approvals.start(executing, "replica-a")
    # replica B won another vote but died before it started it
    never = await ask_approval(engine, thread, "db")
    assert (await approvals.vote(never, BOB, "approve", bot.policy)).status is VoteStatus.APPROVED
    assert await engine.sweep_stale(thread) == []  # not yet: within the time it may take
    await asyncio.sleep(0.35)
    swept = await engine.sweep_stale(thread)
    assert sorted(a.id for a in swept) == sorted([executing, never])
    unknown, failed = await approvals.get(executing), await approvals.get(never)
    assert unknown is not None and unknown.state is State.UNKNOWN
    assert failed is not None and failed.state is State.FAILED
    assert "not run" in failed.result
    said = thread.text
    assert "may or may not have run" in said and "will not be run again" in said
    assert "the action did not run" in said
    cards = [
        b for m in thread.messages for b in m.blocks if getattr(b, "approval_id", "") == executing
    ]
    assert cards[-1].state == "unknown"  # type: ignore[union-attr]
    assert unknown.card().head().startswith(f"Approval `{executing}` **unknown**")
    # nobody runs either: another click finds it decided; a second sweep changes nothing
    again = await engine.decide(executing, CAROL, "approve", thread)
    assert again.status is VoteStatus.DECIDED
    assert await engine.sweep_stale(thread) == []
    assert Bump.runs == []
    # a replica that was only slow still records the outcome it knows
    assert await approvals.finish(executing, ok=True, result="bumped web (late)")
    late = await approvals.get(executing)
    assert late is not None and late.state is State.EXECUTED
    # and one that lost the action to the sweep does not run it
    assert not await approvals.start(never, "replica-b")


async def test_an_approved_action_is_marked_executing_by_its_replica_while_it_runs(
    bot: Services,
) -> None:
    engine, thread = Engine(bot), Thread()
    engine.identity = "replica-x"
    approval_id = await ask_approval(engine, thread)
    seen: list[tuple[State, str]] = []

    async def peek(args: Target, ctx: SkillContext[Any]) -> SkillResult:
        found = await bot.approvals.get(approval_id)
        assert found is not None
        async with bot.store.sessions() as session:
            from opsbot.store import ApprovalRow

            row = await session.get(ApprovalRow, approval_id)
            assert row is not None
            seen.append((found.state, row.executor))
        return SkillResult(summary="ok")

    skill = bot.registry.get("test.bump")
    assert skill is not None
    skill.run = peek  # type: ignore[method-assign]
    await engine.decide(approval_id, BOB, "approve", thread)
    assert seen == [(State.EXECUTING, "replica-x")]
    done = await bot.approvals.get(approval_id)
    assert done is not None and done.state is State.EXECUTED


async def test_follow_ups_run_on_the_leader_resume_when_their_runner_stops(
    bot: Services,
) -> None:
    queue = FollowUps(bot.store)
    requester = Engine(bot)  # the replica the write ran on: it keeps the follow-up
    requester.follow_ups = queue
    thread = Thread()
    approval_id = await ask_approval(requester, thread)
    await requester.decide(approval_id, BOB, "approve", thread)
    assert Bump.runs == ["web"] and Bump.followed == []  # not followed here
    [kept] = await queue.find()
    assert kept.state == FollowUpState.PENDING and kept.approval_id == approval_id
    assert kept.actor.id == ALICE.id and kept.thread == "t-web"

    # the leader runs it and reports it in the thread
    leader = Engine(bot)
    leader.follow_ups, leader.identity = queue, "leader-1"
    posted = Thread()
    running = asyncio.create_task(leader.run_follow_ups(posted, stale_after=0.5, poll=0.05))
    await until(lambda: "web settled" in posted.text)
    done = await queue.get(kept.id)
    assert done is not None and done.state == FollowUpState.DONE and done.runner == "leader-1"
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)

    # a runner that stops heartbeating (killed): the next one resumes it, and says so
    Bump.follow_for = 10.0
    slow = await queue.add(
        skill="test.bump",
        args={"name": "db"},
        actor=ALICE,
        channel="ops",
        thread="t-db",
        request_id="r-db",
        within=30,
    )
    [claimed] = await queue.claim("dead-runner", stale_after=0.5)
    assert claimed.id == slow.id and claimed.attempts == 1
    assert await queue.claim("other", stale_after=0.5) == []  # it is someone's now
    Bump.follow_for = 0.0
    successor = Engine(bot)
    successor.follow_ups, successor.identity = queue, "leader-2"
    posted = Thread()
    running = asyncio.create_task(successor.run_follow_ups(posted, stale_after=0.5, poll=0.05))
    await until(lambda: "db settled" in posted.text)
    assert "Following `test.bump` again" in posted.text
    resumed = await queue.get(slow.id)
    assert resumed is not None and resumed.attempts == 2 and resumed.runner == "leader-2"

    # one whose time ran out while nobody followed it: reported, not watched
    late = await queue.add(
        skill="test.bump",
        args={"name": "cache"},
        actor=ALICE,
        channel="ops",
        thread="t-cache",
        request_id="r-cache",
        within=-1,
    )
    await until(lambda: "interrupted" in posted.text)
    ended = await queue.get(late.id)
    assert ended is not None and ended.state == FollowUpState.INTERRUPTED
    assert "cache" not in Bump.followed
    # a runner that stops leading hands the one it follows back, for the next at once
    Bump.follow_for = 10.0
    handed = await queue.add(
        skill="test.bump",
        args={"name": "queue"},
        actor=ALICE,
        channel="ops",
        thread="t-q",
        request_id="r-q",
        within=30,
    )

    async def taken() -> bool:
        found = await queue.get(handed.id)
        return found is not None and found.state == FollowUpState.RUNNING

    await until_async(taken)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    back = await queue.get(handed.id)
    assert back is not None and back.state == FollowUpState.PENDING and back.runner == ""
    assert Bump.runs == ["web"]  # the write ran once; follow-ups only watch


async def test_a_follow_up_is_saved_done_or_interrupted_before_its_thread_is_told(
    bot: Services,
) -> None:
    """Whoever reads a follow-up once its thread was told (the console, another replica)
    finds it ``done`` / ``interrupted``, never still ``running``."""
    queue = FollowUps(bot.store)
    leader = Engine(bot)
    leader.follow_ups, leader.identity = queue, "leader-1"
    told: list[tuple[str, dict[str, str]]] = []  # each message, and the states when it came

    async def post(message: Message) -> None:
        told.append((message.plain, {f.args["name"]: f.state for f in await queue.find()}))

    for name, within in (("web", 30.0), ("cache", -1.0)):
        await queue.add(
            skill="test.bump",
            args={"name": name},
            actor=ALICE,
            channel="ops",
            thread=f"t-{name}",
            request_id=f"r-{name}",
            within=within,
        )
    running = asyncio.create_task(leader.run_follow_ups(post, stale_after=60, poll=0.05))
    await until(lambda: len(told) == 2)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    [settled] = [states for text, states in told if "web settled" in text]
    [interrupted] = [states for text, states in told if "interrupted" in text]
    assert settled["web"] == FollowUpState.DONE
    assert interrupted["cache"] == FollowUpState.INTERRUPTED


async def test_a_runner_stopped_while_it_claims_hands_back_what_the_claim_took(
    bot: Services,
) -> None:
    """A leader stopped after its claim saved ``running`` but before the claim returned still
    hands back what it took: the next leader has it at once, not after it goes stale."""
    saved = asyncio.Event()

    class SlowToReturn(FollowUps):
        async def claim(self, runner: str, *, stale_after: float, limit: int = 20) -> list[Any]:
            taken = await super().claim(runner, stale_after=stale_after, limit=limit)
            if taken:
                await saved.wait()  # saved, not yet returned: where a stop can land
            return taken

    queue = SlowToReturn(bot.store)
    Bump.follow_for = 10.0
    kept = await queue.add(
        skill="test.bump",
        args={"name": "web"},
        actor=ALICE,
        channel="ops",
        thread="t-web",
        request_id="r-web",
        within=30,
    )
    leader = Engine(bot)
    leader.follow_ups, leader.identity = queue, "leader-1"
    running = asyncio.create_task(leader.run_follow_ups(Thread(), stale_after=60, poll=0.05))

    async def taken() -> bool:
        found = await queue.get(kept.id)
        return found is not None and found.state == FollowUpState.RUNNING

    await until_async(taken)
    running.cancel()  # lands in the claim, before it returns what it took
    saved.set()
    await asyncio.gather(running, return_exceptions=True)
    back = await queue.get(kept.id)
    assert back is not None and back.state == FollowUpState.PENDING and back.runner == ""
    assert [f.id for f in await queue.claim("leader-2", stale_after=60)] == [kept.id]


async def test_two_runners_claim_each_follow_up_once(bot: Services) -> None:
    queue = FollowUps(bot.store)
    for i in range(20):
        await queue.add(
            skill="test.bump",
            args={"name": f"s{i}"},
            actor=ALICE,
            channel="ops",
            thread=f"t{i}",
            request_id=f"r{i}",
            within=30,
        )
    taken = await asyncio.gather(*(queue.claim(f"runner-{n}", stale_after=60) for n in range(3)))
    ids = [f.id for claimed in taken for f in claimed]
    assert len(ids) == len(set(ids)) == 20


async def test_the_leader_gathers_the_inventory_and_the_other_replicas_read_it(
    bot: Services,
) -> None:
    """The leader asks the backends; a follower grounds on what it kept (no backend asked),
    and asks them itself only when nothing fresh is kept (no leader for a while)."""
    from opsbot.inventory import Inventory
    from opsbot.skills.base import Backend, SkillRegistry

    asked: list[str] = []

    class Names(Backend[Any]):
        name = "names"

        async def inventory(self) -> dict[str, set[str]]:
            asked.append("names")
            return {"deployment": {"checkout", "cart"}, "namespace": {"shop"}}

    registry = SkillRegistry([Names.from_settings(bot.settings)])
    leader, follower = Inventory(registry, ttl=60), Inventory(registry, ttl=60)
    leader.shared = follower.shared = bot.store
    assert await follower.names("deployment") == {"checkout", "cart"}  # nothing kept: asked
    assert asked == ["names"]
    await leader.publish()
    assert asked == ["names", "names"]
    other = Inventory(registry, ttl=60)
    other.shared = bot.store
    assert await other.snapshot() == {"deployment": {"checkout", "cart"}, "namespace": {"shop"}}
    assert asked == ["names", "names"]  # read from the database, no backend asked


async def test_inflight_work_is_waited_for() -> None:
    inflight = InFlight()
    done: list[str] = []

    async def work(seconds: float) -> None:
        async with inflight():
            await asyncio.sleep(seconds)
            done.append(f"{seconds}")

    tasks = [asyncio.create_task(work(s)) for s in (0.1, 0.3)]
    assert await inflight.drain(2) and done == ["0.1", "0.3"]
    slow = asyncio.create_task(work(5))
    assert not await inflight.drain(0.2) and inflight.count == 1
    slow.cancel()
    await asyncio.gather(*tasks, slow, return_exceptions=True)
    assert inflight.count == 0


# -- the database lost and back ---------------------------------------------------------------


class Proxy:
    """A TCP proxy to PostgreSQL that the test can cut (connections dropped, new ones
    refused) and restore on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._links |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._links -= {writer, up_writer}

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()
        await self._server.wait_closed()
        self._server = None

    def url(self, database_url: str) -> str:
        from sqlalchemy.engine import make_url

        return (
            make_url(normalise_url(database_url))
            .set(host="127.0.0.1", port=self.port)
            .render_as_string(hide_password=False)
        )


@pytest.fixture
async def pg_proxy() -> AsyncIterator[tuple[str, Proxy]]:
    """A scratch PostgreSQL database, migrated, and a proxy to its server."""
    if not PG_URL:
        unavailable("OPSBOT_TEST_POSTGRES_URL is not set")
    from sqlalchemy.engine import make_url

    async with scratch_database(PG_URL, "opsbot_faults") as url:
        (await open_store(url)).engine.sync_engine.dispose()
        parsed = make_url(normalise_url(url))
        proxy = Proxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        await proxy.open()
        yield url, proxy
        if proxy._server is not None:
            await proxy.cut()


async def until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within}s"
        await asyncio.sleep(0.02)


async def until_async(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        assert time.monotonic() < deadline, f"not within {within}s"
        await asyncio.sleep(0.02)


async def test_the_database_lost_mid_flight_fails_cleanly_and_leaves_the_approval_pending(
    pg_proxy: tuple[str, Proxy], tmp_path: Path
) -> None:
    url, proxy = pg_proxy
    Bump.runs = []
    (tmp_path / "policy.yaml").write_text(POLICY)
    services = await build_services(
        make_settings(proxy.url(url), tmp_path),
        registry=registry_with(Bump()),
        policy=Policy.load(tmp_path / "policy.yaml"),
    )
    try:
        engine, thread = Engine(services), Thread()
        approval_id = await ask_approval(engine, thread)
        await proxy.cut()
        # a new request: a message in its thread, nothing run
        request = Thread()
        await engine.handle(
            Request(actor=ALICE, channel="ops", text="bump cache", thread="t-new"), request
        )
        assert "cannot reach my database" in request.text and "nothing was run" in request.text
        # a click: not counted, said in the clicked thread
        click = Thread()
        outcome = await engine.decide(approval_id, BOB, "approve", click, thread="t-web")
        assert outcome.status is VoteStatus.UNKNOWN
        [said] = click.messages
        assert said.thread == "t-web" and "was not counted" in said.plain
        assert Bump.runs == []
        await proxy.open()  # back (same port): pooled connections are re-made
        pending = await services.approvals.get(approval_id)
        assert pending is not None and pending.state is State.PENDING and pending.votes == []
        decided = await engine.decide(approval_id, BOB, "approve", click, thread="t-web")
        assert decided.status is VoteStatus.APPROVED and Bump.runs == ["web"]
    finally:
        await services.close()


async def test_a_database_unreachable_at_start_is_waited_for_not_ready(
    pg_proxy: tuple[str, Proxy], tmp_path: Path
) -> None:
    """``opsbot serve`` while the database does not answer: /healthz 200, /readyz 503, one
    log line naming OPSBOT_DATABASE_URL (password hidden); ready once it answers."""
    url, proxy = pg_proxy
    await proxy.cut()
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "opsbot.cli",
            "serve",
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("OPSBOT_")},
                "OPSBOT_DATABASE_URL": proxy.url(url),
                "OPSBOT_HTTP_HOST": "127.0.0.1",
                "OPSBOT_HTTP_PORT": str(port),
                "OPSBOT_LEADER_ELECTION": "off",
            },
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            async def answer(path: str) -> httpx.Response | None:
                assert proc.returncode is None, log.read_text()
                try:
                    return await client.get(path)
                except httpx.TransportError:
                    return None

            async def up() -> bool:
                return await answer("/readyz") is not None

            await until_async(up, within=20)
            unready = await answer("/readyz")
            assert unready is not None and unready.status_code == 503
            assert "cannot open the database" in unready.json()["database"]
            alive = await answer("/healthz")
            assert alive is not None and alive.status_code == 200
            await asyncio.sleep(1.5)  # a retry or two, still unreachable
            await proxy.open()

            async def ready() -> bool:
                found = await answer("/readyz")
                return found is not None and found.status_code == 200

            await until_async(ready, within=15)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
    said = log.read_text()
    lines = [line for line in said.splitlines() if "database.unreachable" in line]
    assert len(lines) == 1, said
    assert "OPSBOT_DATABASE_URL" in lines[0] and "***" in lines[0]
    assert ":opsbot@" not in said  # the password (the test server's) is never shown
    assert "database.reachable" in said


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
