"""``opsbot serve``'s HTTP server (aiohttp): ``/healthz``, ``/readyz``, ``/metrics``,
``/audit`` (a read-only console of the audit log) and ``/alertmanager`` (webhook receiver,
Alertmanager's webhook JSON v4: each alert group an incident with its own thread, see
:mod:`opsbot.incidents`). Slack's ``/slack/events`` is mounted by the Slack adapter.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
from typing import Any, cast

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from opsbot.adapters.console import mount as mount_console
from opsbot.config import Settings
from opsbot.incidents import BadPayload, Chat, Desk, parse_webhook
from opsbot.services import Services
from opsbot.telemetry import REGISTRY

log = structlog.get_logger(__name__)
SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
DESK: web.AppKey[Desk] = web.AppKey("desk", Desk)
MAX_WEBHOOK_BYTES = 1024 * 1024  # bodies /alertmanager (and /slack/events) read at most


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


def refused_auth(header: str, settings: Settings) -> str | None:
    """Why ``Authorization: header`` does not open ``/alertmanager`` (None: it does). With
    ``OPSBOT_ALERTMANAGER_TOKEN`` a bearer token is wanted, with
    ``OPSBOT_ALERTMANAGER_USERNAME``/``_PASSWORD`` basic auth (either, when both are set), as
    Alertmanager's ``http_config`` sends them; with neither, the webhook is open."""
    token, user = settings.alertmanager_token, settings.alertmanager_username
    if not token and not user:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and token:
        if hmac.compare_digest(credentials.encode(), token.encode()):
            return None
    elif scheme.lower() == "basic" and user:
        try:
            given = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            given = ""
        wanted = f"{user}:{settings.alertmanager_password or ''}"
        if hmac.compare_digest(given.encode(), wanted.encode()):
            return None
    return "wrong credentials" if header.strip() else "no credentials"


def _bad_request(reason: str, request: web.Request, **extra: Any) -> web.Response:
    log.warning("alertmanager.bad_payload", reason=reason, remote=request.remote, **extra)
    return web.json_response(
        {"error": f"not an Alertmanager webhook payload opsbot can read: {reason}", **extra},
        status=400,
    )


async def alertmanager_webhook(request: web.Request) -> web.Response:
    """``POST /alertmanager``: one notification of an alert group (webhook payload version
    4) -> its incident and thread (:class:`~opsbot.incidents.Desk`). 401 without the
    configured credentials; 400 with a log line for a body that is not JSON, not version 4 or
    larger than :data:`MAX_WEBHOOK_BYTES`, and for alerts that are malformed (the valid ones of
    the batch are kept); 200 once the incident is recorded (and its first message posted);
    503 when the chat platform refused the first message (recorded; Alertmanager sends again)."""
    services, desk = request.app[SERVICES], request.app[DESK]
    refused = refused_auth(request.headers.get("Authorization", ""), services.settings)
    if refused is not None:
        log.warning("alertmanager.unauthorized", reason=refused, remote=request.remote)
        return web.json_response(
            {"error": f"{refused}: /alertmanager wants the configured bearer token or basic auth"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="opsbot", Basic realm="opsbot"'},
        )
    if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
        return _bad_request(
            f"the body is {request.content_length} bytes, more than {MAX_WEBHOOK_BYTES}", request
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _bad_request(f"the body is more than {MAX_WEBHOOK_BYTES} bytes", request)
    try:
        hook = parse_webhook(json.loads(body))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and BadPayload
        reason = str(exc) if isinstance(exc, BadPayload) else f"not JSON ({exc})"
        return _bad_request(reason[:500], request)
    received = await desk.receive(hook)
    incident = received.incident
    answer: dict[str, Any] = {
        "incident": incident.id,
        "status": incident.status,
        "thread": incident.thread,
        "opened": received.opened,
        "alerts": len(hook.alerts),
    }
    if received.problem:
        answer["problem"] = received.problem
    if hook.truncated:
        log.warning("alertmanager.truncated", incident=incident.id, left_out=hook.truncated)
    if received.retry:  # the chat platform failed: Alertmanager retries a 5xx at once
        log.warning("alertmanager.retry_asked", incident=incident.id, problem=received.problem)
        return web.json_response(answer, status=503)
    if hook.rejected:
        return _bad_request(
            f"{len(hook.rejected)} malformed alert(s) left out; the {len(hook.alerts)} valid "
            "one(s) were kept",
            request,
            rejected=hook.rejected[:20],
            **answer,
        )
    return web.json_response(answer)


def make_app(services: Services, slack: Any = None, desk: Desk | None = None) -> web.Application:
    """The HTTP app; ``slack`` (a SlackAdapter in Events-API mode) mounts ``/slack/events``;
    ``desk`` opens the incident threads of ``/alertmanager`` (without one, incidents are only
    recorded)."""
    app = web.Application(client_max_size=MAX_WEBHOOK_BYTES)
    app[SERVICES] = services
    app[DESK] = desk or Desk(services)
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
    await adapters.start()  # one that cannot start is logged and left out
    # the adapters incident threads open in, by platform
    chats = {a.name: cast(Chat, a) for a in adapters if hasattr(a, "open_thread")}
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
    desk = Desk(services, engine, chats)
    if refused_auth("", settings) is None:
        log.warning(
            "alertmanager.webhook_open",
            effect="/alertmanager accepts posts without credentials",
            fix="set OPSBOT_ALERTMANAGER_TOKEN (or _USERNAME and _PASSWORD) and the same in "
            "Alertmanager's webhook_configs http_config",
        )
    app = make_app(services, desk=desk)
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
        await desk.close()
        await runner.cleanup()
