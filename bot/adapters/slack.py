"""Slack adapter on slack-bolt's ``AsyncApp``.

Requests start from an ``app_mention``, a direct message or the slash command (``/ops``,
``OPSBOT_SLASH_COMMAND``); their text is turned back into what the person typed
(:func:`~opsbot.adapters.slack_blocks.unescape`: Slack sends ``>`` as ``&gt;``). Every step is
posted into the request's thread (Block Kit from :mod:`opsbot.adapters.slack_blocks`; charts,
and the whole output when a message cannot show all of it, uploaded as files). An approval
card carries Approve / Deny buttons while it is open; Deny asks for a reason in a modal.
Every later state of the card (a vote, approved, denied, expired, executed) is edited into
the message that shows it (``chat.update``); where that message is, is kept in the database,
so a restart or another replica edits it too. A suggested-action button runs its invocation
through ``Engine.click`` as the clicker's own request. The clicker is the user of Slack's
*signed* interaction payload, never a name in text; messages meant for the clicker alone
(refusals) are ephemeral, in the thread (through the interaction's ``response_url`` when
``chat.postEphemeral`` is refused). When handling a click raises, the thread is told, for
everyone, and the card says the action failed.

Policies may name ``slack-group:<id>``: user-group membership is read when it is needed
(a vote, a request), cached for :data:`GROUPS_TTL` seconds and updated at once by Slack's
``subteam_members_changed`` / ``subteam_updated`` events (subscribe to them in the app's
manifest; ``usergroups:read``).

Transport: Socket Mode when ``SLACK_APP_TOKEN`` is set, else the Events API on
``opsbot serve``'s ``/slack/events`` (bolt verifies ``X-Slack-Signature`` and rejects stale
timestamps). Either way the request is acknowledged before the work starts
(``process_before_response`` off, ``ack()`` first): Slack wants its answer within 3 seconds.
Retried events (``X-Slack-Retry-Num``) are recognised by ``event_id`` and run once, across
replicas. Web API calls go to ``SLACK_API_URL`` and are retried on 429 as Slack asks
(``Retry-After``).

Thread keys are ``slack:<channel>:<thread ts>``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from opsbot.adapters.base import CardRefs, Handler, slack_off, tell_busy
from opsbot.adapters.slack_blocks import (
    ACTION,
    APPROVE,
    DENY,
    DENY_MODAL,
    OUTPUT,
    Upload,
    context,
    escape,
    footer,
    render,
    section,
    unescape,
)
from opsbot.adapters.work import Job, Work, queued
from opsbot.config import Settings
from opsbot.engine import Engine, Reply
from opsbot.model import Actor, ApprovalCard, Audience, Message, Request
from opsbot.store import first_time

log = structlog.get_logger(__name__)

PREFIX = "slack"
REQUIRED_SCOPES = ("app_mentions:read", "chat:write", "commands", "files:write", "im:history")
LEADING_MENTION = re.compile(r"^\s*<@[UW][A-Z0-9]+(?:\|[^>]*)?>\s*")
GROUPS_TTL = 60.0  # seconds a user-group membership read from Slack is trusted
SOCKET_WAIT = 10.0  # seconds start() waits for Socket Mode to connect (then it goes on trying)
TOO_BIG = ("invalid_blocks", "msg_too_long", "msg_blocks_too_long")
NOT_THERE = ("not_in_channel", "channel_not_found", "is_archived")


def thread_key(channel: str, ts: str) -> str:
    return f"{PREFIX}:{channel}:{ts}"


def parse_thread(key: str) -> tuple[str, str]:
    _, channel, ts = key.split(":", 2)
    return channel, ts


def card_of(message: Message) -> ApprovalCard | None:
    return next((b for b in message.blocks if isinstance(b, ApprovalCard)), None)


off_reason = slack_off  # why the Slack adapter cannot run with given settings (None: it can)


def slash_command(settings: Settings) -> str:
    """The slash command this app answers (``OPSBOT_SLASH_COMMAND``, default ``/ops``)."""
    name = str(getattr(settings, "slash_command", "") or "/ops").strip()
    return name if name.startswith("/") else f"/{name}"


class UserGroups:
    """Who is in which Slack user group, read when asked and trusted for ``ttl`` seconds;
    ``changed`` applies Slack's membership events at once."""

    def __init__(self, client: AsyncWebClient, ttl: float = GROUPS_TTL) -> None:
        self.client = client
        self.ttl = ttl
        self.members: dict[str, set[str]] = {}  # group id -> user ids
        self.loaded_at = float("-inf")
        self.unavailable: str | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        try:
            groups = await self.client.usergroups_list(include_users=True)
        except SlackApiError as exc:
            if self.unavailable is None:
                log.info(
                    "slack.usergroups_unavailable",
                    error=exc.response.get("error"),
                    needed=exc.response.get("needed"),
                    effect="policies cannot name slack-group:<id>",
                )
            self.unavailable = str(exc.response.get("error"))
        else:
            listed: list[dict[str, Any]] = groups.get("usergroups") or []
            self.members = {g["id"]: set(g.get("users") or []) for g in listed if g.get("id")}
            self.unavailable = None
        self.loaded_at = time.monotonic()

    async def of(self, user: str) -> tuple[str, ...]:
        """The ids of ``user``'s groups, as Slack says now (at most ``ttl`` seconds old)."""
        if time.monotonic() - self.loaded_at >= self.ttl:
            async with self._lock:
                if time.monotonic() - self.loaded_at >= self.ttl:
                    await self.load()
        return tuple(sorted(g for g, users in self.members.items() if user in users))

    def changed(
        self,
        group: str,
        *,
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
        users: Iterable[str] | None = None,
    ) -> None:
        members = self.members.setdefault(group, set())
        if users is not None:
            members.clear()
            members.update(users)
        members.update(added)
        members.difference_update(removed)


