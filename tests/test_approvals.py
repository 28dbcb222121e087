"""Approvals: state machine, who may approve, expiry, exactly-once execution, restarts."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel
from sqlalchemy import update

from opsbot.approvals import State, VoteStatus
from opsbot.audit import AuditEvent
from opsbot.engine import Engine
from opsbot.model import Actor, ApprovalCard, Message, Request, SkillResult, Text
from opsbot.policy import Policy
from opsbot.services import Services, build_services
from opsbot.skills.base import Risk, Skill, SkillContext
from opsbot.store import ApprovalRow, now
from tests.conftest import Thread, make_settings, registry_with

POLICY = """
groups:
  sre: [shell:alice]
  oncall: [shell:bob, shell:carol, shell:dave]
rules:
  - name: reads
    subjects: ["*"]
    skills: [help, approvals.pending, audit.search]
    effect: allow
  - name: touch needs one
    subjects: [group:sre, group:oncall]
    skills: [test.touch]
    namespaces: [shop]
    effect: approve
    approvers: [group:oncall]
    min_approvals: 1
    ttl: 15m
  - name: nuke needs two
    subjects: [group:sre]
    skills: [test.nuke]
    effect: approve
    approvers: [group:oncall, group:sre]
    min_approvals: 2
    ttl: 30m
"""


class TouchArgs(BaseModel):
    name: str
    namespace: str


class Touch(Skill[TouchArgs]):
    """A write that counts how often it really ran."""

    name = "test.touch"
    summary = "touch a thing"
    Args = TouchArgs
    risk = Risk.WRITE
    keywords: ClassVar[dict[str, float]] = {"touch": 3.0}
    runs: ClassVar[list[str]] = []

    async def preview(self, args: TouchArgs, ctx: SkillContext) -> str:
        return f"would touch {args.name} in {args.namespace}"

    async def run(self, args: TouchArgs, ctx: SkillContext) -> SkillResult:
        await asyncio.sleep(0.05)  # widen the window for races
        Touch.runs.append(f"{ctx.actor.id}:{args.name}")
        return SkillResult(summary=f"touched {args.name}", blocks=[Text(text="done")])


class Nuke(Touch):
    name = "test.nuke"
    keywords: ClassVar[dict[str, float]] = {"nuke": 3.0}


@pytest.fixture
async def engine(db_url: str, tmp_path: Path) -> Engine:
    (tmp_path / "p.yaml").write_text(POLICY)
    Touch.runs = []
    services = await build_services(
        make_settings(db_url, tmp_path),
        policy=Policy.load(tmp_path / "p.yaml"),
        registry=registry_with(Touch(), Nuke()),
    )
    yield Engine(services)  # type: ignore[misc]
    await services.close()


ALICE, BOB, CAROL, DAVE, MALLORY = (
    Actor(id=f"shell:{n}") for n in ("alice", "bob", "carol", "dave", "mallory")
)


async def expire_now(engine: Engine, approval_id: str) -> None:
    """Move the approval's expiry into the past, as if its ttl had run out."""
    async with engine.services.store.sessions() as session:
        await session.execute(
            update(ApprovalRow)
            .where(ApprovalRow.id == approval_id)
            .values(expires_at=now() - timedelta(seconds=1))
        )
        await session.commit()


async def ask(engine: Engine, text: str, actor: Actor = ALICE) -> tuple[Thread, str]:
    thread = Thread()
    await engine.handle(Request(actor=actor, channel="ops", text=text), thread)
    ids = thread.approval_ids
    return thread, ids[0] if ids else ""


