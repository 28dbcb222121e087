"""Skills against the real Prometheus and Alertmanager servers (started by the ``stack``
fixture on 127.0.0.1, scraping the demo exporter; ``HighErrorRate`` fires within seconds)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsbot.approvals import State, VoteStatus
from opsbot.audit import AuditEvent
from opsbot.demo import LocalStack
from opsbot.engine import Engine
from opsbot.model import Actor, Image, Request
from opsbot.policy import Policy
from opsbot.services import build_services
from tests.conftest import Thread, make_settings
from tests.test_silences import run

ALICE, BOB = Actor(id="shell:alice"), Actor(id="shell:bob")


async def list_silences(stack: LocalStack) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{stack.alertmanager_url}/api/v2/silences")).json()  # type: ignore[no-any-return]


async def say(engine: Engine, text: str, actor: Actor = ALICE) -> Thread:
    thread = Thread()
    await engine.handle(Request(actor=actor, channel="shell", text=text), thread)
    return thread


async def test_instant_query_lists_series(live: Engine) -> None:
    thread = await say(live, "promql: sum by (service) (http_requests_total)")
    assert "3 series" in thread.text
    for service in ("checkout", "payments", "cart"):
        assert f'{{service="{service}"}}' in thread.text


async def test_rejected_promql_shows_prometheus_error(live: Engine) -> None:
    thread = await say(live, "promql: sum(rate(http_requests_total[5m]) by")
    assert "Prometheus rejected the query (bad_data)" in thread.text
    assert "parse error" in thread.text
    errors = await live.services.audit.search(skill="prometheus.query", event=AuditEvent.RESULT)
    assert errors[-1].outcome == "failed"


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("query rate(http_requests_total[5m]", "rate(http_requests_total[5m]"),
        (
            "query sum(rate(http_requests_total[5m])) by service)",
            "sum(rate(http_requests_total[5m])) by service)",
        ),
        (
            "graph rate(http_requests_total{service='cart'}[1m] over the last 1h",
            "rate(http_requests_total{service='cart'}[1m]",
        ),
        ('promql: up{job="shop"', 'up{job="shop"'),
    ],
)
async def test_promql_that_does_not_parse_is_sent_as_written(
    live: Engine, text: str, sent: str
) -> None:
    """Never a balanced piece of it instead (``http_requests_total[5m]`` out of
    ``rate(http_requests_total[5m]``): Prometheus' own error, on what the user wrote."""
    thread = await say(live, text)
    assert f"query={sent}" in thread.text.replace("'query': ", "query="), thread.text
    assert "Prometheus rejected the query (bad_data)" in thread.text, thread.text
    assert "parse error" in thread.text


async def test_range_vector_query_shows_last_samples_not_nan(live: Engine) -> None:
    thread = await say(live, 'promql: http_requests_total{service="cart"}[30s]')
    assert "1 series (a range vector: last sample each)" in thread.text, thread.text
    assert "series | last value" in thread.text and "NaN" not in thread.text


async def test_range_chart_is_a_png_with_summary(live: Engine) -> None:
    thread = await say(live, "graph up over the last 30m")
    images = [b for m in thread.messages for b in m.blocks if isinstance(b, Image)]
    assert len(images) == 1 and images[0].data.startswith(b"\x89PNG\r\n\x1a\n")
    assert "series | min | max | last" in thread.text
    assert "up{instance=" in thread.text and "| 1 | 1 | 1" in thread.text


async def test_service_health_reports_red_signals(live: Engine) -> None:
    await asyncio.sleep(2)  # let rate() see a few scrapes
    thread = await say(live, "how is checkout doing in shop?")
    assert "request rate" in thread.text and "req/s" in thread.text
    assert "error ratio" in thread.text and "p95 latency" in thread.text
    assert "request rate | no data" not in thread.text, thread.text
    unknown = await say(live, "health of nosuchservice")
    assert "no request metrics for nosuchservice" in unknown.text


async def test_service_health_error_ratio_without_5xx_series_is_zero(live: Engine) -> None:
    # cart never fails in the demo: Prometheus has no code=~"5.." series for it at all
    thread = await run(live, "service.health", {"service": "cart", "namespace": "shop"})
    assert "error ratio | 0.00 %" in thread.text, thread.text


async def test_unknown_service_lists_the_known_ones(live: Engine) -> None:
    unknown = await run(live, "service.health", {"service": "nosuchservice"})
    assert "Known services: cart, checkout, payments." in unknown.text, unknown.text
    elsewhere = await run(live, "service.health", {"service": "checkout", "namespace": "prod"})
    assert "no request metrics for checkout in prod" in elsewhere.text
    assert "checkout has metrics in namespace shop." in elsewhere.text, elsewhere.text


async def test_service_health_rates_over_the_window_the_data_covers(
    stack: LocalStack, tmp_path: Path, policy: Policy
) -> None:
    """A 1h window on a stack started minutes ago: rate() over 1h would divide a minute of
    requests by an hour (checkout serves about 60 req/s; the 1h rate read about 1)."""
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'w.db'}",
        tmp_path,
        prometheus_url=stack.prometheus_url,
        alertmanager_url=stack.alertmanager_url,
    )
    settings.backends["prometheus"]["health"] = {"window": "1h"}
    services = await build_services(settings, policy=policy)
    try:
        thread = await run(Engine(services), "service.health", {"service": "checkout"})
    finally:
        await services.close()
    [result] = [m for m in thread.messages if m.step.value == "result"]
    rate = float(thread.text.split("request rate | ")[1].split(" req/s")[0])
    assert 30 < rate < 90, thread.text
    assert "over the last " in thread.text and "the 1h window would under-report" in thread.text
    assert "Prometheus has data for it only since" in thread.text, thread.text
    assert result.blocks


