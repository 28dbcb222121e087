"""Discord through the real discord.py client, connected to a fake gateway + REST server
(tests/fakes/discord_server.py) that delivers MESSAGE_CREATE and INTERACTION_CREATE (button
clicks, the /ops command, modal submissions), records the REST calls and refuses what Discord
refuses (embed and content limits with Discord's error codes, a second or late interaction
response, privileged intents not granted, rate limits); Kubernetes in kmock, and the toy skills
of tests/test_conversation.py."""

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
from opsbot.adapters.discord_render import MAX_TOTAL, embed_size, markdown, render
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
from tests.fakes.discord_server import (
    APP_ID,
    BOT_ID,
    BOT_ROLE_ID,
    CHANNEL_ID,
    MESSAGE_CONTENT,
    PRIVILEGED,
    FakeDiscord,
    message_errors,
    user,
)
from tests.fakes.kube import ClusterEmulator, complete_rollout, seed, write_kubeconfig
from tests.test_approvals import expire_now
from tests.test_conversation import TOYS, ToyBounce, reset_toys, toy_rules

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
    (tmp_path / "policy.yaml").write_text(text.rstrip() + "\n" + toy_rules(["group:oncall"]))
    return Policy.load(tmp_path / "policy.yaml")


class DiscordRig:
    def __init__(
        self, fake: FakeDiscord, services: Services, kmock: KubernetesEmulator, tmp_path: Path
    ) -> None:
        self.fake, self.services, self.kmock, self.tmp_path = fake, services, kmock, tmp_path
        self.adapter: DiscordAdapter | None = None
        self.task: asyncio.Task[Any] | None = None

        self.replicas: list[tuple[DiscordAdapter, asyncio.Task[Any]]] = []

    async def connect(self) -> DiscordAdapter:
        self.adapter, self.task = await self.replica()
        return self.adapter

    async def replica(self) -> tuple[DiscordAdapter, asyncio.Task[Any]]:
        """Another process on the same token and database, connected."""
        self.fake.identified.clear()
        adapter = DiscordAdapter(Engine(self.services), self.services.settings)
        task = asyncio.create_task(adapter.run())
        self.replicas.append((adapter, task))
        await asyncio.wait_for(self.fake.identified.wait(), 10)
        await asyncio.wait_for(adapter.client.wait_until_ready(), 10)
        return adapter, task

    async def disconnect(self) -> None:
        for adapter, task in self.replicas:
            await adapter.client.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.replicas = []

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

    async def card(self) -> tuple[Any, dict[str, Any], str]:
        """(the post, the message as Discord holds it, the approval id) of the first card."""
        await until(lambda: any(c.body.get("components") for c in self.thread_posts()))
        [post] = [c for c in self.thread_posts() if c.body.get("components")][:1]
        message = self.fake.message(
            user(BOT_ID, "opsbot", bot=True),
            "",
            channel_id=post.path.split("/")[2],
            components=post.body["components"],
        )
        message["id"] = post.answer["id"]
        approval_id = post.body["components"][0]["components"][0]["custom_id"].rsplit(":", 1)[1]
        return post, message, approval_id

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
    reset_toys()
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
        for toy in TOYS:
            services.registry.add(toy())
        rig = DiscordRig(fake, services, kmock, tmp_path)
        await rig.connect()
        try:
            yield rig
        finally:
            ToyBounce.gate.open()
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
    assert [b["custom_id"] for b in row["components"]] == [approve_id, f"opsbot:deny:{approval_id}"]

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
    assert rig.fake.refused() == []


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
    assert not [r for r in rig.kmock if r.method.value == "PATCH"]
    assert rig.thread_posts() == []


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
    assert message_errors({"embeds": [e.to_dict() for e in rendered.embeds]}) is None
    assert sum(embed_size(e) for e in rendered.embeds) <= MAX_TOTAL
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
    """Two replicas on one token both receive each interaction; only one answers it (a second
    answer would be Discord's 40060, "already acknowledged")."""
    await rig.replica()
    assert len([s for s in rig.fake.sessions if s.ready]) == 2
    await rig.fake.slash(EVE, "help")
    await until(lambda: "Skills you (discord:444)" in rig.text())
    await asyncio.sleep(0.3)
    assert len(rig.fake.of("POST", "/callback")) == 1 and rig.fake.refused() == []
    assert len(rig.fake.of("POST", "/threads")) == 1


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