async def test_a_request_never_posts_another_platforms_expiry(engine: Engine) -> None:
    """Defect (issue 9): handle() swept expired approvals through the current request's
    reply, so an expired Discord approval went to the Slack adapter, whose thread parser
    raised, and the Slack user's request ended in "Internal error"."""
    discord_thread = Thread()
    await engine.handle(
        Request(
            actor=ALICE, channel="discord:42", text="touch checkout in shop", thread="discord:42:9"
        ),
        discord_thread,
    )
    [approval_id] = discord_thread.approval_ids
    await expire_now(engine, approval_id)
    slack_posts: list[Message] = []

    async def slack_reply(message: Message) -> None:
        if not message.thread.startswith("slack:"):
            raise ValueError(f"not a Slack thread: {message.thread}")  # as parse_thread does
        slack_posts.append(message)

    await engine.handle(
        Request(
            actor=BOB,
            channel="slack:C1",
            text="what's waiting for approval?",
            thread="slack:C1:1.2",
        ),
        slack_reply,
    )
    text = "\n".join(m.plain for m in slack_posts)
    assert "Internal error" not in text and "Nothing is waiting for approval." in text
    assert all(m.thread == "slack:C1:1.2" for m in slack_posts)


async def test_write_waits_for_approval_then_runs_once(engine: Engine) -> None:
    thread, approval_id = await ask(engine, "touch checkout in shop")
    assert approval_id and Touch.runs == []
    assert "would touch checkout in shop" in thread.text  # the preview is in the request
    outcome = await engine.decide(approval_id, BOB, "approve", thread)
    assert outcome.status is VoteStatus.APPROVED
    assert Touch.runs == ["shell:alice:checkout"]  # runs as the requester
    approval = await engine.services.approvals.get(approval_id)
    assert approval is not None and approval.state is State.EXECUTED
    assert "touched checkout" in thread.text
    events = [r.event for r in await engine.services.audit.search()]
    for event in (
        AuditEvent.REQUEST,
        AuditEvent.PLAN,
        AuditEvent.POLICY,
        AuditEvent.APPROVAL_REQUESTED,
        AuditEvent.APPROVAL_APPROVED,
        AuditEvent.EXECUTION,
        AuditEvent.RESULT,
    ):
        assert event in events


async def test_requester_and_strangers_cannot_approve(engine: Engine) -> None:
    thread, approval_id = await ask(engine, "touch checkout in shop")
    assert (await engine.decide(approval_id, ALICE, "approve", thread)).status is VoteStatus.SELF
    assert (
        await engine.decide(approval_id, MALLORY, "approve", thread)
    ).status is VoteStatus.NOT_ALLOWED
    assert Touch.runs == []
    approval = await engine.services.approvals.get(approval_id)
    assert approval is not None and approval.state is State.PENDING and approval.votes == []
    refused = await engine.services.audit.search(event=AuditEvent.APPROVAL_REFUSED)
    assert [r.actor for r in refused] == ["shell:alice", "shell:mallory"]
    assert "someone else must approve" in thread.text


async def test_approver_is_matched_at_click_time(engine: Engine) -> None:
    _, approval_id = await ask(engine, "touch checkout in shop")
    engine.services.policy.doc.groups["oncall"].remove("shell:bob")  # bob left on-call meanwhile
    assert (
        await engine.decide(approval_id, BOB, "approve", Thread())
    ).status is VoteStatus.NOT_ALLOWED
    engine.services.policy.doc.groups["oncall"].append(
        "shell:erin"
    )  # erin joined after the request
    assert (
        await engine.decide(approval_id, Actor(id="shell:erin"), "approve", Thread())
    ).status is VoteStatus.APPROVED
    assert len(Touch.runs) == 1


async def test_two_approvals_needed_and_duplicates_do_not_count(engine: Engine) -> None:
    thread, approval_id = await ask(engine, "nuke checkout in shop")
    assert (await engine.decide(approval_id, BOB, "approve", thread)).status is VoteStatus.RECORDED
    assert (await engine.decide(approval_id, BOB, "approve", thread)).status is VoteStatus.DUPLICATE
    assert Touch.runs == []
    assert (
        await engine.decide(approval_id, CAROL, "approve", thread)
    ).status is VoteStatus.APPROVED
    assert len(Touch.runs) == 1
    assert (await engine.decide(approval_id, DAVE, "approve", thread)).status is VoteStatus.DECIDED
    assert len(Touch.runs) == 1


