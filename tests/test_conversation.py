"""One conversation, through every adapter: Slack over HTTP, Slack over Socket Mode, Discord.

Each platform is the real client library (slack-bolt, discord.py) against a fake of the
platform that refuses what the platform refuses (tests/fakes/). The same script runs on each:
a mention -> the plan -> an approval card with buttons -> a click by someone who may not
decide (only they see the refusal; the card keeps its buttons) -> a click by an approver ->
the result in the thread and the card edited in place (no buttons) -> a second card that
expires (edited in place, buttons gone) -> a long result delivered as a file.

A new adapter proves itself by adding a :class:`Platform` here. The toy skills below (no
backend needed) are shared with tests/test_slack.py and tests/test_discord.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import discord
import pytest
import yarl
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, Field

from opsbot.adapters.base import Adapter, Adapters, build_adapters
from opsbot.adapters.discord import DiscordAdapter
from opsbot.adapters.http import make_app
from opsbot.adapters.slack import SlackAdapter
from opsbot.engine import Engine
from opsbot.model import Code, Message, SkillResult, Step, Table
from opsbot.policy import Policy
from opsbot.services import build_services
from opsbot.skills.base import Risk, Skill, SkillContext, SkillRegistry
from tests.conftest import make_settings
from tests.fakes.discord_server import BOT_ID as DISCORD_BOT_ID
from tests.fakes.discord_server import CHANNEL_ID as DISCORD_CHANNEL_ID
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.discord_server import user as discord_user
from tests.fakes.slack_api import APP_TOKEN as SLACK_APP_TOKEN
from tests.fakes.slack_api import TOKEN as SLACK_TOKEN
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_socket import FakeSlackSocket
from tests.test_approvals import expire_now

# -- toy skills ------------------------------------------------------------------------------


class Target(BaseModel):
    name: str = Field(description="the toy service, e.g. web")
    namespace: str = Field("shop", description="its namespace")


class Gate:
    """Lets a test hold a toy skill mid-run: ``close()`` before, ``open()`` to let it end."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.event.set()
        self.entered = asyncio.Event()

    def close(self) -> None:
        self.event = asyncio.Event()
        self.entered = asyncio.Event()

    def open(self) -> None:
        self.event.set()

    async def passage(self) -> None:
        self.entered.set()
        await self.event.wait()


class ToyBounce(Skill[Target, Any]):
    """A write: bounce a toy service (one on-call approval)."""

    name = "toy.bounce"
    summary = "Bounce a toy service"
    Args = Target
    risk = Risk.WRITE
    examples: ClassVar[list[str]] = ["wobble web in shop"]
    keywords: ClassVar[dict[str, float]] = {"wobble": 4.0}
    gate: ClassVar[Gate] = Gate()
    runs: ClassVar[list[str]] = []

    async def preview(self, args: Target, ctx: SkillContext[Any]) -> str:
        return f"would bounce {args.name} in {args.namespace}"

    async def run(self, args: Target, ctx: SkillContext[Any]) -> SkillResult:
        await ToyBounce.gate.passage()
        ToyBounce.runs.append(args.name)
        return SkillResult(summary=f"bounced {args.name} in {args.namespace}")


class ToyDump(Skill[Target, Any]):
    """A read with a long result: 300 rows."""

    name = "toy.dump"
    summary = "Every connection of a toy service"
    Args = Target
    examples: ClassVar[list[str]] = ["dump web in shop"]
    keywords: ClassVar[dict[str, float]] = {"dump": 4.0}
    ROWS = 300

    async def run(self, args: Target, ctx: SkillContext[Any]) -> SkillResult:
        rows = [
            [f"conn-{i:03d}", f"10.0.{i // 250}.{i % 250}", "ESTABLISHED"] for i in range(self.ROWS)
        ]
        table = Table(columns=["connection", "peer", "state"], rows=rows)
        return SkillResult(summary=f"{self.ROWS} connections of {args.name}", blocks=[table])


