"""The inventory is off the request path: a request reads the last snapshot, a stale one is
refreshed in the background, backends are asked in parallel each within its own timeout, a
hung backend never holds a request up, and skills that need no grounding ask for none."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import ClassVar

from opsbot.config import Settings
from opsbot.engine import Engine
from opsbot.inventory import Inventory
from opsbot.model import Actor, Request
from opsbot.policy import Policy
from opsbot.services import build_services
from opsbot.skills.base import Backend, NoSettings, SkillRegistry, load_registry
from opsbot.testing import Thread
from tests.conftest import make_settings


class Fast(Backend[NoSettings]):
    name = "fast"
    names: ClassVar[set[str]] = {"checkout", "cart"}
    asked = 0

    async def inventory(self) -> dict[str, set[str]]:
        type(self).asked += 1
        return {"service": set(self.names)}


class Hung(Backend[NoSettings]):
    name = "hung"
    answer: ClassVar[dict[str, set[str]] | None] = None
    asked = 0

    async def inventory(self) -> dict[str, set[str]]:
        type(self).asked += 1
        if self.answer is not None:
            return self.answer
        await asyncio.sleep(3600)
        return {}


def registry() -> SkillRegistry:
    settings = Settings()
    Fast.asked = Hung.asked = 0
    Hung.answer = None
    return SkillRegistry([Fast(NoSettings(), settings), Hung(NoSettings(), settings)])


async def test_a_hung_backend_holds_up_only_the_first_snapshot() -> None:
    inventory = Inventory(registry(), ttl=0.05, timeout=0.5)
    started = time.monotonic()
    first = await inventory.snapshot()  # a process's first: waits, at most the timeout
    assert 0.4 < time.monotonic() - started < 2
    assert first == {"service": {"checkout", "cart"}}
    await asyncio.sleep(0.1)  # stale now: the next read starts a refresh and does not wait
    for _ in range(20):
        started = time.monotonic()
        assert "checkout" in await inventory.names("service")
        assert time.monotonic() - started < 0.05
    Fast.names = {"checkout", "cart", "payments"}
    await asyncio.sleep(0.6)  # the refresh in the background ends (the hung one timed out)
    await inventory.snapshot()
    await asyncio.sleep(0.6)
    assert "payments" in await inventory.names("service")
    assert Fast.asked >= 2 and Hung.asked >= 2
    Fast.names = {"checkout", "cart"}


async def test_a_backend_that_stops_answering_keeps_its_last_names() -> None:
    inventory = Inventory(registry(), ttl=0.05, timeout=0.3)
    Hung.answer = {"namespace": {"shop"}}
    assert (await inventory.snapshot())["namespace"] == {"shop"}
    Hung.answer = None  # hangs from now on
    await asyncio.sleep(0.1)
    await inventory.snapshot()
    await asyncio.sleep(0.5)
    assert await inventory.names("namespace") == {"shop"}  # the last answer stands


async def test_skills_that_need_no_grounding_ask_for_none(tmp_path: Path, policy: Policy) -> None:
    """`help` and `approvals.pending` take no name: with every backend hung they are answered
    at once and the inventory is never asked; a request that names a service is grounded."""
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'o.db'}", tmp_path)
    reg = load_registry(settings)
    hung = Hung(NoSettings(), settings)
    reg.add_backend(hung)
    Hung.answer, Hung.asked = None, 0
    services = await build_services(settings, registry=reg, policy=policy)
    services.inventory.timeout = 1.0
    try:
        engine = Engine(services)
        alice = Actor(id="shell:alice")
        for text in ("help", "what approvals are pending"):
            thread = Thread()
            started = time.monotonic()
            await engine.handle(Request(actor=alice, channel="c", text=text), thread)
            assert time.monotonic() - started < 0.5, text
            assert "Refused" not in thread.text
        assert Hung.asked == 0 and services.inventory.refreshes == 0
        await engine.handle(
            Request(actor=alice, channel="c", text="health of checkout in shop"), Thread()
        )
        assert services.inventory.refreshes == 1  # a name to ground: the inventory is read
    finally:
        await services.close()
