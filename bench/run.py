"""Benchmarks: offline routing latency, audit append/verify throughput, approval round trip.

Prints a table. Databases: SQLite in a temporary folder, plus PostgreSQL when
``OPSBOT_TEST_POSTGRES_URL`` is set. Run: ``make bench`` (or ``python bench/run.py``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opsbot.approvals import Approvals  # noqa: E402
from opsbot.audit import AuditEvent, AuditLog  # noqa: E402
from opsbot.evaluation import load_cases  # noqa: E402
from opsbot.intent.offline import OfflineRouter  # noqa: E402
from opsbot.model import Actor, Invocation, Request  # noqa: E402
from opsbot.policy import NeedsApproval, Policy  # noqa: E402
from opsbot.skills.base import load_registry  # noqa: E402
from opsbot.store import open_store, scratch_database  # noqa: E402

Row = tuple[str, str, str]


async def bench_router() -> list[Row]:
    cases = load_cases(ROOT / "eval" / "routing-dev.yaml") + load_cases(
        ROOT / "eval" / "routing-extra.yaml"
    )
    router, catalog = OfflineRouter(), list(load_registry())
    actor = Actor(id="shell:alice")
    timings = []
    tracemalloc.start()
    for _ in range(5):
        for case in cases:
            started = time.perf_counter()
            await router.plan(Request(actor=actor, channel="b", text=case.text), catalog)
            timings.append(time.perf_counter() - started)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    timings.sort()
    return [
        (
            "offline router, mean per request",
            f"{statistics.mean(timings) * 1000:.3f} ms",
            f"{len(timings)} plans",
        ),
        (
            "offline router, p95 per request",
            f"{timings[int(len(timings) * 0.95)] * 1000:.3f} ms",
            "",
        ),
        ("offline router, peak traced memory", f"{peak / 1024:.0f} KiB", "tracemalloc"),
    ]


async def bench_store(label: str, url: str) -> list[Row]:
    store = await open_store(url)
    audit, approvals = AuditLog(store), Approvals(store)
    n = 300
    started = time.perf_counter()
    for i in range(n):
        await audit.append(AuditEvent.REQUEST, actor="shell:bench", detail=f"request {i}")
    append_s = time.perf_counter() - started
    started = time.perf_counter()
    report = await audit.verify()
    verify_s = time.perf_counter() - started
    assert report.ok
    policy = Policy.load(ROOT / "policies" / "default.yaml")
    decision = NeedsApproval("bench", ("group:oncall",), 1, timedelta(minutes=5))
    rounds = []
    for _ in range(50):
        started = time.perf_counter()
        approval = await approvals.open(
            Request(actor=Actor(id="shell:alice"), channel="b", text="x"),
            Invocation(skill="alerts.silence", args={}),
            decision,
        )
        await approvals.vote(approval.id, Actor(id="shell:bob"), "approve", policy)
        await approvals.finish(approval.id, ok=True, result="done")
        rounds.append(time.perf_counter() - started)
    await store.close()
    return [
        (
            f"audit append ({label})",
            f"{n / append_s:.0f} records/s",
            f"{n} sequential, hash-chained",
        ),
        (f"audit verify ({label})", f"{report.checked / verify_s:.0f} records/s", ""),
        (
            f"approval open+vote+finish ({label})",
            f"{statistics.mean(rounds) * 1000:.1f} ms",
            "mean of 50",
        ),
    ]


async def main() -> None:
    rows = await bench_router()
    with tempfile.TemporaryDirectory() as tmp:
        rows += await bench_store("SQLite", f"sqlite+aiosqlite:///{tmp}/bench.db")
    pg = os.environ.get("OPSBOT_TEST_POSTGRES_URL")
    if pg:
        async with scratch_database(pg, "opsbot_bench") as url:
            rows += await bench_store("PostgreSQL", url)
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'result':>18}  notes")
    print("-" * (width + 30))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")


if __name__ == "__main__":
    asyncio.run(main())
