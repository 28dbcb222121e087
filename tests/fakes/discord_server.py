"""A fake Discord (gateway + REST API v10) for the real discord.py client, that answers as
Discord does, refusals included.

Gateway (https://discord.com/developers/docs/events/gateway): HELLO; IDENTIFY -> READY and
GUILD_CREATE (one guild with a text channel, roles, and the bot's own managed role); heartbeats
ACKed; the test's dispatches (``MESSAGE_CREATE``, ``INTERACTION_CREATE``...) go to every
connected session (``sessions``: two replicas on one token both receive each interaction).
REST: ``users/@me``, channel messages (JSON or multipart with files) and their edits, threads
from messages, interaction callbacks, webhook follow-ups and ``@original`` edits,
application-command sync. Every REST call is recorded in ``calls`` with the fake's answer.

What it refuses, and the documentation it follows:

- Privileged intents (https://discord.com/developers/docs/events/gateway#privileged-intents):
  an IDENTIFY asking for GUILD_MEMBERS, GUILD_PRESENCES or MESSAGE_CONTENT that the app was
  not granted (``granted_intents``) is closed with 4014 "Disallowed intent(s)"
  (https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway-gateway-close-event-codes).
  Without MESSAGE_CONTENT a session gets ``content``, ``embeds``, ``attachments`` and
  ``components`` of a message empty unless the message mentions the app (its user, or its
  managed role, which Discord's mention picker offers for it), is a DM, or is the app's own
  (https://discord.com/developers/docs/events/gateway#message-content-intent).
- Message limits (https://discord.com/developers/docs/resources/message#create-message,
  https://discord.com/developers/docs/resources/message#embed-object-embed-limits): content
  at most 2,000 characters; at most 10 embeds; an embed's title 256, description 4,096, 25
  fields, a field's name 256 and value 1,024 (neither empty), footer text 2,048, author name
  256; and all of these over all of a message's embeds together at most 6,000; at most 10
  files; at most 5 action rows of 5 buttons, ``custom_id`` at most 100 characters and unique,
  label at most 80 (https://discord.com/developers/docs/components/reference). Refused with
  HTTP 400 and the API's JSON error: code 50035 "Invalid Form Body" with the field's
  ``errors`` (``BASE_TYPE_MAX_LENGTH``, ``MAX_EMBED_SIZE_EXCEEDED``...), or 50006 "Cannot
  send an empty message" (https://discord.com/developers/docs/topics/opcodes-and-status-codes#json).
- Interactions (https://discord.com/developers/docs/interactions/receiving-and-responding):
  one initial response, within 3 seconds of the interaction: a second is 400 code 40060
  "Interaction has already been acknowledged", a late or unknown one 404 code 10062 "Unknown
  interaction"; only the callback types the interaction allows (a modal, type 9, not in
  answer to a modal); follow-ups and ``@original`` edits before the initial response: 404
  code 10015 "Unknown Webhook". A modal: title 1-45 characters, 1-5 components, text-input
  labels at most 45 characters, ``max_length`` at most 4,000
  (https://discord.com/developers/docs/components/reference#text-input).
- Rate limits (https://discord.com/developers/docs/topics/rate-limits): a path planned to be
  limited (``limit(fragment, times)``) answers 429 with ``retry_after`` (seconds) in the JSON
  body and ``Retry-After``; a retry sooner than that gets 429 again (``early_retries``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_ID, APP_ID, GUILD_ID, CHANNEL_ID = (
    "900000000000000001",
    "900000000000000002",
    "800000000000000001",
    "700000000000000001",
)
BOT_ROLE_ID = "600000000000000099"  # the bot's own (managed) role
EPOCH = "2026-11-01T10:00:00.000000+00:00"

GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT = 1 << 1, 1 << 8, 1 << 15
PRIVILEGED = {
    GUILD_MEMBERS: "GUILD_MEMBERS",
    GUILD_PRESENCES: "GUILD_PRESENCES",
    MESSAGE_CONTENT: "MESSAGE_CONTENT",
}
MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
MAX_FOOTER = 2048
MAX_AUTHOR = 256
MAX_EMBED_TOTAL = 6000
MAX_FILES = 10
MAX_ROWS = 5
MAX_ROW_BUTTONS = 5
MAX_CUSTOM_ID = 100
MAX_LABEL = 80
MAX_MODAL_TITLE = 45
MAX_INPUT_LABEL = 45
MAX_INPUT_LENGTH = 4000
RESPOND_WITHIN = 3.0
# callback types an interaction type allows: 2 command, 3 component, 5 modal submit
CALLBACKS = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 5: {4, 5, 6, 7}}


def user(user_id: str, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": user_id,
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
    }


def role(role_id: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": role_id,
        "name": name,
        "permissions": "0",
        "position": 1,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": True,
        "flags": 0,
        **extra,
    }


def text_channel(channel_id: str) -> dict[str, Any]:
    return {
        "id": channel_id,
        "type": 0,
        "guild_id": GUILD_ID,
        "name": "ops",
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "rate_limit_per_user": 0,
    }


class Refused(Exception):
    """An answer Discord gives instead of doing what was asked."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status, self.body = status, body


