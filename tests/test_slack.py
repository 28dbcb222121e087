"""Slack through the real slack-bolt app: correctly signed HTTP payloads into
``/slack/events`` (aiohttp test client) and Socket Mode envelopes over a fake WebSocket
(tests/fakes/slack_socket.py); Web API calls go to a fake Slack that refuses what Slack refuses
(tests/fakes/slack_api.py: Block Kit limits, ``msg_too_long``, ``not_in_channel``, stale
trigger ids, rate limits, the upload flow); Kubernetes in kmock, and the toy skills of
tests/test_conversation.py. Signing follows
https://docs.slack.dev/authentication/verifying-requests-from-slack.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kmock import KubernetesEmulator
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from opsbot.adapters.http import make_app
from opsbot.adapters.slack import SlackAdapter
from opsbot.adapters.slack_blocks import MAX_BLOCKS, mrkdwn, render
from opsbot.adapters.work import Work
from opsbot.approvals import State
from opsbot.audit import AuditEvent
from opsbot.config import Settings
from opsbot.engine import Engine
from opsbot.model import (
    ActionButton,
    Actor,
    ApprovalCard,
    ButtonStyle,
    Image,
    Invocation,
    Message,
    Step,
    Text,
    Vote,
)
from opsbot.policy import Policy
from opsbot.services import Services, build_services
from tests.conftest import ROOT, make_settings
from tests.fakes.kube import ClusterEmulator, complete_rollout, seed, write_kubeconfig
from tests.fakes.slack_api import APP_TOKEN, TOKEN, FakeSlack, block_errors
from tests.fakes.slack_socket import FakeSlackSocket
from tests.test_approvals import expire_now
from tests.test_conversation import (
    TOYS,
    ToyBounce,
    ToySlow,
    ToyTail,
    reset_toys,
    toy_rules,
)

pytestmark = pytest.mark.kmock(cls=ClusterEmulator)
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0OPS"
APPROVE, DENY = "opsbot_approve", "opsbot_deny"


def slack_policy(tmp_path: Path) -> Policy:
    text = (ROOT / "policies" / "default.yaml").read_text()
    text = text.replace("sre:    [shell:alice]", "sre:    [shell:alice, slack:UALICE]").replace(
        "oncall: [shell:bob, shell:carol]",
        "oncall: [shell:bob, shell:carol, slack:UBOB, slack:UCAROL, slack-group:S0ONCALL]",
    )
    (tmp_path / "policy.yaml").write_text(text.rstrip() + "\n" + toy_rules(["group:oncall"]))
    return Policy.load(tmp_path / "policy.yaml")


@dataclass(frozen=True)
class Card:
    """An approval card as the fake holds it: its approval id and where it is."""

    id: str
    channel: str
    ts: str
    thread: str


class SlackRig:
    def __init__(
        self,
        client: TestClient,
        slack: FakeSlack,
        services: Services,
        kmock: KubernetesEmulator,
        settings: Settings,
    ) -> None:
        self.client, self.slack, self.services, self.kmock = client, slack, services, kmock
        self.settings = settings
        self._n = itertools.count(1)

    async def signed(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        secret: str = SECRET,
        retry: int | None = None,
    ) -> Any:
        ts = str(timestamp if timestamp is not None else int(time.time()))
        signature = (
            "v0="
            + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
        )
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
        }
        if retry is not None:
            headers.update(
                {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
            )
        return await self.client.post("/slack/events", data=body.encode(), headers=headers)

    async def event(self, event: dict[str, Any], event_id: str = "", **kw: Any) -> Any:
        body = json.dumps(
            {
                "token": "x",
                "team_id": "T1",
                "api_app_id": "A1",
                "type": "event_callback",
                "event_id": event_id or f"Ev{next(self._n)}",
                "event_time": int(time.time()),
                "event": event,
            }
        )
        return await self.signed(body, "application/json", **kw)

    async def mention(self, user: str, text: str, ts: str = "1700000000.000100", **kw: Any) -> Any:
        return await self.event(
            {
                "type": "app_mention",
                "user": user,
                "text": f"<@UBOT> {text}",
                "ts": ts,
                "channel": CHANNEL,
                "event_ts": ts,
            },
            **kw,
        )

    async def command(
        self, user: str, text: str, channel: str = CHANNEL, command: str = "/ops"
    ) -> Any:
        body = urlencode(
            {
                "token": "x",
                "team_id": "T1",
                "channel_id": channel,
                "user_id": user,
                "command": command,
                "text": text,
                "response_url": self.slack.response_url(f"cmd-{next(self._n)}"),
                "trigger_id": self.slack.issue_trigger(f"trig-{next(self._n)}"),
            }
        )
        return await self.signed(body, "application/x-www-form-urlencoded")

    def click_payload(
        self,
        user: str,
        action_id: str,
        value: str,
        *,
        message_ts: str,
        thread_ts: str = "",
        block_id: str = "",
    ) -> dict[str, Any]:
        message = {"ts": message_ts, "text": "approval"}
        if thread_ts:
            message["thread_ts"] = thread_ts
        return {
            "type": "block_actions",
            "team": {"id": "T1"},
            "user": {"id": user, "username": user.lower()},
            "api_app_id": "A1",
            "token": "x",
            "trigger_id": self.slack.issue_trigger(f"trig-{user}-{next(self._n)}"),
            "response_url": self.slack.response_url(f"click-{next(self._n)}"),
            "container": {"type": "message", "message_ts": message_ts, "channel_id": CHANNEL},
            "channel": {"id": CHANNEL},
            "message": message,
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id or f"approval:{value}",
                    "value": value,
                    "type": "button",
                    "action_ts": str(time.time()),
                }
            ],
        }

    async def click(self, user: str, action_id: str, value: str, **kw: Any) -> Any:
        payload = self.click_payload(user, action_id, value, **kw)
        return await self.signed(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
        )

    async def vote(self, user: str, card: Card, action_id: str = APPROVE) -> Any:
        return await self.click(user, action_id, card.id, message_ts=card.ts, thread_ts=card.thread)

    async def card(self, index: int = 0, within: float = 10.0) -> Card:
        """The ``index``-th approval card posted (waits for it)."""
        deadline = time.monotonic() + within
        while True:
            cards = [
                Card(
                    block["elements"][0]["value"],
                    call.params["channel"],
                    call.answer["ts"],
                    call.params.get("thread_ts", ""),
                )
                for call in self.slack.posted()
                for block in call.params.get("blocks", [])
                if block.get("type") == "actions"
                and str(block.get("block_id", "")).startswith("approval:")
            ]
            if len(cards) > index:
                return cards[index]
            if time.monotonic() > deadline:
                raise AssertionError(f"no approval card {index} posted: {self.texts()}")
            await asyncio.sleep(0.02)

    def shown(self, card: Card) -> str:
        """What the card's message shows now (its blocks, as JSON)."""
        return json.dumps(self.slack.messages[(card.channel, card.ts)]["blocks"])

    def buttons(self, card: Card) -> list[str]:
        blocks = self.slack.messages[(card.channel, card.ts)]["blocks"]
        return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]

    def texts(self) -> str:
        return "\n".join(str(p.get("text", "")) for p in self.slack.of("chat.postMessage"))

    def adapter(self) -> SlackAdapter:
        """The adapter behind ``/slack/events``."""
        handler = next(
            r.handler
            for r in self.client.server.app.router.routes()
            if r.resource and r.resource.canonical == "/slack/events"
        )
        adapter: SlackAdapter = handler.__self__
        return adapter


