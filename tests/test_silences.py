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

from opsbot.approvals import State, VoteStatus
from opsbot.demo import LocalStack
from opsbot.engine import Engine
from opsbot.intent.base import ToolRunner
from opsbot.intent.offline import OfflineRouter
from opsbot.model import Actor, Invocation, Plan, Request, Run
from opsbot.skills.base import Risk, Skill, load_registry
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
    until the alerts it matches show as silenced (unless ``mutes=False``); every silence still open is expired after
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
            mutes: bool = True,
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
            if mutes and not starts_in:
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


# -- alerts.silences ------------------------------------------------------------------------


async def test_silences_lists_active_and_pending_with_id_creator_and_end(
    live: Engine, stack: LocalStack, silence: Silencer
) -> None:
    active = await silence({"alertname": "HighErrorRate"}, by="shell:carol", comment="deploy")
    pending = await silence({"service": "cart"}, starts_in=1, hours=2, comment="window")
    ended = await silence({"service": "payments"}, mutes=False, comment="old")
    async with httpx.AsyncClient() as client:
        await client.delete(f"{stack.alertmanager_url}/api/v2/silence/{ended['id']}")

    thread = await run(live, "alerts.silences", {}, actor=DAVE)  # a read: anyone may
    text = thread.text
    assert "silence(s) (" in text and "active" in text and "pending" in text, text
    row = next(line for line in text.splitlines() if active["id"] in line)
    assert 'active | {alertname="HighErrorRate"} | shell:carol' in row, row
    assert f"{hhmm(active['endsAt'])} UTC (in 59m)" in row or "(in 1h)" in row, row
    assert 'HighErrorRate{namespace="shop", service="checkout"}' in row, row  # mutes now
    pending_row = next(line for line in text.splitlines() if pending["id"] in line)
    assert f'pending | {{service="cart"}} | tests | starts {hhmm(pending["startsAt"])} UTC' in (
        pending_row
    ), pending_row
    assert ended["id"] not in text
    assert "expired not shown (ask for expired silences)" in text

    expired = await run(live, "alerts.silences", {"state": "expired"})
    assert ended["id"] in expired.text and active["id"] not in expired.text

    # on checkout: the silence muting checkout's alert, not cart's
    checkout = await run(live, "alerts.silences", {"matchers": {"service": "checkout"}})
    assert active["id"] in checkout.text and pending["id"] not in checkout.text


async def test_no_silences_says_so(live: Engine) -> None:
    thread = await run(live, "alerts.silences", {"matchers": {"alertname": "NoSuchAlert"}})
    assert 'No active or pending silences on {alertname="NoSuchAlert"}.' in thread.text


# -- alerts.unsilence -------------------------------------------------------------------------


async def firing(stack: LocalStack, alertname: str) -> bool:
    async with httpx.AsyncClient() as client:
        alerts = (
            await client.get(
                f"{stack.alertmanager_url}/api/v2/alerts",
                params={"silenced": "false", "inhibited": "false"},
            )
        ).json()
    return any(a["labels"]["alertname"] == alertname for a in alerts)


async def test_unsilence_by_matchers_previews_then_expires_after_approval(
    live: Engine, stack: LocalStack, silence: Silencer
) -> None:
    muted = await silence({"alertname": "HighErrorRate"}, by="shell:carol")
    assert not await firing(stack, "HighErrorRate")

    thread = await run(live, "alerts.unsilence", {"matchers": {"alertname": "HighErrorRate"}})
    [approval_id] = thread.approval_ids
    preview = thread.messages.card(approval_id).preview
    assert f'would expire 1 silence(s):\n- {muted["id"]} {{alertname="HighErrorRate"}}' in (
        preview
    ), preview
    assert "(active, by shell:carol, ends" in preview
    assert (
        "mutes 1 alert(s) now, which would notify again: "
        'HighErrorRate{namespace="shop", service="checkout"}'
    ) in preview, preview
    states = {s["id"]: s["status"]["state"] for s in await silences(stack)}
    assert states[muted["id"]] == "active"  # nothing happens before the approval

    outcome = await live.decide(approval_id, BOB, "approve", thread)
    assert outcome.status is VoteStatus.APPROVED
    states = {s["id"]: s["status"]["state"] for s in await silences(stack)}
    assert states[muted["id"]] == "expired"
    approval = await live.services.approvals.get(approval_id)
    assert approval is not None and approval.state is State.EXECUTED
    assert muted["id"] in approval.result
    assert "Notifying again: HighErrorRate" in thread.text
    assert await firing(stack, "HighErrorRate")


