"""SQLite's log is checkpointed by opsbot's own thread, not inside a commit (a commit that
checkpoints waits for the copy and its sync: the engine-overhead p99 of ``make bench``), with the
automatic checkpoint kept as a backstop so back-to-back commits cannot grow the log forever."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from opsbot import wal
from opsbot.audit import AuditLog
from opsbot.store import open_store


async def test_commits_leave_checkpoints_to_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "opsbot.db"
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    assert store.checkpointer is not None
    store.checkpointer.interval = 0.05
    audit = AuditLog(store)
    await audit.append("request.received", actor="shell:alice", detail="x" * 4000)
    async with store.engine.connect() as conn:  # the ORM's connections
        backstop = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar()
        assert backstop == wal.BACKSTOP_PAGES
    writer = store.audit_writer._db  # the audit writer's own connection
    assert writer.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == wal.BACKSTOP_PAGES
    # enough records for SQLite's automatic checkpoint (1,000 pages) several times over
    await asyncio.gather(
        *(
            audit.append("request.received", actor="shell:alice", detail="y" * 4000)
            for _ in range(3000)
        )
    )
    for _ in range(100):
        if store.checkpointer.checkpoints:
            break
        await asyncio.sleep(0.05)
    assert store.checkpointer.checkpoints >= 1
    await store.close()
    log_file = tmp_path / "opsbot.db-wal"
    assert not log_file.exists() or log_file.stat().st_size == 0
    with sqlite3.connect(path) as conn:  # everything is in the database file itself
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 3001


async def test_a_memory_database_has_no_checkpointer() -> None:
    store = await open_store("sqlite+aiosqlite:///:memory:")
    assert store.checkpointer is None
    await store.close()


async def test_back_to_back_commits_do_not_grow_the_log_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint beside writers never catches up with commits that keep coming, and the log
    restarts only after one that did: the backstop bounds it (without it: 42 MB in 2 s)."""
    monkeypatch.setattr(wal, "BACKSTOP_PAGES", 200)
    path = tmp_path / "opsbot.db"
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    assert store.checkpointer is not None
    store.checkpointer.interval = 0.01  # the thread checkpoints all the time, beside the commits
    audit = AuditLog(store)
    log = tmp_path / "opsbot.db-wal"
    largest = 0
    for _ in range(60):  # ~6 MB of records, each batch its own commit, back to back
        await asyncio.gather(
            *(
                audit.append("request.received", actor="shell:a", detail="z" * 4000)
                for _ in range(25)
            )
        )
        largest = max(largest, log.stat().st_size)
    await store.close()
    assert largest < 4 * 1024 * 1024, largest  # 200 pages of 4 KiB, a batch past them, and slack
