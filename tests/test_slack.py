"""Slack through the real slack-bolt app: correctly signed HTTP payloads into
``/slack/events`` (aiohttp test client), Web API calls into a recording fake Slack server,
Kubernetes in kmock. Signing follows https://api.slack.com/authentication/verifying-requests-from-slack.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kmock import KubernetesEmulator

from opsbot.adapters.http import make_app
from opsbot.adapters.slack import SlackAdapter
from opsbot.adapters.slack_blocks import mrkdwn, render
from opsbot.approvals import State
from opsbot.audit import AuditEvent
from opsbot.engine import Engine
from opsbot.model import (
    ActionButton,
    Actor,
    ApprovalCard,
    ButtonStyle,
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
from tests.fakes.slack_api import FakeSlack
from tests.test_approvals import expire_now

pytestmark = pytest.mark.kmock(cls=ClusterEmulator)
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0OPS"


def slack_policy(tmp_path: Path) -> Policy:
    text = (ROOT / "policies" / "default.yaml").read_text()
    text = text.replace("sre:    [shell:alice]", "sre:    [shell:alice, slack:UALICE]").replace(
        "oncall: [shell:bob, shell:carol]",
        "oncall: [shell:bob, shell:carol, slack:UBOB, slack:UCAROL]",
    )
    (tmp_path / "policy.yaml").write_text(text)
    return Policy.load(tmp_path / "policy.yaml")


class SlackRig:
    def __init__(
        self, client: TestClient, slack: FakeSlack, services: Services, kmock: KubernetesEmulator
    ) -> None:
        self.client, self.slack, self.services, self.kmock = client, slack, services, kmock

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

    async def event(self, event: dict[str, Any], event_id: str = "Ev1", **kw: Any) -> Any:
        body = json.dumps(
            {
                "token": "x",
                "team_id": "T1",
                "api_app_id": "A1",
                "type": "event_callback",
                "event_id": event_id,
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

    async def click(
        self,
        user: str,
        action_id: str,
        value: str,
        message_ts: str,
        *,
        block_id: str = "",
        thread_ts: str = "",
    ) -> Any:
        message = {"ts": message_ts, "text": "approval"}
        if thread_ts:
            message["thread_ts"] = thread_ts
        payload = {
            "type": "block_actions",
            "team": {"id": "T1"},
            "user": {"id": user, "username": user.lower()},
            "api_app_id": "A1",
            "token": "x",
            "trigger_id": f"trig-{user}-{action_id}",
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
        return await self.signed(
            urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
        )

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
    async with FakeSlack() as slack:
        settings = make_settings(
            f"sqlite+aiosqlite:///{tmp_path / 's.db'}",
            tmp_path,
            kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/")),
            slack_bot_token="xoxb-test-token",
            slack_signing_secret=SECRET,
            slack_api_url=slack.base_url,
            rollout_poll=0.05,
            rollout_timeout=3.0,
        )
        services = await build_services(settings, policy=slack_policy(tmp_path))
        adapter = SlackAdapter(Engine(services), settings)
        client = TestClient(TestServer(make_app(services, slack=adapter)))
        await client.start_server()
        try:
            yield SlackRig(client, slack, services, kmock)
        finally:
            await client.close()
            await services.close()


async def wait_until(predicate: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


def approval_message(rig: SlackRig) -> tuple[str, str]:
    """(approval id, ts) of the approval message, from the fake's recorded answers."""
    for call in rig.slack.calls:
        if call.method == "chat.postMessage":
            for block in call.params.get("blocks", []):
                if block.get("type") == "actions":
                    return block["elements"][0]["value"], call.params["thread_ts"]
    raise AssertionError("no approval message posted")


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


