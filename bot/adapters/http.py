"""``opsbot serve``'s HTTP server (aiohttp): ``/healthz``, ``/readyz``, ``/metrics``,
``/audit`` (a read-only console of the audit log) and ``/alertmanager`` (webhook receiver,
Alertmanager's webhook JSON v4). Slack's ``/slack/events`` is mounted by the Slack adapter.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from opsbot.adapters.console import mount as mount_console
from opsbot.audit import AuditEvent
from opsbot.services import Services
from opsbot.telemetry import REGISTRY

log = structlog.get_logger(__name__)
SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and every *configured* backend is reachable; the body
    says which backend is not (name, reason), as ``opsbot skills`` does."""
    services = request.app[SERVICES]
    try:
        async with services.store.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return web.json_response({"status": "unready", "database": str(exc)[:200]}, status=503)
    backends = services.registry.backends
    healths = await asyncio.gather(*(b.health() for b in backends))
    report = {
        b.name: {"ok": h.ok, "configured": h.configured, "version": h.version, "detail": h.detail}
        for b, h in zip(backends, healths, strict=True)
    }
    down = sorted(name for name, h in report.items() if h["configured"] and not h["ok"])
    if down:
        log.warning("readyz.backend_unreachable", backends=down)
        return web.json_response(
            {"status": "unready", "unreachable": down, "backends": report}, status=503
        )
    return web.json_response({"status": "ready", "backends": report})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """Query parameter ``name`` as a whole number from ``low`` to ``high``; a bad one is
    answered 400 with a message naming it (never a 500)."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return default
    value = int(raw) if raw.isdigit() else None
    if value is None or not low <= value <= high:
        raise web.HTTPBadRequest(
            text=f"{name} must be a whole number from {low} to {high}, not {raw[:40]!r}\n"
        )
    return value


async def alertmanager_webhook(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        payload: Any = await request.json()
        alerts = payload["alerts"]
        if not isinstance(alerts, list):
            raise TypeError("alerts is not a list")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        log.warning("alertmanager.bad_payload", error=str(exc))
        return web.json_response(
            {"error": f"not an Alertmanager webhook payload: {exc}"}, status=400
        )
    for alert in alerts[:100]:
        labels = alert.get("labels", {}) if isinstance(alert, dict) else {}
        await services.audit.append(
            AuditEvent.REQUEST,
            actor="alertmanager",
            channel="webhook",
            detail=f"{alert.get('status', '?')} {labels.get('alertname', '?')} "
            + " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname"),
        )
    return web.json_response({"received": len(alerts)})


def make_app(services: Services, slack: Any = None) -> web.Application:
    """The HTTP app; ``slack`` (a SlackAdapter in Events-API mode) mounts ``/slack/events``."""
    app = web.Application(client_max_size=1024 * 1024)
    app[SERVICES] = services
    if slack is not None:
        app.router.add_post("/slack/events", slack.http_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    mount_console(app, services)  # /audit: the audit console (off unless configured)
    app.router.add_post("/alertmanager", alertmanager_webhook)
    return app


async def serve(services: Services) -> None:
    """Run the configured chat adapters and the HTTP server until cancelled (Ctrl-C).

    The adapters are those ``OPSBOT_ADAPTERS`` names (:mod:`opsbot.adapters.base`); one whose
    tokens are missing is off, and the log says why. Expired approvals are swept every 30 s
    and announced in their threads, through the adapter that owns each.
    """
    from opsbot.adapters.base import Adapters, build_adapters
    from opsbot.engine import Engine

    settings = services.settings
    engine = Engine(services)
    check = getattr(engine.planner, "check", None)
    if check is not None and (problem := await check()):
        log.warning(
            "llm.unavailable_at_start", problem=problem, effect="the offline router answers"
        )
    adapters = Adapters(build_adapters(engine, settings))
    tasks: list[asyncio.Task[Any]] = []
    await adapters.start()
    if not adapters:
        log.warning(
            "adapter.none_configured",
            effect="no chat adapter runs: only the HTTP endpoints answer",
            fix="set SLACK_BOT_TOKEN with SLACK_APP_TOKEN or SLACK_SIGNING_SECRET, or DISCORD_TOKEN",
        )

    async def sweeper() -> None:
        while True:
            await asyncio.sleep(30)
            try:
                await engine.sweep_expired(adapters.post)
            except Exception:
                log.exception("approvals.sweep_failed")

    tasks.append(asyncio.create_task(sweeper(), name="sweeper"))
    app = make_app(services)
    routes = adapters.routes()
    for method, path, handler in routes:  # e.g. Slack's /slack/events (Events API)
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    log.info(
        "http.listening",
        host=settings.http_host,
        port=settings.http_port,
        adapters=[a.name for a in adapters],
        adapter_routes=[path for _, path, _ in routes],
    )
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await adapters.stop()
        await runner.cleanup()