def invalid(errors: dict[str, Any]) -> Refused:
    return Refused(400, {"code": 50035, "message": "Invalid Form Body", "errors": errors})


def too_long(limit: int) -> dict[str, Any]:
    return {
        "_errors": [
            {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {limit} or fewer in length."}
        ]
    }


def embed_size(embed: dict[str, Any]) -> int:
    """The characters of an embed that count towards Discord's 6,000."""
    return (
        len(embed.get("title") or "")
        + len(embed.get("description") or "")
        + sum(
            len(f.get("name") or "") + len(f.get("value") or "") for f in embed.get("fields") or []
        )
        + len((embed.get("footer") or {}).get("text") or "")
        + len((embed.get("author") or {}).get("name") or "")
    )


def message_errors(body: dict[str, Any], files: int = 0) -> Refused | None:
    """How Discord refuses this message body (None: it accepts it)."""
    errors: dict[str, Any] = {}
    content = body.get("content") or ""
    if len(content) > MAX_CONTENT:
        errors["content"] = too_long(MAX_CONTENT)
    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        errors["embeds"] = too_long(MAX_EMBEDS)
    for i, embed in enumerate(embeds):
        problems: dict[str, Any] = {}
        for key, limit in (("title", MAX_TITLE), ("description", MAX_DESCRIPTION)):
            if len(embed.get(key) or "") > limit:
                problems[key] = too_long(limit)
        fields = embed.get("fields") or []
        if len(fields) > MAX_FIELDS:
            problems["fields"] = too_long(MAX_FIELDS)
        for j, item in enumerate(fields):
            for key, limit in (("name", MAX_FIELD_NAME), ("value", MAX_FIELD_VALUE)):
                value = item.get(key) or ""
                if not value:
                    problems.setdefault("fields", {})[str(j)] = {
                        key: {
                            "_errors": [
                                {"code": "BASE_TYPE_REQUIRED", "message": "This field is required"}
                            ]
                        }
                    }
                elif len(value) > limit:
                    problems.setdefault("fields", {})[str(j)] = {key: too_long(limit)}
        if len((embed.get("footer") or {}).get("text") or "") > MAX_FOOTER:
            problems["footer"] = {"text": too_long(MAX_FOOTER)}
        if len((embed.get("author") or {}).get("name") or "") > MAX_AUTHOR:
            problems["author"] = {"name": too_long(MAX_AUTHOR)}
        if problems:
            errors.setdefault("embeds", {})[str(i)] = problems
    if sum(embed_size(e) for e in embeds) > MAX_EMBED_TOTAL:
        errors.setdefault("embeds", {})["_errors"] = [
            {
                "code": "MAX_EMBED_SIZE_EXCEEDED",
                "message": f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}",
            }
        ]
    rows = body.get("components") or []
    if len(rows) > MAX_ROWS:
        errors["components"] = too_long(MAX_ROWS)
    seen: set[str] = set()
    for i, row in enumerate(rows):
        buttons = row.get("components") or []
        if len(buttons) > MAX_ROW_BUTTONS:
            errors.setdefault("components", {})[str(i)] = {"components": too_long(MAX_ROW_BUTTONS)}
        for j, button in enumerate(buttons):
            custom_id = str(button.get("custom_id") or "")
            where = errors.setdefault("components", {}).setdefault(str(i), {})
            if len(custom_id) > MAX_CUSTOM_ID:
                where.setdefault("components", {})[str(j)] = {"custom_id": too_long(MAX_CUSTOM_ID)}
            if len(str(button.get("label") or "")) > MAX_LABEL:
                where.setdefault("components", {})[str(j)] = {"label": too_long(MAX_LABEL)}
            if custom_id and custom_id in seen:
                where.setdefault("components", {})[str(j)] = {
                    "custom_id": {
                        "_errors": [
                            {
                                "code": "COMPONENT_CUSTOM_ID_DUPLICATED",
                                "message": "Component custom id cannot be duplicated",
                            }
                        ]
                    }
                }
            seen.add(custom_id)
        if not where_has(errors, "components", str(i)):
            errors.get("components", {}).pop(str(i), None)
    if isinstance(errors.get("components"), dict) and not errors["components"]:
        del errors["components"]
    if files > MAX_FILES:
        errors["files"] = too_long(MAX_FILES)
    if errors:
        return invalid(errors)
    attachments = body.get("attachments")
    if not (content or embeds or rows or files or attachments or body.get("poll")):
        return Refused(400, {"code": 50006, "message": "Cannot send an empty message"})
    return None


