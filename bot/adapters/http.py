"""``opsbot serve``'s HTTP server (aiohttp): ``/healthz``, ``/readyz``, ``/metrics``,
``/audit`` (a read-only console of the audit log) and ``/alertmanager`` (webhook receiver,
Alertmanager's webhook JSON v4: each alert group an incident with its own thread, see
:mod:`opsbot.incidents`). Slack's ``/slack/events`` is mounted by the Slack adapter.

Its life as a replica among others (:func:`run`):

- start: a database that does not answer is waited for (``/healthz`` 200, ``/readyz`` 503,
  one log line naming ``OPSBOT_DATABASE_URL`` without its password, retries with backoff up
  to 30 s); a setting that cannot be used refuses to start and names it;
- singleton work runs on the elected leader only (:mod:`opsbot.leader`): the gateways of
  adapters that hold one (Discord), the approval sweeps (expiry; executing -> unknown), the
  rollout follow-ups (kept in the database, resumed by a new leader) and the inventory;
- SIGTERM (or SIGINT): the listener closes and ``/readyz`` would answer 503, the leadership
  is given up at once (the Lease released: another replica takes the singleton work over),
  chat connections stop taking events (Slack's Socket Mode; the Discord gateway is the
  leader's), and the work in flight (HTTP requests being answered, clicks, approved actions,
  triage) is given ``OPSBOT_SHUTDOWN_GRACE`` seconds to finish. Pending approvals are left as
  they are: any replica decides them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gc
import hmac
import json
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select, text

from opsbot.adapters.console import CONSOLE, SINGLETONS, Console
from opsbot.adapters.console import mount as mount_console
from opsbot.approvals import State
from opsbot.config import Settings
from opsbot.errors import DatabaseError
from opsbot.incidents import BadPayload, Chat, Desk, parse_webhook
from opsbot.leader import Leadership, elector_for
from opsbot.services import Services, build_services
from opsbot.store import ApprovalRow, database_url, now, shown_url
from opsbot.telemetry import APPROVALS_OLDEST_PENDING, AUDIT_CHAIN_INTACT, REGISTRY

log = structlog.get_logger(__name__)
MAX_WEBHOOK_BYTES = 1024 * 1024  # bodies /alertmanager (and /slack/events) read at most
SWEEP_EVERY = 30.0  # seconds between the leader's approval sweeps (at most)
DATABASE_BACKOFF = (1.0, 30.0)  # first and longest wait between tries to reach the database
METRICS_QUERY_TIMEOUT = 2.0  # seconds /metrics waits for the database's gauges


@dataclass
class Life:
    """Where this process is in its life, for ``/healthz`` and ``/readyz``."""

    stopping: bool = False
    leadership: Leadership | None = None


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
DESK: web.AppKey[Desk] = web.AppKey("desk", Desk)
LIFE: web.AppKey[Life] = web.AppKey("life", Life)


async def healthz(request: web.Request) -> web.Response:
    """Alive; and, with several replicas, who this one is in the election and if it leads."""
    body: dict[str, Any] = {"status": "ok"}
    life = request.app.get(LIFE)
    if life is not None and life.leadership is not None:
        body.update(life.leadership.status())
    return web.json_response(body)


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and every *configured* backend is reachable; the body
    says which backend is not (name, reason), as ``opsbot skills`` does. Not ready once
    shutting down (SIGTERM), so no new work is routed here."""
    life = request.app.get(LIFE)
    if life is not None and life.stopping:
        return web.json_response({"status": "stopping"}, status=503)
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
    """The Prometheus exposition; the gauges read from the database are read now (the
    oldest pending approval: one indexed query per scrape, on every replica)."""
    await _read_oldest_pending(request.app[SERVICES])
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _read_oldest_pending(services: Services) -> None:
    """Set ``opsbot_approvals_oldest_pending_seconds``: the age of the oldest pending
    approval, 0 when none. A database that does not answer in time leaves the last value."""
    try:
        async with asyncio.timeout(METRICS_QUERY_TIMEOUT), services.store.sessions() as session:
            oldest = await session.scalar(
                select(func.min(ApprovalRow.created_at)).where(
                    ApprovalRow.state == State.PENDING.value
                )
            )
    except Exception as exc:
        log.debug("metrics.oldest_pending_unread", error=str(exc)[:200])
        return
    age = (now() - oldest).total_seconds() if oldest is not None else 0.0
    APPROVALS_OLDEST_PENDING.set(max(age, 0.0))