async def test_signed_mention_to_button_approved_rollback(rig: SlackRig) -> None:
    """Done-when: a signed mention, a rollback approved by two other allowed users' buttons,
    every step in the thread, the approval message updated in place."""
    await rig.mention("UALICE", "roll back checkout in shop")
    await rig.slack.wait_for("chat.postMessage", 3)
    approval_id, thread_ts = approval_message(rig)
    approval_ts = "approval-msg-ts"
    assert "roll back deployment shop/checkout from revision 3 to 2" in rig.texts()

    await rig.click("UALICE", "opsbot_approve", approval_id, approval_ts)  # the requester
    [ephemeral] = await rig.slack.wait_for("chat.postEphemeral")
    assert ephemeral["user"] == "UALICE" and "someone else must approve" in ephemeral["text"]

    await rig.click("UEVE", "opsbot_approve", approval_id, approval_ts)  # not an approver
    ephemerals = await rig.slack.wait_for("chat.postEphemeral", 2)
    assert ephemerals[1]["user"] == "UEVE" and "may not decide approval" in ephemerals[1]["text"]

    await rig.click("UBOB", "opsbot_approve", approval_id, approval_ts)
    [update] = await rig.slack.wait_for("chat.update")
    assert update["ts"] == approval_ts and any(b["type"] == "actions" for b in update["blocks"])
    assert "approvals 1/2: <@UBOB>" in json.dumps(update["blocks"])

    complete = asyncio.get_running_loop().call_later(
        0.5, complete_rollout, rig.kmock, "shop", "checkout"
    )
    await rig.click("UCAROL", "opsbot_approve", approval_id, approval_ts)
    # the card is edited twice more: approved (running), then executed
    updates = await rig.slack.wait_for("chat.update", 3)
    assert {u["ts"] for u in updates} == {approval_ts}  # all in place
    running, final = updates[1:]
    assert not any(b["type"] == "actions" for b in running["blocks"])  # buttons removed
    assert "approved by <@UCAROL>" in json.dumps(running["blocks"])
    assert not any(b["type"] == "actions" for b in final["blocks"])
    shown = json.dumps(final["blocks"])
    assert "*executed*" in shown and "approved and executed" in shown
    assert "approvals 2/2: <@UBOB>, <@UCAROL>" in shown
    await wait_until(lambda: "rollout complete" in rig.texts())
    complete.cancel()
    patches = [
        r for r in rig.kmock if r.method.value == "PATCH" and r.params.get("dryRun") != "All"
    ]
    assert len(patches) == 1
    approval = await rig.services.approvals.get(approval_id)
    assert approval is not None and approval.state is State.EXECUTED
    assert [v.approver for v in approval.votes] == ["slack:UBOB", "slack:UCAROL"]
    assert {p["thread_ts"] for p in rig.slack.of("chat.postMessage")} == {thread_ts}


async def test_deny_asks_for_a_reason_in_a_modal(rig: SlackRig) -> None:
    await rig.mention("UALICE", "restart checkout in shop")
    await rig.slack.wait_for("chat.postMessage", 3)
    approval_id, _ = approval_message(rig)
    await rig.click("UBOB", "opsbot_deny", approval_id, "m1")
    [opened] = await rig.slack.wait_for("views.open")
    view = opened["view"]
    assert (
        opened["trigger_id"] == "trig-UBOB-opsbot_deny"
        and view["callback_id"] == "opsbot_deny_reason"
    )
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
    shown = json.dumps(update["blocks"])
    assert update["ts"] == "m1" and "*denied*" in shown and "denied by <@UBOB>" in shown
    assert not any(b["type"] == "actions" for b in update["blocks"])
    assert "denied by <@UBOB>: freeze until Monday" in rig.texts()
    approval = await rig.services.approvals.get(approval_id)
    assert approval is not None and approval.state is State.DENIED


async def test_slash_command_acks_at_once_then_works_in_a_thread(rig: SlackRig) -> None:
    body = urlencode(
        {
            "token": "x",
            "team_id": "T1",
            "channel_id": CHANNEL,
            "user_id": "UEVE",
            "command": "/ops",
            "text": "events in shop",
            "response_url": f"{rig.slack.root}/response",
            "trigger_id": "t",
        }
    )
    started = time.monotonic()
    response = await rig.signed(body, "application/x-www-form-urlencoded")
    assert response.status == 200 and time.monotonic() - started < 3
    posts = await rig.slack.wait_for("chat.postMessage", 4)
    parent = posts[0]
    assert parent["text"] == "<@UEVE> asked: events in shop" and "thread_ts" not in parent
    assert all(p.get("thread_ts") for p in posts[1:])
    assert "BackOff" in rig.texts()


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


async def test_forged_stale_and_malformed_requests_are_rejected(rig: SlackRig) -> None:
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
    assert garbage.status in (400, 401, 404)
    await asyncio.sleep(0.3)
    assert rig.slack.of("chat.postMessage") == [] and await rig.services.audit.count() == 0


async def test_retried_events_run_once(rig: SlackRig) -> None:
    await rig.mention("UEVE", "show pods in shop", event_id="EvSame")
    await rig.mention("UEVE", "show pods in shop", event_id="EvSame", retry=1)
    await rig.slack.wait_for("chat.postMessage", 3)
    await asyncio.sleep(0.3)
    assert len(rig.slack.of("chat.postMessage")) == 3
    assert len(await rig.services.audit.search(event=AuditEvent.REQUEST)) == 1


