"""Silences against the real Alertmanager (the ``stack`` fixture; ``HighErrorRate`` fires for
checkout within seconds): ``alerts.list`` says what is silenced, a silence preview counts only
what it newly mutes, ``alerts.silences`` lists silences and ``alerts.unsilence`` expires them
through policy and approval.

Most requests here go to the engine through :class:`Fixed`, a planner that always plans one
given invocation, so these tests exercise the skills, policy and approvals, not the router;
a few at the end check that the skills' keywords and ``route_args`` route the usual phrasings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from opsbot.demo import LocalStack
from opsbot.engine import Engine
from opsbot.intent.base import ToolRunner
from opsbot.model import Actor, Invocation, Plan, Request, Run
from opsbot.skills.base import Skill
from tests.conftest import Thread

ALICE, BOB, DAVE = Actor(id="shell:alice"), Actor(id="shell:bob"), Actor(id="shell:dave")
CHECKOUT = {"alertname": "HighErrorRate", "service": "checkout"}


class Fixed:
    """A planner that plans ``skill(args)`` whatever the request says."""

    name = "fixed"

    def __init__(self, skill: str, args: dict[str, Any]) -> None:
        self.invocation = Invocation(skill=skill, args=args)

    async def plan(
        self, request: Request, catalog: Sequence[Skill[Any, Any]], tools: ToolRunner | None = None
    ) -> Plan:
        return Run(invocations=[self.invocation])

    async def explain(self, request: Request, withheld: Sequence[Skill[Any, Any]]) -> str | None:
        return None


async def run(
    live: Engine, skill: str, args: dict[str, Any] | None = None, actor: Actor = ALICE
) -> Thread:
    """``skill(args)`` as ``actor`` through the engine (policy, approval, audit)."""
    thread = Thread()
    engine = Engine(live.services, planner=Fixed(skill, args or {}))
    await engine.handle(Request(actor=actor, channel="shell", text=f"{skill} {args}"), thread)
    return thread


def hhmm(iso: str) -> str:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).strftime("%H:%M")


Silencer = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def silence(stack: LocalStack) -> AsyncIterator[Silencer]:
    """Create a silence directly in Alertmanager (``starts_in`` > 0: a pending one) and wait
    until the alerts it matches show as silenced; every silence still open is expired after
    the test so the next tests see HighErrorRate firing again."""
    created: list[str] = []
    async with httpx.AsyncClient(base_url=stack.alertmanager_url) as am:

        async def make(
            matchers: dict[str, str],
            *,
            hours: float = 1,
            starts_in: float = 0,
            comment: str = "test",
            by: str = "tests",
        ) -> dict[str, Any]:
            start = datetime.now(UTC) + timedelta(hours=starts_in)
            body = {
                "matchers": [
                    {"name": k, "value": v, "isRegex": False, "isEqual": True}
                    for k, v in matchers.items()
                ],
                "startsAt": start.isoformat(),
                "endsAt": (start + timedelta(hours=hours)).isoformat(),
                "createdBy": by,
                "comment": comment,
            }
            answer = await am.post("/api/v2/silences", json=body)
            answer.raise_for_status()
            silence_id = answer.json()["silenceID"]
            created.append(silence_id)
            if not starts_in:
                await until_silenced(am, silence_id)
            got: dict[str, Any] = (await am.get(f"/api/v2/silence/{silence_id}")).json()
            return got

        yield make
        for silence_id in created:
            state = (await am.get(f"/api/v2/silence/{silence_id}")).json()["status"]["state"]
            if state != "expired":
                await am.delete(f"/api/v2/silence/{silence_id}")


async def until_silenced(am: httpx.AsyncClient, silence_id: str) -> None:
    async with asyncio.timeout(10):
        while True:
            alerts = (await am.get("/api/v2/alerts")).json()
            if any(silence_id in a["status"]["silencedBy"] for a in alerts):
                return
            await asyncio.sleep(0.2)


async def silences(stack: LocalStack) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{stack.alertmanager_url}/api/v2/silences")).json()  # type: ignore[no-any-return]


# -- alerts.list and alerts.silence's preview: what is already silenced ----------------------


async def test_list_says_what_is_silenced_when_nothing_fires(
    live: Engine, silence: Silencer
) -> None:
    muted = await silence({"alertname": "HighErrorRate"})
    thread = await run(live, "alerts.list", {"matchers": CHECKOUT})
    assert (
        "no firing alerts alertname=HighErrorRate service=checkout; "
        f"1 silenced: HighErrorRate until {hhmm(muted['endsAt'])} UTC"
    ) in thread.text, thread.text


async def test_list_mentions_silenced_beside_firing(
    live: Engine, stack: LocalStack, silence: Silencer
) -> None:
    labels = {"alertname": "DiskAlmostFull", "service": "checkout", "severity": "warning"}
    async with httpx.AsyncClient(base_url=stack.alertmanager_url) as am:
        ends = datetime.now(UTC) + timedelta(minutes=2)
        await am.post("/api/v2/alerts", json=[{"labels": labels, "endsAt": ends.isoformat()}])
        try:
            await silence({"alertname": "HighErrorRate"})
            thread = await run(live, "alerts.list", {"matchers": {"service": "checkout"}})
        finally:  # resolve it: the next tests see only the demo's alerts
            now = datetime.now(UTC).isoformat()
            await am.post("/api/v2/alerts", json=[{"labels": labels, "endsAt": now}])
    assert "1 firing alert(s) service=checkout" in thread.text, thread.text
    assert "DiskAlmostFull" in thread.text
    assert "also 1 silenced: HighErrorRate until" in thread.text, thread.text


async def test_silence_preview_does_not_count_already_silenced_alerts(
    live: Engine, silence: Silencer
) -> None:
    muted = await silence({"alertname": "HighErrorRate"})
    thread = await run(
        live, "alerts.silence", {"matchers": {"service": "checkout"}, "duration": "1h"}
    )
    [approval_id] = thread.approval_ids
    card = thread.messages.card(approval_id)
    assert "would mute 1" not in card.preview, card.preview
    assert "would mute no new alert" in card.preview, card.preview
    assert f"1 already silenced: HighErrorRate until {hhmm(muted['endsAt'])} UTC" in card.preview, (
        card.preview
    )