def where_has(errors: dict[str, Any], *path: str) -> bool:
    node: Any = errors
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return bool(node)


def modal_errors(data: dict[str, Any]) -> Refused | None:
    errors: dict[str, Any] = {}
    title = str(data.get("title") or "")
    if not 1 <= len(title) <= MAX_MODAL_TITLE:
        errors["title"] = too_long(MAX_MODAL_TITLE)
    if len(str(data.get("custom_id") or "")) > MAX_CUSTOM_ID or not data.get("custom_id"):
        errors["custom_id"] = too_long(MAX_CUSTOM_ID)
    rows = data.get("components") or []
    if not 1 <= len(rows) <= 5:
        errors["components"] = too_long(5)
    for i, row in enumerate(rows):
        inputs = row.get("components") or ([row["component"]] if "component" in row else [])
        label = row.get("label")
        for item in inputs:
            if item.get("type") != 4:
                continue
            shown = label if label is not None else item.get("label")
            if not shown or len(str(shown)) > MAX_INPUT_LABEL:
                errors.setdefault("components", {})[str(i)] = {"label": too_long(MAX_INPUT_LABEL)}
            if int(item.get("max_length") or 0) > MAX_INPUT_LENGTH:
                errors.setdefault("components", {})[str(i)] = {
                    "max_length": too_long(MAX_INPUT_LENGTH)
                }
    return invalid({"data": errors}) if errors else None


@dataclass
class Call:
    method: str
    path: str
    body: Any
    files: list[tuple[str, bytes]] = field(default_factory=list)
    answer: Any = None
    status: int = 200


@dataclass
class Session:
    ws: web.WebSocketResponse
    intents: int = 0
    ready: bool = False


@dataclass
class Interaction:
    payload: dict[str, Any]
    sent: float
    acked: int | None = None  # the callback type of the initial response
    modal: dict[str, Any] | None = None