class SlackAdapter:
    name = PREFIX

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
            process_before_response=False,  # ack first; Slack wants it within 3 seconds
        )
        self.command = slash_command(settings)
        self.groups = UserGroups(self.client)
        self.cards = CardRefs(engine.services.store, PREFIX)
        #: requests from events wait here for a worker (OPSBOT_WORKERS, OPSBOT_QUEUE_LIMIT)
        self.work = Work(PREFIX, settings.workers, settings.queue_limit)
        self.bot_user = ""
        self._socket: Any = None
        self._connecting: asyncio.Task[None] | None = None
        self._register()

    def owns(self, thread: str) -> bool:
        return thread.startswith(f"{PREFIX}:")

    # -- setup ---------------------------------------------------------------------------

    async def check(self) -> list[str]:
        """Log (and return) the bot token's missing scopes; load user groups when allowed."""
        missing: list[str] = []
        try:
            response = await self.client.auth_test()
            self.bot_user = str(response.get("user_id") or "")
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
        await self.groups.load()
        return missing

    async def actor(self, user: str) -> Actor:
        """``user`` as policies see them, with their user groups as Slack says now."""
        return Actor(
            id=f"{PREFIX}:{user}",
            display_name=f"<@{user}>",
            roles=tuple(f"slack-group:{g}" for g in await self.groups.of(user)),
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

    def routes(self) -> list[tuple[str, str, Handler]]:
        """``POST /slack/events`` for the Events API (none in Socket Mode)."""
        if self.settings.slack_app_token:
            return []
        return [("POST", "/slack/events", self.http_handler)]

    async def start(self) -> None:
        """Check the token's scopes (one log line naming those missing) and, in Socket Mode
        (``SLACK_APP_TOKEN``), connect: no public HTTP endpoint needed. Without it, requests
        come through ``opsbot serve``'s ``/slack/events``."""
        if self._socket is not None:
            return
        if self.client.session is None:  # one connection pool for every Web API call
            self.client.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.client.timeout)
            )
        await self.check()
        if not self.settings.slack_app_token:
            return
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        self._socket = AsyncSocketModeHandler(self.app, self.settings.slack_app_token)
        connecting = asyncio.create_task(self._socket.connect_async(), name="slack-socket-mode")
        self._connecting = connecting
        done, _ = await asyncio.wait({connecting}, timeout=SOCKET_WAIT)
        if not done:  # slack_sdk keeps trying; serve goes on meanwhile
            log.warning(
                "slack.socket_mode_not_connected",
                waited=SOCKET_WAIT,
                hint="check SLACK_APP_TOKEN (an app-level token with connections:write)",
            )

    async def quiesce(self) -> None:
        """Take no more events (shutdown): Socket Mode disconnects, and Slack sends the next
        ones to another replica's connection; the Web API client and the workers stay for the
        work in flight."""
        await self._disconnect()

    async def stop(self) -> None:
        await self._disconnect()
        await self.work.stop()
        session, self.client.session = self.client.session, None
        if session is not None:
            await session.close()

    async def _disconnect(self) -> None:
        socket, self._socket = self._socket, None
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()
        if socket is not None:
            await socket.close_async()

    # -- posting -------------------------------------------------------------------------

    async def _edit(self, where: str, blocks: list[Any], text: str) -> bool:
        channel, _, ts = where.partition(":")
        try:
            await self.client.chat_update(channel=channel, ts=ts, blocks=blocks, text=text)
        except SlackApiError as exc:
            log.warning("slack.update_failed", channel=channel, error=exc.response.get("error"))
            return False
        return True

    async def update(self, message: Message) -> bool:
        """Edit the message showing ``message``'s approval card (False: none is known, or
        Slack refused the edit)."""
        card = card_of(message)
        where = await self.cards.recall(card.approval_id) if card is not None else None
        if where is None:
            return False
        blocks, text, _ = render(message)
        return await self._edit(where, blocks, text)

    async def open_thread(self, channel: str, message: Message, title: str = "") -> tuple[str, str]:
        """Post ``message`` in ``channel`` (not in a thread) and make it the root of a thread of
        its own, e.g. an incident's first message: (the thread's key, the message's reference
        ``channel:ts`` for :meth:`edit_root`). Raises ``SlackApiError`` when Slack refuses it."""
        blocks, text, _ = render(message)
        response = await self.client.chat_postMessage(channel=channel, blocks=blocks, text=text)
        where, ts = str(response.get("channel") or channel), str(response["ts"])
        return thread_key(where, ts), f"{where}:{ts}"

    async def edit_root(self, root: str, message: Message) -> bool:
        """Replace the message at ``root`` (``channel:ts``) with ``message`` (False: Slack
        refused), e.g. an incident's first message once it is acknowledged or resolved."""
        blocks, text, _ = render(message)
        return await self._edit(root, blocks, text)

    async def post(self, message: Message) -> None:
        """Post one engine message into its thread (and upload its files). A message with an
        approval card whose message is known replaces that message (``chat.update``)."""
        channel, ts = parse_thread(message.thread)
        if card_of(message) is not None and await self.update(message):
            return
        blocks, text, uploads = render(message)
        try:
            try:
                response = await self.client.chat_postMessage(
                    channel=channel, thread_ts=ts, blocks=blocks, text=text
                )
            except SlackApiError as exc:
                if exc.response.get("error") not in TOO_BIG:
                    raise
                log.warning(
                    "slack.message_refused",
                    channel=channel,
                    error=exc.response.get("error"),
                    errors=exc.response.get("errors"),
                    effect=f"posted as text, the whole of it attached as {OUTPUT}",
                )
                blocks = [
                    section(text),
                    context(f"Slack refused this message as it was; all of it is in {OUTPUT}"),
                    footer(message),
                ]
                uploads = [u for u in uploads if u.filename != OUTPUT]
                uploads.append(Upload(OUTPUT, "the whole output", message.plain.encode()))
                response = await self.client.chat_postMessage(
                    channel=channel, thread_ts=ts, blocks=blocks, text=text
                )
            card = card_of(message)
            if card is not None:
                await self.cards.remember(card.approval_id, f"{channel}:{response.get('ts')}")
            for upload in uploads:
                await self.client.files_upload_v2(
                    channel=channel,
                    thread_ts=ts,
                    content=upload.data,
                    title=upload.title,
                    filename=upload.filename,
                )
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.error(
                "slack.post_failed",
                channel=channel,
                error=error,
                hint="invite the bot to the channel (/invite @opsbot)"
                if error in NOT_THERE
                else "",
            )

    # -- handlers ------------------------------------------------------------------------

    def _register(self) -> None:
        track = self._tracked
        self.app.event("app_mention")(track(self._on_mention))
        self.app.event("message")(track(self._on_direct_message))
        self.app.event("subteam_members_changed")(self._on_group_members)
        self.app.event("subteam_updated")(self._on_group_updated)
        self.app.command(self.command)(track(self._on_command))
        self.app.action(APPROVE)(track(self._on_approve))
        self.app.action(DENY)(track(self._on_deny))
        self.app.action(ACTION)(track(self._on_action))
        self.app.view(DENY_MODAL)(track(self._on_deny_reason))

    def _tracked(self, handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """``handler`` counted as work in flight from its first line (bolt runs it after the
        HTTP answer; a shutdown waits for it). Bolt reads its parameters through the wrapper."""

        @functools.wraps(handler)
        async def tracked(**kwargs: Any) -> None:
            async with self.engine.inflight():
                await handler(**kwargs)

        return tracked

    async def _on_group_members(self, event: dict[str, Any]) -> None:
        self.groups.changed(
            str(event.get("subteam_id") or ""),
            added=list(event.get("added_users") or []),
            removed=list(event.get("removed_users") or []),
        )

    async def _on_group_updated(self, event: dict[str, Any]) -> None:
        subteam = event.get("subteam") or {}
        if subteam.get("id") and "users" in subteam:
            self.groups.changed(str(subteam["id"]), users=list(subteam.get("users") or []))

    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        await self._start(body, event)

    async def _on_direct_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if (
            event.get("channel_type") == "im"
            and not event.get("bot_id")
            and not event.get("subtype")
        ):
            await self._start(body, event)

    def _text(self, raw: str) -> str:
        """What the person typed: the bot's mention stripped, the rest unescaped."""
        text = LEADING_MENTION.sub("", raw)
        if self.bot_user:
            text = re.sub(rf"<@{re.escape(self.bot_user)}(?:\|[^>]*)?>", "", text)
        return unescape(text).strip()

    async def _start(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        event_id = body.get("event_id") or f"{event.get('channel')}:{event.get('ts')}"
        if not event.get("user") or not event.get("channel") or not event.get("ts"):
            log.warning("slack.malformed_event", event_id=event_id)
            return
        thread = thread_key(event["channel"], event.get("thread_ts") or event["ts"])
        text = self._text(str(event.get("text", "")))

        async def handle() -> None:
            if not await first_time(self.engine.services.store, f"slack:event:{event_id}"):
                log.info("slack.duplicate_event", event_id=event_id)
                return
            await self.engine.handle(
                Request(
                    actor=await self.actor(event["user"]),
                    channel=event["channel"],
                    text=text,
                    thread=thread,
                    new_thread=not event.get("thread_ts"),
                ),
                self.post,
            )

        await self._queue(thread, handle, f"{PREFIX}:{event['user']}", event["channel"], text)

    async def _queue(self, thread: str, job: Job, actor: str, channel: str, text: str) -> None:
        """Run ``job`` through the worker pool, in order with ``thread``'s other requests; a
        full queue is told in the thread at once (and audited), and nothing runs."""
        await queued(
            self.work,
            thread,
            job,
            lambda waiting: tell_busy(
                self.engine, self.post, thread, actor, channel, text, waiting
            ),
        )

    async def _on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        await ack()  # within Slack's 3 seconds; the work continues after the HTTP answer
        user, channel = command.get("user_id", ""), command.get("channel_id", "")
        text = unescape(str(command.get("text", ""))).strip()
        try:
            parent = await self.client.chat_postMessage(
                channel=channel, text=f"<@{user}> asked: {escape(text)}"[:3000]
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            log.warning("slack.command_unanswerable", channel=channel, error=error)
            if error in NOT_THERE:
                answer = (
                    f"I am not a member of this channel, so I cannot answer `{self.command}` "
                    "here. Invite me with `/invite @opsbot`, or ask me in a direct message. "
                    "Nothing was run."
                )
            else:
                answer = f"Slack refused my answer here ({error}); nothing was run."
            await respond(response_type="ephemeral", text=answer)
            return
        thread = thread_key(channel, str(parent["ts"]))

        async def handle() -> None:
            await self.engine.handle(
                Request(
                    actor=await self.actor(user),
                    channel=channel,
                    text=text,
                    thread=thread,
                    new_thread=True,
                ),
                self.post,
            )

        await self._queue(thread, handle, f"{PREFIX}:{user}", channel, text)

    @staticmethod
    def _where(body: dict[str, Any]) -> tuple[str, str, str]:
        """(channel, message ts, thread ts) of the clicked message; a message that is not in
        a thread is the root of its own."""
        message = body.get("message") or {}
        container = body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id") or ""
        ts = message.get("ts") or container.get("message_ts") or ""
        return channel, ts, message.get("thread_ts") or container.get("thread_ts") or ts

    async def _on_approve(
        self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any
    ) -> None:
        await ack()
        channel, message_ts, thread_ts = self._where(body)
        await self._decide(
            body,
            str(action.get("value", "")),
            "approve",
            "",
            channel=channel,
            message_ts=message_ts,
            thread_ts=thread_ts,
            respond=respond,
        )

    async def _on_deny(
        self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any
    ) -> None:
        await ack()
        channel, message_ts, thread_ts = self._where(body)
        meta = {
            "approval_id": action.get("value", ""),
            "channel": channel,
            "message_ts": message_ts,
            "thread_ts": thread_ts,
        }
        try:
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
                            "label": {
                                "type": "plain_text",
                                "text": f"Why deny {meta['approval_id']}?",
                            },
                            "element": {
                                "type": "plain_text_input",
                                "action_id": "reason",
                                "multiline": True,
                                "max_length": 2000,
                            },
                        }
                    ],
                },
            )
        except SlackApiError as exc:  # e.g. expired_trigger_id: deny without a reason
            log.warning("slack.modal_failed", error=exc.response.get("error"))
            await self._decide(
                body,
                str(meta["approval_id"]),
                "deny",
                "",
                channel=channel,
                message_ts=message_ts,
                thread_ts=thread_ts,
                respond=respond,
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
            respond=None,
        )

    def _clicker_reply(self, user: str, channel: str, thread_ts: str, respond: Any) -> Reply:
        """Where a click's messages go: the thread, except what is for the clicker alone,
        which only they see (ephemeral, in the thread; through the interaction's
        ``response_url`` when Slack refuses that, e.g. the bot is not in the channel)."""

        async def reply(message: Message) -> None:
            if message.audience is not Audience.CLICKER:
                await self.post(message)
                return
            where, ts = channel, thread_ts
            if self.owns(message.thread):
                where, ts = parse_thread(message.thread)
            blocks, text, _ = render(message)
            if where:
                try:
                    await self.client.chat_postEphemeral(
                        channel=where, user=user, text=text, blocks=blocks, thread_ts=ts or None
                    )
                    return
                except SlackApiError as exc:
                    log.warning(
                        "slack.ephemeral_failed", channel=where, error=exc.response.get("error")
                    )
            if respond is None:
                log.error("slack.clicker_not_told", user=user, text=text[:200])
                return
            answered = await respond(
                text=text,
                blocks=blocks,
                response_type="ephemeral",
                replace_original=False,
                thread_ts=ts or None,
            )
            if getattr(answered, "status_code", 200) != 200:
                log.error("slack.clicker_not_told", user=user, status=answered.status_code)

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
        respond: Any,
    ) -> None:
        user = body.get("user", {}).get("id", "")
        if not user or not approval_id:
            log.warning("slack.malformed_interaction")
            return
        if channel and message_ts:  # the card is the clicked message
            await self.cards.remember(approval_id, f"{channel}:{message_ts}")
        await self.engine.decide(  # a failure is reported by the engine, through the reply
            approval_id,
            await self.actor(user),
            verdict,
            self._clicker_reply(user, channel, thread_ts, respond),
            reason=reason,
            channel=channel,
            thread=thread_key(channel, thread_ts) if channel and thread_ts else "",
        )

    async def _on_action(
        self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any
    ) -> None:
        """A suggested-action button: its invocation runs as the clicker's own request."""
        await ack()
        user = body.get("user", {}).get("id", "")
        action_id = str(action.get("value", ""))
        channel, _, thread_ts = self._where(body)
        if not user or not action_id:
            log.warning("slack.malformed_interaction")
            return

        async def click() -> None:
            await self.engine.click(
                action_id,
                await self.actor(user),
                self._clicker_reply(user, channel, thread_ts, respond),
                channel=channel,
            )

        thread = thread_key(channel, thread_ts) if channel and thread_ts else action_id
        await self._queue(thread, click, f"{PREFIX}:{user}", channel, f"(clicked {action_id})")