async def test_deny_stops_it(engine: Engine) -> None:
    thread, approval_id = await ask(engine, "touch checkout in shop")
    assert (
        await engine.decide(approval_id, CAROL, "deny", thread, reason="not now")
    ).status is VoteStatus.DENIED
    assert (await engine.decide(approval_id, BOB, "approve", thread)).status is VoteStatus.DECIDED
    assert Touch.runs == [] and "denied by shell:carol: not now" in thread.text


async def test_expired_request_cannot_be_approved(engine: Engine) -> None:
    _, approval_id = await ask(engine, "touch checkout in shop")
    await expire_now(engine, approval_id)
    thread = Thread()
    assert (await engine.decide(approval_id, BOB, "approve", thread)).status is VoteStatus.EXPIRED
    assert Touch.runs == [] and "expired" in thread.text
    approval = await engine.services.approvals.get(approval_id)
    assert approval is not None and approval.state is State.EXPIRED
    assert await engine.services.audit.search(event=AuditEvent.APPROVAL_EXPIRED)


async def test_unknown_id_answers_clearly(engine: Engine) -> None:
    thread = Thread()
    assert (await engine.decide("zzzzzz", BOB, "approve", thread)).status is VoteStatus.UNKNOWN
    assert "no approval request with id zzzzzz" in thread.text


async def test_concurrent_clicks_execute_exactly_once(engine: Engine) -> None:
    """Many approvers (and double clicks) at the same moment: one execution."""
    _, approval_id = await ask(engine, "touch checkout in shop")
    clicks = [
        engine.decide(approval_id, who, "approve", Thread())
        for who in (BOB, CAROL, DAVE, BOB, CAROL, DAVE)
    ]
    outcomes = await asyncio.gather(*clicks)
    assert [o.status for o in outcomes].count(VoteStatus.APPROVED) == 1
    assert len(Touch.runs) == 1


async def test_two_replicas_share_the_database(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """A second engine on the same database (another replica, or after a restart) sees the
    pending approval, and racing replicas still execute once."""
    _, approval_id = await ask(engine, "touch checkout in shop")
    other: Services = await build_services(
        make_settings(db_url, tmp_path),
        policy=engine.services.policy,
        registry=engine.services.registry,
    )
    try:
        replica = Engine(other)
        pending = await replica.services.approvals.find(state=State.PENDING)
        assert [a.id for a in pending] == [approval_id]
        outcomes = await asyncio.gather(
            engine.decide(approval_id, BOB, "approve", Thread()),
            replica.decide(approval_id, CAROL, "approve", Thread()),
        )
        assert sorted(o.status.value for o in outcomes) == ["already-decided", "approved"]
        assert len(Touch.runs) == 1
        assert (await other.audit.verify()).ok
    finally:
        await other.close()


async def test_namespace_scope_and_unknown_skills_are_refused(engine: Engine) -> None:
    thread, approval_id = await ask(engine, "touch checkout in prod")
    assert (
        not approval_id
        and "no policy rule allows shell:alice to call test.touch in namespace prod" in thread.text
    )
    thread, approval_id = await ask(engine, "touch checkout in shop", actor=MALLORY)
    assert not approval_id and Touch.runs == []


async def test_expired_requests_are_swept_audited_and_announced(engine: Engine) -> None:
    # the sweep is its own call (opsbot serve and the shell make it), announced in the
    # approval's own thread with the card, now closed
    _, approval_id = await ask(engine, "touch checkout in shop")
    await expire_now(engine, approval_id)
    announced = Thread()
    assert [a.id for a in await engine.sweep_expired(announced)] == [approval_id]
    assert f"Approval `{approval_id}` expired without enough approvals" in announced.text
    [card] = [b for m in announced.messages for b in m.blocks if isinstance(b, ApprovalCard)]
    assert card.state == "expired" and not card.open
    pending, _ = await ask(engine, "what's waiting for approval?", actor=BOB)
    assert "Nothing is waiting for approval." in pending.text
    [record] = await engine.services.audit.search(event=AuditEvent.APPROVAL_EXPIRED)
    assert record.outcome == "expired" and approval_id in record.detail
    assert (await engine.decide(approval_id, BOB, "approve", Thread())).status is VoteStatus.DECIDED
    assert Touch.runs == []
