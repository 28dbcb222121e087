"""Slack adapter on slack-bolt's ``AsyncApp``.

Requests start from an ``app_mention``, a direct message or the ``/ops`` slash command; every
step is posted into the request's thread (Block Kit from :mod:`opsbot.adapters.slack_blocks`,
charts uploaded with ``files_upload_v2``). An approval card carries Approve / Deny buttons
while it is open; Deny asks for a reason in a modal. Every later state of the card (a vote,
approved, denied, expired, executed) is edited into the message that shows it
(``chat.update``); the adapter knows that message from posting it or from the click on it.
A suggested-action button runs its invocation through ``Engine.click`` as the clicker's own
request. The clicker is the user of Slack's *signed* interaction payload, never a name in
text; messages meant for the clicker alone (refusals) are ephemeral, in the thread.

Transport: Socket Mode when ``SLACK_APP_TOKEN`` is set, else the Events API on
``opsbot serve``'s ``/slack/events`` (bolt verifies ``X-Slack-Signature`` and rejects stale
timestamps). Retried events (``X-Slack-Retry-Num``) are recognised by ``event_id`` and run
once, across replicas. Web API calls go to ``SLACK_API_URL`` and are retried on 429 as the
SDK advises (``Retry-After``).

Thread keys are ``slack:<channel>:<thread ts>``.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from opsbot.adapters.slack_blocks import ACTION, APPROVE, DENY, DENY_MODAL, render
from opsbot.config import Settings
from opsbot.engine import Engine, Reply
from opsbot.model import Actor, ApprovalCard, Audience, Message, Request
from opsbot.store import first_time

log = structlog.get_logger(__name__)

PREFIX = "slack"
REQUIRED_SCOPES = ("app_mentions:read", "chat:write", "commands", "files:write", "im:history")
MENTION = re.compile(r"<@[A-Z0-9]+>")
MAX_CARDS = 2000  # approval cards whose message this process remembers (oldest forgotten)


def thread_key(channel: str, ts: str) -> str:
    return f"{PREFIX}:{channel}:{ts}"


def parse_thread(key: str) -> tuple[str, str]:
    _, channel, ts = key.split(":", 2)
    return channel, ts


def card_of(message: Message) -> ApprovalCard | None:
    return next((b for b in message.blocks if isinstance(b, ApprovalCard)), None)


def off_reason(settings: Settings) -> str | None:
    """Why the Slack adapter cannot run with these settings (None: it can)."""
    if not settings.slack_bot_token:
        return "SLACK_BOT_TOKEN is not set"
    if not settings.slack_app_token and not settings.slack_signing_secret:
        return "set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP events)"
    return None


class SlackAdapter:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.client = AsyncWebClient(
            token=settings.slack_bot_token, base_url=settings.slack_api_url
        )
        self.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=3))
        self.app = AsyncApp(
            signing_secret=settings.slack_signing_secret or "socket-mode",
            client=self.client,
            request_verification_enabled=not settings.slack_app_token,
        )
        self._groups: dict[str, set[str]] = {}
        #: approval id -> (channel, ts) of the message showing its card, to edit in place
        self._cards: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._register()

    # -- setup ---------------------------------------------------------------------------

    async def check(self) -> list[str]:
        """Log (and return) the bot token's missing scopes; load user groups when allowed."""
        missing: list[str] = []
        try:
            response = await self.client.auth_test()
            granted = set(
                (response.headers.get("x-oauth-scopes") or "").replace(" ", "").split(",")
            )
            missing = [s for s in REQUIRED_SCOPES if s not in granted]
            if missing:
                log.error(
                    "slack.missing_scopes",
                    missing=missing,
                    hint="add them to the app and reinstall it",
                )
        except SlackApiError as exc:
            log.error("slack.auth_failed", error=exc.response.get("error"))
            return ["auth"]
        try:
            groups = await self.client.usergroups_list(include_users=True)
            usergroups: list[dict[str, Any]] = groups.get("usergroups", [])
            for group in usergroups:
                for user in group.get("users", []):
                    self._groups.setdefault(user, set()).add(group["id"])
        except SlackApiError as exc:
            log.info(
                "slack.usergroups_unavailable",
                error=exc.response.get("error"),
                needed=exc.response.get("needed"),
                effect="policies cannot name slack-group:<id>",
            )
        return missing

    def actor(self, user: str) -> Actor:
        return Actor(
            id=f"{PREFIX}:{user}",
            display_name=f"<@{user}>",
            roles=tuple(f"slack-group:{g}" for g in sorted(self._groups.get(user, ()))),
        )

    async def http_handler(self, request: web.Request) -> web.Response:
        """``POST /slack/events``: events, slash commands and interactivity."""
        try:
            bolt_request = await to_bolt_request(request)
        except ValueError:  # bolt parses the body before it checks the signature
            body = await request.text()
            verifier = SignatureVerifier(self.settings.slack_signing_secret or "")
            status = 400 if verifier.is_valid_request(body, dict(request.headers)) else 401
            log.warning(
                "slack.rejected", reason="malformed body", status=status, remote=request.remote
            )
            return web.json_response({"error": "malformed request"}, status=status)
        bolt_response = await self.app.async_dispatch(bolt_request)
        if bolt_response.status == 401:
            log.warning(
                "slack.rejected",
                reason="bad signature or stale timestamp",
                remote=request.remote,
                retry=request.headers.get("X-Slack-Retry-Num"),
            )
        return await to_aiohttp_response(bolt_response)

    async def run_socket_mode(self) -> None:
        """Socket Mode (``SLACK_APP_TOKEN``): no public HTTP endpoint needed."""
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(self.app, self.settings.slack_app_token)
        await handler.start_async()  # type: ignore[no-untyped-call]

    # -- posting -------------------------------------------------------------------------

    def _remember(self, approval_id: str, channel: str, ts: str) -> None:
        if approval_id and channel and ts:
            self._cards[approval_id] = (channel, ts)
            self._cards.move_to_end(approval_id)
            while len(self._cards) > MAX_CARDS:
                self._cards.popitem(last=False)

    async def _edit(self, where: tuple[str, str], blocks: list[Any], text: str) -> bool:
        try:
            await self.client.chat_update(channel=where[0], ts=where[1], blocks=blocks, text=text)
        except SlackApiError as exc:
            log.warning("slack.update_failed", channel=where[0], error=exc.response.get("error"))
            return False
        return True

    async def post(self, message: Message) -> None:
        """Post one engine message into its thread (and upload its charts). A message with an
        approval card whose message is known replaces that message (``chat.update``)."""
        channel, ts = parse_thread(message.thread)
        blocks, text, images = render(message)
        card = card_of(message)
        where = self._cards.get(card.approval_id) if card else None
        try:
            if where is None or not await self._edit(where, blocks, text):
                response = await self.client.chat_postMessage(
                    channel=channel, thread_ts=ts, blocks=blocks, text=text
                )
                if card is not None:
                    self._remember(card.approval_id, channel, str(response.get("ts") or ""))
            for image in images:
                await self.client.files_upload_v2(
                    channel=channel,
                    thread_ts=ts,
                    content=image.data,
                    title=image.title,
                    filename=re.sub(r"[^A-Za-z0-9_.-]+", "-", image.title)[:60] + ".png",
                )
        except SlackApiError as exc:
            log.error("slack.post_failed", channel=channel, error=exc.response.get("error"))

    # -- handlers ------------------------------------------------------------------------

    def _register(self) -> None:
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_direct_message)
        self.app.command("/ops")(self._on_command)
        self.app.action(APPROVE)(self._on_approve)
        self.app.action(DENY)(self._on_deny)
        self.app.action(ACTION)(self._on_action)
        self.app.view(DENY_MODAL)(self._on_deny_reason)

    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        await self._start(body, event)

    async def _on_direct_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if (
            event.get("channel_type") == "im"
            and not event.get("bot_id")
            and not event.get("subtype")
        ):
            await self._start(body, event)

    async def _start(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        event_id = body.get("event_id") or f"{event.get('channel')}:{event.get('ts')}"
        if not await first_time(self.engine.services.store, f"slack:event:{event_id}"):
            log.info("slack.duplicate_event", event_id=event_id)
            return
        if not event.get("user") or not event.get("channel") or not event.get("ts"):
            log.warning("slack.malformed_event", event_id=event_id)
            return
        text = MENTION.sub("", str(event.get("text", ""))).strip()
        thread = thread_key(event["channel"], event.get("thread_ts") or event["ts"])
        await self.engine.handle(
            Request(
                actor=self.actor(event["user"]), channel=event["channel"], text=text, thread=thread
            ),
            self.post,
        )

    async def _on_command(self, ack: Any, command: dict[str, Any]) -> None:
        await ack()  # within Slack's 3 seconds; the work continues after the HTTP answer
        user, channel, text = (
            command.get("user_id", ""),
            command.get("channel_id", ""),
            command.get("text", ""),
        )
        try:
            parent = await self.client.chat_postMessage(
                channel=channel, text=f"<@{user}> asked: {text}"[:3000]
            )
        except SlackApiError as exc:
            log.error("slack.post_failed", channel=channel, error=exc.response.get("error"))
            return
        thread = thread_key(channel, str(parent["ts"]))
        await self.engine.handle(
            Request(actor=self.actor(user), channel=channel, text=text, thread=thread), self.post
        )

    async def _on_approve(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        await self._decide(
            body,
            str(action.get("value", "")),
            "approve",
            "",
            channel=body.get("channel", {}).get("id", ""),
            message_ts=body.get("message", {}).get("ts", ""),
            thread_ts=body.get("message", {}).get("thread_ts", ""),
        )

    async def _on_deny(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        meta = {
            "approval_id": action.get("value", ""),
            "channel": body.get("channel", {}).get("id", ""),
            "message_ts": body.get("message", {}).get("ts", ""),
            "thread_ts": body.get("message", {}).get("thread_ts", ""),
        }
        await self.client.views_open(
            trigger_id=body["trigger_id"],
            view={
                "type": "modal",
                "callback_id": DENY_MODAL,
                "private_metadata": json.dumps(meta),
                "title": {"type": "plain_text", "text": "Deny request"},
                "submit": {"type": "plain_text", "text": "Deny"},
                "blocks": [
                    {
                        "type": "input",
                        "block_id": "reason",
                        "optional": True,
                        "label": {"type": "plain_text", "text": f"Why deny {meta['approval_id']}?"},
                        "element": {
                            "type": "plain_text_input",
                            "action_id": "reason",
                            "multiline": True,
                        },
                    }
                ],
            },
        )

    async def _on_deny_reason(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        meta = json.loads(view.get("private_metadata") or "{}")
        reason = (
            view.get("state", {}).get("values", {}).get("reason", {}).get("reason", {}).get("value")
            or ""
        )
        await self._decide(
            body,
            meta.get("approval_id", ""),
            "deny",
            reason.strip(),
            channel=meta.get("channel", ""),
            message_ts=meta.get("message_ts", ""),
            thread_ts=meta.get("thread_ts", ""),
        )

    def _clicker_reply(self, user: str, channel: str, thread_ts: str) -> Reply:
        """Where a click's messages go: the thread, except what is for the clicker alone,
        which only they see (ephemeral, in the thread)."""

        async def reply(message: Message) -> None:
            if message.audience is not Audience.CLICKER:
                await self.post(message)
                return
            where, ts = channel, thread_ts
            if message.thread.startswith(f"{PREFIX}:"):
                where, ts = parse_thread(message.thread)
            if not where:
                log.warning("slack.no_channel_for_clicker", user=user)
                return
            _, text, _ = render(message)
            try:
                await self.client.chat_postEphemeral(
                    channel=where, user=user, text=text, thread_ts=ts or None
                )
            except SlackApiError as exc:
                log.error("slack.post_failed", channel=where, error=exc.response.get("error"))

        return reply

    async def _decide(
        self,
        body: dict[str, Any],
        approval_id: str,
        verdict: str,
        reason: str,
        *,
        channel: str,
        message_ts: str,
        thread_ts: str,
    ) -> None:
        user = body.get("user", {}).get("id", "")
        if not user or not approval_id:
            log.warning("slack.malformed_interaction")
            return
        self._remember(approval_id, channel, message_ts)  # the card is the clicked message
        await self.engine.decide(
            approval_id,
            self.actor(user),
            verdict,
            self._clicker_reply(user, channel, thread_ts),
            reason=reason,
            channel=channel,
        )

    async def _on_action(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        """A suggested-action button: its invocation runs as the clicker's own request."""
        await ack()
        user = body.get("user", {}).get("id", "")
        action_id = str(action.get("value", ""))
        channel = body.get("channel", {}).get("id", "")
        if not user or not action_id:
            log.warning("slack.malformed_interaction")
            return
        thread_ts = body.get("message", {}).get("thread_ts") or ""
        await self.engine.click(
            action_id,
            self.actor(user),
            self._clicker_reply(user, channel, thread_ts),
            channel=channel,
        )
