"""``opsbot serve``'s HTTP paths through aiohttp's test client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from aiohttp.test_utils import TestClient, TestServer

from opsbot.adapters.http import make_app, serve
from opsbot.audit import AuditEvent
from opsbot.policy import Policy
from opsbot.services import Services, build_services
from tests.conftest import make_settings


async def client_for(services: Services) -> TestClient:  # type: ignore[type-arg]
    client = TestClient(TestServer(make_app(services)))
    await client.start_server()
    return client


async def test_health_ready_metrics(sqlite_services: Services) -> None:
    client = await client_for(sqlite_services)
    try:
        assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
        ready = await (await client.get("/readyz")).json()
        assert ready["status"] == "ready"
        assert ready["backends"]["prometheus"] == {
            "ok": False,
            "configured": False,
            "version": "",
            "detail": "not configured",
        }
        metrics = await (await client.get("/metrics")).text()
        assert "opsbot_requests_total" in metrics and "opsbot_skill_duration_seconds" in metrics
    finally:
        await client.close()


async def test_audit_shows_nothing_unless_the_console_is_configured(
    sqlite_services: Services,
) -> None:
    """A new install's /audit is off (404, no records): tests/test_console.py has the rest."""
    await sqlite_services.audit.append(AuditEvent.REQUEST, actor="shell:alice", detail="x")
    client = await client_for(sqlite_services)
    try:
        for query in ("", "?actor=alice", "?hours=abc"):
            answer = await client.get(f"/audit{query}")
            body = await answer.text()
            assert answer.status == 404 and "console is off" in body and "alice" not in body
    finally:
        await client.close()


async def test_serve_warns_when_no_chat_adapter_is_configured(
    tmp_path: Path, policy: Policy, unused_tcp_port: int
) -> None:
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        tmp_path,
        http_host="127.0.0.1",
        http_port=unused_tcp_port,
        slack_bot_token=None,
        discord_token=None,
    )
    services = await build_services(settings, policy=policy)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(serve(services))
        try:
            for _ in range(100):
                if any(e["event"] == "http.listening" for e in logs):
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await services.close()
    [warning] = [e for e in logs if e["event"] == "adapter.none_configured"]
    assert warning["log_level"] == "warning"
    assert "only the HTTP endpoints answer" in warning["effect"]
    assert "SLACK_BOT_TOKEN" in warning["fix"] and "DISCORD_TOKEN" in warning["fix"]


async def test_alertmanager_webhook_accepts_and_rejects(sqlite_services: Services) -> None:
    """A version 4 payload is recorded as an incident (tests/test_incidents.py has the rest);
    what is not JSON is 400."""
    client = await client_for(sqlite_services)
    try:
        ok = await client.post(
            "/alertmanager",
            json={
                "version": "4",
                "groupKey": '{}:{alertname="HighErrorRate"}',
                "receiver": "opsbot",
                "status": "firing",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {"alertname": "HighErrorRate", "service": "checkout"},
                        "startsAt": "2026-11-01T10:00:00Z",
                    }
                ],
            },
        )
        body = await ok.json()
        assert ok.status == 200 and body["status"] == "firing" and body["alerts"] == 1
        bad = await client.post("/alertmanager", data=b"{not json")
        assert (
            bad.status == 400
            and "not an Alertmanager webhook payload" in (await bad.json())["error"]
        )
        [record] = await sqlite_services.audit.search(event=AuditEvent.INCIDENT_OPENED)
        assert record.actor == "alertmanager:opsbot" and record.request_id == body["incident"]
    finally:
        await client.close()


async def test_readyz_names_a_configured_backend_that_is_unreachable(
    sqlite_services: Services, unused_tcp_port: int
) -> None:
    prometheus = sqlite_services.registry.backend("prometheus")
    assert prometheus is not None
    prometheus.config.url = f"http://127.0.0.1:{unused_tcp_port}"
    client = await client_for(sqlite_services)
    try:
        answer = await client.get("/readyz")
        body = await answer.json()
        assert answer.status == 503 and body["unreachable"] == ["prometheus"]
        assert "unreachable" in body["backends"]["prometheus"]["detail"]
    finally:
        await client.close()


async def test_readyz_reports_a_backend_whose_settings_cannot_be_read(
    sqlite_services: Services,
) -> None:
    """A backend whose check of its own settings raises (a kubeconfig that cannot be read:
    PermissionError) is reported, not a 500."""
    backend = sqlite_services.registry.backend("prometheus")
    assert backend is not None

    def unreadable() -> list[str]:
        raise PermissionError("[Errno 13] Permission denied: '/root/.kube/config'")

    backend.missing = unreadable  # type: ignore[method-assign]
    client = await client_for(sqlite_services)
    try:
        answer = await client.get("/readyz")
        body = await answer.json()
        assert answer.status == 200
        assert "Permission denied" in body["backends"]["prometheus"]["detail"]
    finally:
        await client.close()
