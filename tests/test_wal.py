"""SQLite's log is checkpointed by opsbot's own thread, never inside a commit (a commit that
checkpoints waits for the copy and its sync: the engine-overhead p99 of ``make bench``)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy import text

from opsbot.audit import AuditLog
from opsbot.store import open_store


async def test_no_commit_checkpoints_and_the_log_is_checkpointed_beside(tmp_path: Path) -> None:
    path = tmp_path / "opsbot.db"
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    assert store.checkpointer is not None
    store.checkpointer.interval = 0.05
    audit = AuditLog(store)
    await audit.append("request.received", actor="shell:alice", detail="x" * 4000)
    async with store.engine.connect() as conn:  # the ORM's connections
        assert (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 0
    writer = store.audit_writer._db  # the audit writer's own connection
    assert writer.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
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
    wal = tmp_path / "opsbot.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    with sqlite3.connect(path) as conn:  # everything is in the database file itself
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 3001


async def test_a_memory_database_has_no_checkpointer() -> None:
    store = await open_store("sqlite+aiosqlite:///:memory:")
    assert store.checkpointer is None
    await store.close()
