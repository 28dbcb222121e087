"""The audit console: ``/audit`` on ``opsbot serve`` (server-rendered Jinja2, a little htmx).

**Off unless configured**: with neither ``OPSBOT_CONSOLE_TOKEN`` nor
``OPSBOT_CONSOLE_TRUSTED_PROXIES`` every ``/audit`` path answers 404 and shows nothing.

**Who**: an authenticating proxy's ``X-Forwarded-User`` / ``X-Forwarded-Groups``
(oauth2-proxy's names), believed only from an address of ``OPSBOT_CONSOLE_TRUSTED_PROXIES``
(from anywhere else they are ignored and logged); or the bearer token
(``Authorization: Bearer``, or once through the login form, which sets a signed, HttpOnly,
SameSite=Strict session cookie; the token never travels in a URL). A proxy user is the policy
subject ``web:<user>`` with the roles ``web-group:<group>``; the token holder is
``OPSBOT_CONSOLE_TOKEN_SUBJECT``. Only a subject the policy allows ``audit.search`` sees
anything; the anonymous get 401 and the others 403. Every page view and export is itself an
audit record (``console.view``, ``console.export``).

**Hardening**: security headers from the ``secure`` package (a strict CSP: scripts and styles
from this origin only, no framing, no referrer, no caching); cross-site requests are refused
by their Fetch Metadata except a top-level link to a page (a link in a chat message); the
forms that change something (sign in, sign out, verify now) carry a CSRF token bound to the
person and are refused from another origin. Only filters go in URLs.

**Chain status** comes from a :class:`ChainWatcher` that verifies off the request path
(hashing in a worker thread, one batch at a time): a full walk at start and every so often,
incremental walks from the last verified record in between, each held against the anchors.
Pages read its latest result, so no view re-verifies and ``/healthz`` never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import secure
import structlog
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from opsbot.anchors import Anchorer, AnchorFile, Post
from opsbot.audit import AuditEvent, ChainStatus
from opsbot.durations import format_duration
from opsbot.model import Actor
from opsbot.review import (
    OUTCOMES,
    FilterError,
    Filters,
    Review,
    csv_header,
    csv_row,
    jsonl_row,
)
from opsbot.services import Services

log = structlog.get_logger(__name__)

WEB = Path(__file__).resolve().parent.parent / "web"
PREFIX = "/audit"
COOKIE = "opsbot_console"
SKILL = "audit.search"  # the policy permission the console needs
CHANNEL = "console"
EXPORT_LIMIT = 1_000_000
FULL_EVERY = 60  # incremental checks between full walks

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONSOLE: web.AppKey[Console] = web.AppKey("console")
#: where the app's singleton work goes (``opsbot serve``: run by the leader of the replicas,
#: :meth:`opsbot.leader.Leadership.add`); unset: this process runs it
SINGLETONS: web.AppKey[Callable[[str, Callable[[], Awaitable[None]]], None]] = web.AppKey(
    "singletons"
)

HEADERS = secure.Secure(
    csp=secure.ContentSecurityPolicy()
    .default_src("'none'")
    .script_src("'self'")
    .style_src("'self'")
    .img_src("'self'", "data:")
    .connect_src("'self'")
    .form_action("'self'")
    .frame_ancestors("'none'")
    .base_uri("'none'"),
    hsts=secure.StrictTransportSecurity().max_age(31536000),
    xfo=secure.XFrameOptions().deny(),
    referrer=secure.ReferrerPolicy().no_referrer(),
    cache=secure.CacheControl().no_store(),
    coop=secure.CrossOriginOpenerPolicy().same_origin(),
    corp=secure.CrossOriginResourcePolicy().same_origin(),
    permissions=secure.PermissionsPolicy().geolocation().camera().microphone(),
    xcto=secure.XContentTypeOptions(),
)


# -- who is asking ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """An authenticated person and the policy subject they are."""

    actor: Actor
    via: str  # proxy | token | session
    groups: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        return self.actor.id


def networks(spec: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``OPSBOT_CONSOLE_TRUSTED_PROXIES`` parsed; raises ValueError naming a bad entry."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"OPSBOT_CONSOLE_TRUSTED_PROXIES: {part!r} is not an address or a network "
                "(e.g. 127.0.0.1, 10.0.0.0/8)"
            ) from None
    return out


class Access:
    """Authentication (proxy headers, token, session cookie), CSRF tokens, permission."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        self.token = settings.console_token or ""
        self.token_subject = settings.console_token_subject
        self.proxies = networks(settings.console_trusted_proxies)
        self.session_seconds = settings.console_session_hours * 3600
        seed = f"opsbot-console|{self.token}|{settings.database_url}|{settings.audit_anchor_key}"
        self.key = hashlib.sha256(seed.encode()).digest()

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.proxies)

    def trusted(self, request: web.Request) -> bool:
        remote = request.remote or ""
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return False
        return any(address in net for net in self.proxies)

    def viewer(self, request: web.Request) -> Viewer | None:
        user = request.headers.get("X-Forwarded-User", "").strip()
        if user:
            if self.trusted(request):
                groups = tuple(
                    g.strip()
                    for g in request.headers.get("X-Forwarded-Groups", "").split(",")
                    if g.strip()
                )
                actor = Actor(
                    id=f"web:{user}",
                    display_name=user,
                    roles=tuple(f"web-group:{g}" for g in groups),
                )
                return Viewer(actor, "proxy", groups)
            log.warning(
                "console.untrusted_proxy_header",
                remote=request.remote,
                user=user[:100],
                effect="ignored: not from OPSBOT_CONSOLE_TRUSTED_PROXIES",
            )
        auth = request.headers.get("Authorization", "")
        if self.token and auth.lower().startswith("bearer "):
            if hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
                return Viewer(Actor(id=self.token_subject), "token")
            return None
        cookie = request.cookies.get(COOKIE, "")
        if self.token and cookie:
            subject = self.session_subject(cookie)
            if subject:
                return Viewer(Actor(id=subject), "session")
        return None

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def session_cookie(self, subject: str) -> str:
        body = f"{subject}|{int(time.time()) + self.session_seconds}"
        return f"{body}|{self._sign(body)}"

    def session_subject(self, cookie: str) -> str | None:
        body, _, sig = cookie.rpartition("|")
        subject, _, expiry = body.rpartition("|")
        if not (sig and expiry.isdigit()) or not hmac.compare_digest(sig, self._sign(body)):
            return None
        return subject if int(expiry) > time.time() else None

    def csrf(self, viewer: Viewer | None) -> str:
        return self._sign(f"csrf|{viewer.subject if viewer else 'anonymous'}")

    def check_csrf(self, viewer: Viewer | None, sent: str) -> bool:
        return bool(sent) and hmac.compare_digest(sent, self.csrf(viewer))

    def allowed(self, viewer: Viewer) -> bool:
        return self.services.policy.permitted(viewer.actor, SKILL, channel=CHANNEL)


