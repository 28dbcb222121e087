"""The hash-chained audit log on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from sqlalchemy import delete, update

from opsbot.audit import GENESIS, AuditEvent
from opsbot.services import Services
from opsbot.store import AuditRow


async def test_chain_links_and_redacts(services: Services) -> None:
    audit = services.audit
    first = await audit.append(
        AuditEvent.REQUEST, actor="shell:alice", detail="password=hunter2 please"
    )
    second = await audit.append(
        AuditEvent.PLAN,
        actor="shell:alice",
        skill="help",
        args={"token": "abc", "q": "Authorization: Bearer abcdefghijkl"},
    )
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    stored = await audit.get(2)
    assert stored is not None and stored.hash == second.hash
    assert "hunter2" not in (await audit.get(1)).detail  # type: ignore[union-attr]
    assert stored.args["token"] == "[REDACTED]"
    assert "abcdefghijkl" not in stored.args["q"]
    report = await audit.verify()
    assert report.ok and report.checked == 2 and report.head == second.hash


async def test_verify_names_an_edited_record(services: Services) -> None:
    for i in range(5):
        await services.audit.append(AuditEvent.REQUEST, actor=f"shell:u{i}", detail=f"request {i}")
    async with services.store.sessions() as session:
        await session.execute(
            update(AuditRow).where(AuditRow.seq == 3).values(actor="shell:mallory")
        )
        await session.commit()
    report = await services.audit.verify()
    assert not report.ok
    assert report.problems == ["record 3: content does not match its hash (edited)"]


async def test_verify_detects_rehashed_edit_and_deletion(services: Services) -> None:
    for i in range(5):
        await services.audit.append(AuditEvent.REQUEST, actor="shell:alice", detail=f"r{i}")
    record = await services.audit.get(2)
    assert record is not None
    from dataclasses import replace

    forged = replace(record, detail="nothing happened")
    async with services.store.sessions() as session:  # a forger who recomputes the hash too
        await session.execute(
            update(AuditRow)
            .where(AuditRow.seq == 2)
            .values(detail=forged.detail, hash=forged.computed_hash())
        )
        await session.execute(delete(AuditRow).where(AuditRow.seq == 4))
        await session.commit()
    problems = (await services.audit.verify()).problems
    assert "record 3: prev_hash does not match the record before it" in problems
    assert "records 4..4 are missing (deleted?)" in problems
    assert "record 5: prev_hash does not match the record before it" in problems


async def test_concurrent_appends_keep_one_unbroken_chain(services: Services) -> None:
    await asyncio.gather(
        *(services.audit.append(AuditEvent.REQUEST, actor=f"shell:{i}") for i in range(40))
    )
    report = await services.audit.verify()
    assert report.ok and report.checked == 40
    assert [r.seq for r in await services.audit.search(limit=100)] == list(range(1, 41))


async def test_search_filters(services: Services) -> None:
    await services.audit.append(AuditEvent.EXECUTION, actor="shell:alice", skill="alerts.silence")
    await services.audit.append(AuditEvent.EXECUTION, actor="shell:bob", skill="help")
    found = await services.audit.search(actor="alice")
    assert [r.skill for r in found] == ["alerts.silence"]
    assert [r.actor for r in await services.audit.search(skill="help")] == ["shell:bob"]


async def test_records_queued_when_the_writer_is_cancelled_do_not_hang_their_waiters(
    services: Services,
) -> None:
    """The loop shutting down cancels the writer task: whoever waits on a record it will
    never write is woken (cancelled), never left waiting for ever (a request's last trail
    flush hung a test's teardown that way)."""
    from opsbot.audit import AuditWriter

    await services.audit.append(AuditEvent.REQUEST, actor="shell:alice", detail="first")
    writer = AuditWriter.of(services.store)
    assert writer._task is not None
    entry = services.audit.enqueue(AuditEvent.REQUEST, actor="shell:alice", detail="queued")
    writer._task.cancel()  # before it has taken the queued record
    await asyncio.gather(writer._task, return_exceptions=True)
    done, _ = await asyncio.wait([entry], timeout=2)
    assert done and entry.cancelled()
