"""``opsbot audit verify`` against the anchor file, ``opsbot audit anchor`` and
``opsbot audit retain`` (issue 15, item 4), and incidents in the console."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opsbot.cli import app
from opsbot.store import open_store
from tests.console_seed import seed

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "cli.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPSBOT_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.setenv("OPSBOT_AUDIT_ANCHOR_PATH", str(tmp_path / "anchors.jsonl"))
    monkeypatch.setenv("OPSBOT_AUDIT_ANCHOR_KEY", "k")
    monkeypatch.setenv("OPSBOT_CHART_DIR", str(tmp_path / "charts"))
    for i in range(3):
        assert runner.invoke(app, ["ask", "--as", f"shell:u{i}", "help"]).exit_code == 0
    return db


def test_verify_holds_the_chain_against_the_anchors(env: Path, tmp_path: Path) -> None:
    anchored = runner.invoke(app, ["audit", "anchor"])
    said = anchored.output.splitlines()[-1]  # after the audit.anchor log line
    assert anchored.exit_code == 0 and said.startswith("anchored record "), anchored.output
    head = int(said.split()[2])
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "chain intact, checked against 1 anchors" in ok.output
    with sqlite3.connect(env) as conn:  # the newest records deleted behind the bot's back
        conn.execute("DELETE FROM audit_events WHERE seq > ?", (head - 2,))
    caught = runner.invoke(app, ["audit", "verify"])
    assert caught.exit_code == 1
    assert f"FAIL the log ends at record {head - 2}, but the anchor" in caught.output
    assert f"records {head - 1}..{head} were deleted" in caught.output
    # an edited anchor line is refused, and said so
    line = json.loads((tmp_path / "anchors.jsonl").read_text())
    (tmp_path / "anchors.jsonl").write_text(json.dumps({**line, "seq": head - 2}) + "\n")
    edited = runner.invoke(app, ["audit", "verify"])
    assert edited.exit_code == 1 and "signature does not match" in edited.output


def _seeded(db: Path) -> None:
    """400-day-old history, then today's, in the database at ``db``."""

    async def go() -> None:
        store = await open_store(f"sqlite+aiosqlite:///{db}")
        try:
            await seed(store, now=datetime.now(UTC) - timedelta(days=400), approvals=False)
            await seed(store)
        finally:
            await store.close()

    asyncio.run(go())


def test_retain_exports_removes_and_verify_still_passes(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = tmp_path / "fresh.db"
    monkeypatch.setenv("OPSBOT_DATABASE_URL", f"sqlite+aiosqlite:///{fresh}")
    _seeded(fresh)
    with sqlite3.connect(fresh) as conn:
        total = conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]
    nothing = runner.invoke(app, ["audit", "retain", "--days", "500"])
    assert nothing.exit_code == 0 and "nothing to remove" in nothing.output
    missing = runner.invoke(app, ["audit", "retain"])
    assert missing.exit_code == 1 and "OPSBOT_AUDIT_RETENTION_DAYS" in missing.output
    done = runner.invoke(
        app, ["audit", "retain", "--days", "365", "--export-dir", str(tmp_path / "exports")]
    )
    assert done.exit_code == 0, done.output
    half = total // 2
    assert done.output.startswith(f"removed records 1..{half} ({half}); exported to ")
    [export] = (tmp_path / "exports").glob("audit-*.jsonl")
    assert len(export.read_text().splitlines()) == half
    verified = runner.invoke(app, ["audit", "verify"])
    assert verified.exit_code == 0, verified.output
    assert verified.output.startswith(f"ok: {total - half + 1} records, chain intact")