def cross_site(request: web.Request) -> bool:
    """A request another site made the browser send (Fetch Metadata), other than a plain
    link to a page; or a form post whose Origin is not this one."""
    site = request.headers.get("Sec-Fetch-Site", "")
    if site == "cross-site":
        navigate = (
            request.method == "GET"
            and request.headers.get("Sec-Fetch-Mode") == "navigate"
            and request.headers.get("Sec-Fetch-Dest", "document") == "document"
            and "/export" not in request.path
        )
        if not navigate:
            return True
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            forwarded = request.headers.get("X-Forwarded-Host")
            if not forwarded or origin.split("://", 1)[-1] != forwarded:
                return True
    return False


# -- chain status off the request path ----------------------------------------------------------


@dataclass
class ChainWatch:
    full: ChainStatus | None = None  # the last full walk
    latest: ChainStatus | None = None  # the last walk of any kind
    anchor_problems: list[str] = field(default_factory=list)
    anchors: int = 0
    latest_anchor: Any = None
    running: bool = False
    error: str = ""

    @property
    def problems(self) -> list[Any]:
        seen: dict[tuple[int, str], Any] = {}
        for status in (self.full, self.latest):
            for p in status.problems if status else []:
                seen.setdefault((p.seq, p.message), p)
        return sorted(seen.values(), key=lambda p: p.seq)

    @property
    def ok(self) -> bool | None:
        if self.full is None and self.latest is None:
            return None
        return not self.problems and not self.anchor_problems

    @property
    def broken(self) -> set[int]:
        return {p.seq for p in self.problems}

    @property
    def first_broken(self) -> int | None:
        return min(self.broken, default=None)