@pytest.fixture
async def rig(kmock: KubernetesEmulator, tmp_path: Path) -> AsyncIterator[SlackRig]:
    seed(kmock)
    reset_toys()
    async with FakeSlack(token=TOKEN) as slack:
        settings = make_settings(
            f"sqlite+aiosqlite:///{tmp_path / 's.db'}",
            tmp_path,
            kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/")),
            slack_bot_token=TOKEN,
            slack_signing_secret=SECRET,
            slack_api_url=slack.base_url,
            rollout_poll=0.05,
            rollout_timeout=3.0,
        )
        services = await build_services(settings, policy=slack_policy(tmp_path))
        for toy in TOYS:
            services.registry.add(toy())
        # warmed here, as `opsbot serve` warms it at start: otherwise the first request waits
        # for the first snapshot and the first Kubernetes client (kmock's lists, the client's
        # set-up on the event loop) inside the window a test gives its posts, which a loaded
        # machine stretched past 10 s (no post at all by then)
        await services.inventory.snapshot()
        adapter = SlackAdapter(Engine(services), settings)
        client = TestClient(TestServer(make_app(services, slack=adapter)))
        await client.start_server()
        try:
            yield SlackRig(client, slack, services, kmock, settings)
        finally:
            ToyBounce.gate.open()
            ToySlow.gate.open()
            await client.close()
            await services.close()


async def wait_until(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


# -- the fake refuses what Slack refuses ---------------------------------------------------------


async def test_the_fake_refuses_what_slack_refuses() -> None:
    """Over-limit messages get Slack's own errors (so a renderer that oversteps fails here
    the way it would in Slack)."""
    async with FakeSlack(token=TOKEN) as slack:
        client = AsyncWebClient(token=TOKEN, base_url=slack.base_url)

        async def refused(method: str, **kwargs: Any) -> Any:
            with pytest.raises(SlackApiError) as caught:
                await getattr(client, method)(**kwargs)
            return caught.value.response

        def sect(text: str) -> dict[str, Any]:
            return {"type": "section", "text": {"type": "mrkdwn", "text": text}}

        ok = await client.chat_postMessage(channel=CHANNEL, text="hi", blocks=[sect("x" * 3000)])
        assert ok["ok"]
        too_many = await refused(
            "chat_postMessage", channel=CHANNEL, text="x", blocks=[sect("x")] * 51
        )
        assert too_many["error"] == "invalid_blocks"
        assert too_many["errors"] == ["must provide at most 50 items [json-pointer:/blocks]"]
        long_text = await refused(
            "chat_postMessage", channel=CHANNEL, text="x", blocks=[sect("x" * 3001)]
        )
        assert long_text["errors"] == [
            "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
        ]
        field = {"type": "mrkdwn", "text": "f"}
        fields = await refused(
            "chat_postMessage",
            channel=CHANNEL,
            text="x",
            blocks=[{"type": "section", "fields": [field] * 11}],
        )
        assert fields["errors"] == ["must provide 1 to 10 items [json-pointer:/blocks/0/fields]"]
        wide = {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}
        assert (await refused("chat_postMessage", channel=CHANNEL, text="x", blocks=[wide]))[
            "errors"
        ] == ["must be less than 2001 characters [json-pointer:/blocks/0/fields/0/text]"]
        label = {"type": "plain_text", "text": "L" * 76}
        button = {
            "type": "actions",
            "elements": [{"type": "button", "action_id": "a", "text": label}],
        }
        assert (await refused("chat_postMessage", channel=CHANNEL, text="x", blocks=[button]))[
            "error"
        ] == "invalid_blocks"
        assert (await refused("chat_postMessage", channel=CHANNEL, text="x" * 40_001))[
            "error"
        ] == "msg_too_long"
        slack.outside.add("C0ELSEWHERE")
        assert (await refused("chat_postMessage", channel="C0ELSEWHERE", text="hi"))[
            "error"
        ] == "not_in_channel"
        assert (await refused("chat_update", channel=CHANNEL, ts="1.1", text="x"))[
            "error"
        ] == "message_not_found"
        await client.chat_update(channel=CHANNEL, ts=ok["ts"], text="edited")
        view = {"type": "modal", "title": {"type": "plain_text", "text": "Deny"}, "blocks": []}
        slack.issue_trigger("t-old")
        slack._triggers["t-old"] -= 3.5  # issued 3.5 s ago
        assert (await refused("views_open", trigger_id="t-old", view=view))[
            "error"
        ] == "expired_trigger_id"
        slack.issue_trigger("t-new")
        await client.views_open(trigger_id="t-new", view=view)
        assert (await refused("views_open", trigger_id="t-new", view=view))[
            "error"
        ] == "exchanged_trigger_id"
        wordy = {**view, "title": {"type": "plain_text", "text": "T" * 25}}
        slack.issue_trigger("t-3")
        assert (await refused("views_open", trigger_id="t-3", view=wordy))[
            "error"
        ] == "invalid_arguments"
        assert (await refused("files_completeUploadExternal", files=[{"id": "F404"}]))[
            "error"
        ] == "file_not_found"
        assert (await refused("auth_test", token="xoxb-forged"))["error"] == "invalid_auth"
        slack.fail["chat.postMessage"] = [429]  # this client has no rate-limit retry handler
        limited = await refused("chat_postMessage", channel=CHANNEL, text="hi")
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
        assert limited["error"] == "ratelimited"
        again = await refused("chat_postMessage", channel=CHANNEL, text="hi")  # too soon
        assert again.status_code == 429 and slack.early_retries == 1


def test_block_limits_of_the_fake_are_slacks() -> None:
    """The fake's own limits, as Slack documents them (raise one and this fails)."""
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3000}}
    assert block_errors([section] * 50) == []
    assert block_errors([section] * 51)
    assert block_errors([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}])
    fields = [{"type": "mrkdwn", "text": "y" * 2000}] * 10
    assert block_errors([{"type": "section", "fields": fields}]) == []
    assert block_errors([{"type": "section", "fields": [*fields, fields[0]]}])
    assert block_errors([{"type": "section", "fields": [{"type": "mrkdwn", "text": "y" * 2001}]}])