async def test_unsilence_by_id_prefix_and_its_refusals(
    live: Engine, stack: LocalStack, silence: Silencer
) -> None:
    muted = await silence({"alertname": "HighErrorRate"})
    thread = await run(live, "alerts.unsilence", {"id": muted["id"][:8]})
    [approval_id] = thread.approval_ids
    assert muted["id"] in thread.messages.card(approval_id).preview
    await live.decide(approval_id, BOB, "approve", thread)
    states = {s["id"]: s["status"]["state"] for s in await silences(stack)}
    assert states[muted["id"]] == "expired"

    again = await run(live, "alerts.unsilence", {"id": muted["id"]})  # already expired
    assert not again.approval_ids
    assert f'Silence {muted["id"]} {{alertname="HighErrorRate"}} already ended' in again.text

    nothing = await run(live, "alerts.unsilence", {"matchers": {"alertname": "NoSuchAlert"}})
    assert not nothing.approval_ids
    assert 'No active or pending silence is on {alertname="NoSuchAlert"}' in nothing.text

    unknown = await run(live, "alerts.unsilence", {"id": "00000000-0000-4000-8000-000000000000"})
    assert "No silence has id 00000000-0000-4000-8000-000000000000" in unknown.text


async def test_unsilence_follows_the_policy(live: Engine, silence: Silencer) -> None:
    await silence({"alertname": "HighErrorRate"})
    refused = await run(
        live, "alerts.unsilence", {"matchers": {"alertname": "HighErrorRate"}}, DAVE
    )
    assert not refused.approval_ids
    assert "alerts.unsilence" in refused.text
    by_oncall = await run(
        live, "alerts.unsilence", {"matchers": {"alertname": "HighErrorRate"}}, BOB
    )
    [approval_id] = by_oncall.approval_ids
    own = await live.decide(approval_id, BOB, "approve", by_oncall)  # own vote never counts
    assert own.status is not VoteStatus.APPROVED


def test_catalog_names_and_risks() -> None:
    registry = load_registry()
    silences, unsilence = registry.get("alerts.silences"), registry.get("alerts.unsilence")
    assert silences is not None and silences.risk is Risk.READ
    assert unsilence is not None and unsilence.risk is Risk.WRITE
    assert set(unsilence.Args.model_fields) == {"id", "matchers"}
    assert set(silences.Args.model_fields) == {"state", "matchers"}


def test_unsilence_needs_an_id_or_matchers() -> None:
    from pydantic import ValidationError

    from opsbot.skills.alertmanager import UnsilenceArgs

    with pytest.raises(ValidationError, match="its id, or the labels it is on"):
        UnsilenceArgs.model_validate({})
    with pytest.raises(ValidationError):
        UnsilenceArgs.model_validate({"id": "not an id"})


# -- routing: the skills' keywords and route_args ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        (
            "unsilence HighErrorRate",
            "alerts.unsilence",
            {"matchers": {"alertname": "HighErrorRate"}},
        ),
        (
            "please remove the silence on HighLatency",
            "alerts.unsilence",
            {"matchers": {"alertname": "HighLatency"}},
        ),
        ("delete the silence for cart", "alerts.unsilence", {"matchers": {"service": "cart"}}),
        (
            "expire silence 0f1e2d3c-4b5a-4697-8877-665544332211",
            "alerts.unsilence",
            {"id": "0f1e2d3c-4b5a-4697-8877-665544332211"},
        ),
        ("show me the silences", "alerts.silences", {}),
        ("show expired silences", "alerts.silences", {"state": "expired"}),
        ("what silences are active right now", "alerts.silences", {"state": "active"}),
        (
            "silence HighLatency for 2h, deploy in progress",
            "alerts.silence",
            {"matchers": {"alertname": "HighLatency"}},
        ),
        ("show silenced alerts", "alerts.list", {"state": "silenced"}),
    ],
)
async def test_silence_requests_route_to_their_skill(
    text: str, skill: str, args: dict[str, Any]
) -> None:
    registry = load_registry()
    plan = await OfflineRouter().plan(
        Request(actor=ALICE, channel="shell", text=text), list(registry)
    )
    assert isinstance(plan, Run), plan
    [invocation] = plan.invocations
    assert invocation.skill == skill
    assert {k: invocation.args.get(k) for k in args} == args, invocation.args