# -- the fake refuses what Discord refuses -------------------------------------------------------


async def test_the_fake_refuses_what_discord_refuses(rig: DiscordRig) -> None:
    """Over-limit messages and misplaced interaction answers get Discord's own errors."""
    assert rig.adapter is not None
    http = rig.adapter.client.http
    channel = rig.adapter.client.get_partial_messageable(int(CHANNEL_ID))

    async def refused(**kwargs: Any) -> discord.HTTPException:
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send(**kwargs)
        return caught.value

    big = discord.Embed(description="d" * 4096)
    big.add_field(name="n", value="v" * 1024)
    big.add_field(name="n", value="v" * 877)  # 4096 + 2 + 1024 + 877 = 5999
    await channel.send(embed=big.copy())
    big.set_footer(text="ab")  # 6001
    over = await refused(embed=big)
    assert (over.status, over.code) == (400, 50035) and "6000" in str(over)
    long_content = await refused(content="c" * 2001)
    assert (long_content.status, long_content.code) == (400, 50035)
    assert "Must be 2000 or fewer in length" in str(long_content)
    field = discord.Embed(description="x").add_field(name="n", value="v" * 1025)
    assert (await refused(embed=field)).code == 50035
    many = discord.Embed(description="x")
    for i in range(26):
        many.add_field(name=str(i), value="v")
    assert (await refused(embed=many)).code == 50035
    assert (await refused(embed=discord.Embed(title="t" * 257))).code == 50035
    empty = await refused(content="")
    assert (empty.status, empty.code) == (400, 50006)

    payload = rig.fake.interaction(2, EVE, [], {"id": "1", "name": "nothing", "type": 1})
    await rig.fake.dispatch("INTERACTION_CREATE", payload)  # no command of that name: unanswered
    route = f"/interactions/{payload['id']}/{payload['token']}/callback"
    followup = f"/webhooks/{APP_ID}/{payload['token']}"
    with pytest.raises(discord.NotFound) as unknown_webhook:
        await http.request(discord.http.Route("POST", followup), json={"content": "too early"})
    assert unknown_webhook.value.code == 10015
    await http.request(discord.http.Route("POST", route), json={"type": 5})
    with pytest.raises(discord.HTTPException) as twice:
        await http.request(discord.http.Route("POST", route), json={"type": 5})
    assert (twice.value.status, twice.value.code) == (400, 40060)
    late = rig.fake.interaction(2, EVE, [], {"id": "1", "name": "nothing", "type": 1})
    await rig.fake.dispatch("INTERACTION_CREATE", late)
    rig.fake.interactions[late["id"]].sent -= 3.5  # Discord waits 3 seconds, not 3.5
    with pytest.raises(discord.NotFound) as gone:
        await http.request(
            discord.http.Route("POST", f"/interactions/{late['id']}/{late['token']}/callback"),
            json={"type": 5},
        )
    assert gone.value.code == 10062


def test_the_fakes_limits_are_discords() -> None:
    """The fake's own limits, as Discord documents them (raise one and this fails)."""

    def embed(**fields: Any) -> dict[str, Any]:
        return {"embeds": [fields]}

    assert message_errors({"content": "c" * 2000}) is None
    assert message_errors({"content": "c" * 2001}) is not None
    assert message_errors(embed(description="d" * 4096)) is None
    assert message_errors(embed(description="d" * 4097)) is not None
    assert message_errors(embed(title="t" * 256)) is None
    assert message_errors(embed(title="t" * 257)) is not None
    fields = [{"name": "n" * 10, "value": "v" * 200} for _ in range(25)]
    assert message_errors(embed(fields=fields)) is None
    assert message_errors(embed(fields=[*fields, fields[0]])) is not None
    assert message_errors(embed(fields=[{"name": "n", "value": "v" * 1025}])) is not None
    assert message_errors(embed(footer={"text": "f" * 2049}, description="x")) is not None
    six = [{"description": "d" * 3000}, {"description": "d" * 3000}]
    assert message_errors({"embeds": six}) is None
    six[1]["title"] = "t"
    refused = message_errors({"embeds": six})
    assert refused is not None and refused.body["code"] == 50035
    assert "MAX_EMBED_SIZE_EXCEEDED" in str(refused.body["errors"])