# -- requests and approvals ------------------------------------------------------------------------


async def test_mention_runs_and_posts_each_step_in_the_thread(rig: SlackRig) -> None:
    response = await rig.mention("UEVE", "show pods in shop")
    assert response.status == 200
    posts = await rig.slack.wait_for("chat.postMessage", 3)
    assert {p["channel"] for p in posts} == {CHANNEL}
    assert {p["thread_ts"] for p in posts} == {"1700000000.000100"}
    texts = [p["text"] for p in posts]
    assert texts[0].startswith("Plan (offline): `k8s.pods namespace=shop`")
    assert texts[1].startswith("Allowed by rule *everyone reads*")
    assert "checkout-bbb-2 | CrashLoopBackOff" in texts[2]
    result_blocks = posts[2]["blocks"]
    context = result_blocks[-1]
    assert context["type"] == "context"
    assert re.fullmatch(r"result · <@UEVE> · \d\d:\d\d:\d\d UTC", context["elements"][0]["text"])
    assert any(
        "```" in b.get("text", {}).get("text", "") for b in result_blocks
    )  # the table, aligned
    records = await rig.services.audit.search(actor="slack:UEVE")
    assert (
        records[0].event == AuditEvent.REQUEST
        and records[0].thread == f"slack:{CHANNEL}:1700000000.000100"
    )
    assert rig.slack.refused() == []


async def test_signed_mention_to_button_approved_rollback(rig: SlackRig) -> None:
    """Done-when: a signed mention, a rollback approved by two other allowed users' buttons,
    every step in the thread, the approval message updated in place."""
    await rig.mention("UALICE", "roll back checkout in shop")
    card = await rig.card()
    assert "roll back deployment shop/checkout from revision 3 to 2" in rig.texts()

    await rig.vote("UALICE", card)  # the requester
    [ephemeral] = await rig.slack.wait_for("chat.postEphemeral")
    assert ephemeral["user"] == "UALICE" and "someone else must approve" in ephemeral["text"]
    assert ephemeral["thread_ts"] == card.thread

    await rig.vote("UEVE", card)  # not an approver
    ephemerals = await rig.slack.wait_for("chat.postEphemeral", 2)
    assert ephemerals[1]["user"] == "UEVE" and "may not decide approval" in ephemerals[1]["text"]
    assert rig.buttons(card) == [APPROVE, DENY]  # refusals leave the card as it was

    await rig.vote("UBOB", card)
    [update] = await rig.slack.wait_for("chat.update")
    assert update["ts"] == card.ts and rig.buttons(card) == [APPROVE, DENY]
    assert "approvals 1/2: <@UBOB>" in rig.shown(card)

    complete = asyncio.get_running_loop().call_later(
        0.5, complete_rollout, rig.kmock, "shop", "checkout"
    )
    await rig.vote("UCAROL", card)
    # the card is edited twice more: approved (running), then executed
    updates = await rig.slack.wait_for("chat.update", 3)
    assert {u["ts"] for u in updates} == {card.ts}  # all in place
    running, _ = updates[1:]
    assert not any(b["type"] == "actions" for b in running["blocks"])  # buttons removed
    assert "approved by <@UCAROL>" in json.dumps(running["blocks"])
    assert rig.buttons(card) == []
    shown = rig.shown(card)
    assert "*executed*" in shown and "approved and executed" in shown
    assert "approvals 2/2: <@UBOB>, <@UCAROL>" in shown
    await wait_until(lambda: "rollout complete" in rig.texts())
    complete.cancel()
    patches = [
        r for r in rig.kmock if r.method.value == "PATCH" and r.params.get("dryRun") != "All"
    ]
    assert len(patches) == 1
    approval = await rig.services.approvals.get(card.id)
    assert approval is not None and approval.state is State.EXECUTED
    assert [v.approver for v in approval.votes] == ["slack:UBOB", "slack:UCAROL"]
    assert {p["thread_ts"] for p in rig.slack.of("chat.postMessage")} == {card.thread}
    assert rig.slack.refused() == []


async def test_deny_asks_for_a_reason_in_a_modal(rig: SlackRig) -> None:
    await rig.mention("UALICE", "wobble web in shop")
    card = await rig.card()
    await rig.vote("UBOB", card, DENY)
    [opened] = await rig.slack.wait_for("views.open")
    view = opened["view"]
    assert opened["trigger_id"].startswith("trig-UBOB-")
    assert view["callback_id"] == "opsbot_deny_reason"
    submission = {
        "type": "view_submission",
        "team": {"id": "T1"},
        "user": {"id": "UBOB"},
        "api_app_id": "A1",
        "token": "x",
        "trigger_id": "t2",
        "view": {
            **view,
            "id": "V1",
            "state": {
                "values": {
                    "reason": {
                        "reason": {"type": "plain_text_input", "value": "freeze until Monday"}
                    }
                }
            },
        },
    }
    response = await rig.signed(
        urlencode({"payload": json.dumps(submission)}), "application/x-www-form-urlencoded"
    )
    assert response.status == 200
    [update] = await rig.slack.wait_for("chat.update")
    assert update["ts"] == card.ts
    shown = rig.shown(card)
    assert "*denied*" in shown and "denied by <@UBOB>" in shown and rig.buttons(card) == []
    assert "denied by <@UBOB>: freeze until Monday" in rig.texts()
    approval = await rig.services.approvals.get(card.id)
    assert approval is not None and approval.state is State.DENIED


async def test_deny_whose_reason_form_cannot_open_still_denies(rig: SlackRig) -> None:
    """A Deny click whose ``trigger_id`` Slack no longer takes (``expired_trigger_id``: the
    form must open within 3 seconds) denies without a reason rather than doing nothing."""
    await rig.mention("UALICE", "wobble web in shop")
    card = await rig.card()
    payload = rig.click_payload("UBOB", DENY, card.id, message_ts=card.ts, thread_ts=card.thread)
    rig.slack._triggers[payload["trigger_id"]] -= 3.5  # as if it came 3.5 seconds ago
    await rig.signed(
        urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
    )
    await wait_until(lambda: "*denied*" in rig.shown(card))
    [refused] = rig.slack.refused("views.open")
    assert refused.answer["error"] == "expired_trigger_id"
    assert rig.buttons(card) == [] and ToyBounce.runs == []


async def test_slash_command_works_in_a_thread(rig: SlackRig) -> None:
    response = await rig.command("UEVE", "events in shop")
    assert response.status == 200
    posts = await rig.slack.wait_for("chat.postMessage", 4)
    parent = posts[0]
    assert parent["text"] == "<@UEVE> asked: events in shop" and "thread_ts" not in parent
    assert all(p.get("thread_ts") for p in posts[1:])
    assert "BackOff" in rig.texts()


