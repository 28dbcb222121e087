"""README's "Writing a backend" example, run for real: a toy status-page service (aiohttp on
127.0.0.1) behind the example Backend, asked through the opsbot_bot fixture."""

# ruff: noqa: I001  (the README example below keeps its own import block)

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from opsbot.testing import TestBot

# --- README: Writing a backend (from here to the end marker, verbatim) ---------------------
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from opsbot.model import SkillResult, Table
from opsbot.skills.base import Backend, BackendSettings, Skill, SkillContext, SkillError


class StatusPageConfig(BackendSettings):
    model_config = SettingsConfigDict(env_prefix="STATUSPAGE_")
    url: str | None = None  # STATUSPAGE_URL, or statuspage_url in opsbot.yaml


class StatusPage(Backend[StatusPageConfig]):
    name = "statuspage"
    Config = StatusPageConfig

    def missing(self) -> list[str]:  # what `opsbot skills` says to set
        return [] if self.config.url else ["STATUSPAGE_URL"]

    async def connect(self) -> Any:  # on first use: import the client library here
        import httpx

        timeout = self.settings.backend_timeout  # opsbot's shared settings
        return httpx.AsyncClient(base_url=self.config.url or "", timeout=timeout)

    async def get(self, path: str) -> Any:
        response = await (await self.client()).get(path)
        if response.is_error:  # a SkillError is shown to the user as it is
            raise SkillError(f"status page: {response.status_code} {response.text[:200]}")
        return response.json()

    async def probe(self) -> str:  # health: reachable, and which version
        return str((await self.get("/version"))["version"])

    async def inventory(self) -> dict[str, set[str]]:  # names requests are grounded against
        return {"service": {s["name"] for s in await self.get("/services")}}


class CheckArgs(BaseModel):
    service: str = Field(description="the service to look up, e.g. checkout")


class StatusCheck(Skill[CheckArgs, StatusPage]):
    name = "statuspage.check"
    summary = "A service's state on the status page"
    Args = CheckArgs
    examples = ["status page of checkout"]
    keywords = {"status page": 3.0, "statuspage": 3.0}

    async def run(self, args: CheckArgs, ctx: SkillContext[StatusPage]) -> SkillResult:
        state = (await ctx.backend.get(f"/services/{args.service}"))["state"]
        table = Table(columns=["service", "state"], rows=[[args.service, state]])
        return SkillResult(summary=f"{args.service} is {state}", blocks=[table])


StatusPage.skills = (StatusCheck,)
# --- end of the README example -------------------------------------------------------------

POLICY = """
rules:
  - name: everyone reads the status page
    subjects: ["*"]
    skills: [help, statuspage.*]
    effect: allow
"""

SERVICES = {"checkout": "operational", "payments": "degraded"}


@pytest.fixture
async def statuspage() -> AsyncIterator[str]:
    """The toy service: GET /version, /services, /services/{name}."""

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": "1.4.2"})

    async def services(request: web.Request) -> web.Response:
        return web.json_response([{"name": n} for n in SERVICES])

    async def service(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in SERVICES:
            raise web.HTTPNotFound(text=f"no service {name}")
        return web.json_response({"name": name, "state": SERVICES[name]})

    app = web.Application()
    app.add_routes(
        [
            web.get("/version", version),
            web.get("/services", services),
            web.get("/services/{name}", service),
        ]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_the_example_backend_answers_through_the_bot(
    opsbot_bot: TestBot, statuspage: str
) -> None:
    opsbot_bot.use_policy(POLICY)
    opsbot_bot.add_backend(StatusPage, url=statuspage)
    reply = await opsbot_bot.ask("status page of payments", as_="shell:eve")
    assert "payments is degraded" in reply.text
    assert "service | state" in reply.text
    backend = opsbot_bot.services.registry.backend("statuspage")
    assert backend is not None
    health = await backend.health()
    assert health.ok and health.version == "1.4.2"
    assert await backend.inventory() == {"service": {"checkout", "payments"}}
    # a name the service does not know: the skill's error is the user's answer
    missing = await opsbot_bot.ask("status page of nosuch", as_="shell:eve")
    assert "status page: 404 no service nosuch" in missing.text


async def test_unconfigured_it_says_what_to_set(opsbot_bot: TestBot, monkeypatch: Any) -> None:
    monkeypatch.delenv("STATUSPAGE_URL", raising=False)
    opsbot_bot.use_policy(POLICY)
    opsbot_bot.add_backend(StatusPage)
    listed = await opsbot_bot.ask("help", as_="shell:eve")
    assert "statuspage.check" in listed.text and "set STATUSPAGE_URL" in listed.text
    health = await opsbot_bot.services.registry.backend("statuspage").health()  # type: ignore[union-attr]
    assert not health.configured and health.missing == ("STATUSPAGE_URL",)
    reply = await opsbot_bot.ask("status page of checkout", as_="shell:eve")
    assert "Statuspage is not configured: set STATUSPAGE_URL." in reply.text


def test_the_readme_shows_this_example() -> None:
    """Once README has the "Writing a backend" section, its code is the code above."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = re.search(r"^#+ Writing a backend$(.*?)(?=^#+ |\Z)", readme, re.M | re.S)
    if section is None:
        pytest.skip("README has no 'Writing a backend' section yet")
    blocks = re.findall(r"```python\n(.*?)```", section.group(1), re.S)
    source = Path(__file__).read_text()
    example = source.split("verbatim) ---")[1].split("\n", 1)[1].split("# --- end of")[0]
    assert any(_code(b) == _code(example) for b in blocks), "README and test differ"


def _code(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines() if line.strip()]