async def test_the_bot_asks_for_no_privileged_intent(tmp_path: Path) -> None:
    """Discord refuses privileged intents not granted (4014, and the fake grants none); the
    bot asks for none (a mention carries its content without MESSAGE_CONTENT)."""
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with FakeDiscord() as fake:
        settings = make_settings(
            f"sqlite+aiosqlite:///{tmp_path / 'i.db'}",
            tmp_path,
            discord_token="discord-test-token",
            discord_api_url=fake.api_url,
            discord_gateway_url=fake.gateway_url,
        )
        services = await build_services(settings, policy=discord_policy(tmp_path))
        adapter = DiscordAdapter(Engine(services), settings)
        await adapter.start()
        try:
            await until(lambda: bool(fake.identifies))
            [identify] = fake.identifies
            assert identify["intents"] & sum(PRIVILEGED) == 0
            await asyncio.wait_for(fake.identified.wait(), 5)
            assert fake.closed_with == []
        finally:
            await adapter.stop()
            await services.close()
            discord.http.Route.BASE = base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(str(gateway))


async def test_refused_intents_turn_the_adapter_off_with_one_line(
    rig: DiscordRig, capsys: pytest.CaptureFixture[str]
) -> None:
    greedy = DiscordAdapter(Engine(rig.services), rig.services.settings)
    greedy.client._connection._intents.message_content = True  # as if someone asked for it
    await asyncio.wait_for(greedy.run(), 10)  # returns: Discord closed the gateway
    assert rig.fake.closed_with == [4014]
    assert rig.fake.identifies[-1]["intents"] & MESSAGE_CONTENT
    [line] = [ln for ln in capsys.readouterr().out.splitlines() if "discord.intents_refused" in ln]
    assert "message_content" in line and "the Discord adapter is off" in line


async def test_rate_limited_posts_wait_as_discord_asks(rig: DiscordRig) -> None:
    assert rig.adapter is not None
    thread = "1000000000000000555"
    rig.fake.limit(f"/channels/{thread}/messages", 1)
    await rig.adapter.post(
        Message(thread=f"discord:{thread}", step=Step.RESULT, blocks=[Text(text="hi")])
    )
    assert [c.status for c in rig.fake.calls if thread in c.path] == [429, 200]
    assert rig.fake.early_retries == 0  # the retry waited retry_after


# -- defects of issue 13 -----------------------------------------------------------------------


async def test_a_message_over_6000_characters_is_attached_not_lost(rig: DiscordRig) -> None:
    """Defect 4: fields, footer and titles count towards Discord's 6,000 too; what does not
    fit is posted (its start) with the whole of it attached, instead of refused."""
    assert rig.adapter is not None
    thread = "1000000000000000666"
    rows = [[f"pod-{i}", "x" * 300] for i in range(10)]
    message = Message(
        thread=f"discord:{thread}",
        step=Step.RESULT,
        blocks=[Text(text="summary " + "s" * 3900), Table(columns=["pod", "state"], rows=rows)],
        actor="<@444>",
    )
    await rig.adapter.post(message)
    assert rig.fake.refused() == []
    [post] = [c for c in rig.fake.calls if c.path == f"/channels/{thread}/messages"]
    assert [name for name, _ in post.files] == ["output.txt"]
    [(_, data)] = post.files
    assert "summary" in data.decode() and "pod-9" in data.decode()
    assert sum(embed_size(discord.Embed.from_dict(e)) for e in post.body["embeds"]) <= MAX_TOTAL
    assert "the rest is attached as output.txt" in rig.shown(post)


async def test_a_click_is_deferred_before_the_decision(rig: DiscordRig) -> None:
    """Discord wants an answer within 3 seconds: the click is deferred before the vote is
    decided and the approved action (held here) runs; the buttons go when the vote decides."""
    await rig.fake.mention(ALICE, "wobble web in shop", roles=[SRE])
    _post, message, approval_id = await rig.card()
    ToyBounce.gate.close()
    click = await rig.fake.click(BOB, f"opsbot:approve:{approval_id}", message, roles=[ONCALL])
    await asyncio.wait_for(ToyBounce.gate.entered.wait(), 5)
    answered = rig.fake.interactions[click["id"]]
    assert answered.acked == 6  # deferred while the action still runs
    edits = rig.fake.of("PATCH", f"/messages/{message['id']}")
    assert edits and edits[-1].body["components"] == []  # no buttons while it runs
    assert ToyBounce.runs == []
    ToyBounce.gate.open()
    await until(
        lambda: (
            "approved and executed"
            in rig.shown(rig.fake.of("PATCH", f"/messages/{message['id']}")[-1])
        )
    )
    assert ToyBounce.runs == ["web"] and rig.fake.refused() == []


