"""The chat adapters' bounded work (opsbot.adapters.work): a worker pool, one thread's
requests in order, a full queue refused at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from opsbot.adapters.work import Work, queued


async def test_one_threads_requests_run_in_order_others_alongside() -> None:
    work = Work("test", workers=4, limit=100)
    ran: list[str] = []
    gate = asyncio.Event()

    def job(name: str, wait: bool = False) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if wait:
                await gate.wait()
            ran.append(name)

        return run

    first = work.submit("T1", job("T1-a", wait=True))
    second = work.submit("T1", job("T1-b"))
    other = work.submit("T2", job("T2-a"))
    assert first is not None and second is not None and other is not None
    await asyncio.wait_for(other, 1)  # another thread is not held up by T1
    assert ran == ["T2-a"] and not second.done()  # T1's second waits for its first
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert ran == ["T2-a", "T1-a", "T1-b"]
    await work.stop()


async def test_a_full_queue_refuses_at_once_and_a_failing_job_is_logged() -> None:
    work = Work("test", workers=1, limit=2)
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    async def fails() -> None:
        raise RuntimeError("boom")

    running = work.submit("A", slow)
    await asyncio.sleep(0.01)  # the worker took it: nothing waits
    waiting = [work.submit("B", fails), work.submit("C", slow)]
    assert running is not None and all(w is not None for w in waiting) and work.waiting == 2
    refused: list[int] = []

    async def busy(n: int) -> None:
        refused.append(n)

    await asyncio.wait_for(queued(work, "D", slow, busy), 1)
    assert refused == [2] and work.refused == 1
    gate.set()
    await asyncio.wait_for(asyncio.gather(running, *[w for w in waiting if w]), 1)
    assert work.waiting == 0 and work.running == 0
    await work.stop()
