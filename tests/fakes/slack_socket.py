"""A fake of Slack's Socket Mode endpoint, for the real bolt/slack_sdk Socket Mode client.

As https://docs.slack.dev/apis/events-api/using-socket-mode describes it: the app calls
``apps.connections.open`` with its app-level token (the fake Web API, tests/fakes/slack_api.py,
answers this endpoint's URL), opens a WebSocket there and is greeted with a ``hello``; each
event, interaction and slash command then arrives as an *envelope*
(``{"envelope_id", "type": "events_api" | "interactive" | "slash_commands", "payload",
"accepts_response_payload"}``) that the app must acknowledge by sending back
``{"envelope_id": ...}`` (optionally with a ``payload``) within 3 seconds; an envelope that is
not acknowledged in time is counted in ``late`` (Slack would retry it, and, for a slash
command, tell the person that the app did not respond).

The test sends envelopes (``event``, ``interactive``, ``slash_command``) and reads the
acknowledgements (``acks``, ``wait_ack``, ``ack_delay``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.slack_api import FakeSlack

ACK_WITHIN = 3.0


@dataclass
class FakeSlackSocket:
    slack: FakeSlack
    #: envelope id -> the acknowledgement the app sent
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: envelope ids acknowledged after Slack's 3 seconds (or never, once ``late_ids`` ran)
    late: list[str] = field(default_factory=list)
    connections: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _sent: dict[str, float] = field(default_factory=dict)
    _acked: dict[str, float] = field(default_factory=dict)
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeSlackSocket:
        app = web.Application()
        app.router.add_get("/link", self._link)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.slack.socket_url = f"ws://127.0.0.1:{port}/link?ticket=fake-ticket&app_id=A1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner:
            await self._runner.cleanup()
        self.slack.socket_url = None

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        if request.query.get("ticket") != "fake-ticket":
            raise web.HTTPUnauthorized(text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        self.connections += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {"host": "fake-socket", "approximate_connection_time": 18060},
                "connection_info": {"app_id": "A1"},
            }
        )
        self.connected.set()
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                data = json.loads(frame.data)
                envelope = str(data.get("envelope_id") or "")
                if envelope in self._sent and envelope not in self.acks:
                    self.acks[envelope] = data
                    self._acked[envelope] = time.monotonic()
                    if self._acked[envelope] - self._sent[envelope] > ACK_WITHIN:
                        self.late.append(envelope)
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self.connected.clear()
        return ws

    async def send(
        self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool = False
    ) -> str:
        """Deliver one envelope to the connected app; its id."""
        await asyncio.wait_for(self.connected.wait(), 10)
        envelope = f"env-{next(self._ids)}"
        self._sent[envelope] = time.monotonic()
        await self._sockets[-1].send_json(
            {
                "envelope_id": envelope,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": accepts_response_payload,
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        return envelope

    async def event(self, event: dict[str, Any], event_id: str = "Ev1") -> str:
        return await self.send(
            "events_api",
            {
                "token": "x",
                "team_id": "T1",
                "api_app_id": "A1",
                "type": "event_callback",
                "event_id": event_id,
                "event_time": int(time.time()),
                "event": event,
            },
        )

    async def interactive(self, payload: dict[str, Any]) -> str:
        return await self.send("interactive", payload, accepts_response_payload=True)

    async def slash_command(self, command: dict[str, Any]) -> str:
        return await self.send("slash_commands", command, accepts_response_payload=True)

    async def wait_ack(self, envelope: str, within: float = ACK_WITHIN) -> dict[str, Any]:
        """The app's acknowledgement of ``envelope``; TimeoutError when it did not come within
        ``within`` seconds of sending (Slack's 3 by default)."""
        deadline = self._sent[envelope] + within
        while envelope not in self.acks:
            if time.monotonic() > deadline:
                self.late.append(envelope)
                raise TimeoutError(f"envelope {envelope} not acknowledged within {within:g}s")
            await asyncio.sleep(0.01)
        return self.acks[envelope]

    def ack_delay(self, envelope: str) -> float:
        return self._acked[envelope] - self._sent[envelope]