async def test_the_slash_command_name_is_configurable(rig: SlackRig) -> None:
    """``OPSBOT_SLASH_COMMAND`` names the command this app answers (as in its manifest)."""
    settings = rig.settings.model_copy(update={"slash_command": "/opsbot-staging"})
    staging = SlackAdapter(Engine(rig.services), settings)
    client = TestClient(TestServer(make_app(rig.services, slack=staging)))
    await client.start_server()
    try:
        rig.client, default = client, rig.client
        response = await rig.command("UEVE", "help", command="/opsbot-staging")
        assert response.status == 200
        await wait_until(lambda: "Skills you (slack:UEVE)" in rig.texts())
        before = len(rig.slack.of("chat.postMessage"))
        assert (await rig.command("UEVE", "help")).status == 404  # /ops is not this app's
        await asyncio.sleep(0.3)
        assert len(rig.slack.of("chat.postMessage")) == before
    finally:
        rig.client = default
        await client.close()


async def test_slash_command_is_acknowledged_before_the_work_ends(rig: SlackRig) -> None:
    """Slack wants the HTTP answer within 3 seconds; the work (here held as long as the test
    likes) comes after it. Fails with ``ack()`` after the work, or with
    ``process_before_response=True``."""
    ToySlow.gate.close()
    response = await asyncio.wait_for(rig.command("UEVE", "ponder web in shop"), 2.5)
    assert response.status == 200
    await asyncio.wait_for(ToySlow.gate.entered.wait(), 5)  # the work started, after the ack
    assert "pondered web" not in rig.texts()
    ToySlow.gate.open()
    await wait_until(lambda: "pondered web" in rig.texts())


async def test_a_full_queue_answers_busy_in_the_thread_at_once(rig: SlackRig) -> None:
    """Events wait for a worker in a bounded queue: with one worker busy and the queue full,
    the next mention is told in its thread within a second that the bot is busy (audited),
    and never runs; the queued one runs once the worker is free."""
    rig.adapter().work = Work("slack", workers=1, limit=1)
    ToySlow.gate.close()
    await rig.mention("UEVE", "ponder web in shop", ts="1700000001.000100")
    await asyncio.wait_for(ToySlow.gate.entered.wait(), 5)  # the one worker is busy
    await rig.mention("UEVE", "show pods in shop", ts="1700000002.000100")  # waits
    started = time.monotonic()
    await rig.mention("UEVE", "show pods in staging", ts="1700000003.000100")  # no room
    while not any(
        p.get("thread_ts") == "1700000003.000100" for p in rig.slack.of("chat.postMessage")
    ):
        assert time.monotonic() - started < 1.0, "no busy answer within a second"
        await asyncio.sleep(0.01)
    [busy] = [p for p in rig.slack.of("chat.postMessage") if p["thread_ts"] == "1700000003.000100"]
    assert "I am busy right now (1 requests are waiting before yours)" in busy["text"]
    assert "ask again" in busy["text"]
    assert not [
        p for p in rig.slack.of("chat.postMessage") if p["thread_ts"] == "1700000002.000100"
    ]
    ToySlow.gate.open()
    await wait_until(lambda: "pondered web" in rig.texts())
    await wait_until(
        lambda: any(
            p["thread_ts"] == "1700000002.000100" and "k8s.pods" in p["text"]
            for p in rig.slack.of("chat.postMessage")
        )
    )
    refused = await rig.services.audit.search(event=AuditEvent.REQUEST)
    assert [(r.outcome, r.detail) for r in refused if r.outcome == "busy"] == [
        ("busy", "show pods in staging")
    ]
    assert not [p for p in rig.slack.of("chat.postMessage") if "staging" in p["text"]]


async def test_one_threads_events_run_in_order(rig: SlackRig) -> None:
    """A reply in a thread waits for the request before it in that thread; another thread's
    request is not held up."""
    ToySlow.gate.close()
    await rig.mention("UEVE", "ponder web in shop", ts="1700000001.000100")
    await asyncio.wait_for(ToySlow.gate.entered.wait(), 5)
    await rig.event(
        {
            "type": "app_mention",
            "user": "UEVE",
            "text": "<@UBOT> show pods in shop",
            "ts": "1700000001.000200",
            "thread_ts": "1700000001.000100",
            "channel": CHANNEL,
        }
    )
    await rig.mention("UEVE", "show pods in staging", ts="1700000005.000100")
    await wait_until(lambda: "k8s.pods namespace=staging" in rig.texts())
    assert "k8s.pods namespace=shop" not in rig.texts()  # behind the held one in its thread
    ToySlow.gate.open()
    await wait_until(lambda: "k8s.pods namespace=shop" in rig.texts())
    texts = rig.texts()
    assert texts.index("pondered web") < texts.index("k8s.pods namespace=shop")


async def test_a_click_is_acknowledged_and_the_buttons_go_before_the_action_ends(
    rig: SlackRig,
) -> None:
    """The approving click is answered at once, and the card loses its buttons as soon as the
    vote decides, not when the action (held here) ends; then it shows the result."""
    await rig.mention("UALICE", "wobble web in shop")
    card = await rig.card()
    ToyBounce.gate.close()
    response = await asyncio.wait_for(rig.vote("UBOB", card), 2.5)
    assert response.status == 200
    await asyncio.wait_for(ToyBounce.gate.entered.wait(), 5)
    assert rig.buttons(card) == [] and "approved by <@UBOB>" in rig.shown(card)
    assert ToyBounce.runs == []  # still running
    ToyBounce.gate.open()
    await wait_until(lambda: "approved and executed" in rig.shown(card))
    assert ToyBounce.runs == ["web"] and rig.buttons(card) == []


async def test_direct_messages_start_requests_but_bot_messages_do_not(rig: SlackRig) -> None:
    await rig.event(
        {
            "type": "message",
            "channel_type": "im",
            "channel": "D1",
            "user": "UEVE",
            "text": "help",
            "ts": "1.1",
        },
        event_id="EvDM",
    )
    posts = await rig.slack.wait_for("chat.postMessage", 3)
    assert posts[0]["channel"] == "D1" and "Skills you (slack:UEVE) may use here" in rig.texts()
    await rig.event(
        {
            "type": "message",
            "channel_type": "im",
            "channel": "D1",
            "bot_id": "BBOT",
            "text": "x",
            "ts": "1.2",
        },
        event_id="EvBot",
    )
    await asyncio.sleep(0.3)
    assert len(rig.slack.of("chat.postMessage")) == 3


