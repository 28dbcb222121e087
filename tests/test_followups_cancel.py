"""The follow-up loop stopped twice: once while it claims, again while its cleanup waits for
that claim. The follow-ups it was running are stopped and everything it claimed (those and
what the interrupted claim took) is handed back, for the next leader to take at once."""

from __future__ import annotations

import asyncio
from typing import Any

from opsbot.engine import Engine
from opsbot.followups import FollowUps, FollowUpState
from opsbot.services import Services
from opsbot.testing import Thread
from tests.test_faults import ALICE, Bump, bot, until_async

__all__ = ["bot"]  # the fixture, with its database per kind


async def add(queue: FollowUps, name: str) -> Any:
    return await queue.add(
        skill="test.bump",
        args={"name": name},
        actor=ALICE,
        channel="ops",
        thread=f"t-{name}",
        request_id=f"r-{name}",
        within=30,
    )


def following() -> list[asyncio.Task[Any]]:
    return [
        t for t in asyncio.all_tasks() if t.get_name().startswith("follow-up:") and not t.done()
    ]


async def test_a_runner_stopped_twice_while_it_claims_still_hands_everything_back(
    bot: Services,
) -> None:
    saved = asyncio.Event()
    claims = 0

    class SlowToReturn(FollowUps):
        async def claim(self, runner: str, *, stale_after: float, limit: int = 20) -> list[Any]:
            nonlocal claims
            taken = await super().claim(runner, stale_after=stale_after, limit=limit)
            if taken:
                claims += 1
                if claims > 1:
                    await saved.wait()  # saved, not yet returned: where a stop can land
            return taken

    queue = SlowToReturn(bot.store)
    Bump.follow_for = 30.0
    first = await add(queue, "web")
    leader = Engine(bot)
    leader.follow_ups, leader.identity = queue, "leader-1"
    running = asyncio.create_task(leader.run_follow_ups(Thread(), stale_after=60, poll=0.05))

    async def state(follow_up_id: str, wanted: FollowUpState, runner: str) -> bool:
        found = await queue.get(follow_up_id)
        return found is not None and found.state == wanted and found.runner == runner

    await until_async(lambda: state(first.id, FollowUpState.RUNNING, "leader-1"))
    await until_async(lambda: asyncio.sleep(0, bool(following())))
    second = await add(queue, "api")
    await until_async(lambda: state(second.id, FollowUpState.RUNNING, "leader-1"))
    running.cancel()  # lands in the claim, before it returns what it took
    for _ in range(20):  # let the runner reach its cleanup, waiting for the claim
        await asyncio.sleep(0)
    running.cancel()  # stopped again while the cleanup waits
    await asyncio.sleep(0.05)
    saved.set()
    await asyncio.gather(running, return_exceptions=True)
    assert running.cancelled()
    await until_async(lambda: asyncio.sleep(0, not following()), within=5)
    for follow_up in (first, second):
        await until_async(lambda f=follow_up: state(f.id, FollowUpState.PENDING, ""), within=5)
    taken = await queue.claim("leader-2", stale_after=60)
    assert sorted(f.id for f in taken) == sorted([first.id, second.id])
