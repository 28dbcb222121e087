"""The audit console in a real browser: Debian's chromium driven by Playwright (no browser
download: ``executable_path``). A reviewer signs in through the proxy headers, filters the
timeline, opens yesterday's rollback of payments and sees who asked, both approvers, the patch
that ran and its result, and exports CSV; the anonymous are refused; a tampered record and a
truncation caught against an anchor show on the chain view. The screenshots the README uses
(docs/console-*.png) go to the test's tmp_path, so a run leaves the git tree clean; with
``OPSBOT_UPDATE_DOCS=1`` they are written to docs/ (to refresh them)."""

from __future__ import annotations

import asyncio
import csv
import os
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import delete, update

from opsbot.adapters.console import CONSOLE
from opsbot.adapters.http import make_app
from opsbot.anchors import Anchorer, AnchorFile
from opsbot.services import Services
from opsbot.store import AuditRow
from tests.conftest import ROOT, unavailable
from tests.console_seed import ROLLBACK_REQUEST, seed
from tests.test_console import PROXY, console_services

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
DOCS = ROOT / "docs"
#: set to 1 to write the screenshots into docs/ (what the README shows) instead of tmp_path
UPDATE_DOCS = "OPSBOT_UPDATE_DOCS"
T = TypeVar("T")


def _docs_shots() -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in DOCS.glob("console-*.png")}


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    """Where this test's screenshots go: docs/ with ``OPSBOT_UPDATE_DOCS=1``, else a folder of
    tmp_path; and then docs/ is checked to be untouched (CI and every developer's tree stay
    clean)."""
    if os.environ.get(UPDATE_DOCS) == "1":
        DOCS.mkdir(exist_ok=True)
        yield DOCS
        return
    before = _docs_shots()
    where = tmp_path / "screenshots"
    where.mkdir()
    yield where
    assert _docs_shots() == before, f"docs/ was written without {UPDATE_DOCS}=1"


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    """pytest-playwright launches Debian's chromium, headless, with nothing phoning home."""
    if not CHROMIUM.exists():
        unavailable("no /usr/bin/chromium (apt-get install --no-install-recommends chromium)")
    return {
        "executable_path": str(CHROMIUM),
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "upgrade",
    "x-forwarded-user",
    "x-forwarded-groups",
}


def sign_in_proxy(backend: str, session: aiohttp.ClientSession) -> web.Application:
    """An authenticating proxy as oauth2-proxy runs in front of an app: it has signed the
    person in (here: always alice of the security group), drops any X-Forwarded-User the
    browser sent, sets its own, keeps the Host header, and forwards every request (page
    loads, form posts, downloads alike)."""

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        headers.update(PROXY)
        async with session.request(
            request.method,
            backend + request.path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            answer = web.Response(status=upstream.status, body=body)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP:
                    answer.headers.add(name, value)
            return answer

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# pytest-playwright's playwright/browser_type/browser fixtures live for the whole session, and
# the sync API keeps an event loop running in this thread while they do: every async test
# after this module would fail ("Runner.run() cannot be called from a running event loop").
# Here they live for this module only, and the loop is gone when it ends.


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    with playwright_api.sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser_type(playwright: Any, browser_name: str) -> Any:
    return getattr(playwright, browser_name)


@pytest.fixture(scope="module")
def browser(browser_type: Any, browser_type_launch_args: dict[str, Any]) -> Iterator[Any]:
    launched = browser_type.launch(**browser_type_launch_args)
    yield launched
    launched.close()


class LiveConsole:
    """``opsbot serve``'s HTTP app on 127.0.0.1 in a thread of its own (its own event loop),
    on a seeded SQLite database, the proxy trusted from 127.0.0.1; ``proxy_url`` is the same
    app behind the sign-in proxy."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port, self.proxy_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proxy_url = f"http://127.0.0.1:{self.proxy_port}"
        self.services: Services | None = None
        self.runner: web.AppRunner | None = None
        self.proxy: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(60)

    def start(self) -> LiveConsole:
        self.thread.start()

        async def up() -> None:
            self.services = await console_services(self.tmp_path)
            await seed(self.services.store)
            self.runner = web.AppRunner(make_app(self.services))
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
            self.session = aiohttp.ClientSession(auto_decompress=False)
            self.proxy = web.AppRunner(sign_in_proxy(self.url, self.session))
            await self.proxy.setup()
            await web.TCPSite(self.proxy, "127.0.0.1", self.proxy_port).start()

        self.call(up)
        return self

    def verified(self) -> None:
        """Wait for the console's first chain check (it starts with the server)."""
        assert self.runner is not None
        console = self.runner.app[CONSOLE]
        self.call(lambda: console.watcher.check(full=True))

    def stop(self) -> None:
        async def down() -> None:
            if self.proxy is not None:
                await self.proxy.cleanup()
            if self.session is not None:
                await self.session.close()
            if self.runner is not None:
                await self.runner.cleanup()
            if self.services is not None:
                await self.services.close()

        self.call(down)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    server = LiveConsole(tmp_path_factory.mktemp("console")).start()
    server.verified()
    yield server
    server.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[LiveConsole]:
    """A server of its own, for the tests that damage the log."""
    server = LiveConsole(tmp_path).start()
    yield server
    server.stop()


def test_a_reviewer_finds_yesterdays_rollback_and_exports_it(
    live: LiveConsole, browser: Any, tmp_path: Path, shots: Path
) -> None:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900},
        color_scheme="light",
        accept_downloads=True,
    )
    page = context.new_page()
    page.goto(f"{live.proxy_url}/audit")  # signed in by the proxy's headers
    expect(page.locator("header .who")).to_contain_text("web:alice@example.com")
    expect(page.locator("table.records")).to_contain_text("rolled back deployment shop/payments")
    expect(page.locator("nav .dot-ok")).to_be_visible()
    page.screenshot(path=str(shots / "console-timeline.png"))

    # filter: rollbacks of the last 7 days
    page.fill("input[name=skill]", "k8s.rollback")
    page.select_option("select[name=since]", "7d")
    page.click("form.filters button.primary")
    expect(page).to_have_url(re.compile(r"/audit\?.*skill=k8s\.rollback"))
    rows = page.locator("table.records tbody tr")
    expect(rows.first).to_be_visible()
    for text in rows.all_inner_texts():
        assert "k8s.rollback" in text

    # open the request: who asked, both approvers, the patch that ran, the result
    page.click("table.records >> text=rolled back deployment shop/payments")
    expect(page).to_have_url(f"{live.proxy_url}/audit/requests/{ROLLBACK_REQUEST}")
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("slack:U01ALICE")
    expect(facts).to_contain_text("slack:U02BOB, slack:U03CAROL")
    votes = page.locator("table.votes")
    expect(votes).to_contain_text("slack:U02BOB")
    expect(votes).to_contain_text("slack:U03CAROL")
    expect(page.locator("pre.patch")).to_contain_text("shop/payments:1.8.2")
    expect(page.locator(".step-result")).to_contain_text(
        "rolled back deployment shop/payments from revision 8 to 7"
    )
    expect(page.locator(".step-follow-up")).to_contain_text("rollout complete: 3/3")
    thread = page.locator("a", has_text="Open the chat thread")
    assert thread.get_attribute("href") == (
        "https://slack.com/archives/C0OPS/p1732450000123456?thread_ts=1732450000.123456&cid=C0OPS"
    )
    page.screenshot(path=str(shots / "console-request.png"), full_page=True)

    # export what the request view shows, as CSV
    with page.expect_download() as done:
        page.click("text=Export CSV")
    saved = tmp_path / "export.csv"
    done.value.save_as(saved)
    rows_out = list(csv.DictReader(saved.open()))
    assert {r["request_id"] for r in rows_out} == {ROLLBACK_REQUEST}
    assert {"slack:U01ALICE", "slack:U02BOB", "slack:U03CAROL"} <= {r["actor"] for r in rows_out}
    assert any("shop/payments:1.8.2" in r["args"] for r in rows_out)
    context.close()

    # the same request on a phone, in dark mode
    phone = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        color_scheme="dark",
    )
    small = phone.new_page()
    small.goto(f"{live.proxy_url}/audit/requests/{ROLLBACK_REQUEST}")
    expect(small.locator("table.votes")).to_contain_text("slack:U03CAROL")
    width = small.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    small.screenshot(path=str(shots / "console-request-phone-dark.png"))
    phone.close()


