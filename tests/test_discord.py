"""Discord through the real discord.py client, connected to a fake gateway + REST server
(tests/fakes/discord_server.py) that delivers MESSAGE_CREATE and INTERACTION_CREATE (button
clicks, the /ops command) and records the REST calls; Kubernetes in kmock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl
from kmock import KubernetesEmulator

from opsbot.adapters.discord import DiscordAdapter, off_reason, view_of
from opsbot.adapters.discord_render import markdown, render
from opsbot.approvals import State
from opsbot.engine import Engine
from opsbot.model import (
    ActionButton,
    Actor,
    ApprovalCard,
    Code,
    Invocation,
    Message,
    Step,
    Table,
    Text,
)
from opsbot.policy import Policy
from opsbot.services import Services, build_services
from tests.conftest import ROOT, make_settings
from tests.fakes.discord_server import BOT_ID, CHANNEL_ID, FakeDiscord, user
from tests.fakes.kube import ClusterEmulator, complete_rollout, seed, write_kubeconfig
from tests.test_approvals import expire_now

pytestmark = pytest.mark.kmock(cls=ClusterEmulator)
SRE, ONCALL = "600000000000000001", "600000000000000002"
ALICE, BOB, CAROL, EVE = (
    user("111", "alice"),
    user("222", "bob"),
    user("333", "carol"),
    user("444", "eve"),
)


def discord_policy(tmp_path: Path) -> Policy:
    text = (ROOT / "policies" / "default.yaml").read_text()
    text = text.replace(
        "sre:    [shell:alice]", f"sre:    [shell:alice, discord-role:{SRE}]"
    ).replace(
        "oncall: [shell:bob, shell:carol]",
        f"oncall: [shell:bob, shell:carol, discord-role:{ONCALL}]",
    )
    (tmp_path / "policy.yaml").write_text(text)
    return Policy.load(tmp_path / "policy.yaml")


class DiscordRig:
    def __init__(
        self, fake: FakeDiscord, services: Services, kmock: KubernetesEmulator, tmp_path: Path
    ) -> None:
        self.fake, self.services, self.kmock, self.tmp_path = fake, services, kmock, tmp_path
        self.adapter: DiscordAdapter | None = None
        self.task: asyncio.Task[Any] | None = None

    async def connect(self) -> DiscordAdapter:
        self.fake.identified.clear()
        self.adapter = DiscordAdapter(Engine(self.services), self.services.settings)
        self.task = asyncio.create_task(self.adapter.run())
        await asyncio.wait_for(self.fake.identified.wait(), 10)
        await asyncio.wait_for(self.adapter.client.wait_until_ready(), 10)
        return self.adapter

    async def disconnect(self) -> None:
        if self.adapter is not None:
            await self.adapter.client.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def thread_posts(self) -> list[Any]:
        return [
            c
            for c in self.fake.calls
            if c.method == "POST"
            and c.path.startswith("/channels/")
            and c.path.endswith("/messages")
            and CHANNEL_ID not in c.path
        ]

    def text(self) -> str:
        return "\n".join(
            str(e.get("description", ""))
            + " "
            + " ".join(f"{f['name']} {f['value']}" for f in e.get("fields", []))
            for c in self.thread_posts()
            for e in (c.body or {}).get("embeds", [])
        )

    def shown(self, call: Any) -> str:
        """The embeds' text of one recorded post or edit."""
        return "\n".join(str(e.get("description", "")) for e in (call.body or {}).get("embeds", []))

    def approval_message(self) -> dict[str, Any]:
        for call in self.thread_posts():
            if call.body.get("components"):
                return self.fake.message(
                    user(BOT_ID, "opsbot", bot=True),
                    "",
                    channel_id=call.path.split("/")[2],
                    components=call.body["components"],
                )
        raise AssertionError("no approval message")


