"""A fake Discord: gateway (websocket) + REST, enough for the real discord.py client.

Gateway (https://discord.com/developers/docs/events/gateway): HELLO, IDENTIFY -> READY and
GUILD_CREATE (one guild, one text channel, roles), heartbeats ACKed, and dispatches pushed by
the test (``MESSAGE_CREATE``, ``INTERACTION_CREATE``) as uncompressed JSON text frames.
REST (API v10): ``users/@me``, channel messages (JSON or multipart with files) and their
edits, threads from messages, interaction callbacks (``with_response``), webhook follow-ups
and ``@original`` edits, and application-command sync. Every REST call is recorded in
``calls``, with the fake's answer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_ID, APP_ID, GUILD_ID, CHANNEL_ID = (
    "900000000000000001",
    "900000000000000002",
    "800000000000000001",
    "700000000000000001",
)
EPOCH = "2026-11-01T10:00:00.000000+00:00"


def user(user_id: str, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": user_id,
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
    }


def role(role_id: str, name: str) -> dict[str, Any]:
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


@dataclass
class Call:
    method: str
    path: str
    body: Any
    files: list[tuple[str, bytes]] = field(default_factory=list)
    answer: Any = None


@dataclass
class FakeDiscord:
    roles: list[dict[str, Any]] = field(
        default_factory=lambda: [
            role(GUILD_ID, "@everyone"),
            role("600000000000000001", "sre"),
            role("600000000000000002", "oncall"),
        ]
    )
    calls: list[Call] = field(default_factory=list)
    originals: dict[str, dict[str, Any]] = field(default_factory=dict)
    api_url: str = ""
    gateway_url: str = ""
    identified: asyncio.Event = field(default_factory=asyncio.Event)
    _ws: web.WebSocketResponse | None = None
    _seq: Any = field(default_factory=lambda: itertools.count(1))
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    def snowflake(self) -> str:
        return str(1_000_000_000_000_000_000 + next(self._ids))

    def of(self, method: str, fragment: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and fragment in c.path]

    async def wait_for(
        self, method: str, fragment: str, count: int = 1, within: float = 10.0
    ) -> list[Call]:
        deadline = time.monotonic() + within
        while len(self.of(method, fragment)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{method} {fragment}: {len(self.of(method, fragment))} of {count}; "
                    f"saw {[(c.method, c.path) for c in self.calls]}"
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
        if self._ws is not None:
            await self._ws.close()
        if self._runner:
            await self._runner.cleanup()

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 45000}, "s": None, "t": None})
        async for frame in ws:
            data = json.loads(frame.data)
            if data["op"] == 1:
                await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif data["op"] == 2:
                await self.dispatch(
                    "READY",
                    {
                        "v": 10,
                        "user": user(BOT_ID, "opsbot", bot=True),
                        "guilds": [{"id": GUILD_ID, "unavailable": True}],
                        "session_id": "session-1",
                        "resume_gateway_url": self.gateway_url,
                        "application": {"id": APP_ID, "flags": 0},
                        "private_channels": [],
                        "relationships": [],
                    },
                )
                await self.dispatch("GUILD_CREATE", self.guild())
                self.identified.set()
        return ws

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
            "members": [],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "channels": [text_channel(CHANNEL_ID)],
        }

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self._ws is not None, "the client is not connected"
        await self._ws.send_json({"op": 0, "t": event, "s": next(self._seq), "d": data})

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

    # -- REST ----------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        body: Any = None
        files: list[tuple[str, bytes]] = []
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                else:
                    files.append((part.filename or "", await part.read()))  # type: ignore[union-attr]
        elif request.can_read_body:
            body = await request.json()
        call = Call(request.method, path, body, files)
        self.calls.append(call)
        call.answer = self._answer(request.method, path, body or {}, files)
        # discord.py parses JSON only when the content type is exactly application/json
        return web.Response(
            body=json.dumps(call.answer).encode(), headers={"Content-Type": "application/json"}
        )

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
            original = self.originals.setdefault(token, self.message(bot, ""))
            if method == "PATCH":
                original.update(
                    {k: v for k, v in body.items() if k in ("content", "embeds", "components")}
                )
            return original
        if method == "POST" and path.startswith("/webhooks/"):
            return self.message(bot, body.get("content", ""), flags=body.get("flags", 0))
        return {}
