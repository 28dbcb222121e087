"""The console's chain watcher (:class:`opsbot.adapters.console.ChainWatcher`): a full walk
asked for while a walk runs is the next walk, not one a whole interval later."""

from __future__ import annotations

import asyncio
from typing import Any

from opsbot.adapters.console import ChainWatcher
from opsbot.audit import AuditEvent
from opsbot.services import Services


async def test_a_full_walk_asked_for_during_a_walk_runs_next(sqlite_services: Services) -> None:
    services = sqlite_services
    await services.audit.append(AuditEvent.REQUEST, actor="shell:alice", detail="x")
    watcher = ChainWatcher(services, None, interval=3600)  # the next round only when woken
    walks: list[bool] = []
    held, release = asyncio.Event(), asyncio.Event()
    check = watcher.check

    async def noted(*, full: bool) -> Any:
        walks.append(full)
        if len(walks) == 1:  # the first walk is under way when the full one is asked for
            held.set()
            await release.wait()
        return await check(full=full)

    watcher.check = noted  # type: ignore[method-assign]
    running = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(held.wait(), 5)
        watcher.request_full()
        release.set()
        for _ in range(200):
            if len(walks) >= 2:
                break
            await asyncio.sleep(0.01)
        assert walks[:2] == [True, True], walks  # it used to wait the 3600 s interval
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