def _chain_intact(console: Console) -> float | None:
    """``opsbot_audit_chain_intact`` from the console's chain watcher (None: no walk yet)."""
    ok = console.watcher.watch.ok
    return None if ok is None else float(ok)


def verify_while_leading(console: Console, leadership: Leadership) -> None:
    """With the console off, the chain is walked by the leader alone (its singleton work
    ``audit-verify``), and ``opsbot_audit_chain_intact`` is exported only while this replica
    leads and from a walk of this term: a replica that stopped leading stops walking, and its
    last value would stay on its ``/metrics`` for as long as it runs (a stale 1, or 0, beside
    the leader's, on a dashboard that sums replicas). The series is absent instead, as it is
    before a first walk (the chart's ``min(...) == 0`` sees the leader's alone)."""
    watch = console.watcher.watch
    term: dict[str, Any] = {"leading": False, "stale": None}

    async def verify() -> None:
        term.update(leading=True, stale=watch.latest)  # the last term's walk says nothing now
        try:
            await console.watcher.run()
        finally:
            term["leading"] = False

    def intact() -> float | None:
        if not term["leading"] or watch.latest is term["stale"]:
            return None
        return _chain_intact(console)

    AUDIT_CHAIN_INTACT.read = intact
    leadership.add("audit-verify", verify)


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
    console = mount_console(app, services)  # /audit: the audit console (off unless configured)
    AUDIT_CHAIN_INTACT.read = partial(_chain_intact, console)  # opsbot_audit_chain_intact
    app.router.add_post("/alertmanager", alertmanager_webhook)
    return app


