"""A late click on an approval another click already approved (and is running): when the
reply to the late clicker raises, the engine reports that click's failure only; the approved
action is not marked failed under the click that is running it."""

from __future__ import annotations

from typing import Any

import pytest

from opsbot import wording
from opsbot.approvals import State, VoteStatus
from opsbot.audit import AuditEvent
from opsbot.model import Actor, Message
from opsbot.testing import TestBot
from tests.test_engine_failures import POLICY, Wobble

pytestmark = pytest.mark.opsbot(policy=POLICY)


async def raising_reply(message: Message) -> None:
    raise RuntimeError("slack said no")


@pytest.mark.parametrize("state", [State.APPROVED, State.EXECUTING])
async def test_a_late_click_whose_reply_raises_leaves_the_approved_action_alone(
    opsbot_bot: TestBot, state: State
) -> None:
    opsbot_bot.add_skill(Wobble())
    asked = await opsbot_bot.ask("wobble web", as_="shell:alice")
    [approval_id] = asked.approvals
    approvals = opsbot_bot.services.approvals
    # the first click approved it (and, for EXECUTING, its runner started it)
    first = await approvals.vote(
        approval_id, Actor(id="shell:bob"), "approve", opsbot_bot.services.policy
    )
    assert first.status is VoteStatus.APPROVED
    if state is State.EXECUTING:
        assert await approvals.start(approval_id, "replica-of-the-first-click")
    before = await approvals.get(approval_id)
    assert before is not None and before.state is state

    late = await opsbot_bot.engine.decide(
        approval_id, Actor(id="shell:bob"), "approve", raising_reply
    )

    after = await approvals.get(approval_id)
    assert after is not None and after.state is state and after.result == before.result
    records: list[Any] = await opsbot_bot.services.audit.search()
    failed = [
        r
        for r in records
        if r.event == AuditEvent.ERROR and "failed" in (r.detail or "") and "running" in r.detail
    ]
    assert failed == []
    assert late.status is VoteStatus.UNKNOWN


async def test_a_failed_click_whose_report_finds_the_database_down_tells_the_clicker(
    opsbot_bot: TestBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    opsbot_bot.add_skill(Wobble())
    asked = await opsbot_bot.ask("wobble web", as_="shell:alice")
    [approval_id] = asked.approvals
    approvals = opsbot_bot.services.approvals

    async def lost(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("SELECT", {}, ConnectionRefusedError("connection refused"))

    async def vote_then_lose(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(approvals, "get", lost)
        raise RuntimeError("the vote broke")

    monkeypatch.setattr(approvals, "vote", vote_then_lose)
    told: list[Message] = []

    async def reply(message: Message) -> None:
        told.append(message)

    outcome = await opsbot_bot.engine.decide(
        approval_id, Actor(id="shell:bob"), "approve", reply, thread="t-1"
    )
    assert outcome.message == wording.DATABASE_UNREACHABLE
    [message] = told
    assert message.thread == "t-1" and wording.DATABASE_UNREACHABLE in message.plain