async def test_forged_stale_and_malformed_requests_are_rejected(
    rig: SlackRig, capsys: pytest.CaptureFixture[str]
) -> None:
    body = json.dumps(
        {
            "type": "event_callback",
            "event_id": "EvX",
            "event": {
                "type": "app_mention",
                "user": "UALICE",
                "text": "restart checkout in shop",
                "ts": "2.0",
                "channel": CHANNEL,
            },
        }
    )
    forged = await rig.signed(body, "application/json", secret="not-the-secret")
    stale = await rig.signed(body, "application/json", timestamp=int(time.time()) - 600)
    unsigned = await rig.client.post(
        "/slack/events", data=body, headers={"Content-Type": "application/json"}
    )
    assert (forged.status, stale.status, unsigned.status) == (401, 401, 401)
    garbage = await rig.signed("{not json", "application/json")
    assert garbage.status == 400  # signed, but not a request Slack sends
    await asyncio.sleep(0.3)
    assert rig.slack.of("chat.postMessage") == [] and await rig.services.audit.count() == 0
    logged = [ln for ln in capsys.readouterr().out.splitlines() if "slack.rejected" in ln]
    assert len(logged) == 4 and "malformed body" in logged[-1]


async def test_a_replayed_request_runs_once(rig: SlackRig) -> None:
    """The same signed body sent again (within the 5 minutes the signature is good for)
    is a repeat of its event: nothing runs twice."""
    body = json.dumps(
        {
            "token": "x",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": "EvReplay",
            "event_time": int(time.time()),
            "event": {
                "type": "app_mention",
                "user": "UEVE",
                "text": "<@UBOT> show pods in shop",
                "ts": "3.0",
                "channel": CHANNEL,
            },
        }
    )
    timestamp = int(time.time())
    first = await rig.signed(body, "application/json", timestamp=timestamp)
    again = await rig.signed(body, "application/json", timestamp=timestamp)
    assert (first.status, again.status) == (200, 200)
    await rig.slack.wait_for("chat.postMessage", 3)
    await asyncio.sleep(0.3)
    assert len(await rig.services.audit.search(event=AuditEvent.REQUEST)) == 1


async def test_retried_events_run_once(rig: SlackRig) -> None:
    await rig.mention("UEVE", "show pods in shop", event_id="EvSame")
    await rig.mention("UEVE", "show pods in shop", event_id="EvSame", retry=1)
    await rig.slack.wait_for("chat.postMessage", 3)
    await asyncio.sleep(0.3)
    assert len(rig.slack.of("chat.postMessage")) == 3
    assert len(await rig.services.audit.search(event=AuditEvent.REQUEST)) == 1


async def test_double_click_executes_once(rig: SlackRig) -> None:
    await rig.mention("UALICE", "restart checkout in shop")
    card = await rig.card()
    loop = asyncio.get_running_loop()
    complete = loop.call_later(0.3, complete_rollout, rig.kmock, "shop", "checkout")
    await asyncio.gather(rig.vote("UBOB", card), rig.vote("UBOB", card), rig.vote("UCAROL", card))
    await wait_until(lambda: "rollout complete" in rig.texts())
    complete.cancel()
    assert (
        len([r for r in rig.kmock if r.method.value == "PATCH" and r.params.get("dryRun") != "All"])
        == 1
    )
    assert len(rig.slack.of("chat.postEphemeral")) == 2  # the two losing clicks were told


async def test_charts_are_uploaded_into_the_thread(rig: SlackRig) -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    await rig.adapter().post(
        Message(
            thread=f"slack:{CHANNEL}:9.9",
            step=Step.RESULT,
            blocks=[Image(title="up over 30m", data=png)],
        )
    )
    [complete] = rig.slack.of("files.completeUploadExternal")
    assert complete["channel_id"] == CHANNEL and complete["thread_ts"] == "9.9"
    [(_, uploaded)] = rig.slack.uploads.items()
    assert uploaded == png
    assert rig.slack.of("files.getUploadURLExternal")[0]["filename"] == "up-over-30m.png"


async def test_missing_scopes_and_groups_are_reported(rig: SlackRig) -> None:
    adapter = rig.adapter()
    rig.slack.scopes = "chat:write"
    missing = await adapter.check()
    assert missing == ["app_mentions:read", "commands", "files:write", "im:history"]
    rig.slack.groups = [{"id": "S0SRE", "handle": "sre", "users": ["UEVE"]}]
    await adapter.check()
    assert (await adapter.actor("UEVE")).roles == ("slack-group:S0SRE",)


async def test_rate_limited_posts_wait_as_slack_asks_and_are_retried(rig: SlackRig) -> None:
    rig.slack.fail["chat.postMessage"] = [429]
    started = time.monotonic()
    await rig.mention("UEVE", "help")
    posts = await rig.slack.wait_for("chat.postMessage", 3)
    assert "Skills you (slack:UEVE)" in "".join(str(p.get("text")) for p in posts)
    assert next(c.status for c in rig.slack.calls if c.method == "chat.postMessage") == 429
    assert rig.slack.early_retries == 0  # the retry waited Retry-After (1 s)
    assert time.monotonic() - started >= 1.0


