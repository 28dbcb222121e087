"""A request's steps: each message is posted only once its audit record is committed, in
order, whether the steps were held, flushed in the background or one by one."""

from __future__ import annotations

from opsbot.audit import AuditEvent
from opsbot.model import Message, Step
from opsbot.services import Services
from opsbot.trail import Trail


async def test_messages_follow_their_committed_records_in_order(services: Services) -> None:
    posted: list[tuple[str, int]] = []

    async def post(message: Message) -> None:  # how many records are committed by now
        posted.append((message.plain, await services.audit.count()))

    trail = Trail(services.audit, post, "shell:alice", "c", "T1", "r1")
    await trail.record(AuditEvent.REQUEST, detail="hi", hold=True)
    await trail.step(Step.PLAN, AuditEvent.PLAN, "plan", hold=True)
    await trail.step(Step.POLICY, AuditEvent.POLICY, "policy", hold=True)
    trail.flush_soon()  # posted in the background as they are committed
    await trail.step(Step.PLAN, AuditEvent.PLAN, "second plan", hold=True)
    trail.flush_soon()
    await trail.record(AuditEvent.RESULT, outcome="ok")
    await trail.say(Step.RESULT, "result")
    assert [text for text, _ in posted] == ["plan", "policy", "second plan", "result"]
    assert [count >= n for (_, count), n in zip(posted, (2, 3, 4, 5), strict=True)] == [True] * 4
    assert [r.event for r in await services.audit.search()] == [
        AuditEvent.REQUEST,
        AuditEvent.PLAN,
        AuditEvent.POLICY,
        AuditEvent.PLAN,
        AuditEvent.RESULT,
    ]