async def test_double_click_executes_once(rig: SlackRig) -> None:
    await rig.mention("UALICE", "restart checkout in shop")
    await rig.slack.wait_for("chat.postMessage", 3)
    approval_id, _ = approval_message(rig)
    loop = asyncio.get_running_loop()
    complete = loop.call_later(0.3, complete_rollout, rig.kmock, "shop", "checkout")
    await asyncio.gather(
        rig.click("UBOB", "opsbot_approve", approval_id, "m"),
        rig.click("UBOB", "opsbot_approve", approval_id, "m"),
        rig.click("UCAROL", "opsbot_approve", approval_id, "m"),
    )
    await wait_until(lambda: "rollout complete" in rig.texts())
    complete.cancel()
    assert (
        len([r for r in rig.kmock if r.method.value == "PATCH" and r.params.get("dryRun") != "All"])
        == 1
    )
    assert len(rig.slack.of("chat.postEphemeral")) == 2  # the two losing clicks were told


async def test_charts_are_uploaded_into_the_thread(rig: SlackRig) -> None:
    from opsbot.model import Image, Message, Step

    png = b"\x89PNG\r\n\x1a\nfake"
    adapter_post = rig.client.server.app.router  # the adapter is reachable through the route
    handler = next(
        r.handler
        for r in adapter_post.routes()
        if r.resource and r.resource.canonical == "/slack/events"
    )
    slack_adapter: SlackAdapter = handler.__self__
    await slack_adapter.post(
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
    assert rig.slack.of("files.getUploadURLExternal")[0]["filename"].endswith(".png")


async def test_missing_scopes_and_groups_are_reported(
    rig: SlackRig, caplog: pytest.LogCaptureFixture
) -> None:
    handler = next(
        r.handler
        for r in rig.client.server.app.router.routes()
        if r.resource and r.resource.canonical == "/slack/events"
    )
    adapter: SlackAdapter = handler.__self__
    rig.slack.scopes = "chat:write"
    missing = await adapter.check()
    assert missing == ["app_mentions:read", "commands", "files:write", "im:history"]
    rig.slack.groups = [{"id": "S0SRE", "handle": "sre", "users": ["UEVE"]}]
    await adapter.check()
    assert adapter.actor("UEVE").roles == ("slack-group:S0SRE",)


async def test_rate_limited_posts_are_retried(rig: SlackRig) -> None:
    rig.slack.fail["chat.postMessage"] = [429]
    await rig.mention("UEVE", "help")
    posts = await rig.slack.wait_for("chat.postMessage", 4)  # one 429, then three that landed
    assert "Skills you (slack:UEVE)" in "".join(str(p.get("text")) for p in posts)


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
        "UEVE", "opsbot_action", "act-pods-1", "5.6", block_id="action:act-pods-1", thread_ts="5.5"
    )
    await wait_until(lambda: "CrashLoopBackOff" in rig.texts())
    assert clicks == [("act-pods-1", "slack:UEVE", CHANNEL)]
    assert {p["thread_ts"] for p in rig.slack.of("chat.postMessage")} == {"5.5"}
    [record] = await rig.services.audit.search(event=AuditEvent.REQUEST)
    assert record.actor == "slack:UEVE" and record.thread == thread  # the clicker's request


async def test_an_unknown_action_is_answered_to_the_clicker_only(rig: SlackRig) -> None:
    await rig.click(
        "UEVE", "opsbot_action", "gone-1", "7.1", block_id="action:gone", thread_ts="7.0"
    )
    [ephemeral] = await rig.slack.wait_for("chat.postEphemeral")
    assert ephemeral["user"] == "UEVE" and ephemeral["thread_ts"] == "7.0"
    assert "no longer known" in ephemeral["text"]
    assert rig.slack.of("chat.postMessage") == []


async def test_an_expired_card_is_edited_in_place_and_loses_its_buttons(rig: SlackRig) -> None:
    await rig.mention("UALICE", "restart checkout in shop")
    await rig.slack.wait_for("chat.postMessage", 3)
    approval_id, _ = approval_message(rig)
    [card_ts] = [
        c.answer["ts"]
        for c in rig.slack.calls
        if c.method == "chat.postMessage"
        and any(b["type"] == "actions" for b in c.params.get("blocks", []))
    ]
    adapter = rig.adapter()
    await expire_now(adapter.engine, approval_id)
    await adapter.engine.sweep_expired(adapter.post)
    [update] = await rig.slack.wait_for("chat.update")
    assert update["channel"] == CHANNEL and update["ts"] == card_ts  # the card, not a new post
    assert not any(b["type"] == "actions" for b in update["blocks"])
    assert "*expired*" in json.dumps(update["blocks"])
    assert "expired without enough approvals" in rig.texts()


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
        },
        event_id="Ev2",
    )
    posts = await rig.slack.wait_for("chat.postMessage", 4)
    assert {p["thread_ts"] for p in posts} == {"1700000000.000100"}
    assert posts[1]["text"].startswith(
        "Plan (offline): `k8s.logs name=checkout namespace=shop tail=100`"
    )
    assert posts[2]["text"].startswith("Allowed by rule *everyone reads*")