async def test_suggested_action_button_runs_as_the_clickers_request(
    rig: SlackRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = rig.adapter()
    thread = f"slack:{CHANNEL}:5.5"
    action = ActionButton(
        id="act-pods-1",
        label="Show pods in shop",
        invocation=Invocation(skill="k8s.pods", args={"namespace": "shop"}),
        style=ButtonStyle.PRIMARY,
    )
    await adapter.engine.actions.offer(action, thread=thread, channel=CHANNEL)
    await adapter.post(
        Message(thread=thread, step=Step.RESULT, blocks=[Text(text="Try this:"), action])
    )
    [offer] = rig.slack.of("chat.postMessage")
    [buttons] = [b for b in offer["blocks"] if b["type"] == "actions"]
    [element] = buttons["elements"]
    assert element["action_id"] == "opsbot_action" and element["value"] == "act-pods-1"
    assert element["text"]["text"] == "Show pods in shop" and element["style"] == "primary"

    clicks: list[tuple[str, str, str]] = []
    click = adapter.engine.click

    async def spy(action_id: str, clicker: Actor, reply: Any, *, channel: str) -> None:
        clicks.append((action_id, clicker.id, channel))
        await click(action_id, clicker, reply, channel=channel)

    monkeypatch.setattr(adapter.engine, "click", spy)
    await rig.click(
        "UEVE",
        "opsbot_action",
        "act-pods-1",
        message_ts="5.6",
        block_id="action:act-pods-1",
        thread_ts="5.5",
    )
    await wait_until(lambda: "CrashLoopBackOff" in rig.texts())
    assert clicks == [("act-pods-1", "slack:UEVE", CHANNEL)]
    assert {p["thread_ts"] for p in rig.slack.of("chat.postMessage")} == {"5.5"}
    [record] = await rig.services.audit.search(event=AuditEvent.REQUEST)
    assert record.actor == "slack:UEVE" and record.thread == thread  # the clicker's request


async def test_an_unknown_action_is_answered_to_the_clicker_only(rig: SlackRig) -> None:
    await rig.click(
        "UEVE", "opsbot_action", "gone-1", message_ts="7.1", block_id="action:gone", thread_ts="7.0"
    )
    [ephemeral] = await rig.slack.wait_for("chat.postEphemeral")
    assert ephemeral["user"] == "UEVE" and ephemeral["thread_ts"] == "7.0"
    assert "no longer known" in ephemeral["text"]
    assert rig.slack.of("chat.postMessage") == []


async def test_an_expired_card_is_edited_in_place_and_loses_its_buttons(rig: SlackRig) -> None:
    await rig.mention("UALICE", "restart checkout in shop")
    card = await rig.card()
    adapter = rig.adapter()
    await expire_now(adapter.engine, card.id)
    await adapter.engine.sweep_expired(adapter.post)
    [update] = await rig.slack.wait_for("chat.update")
    assert (update["channel"], update["ts"]) == (CHANNEL, card.ts)  # the card, not a new post
    assert rig.buttons(card) == [] and "*expired*" in rig.shown(card)
    assert "expired without enough approvals" in rig.texts()


# -- defects of issue 13 -----------------------------------------------------------------------


async def test_text_from_slack_is_unescaped(rig: SlackRig) -> None:
    """Defect 1: Slack sends ``>`` as ``&gt;``, links and mentions wrapped in ``<…>``; the
    request is what the person typed."""
    await rig.mention(
        "UEVE",
        "help sum(up) &gt; 0 &amp;&amp; rate(x[5m]) &lt; 1 in <#C0OPS|ops> for <@UALICE>, "
        "see <https://wiki.test/a?b=1&amp;c=2|the runbook> and <https://wiki.test/b>",
    )
    await rig.slack.wait_for("chat.postMessage", 1)
    await rig.command("UEVE", "help a &lt;= b &amp; c &gt; d")
    await wait_until(lambda: len(rig.slack.of("chat.postMessage")) >= 3)
    await asyncio.sleep(0.2)
    requests = [r.detail for r in await rig.services.audit.search(event=AuditEvent.REQUEST)]
    assert sorted(requests) == sorted(
        [
            "help sum(up) > 0 && rate(x[5m]) < 1 in #ops for @UALICE, see the runbook and "
            "https://wiki.test/b",
            "help a <= b & c > d",
        ]
    )
    parent = [p for p in rig.slack.of("chat.postMessage") if "asked:" in p["text"]]
    assert parent[0]["text"] == "<@UEVE> asked: help a &lt;= b &amp; c &gt; d"  # shown as typed


def test_unescape_follows_slacks_formatting_rules() -> None:
    from opsbot.adapters.slack_blocks import unescape

    assert unescape("a &amp;lt; b") == "a &lt; b"  # decoded once
    assert unescape("<!here> <!subteam^S1|@oncall> <@U1|bob> <#C1>") == "@here @oncall @bob #C1"
    assert unescape("<mailto:a@b.test|a@b.test>") == "a@b.test"


async def test_an_action_that_raises_is_told_in_the_thread_and_on_the_card(
    rig: SlackRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defects 2 and 6: when running the approved action raises, everyone in the thread is
    told (not only the clicker, not the channel root) and the card says it failed."""
    await rig.mention("UALICE", "wobble web in shop")
    card = await rig.card()
    engine = rig.adapter().engine

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the cluster fell over")

    monkeypatch.setattr(engine, "execute", explode)
    await rig.vote("UBOB", card)
    await wait_until(lambda: "the cluster fell over" in rig.texts())
    told = [p for p in rig.slack.of("chat.postMessage") if "the cluster fell over" in p["text"]]
    assert {p["thread_ts"] for p in told} == {card.thread}
    await wait_until(lambda: "*failed*" in rig.shown(card))
    assert rig.buttons(card) == []
    approval = await rig.services.approvals.get(card.id)
    assert approval is not None and approval.state is State.FAILED
    assert rig.slack.of("chat.postEphemeral") == []


async def test_an_expired_card_is_edited_in_place_after_a_restart(rig: SlackRig) -> None:
    """Defect 3: the card's message is known to a restarted process (or another replica)."""
    await rig.mention("UALICE", "wobble web in shop")
    card = await rig.card()
    restarted = SlackAdapter(Engine(rig.services), rig.settings)
    await expire_now(restarted.engine, card.id)
    await restarted.engine.sweep_expired(restarted.post)
    [update] = await rig.slack.wait_for("chat.update")
    assert (update["channel"], update["ts"]) == (CHANNEL, card.ts)
    assert rig.buttons(card) == [] and "*expired*" in rig.shown(card)
    head = f"Approval `{card.id}` *expired*"  # the card's head once expired: never posted anew
    assert [p for p in rig.slack.of("chat.postMessage") if head in json.dumps(p["blocks"])] == []


async def test_a_long_table_is_attached_whole(rig: SlackRig) -> None:
    """Defect 5: a 300-row table shows what fits, says so, and the whole table is a file."""
    await rig.mention("UEVE", "dump web in shop")
    await rig.slack.wait_for("files.completeUploadExternal")
    [result] = [p for p in rig.slack.of("chat.postMessage") if "300 connections" in p["text"]]
    shown = json.dumps(result["blocks"])
    assert "conn-000" in shown and "conn-299" not in shown
    assert re.search(r"\d+ more rows not shown here: the whole output is attached", shown)
    [upload] = rig.slack.of("files.getUploadURLExternal")
    assert upload["filename"] == "output.txt"
    [data] = rig.slack.uploads.values()
    assert all(f"conn-{i:03d}" in data.decode() for i in range(300))
    assert rig.slack.of("files.completeUploadExternal")[0]["thread_ts"] == "1700000000.000100"
    assert rig.slack.refused() == []


async def test_long_logs_keep_their_newest_lines(rig: SlackRig) -> None:
    """Defect 5: logs are cut from the oldest end, and attached whole."""
    await rig.mention("UEVE", "tail web in shop")
    await rig.slack.wait_for("files.completeUploadExternal")
    [result] = [p for p in rig.slack.of("chat.postMessage") if "log of web" in p["text"]]
    shown = json.dumps(result["blocks"])
    assert f"line {ToyTail.LINES - 1:04d}" in shown and "line 0000" not in shown
    assert "earlier lines not shown here" in shown
    [data] = rig.slack.uploads.values()
    assert "line 0000" in data.decode() and f"line {ToyTail.LINES - 1:04d}" in data.decode()
    assert rig.slack.refused() == []


async def test_a_refusal_reaches_the_clicker_in_the_thread_when_ephemerals_fail(
    rig: SlackRig,
) -> None:
    """Defect 6: the bot was removed from the channel after posting the card; a refusal still
    reaches the clicker, in the thread, through the click's response_url."""
    await rig.mention("UALICE", "wobble web in shop")
    card = await rig.card()
    rig.slack.outside.add(CHANNEL)
    await rig.vote("UEVE", card)
    [answer] = await rig.slack.wait_for_response()
    assert answer["response_type"] == "ephemeral" and answer["replace_original"] is False
    assert answer["thread_ts"] == card.thread and "may not decide approval" in answer["text"]


async def test_slash_command_where_the_bot_is_not_answers_ephemerally(rig: SlackRig) -> None:
    """Defect 7: ``/ops`` in a channel the bot has not joined tells the person so."""
    rig.slack.outside.add("C0ELSEWHERE")
    response = await rig.command("UEVE", "help", channel="C0ELSEWHERE")
    assert response.status == 200
    [answer] = await rig.slack.wait_for_response()
    assert answer["response_type"] == "ephemeral"
    assert "/invite @opsbot" in answer["text"] and "Nothing was run" in answer["text"]
    assert await rig.services.audit.count() == 0


async def test_user_groups_are_read_when_the_vote_is_counted(rig: SlackRig) -> None:
    """Defect 8: someone removed from an approver group cannot approve any more (Slack's
    subteam_members_changed at once; without it, once the cache's short TTL ran out)."""
    rig.slack.groups = [{"id": "S0ONCALL", "handle": "oncall", "users": ["UDAVE"]}]
    adapter = rig.adapter()
    await adapter.check()  # as opsbot serve does at start
    await rig.mention("UALICE", "wobble web in shop")
    card = await rig.card()
    rig.slack.groups = [{"id": "S0ONCALL", "handle": "oncall", "users": ["UERIN"]}]
    await rig.event(
        {
            "type": "subteam_members_changed",
            "subteam_id": "S0ONCALL",
            "team_id": "T1",
            "date_previous_update": 1,
            "date_update": 2,
            "added_users": ["UERIN"],
            "added_users_count": "1",
            "removed_users": ["UDAVE"],
            "removed_users_count": "1",
        }
    )
    await rig.vote("UDAVE", card)
    [refusal] = await rig.slack.wait_for("chat.postEphemeral")
    assert "may not decide approval" in refusal["text"] and ToyBounce.runs == []
    rig.slack.groups = [{"id": "S0ONCALL", "handle": "oncall", "users": ["UFRED"]}]
    adapter.groups.ttl = 0  # no event this time: the cache has run out
    await rig.vote("UERIN", card)
    refusals = await rig.slack.wait_for("chat.postEphemeral", 2)
    assert refusals[1]["user"] == "UERIN" and ToyBounce.runs == []
    await rig.vote("UFRED", card)
    await wait_until(lambda: ToyBounce.runs == ["web"])


# -- Socket Mode ---------------------------------------------------------------------------------


async def test_socket_mode_acknowledges_each_envelope_before_the_work(rig: SlackRig) -> None:
    """The real bolt Socket Mode client: ``apps.connections.open`` (app token) -> the fake's
    WebSocket -> envelopes, each acknowledged within 3 seconds though the work takes longer."""
    settings = rig.settings.model_copy(
        update={"slack_app_token": APP_TOKEN, "slack_signing_secret": None}
    )
    async with FakeSlackSocket(rig.slack) as socket:
        adapter = SlackAdapter(Engine(rig.services), settings)
        await asyncio.wait_for(adapter.start(), 10)
        try:
            [opened] = rig.slack.of("apps.connections.open")
            assert socket.connections == 1
            ToySlow.gate.close()
            command = await socket.slash_command(
                {
                    "token": "x",
                    "team_id": "T1",
                    "channel_id": CHANNEL,
                    "user_id": "UEVE",
                    "command": "/ops",
                    "text": "ponder web in shop",
                    "response_url": rig.slack.response_url("sock-1"),
                    "trigger_id": rig.slack.issue_trigger("sock-t1"),
                }
            )
            assert (await socket.wait_ack(command))["envelope_id"] == command
            await asyncio.wait_for(ToySlow.gate.entered.wait(), 5)
            assert "pondered web" not in rig.texts()
            ToySlow.gate.open()
            await wait_until(lambda: "pondered web" in rig.texts())
            mention = await socket.event(
                {
                    "type": "app_mention",
                    "user": "UALICE",
                    "text": "<@UBOT> wobble web in shop",
                    "ts": "1800000000.000100",
                    "channel": CHANNEL,
                    "event_ts": "1800000000.000100",
                },
                event_id="EvSock1",
            )
            await socket.wait_ack(mention)
            card = await rig.card()
            ToyBounce.gate.close()
            click = await socket.interactive(
                rig.click_payload(
                    "UBOB", APPROVE, card.id, message_ts=card.ts, thread_ts=card.thread
                )
            )
            await socket.wait_ack(click)
            await asyncio.wait_for(ToyBounce.gate.entered.wait(), 5)
            assert rig.buttons(card) == []
            ToyBounce.gate.open()
            await wait_until(lambda: "approved and executed" in rig.shown(card))
            assert socket.late == [] and opened == {}
        finally:
            await adapter.stop()


async def test_socket_mode_that_cannot_connect_does_not_hold_up_start(
    rig: SlackRig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Slack refusing ``apps.connections.open`` (here: Socket Mode off for the app) leaves
    slack_sdk retrying; ``start()`` says so and returns, so serve's HTTP server still starts."""
    import opsbot.adapters.slack as slack_module

    monkeypatch.setattr(slack_module, "SOCKET_WAIT", 0.3)
    settings = rig.settings.model_copy(
        update={"slack_app_token": APP_TOKEN, "slack_signing_secret": None}
    )
    adapter = SlackAdapter(Engine(rig.services), settings)
    try:
        await asyncio.wait_for(adapter.start(), 3)
        assert rig.slack.refused("apps.connections.open")[0].answer["error"] == (
            "socket_mode_disabled"
        )
        assert "slack.socket_mode_not_connected" in capsys.readouterr().out
    finally:
        await asyncio.wait_for(adapter.stop(), 5)


# -- rendering -------------------------------------------------------------------------------------


def test_neutral_markup_becomes_mrkdwn() -> None:
    assert mrkdwn("Allowed by rule **everyone reads**.") == "Allowed by rule *everyone reads*."
    assert mrkdwn("2*3 and a_b_c") == "2*3 and a_b_c"  # literal, as written
    assert mrkdwn("_why_ `rate(x[5m]) > 1`") == "_why_ `rate(x[5m]) &gt; 1`"
    assert (
        mrkdwn("[runbook](https://wiki.test/a?b=1&c=2)")
        == "<https://wiki.test/a?b=1&amp;c=2|runbook>"
    )
    assert mrkdwn("a < b & c > d, asked by <@UEVE>") == "a &lt; b &amp; c &gt; d, asked by <@UEVE>"
    # mrkdwn has no escape character: a literal *x* must not turn bold
    assert mrkdwn("*not bold*") == "\u200b*not bold*"


def test_approval_card_blocks_follow_its_state() -> None:
    card = ApprovalCard(
        approval_id="abc234",
        summary="k8s.restart name=checkout namespace=shop",
        requester="slack:UALICE",
        approvers=["group:oncall"],
        min_approvals=1,
        expires_at=datetime(2026, 1, 1, 12, tzinfo=UTC),
        state="pending",
        preview="restart deployment shop/checkout",
    )
    pending, _, _ = render(Message(thread="slack:C:1", step=Step.APPROVAL, blocks=[card]))
    [actions] = [b for b in pending if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["opsbot_approve", "opsbot_deny"]
    assert {e["value"] for e in actions["elements"]} == {"abc234"}
    denied = card.model_copy(
        update={
            "state": "denied",
            "status": "denied by <@UBOB>: **freeze**",
            "votes": [Vote(actor="slack:UBOB", verdict="deny")],
        }
    )
    blocks, text, _ = render(Message(thread="slack:C:1", step=Step.APPROVAL, blocks=[denied]))
    assert not any(b["type"] == "actions" for b in blocks)
    shown = json.dumps(blocks)
    assert "Approval `abc234` *denied*" in shown and "denied by <@UBOB>: *freeze*" in shown
    assert "denied by <@UBOB>: *freeze*" in text


def test_rendered_messages_stay_within_slacks_limits() -> None:
    """Whatever the engine posts, the blocks are ones Slack accepts; what did not fit is in
    the attached output.txt."""
    many = [Text(text=f"line {i} " + "x" * 3500) for i in range(60)]
    blocks, _, uploads = render(Message(thread="slack:C:1", step=Step.RESULT, blocks=many))
    assert block_errors(blocks) == [] and len(blocks) <= MAX_BLOCKS
    assert [u.filename for u in uploads] == ["output.txt"]
    assert "line 59" in uploads[0].data.decode()
    entities = Message(thread="slack:C:1", step=Step.RESULT, blocks=[Text(text="<&>" * 2000)])
    blocks, _, uploads = render(entities)
    assert block_errors(blocks) == [] and uploads == []  # split over sections, nothing lost
    assert "".join(b["text"]["text"] for b in blocks[:-1]).count("&lt;&amp;&gt;") == 2000


async def test_a_question_takes_a_short_answer_in_its_thread(rig: SlackRig) -> None:
    """Issue 10, item 6: the bot's question offers the known choices as buttons, and a
    mention in its thread that answers it ("shop") runs the whole request there."""
    await rig.mention("UEVE", "show the checkout pod logs")
    [question] = await rig.slack.wait_for("chat.postMessage", 1)
    assert question["thread_ts"] == "1700000000.000100"
    assert "checkout exists in several namespaces: shop, staging" in question["text"]
    buttons = [b["elements"][0] for b in question["blocks"] if b["type"] == "actions"]
    assert [(e["action_id"], e["text"]["text"]) for e in buttons] == [
        ("opsbot_action", "k8s.logs name=checkout namespace=shop tail=100"),
        ("opsbot_action", "k8s.logs name=checkout namespace=staging tail=100"),
    ]
    await rig.event(
        {
            "type": "app_mention",
            "user": "UEVE",
            "text": "<@UBOT> shop",
            "ts": "1700000000.000200",
            "thread_ts": "1700000000.000100",
            "channel": CHANNEL,
            "event_ts": "1700000000.000200",
        }
    )
    posts = await rig.slack.wait_for("chat.postMessage", 4)
    assert {p["thread_ts"] for p in posts} == {"1700000000.000100"}
    assert posts[1]["text"].startswith(
        "Plan (offline): `k8s.logs name=checkout namespace=shop tail=100`"
    )
    assert posts[2]["text"].startswith("Allowed by rule *everyone reads*")


async def test_an_alert_opens_an_incident_thread_with_an_ack_button(rig: SlackRig) -> None:
    """An Alertmanager notification opens its incident: the first message in the routed
    channel (the alert's own data and an Ack button), the triage in the thread under it; Ack
    edits the first message and says who in the thread; resolved is told there too."""
    from opsbot.incidents import ACK_PREFIX, Desk
    from tests.test_incidents import alert, payload

    adapter = rig.adapter()
    rig.settings.alert_channel = f"slack:{CHANNEL}"
    desk = Desk(rig.services, adapter.engine, {"slack": adapter})
    client = TestClient(TestServer(make_app(rig.services, slack=adapter, desk=desk)))
    await client.start_server()
    try:
        answer = await client.post("/alertmanager", json=payload())
        body = await answer.json()
        assert answer.status == 200 and body["opened"] is True, body
        [root] = [c for c in rig.slack.posted() if not c.params.get("thread_ts")]
        ts = root.answer["ts"]
        assert root.params["channel"] == CHANNEL and body["thread"] == f"slack:{CHANNEL}:{ts}"
        assert "HighErrorRate: checkout in shop" in root.params["text"]
        [ack] = [e for b in root.params["blocks"] if b["type"] == "actions" for e in b["elements"]]
        assert ack["value"] == f"{ACK_PREFIX}{body['incident']}" and ack["text"]["text"] == "Ack"
        await desk.settle(within=60)
        thread = [c.params for c in rig.slack.posted() if c.params.get("thread_ts") == ts]
        assert "incident.triage" in "\n".join(p["text"] for p in thread)
        assert len([c for c in rig.slack.posted() if not c.params.get("thread_ts")]) == 1

        await rig.click(
            "UBOB",
            "opsbot_action",
            ack["value"],
            message_ts=ts,
            thread_ts=ts,
            block_id=f"action:{ack['value']}",
        )
        await wait_until(
            lambda: "Acknowledged by slack:UBOB" in rig.slack.messages[(CHANNEL, ts)]["text"]
        )
        assert rig.buttons(Card("", CHANNEL, ts, ts)) == []  # no Ack any more
        await wait_until(lambda: "acknowledged this incident" in rig.texts())

        done = alert(service="checkout", namespace="shop", severity="critical", status="resolved")
        answer = await client.post("/alertmanager", json=payload(done))
        assert (await answer.json())["status"] == "resolved"
        assert "RESOLVED" in rig.slack.messages[(CHANNEL, ts)]["text"]
        resolved = [c.params for c in rig.slack.posted() if c.params.get("thread_ts") == ts]
        assert "Resolved" in resolved[-1]["text"]
    finally:
        await desk.close()
        await client.close()