class ToyTail(Skill[Target, Any]):
    """A read with long logs: 1,500 lines, the newest last."""

    name = "toy.tail"
    summary = "The log of a toy service"
    Args = Target
    examples: ClassVar[list[str]] = ["tail web in shop"]
    keywords: ClassVar[dict[str, float]] = {"tail": 4.0}
    LINES = 1500

    async def run(self, args: Target, ctx: SkillContext[Any]) -> SkillResult:
        lines = [
            f"12:{i // 60:02d}:{i % 60:02d} {args.name} line {i:04d} ok" for i in range(self.LINES)
        ]
        return SkillResult(
            summary=f"log of {args.name}", blocks=[Code(code="\n".join(lines), language="text")]
        )


class ToySlow(Skill[Target, Any]):
    """A read that takes as long as the test holds its gate."""

    name = "toy.slow"
    summary = "A slow look at a toy service"
    Args = Target
    examples: ClassVar[list[str]] = ["ponder web in shop"]
    keywords: ClassVar[dict[str, float]] = {"ponder": 4.0}
    gate: ClassVar[Gate] = Gate()

    async def run(self, args: Target, ctx: SkillContext[Any]) -> SkillResult:
        await ToySlow.gate.passage()
        return SkillResult(summary=f"pondered {args.name}")


TOYS = (ToyBounce, ToyDump, ToyTail, ToySlow)


def toy_rules(oncall: list[str]) -> str:
    """Policy rules (YAML, to append under ``rules:``) for the toys: everyone reads them;
    group:sre and group:oncall may bounce, with one approval of ``oncall`` subjects."""
    return f"""
  - name: everyone reads the toys
    subjects: ["*"]
    skills: [toy.dump, toy.tail, toy.slow]
    effect: allow
  - name: toy bounces need one on-call approval
    subjects: [group:sre, group:oncall]
    skills: [toy.bounce]
    effect: approve
    approvers: [{", ".join(oncall)}]
    min_approvals: 1
    ttl: 15m
"""


def reset_toys() -> None:
    ToyBounce.gate, ToySlow.gate = Gate(), Gate()
    ToyBounce.runs = []


# -- the platforms ---------------------------------------------------------------------------

SLACK_SECRET = "conversation-signing-secret"
SLACK_CHANNEL = "C0CONV"
SRE_ROLE, ONCALL_ROLE = "600000000000000001", "600000000000000002"


def conversation_policy(path: Path) -> Policy:
    path.write_text(
        f"""
groups:
  sre: [slack:UALICE, "discord-role:{SRE_ROLE}"]
  oncall: [slack:UBOB, "discord-role:{ONCALL_ROLE}"]
rules:{toy_rules(["group:oncall"])}"""
    )
    return Policy.load(path)


@dataclass(frozen=True)
class CardRef:
    """An approval card: its approval id and the platform's reference to its message."""

    id: str
    where: str


class Platform:
    """What the conversation needs of a platform: say something as someone, press a card's
    button as someone, and read back what everyone, or one person, sees."""

    name: str
    adapter: Any
    engine: Engine

    async def ask(self, who: str, text: str) -> None:
        raise NotImplementedError

    async def click(self, who: str, card: CardRef, verdict: str) -> None:
        raise NotImplementedError

    def cards(self) -> list[CardRef]:
        raise NotImplementedError

    def card_text(self, card: CardRef) -> str:
        raise NotImplementedError

    def card_buttons(self, card: CardRef) -> list[str]:
        raise NotImplementedError

    def thread_text(self) -> str:
        raise NotImplementedError

    def private_to(self, who: str) -> str:
        raise NotImplementedError

    def files(self) -> dict[str, bytes]:
        raise NotImplementedError

    def refused(self) -> list[Any]:
        """What the platform refused (should stay empty)."""
        raise NotImplementedError

    async def card(self, index: int) -> CardRef:
        await until(lambda: len(self.cards()) > index)
        return self.cards()[index]