class ChainWatcher:
    """Verifies the chain in the background: a full walk at start and every
    ``FULL_EVERY`` intervals, an incremental one from the last verified head in between."""

    def __init__(self, services: Services, anchors: AnchorFile | None, interval: float) -> None:
        self.services = services
        self.anchors = anchors
        self.interval = interval
        self.watch = ChainWatch()
        self._wake = asyncio.Event()
        self._full_requested = True
        self._lock = asyncio.Lock()

    def request_full(self) -> None:
        self._full_requested = True
        self._wake.set()

    async def check(self, *, full: bool) -> ChainWatch:
        async with self._lock:
            watch = self.watch
            watch.running = True
            try:
                points = []
                if self.anchors is not None:
                    read = await asyncio.to_thread(self.anchors.read)
                    watch.anchor_problems = read.problems
                    watch.anchors = len(read.anchors)
                    watch.latest_anchor = max(read.anchors, key=lambda a: a.seq, default=None)
                    points = [a.point(str(self.anchors.path)) for a in read.anchors]
                start = None
                base = watch.latest if not full else None
                if base is not None and base.head_seq > 0:
                    start = (base.head_seq, base.head_hash)
                status = await self.services.audit.verify_chain(start=start, anchors=points)
                if start is not None:  # keep where the chain was vouched for from
                    status.base = base.base if base is not None else status.base
                    status.first_seq = base.first_seq if base is not None else status.first_seq
                if full:
                    watch.full = status
                    watch.latest = status
                elif status.problems or watch.latest is None:
                    watch.latest = status
                else:  # an intact increment extends the last walk
                    assert watch.latest is not None
                    watch.latest = ChainStatus(
                        ok=watch.latest.ok,
                        checked=watch.latest.checked + status.checked,
                        first_seq=watch.latest.first_seq,
                        head_seq=status.head_seq,
                        head_hash=status.head_hash,
                        base=watch.latest.base,
                        problems=list(watch.latest.problems),
                        started=status.started,
                        finished=status.finished,
                    )
                watch.error = ""
                if watch.ok and watch.latest is not None:  # for `audit verify --since-checkpoint`
                    await self.services.audit.keep_verified(watch.latest)
            except Exception as exc:  # a database hiccup: say so on the chain page
                log.exception("console.verify_failed")
                watch.error = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                watch.running = False
            return watch

    async def run(self) -> None:
        rounds = 0
        while True:
            # cleared before the walk, not after it: a full walk asked for while one runs
            # (request_full) is the next walk, not one a whole interval later
            self._wake.clear()
            full = self._full_requested or rounds % FULL_EVERY == 0
            self._full_requested = False
            await self.check(full=full)
            rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)


# -- rendering ----------------------------------------------------------------------------------


