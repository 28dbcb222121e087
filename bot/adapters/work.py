"""Bounded work for a chat adapter: requests from chat events wait in a queue served by a pool
of workers, in order per thread.

An adapter hands each request (a mention, a direct message, a slash command, a suggested
action clicked) to :meth:`Work.submit` with its thread and goes back to the platform at once.
``OPSBOT_WORKERS`` workers take them in arrival order, but one thread's requests run one at a
time, in the order they came (a question's answer never overtakes the question). When
``OPSBOT_QUEUE_LIMIT`` requests are already waiting, the next is refused straight away: the
adapter tells its thread that the bot is busy and to ask again (:func:`opsbot.wording.busy`),
instead of leaving it to wait for minutes. Approve and Deny clicks are not queued: a decision
is small, and a full queue must not refuse it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from opsbot import telemetry

log = structlog.get_logger(__name__)

Job = Callable[[], Awaitable[object]]


@dataclass
class _Thread:
    jobs: deque[tuple[Job, asyncio.Future[None], float]] = field(default_factory=deque)
    running: bool = False


class Work:
    """The queue and worker pool of one adapter (``name``: for logs and metrics)."""

    def __init__(self, name: str, workers: int = 16, limit: int = 200) -> None:
        self.name = name
        self.size = max(1, workers)
        self.limit = max(0, limit)
        self.waiting = 0  # submitted, not started
        self.running = 0
        self.refused = 0
        self._threads: dict[str, _Thread] = {}
        self._ready: asyncio.Queue[str] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(self, thread: str, job: Job) -> asyncio.Future[None] | None:
        """Queue ``job`` behind the work of ``thread``; the future is done when it has run
        (its errors are logged, not raised). None: the queue is full, nothing was queued."""
        if self.waiting >= self.limit:
            self.refused += 1
            telemetry.WORK_REFUSED.labels(self.name).inc()
            log.warning("work.busy", adapter=self.name, waiting=self.waiting, limit=self.limit)
            return None
        ready = self._start()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state = self._threads.setdefault(thread, _Thread())
        state.jobs.append((job, done, time.monotonic()))
        self.waiting += 1
        telemetry.WORK_WAITING.labels(self.name).set(self.waiting)
        if not state.running and len(state.jobs) == 1:
            ready.put_nowait(thread)
        return done

    def _start(self) -> asyncio.Queue[str]:
        """The workers, started in the running loop on first use."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._ready is None:
            self._loop = loop
            self._ready = asyncio.Queue()
            self._threads.clear()
            self.waiting = self.running = 0
            self._workers = [
                loop.create_task(self._work(), name=f"{self.name}-worker-{i}")
                for i in range(self.size)
            ]
        return self._ready

    async def _work(self) -> None:
        ready = self._ready
        assert ready is not None
        while True:
            thread = await ready.get()
            state = self._threads[thread]
            job, done, queued = state.jobs.popleft()
            state.running = True
            self.waiting -= 1
            self.running += 1
            telemetry.WORK_WAITING.labels(self.name).set(self.waiting)
            telemetry.WORK_WAIT.labels(self.name).observe(time.monotonic() - queued)
            try:
                await job()
            except Exception:
                log.exception("work.failed", adapter=self.name, thread=thread[:80])
            finally:
                self.running -= 1
                state.running = False
                if not done.done():
                    done.set_result(None)
                if state.jobs:
                    ready.put_nowait(thread)
                else:
                    del self._threads[thread]

    async def stop(self) -> None:
        """Stop the workers (what is still queued is dropped: ``opsbot serve`` drains the
        work in flight first, which counts the queued requests)."""
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for state in self._threads.values():
            for _, done, _ in state.jobs:
                if not done.done():
                    done.set_result(None)
        self._threads.clear()
        self._ready = None
        self._loop = None


async def queued(
    work: Work, thread: str, job: Job, refused: Callable[[int], Awaitable[None]]
) -> None:
    """Run ``job`` through ``work`` and wait for it (so the handler counts as work in flight
    until it has run); when the queue is full, ``refused(waiting)`` instead."""
    done = work.submit(thread, job)
    if done is None:
        await refused(work.waiting)
        return
    await done
