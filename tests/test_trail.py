"""A request's steps: each message is posted only once its audit record is committed, in
order, whether the steps were held, flushed in the background or one by one."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from opsbot.audit import AuditEvent, AuditLog
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


class _Records:
    """An audit log whose records commit (or fail) when the test says so."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    def enqueue(self, event: str, **_: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


async def test_a_read_never_goes_on_as_recorded_when_its_record_failed_beside_another() -> None:
    """Two reads on one trail (a triage's evidence): the first read's failed record drops what
    was held after it, the second read's result record among them; that read still raises
    instead of going on as if its result were on record."""
    records, posted = _Records(), []

    async def post(message: Message) -> None:
        posted.append(message.plain)

    trail = Trail(cast(AuditLog, records), post, "shell:alice", "c", "T1", "r1")
    await trail.step(Step.POLICY, AuditEvent.POLICY, "a allowed", hold=True)
    trail.flush_soon()
    await trail.step(Step.POLICY, AuditEvent.POLICY, "b allowed", hold=True)
    trail.flush_soon()
    a = asyncio.create_task(trail.record(AuditEvent.RESULT, outcome="ok"))
    await asyncio.sleep(0)
    b = asyncio.create_task(trail.record(AuditEvent.RESULT, outcome="ok"))
    await asyncio.sleep(0)
    a_policy, b_policy, a_result, b_result = records.futures
    a_policy.set_exception(RuntimeError("database down"))
    b_policy.set_result(None)
    a_result.set_result(None)
    b_result.set_exception(RuntimeError("database down"))
    results = await asyncio.gather(a, b, return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert posted == []


async def test_a_request_cancelled_twice_while_its_trail_flushes_posts_nothing_after_it_ended() -> (
    None
):
    """Three reads' steps flushed in the background; the request is cancelled while it waits
    for them, and again while its last flush (its ``finally``, as Engine._run_request's) runs.
    Once its task has ended nothing more of it reaches the thread, and what was posted before
    is in the order of the steps."""
    records, posted = _Records(), []

    async def post(message: Message) -> None:
        posted.append(message.plain)

    trail = Trail(cast(AuditLog, records), post, "shell:alice", "c", "T1", "r1")
    for read in ("a", "b", "c"):
        await trail.step(Step.POLICY, AuditEvent.POLICY, f"{read} allowed", hold=True)
        trail.flush_soon()

    async def request() -> None:
        try:
            await trail.record(AuditEvent.RESULT, outcome="ok")
        finally:
            await trail.flush()  # whatever is still held

    task = asyncio.create_task(request())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()  # while it waits for the background flushes
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()  # in its last flush
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ended = list(posted)
    for record in records.futures:  # the records are committed after all
        if not record.done():
            record.set_result(None)
    for _ in range(20):
        await asyncio.sleep(0)
    assert posted == ended == []
    assert not [t for t in trail.posting if not t.done()]


async def test_a_request_cancelled_once_while_its_trail_flushes_still_posts_its_steps_in_order() -> (
    None
):
    """Cancelled once while it waits for the background flushes: the request's last flush
    posts every step that is on record, in order, before its task ends (none is lost with
    the background flush that was waiting for it)."""
    records, posted = _Records(), []

    async def post(message: Message) -> None:
        posted.append(message.plain)

    trail = Trail(cast(AuditLog, records), post, "shell:alice", "c", "T1", "r1")
    for read in ("a", "b", "c"):
        await trail.step(Step.POLICY, AuditEvent.POLICY, f"{read} allowed", hold=True)
        trail.flush_soon()

    async def request() -> None:
        try:
            await trail.record(AuditEvent.RESULT, outcome="ok")
        finally:
            await trail.flush()

    task = asyncio.create_task(request())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    for record in records.futures:
        record.set_result(None)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert posted == ["a allowed", "b allowed", "c allowed"]