async def test_firing_alert_is_listed(live: Engine) -> None:
    thread = await say(live, "show firing alerts")
    assert "HighErrorRate" in thread.text and "critical" in thread.text
    critical = await say(live, "list critical alerts")
    assert "HighErrorRate" in critical.text
    none = await say(live, "alerts for service nosuch")
    assert "No firing alerts service=nosuch" in none.text


async def test_pending_alerts_come_from_prometheus(live: Engine) -> None:
    thread = await say(live, "pending alerts")
    assert 'ALERTS{alertstate="pending"}' in thread.text


async def test_silence_only_after_approval(live: Engine, stack: LocalStack) -> None:
    thread = await say(live, "silence HighErrorRate for 1h, deploy in progress")
    [approval_id] = thread.approval_ids
    assert "would mute 1 alert(s) firing now: HighErrorRate" in thread.text
    existing = await list_silences(stack)
    assert not [s for s in existing if s["comment"] == "deploy in progress"]

    outcome = await live.decide(approval_id, BOB, "approve", thread)
    assert outcome.status is VoteStatus.APPROVED
    after = await list_silences(stack)
    [created] = [s for s in after if s["comment"] == "deploy in progress"]
    assert created["status"]["state"] == "active"
    assert created["createdBy"] == "opsbot:shell:alice"
    assert created["matchers"] == [
        {"name": "alertname", "value": "HighErrorRate", "isRegex": False, "isEqual": True}
    ]
    approval = await live.services.approvals.get(approval_id)
    assert (
        approval is not None
        and approval.state is State.EXECUTED
        and created["id"] in approval.result
    )
    silenced = await say(live, "show silenced alerts")
    assert "HighErrorRate" in silenced.text
    async with httpx.AsyncClient() as client:
        await client.delete(f"{stack.alertmanager_url}/api/v2/silence/{created['id']}")


async def test_grounding_uses_prometheus_label_values(live: Engine) -> None:
    thread = await say(live, "how is chekout doing")
    assert "service.health service=checkout" in thread.text


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a hung backend)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(server.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield server.getsockname()[1]
    stop.set()
    t.join()
    for c in conns:
        c.close()
    server.close()


async def test_down_and_hung_backends_answer_clearly(
    tmp_path: Path, policy: Policy, silent_port: int
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'd.db'}",
        tmp_path,
        prometheus_url=f"http://127.0.0.1:{closed}",
        alertmanager_url=f"http://127.0.0.1:{silent_port}",
    )
    settings.backend_timeout = 1.0
    services = await build_services(settings, policy=policy)
    try:
        engine = Engine(services)
        down = await say(engine, "query up")
        assert f"Prometheus at http://127.0.0.1:{closed} is unreachable" in down.text
        hung = await say(engine, "what's firing?")
        assert "did not answer within 1s" in hung.text
        after = await say(engine, "help")  # and it keeps serving
        assert "alerts.list" in after.text
    finally:
        await services.close()


async def test_not_configured_backend_says_so(sqlite_services: object) -> None:
    engine = Engine(sqlite_services)  # type: ignore[arg-type]
    thread = await say(engine, "query up")
    assert "Prometheus is not configured: set PROMETHEUS_URL." in thread.text
