"""``opsbot serve``: the HTTP server plus whichever adapters are configured."""

from __future__ import annotations

import asyncio
from pathlib import Path

import discord
import httpx
import yarl

from opsbot.adapters.http import serve
from opsbot.demo import free_port
from opsbot.policy import Policy
from opsbot.services import build_services
from tests.conftest import make_settings
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.slack_api import FakeSlack


async def test_serve_runs_http_slack_events_and_discord(tmp_path: Path, policy: Policy) -> None:
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    port = free_port()
    async with FakeSlack() as slack, FakeDiscord() as fake_discord:
        settings = make_settings(
            f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
            tmp_path,
            http_host="127.0.0.1",
            http_port=port,
            slack_bot_token="xoxb-test",
            slack_signing_secret="secret",
            slack_api_url=slack.base_url,
            discord_token="discord-test",
            discord_api_url=fake_discord.api_url,
            discord_gateway_url=fake_discord.gateway_url,
        )
        services = await build_services(settings, policy=policy)
        task = asyncio.create_task(serve(services))
        try:
            await asyncio.wait_for(fake_discord.identified.wait(), 10)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(100):
                    try:
                        health = await client.get("/healthz")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
                assert health.json()["status"] == "ok"
                assert health.json()["leader"] is True  # one process: it leads (no election)
                unsigned = await client.post(
                    "/slack/events", content=b"{}", headers={"Content-Type": "application/json"}
                )
                assert unsigned.status_code == 401
                assert "opsbot_requests_total" in (await client.get("/metrics")).text
            assert slack.of("auth.test")  # the adapter checked its scopes at start
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await services.close()
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = (
                base,
                yarl.URL(str(gateway)),
            )
