"""The Loki backend and its skills (``logs.query``, ``logs.errors``) through the engine, against
the strict fake Loki HTTP API (tests/fakes/loki.py): requests routed by the offline router,
checked by the bundled policy, answered from Loki's own JSON."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from typer.testing import CliRunner

from opsbot.cli import app
from opsbot.model import Image, Table
from opsbot.skills.loki import Loki, LokiConfig, mine
from opsbot.testing import Messages, TestBot
from tests.fakes.loki import NS, FakeLoki

CHECKOUT_A = {"service": "checkout", "namespace": "shop", "pod": "checkout-a"}
CHECKOUT_B = {"service": "checkout", "namespace": "shop", "pod": "checkout-b"}
PAYMENTS = {"service": "payments", "namespace": "shop"}
FRONTEND = {"service": "frontend", "namespace": "web"}


def ago(seconds: float) -> int:
    """A timestamp ``seconds`` before now, in nanoseconds."""
    return time.time_ns() - int(seconds * NS)


def seed(loki: FakeLoki, tenant: str = "fake") -> None:
    loki.push(
        CHECKOUT_A,
        [
            (ago(600), "GET /cart 200"),
            (ago(500), "order 1001 failed: payment timeout after 3001ms"),
            (ago(400), "order 1002 failed: payment timeout after 2999ms"),
            (ago(300), "ERROR db connection refused 10.0.0.12:5432"),
            (ago(120), "order 1003 failed: payment timeout after 3050ms"),
            (ago(60), "GET /health 200"),
        ],
        tenant=tenant,
    )
    loki.push(
        CHECKOUT_B,
        [
            (ago(450), "order 2001 failed: payment timeout after 3100ms"),
            (ago(200), "ERROR db connection refused 10.0.0.13:5432"),
            (ago(30), "panic: runtime error: index out of range [5] with length 3"),
        ],
        tenant=tenant,
    )
    loki.push(PAYMENTS, [(ago(100), "ERROR card 4242 declined"), (ago(90), "INFO charged")])
    loki.push(FRONTEND, [(ago(50), "GET / 500")], tenant=tenant)


@pytest.fixture
async def loki() -> AsyncIterator[FakeLoki]:
    async with FakeLoki() as fake:
        seed(fake)
        yield fake


def result(reply: Messages) -> str:
    """The result (or error) messages' text, without the request's other steps."""
    return "\n".join(m.plain for m in reply if m.step.value in ("result", "error", "answer"))


def blocks(reply: Messages) -> list[Any]:
    return [b for m in reply if m.step.value == "result" for b in m.blocks]


# -- logs.query ----------------------------------------------------------------------------


async def test_streams_show_time_the_labels_that_differ_and_the_line_newest_first(
    opsbot_bot: TestBot, loki: FakeLoki
) -> None:
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask('logql: {namespace="shop", service="checkout"} |= "order"')
    text = result(reply)
    assert '4 lines** from 2 streams {namespace="shop", service="checkout"}' in text
    assert "in the last 1h, newest first (UTC)" in text
    lines = [line for line in text.splitlines() if "order" in line and "failed" in line]
    assert [re.findall(r"order (\d+)", line)[0] for line in lines] == [
        "1003",
        "1002",
        "2001",
        "1001",
    ]
    # time, then only the label that differs between the streams (pod), then the line
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d  pod=checkout-a  order 1003 failed: payment timeout after 3050ms",
        lines[0],
    )
    [asked] = [r for r in loki.requests if r.path.endswith("/query_range")]
    assert asked.params["query"] == '{namespace="shop", service="checkout"} |= "order"'
    assert asked.params["limit"] == "100" and asked.params["direction"] == "backward"
    span = int(asked.params["end"]) - int(asked.params["start"])
    assert span == 3600 * NS


async def test_one_stream_shows_no_label_column_and_forward_reads_oldest_first(
    opsbot_bot: TestBot, loki: FakeLoki
) -> None:
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask('search the logs `{pod="checkout-a"} |= "GET"` oldest first')
    text = result(reply)
    assert "oldest first" in text
    lines = [line for line in text.splitlines() if "GET /" in line]
    assert [line.split("  ", 1)[1] for line in lines] == ["GET /cart 200", "GET /health 200"]
    assert loki.requests[-1].params["direction"] == "forward"


async def test_a_metric_query_is_a_table_and_a_chart(opsbot_bot: TestBot, loki: FakeLoki) -> None:
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask(
        'logql: sum by (service) (count_over_time({namespace="shop"} |~ "(?i)error|failed" [1h]))'
    )
    [table] = [b for b in blocks(reply) if isinstance(b, Table)]
    assert table.columns == ["series", "last", "min", "max"]
    rows = {row[0]: row[1:] for row in table.rows}
    # at the end of the window, the last hour holds every error line of each service
    assert rows['{service="checkout"}'][0] == "7"
    assert rows['{service="payments"}'][0] == "1"
    assert list(rows) == ['{service="checkout"}', '{service="payments"}']  # largest first
    [image] = [b for b in blocks(reply) if isinstance(b, Image)]
    assert image.data.startswith(b"\x89PNG")
    assert "2 series over the last 1h" in result(reply)


async def test_logql_syntax_error_shows_lokis_own_message(
    opsbot_bot: TestBot, loki: FakeLoki
) -> None:
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask('logql: {app="x" |= "boom"')
    assert (
        # Loki's scanner reports two-character operators on line 0 (see tests/fakes/loki.py)
        "Loki rejected the query: parse error at line 0, col 10: syntax error: unexpected |=, "
        "expecting } or ," in result(reply)
    )
    empty = await opsbot_bot.ask('logql: {app=~".*"}')
    assert "Loki rejected the query: parse error : queries require at least one regexp" in result(
        empty
    )


@pytest.mark.opsbot(settings={"max_rows": 3})
async def test_lines_are_bounded_by_max_rows_and_limit_is_said(
    opsbot_bot: TestBot, loki: FakeLoki
) -> None:
    loki.push(
        {"service": "noisy", "namespace": "shop"}, [(ago(i + 1), f"line {i}") for i in range(30)]
    )
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask('loki `{service="noisy"}` limit 20')
    text = result(reply)
    assert "**20 lines** from 1 stream" in text.replace("**", "**")
    shown = [line for line in text.splitlines() if re.search(r"line \d+$", line)]
    assert [line.rsplit(" ", 1)[1] for line in shown] == ["0", "1", "2"]  # the newest three
    assert "17 more lines not shown" in text
    assert "the limit of 20 lines was reached: older lines of the window were not fetched" in text
    assert loki.requests[-1].params["limit"] == "20"


async def test_limit_above_lokis_maximum_is_refused_before_asking(
    opsbot_bot: TestBot, loki: FakeLoki
) -> None:
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask('search logs `{service="checkout"}` limit 6000')
    assert "less than or equal to 5000" in reply.text
    assert not [r for r in loki.requests if r.path.endswith("/query_range")]


async def test_secrets_in_log_lines_are_redacted(opsbot_bot: TestBot, loki: FakeLoki) -> None:
    loki.push(
        CHECKOUT_A,
        [
            (ago(20), "ERROR login failed for bob password=hunter2 token=abcdefgh12345678"),
            (
                ago(10),
                "ERROR upstream call failed: Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.sIgNaTuRe1",
            ),
        ],
    )
    opsbot_bot.add_backend(Loki, url=loki.url)
    query = await opsbot_bot.ask('logql: {pod="checkout-a"} |= "failed"')
    errors = await opsbot_bot.ask("errors from checkout in shop")
    for reply in (query, errors):
        text = reply.text
        assert "hunter2" not in text and "abcdefgh12345678" not in text
        assert "sIgNaTuRe1" not in text
        assert "password=[REDACTED]" in text


# -- logs.errors ---------------------------------------------------------------------------


async def test_errors_are_grouped_into_patterns_with_counts_first_last_and_a_sample(
    opsbot_bot: TestBot, loki: FakeLoki
) -> None:
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask("errors from checkout in shop", as_="shell:alice")
    text = result(reply)
    assert "**3 error patterns** in 7 error lines of `checkout` in shop over the last 1h" in text
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("4×"))
    assert re.fullmatch(
        r"4×  \d\d:\d\d:\d\d → \d\d:\d\d:\d\d  order <NUM> failed: payment timeout after <NUM>",
        lines[first],
    )
    assert lines[first + 1].strip() == "e.g. order 1003 failed: payment timeout after 3050ms"
    assert re.fullmatch(
        r"2×  \d\d:\d\d:\d\d → \d\d:\d\d:\d\d  ERROR db connection refused <IP>", lines[first + 2]
    )
    assert re.fullmatch(
        r"1×  \d\d:\d\d:\d\d  panic: runtime error: index out of range \[<NUM>\] with length <NUM>",
        lines[first + 4],
    )
    # the non-error lines (GET ... 200) were never asked for: Loki filtered them
    [asked] = loki.queries("/query_range")
    assert asked.startswith('{service="checkout", namespace="shop"} |~ `(?i)(error|')
    assert "GET /health" not in text


async def test_patterns_keep_first_and_last_seen_in_order(loki: FakeLoki) -> None:
    lines = [(ago(300 - i), f"order {100 + i} failed") for i in range(5)]
    lines += [(ago(250), "cache miss for key user:42")]
    [orders, cache] = mine(lines)
    assert (orders.count, orders.template, orders.sample) == (
        5,
        "order <NUM> failed",
        "order 104 failed",
    )
    assert orders.first == lines[0][0] and orders.last == lines[4][0]
    assert cache.count == 1


async def test_top_limits_the_patterns(opsbot_bot: TestBot, loki: FakeLoki) -> None:
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask("top 1 errors of checkout in shop")
    text = result(reply)
    assert "**3 error patterns** in 7 error lines" in text and "the top 1 by count" in text
    assert "order <NUM> failed" in text and "connection refused" not in text


async def test_a_misspelt_service_grounds_on_lokis_label_values(
    opsbot_bot: TestBot, loki: FakeLoki
) -> None:
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask("errors from chekout in shop")
    assert "`logs.errors` service=checkout namespace=shop" in reply.text or "checkout" in result(
        reply
    )
    assert "**3 error patterns**" in result(reply)
    label_calls = {r.path for r in loki.requests if "/label/" in r.path}
    assert "/loki/api/v1/label/service/values" in label_calls
    assert "/loki/api/v1/label/namespace/values" in label_calls
    assert any('service="checkout"' in q for q in loki.queries("/query_range"))


async def test_inventory_kinds_and_an_empty_label(loki: FakeLoki) -> None:
    from opsbot.config import Settings

    backend = Loki(LokiConfig(url=loki.url), Settings(backend_timeout=3.0))
    try:
        names = await backend.inventory()
        assert names == {
            "service": {"checkout", "payments", "frontend"},
            "namespace": {"shop", "web"},
        }
        # no stream has app or job: Loki sends {"status": "success"} with no data
        assert await backend.label_values("app", "1h") == []
        health = await backend.health()
        assert (health.configured, health.reachable, health.version) == (True, True, "3.4.2")
    finally:
        await backend.aclose()


async def test_a_service_named_by_the_app_label_is_found(
    opsbot_bot: TestBot, loki: FakeLoki
) -> None:
    loki.push({"app": "cart", "namespace": "shop"}, [(ago(30), "ERROR cart 7 is locked")])
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask("errors from cart in shop")
    assert "**1 error pattern** in 1 error line of `cart` in shop" in result(reply)
    assert loki.queries("/query_range")[-1].startswith('{app="cart", namespace="shop"}')


async def test_an_unknown_service_says_which_labels_were_tried(
    opsbot_bot: TestBot, loki: FakeLoki
) -> None:
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask("errors from nosuch")
    assert 'Loki has no log streams with service/app/job="nosuch" in the last 1h' in result(reply)


async def test_a_service_with_no_errors_says_so(opsbot_bot: TestBot, loki: FakeLoki) -> None:
    loki.push({"service": "quiet", "namespace": "shop"}, [(ago(30), "all good")])
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask("errors from quiet")
    assert "No error lines from `quiet` in the last 1h." in result(reply)


async def test_more_errors_than_read_are_counted_by_a_metric_query(
    opsbot_bot: TestBot, loki: FakeLoki
) -> None:
    opsbot_bot.add_backend(Loki, url=loki.url, max_lines=3)
    reply = await opsbot_bot.ask("errors from checkout in shop")
    text = result(reply)
    assert "in 7 error lines of `checkout`" in text
    assert "Patterns are mined from the newest 3 error lines (LOKI_MAX_LINES)" in text
    [count] = loki.queries("/loki/api/v1/query")
    assert count.startswith('sum(count_over_time({service="checkout", namespace="shop"} |~ ')
    assert count.endswith(" [1h]))")


# -- tenants, auth, failures ---------------------------------------------------------------


async def test_a_multi_tenant_loki_needs_the_tenant_header(opsbot_bot: TestBot) -> None:
    async with FakeLoki(auth_enabled=True) as loki:
        seed(loki, tenant="team-a")
        opsbot_bot.add_backend(Loki, url=loki.url)
        refused = await opsbot_bot.ask("errors from checkout in shop")
        assert f"Loki at {loki.url} needs a tenant: set LOKI_TENANT (sent as X-Scope-OrgID)." in (
            result(refused)
        )
    async with FakeLoki(auth_enabled=True) as loki:
        seed(loki, tenant="team-a")
        bot = TestBot(opsbot_bot.path.parent / "tenant")
        bot.add_backend(Loki, url=loki.url, tenant="team-a")
        try:
            reply = await bot.ask("errors from checkout in shop")
        finally:
            await bot.aclose()
        assert "**3 error patterns**" in result(reply)
        assert {r.headers.get("X-Scope-OrgID") for r in loki.requests} == {"team-a"}


async def test_bearer_and_basic_auth(opsbot_bot: TestBot, tmp_path: Any) -> None:
    async with FakeLoki(bearer_token="s3cret-token") as loki:
        seed(loki)
        opsbot_bot.add_backend(Loki, url=loki.url)
        refused = await opsbot_bot.ask("errors from checkout in shop")
        assert (
            f"Loki at {loki.url} refused the credentials (401 Unauthorized): set LOKI_TOKEN, "
            "or LOKI_USERNAME and LOKI_PASSWORD." in result(refused)
        )
        bot = TestBot(tmp_path / "bearer")
        bot.add_backend(Loki, url=loki.url, token="s3cret-token")
        wrong = TestBot(tmp_path / "wrong")
        wrong.add_backend(Loki, url=loki.url, token="nope")
        try:
            reply = await bot.ask("errors from checkout in shop")
            denied = await wrong.ask("errors from checkout in shop")
        finally:
            await bot.aclose()
            await wrong.aclose()
        assert "**3 error patterns**" in result(reply)
        assert "check LOKI_TOKEN" in result(denied)
        assert "s3cret-token" not in reply.text + denied.text
    async with FakeLoki(basic_auth=("opsbot", "pa55")) as loki:
        seed(loki)
        bot = TestBot(tmp_path / "basic")
        bot.add_backend(Loki, url=loki.url, username="opsbot", password="pa55")
        try:
            reply = await bot.ask("errors from checkout in shop")
        finally:
            await bot.aclose()
        assert "**3 error patterns**" in result(reply)
        assert loki.requests[-1].headers["Authorization"].startswith("Basic ")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.opsbot(settings={"backend_timeout": 1.0})
async def test_loki_down_or_slow_is_a_clear_message_within_the_timeout(
    opsbot_bot: TestBot,
) -> None:
    down = f"http://127.0.0.1:{_free_port()}"
    opsbot_bot.add_backend(Loki, url=down)
    reply = await opsbot_bot.ask('logql: {service="checkout"}')
    assert f"Loki at {down} is unreachable (ConnectError)." in result(reply)
    async with FakeLoki(delay=30) as slow:
        bot = TestBot(opsbot_bot.path.parent / "slow", settings={"backend_timeout": 1.0})
        bot.add_backend(Loki, url=slow.url)
        try:
            started = time.monotonic()
            reply = await bot.ask("errors from checkout in shop")
            elapsed = time.monotonic() - started
        finally:
            await bot.aclose()
    assert f"Loki at {slow.url} did not answer within 1s." in result(reply)
    assert elapsed < 5  # the inventory (2 s at most) and one query (1 s), not 30 s


async def test_a_failing_loki_says_its_status(opsbot_bot: TestBot) -> None:
    async with FakeLoki(fail_with=503) as loki:
        opsbot_bot.add_backend(Loki, url=loki.url)
        reply = await opsbot_bot.ask('logql: {service="checkout"}')
        health = await opsbot_bot.services.registry.backend("loki").health()  # type: ignore[union-attr]
    assert f"Loki at {loki.url} answered 503 Service Unavailable." in result(reply)
    assert health.reachable is False and "503" in health.detail


async def test_a_quoted_phrase_becomes_a_line_filter(opsbot_bot: TestBot, loki: FakeLoki) -> None:
    opsbot_bot.add_backend(Loki, url=loki.url)
    reply = await opsbot_bot.ask("grep loki for 'connection refused' in namespace shop")
    assert loki.queries("/query_range") == ['{namespace="shop"} |= "connection refused"']
    assert "**2 lines** from 2 streams" in result(reply)


async def test_not_configured_says_what_to_set(opsbot_bot: TestBot, monkeypatch: Any) -> None:
    monkeypatch.delenv("LOKI_URL", raising=False)
    opsbot_bot.add_backend(Loki)
    reply = await opsbot_bot.ask("errors from checkout")
    assert "Loki is not configured: set LOKI_URL." in result(reply)


async def test_opsbot_skills_shows_lokis_health(
    loki: FakeLoki, tmp_path: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("OPSBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.chdir(tmp_path)
    for var in ("PROMETHEUS_URL", "ALERTMANAGER_URL", "LOKI_URL", "KUBECONFIG"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    unset = await asyncio.to_thread(runner.invoke, app, ["skills", "--json"])
    assert unset.exit_code == 0, unset.output
    monkeypatch.setenv("LOKI_URL", loki.url)
    ok = await asyncio.to_thread(runner.invoke, app, ["skills", "--json"])
    assert ok.exit_code == 0, ok.output
    monkeypatch.setenv("LOKI_URL", f"http://127.0.0.1:{_free_port()}")
    down = await asyncio.to_thread(runner.invoke, app, ["skills", "--json"])
    import json

    def status(output: str) -> dict[str, str]:
        rows = json.loads(output[output.index("[") :])
        return {r["skill"]: r["status"] for r in rows if r["backend"] == "loki"}

    assert status(unset.output) == {"logs.errors": "set LOKI_URL", "logs.query": "set LOKI_URL"}
    assert status(ok.output) == {"logs.errors": "ok (3.4.2)", "logs.query": "ok (3.4.2)"}
    assert status(down.output)["logs.query"].startswith("unreachable: Loki at http://127.0.0.1:")