async def until(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


def _texts(blocks: list[dict[str, Any]]) -> str:
    """The text a Slack message's blocks show."""
    out: list[str] = []
    for block in blocks:
        if "text" in block and isinstance(block["text"], dict):
            out.append(block["text"].get("text", ""))
        out.extend(f.get("text", "") for f in block.get("fields", []))
        out.extend(
            e.get("text", "") for e in block.get("elements", []) if e.get("type") == "mrkdwn"
        )
    return "\n".join(out)


class SlackPlatform(Platform):
    USERS: ClassVar[dict[str, str]] = {"alice": "UALICE", "bob": "UBOB", "eve": "UEVE"}
    BUTTONS: ClassVar[dict[str, str]] = {"opsbot_approve": "approve", "opsbot_deny": "deny"}

    def __init__(self, name: str, slack: FakeSlack, adapter: SlackAdapter) -> None:
        self.name, self.slack, self.adapter, self.engine = name, slack, adapter, adapter.engine
        self._n = itertools.count(1)

    async def deliver_event(self, event: dict[str, Any], event_id: str) -> None:
        raise NotImplementedError

    async def deliver_interaction(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    async def ask(self, who: str, text: str) -> None:
        n = next(self._n)
        ts = f"1800000{n:03d}.000100"
        event = {
            "type": "app_mention",
            "user": self.USERS[who],
            "text": f"<@UBOT> {text}",
            "ts": ts,
            "channel": SLACK_CHANNEL,
            "event_ts": ts,
        }
        await self.deliver_event(event, f"EvConv{n}")

    async def click(self, who: str, card: CardRef, verdict: str) -> None:
        channel, ts = card.where.split(":")
        thread = self.slack.messages[(channel, ts)].get("thread_ts") or ts
        user = self.USERS[who]
        n = next(self._n)
        await self.deliver_interaction(
            {
                "type": "block_actions",
                "team": {"id": "T1"},
                "user": {"id": user, "username": who},
                "api_app_id": "A1",
                "token": "x",
                "trigger_id": self.slack.issue_trigger(f"trig-{n}"),
                "response_url": self.slack.response_url(f"{user}-{n}"),
                "container": {"type": "message", "message_ts": ts, "channel_id": channel},
                "channel": {"id": channel},
                "message": {"ts": ts, "thread_ts": thread, "text": "card"},
                "actions": [
                    {
                        "action_id": f"opsbot_{verdict}",
                        "block_id": f"approval:{card.id}",
                        "value": card.id,
                        "type": "button",
                        "action_ts": str(time.time()),
                    }
                ],
            }
        )

    def cards(self) -> list[CardRef]:
        return [
            CardRef(block["elements"][0]["value"], f"{call.params['channel']}:{call.answer['ts']}")
            for call in self.slack.posted()
            for block in call.params.get("blocks", [])
            if block.get("type") == "actions"
            and str(block.get("block_id", "")).startswith("approval:")
        ]

    def _card(self, card: CardRef) -> dict[str, Any]:
        channel, ts = card.where.split(":")
        return self.slack.messages[(channel, ts)]

    def card_text(self, card: CardRef) -> str:
        return _texts(self._card(card)["blocks"])

    def card_buttons(self, card: CardRef) -> list[str]:
        return [
            self.BUTTONS[e["action_id"]]
            for b in self._card(card)["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
        ]

    def thread_text(self) -> str:
        return "\n".join(_texts(p.get("blocks", [])) for p in self.slack.of("chat.postMessage"))

    def private_to(self, who: str) -> str:
        user = self.USERS[who]
        ephemeral = [p["text"] for p in self.slack.of("chat.postEphemeral") if p["user"] == user]
        responses = [b.get("text", "") for name, b in self.slack.responses if name.startswith(user)]
        return "\n".join(ephemeral + responses)

    def files(self) -> dict[str, bytes]:
        named = {
            c.answer["file_id"]: c.params["filename"]
            for c in self.slack.posted("files.getUploadURLExternal")
        }
        shared = {
            f["id"] for p in self.slack.of("files.completeUploadExternal") for f in p["files"]
        }
        return {named[f]: data for f, data in self.slack.uploads.items() if f in shared}

    def refused(self) -> list[Any]:
        return [c for c in self.slack.refused() if c.method != "usergroups.list"]


class SlackHTTP(SlackPlatform):
    """Slack's Events API: signed POSTs to /slack/events."""

    def __init__(self, slack: FakeSlack, adapter: SlackAdapter, client: TestClient) -> None:
        super().__init__("slack-http", slack, adapter)
        self.client = client

    async def _signed(self, body: str, content_type: str) -> None:
        ts = str(int(time.time()))
        digest = hmac.new(SLACK_SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256)
        response = await self.client.post(
            "/slack/events",
            data=body.encode(),
            headers={
                "Content-Type": content_type,
                "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": "v0=" + digest.hexdigest(),
            },
        )
        assert response.status == 200

    async def deliver_event(self, event: dict[str, Any], event_id: str) -> None:
        body = {
            "token": "x",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": event,
        }
        await self._signed(json.dumps(body), "application/json")

    async def deliver_interaction(self, payload: dict[str, Any]) -> None:
        await self._signed(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
        )


class SlackSocket(SlackPlatform):
    """Slack's Socket Mode: envelopes over the WebSocket, each acknowledged in time."""

    def __init__(self, slack: FakeSlack, adapter: SlackAdapter, socket: FakeSlackSocket) -> None:
        super().__init__("slack-socket", slack, adapter)
        self.socket = socket

    async def deliver_event(self, event: dict[str, Any], event_id: str) -> None:
        await self.socket.wait_ack(await self.socket.event(event, event_id))

    async def deliver_interaction(self, payload: dict[str, Any]) -> None:
        await self.socket.wait_ack(await self.socket.interactive(payload))

    def refused(self) -> list[Any]:
        return [*super().refused(), *self.socket.late]


class DiscordPlatform(Platform):
    name = "discord"
    USERS: ClassVar[dict[str, tuple[dict[str, Any], list[str]]]] = {
        "alice": (discord_user("111", "alice"), [SRE_ROLE]),
        "bob": (discord_user("222", "bob"), [ONCALL_ROLE]),
        "eve": (discord_user("444", "eve"), []),
    }

    def __init__(self, fake: FakeDiscord, adapter: DiscordAdapter) -> None:
        self.fake, self.adapter, self.engine = fake, adapter, adapter.engine

    async def ask(self, who: str, text: str) -> None:
        person, roles = self.USERS[who]
        await self.fake.mention(person, text, roles=roles)

    async def click(self, who: str, card: CardRef, verdict: str) -> None:
        person, roles = self.USERS[who]
        channel_id, message_id = card.where.split(":")
        message = self.fake.message(
            discord_user(DISCORD_BOT_ID, "opsbot", bot=True), "", channel_id=channel_id
        )
        # the card as the clicker's client shows it: with its buttons (a click can race an edit)
        [posted] = [c for c in self._posts() if c.answer["id"] == message_id]
        message.update({"id": message_id, "components": posted.body.get("components", [])})
        await self.fake.click(person, f"opsbot:{verdict}:{card.id}", message, roles=roles)

    def _posts(self) -> list[Any]:
        return [
            c
            for c in self.fake.of("POST", "/channels/")
            if c.path.endswith("/messages") and DISCORD_CHANNEL_ID not in c.path
        ]

    def cards(self) -> list[CardRef]:
        return [
            CardRef(
                c.body["components"][0]["components"][0]["custom_id"].rsplit(":", 1)[1],
                f"{c.path.split('/')[2]}:{c.answer['id']}",
            )
            for c in self._posts()
            if any(
                b["custom_id"].startswith("opsbot:approve:")
                for row in c.body.get("components", [])
                for b in row["components"]
            )
        ]

    def _latest(self, card: CardRef) -> dict[str, Any]:
        channel_id, message_id = card.where.split(":")
        edits = self.fake.of("PATCH", f"/channels/{channel_id}/messages/{message_id}")
        if edits:
            body: dict[str, Any] = edits[-1].body
            return body
        [post] = [c for c in self._posts() if c.answer["id"] == message_id]
        posted: dict[str, Any] = post.body
        return posted

    def card_text(self, card: CardRef) -> str:
        return "\n".join(e.get("description", "") for e in self._latest(card).get("embeds", []))

    def card_buttons(self, card: CardRef) -> list[str]:
        return [
            b["custom_id"].split(":")[1]
            for row in self._latest(card).get("components", [])
            for b in row["components"]
        ]

    def thread_text(self) -> str:
        return "\n".join(
            str(e.get("description", ""))
            + " ".join(f"{f['name']} {f['value']}" for f in e.get("fields", []))
            for c in self._posts()
            for e in (c.body or {}).get("embeds", [])
        )

    def private_to(self, who: str) -> str:
        person, _ = self.USERS[who]
        tokens = {
            i.payload["token"]
            for i in self.fake.interactions.values()
            if i.payload["member"]["user"]["id"] == person["id"]
        }
        return "\n".join(
            c.body.get("content", "")
            for c in self.fake.of("POST", "/webhooks/")
            if c.path.split("/")[3] in tokens and c.body.get("flags") == 64
        )

    def files(self) -> dict[str, bytes]:
        return {name: data for c in self._posts() for name, data in c.files}

    def refused(self) -> list[Any]:
        return self.fake.refused()


PLATFORMS = ["slack-http", "slack-socket", "discord"]


@pytest.fixture(params=PLATFORMS)
async def platform(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Platform]:
    reset_toys()
    registry = SkillRegistry()
    for toy in TOYS:
        registry.add(toy())
    policy = conversation_policy(tmp_path / "policy.yaml")
    database = f"sqlite+aiosqlite:///{tmp_path / 'conversation.db'}"
    if request.param.startswith("slack"):
        async with FakeSlack(token=SLACK_TOKEN) as slack:
            socket_mode = request.param == "slack-socket"
            settings = make_settings(
                database,
                tmp_path,
                adapters="slack",
                slack_bot_token=SLACK_TOKEN,
                slack_signing_secret=None if socket_mode else SLACK_SECRET,
                slack_app_token=SLACK_APP_TOKEN if socket_mode else None,
                slack_api_url=slack.base_url,
            )
            services = await build_services(settings, registry=registry, policy=policy)
            [adapter] = build_adapters(Engine(services), settings)  # chosen by the settings
            assert isinstance(adapter, SlackAdapter) and isinstance(adapter, Adapter)
            try:
                if socket_mode:
                    async with FakeSlackSocket(slack) as socket:
                        await adapter.start()
                        try:
                            yield SlackSocket(slack, adapter, socket)
                        finally:
                            await adapter.stop()
                else:
                    client = TestClient(TestServer(make_app(services, slack=adapter)))
                    await client.start_server()
                    try:
                        yield SlackHTTP(slack, adapter, client)
                    finally:
                        await client.close()
            finally:
                ToyBounce.gate.open()
                await services.close()
        return
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with FakeDiscord() as fake:
        settings = make_settings(
            database,
            tmp_path,
            adapters="discord",
            discord_token="discord-test-token",
            discord_api_url=fake.api_url,
            discord_gateway_url=fake.gateway_url,
        )
        services = await build_services(settings, registry=registry, policy=policy)
        [discord_adapter] = build_adapters(Engine(services), settings)
        assert isinstance(discord_adapter, DiscordAdapter) and isinstance(discord_adapter, Adapter)
        await discord_adapter.start()
        try:
            await asyncio.wait_for(fake.identified.wait(), 10)
            await asyncio.wait_for(discord_adapter.client.wait_until_ready(), 10)
            yield DiscordPlatform(fake, discord_adapter)
        finally:
            ToyBounce.gate.open()
            await discord_adapter.stop()
            await services.close()
            discord.http.Route.BASE = base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(str(gateway))


# -- the conversation ------------------------------------------------------------------------


async def test_one_conversation(platform: Platform) -> None:
    # a mention -> the plan -> an approval card with buttons
    await platform.ask("alice", "wobble web in shop")
    card = await platform.card(0)
    await until(lambda: "Plan (offline): `toy.bounce" in platform.thread_text())
    assert "would bounce web in shop" in platform.card_text(card)
    assert platform.card_buttons(card) == ["approve", "deny"]

    # someone who may not decide clicks: only they are told; the card keeps its buttons
    await platform.click("eve", card, "approve")
    await until(lambda: "may not decide approval" in platform.private_to("eve"))
    await asyncio.sleep(0.2)
    assert "may not decide" not in platform.thread_text() + platform.private_to("bob")
    assert platform.card_buttons(card) == ["approve", "deny"] and ToyBounce.runs == []

    # an approver clicks: the result in the thread, the card edited in place, no buttons
    await platform.click("bob", card, "approve")
    await until(lambda: "bounced web in shop" in platform.thread_text())
    await until(lambda: "approved and executed" in platform.card_text(card))
    assert platform.card_buttons(card) == [] and ToyBounce.runs == ["web"]

    # a second request expires: its card is edited in place and loses its buttons
    await platform.ask("alice", "wobble api in shop")
    second = await platform.card(1)
    await expire_now(platform.engine, second.id)
    assert [a.id for a in await platform.engine.sweep_expired(platform.adapter.post)] == [second.id]
    await until(lambda: "expired" in platform.card_text(second))
    assert platform.card_buttons(second) == [] and len(platform.cards()) == 2
    assert ToyBounce.runs == ["web"]
    # a late click on the expired card (a stale client): only the clicker is told
    await platform.click("bob", second, "approve")
    await until(lambda: f"approval {second.id} is already expired" in platform.private_to("bob"))
    assert ToyBounce.runs == ["web"] and platform.card_buttons(second) == []

    # a long result arrives whole, as a file
    await platform.ask("eve", "dump web in shop")
    await until(lambda: "output.txt" in platform.files())
    whole = platform.files()["output.txt"].decode()
    assert all(f"conn-{i:03d}" in whole for i in range(ToyDump.ROWS))
    assert f"{ToyDump.ROWS} connections of web" in platform.thread_text()
    assert platform.refused() == []


# -- the adapter protocol and its registry ---------------------------------------------------


async def test_the_settings_choose_the_adapters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``OPSBOT_ADAPTERS`` chooses, the tokens decide: each adapter chosen runs when its
    settings are there, and one line says why not (or that the name is unknown)."""
    tokens = {
        "slack_bot_token": SLACK_TOKEN,
        "slack_signing_secret": SLACK_SECRET,
        "discord_token": "discord-test-token",
    }
    services = await build_services(
        make_settings(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", tmp_path, **tokens),
        registry=SkillRegistry(),
        policy=conversation_policy(tmp_path / "policy.yaml"),
    )
    engine = Engine(services)
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    try:

        def built(**settings: Any) -> list[str]:
            chosen = services.settings.model_copy(update=settings)
            adapters = build_adapters(engine, chosen)
            assert all(isinstance(a, Adapter) for a in adapters)
            return [a.name for a in adapters]

        assert built() == ["slack", "discord"]  # the default: every adapter with its tokens
        assert built(adapters="discord") == ["discord"]
        assert built(adapters="discord, slack") == ["discord", "slack"]
        assert built(adapters="slack", slack_signing_secret=None) == []
        assert built(adapters="teams,slack") == ["slack"]
        out = capsys.readouterr().out
        assert (
            "adapter.off" in out and "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET" in out
        )
        assert "adapter.unknown" in out and "teams" in out
    finally:
        await services.close()
        discord.http.Route.BASE = base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(str(gateway))


async def test_a_message_goes_to_the_adapter_that_owns_its_thread() -> None:
    class Toy:
        def __init__(self, name: str) -> None:
            self.name = name
            self.posted: list[str] = []

        def owns(self, thread: str) -> bool:
            return thread.startswith(self.name + ":")

        async def start(self) -> None: ...

        async def stop(self) -> None: ...

        async def post(self, message: Message) -> None:
            self.posted.append(message.thread)

        async def update(self, message: Message) -> bool:
            return False

        def routes(self) -> list[Any]:
            return []

    class Broken(Toy):
        async def start(self) -> None:
            raise ConnectionError("no route to the chat server")

    mattermost, teams = Toy("mattermost"), Toy("teams")
    assert isinstance(mattermost, Adapter)
    adapters = Adapters([mattermost, Broken("irc"), teams])
    await adapters.start()  # one that cannot start is logged and left out; the others run
    assert [a.name for a in adapters] == ["mattermost", "teams"]
    for thread in ("teams:19:abc", "mattermost:town-square:1", "irc:#ops"):
        await adapters.post(Message(thread=thread, step=Step.RESULT, blocks=[]))
    assert (mattermost.posted, teams.posted) == (["mattermost:town-square:1"], ["teams:19:abc"])