@pytest.fixture
async def rig(kmock: KubernetesEmulator, tmp_path: Path) -> AsyncIterator[DiscordRig]:
    seed(kmock)
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with FakeDiscord() as fake:
        settings = make_settings(
            f"sqlite+aiosqlite:///{tmp_path / 'd.db'}",
            tmp_path,
            kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/")),
            discord_token="discord-test-token",
            discord_api_url=fake.api_url,
            discord_gateway_url=fake.gateway_url,
            rollout_poll=0.05,
            rollout_timeout=3.0,
        )
        services = await build_services(settings, policy=discord_policy(tmp_path))
        rig = DiscordRig(fake, services, kmock, tmp_path)
        await rig.connect()
        try:
            yield rig
        finally:
            await rig.disconnect()
            await services.close()
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = (
                base,
                yarl.URL(str(gateway)),
            )


async def until(predicate: Any, within: float = 10.0) -> None:
    for _ in range(int(within / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("condition not met")


async def test_mention_opens_a_thread_with_every_step(rig: DiscordRig) -> None:
    message = await rig.fake.mention(EVE, "show pods in shop")
    [thread] = await rig.fake.wait_for("POST", f"/messages/{message['id']}/threads")
    assert thread.body["name"] == "show pods in shop"
    await until(lambda: len(rig.thread_posts()) >= 3)
    posts = rig.thread_posts()
    assert len({p.path for p in posts}) == 1  # all into the one thread
    assert "Plan (offline): `k8s.pods namespace=shop`" in rig.text()
    assert "checkout-bbb-2" in rig.text() and "CrashLoopBackOff" in rig.text()
    footers = [e["footer"]["text"] for c in posts for e in c.body["embeds"] if "footer" in e]
    assert footers[:3] == ["plan · <@444>", "policy · <@444>", "result · <@444>"]
    [record] = [r for r in await rig.services.audit.search() if r.event == "request.received"]
    assert record.actor == "discord:444" and record.thread.startswith("discord:")


async def test_button_approved_rollback_with_every_step_in_the_thread(rig: DiscordRig) -> None:
    """Done-when: a rollback asked in Discord, approved with buttons by two other allowed
    members; refusals are ephemeral; the card's message is edited in place and, once
    decided, has no buttons."""
    await rig.fake.mention(ALICE, "roll back checkout in shop", roles=[SRE])
    await until(lambda: any(c.body.get("components") for c in rig.thread_posts()))
    message = rig.approval_message()
    [row] = message["components"]
    approve_id = row["components"][0]["custom_id"]
    assert approve_id.startswith("opsbot:approve:") and row["components"][1][
        "custom_id"
    ].startswith("opsbot:deny:")
    approval_id = approve_id.rsplit(":", 1)[1]
    assert "roll back deployment shop/checkout from revision 3 to 2" in rig.text()

    await rig.fake.click(ALICE, approve_id, message, roles=[SRE])  # the requester
    [ephemeral] = await rig.fake.wait_for("POST", "/webhooks/")
    assert (
        ephemeral.body["flags"] == 64 and "someone else must approve" in ephemeral.body["content"]
    )
    await rig.fake.click(EVE, approve_id, message)  # no role: not an approver
    second = (await rig.fake.wait_for("POST", "/webhooks/", 2))[1]
    assert second.body["flags"] == 64 and "may not decide approval" in second.body["content"]

    card_path = f"/channels/{message['channel_id']}/messages/{message['id']}"
    await rig.fake.click(BOB, approve_id, message, roles=[ONCALL])
    [edit] = await rig.fake.wait_for("PATCH", card_path)
    assert "approvals 1/2: <@222>" in rig.shown(edit)
    [row] = edit.body["components"]
    assert not any(b.get("disabled") for b in row["components"])

    asyncio.get_running_loop().call_later(0.5, complete_rollout, rig.kmock, "shop", "checkout")
    await rig.fake.click(CAROL, approve_id, message, roles=[ONCALL])
    # the card is edited twice more: approved (running), then executed
    running, final = (await rig.fake.wait_for("PATCH", card_path, 3))[1:]
    assert "approved by <@333>" in rig.shown(running) and running.body["components"] == []
    assert "**executed**" in rig.shown(final) and "approved and executed" in rig.shown(final)
    assert "approvals 2/2: <@222>, <@333>" in rig.shown(final)
    assert final.body["components"] == []  # a decided card has no buttons
    await until(lambda: "rollout complete" in rig.text())
    assert (
        len([r for r in rig.kmock if r.method.value == "PATCH" and r.params.get("dryRun") != "All"])
        == 1
    )
    approval = await rig.services.approvals.get(approval_id)
    assert approval is not None and approval.state is State.EXECUTED
    assert [v.approver for v in approval.votes] == ["discord:222", "discord:333"]
    deferred = [c for c in rig.fake.calls if c.path.endswith("/callback")]
    assert {c.body["type"] for c in deferred} == {6}  # every click was acknowledged at once


async def test_slash_command_works_in_a_thread(rig: DiscordRig) -> None:
    await rig.fake.slash(EVE, "events in shop")
    [callback] = await rig.fake.wait_for("POST", "/callback")
    assert (
        callback.body["type"] == 4
        and callback.body["data"]["content"] == "<@444> asked: events in shop"
    )
    await rig.fake.wait_for("POST", "/threads")
    await until(lambda: "BackOff" in rig.text())
    commands = rig.fake.of("PUT", "/commands")
    assert commands and commands[0].body[0]["name"] == "ops"  # synced at start


async def test_buttons_work_after_a_restart(rig: DiscordRig) -> None:
    await rig.fake.mention(ALICE, "restart checkout in shop", roles=[SRE])
    await until(lambda: any(c.body.get("components") for c in rig.thread_posts()))
    message = rig.approval_message()
    custom_id = message["components"][0]["components"][0]["custom_id"]
    await rig.disconnect()  # the bot restarts; the approval lives in the database
    await rig.connect()
    asyncio.get_running_loop().call_later(0.5, complete_rollout, rig.kmock, "shop", "checkout")
    await rig.fake.click(BOB, custom_id, message, roles=[ONCALL])
    edits = await rig.fake.wait_for("PATCH", f"/messages/{message['id']}", 2)
    assert "approved by <@222>" in rig.shown(edits[0])
    assert "approved and executed" in rig.shown(edits[1])


async def test_unknown_and_decided_buttons_answer_ephemerally(rig: DiscordRig) -> None:
    row = {
        "type": 1,
        "components": [
            {"type": 2, "style": 3, "label": "Approve", "custom_id": "opsbot:approve:zzzzzz"}
        ],
    }
    message = rig.fake.message(user(BOT_ID, "opsbot", bot=True), "", components=[row])
    await rig.fake.click(BOB, "opsbot:approve:zzzzzz", message, roles=[ONCALL])
    [ephemeral] = await rig.fake.wait_for("POST", "/webhooks/")
    assert (
        ephemeral.body["flags"] == 64
        and "no approval request with id zzzzzz" in ephemeral.body["content"]
    )
    assert rig.kmock is not None and not [r for r in rig.kmock if r.method.value == "PATCH"]


def test_render_respects_discords_limits() -> None:
    long = Message(
        thread="discord:1",
        step=Step.RESULT,
        blocks=[
            Text(text="summary"),
            Code(code="x" * 30_000),
            Table(columns=["k", "v"], rows=[[str(i), str(i)] for i in range(40)]),
        ],
    )
    rendered = render(long)
    assert len(rendered.embeds) <= 10
    assert all(len(e.description or "") <= 4096 for e in rendered.embeds)
    assert sum(len(e.description or "") for e in rendered.embeds) <= 6000
    assert [f.filename for f in rendered.files] == ["output.txt"]
    small = render(
        Message(
            thread="discord:1",
            step=Step.RESULT,
            blocks=[
                Table(columns=["signal", "value"], rows=[["p95", "120 ms"], ["errors", "2 %"]])
            ],
        )
    )
    assert [(f.name, f.value) for f in small.embeds[0].fields] == [
        ("p95", "120 ms"),
        ("errors", "2 %"),
    ]


def test_adapter_is_off_without_a_token(tmp_path: Path) -> None:
    settings = make_settings("sqlite+aiosqlite://", tmp_path)
    assert off_reason(settings) == "DISCORD_TOKEN is not set"


async def test_an_interaction_seen_by_two_sessions_is_answered_once(rig: DiscordRig) -> None:
    """Two replicas on one token both receive each interaction; only one answers it."""
    payload = rig.fake.interaction(
        2,
        EVE,
        [],
        {
            "id": "500000000000000001",
            "name": "ops",
            "type": 1,
            "options": [{"name": "request", "type": 3, "value": "help"}],
        },
    )
    await rig.fake.dispatch("INTERACTION_CREATE", payload)
    await rig.fake.dispatch("INTERACTION_CREATE", payload)
    await rig.fake.wait_for("POST", "/callback")
    await until(lambda: "Skills you (discord:444)" in rig.text())
    assert len(rig.fake.of("POST", "/callback")) == 1


async def test_suggested_action_button_runs_as_the_clickers_request(
    rig: DiscordRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rig.adapter is not None
    adapter = rig.adapter
    thread_id = "1000000000000000777"
    thread = f"discord:{thread_id}"
    action = ActionButton(
        id="act-pods-1",
        label="Show pods in shop",
        invocation=Invocation(skill="k8s.pods", args={"namespace": "shop"}),
    )
    await adapter.engine.actions.offer(action, thread=thread, channel=thread_id)
    await adapter.post(
        Message(thread=thread, step=Step.RESULT, blocks=[Text(text="Try this:"), action])
    )
    [offer] = rig.thread_posts()
    [row] = offer.body["components"]
    [button] = row["components"]
    assert button["custom_id"] == "opsbot:action:act-pods-1"
    assert button["label"] == "Show pods in shop"

    clicks: list[tuple[str, str, str]] = []
    click = adapter.engine.click

    async def spy(action_id: str, clicker: Actor, reply: Any, *, channel: str) -> None:
        clicks.append((action_id, clicker.id, channel))
        await click(action_id, clicker, reply, channel=channel)

    monkeypatch.setattr(adapter.engine, "click", spy)
    message = rig.fake.message(
        user(BOT_ID, "opsbot", bot=True), "", channel_id=thread_id, components=[row]
    )
    await rig.fake.click(EVE, button["custom_id"], message)
    await until(lambda: "CrashLoopBackOff" in rig.text())
    assert clicks == [("act-pods-1", "discord:444", thread_id)]
    assert {p.path for p in rig.thread_posts()} == {f"/channels/{thread_id}/messages"}
    [record] = [r for r in await rig.services.audit.search() if r.event == "request.received"]
    assert record.actor == "discord:444" and record.thread == thread  # the clicker's request


async def test_an_unknown_action_is_answered_to_the_clicker_only(rig: DiscordRig) -> None:
    row = {
        "type": 1,
        "components": [{"type": 2, "style": 2, "label": "Gone", "custom_id": "opsbot:action:gone"}],
    }
    message = rig.fake.message(user(BOT_ID, "opsbot", bot=True), "", components=[row])
    await rig.fake.click(EVE, "opsbot:action:gone", message)
    [ephemeral] = await rig.fake.wait_for("POST", "/webhooks/")
    assert ephemeral.body["flags"] == 64 and "no longer known" in ephemeral.body["content"]
    assert rig.thread_posts() == []


async def test_an_expired_card_is_edited_in_place_and_loses_its_buttons(rig: DiscordRig) -> None:
    assert rig.adapter is not None
    await rig.fake.mention(ALICE, "restart checkout in shop", roles=[SRE])
    await until(lambda: any(c.body.get("components") for c in rig.thread_posts()))
    [card] = [c for c in rig.thread_posts() if c.body.get("components")]
    approval_id = card.body["components"][0]["components"][0]["custom_id"].rsplit(":", 1)[1]
    engine = rig.adapter.engine
    await expire_now(engine, approval_id)
    await engine.sweep_expired(rig.adapter.post)
    [edit] = await rig.fake.wait_for("PATCH", f"{card.path}/{card.answer['id']}")
    assert edit.body["components"] == []  # no buttons once expired
    assert f"Approval `{approval_id}` **expired**" in rig.shown(edit)
    assert "expired without enough approvals" in rig.text()


def test_neutral_markup_becomes_discord_markdown() -> None:
    assert markdown("Allowed by rule **everyone reads**.") == "Allowed by rule **everyone reads**."
    assert markdown("_why_ `a*b` [runbook](https://wiki.test/x)") == (
        "_why_ `a*b` [runbook](https://wiki.test/x)"
    )
    # literal markdown characters are escaped, so Discord shows them as written
    assert markdown("2*3") == "2\\*3"
    assert markdown("rollout_timeout ~5s | x") == "rollout\\_timeout \\~5s \\| x"


async def test_buttons_follow_the_cards_state() -> None:
    card = ApprovalCard(
        approval_id="abc234",
        summary="k8s.restart name=checkout namespace=shop",
        requester="discord:111",
        approvers=["group:oncall"],
        min_approvals=1,
        expires_at=datetime(2026, 1, 1, 12, tzinfo=UTC),
        state="pending",
    )
    pending = view_of(render(Message(thread="discord:1", step=Step.APPROVAL, blocks=[card])))
    assert pending is not None
    assert [getattr(i, "custom_id", "") for i in pending.children] == [
        "opsbot:approve:abc234",
        "opsbot:deny:abc234",
    ]
    for state in ("approved", "denied", "expired", "executed", "failed"):
        decided = card.model_copy(update={"state": state})
        rendered = render(Message(thread="discord:1", step=Step.APPROVAL, blocks=[decided]))
        assert view_of(rendered) is None
        assert f"**{state}**" in (rendered.embeds[0].description or "")


async def test_a_question_takes_a_short_answer_in_its_thread(rig: DiscordRig) -> None:
    """Issue 10, item 6: the bot's question offers the known choices as buttons, and a
    mention in its thread that answers it ("shop") runs the whole request there."""
    message = await rig.fake.mention(EVE, "show the checkout pod logs")
    [created] = await rig.fake.wait_for("POST", f"/messages/{message['id']}/threads")
    await until(lambda: "several namespaces" in rig.text())
    [question] = [c for c in rig.thread_posts() if c.body.get("components")]
    buttons = [b for row in question.body["components"] for b in row["components"]]
    assert [b["label"] for b in buttons] == [
        "k8s.logs name=checkout namespace=shop tail=100",
        "k8s.logs name=checkout namespace=staging tail=100",
    ]
    thread = created.answer
    await rig.fake.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
    answer = rig.fake.message(
        EVE,
        f"<@{BOT_ID}> shop",
        channel_id=thread["id"],
        mentions=[user(BOT_ID, "opsbot", bot=True)],
        member={k: v for k, v in rig.fake.member(EVE, []).items() if k != "user"},
    )
    await rig.fake.dispatch("MESSAGE_CREATE", answer)
    await until(lambda: "`k8s.logs name=checkout namespace=shop tail=100`" in rig.text())
    assert len(rig.fake.of("POST", "/threads")) == 1  # answered in place, no new thread
    assert {c.path for c in rig.thread_posts()} == {f"/channels/{thread['id']}/messages"}