def _when(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return value.astimezone(UTC).strftime(fmt) if value else ""


def _dur(value: timedelta | None) -> str:
    if value is None:
        return ""
    if value.total_seconds() < 0:
        return "-" + format_duration(-value)
    return format_duration(value) if value.total_seconds() >= 1 else "<1s"


def thread_link(thread: str, settings: Any) -> str:
    """A link to the chat thread a request was answered in (Slack, Discord), or ""."""
    platform, _, rest = thread.partition(":")
    if platform == "slack" and ":" in rest:
        channel, ts = rest.split(":", 1)
        base = settings.console_slack_url.rstrip("/")
        return f"{base}/archives/{channel}/p{ts.replace('.', '')}?" + urlencode(
            {"thread_ts": ts, "cid": channel}
        )
    if platform == "discord" and rest.isdigit() and settings.console_discord_guild:
        return f"https://discord.com/channels/{settings.console_discord_guild}/{rest}"
    return ""  # a Discord thread needs its server's id (OPSBOT_CONSOLE_DISCORD_GUILD)


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(WEB / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["dur"] = _dur
    env.filters["short"] = lambda h, n=12: (h or "")[:n]
    env.globals["prefix"] = PREFIX
    env.globals["outcomes"] = OUTCOMES
    return env


class Console:
    """The console's handlers on one :class:`Services`."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.access = Access(services)
        self.review = Review(services.store)
        self.env = environment()
        path = self.settings.audit_anchor_path
        self.anchor_file = AnchorFile(path, self.settings.audit_anchor_key) if path else None
        self.watcher = ChainWatcher(
            services, self.anchor_file, self.settings.console_verify_interval
        )
        #: where each new anchor is also posted (``opsbot serve``: OPSBOT_AUDIT_ANCHOR_CHANNEL)
        self.anchor_post: Post | None = None
        #: pages are built one at a time (their rows are read on the event loop) and
        #: rendered in one thread: however many people browse, /healthz and the chat
        #: adapters wait at most for one page's slice of work
        self.pages = asyncio.Semaphore(1)
        self.renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-render")

    # -- plumbing ---------------------------------------------------------------------------

    def render(
        self,
        request: web.Request,
        template: str,
        status: int = 200,
        viewer: Viewer | None = None,
        **context: Any,
    ) -> web.Response:
        page = self.env.get_template(template).render(
            viewer=viewer,
            csrf=self.access.csrf(viewer),
            watch=self.watcher.watch,
            path=request.path,
            token_login=bool(self.access.token),
            now=datetime.now(UTC),
            thread_link=lambda t: thread_link(t, self.settings),
            **context,
        )
        return web.Response(text=page, content_type="text/html", status=status)

    async def page(
        self,
        request: web.Request,
        template: str,
        status: int = 200,
        viewer: Viewer | None = None,
        **context: Any,
    ) -> web.Response:
        """:meth:`render` in the console's render thread: a long page (a timeline, a
        request's chain) never holds the event loop, so ``/healthz`` and the chat adapters
        answer meanwhile."""
        render = functools.partial(self.render, request, template, status, viewer, **context)
        return await asyncio.get_running_loop().run_in_executor(self.renderer, render)

    async def record(
        self,
        viewer: Viewer,
        request: web.Request,
        *,
        event: str = AuditEvent.CONSOLE_VIEW,
        outcome: str = "ok",
        args: dict[str, Any] | None = None,
    ) -> None:
        await self.services.audit.append(
            event,
            actor=viewer.subject,
            channel=CHANNEL,
            skill=SKILL,
            args={"path": request.path, "via": viewer.via, **(args or {})},
            outcome=outcome,
            detail=f"{request.method} {request.path}"
            + (f"?{request.query_string}" if request.query_string else ""),
        )

    def guarded(
        self, handler: Callable[[web.Request, Viewer], Awaitable[web.StreamResponse]]
    ) -> Handler:
        """Authentication, permission, CSRF and the view's audit record around ``handler``."""

        async def guard(request: web.Request) -> web.StreamResponse:
            if cross_site(request):
                return self.error(request, 403, "Cross-site request refused.", None)
            viewer = self.access.viewer(request)
            if viewer is None:
                return self.unauthenticated(request)
            if not self.access.allowed(viewer):
                await self.record(viewer, request, outcome="denied")
                return self.error(
                    request,
                    403,
                    f"You are signed in as {viewer.subject}, which the policy does not allow "
                    f"{SKILL}: ask an administrator to add it (or one of your groups) to a rule "
                    f"that allows {SKILL}.",
                    viewer,
                )
            if request.method == "POST":
                form = await request.post()
                if not self.access.check_csrf(viewer, str(form.get("csrf", ""))):
                    return self.error(request, 403, "The form expired: reload the page.", viewer)
            try:
                if request.method == "GET" and "/export" not in request.path:
                    async with self.pages:  # one page at a time holds the loop or a thread
                        return await handler(request, viewer)
                return await handler(request, viewer)
            except FilterError as exc:
                await self.record(viewer, request, outcome="bad-filter")
                return self.error(request, 400, str(exc), viewer)

        return guard

    def error(
        self, request: web.Request, status: int, message: str, viewer: Viewer | None
    ) -> web.Response:
        if "text/html" not in request.headers.get("Accept", "") or request.path.endswith(
            (".csv", ".jsonl")
        ):
            return web.Response(text=message + "\n", status=status)
        return self.render(
            request, "error.html", status=status, viewer=viewer, status_code=status, message=message
        )

    def unauthenticated(self, request: web.Request, problem: str = "") -> web.Response:
        headers = {"WWW-Authenticate": 'Bearer realm="opsbot audit console"'}
        if "text/html" in request.headers.get("Accept", ""):
            response = self.render(
                request, "login.html", status=401, problem=problem, next=request.path_qs
            )
        else:
            response = web.Response(
                text="401: sign in to the audit console (a bearer token, or through the "
                "organisation's sign-in proxy)\n",
                status=401,
            )
        response.headers.update(headers)
        return response

    # -- pages --------------------------------------------------------------------------------

    async def timeline(self, request: web.Request, viewer: Viewer) -> web.StreamResponse:
        filters = Filters.parse(request.query)
        page = await self.review.timeline(filters)
        await self.record(viewer, request, args={"filters": filters.params()})
        return await self.page(
            request,
            "timeline.html",
            viewer=viewer,
            page=page,
            f=filters,
            skills=sorted(s.name for s in self.services.registry),
        )

    async def request_view(self, request: web.Request, viewer: Viewer) -> web.StreamResponse:
        request_id = request.match_info["request_id"]
        view = await self.review.request(request_id) if len(request_id) <= 64 else None
        await self.record(viewer, request, args={"request_id": request_id[:64]})
        if view is None:
            return self.error(
                request, 404, f"No audit records for request {request_id[:64]}.", viewer
            )
        return await self.page(request, "request.html", viewer=viewer, view=view)

    async def record_view(self, request: web.Request, viewer: Viewer) -> web.StreamResponse:
        raw = request.match_info["seq"]
        if not raw.isdigit() or len(raw) > 18:
            raise FilterError(f"a record number is a whole number, not {raw[:20]!r}")
        record = await self.services.audit.get(int(raw))
        await self.record(viewer, request, args={"seq": int(raw)})
        if record is None:
            return self.error(
                request, 404, f"No audit record {raw} (deleted, or not yet written).", viewer
            )
        problems = [p for p in self.watcher.watch.problems if p.seq == record.seq]
        return await self.page(
            request,
            "record.html",
            viewer=viewer,
            record=record,
            computed=record.computed_hash(),
            problems=problems,
        )

    async def approvals(self, request: web.Request, viewer: Viewer) -> web.StreamResponse:
        state = request.query.get("state", "")
        if state not in ("", "pending", "decided", "expired", "executed", "failed", "denied"):
            raise FilterError(
                f"state is pending, decided, expired, executed, failed or denied, not {state[:20]!r}"
            )
        approvals = await self.review.approvals(state=state or None, limit=300)
        await self.record(viewer, request, args={"state": state})
        now = datetime.now(UTC)
        pending = [a for a in approvals if a.state == "pending" and a.expires_at > now]
        overdue = [a for a in approvals if a.state == "pending" and a.expires_at <= now]
        decided = [a for a in approvals if a.state not in ("pending", "expired")]
        expired = [a for a in approvals if a.state == "expired"] + overdue
        times = [a.time_to_decide for a in decided if a.time_to_decide is not None]
        median = sorted(times)[len(times) // 2] if times else None
        return await self.page(
            request,
            "approvals.html",
            viewer=viewer,
            state=state,
            pending=pending,
            decided=decided,
            expired=expired,
            median=median,
        )

    async def incidents(self, request: web.Request, viewer: Viewer) -> web.StreamResponse:
        incidents = await self.review.incidents()
        await self.record(viewer, request)
        return await self.page(request, "incidents.html", viewer=viewer, incidents=incidents)

    async def chain(self, request: web.Request, viewer: Viewer) -> web.StreamResponse:
        await self.record(viewer, request)
        checkpoints = await self.services.audit.retention_checkpoints()
        head = await self.services.audit.head()
        return await self.page(
            request,
            "chain.html",
            viewer=viewer,
            checkpoints=checkpoints,
            head=head,
            anchor_file=self.anchor_file,
        )

    async def verify_now(self, request: web.Request, viewer: Viewer) -> web.StreamResponse:
        """Walk the whole chain now; answer when it is done, or after 10 s with the walk
        still going (the chain page then reloads itself until it is done)."""
        await self.record(viewer, request, outcome="verify")
        walk = asyncio.ensure_future(self.watcher.check(full=True))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(walk), 10)
        raise web.HTTPSeeOther(f"{PREFIX}/chain")

    async def export(self, request: web.Request, viewer: Viewer) -> web.StreamResponse:
        kind = request.match_info["kind"]
        filters = Filters.parse(request.query)
        await self.record(
            viewer,
            request,
            event=AuditEvent.CONSOLE_EXPORT,
            args={"filters": filters.params(), "format": kind},
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8"
                if kind == "csv"
                else "application/x-ndjson",
                "Content-Disposition": f'attachment; filename="opsbot-audit-{stamp}.{kind}"',
            }
        )
        HEADERS.set_headers(response)
        await response.prepare(request)
        if kind == "csv":
            await response.write(csv_header().encode())
        count = 0
        chunk: list[str] = []
        async for record in self.review.export(replace(filters, before=None)):
            chunk.append(csv_row(record) if kind == "csv" else jsonl_row(record))
            count += 1
            if len(chunk) >= 500:
                await response.write("".join(chunk).encode())
                chunk = []
            if count >= EXPORT_LIMIT:
                break
        if chunk:
            await response.write("".join(chunk).encode())
        await response.write_eof()
        return response

    # -- sign in / out --------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.StreamResponse:
        if cross_site(request):
            return self.error(request, 403, "Cross-site request refused.", None)
        if request.method == "GET":
            viewer = self.access.viewer(request)
            if viewer is not None:
                raise web.HTTPSeeOther(PREFIX)
            return self.unauthenticated(request)
        form = await request.post()
        if not self.access.check_csrf(None, str(form.get("csrf", ""))):
            return self.error(request, 403, "The form expired: reload the page.", None)
        sent = str(form.get("token", "")).strip()
        if not self.access.token or not hmac.compare_digest(
            sent.encode(), self.access.token.encode()
        ):
            log.warning("console.login_failed", remote=request.remote)
            await asyncio.sleep(0.5)  # a little friction for guessing
            return self.unauthenticated(request, "That token is not the console token.")
        subject = self.access.token_subject
        viewer = Viewer(Actor(id=subject), "token")
        await self.record(viewer, request, outcome="signed-in")
        response = web.HTTPSeeOther(_local(str(form.get("next", ""))) or PREFIX)
        response.set_cookie(
            COOKIE,
            self.access.session_cookie(subject),
            max_age=self.access.session_seconds,
            path=PREFIX,
            httponly=True,
            secure=request.secure or request.headers.get("X-Forwarded-Proto") == "https",
            samesite="Strict",
        )
        raise response

    async def logout(self, request: web.Request, viewer: Viewer) -> web.StreamResponse:
        await self.record(viewer, request, outcome="signed-out")
        response = web.HTTPSeeOther(f"{PREFIX}/login")
        response.del_cookie(COOKIE, path=PREFIX)
        raise response

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ("console.css", "htmx.min.js", "favicon.svg"):
            raise web.HTTPNotFound()
        response = web.FileResponse(WEB / "static" / name)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    async def off(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=404,
            text="the audit console is off: set OPSBOT_CONSOLE_TOKEN, or "
            "OPSBOT_CONSOLE_TRUSTED_PROXIES for a sign-in proxy, to turn it on\n",
        )

    # -- background ----------------------------------------------------------------------------

    async def background(self, app: web.Application) -> AsyncIterator[None]:
        if self.access.enabled:
            log.info(
                "audit.console",
                state="on",
                path=PREFIX,
                token=bool(self.access.token),
                trusted_proxies=[str(n) for n in self.access.proxies],
            )
        else:
            log.info(
                "audit.console",
                state="off",
                fix="set OPSBOT_CONSOLE_TOKEN or OPSBOT_CONSOLE_TRUSTED_PROXIES to turn it on",
            )
        tasks: list[asyncio.Task[Any]] = []
        if self.access.enabled:
            tasks.append(asyncio.create_task(self.watcher.run(), name="console-verify"))
        if self.anchor_file is not None:
            anchorer = Anchorer(
                self.services.audit,
                self.anchor_file,
                interval=self.settings.audit_anchor_interval,
                post=self.anchor_post,
            )
            tasks.append(asyncio.create_task(anchorer.run(), name="audit-anchor"))
        if self.settings.audit_retention_days:
            singleton = app.get(SINGLETONS)
            if singleton is not None:  # one replica removes old records: the leader
                singleton("audit-retention", self.retention)
            else:
                tasks.append(asyncio.create_task(self.retention(), name="audit-retention"))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def retention(self) -> None:
        days = self.settings.audit_retention_days or 0
        while True:
            try:
                done = await self.services.audit.retain(
                    before=datetime.now(UTC) - timedelta(days=days),
                    export_dir=self.settings.audit_export_dir,
                )
                if done is not None:
                    log.info(
                        "audit.retention",
                        removed=done.records,
                        through_seq=done.through_seq,
                        export=str(done.export),
                        sha256=done.export_sha256,
                    )
            except Exception:
                log.exception("audit.retention_failed")
            await asyncio.sleep(3600)


def _local(target: str) -> str:
    """``target`` when it is a path of the console (no open redirect), else ""."""
    if target.startswith(PREFIX) and not target.startswith("//") and "\\" not in target:
        return target
    return ""


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every console answer, errors included (other paths untouched)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
            HEADERS.set_headers(exc)
        raise
    if (request.path == PREFIX or request.path.startswith(PREFIX + "/")) and not response.prepared:
        keep = response.headers.get("Cache-Control") if "/static/" in request.path else None
        HEADERS.set_headers(response)
        if keep:
            response.headers["Cache-Control"] = keep
    return response


def mount(app: web.Application, services: Services) -> Console:
    """Add ``/audit`` (the console, or a 404 saying it is off) and the audit log's background
    upkeep (chain checks, anchors, retention, as configured) to ``app``."""
    console = Console(services)
    app[CONSOLE] = console
    app.middlewares.append(_headers)
    app.cleanup_ctx.append(console.background)
    routes = app.router
    if not console.access.enabled:
        routes.add_route("*", PREFIX, console.off)
        routes.add_route("*", PREFIX + "/{tail:.*}", console.off)
        return console
    guard = console.guarded
    routes.add_get(PREFIX, guard(console.timeline))
    routes.add_get(PREFIX + "/", guard(console.timeline))
    routes.add_get(PREFIX + "/requests/{request_id}", guard(console.request_view))
    routes.add_get(PREFIX + "/records/{seq}", guard(console.record_view))
    routes.add_get(PREFIX + "/approvals", guard(console.approvals))
    routes.add_get(PREFIX + "/incidents", guard(console.incidents))
    routes.add_get(PREFIX + "/chain", guard(console.chain))
    routes.add_post(PREFIX + "/chain/verify", guard(console.verify_now))
    routes.add_get(PREFIX + "/export.{kind:csv|jsonl}", guard(console.export))
    routes.add_route("*", PREFIX + "/login", console.login)
    routes.add_post(PREFIX + "/logout", guard(console.logout))
    routes.add_get(PREFIX + "/static/{name}", console.static)
    return console


__all__ = ["CONSOLE", "Access", "ChainWatcher", "Console", "mount"]
