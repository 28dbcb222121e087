"""Killing opsbot with audit appends in flight (``kill -9``) loses no acknowledged record and
leaves a chain ``opsbot audit verify`` finds intact; a restart appends on from the head.

A child process appends in a burst (many at once, through the one group-committing writer)
and writes ``seq hash`` to its stdout as each append returns; the test kills it with SIGKILL
mid-burst, then counts: every acknowledged record is stored with that hash (more may be
stored: committed, but killed before it could say so)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from opsbot.audit import AuditEvent, AuditLog
from opsbot.store import open_store

CHILD = """
import asyncio, os, sys
from opsbot.audit import AuditLog
from opsbot.store import open_store

async def main(url):
    store = await open_store(url)
    audit = AuditLog(store)
    out = sys.stdout.fileno()

    async def worker(n):
        i = 0
        while True:
            i += 1
            record = await audit.append(
                "request.received", actor=f"shell:w{n}", detail=f"burst {n}/{i}"
            )
            os.write(out, f"{record.seq} {record.hash}\\n".encode())

    os.write(out, b"ready\\n")
    await asyncio.gather(*(worker(n) for n in range(64)))

asyncio.run(main(sys.argv[1]))
"""


def _burst_then_kill(url: str, acknowledged: int) -> dict[int, str]:
    """Run the child until it has acknowledged at least ``acknowledged`` appends, kill -9 it;
    return what it acknowledged (seq -> hash)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stdout is not None
    acked: dict[int, str] = {}
    deadline = time.monotonic() + 60
    try:
        assert child.stdout.readline().strip() == b"ready", child.stderr.read()
        while len(acked) < acknowledged:
            assert time.monotonic() < deadline, "the child stopped acknowledging appends"
            line = child.stdout.readline()
            assert line, child.stderr.read()
            seq, digest = line.split()
            acked[int(seq)] = digest.decode()
        os.kill(child.pid, signal.SIGKILL)  # appends in flight: the burst never stops
        child.wait(10)
        for line in child.stdout.read().splitlines():  # acknowledged before the kill landed
            parts = line.split()
            if len(parts) == 2:
                acked[int(parts[0])] = parts[1].decode()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == -signal.SIGKILL
    return acked


def _verify(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OPSBOT_")},
        "OPSBOT_DATABASE_URL": url,
    }
    return subprocess.run(
        [sys.executable, "-m", "opsbot.cli", "audit", "verify"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_kill_9_during_an_append_burst_loses_no_acknowledged_record(
    db_url: str, tmp_path: Path
) -> None:
    await (await open_store(db_url)).close()  # migrated before the burst starts
    acked = await asyncio.to_thread(_burst_then_kill, db_url, 1500)
    store = await open_store(db_url)  # the restart
    try:
        audit = AuditLog(store)
        stored = {r.seq: r.hash for r in await audit.search(limit=1_000_000)}
        lost = {seq for seq, digest in acked.items() if stored.get(seq) != digest}
        print(f"acknowledged {len(acked)}, stored {len(stored)}, lost {len(lost)}")
        assert not lost
        assert len(stored) >= len(acked)
        assert sorted(stored) == list(range(1, len(stored) + 1))  # no gap, nothing half-written
        verified = await asyncio.to_thread(_verify, db_url, tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.startswith(f"ok: {len(stored)} records, chain intact")
        # the restarted process appends on from the head the killed one left
        after = await audit.append(AuditEvent.REQUEST, actor="shell:after", detail="restarted")
        assert after.seq == len(stored) + 1 and after.prev_hash == stored[len(stored)]
        report = await audit.verify()
        assert report.ok and report.checked == len(stored) + 1
    finally:
        await store.close()