@dataclass
class FakeDiscord:
    roles: list[dict[str, Any]] = field(
        default_factory=lambda: [
            role(GUILD_ID, "@everyone"),
            role("600000000000000001", "sre"),
            role("600000000000000002", "oncall"),
            role(BOT_ROLE_ID, "opsbot", managed=True, tags={"bot_id": BOT_ID}),
        ]
    )
    #: privileged intents the app was granted in the Developer Portal (none by default)
    granted_intents: int = 0
    calls: list[Call] = field(default_factory=list)
    originals: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every IDENTIFY payload received; and the close codes the gateway sent
    identifies: list[dict[str, Any]] = field(default_factory=list)
    closed_with: list[int] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    interactions: dict[str, Interaction] = field(default_factory=dict)
    early_retries: int = 0
    api_url: str = ""
    gateway_url: str = ""
    identified: asyncio.Event = field(default_factory=asyncio.Event)
    _limits: dict[str, int] = field(default_factory=dict)
    _limited_until: dict[str, float] = field(default_factory=dict)
    retry_after: float = 0.3
    _seq: Any = field(default_factory=lambda: itertools.count(1))
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    def snowflake(self) -> str:
        return str(1_000_000_000_000_000_000 + next(self._ids))

    def of(self, method: str, fragment: str) -> list[Call]:
        """Calls of ``method`` on a path containing ``fragment`` that Discord accepted."""
        return [
            c for c in self.calls if c.method == method and fragment in c.path and c.status < 300
        ]

    def refused(self) -> list[Call]:
        return [c for c in self.calls if c.status >= 300]

    def limit(self, fragment: str, times: int = 1) -> None:
        """Answer the next ``times`` calls on a path containing ``fragment`` with a 429."""
        self._limits[fragment] = times

    async def wait_for(
        self, method: str, fragment: str, count: int = 1, within: float = 10.0
    ) -> list[Call]:
        deadline = time.monotonic() + within
        while len(self.of(method, fragment)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{method} {fragment}: {len(self.of(method, fragment))} of {count}; "
                    f"saw {[(c.method, c.path, c.status) for c in self.calls]}"
                )
            await asyncio.sleep(0.02)
        return self.of(method, fragment)

    # -- server --------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.api_url = f"http://127.0.0.1:{port}/api/v10"
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in list(self.sessions):
            await session.ws.close()
        if self._runner:
            await self._runner.cleanup()

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = Session(ws)
        self.sessions.append(session)
        try:
            await ws.send_json({"op": 10, "d": {"heartbeat_interval": 45000}, "s": None, "t": None})
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                data = json.loads(frame.data)
                if data["op"] == 1:
                    await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
                elif data["op"] == 2:
                    self.identifies.append(data["d"])
                    session.intents = int(data["d"].get("intents") or 0)
                    refused = session.intents & ~self.granted_intents
                    if any(bit & refused for bit in PRIVILEGED):
                        self.closed_with.append(4014)
                        await ws.close(code=4014, message=b"Disallowed intent(s).")
                        break
                    await self._ready(session)
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
        return ws

    async def _ready(self, session: Session) -> None:
        await self._send(
            session,
            "READY",
            {
                "v": 10,
                "user": user(BOT_ID, "opsbot", bot=True),
                "guilds": [{"id": GUILD_ID, "unavailable": True}],
                "session_id": f"session-{len(self.identifies)}",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": APP_ID, "flags": 0},
                "private_channels": [],
                "relationships": [],
            },
        )
        await self._send(session, "GUILD_CREATE", self.guild())
        session.ready = True
        self.identified.set()

    async def _send(self, session: Session, event: str, data: dict[str, Any]) -> None:
        await session.ws.send_json({"op": 0, "t": event, "s": next(self._seq), "d": data})

    def guild(self) -> dict[str, Any]:
        return {
            "id": GUILD_ID,
            "name": "shop-ops",
            "icon": None,
            "owner_id": "1",
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": self.roles,
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_flags": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "member_count": 4,
            "large": False,
            "unavailable": False,
            "members": [
                {
                    "user": user(BOT_ID, "opsbot", bot=True),
                    "roles": [BOT_ROLE_ID],
                    "joined_at": EPOCH,
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                }
            ],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "channels": [text_channel(CHANNEL_ID)],
        }

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Deliver ``event`` to every connected session (what each may see of it)."""
        ready = [s for s in self.sessions if s.ready]
        assert ready, "no client is connected"
        if event == "INTERACTION_CREATE":
            self.interactions[str(data["id"])] = Interaction(data, time.monotonic())
        for session in ready:
            await self._send(session, event, self._visible(session, event, data))

    def _visible(self, session: Session, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """A message as a session without the MESSAGE_CONTENT intent gets it."""
        if event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE") or session.intents & MESSAGE_CONTENT:
            return data
        mentioned = any(str(u.get("id")) == BOT_ID for u in data.get("mentions") or [])
        role_mentioned = BOT_ROLE_ID in (data.get("mention_roles") or [])
        own = str((data.get("author") or {}).get("id")) == BOT_ID
        direct = "guild_id" not in data
        if mentioned or role_mentioned or own or direct:
            return data
        return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

    # -- building events -----------------------------------------------------------------

    def member(self, who: dict[str, Any], roles: list[str]) -> dict[str, Any]:
        return {
            "user": who,
            "roles": roles,
            "joined_at": EPOCH,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": "2147483647",
        }

    def message(
        self,
        author: dict[str, Any],
        content: str,
        *,
        channel_id: str = CHANNEL_ID,
        mentions: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        return {
            "id": self.snowflake(),
            "channel_id": channel_id,
            "guild_id": GUILD_ID,
            "author": author,
            "content": content,
            "timestamp": EPOCH,
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions or [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "components": [],
            "flags": 0,
            **extra,
        }

    async def mention(
        self, who: dict[str, Any], text: str, roles: list[str] | None = None
    ) -> dict[str, Any]:
        message = self.message(
            who,
            f"<@{BOT_ID}> {text}",
            mentions=[user(BOT_ID, "opsbot", bot=True)],
            member={k: v for k, v in self.member(who, roles or []).items() if k != "user"},
        )
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    def interaction(
        self,
        kind: int,
        who: dict[str, Any],
        roles: list[str],
        data: dict[str, Any],
        message: dict[str, Any] | None = None,
        channel_id: str = CHANNEL_ID,
    ) -> dict[str, Any]:
        payload = {
            "id": self.snowflake(),
            "application_id": APP_ID,
            "type": kind,
            "data": data,
            "guild_id": GUILD_ID,
            "channel_id": channel_id,
            "member": self.member(who, roles),
            "token": f"token-{self.snowflake()}",
            "version": 1,
            "locale": "en-US",
            "guild_locale": "en-US",
            "app_permissions": "2147483647",
            "entitlements": [],
            "attachment_size_limit": 10_485_760,
            "authorizing_integration_owners": {"0": GUILD_ID},
            "context": 0,
            "channel": text_channel(channel_id),
        }
        if message is not None:
            payload["message"] = message
        return payload

    async def click(
        self,
        who: dict[str, Any],
        custom_id: str,
        message: dict[str, Any],
        roles: list[str] | None = None,
    ) -> dict[str, Any]:
        payload = self.interaction(
            3,
            who,
            roles or [],
            {"custom_id": custom_id, "component_type": 2},
            message,
            channel_id=message["channel_id"],
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def slash(
        self, who: dict[str, Any], text: str, roles: list[str] | None = None
    ) -> dict[str, Any]:
        payload = self.interaction(
            2,
            who,
            roles or [],
            {
                "id": "500000000000000001",
                "name": "ops",
                "type": 1,
                "options": [{"name": "request", "type": 3, "value": text}],
            },
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def submit_modal(
        self,
        who: dict[str, Any],
        opened_by: dict[str, Any],
        values: dict[str, str],
        roles: list[str] | None = None,
    ) -> dict[str, Any]:
        """Fill in and submit the modal that the answer to ``opened_by`` (an interaction)
        opened: a MODAL_SUBMIT interaction carrying ``values`` by input ``custom_id``."""
        modal = self.interactions[str(opened_by["id"])].modal
        assert modal is not None, "no modal was opened in answer to that interaction"

        def filled(component: dict[str, Any]) -> dict[str, Any]:
            if component.get("type") == 4:
                return {
                    "type": 4,
                    "custom_id": component["custom_id"],
                    "value": values.get(component["custom_id"], ""),
                }
            if "component" in component:
                return {**component, "component": filled(component["component"])}
            return {**component, "components": [filled(c) for c in component.get("components", [])]}

        payload = self.interaction(
            5,
            who,
            roles or [],
            {
                "custom_id": modal["custom_id"],
                "components": [filled(c) for c in modal["components"]],
            },
            opened_by.get("message"),
            channel_id=opened_by["channel_id"],
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    # -- REST ----------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        body: Any = None
        files: list[tuple[str, bytes]] = []
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    body = json.loads(await part.text())  # type: ignore[union-attr]
                else:
                    files.append((part.filename or "", await part.read()))  # type: ignore[union-attr]
        elif request.can_read_body:
            body = await request.json()
        call = Call(request.method, path, body, files)
        self.calls.append(call)
        headers = {"Content-Type": "application/json"}
        limited = self._rate_limited(path)
        if limited is not None:
            call.status, call.answer = 429, limited
            headers.update(
                {
                    "Retry-After": str(max(1, round(self.retry_after))),
                    "X-RateLimit-Scope": "user",
                    "Via": "1.1 google",
                }
            )
        else:
            try:
                call.answer = self._answer(request.method, path, body or {}, files)
            except Refused as refused:
                call.status, call.answer = refused.status, refused.body
        # discord.py parses JSON only when the content type is exactly application/json
        return web.Response(
            body=json.dumps(call.answer).encode(), status=call.status, headers=headers
        )

    def _rate_limited(self, path: str) -> dict[str, Any] | None:
        now = time.monotonic()
        for fragment, until in self._limited_until.items():
            if fragment in path and now < until:
                self.early_retries += 1
                return self._429(fragment)
        for fragment, times in self._limits.items():
            if fragment in path and times > 0:
                self._limits[fragment] = times - 1
                return self._429(fragment)
        return None

    def _429(self, fragment: str) -> dict[str, Any]:
        self._limited_until[fragment] = time.monotonic() + self.retry_after
        return {
            "message": "You are being rate limited.",
            "retry_after": self.retry_after,
            "global": False,
        }

    def _callback(self, interaction_id: str, body: dict[str, Any]) -> Interaction:
        """Check an interaction's initial response as Discord does; the interaction."""
        known = self.interactions.get(interaction_id)
        if known is None or time.monotonic() - known.sent > RESPOND_WITHIN:
            raise Refused(404, {"code": 10062, "message": "Unknown interaction"})
        if known.acked is not None:
            raise Refused(
                400, {"code": 40060, "message": "Interaction has already been acknowledged."}
            )
        kind = int(body.get("type") or 0)
        if kind not in CALLBACKS.get(int(known.payload["type"]), set()):
            raise invalid(
                {
                    "type": {
                        "_errors": [
                            {
                                "code": "BASE_TYPE_CHOICES",
                                "message": f"Value must be one of {sorted(CALLBACKS.get(int(known.payload['type']), set()))}.",
                            }
                        ]
                    }
                }
            )
        if kind in (4, 7):
            refused = message_errors(body.get("data") or {})
            if refused is not None:
                raise refused
        if kind == 9:
            refused = modal_errors(body.get("data") or {})
            if refused is not None:
                raise refused
            known.modal = body["data"]
        known.acked = kind
        return known

    def _acknowledged(self, token: str) -> Interaction:
        for known in self.interactions.values():
            if known.payload.get("token") == token and known.acked is not None:
                return known
        raise Refused(404, {"code": 10015, "message": "Unknown Webhook"})

    def _answer(
        self, method: str, path: str, body: dict[str, Any], files: list[tuple[str, bytes]]
    ) -> Any:
        bot = user(BOT_ID, "opsbot", bot=True)
        if path == "/users/@me":
            return bot
        if path == "/oauth2/applications/@me":
            return {
                "id": APP_ID,
                "name": "opsbot",
                "icon": None,
                "description": "",
                "summary": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "owner": user("1", "owner"),
                "team": None,
                "rpc_origins": [],
            }
        if method == "PUT" and path.endswith("/commands"):
            return (
                [
                    {
                        **c,
                        "id": "500000000000000001",
                        "application_id": APP_ID,
                        "version": "1",
                        "type": 1,
                    }
                    for c in body
                ]
                if isinstance(body, list)
                else []
            )
        if method == "POST" and path.endswith("/threads"):
            channel_id = path.split("/")[2]
            return {
                "id": self.snowflake(),
                "type": 11,
                "guild_id": GUILD_ID,
                "parent_id": channel_id,
                "name": body.get("name", "thread"),
                "owner_id": BOT_ID,
                "message_count": 0,
                "member_count": 1,
                "rate_limit_per_user": 0,
                "flags": 0,
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": EPOCH,
                    "locked": False,
                },
            }
        if method == "POST" and path.startswith("/channels/") and path.endswith("/messages"):
            refused = message_errors(body, len(files))
            if refused is not None:
                raise refused
            return self.message(
                bot,
                body.get("content") or "",
                channel_id=path.split("/")[2],
                embeds=body.get("embeds", []),
                components=body.get("components", []),
                attachments=[
                    {
                        "id": self.snowflake(),
                        "filename": name,
                        "size": len(data),
                        "url": f"https://cdn.test/{name}",
                        "proxy_url": f"https://cdn.test/{name}",
                    }
                    for name, data in files
                ],
            )
        if method == "PATCH" and path.startswith("/channels/") and "/messages/" in path:
            refused = message_errors(body, len(files)) if body.get("embeds") is not None else None
            if refused is not None:
                raise refused
            _, _, channel_id, _, message_id = path.split("/")
            edited = self.message(
                bot,
                body.get("content") or "",
                channel_id=channel_id,
                embeds=body.get("embeds", []),
                components=body.get("components", []),
            )
            return {**edited, "id": message_id, "edited_timestamp": EPOCH}
        if method == "POST" and path.endswith("/callback"):
            interaction_id, token = path.split("/")[2:4]
            self._callback(interaction_id, body)
            kind = body.get("type")
            answer: dict[str, Any] = {"interaction": {"id": interaction_id, "type": 2}}
            if kind == 4:  # a message: it becomes the interaction's @original
                original = self.message(
                    bot, body["data"].get("content", ""), embeds=body["data"].get("embeds", [])
                )
                self.originals[token] = original
                answer["resource"] = {"type": 4, "message": original}
            return answer
        if path.startswith("/webhooks/") and path.endswith("/messages/@original"):
            token = path.split("/")[3]
            self._acknowledged(token)
            if method == "PATCH":
                refused = message_errors(body, len(files))
                if refused is not None:
                    raise refused
            original = self.originals.setdefault(token, self.message(bot, ""))
            if method == "PATCH":
                original.update(
                    {k: v for k, v in body.items() if k in ("content", "embeds", "components")}
                )
            return original
        if method == "POST" and path.startswith("/webhooks/"):
            self._acknowledged(path.split("/")[3])
            refused = message_errors(body, len(files))
            if refused is not None:
                raise refused
            return self.message(bot, body.get("content", ""), flags=body.get("flags", 0))
        return {}
