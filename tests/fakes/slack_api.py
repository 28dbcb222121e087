"""A fake Slack Web API server that records every call (``WebClient(base_url=...)``).

It answers ``POST /api/<method>`` (JSON or form bodies) in the shapes of Slack's Web API
reference: ``auth.test`` (with the ``x-oauth-scopes`` header), ``chat.postMessage``,
``chat.update``, ``chat.postEphemeral``, ``views.open``, ``usergroups.list``, and the
``files_upload_v2`` flow (``files.getUploadURLExternal`` -> upload URL ->
``files.completeUploadExternal``). Every call is recorded with the fake's answer. ``fail``
makes a method answer an error or a 429.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SCOPES = "app_mentions:read,chat:write,commands,files:write,im:history"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeSlack:
    scopes: str = SCOPES
    groups: list[dict[str, Any]] | None = None  # None: usergroups.list answers missing_scope
    calls: list[Call] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    fail: dict[str, list[int | str]] = field(default_factory=dict)
    base_url: str = ""
    _runner: web.AppRunner | None = None
    _ts: Any = field(default_factory=lambda: itertools.count(1))

    def of(self, method: str) -> list[dict[str, Any]]:
        return [c.params for c in self.calls if c.method == method]

    async def wait_for(
        self, method: str, count: int = 1, within: float = 10.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.of(method)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{method} called {len(self.of(method))} times, wanted {count}: "
                    f"{[c.method for c in self.calls]}"
                )
            await asyncio.sleep(0.02)
        return self.of(method)

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # e.g. usergroups.list is a GET
        app.router.add_post("/upload/{file_id}", self._upload)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root}/api/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _upload(self, request: web.Request) -> web.Response:
        self.uploads[request.match_info["file_id"]] = await request.read()
        return web.Response(text="OK")

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.method == "GET":
            params: dict[str, Any] = {}
        elif request.content_type == "application/json":
            params = await request.json()
        else:
            params = {k: v for k, v in (await request.post()).items()}
        params = {
            **request.query,
            **params,
        }  # some SDK methods send their arguments as a query string
        for key in ("blocks", "view", "files"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        call = Call(method, params)
        self.calls.append(call)
        planned = self.fail.get(method)
        if planned:
            failure = planned.pop(0)
            if failure == 429:
                return web.json_response(
                    {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "0"}
                )
            return web.json_response({"ok": False, "error": str(failure)})
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        answers: dict[str, dict[str, Any]] = {
            "auth.test": {
                "ok": True,
                "url": "https://opsbot-test.slack.com/",
                "team": "test",
                "user": "opsbot",
                "team_id": "T1",
                "user_id": "UBOT",
                "bot_id": "BBOT",
            },
            "chat.postMessage": {
                "ok": True,
                "channel": params.get("channel"),
                "ts": ts,
                "message": {"text": params.get("text", ""), "ts": ts},
            },
            "chat.update": {"ok": True, "channel": params.get("channel"), "ts": params.get("ts")},
            "chat.postEphemeral": {"ok": True, "message_ts": ts},
            "views.open": {"ok": True, "view": {"id": "V1", **(params.get("view") or {})}},
            "files.getUploadURLExternal": {
                "ok": True,
                "upload_url": f"{self.root}/upload/F{ts}",
                "file_id": f"F{ts}",
            },
            "files.completeUploadExternal": {
                "ok": True,
                "files": [{"id": f["id"]} for f in params.get("files", [])],
            },
            "usergroups.list": (
                {"ok": True, "usergroups": self.groups}
                if self.groups is not None
                else {"ok": False, "error": "missing_scope", "needed": "usergroups:read"}
            ),
        }
        answer = answers.get(method, {"ok": True})
        call.answer = answer
        return web.json_response(answer, headers={"x-oauth-scopes": self.scopes})