async def serve(services: Services, stop: asyncio.Event | None = None) -> None:
    """Run the configured chat adapters and the HTTP server until ``stop`` is set (SIGTERM,
    in :func:`run`) or the task is cancelled; then shut down gracefully (module docstring).

    The adapters are those ``OPSBOT_ADAPTERS`` names (:mod:`opsbot.adapters.base`); one whose
    tokens are missing is off, and the log says why. The leader (``OPSBOT_LEADER_ELECTION``)
    sweeps expired approvals (and actions whose replica stopped) at most every 30 s and
    announces them in their threads, through the adapter that owns each, runs the follow-ups
    of writes, refreshes the inventory and holds the gateway of an adapter that has one.
    """
    from opsbot.adapters.base import Adapters, build_adapters
    from opsbot.engine import Engine
    from opsbot.followups import FollowUps

    settings = services.settings
    engine = Engine(services)
    check = getattr(engine.planner, "check", None)
    if check is not None and (problem := await check()):
        log.warning(
            "llm.unavailable_at_start", problem=problem, effect="the offline router answers"
        )
    elector = elector_for(settings, services.store)  # ConfigError: it cannot work here
    leadership = Leadership(
        elector,
        renew_deadline=settings.lease_renew_deadline,
        retry_period=settings.lease_retry_period,
    )
    engine.identity = elector.identity
    engine.follow_ups = FollowUps(services.store)
    services.inventory.shared = services.store
    services.inventory.warm()  # the first requests ground on it without waiting
    adapters = Adapters(build_adapters(engine, settings))
    for adapter in adapters:
        if hasattr(adapter, "lead"):  # its gateway connects on the leader only
            adapter.leader_only = True  # type: ignore[attr-defined]
    await adapters.start()  # one that cannot start is logged and left out
    # the adapters incident threads open in, by platform
    chats = {a.name: cast(Chat, a) for a in adapters if hasattr(a, "open_thread")}
    if not adapters:
        log.warning(
            "adapter.none_configured",
            effect="no chat adapter runs: only the HTTP endpoints answer",
            fix="set SLACK_BOT_TOKEN with SLACK_APP_TOKEN or SLACK_SIGNING_SECRET, or DISCORD_TOKEN",
        )

    async def sweeps() -> None:
        every = max(1.0, min(SWEEP_EVERY, settings.execution_unknown_after / 3))
        while True:
            await asyncio.sleep(every)
            try:
                await engine.sweep_expired(adapters.post)
                await engine.sweep_stale(adapters.post)
            except Exception:
                log.exception("approvals.sweep_failed")

    async def follow_ups() -> None:
        await engine.run_follow_ups(adapters.post, stale_after=settings.lease_duration)

    leadership.add("approval-sweeps", sweeps)
    leadership.add("follow-ups", follow_ups)
    leadership.add("inventory", services.inventory.refresher)
    for adapter in adapters:
        if hasattr(adapter, "lead"):
            leadership.add(f"{adapter.name}-gateway", adapter.lead)
    desk = Desk(services, engine, chats)
    if refused_auth("", settings) is None:
        log.warning(
            "alertmanager.webhook_open",
            effect="/alertmanager accepts posts without credentials",
            fix="set OPSBOT_ALERTMANAGER_TOKEN (or _USERNAME and _PASSWORD) and the same in "
            "Alertmanager's webhook_configs http_config",
        )
    life = Life(leadership=leadership)
    app = make_app(services, desk=desk)
    app[LIFE] = life
    app[SINGLETONS] = leadership.add  # the audit console's retention: on the leader only
    console = app[CONSOLE]
    if not console.access.enabled:  # the chain is verified anyway, for opsbot_audit_chain_intact
        verify_while_leading(console, leadership)
    console.anchor_post = _anchor_poster(settings, adapters, leadership)
    routes = adapters.routes()
    for method, path, handler in routes:  # e.g. Slack's /slack/events (Events API)
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_grace)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    gc.freeze()  # what start-up loaded stays: the collector never walks it again
    election = asyncio.create_task(leadership.run(), name="leader-election")
    log.info(
        "http.listening",
        host=settings.http_host,
        port=settings.http_port,
        adapters=[a.name for a in adapters],
        adapter_routes=[path for _, path, _ in routes],
        identity=elector.identity,
        elector=elector.kind,
        arbiter=elector.where(),
    )
    try:
        if stop is None:
            await asyncio.Future()  # until cancelled
        else:
            waiting = asyncio.create_task(stop.wait())
            await asyncio.wait({waiting, election}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if election.done() and not election.cancelled() and election.exception():
                raise election.exception()  # type: ignore[misc]
    finally:
        await _shut_down(
            life, election, adapters, (runner, site), engine, desk, settings.shutdown_grace
        )


def _anchor_poster(
    settings: Settings, adapters: Any, leadership: Leadership
) -> Callable[[str], Awaitable[None]] | None:
    """``OPSBOT_AUDIT_ANCHOR_CHANNEL``: each new anchor is posted there by the leader (every
    replica writes its anchors to its file; one says so in chat), through the adapter of that
    channel's platform. None when unset, or when it cannot be posted (logged)."""
    where = settings.audit_anchor_channel
    if not where:
        return None
    if settings.audit_anchor_path is None:
        log.warning(
            "audit.anchor_channel_unused",
            setting="OPSBOT_AUDIT_ANCHOR_CHANNEL",
            fix="set OPSBOT_AUDIT_ANCHOR_PATH: anchors are written there, then posted",
        )
        return None
    post = adapters.channel_poster(where)
    if post is None:
        return None

    async def leader_posts(text: str) -> None:
        if leadership.leading:
            await post(text)

    return leader_posts


async def _shut_down(
    life: Life,
    election: asyncio.Task[None],
    adapters: Any,
    server: tuple[web.AppRunner, web.TCPSite],
    engine: Any,
    desk: Desk,
    grace: float,
) -> None:
    """Stop taking work, give the leadership up, let the work in flight finish within
    ``grace`` seconds, then close everything. Pending approvals are not touched."""
    started = time.monotonic()
    life.stopping = True  # /readyz: 503
    runner, site = server
    await site.stop()  # no new connections (a load balancer sends them to another replica)
    log.info("serve.stopping", in_flight=engine.inflight.count, grace=grace)
    election.cancel()
    await asyncio.gather(election, return_exceptions=True)
    if life.leadership is not None:  # its work stops (the gateway closes); the Lease is released
        await life.leadership.stop()
    for adapter in adapters:  # chat connections stop taking events (Slack's Socket Mode)
        quiesce = getattr(adapter, "quiesce", None)
        if quiesce is not None:
            with contextlib.suppress(Exception):
                await quiesce()
    # requests being answered get the grace period, then the app's own cleanup runs
    await runner.cleanup()
    left = max(0.0, grace - (time.monotonic() - started))
    finished = await engine.inflight.drain(left)
    if not finished:
        log.warning(
            "serve.grace_exceeded",
            abandoned=engine.inflight.count,
            effect="an approved action cut off here stays executing, then unknown",
        )
    await desk.close()
    await adapters.stop()
    log.info("serve.stopped", drained=finished, took=round(time.monotonic() - started, 2))


async def run(settings: Settings) -> None:
    """``opsbot serve``: wait for the database (not ready meanwhile), then :func:`serve`
    until SIGTERM or SIGINT, and shut down gracefully."""
    database_url(settings.database_url)  # a URL that cannot work refuses to start
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    services = await _wait_for_database(settings, stop)
    if services is None:
        return
    try:
        await serve(services, stop)
    finally:
        await services.close()


async def _wait_for_database(settings: Settings, stop: asyncio.Event) -> Services | None:
    """The services, once the database answers. Meanwhile ``/healthz`` answers 200 and
    ``/readyz`` 503, and the tries back off from 1 s to 30 s; the first failure is one log
    line (the setting, the URL without its password, why), the recovery another. None when
    ``stop`` is set first."""
    try:
        return await build_services(settings)
    except DatabaseError as exc:
        problem = exc
    log.error(
        "database.unreachable",
        setting="OPSBOT_DATABASE_URL",
        url=shown_url(settings.database_url),
        error=problem.message,
        hint=problem.hint,
        effect="not ready (/readyz 503) until it answers; retrying with backoff up to "
        f"{DATABASE_BACKOFF[1]:g}s",
    )
    waiting = _waiting_app(problem.message)
    runner = web.AppRunner(waiting)
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    started, tries, delay = time.monotonic(), 1, DATABASE_BACKOFF[0]
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * random.uniform(0.8, 1.2))
            if stop.is_set():
                return None
            tries += 1
            try:
                services = await build_services(settings)
            except DatabaseError as exc:
                waiting[PROBLEM]["database"] = exc.message
                log.debug("database.still_unreachable", tries=tries, error=exc.message)
                delay = min(delay * 2, DATABASE_BACKOFF[1])
                continue
            log.info(
                "database.reachable",
                tries=tries,
                waited=round(time.monotonic() - started, 1),
                url=shown_url(settings.database_url),
            )
            return services
        return None
    finally:
        await runner.cleanup()


PROBLEM: web.AppKey[dict[str, str]] = web.AppKey("problem", dict)


def _waiting_app(problem: str) -> web.Application:
    """What answers while the database does not: alive, not ready (and why)."""
    app = web.Application()
    app[PROBLEM] = {"database": problem}

    async def unready(request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "unready", "database": request.app[PROBLEM]["database"][:300]}, status=503
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", unready)
    return app