def test_the_anonymous_are_refused(live: LiveConsole, browser: Any) -> None:
    """Straight to the app, not through the proxy: no headers, no token."""
    context = browser.new_context()
    page = context.new_page()
    answer = page.goto(f"{live.url}/audit")
    assert answer is not None and answer.status == 401
    expect(page.locator("h1")).to_have_text("Sign in to the audit console")
    assert "payments" not in page.content()
    export = page.request.get(f"{live.url}/audit/export.csv")
    assert export.status == 401
    context.close()


def test_tampering_and_truncation_show_on_the_chain_view(
    fresh: LiveConsole, browser: Any, shots: Path
) -> None:
    assert fresh.services is not None
    services = fresh.services
    path = services.settings.audit_anchor_path
    assert path is not None
    anchors = AnchorFile(path, services.settings.audit_anchor_key)
    anchor = fresh.call(lambda: Anchorer(services.audit, anchors, interval=60).anchor_once())
    anchor = anchor or anchors.latest()  # the server anchored the head when it started
    assert anchor is not None

    async def damage() -> int:
        [record] = await services.audit.search(actor="U03CAROL", skill="k8s.rollback")
        async with services.store.sessions() as session:
            await session.execute(
                update(AuditRow).where(AuditRow.seq == record.seq).values(actor="slack:U09MALLORY")
            )
            await session.execute(delete(AuditRow).where(AuditRow.seq > anchor.seq - 2))
            await session.commit()
        return record.seq

    edited = fresh.call(damage)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{fresh.proxy_url}/audit/chain")
    page.click("text=Verify everything now")  # a form with its CSRF token, in a real browser
    expect(page.locator(".verdict h2")).to_contain_text(
        f"Broken at record {edited}", timeout=15_000
    )
    problems = page.locator("ul.problems")
    expect(problems).to_contain_text(f"record {edited}: content does not match its hash (edited)")
    # the views since the deletion were appended after record {anchor.seq - 2}: the record
    # now numbered as the anchor's is another one
    expect(problems).to_contain_text(f"record {anchor.seq}: hash")
    expect(problems).to_contain_text("the log was truncated or rewritten at or before this record")
    expect(page.locator(".banner.bad")).to_contain_text(f"record {edited}")
    page.screenshot(path=str(shots / "console-chain-broken.png"))
    page.goto(f"{fresh.proxy_url}/audit?since=3d&skill=k8s.rollback")
    tampered = page.locator("table.records tr.broken")
    expect(tampered).to_contain_text("slack:U09MALLORY")
    expect(tampered).to_contain_text("tampered")
    page.screenshot(path=str(shots / "console-tampered.png"))
    context.close()