async def test_an_action_that_raises_is_told_in_the_thread_and_on_the_card(
    rig: DiscordRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defects 2 and 6 on Discord: the thread is told, and the card says the action failed."""
    assert rig.adapter is not None
    await rig.fake.mention(ALICE, "wobble web in shop", roles=[SRE])
    _post, message, approval_id = await rig.card()

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the cluster fell over")

    monkeypatch.setattr(rig.adapter.engine, "execute", explode)
    await rig.fake.click(BOB, f"opsbot:approve:{approval_id}", message, roles=[ONCALL])
    await until(lambda: "the cluster fell over" in rig.text())
    card = f"/messages/{message['id']}"
    await until(lambda: "**failed**" in rig.shown(rig.fake.of("PATCH", card)[-1]))
    assert rig.fake.of("PATCH", card)[-1].body["components"] == []
    approval = await rig.services.approvals.get(approval_id)
    assert approval is not None and approval.state is State.FAILED


async def test_an_expired_card_is_edited_in_place_after_a_restart(rig: DiscordRig) -> None:
    """Defect 3: a restarted bot still knows which message shows the card."""
    await rig.fake.mention(ALICE, "wobble web in shop", roles=[SRE])
    post, message, approval_id = await rig.card()
    await rig.disconnect()
    adapter = await rig.connect()
    await expire_now(adapter.engine, approval_id)
    await adapter.engine.sweep_expired(adapter.post)
    [edit] = await rig.fake.wait_for("PATCH", f"{post.path}/{message['id']}")
    assert edit.body["components"] == []
    assert f"Approval `{approval_id}` **expired**" in rig.shown(edit)
    head = f"Approval `{approval_id}` **expired**"  # the card's head once expired
    assert [c for c in rig.thread_posts() if head in rig.shown(c)] == []  # not posted anew


async def test_deny_asks_for_a_reason_in_a_modal(rig: DiscordRig) -> None:
    """Defect 9: Deny opens a modal for the reason, as on Slack; the reason is in the thread."""
    await rig.fake.mention(ALICE, "wobble web in shop", roles=[SRE])
    _post, message, approval_id = await rig.card()
    card = f"/messages/{message['id']}"
    click = await rig.fake.click(BOB, f"opsbot:deny:{approval_id}", message, roles=[ONCALL])
    await until(lambda: rig.fake.interactions[click["id"]].acked is not None)
    opened = rig.fake.interactions[click["id"]]
    assert opened.acked == 9 and opened.modal is not None
    assert opened.modal["custom_id"] == f"opsbot:deny-reason:{approval_id}"
    assert await rig.services.approvals.get(approval_id) is not None
    assert (await rig.services.approvals.get(approval_id)).state is State.PENDING  # type: ignore[union-attr]
    await rig.fake.submit_modal(BOB, click, {"reason": "freeze until Monday"}, roles=[ONCALL])
    await until(lambda: "denied by <@222>: freeze until Monday" in rig.text())
    await until(lambda: any("**denied**" in rig.shown(e) for e in rig.fake.of("PATCH", card)))
    edit = rig.fake.of("PATCH", card)[-1]
    assert "**denied**" in rig.shown(edit) and edit.body["components"] == []
    approval = await rig.services.approvals.get(approval_id)
    assert approval is not None and approval.state is State.DENIED
    assert [v.reason for v in approval.votes] == ["freeze until Monday"]
    assert rig.fake.refused() == [] and ToyBounce.runs == []


async def test_a_mention_of_the_bots_role_starts_a_request(rig: DiscordRig) -> None:
    """Discord's mention picker offers the bot's own role for the bot: answered the same."""
    message = rig.fake.message(
        EVE,
        f"<@&{BOT_ROLE_ID}> show pods in shop",
        mention_roles=[BOT_ROLE_ID],
        member={k: v for k, v in rig.fake.member(EVE, []).items() if k != "user"},
    )
    await rig.fake.dispatch("MESSAGE_CREATE", message)
    [thread] = await rig.fake.wait_for("POST", f"/messages/{message['id']}/threads")
    assert thread.body["name"] == "show pods in shop"
    await until(lambda: "CrashLoopBackOff" in rig.text())
    other = rig.fake.message(
        EVE, "<@&600000000000000002> show pods in shop", mention_roles=[ONCALL]
    )
    await rig.fake.dispatch("MESSAGE_CREATE", other)  # another role: not for the bot
    await asyncio.sleep(0.3)
    assert len(rig.fake.of("POST", "/threads")) == 1


async def test_the_command_name_is_configurable(rig: DiscordRig) -> None:
    """``OPSBOT_SLASH_COMMAND`` names the application command (synced, and answered)."""
    await rig.disconnect()
    rig.services.settings = rig.services.settings.model_copy(
        update={"slash_command": "/opsbot-staging"}
    )
    await rig.connect()
    synced = rig.fake.of("PUT", "/commands")[-1]
    assert [c["name"] for c in synced.body] == ["opsbot-staging"]
    payload = rig.fake.interaction(
        2,
        EVE,
        [],
        {
            "id": "500000000000000001",
            "name": "opsbot-staging",
            "type": 1,
            "options": [{"name": "request", "type": 3, "value": "help"}],
        },
    )
    await rig.fake.dispatch("INTERACTION_CREATE", payload)
    await until(lambda: "Skills you (discord:444)" in rig.text())


async def test_an_alert_opens_an_incident_thread_with_an_ack_button(rig: DiscordRig) -> None:
    """An Alertmanager notification opens its incident: the first message in the routed
    channel with an Ack button, a thread created from it with the triage; Ack edits the first
    message (its button gone) and says who in the thread; resolved is told there too."""
    from aiohttp.test_utils import TestClient, TestServer

    from opsbot.adapters.http import make_app
    from opsbot.incidents import ACK_PREFIX, Desk
    from tests.test_incidents import alert, payload

    adapter = rig.adapter
    assert adapter is not None
    rig.services.settings.alert_channel = f"discord:{CHANNEL_ID}"
    desk = Desk(rig.services, adapter.engine, {"discord": adapter})
    client = TestClient(TestServer(make_app(rig.services, desk=desk)))
    await client.start_server()
    try:
        answer = await client.post("/alertmanager", json=payload())
        body = await answer.json()
        assert answer.status == 200 and body["opened"] is True, body
        [root] = [
            c for c in rig.fake.of("POST", "/messages") if c.path.endswith(f"{CHANNEL_ID}/messages")
        ]
        [thread] = rig.fake.of("POST", f"/messages/{root.answer['id']}/threads")
        assert thread.body["name"] == "HighErrorRate: checkout in shop"
        assert body["thread"] == f"discord:{thread.answer['id']}"
        [[button]] = [row["components"] for row in root.body["components"]]
        assert button["custom_id"] == f"opsbot:action:{ACK_PREFIX}{body['incident']}"
        assert button["label"] == "Ack"
        await desk.settle(within=60)
        assert "incident.triage" in rig.text()  # the triage, in the thread

        message = rig.fake.message(
            user(BOT_ID, "opsbot", bot=True),
            "",
            channel_id=CHANNEL_ID,
            components=root.body["components"],
        )
        message["id"] = root.answer["id"]
        await rig.fake.click(BOB, button["custom_id"], message)
        [edit] = await rig.fake.wait_for("PATCH", f"/messages/{root.answer['id']}")
        assert edit.body["components"] == []  # the Ack button is gone
        assert "Acknowledged by discord:222" in rig.shown(edit)
        await until(lambda: "acknowledged this incident" in rig.text())

        done = alert(service="checkout", namespace="shop", severity="critical", status="resolved")
        answer = await client.post("/alertmanager", json=payload(done))
        assert (await answer.json())["status"] == "resolved"
        assert "RESOLVED" in rig.shown(rig.fake.of("PATCH", f"/messages/{root.answer['id']}")[-1])
        assert "Resolved" in rig.text()
    finally:
        await desk.close()
        await client.close()
