"""opsbot's benchmark: ``make bench`` (``python bench/run.py``) prints one table and writes it to
``bench/RESULTS.md``: the machine, the date, the versions, and for each figure the median and
the spread (lowest..highest) of ``BENCH_RUNS`` runs (5 by default), with its target.

What runs where: the backends are real local servers (Prometheus and Alertmanager; the
emulated Kubernetes API of ``opsbot demo`` only during the scenarios that read it; Loki is
tests/fakes/loki.py), each load scenario is a process of its own (its peak RSS is its own), the
Slack, incident and console figures are measured against a real ``opsbot serve`` process, with
a lean fake Slack Web API in this process (it records when each message arrives). SQLite in a
temporary folder; PostgreSQL on a scratch database of ``OPSBOT_TEST_POSTGRES_URL``
(``scripts/servers.sh postgres``), each run a new one. About two minutes a run on a 2-core
machine (``BENCH_RUNS=1`` for a quick look).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import hmac
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
PY = sys.executable
ALICE = "shell:alice"


# -- the table -------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    unit: str
    target: str = ""
    ok: Callable[[float], bool] | None = None
    digits: int = 1
    values: list[float] = field(default_factory=list)
    #: a latency row's p50s (its values are the p99s): shown as "p50 / p99"
    p50s: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(float(value))

    def cell(self, value: float) -> str:
        return f"{value:,.{self.digits}f}"

    def row(self) -> list[str]:
        if not self.values:
            return [self.name, "not measured", "", self.unit, self.target, ""]
        median = statistics.median(self.values)
        spread = f"{self.cell(min(self.values))}..{self.cell(max(self.values))}"
        if self.p50s:
            shown = f"{self.cell(statistics.median(self.p50s))} / {self.cell(median)}"
            return [self.name, shown, spread + " (p99)", self.unit, self.target, ""]
        verdict = "" if self.ok is None else ("yes" if self.ok(median) else "NO")
        return [self.name, self.cell(median), spread, self.unit, self.target, verdict]


FIGURES: dict[str, Figure] = {}


def figure(
    key: str, name: str, unit: str, target: str = "", ok: Any = None, digits: int = 1
) -> None:
    FIGURES[key] = Figure(name, unit, target, ok, digits)


def record(key: str, value: float) -> None:
    FIGURES[key].add(value)


def table() -> str:
    head = ["figure", "median", "spread (min..max)", "unit", "target", "met"]
    rows = [head, *[f.row() for f in FIGURES.values()]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "| "
            + " | ".join(
                c.ljust(w) if i in (0, 3, 4) else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )
        if n == 0:
            lines.append(
                "|"
                + "|".join(
                    "-" * (w + 2) if i in (0, 3, 4) else "-" * (w + 1) + ":"
                    for i, w in enumerate(widths)
                )
                + "|"
            )
    return "\n".join(lines)


def define() -> None:
    le = lambda x: lambda v: v < x  # noqa: E731
    ge = lambda x: lambda v: v >= x  # noqa: E731
    figure("overhead_p50", "engine overhead per request, p50 (SQLite)", "ms", digits=2)
    figure("overhead_p99", "engine overhead per request, p99 (SQLite)", "ms", "< 5", le(5), 2)
    figure("overhead_pg_p50", "engine overhead per request, p50 (PostgreSQL)", "ms", digits=2)
    figure(
        "overhead_pg_p99", "engine overhead per request, p99 (PostgreSQL)", "ms", "< 5", le(5), 2
    )
    for db in ("SQLite", "PostgreSQL"):
        k = db.lower()[:2]
        figure(f"seq_rps_{k}", f"1,000 sequential requests, {db}", "req/s", digits=0)
        figure(f"seq_p99_{k}", f"  p50 / p99 latency, {db}", "ms", digits=1)
        figure(f"c500_rps_{k}", f"500 concurrent requests, {db}", "req/s", ">= 500", ge(500), 0)
        figure(f"c500_p99_{k}", f"  p50 / p99 latency, {db}", "ms", digits=0)
        figure(f"c2000_rps_{k}", f"2,000 concurrent requests, {db}", "req/s", digits=0)
        figure(f"c2000_p99_{k}", f"  p50 / p99 latency, {db}", "ms", digits=0)
        figure(f"rss_{k}", f"  peak RSS of the 2,000, {db}", "MiB", digits=0)
        figure(f"lost_{k}", f"  requests lost (of 3,500), {db}", "", "0", lambda v: v == 0, 0)
    figure("slack_p50", "Slack event to first reply, p50 (100 events/s)", "ms", digits=0)
    figure("slack_p99", "Slack event to first reply, p99 (100 events/s)", "ms", "< 250", le(250), 0)
    figure("slack_lost", "  events without a reply (of 500)", "", "0", lambda v: v == 0, 0)
    figure("healthz_idle", "/healthz p99, idle", "ms", digits=1)
    figure(
        "healthz_audit",
        "/healthz p99 while /audit renders (4 clients, 10k records)",
        "ms",
        "not blocked (< 50)",
        le(50),
        1,
    )
    figure("audit_pages", "  /audit pages rendered meanwhile", "pages/s", digits=0)
    for db in ("SQLite", "PostgreSQL"):
        k = db.lower()[:2]
        figure(f"append_seq_{k}", f"audit append, sequential, {db}", "records/s", digits=0)
        figure(
            f"append_conc_{k}",
            f"audit append, 10,000 concurrent, {db}",
            "records/s",
            ">= 5,000",
            ge(5000),
            0,
        )
    figure("cold_wall", "cold `opsbot ask --as shell:alice help`, wall", "s", "< 1.0", le(1.0), 2)
    figure(
        "cold_rss", "cold `opsbot ask --as shell:alice help`, peak RSS", "MiB", "< 80", le(80), 1
    )
    figure("router_p50", "offline router per request, p50 (no tracing)", "ms", digits=3)
    figure("router_p99", "offline router per request, p99 (no tracing)", "ms", digits=3)
    figure(
        "llm_calls",
        "LLM single intent (read-only actor): model calls",
        "",
        "1",
        lambda v: v == 1,
        0,
    )
    figure(
        "llm_tokens",
        "LLM single intent (read-only actor): prompt tokens",
        "tokens",
        "< 1,500",
        le(1500),
        0,
    )
    figure(
        "webhook_first",
        "Alertmanager webhook to the incident's first message",
        "ms",
        "< 1,000",
        le(1000),
        0,
    )
    figure(
        "triage_full",
        "  to the full triage in its thread (backends answering)",
        "s",
        "< 10",
        le(10),
        2,
    )
    figure("hung_help", "fault: `help` p99, Prometheus + Alertmanager hung", "ms", digits=1)
    figure("hung_help_more", "  more than with them up", "ms", "not delayed (< 10)", le(10), 1)
    figure("hung_k8s", "fault: `k8s.pods` p99, Prometheus + Alertmanager hung", "ms", digits=1)
    figure("hung_k8s_more", "  more than with them up", "ms", "not delayed (< 10)", le(10), 1)
    figure(
        "hung_first",
        "  a new process's first `k8s.pods` (waits once for the inventory)",
        "s",
        "< 2.5 (timeout 2 s)",
        le(2.5),
        2,
    )
    figure("busy", "fault: full queue, event to 'busy, ask again'", "ms", "< 1,000", le(1000), 0)
    figure(
        "crash_lost",
        "fault: kill -9 mid-burst, acknowledged records lost",
        "",
        "0",
        lambda v: v == 0,
        0,
    )
    figure("crash_acked", "  acknowledged / stored before the kill (records)", "", digits=0)


# -- helpers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def child(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> dict[str, Any]:
    """Run a scenario in a process of its own; its last stdout line is its JSON result."""
    done = subprocess.run(
        [PY, __file__, "--child", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def sqlite_url(tmp: Path, run: int, name: str) -> str:
    """A SQLite database of run ``run``'s, in the bench's folder."""
    return f"sqlite+aiosqlite:///{tmp / f'{name}{run}.db'}"


def clean_env() -> dict[str, str]:
    """The environment without opsbot's and the backends' settings (each scenario sets its own)."""
    drop = ("OPSBOT_", "PROMETHEUS_", "ALERTMANAGER_", "LOKI_", "SLACK_", "DISCORD_", "OPENAI_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop) and k != "KUBECONFIG"}


async def scratch_pg(prefix: str = "opsbot_bench") -> Any:
    from opsbot.store import scratch_database

    return scratch_database(os.environ["OPSBOT_TEST_POSTGRES_URL"], prefix)


# -- children: each a process of its own --------------------------------------------------------


async def _services(url: str, **settings: Any) -> Any:
    from opsbot.config import Settings
    from opsbot.services import build_services

    return await build_services(
        Settings(database_url=url, policy_path=ROOT / "policies", **settings)
    )


async def child_load(url: str, n: str, concurrency: str) -> dict[str, Any]:
    """``n`` `help` requests, one at a time or ``concurrency`` at once, each opening its thread
    (as a Slack mention does): req/s, latency, peak RSS, and requests lost (no result message,
    or not all of their audit records)."""
    from opsbot.audit import AuditEvent
    from opsbot.engine import Engine
    from opsbot.model import Actor, Request, Step

    services = await _services(url)
    engine = Engine(services)
    actor = Actor(id=ALICE)
    answered: set[str] = set()

    def reply_for(thread: str) -> Callable[[Any], Awaitable[None]]:
        async def reply(message: Any) -> None:
            if message.step is Step.RESULT:
                answered.add(thread)

        return reply

    for i in range(20):  # warm: imports, caches, the first connections
        await engine.handle(
            Request(actor=actor, channel="bench", text="help", thread=f"w{i}", new_thread=True),
            reply_for(f"w{i}"),
        )
    count, at_once = int(n), int(concurrency)
    latencies: list[float] = []
    gc.freeze()  # what start-up made stays, as `opsbot serve` does

    async def one(i: int) -> None:
        thread = f"bench:{i}"
        started = time.perf_counter()
        await engine.handle(
            Request(actor=actor, channel="bench", text="help", thread=thread, new_thread=True),
            reply_for(thread),
        )
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    if at_once <= 1:
        for i in range(count):
            await one(i)
    else:
        await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.perf_counter() - started
    records = await services.audit.search(event=AuditEvent.RESULT, limit=10_000_000)
    recorded = {r.thread for r in records if r.thread.startswith("bench:")}
    requested = {
        r.thread
        for r in await services.audit.search(event=AuditEvent.REQUEST, limit=10_000_000)
        if r.thread.startswith("bench:")
    }
    threads = {f"bench:{i}" for i in range(count)}
    lost = len(threads - (answered & recorded & requested))
    chain = await services.audit.verify()
    await services.close()
    return {
        "rps": count / wall,
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "lost": lost,
        "chain_ok": chain.ok,
    }


async def child_overhead(url: str, alertmanager: str, n: str) -> dict[str, Any]:
    """ "show firing alerts" against a real Alertmanager, one at a time: each request's time
    less the time its Alertmanager calls took (measured around them)."""
    from opsbot.engine import Engine
    from opsbot.model import Actor, Request
    from opsbot.skills import alertmanager as am

    spent: list[float] = [0.0]
    original = am.Alertmanager.request

    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    am.Alertmanager.request = timed  # type: ignore[method-assign]
    services = await _services(url, backends={"alertmanager": {"url": alertmanager}})
    engine = Engine(services)
    actor = Actor(id=ALICE)

    async def reply(message: Any) -> None:
        return None

    for i in range(30):
        await engine.handle(
            Request(
                actor=actor,
                channel="bench",
                text="show firing alerts",
                thread=f"w{i}",
                new_thread=True,
            ),
            reply,
        )
    services.inventory.ttl = 1e9  # no refresh in the background while it is measured
    gc.freeze()  # what start-up made stays, as `opsbot serve` does
    overheads: list[float] = []
    backend: list[float] = []
    for i in range(int(n)):
        spent[0] = 0.0
        started = time.perf_counter()
        await engine.handle(
            Request(
                actor=actor,
                channel="bench",
                text="show firing alerts",
                thread=f"o{i}",
                new_thread=True,
            ),
            reply,
        )
        took = time.perf_counter() - started
        overheads.append(took - spent[0])
        backend.append(spent[0])
    await services.close()
    return {
        "p50_ms": pct(overheads, 0.5) * 1000,
        "p99_ms": pct(overheads, 0.99) * 1000,
        "backend_p50_ms": pct(backend, 0.5) * 1000,
    }


async def child_hung(
    url: str, hung: str, prometheus: str, alertmanager: str, kubeconfig: str
) -> dict[str, Any]:
    """`help` and `k8s.pods` (Kubernetes answers) with Prometheus and Alertmanager up, then
    with both accepting connections and never answering: the p99s must not differ."""
    from opsbot.engine import Engine
    from opsbot.model import Actor, Request

    actor = Actor(id=ALICE)
    out: dict[str, Any] = {}

    async def reply(message: Any) -> None:
        return None

    for state, prom, am in (("up", prometheus, alertmanager), ("hung", hung, hung)):
        services = await _services(
            url.replace(".db", f"-{state}.db"),
            backend_timeout=2.0,
            backends={
                "prometheus": {"url": prom},
                "alertmanager": {"url": am},
                "kubernetes": {"kubeconfig": kubeconfig},
            },
        )
        engine = Engine(services)
        for key, text in (("help", "help"), ("k8s", "show pods in shop")):
            times = []
            for i in range(61):
                started = time.perf_counter()
                await engine.handle(
                    Request(
                        actor=actor, channel="b", text=text, thread=f"{key}{i}", new_thread=True
                    ),
                    reply,
                )
                times.append(time.perf_counter() - started)
            out[f"{key}_{state}_first_ms"] = times[0] * 1000  # a new process's first snapshot
            out[f"{key}_{state}_p99_ms"] = pct(times[1:], 0.99) * 1000
        await services.close()
    return out


async def child_append(url: str) -> dict[str, Any]:
    from opsbot.audit import AuditEvent, AuditLog
    from opsbot.store import open_store

    store = await open_store(url)
    audit = AuditLog(store)
    for i in range(50):
        await audit.append(AuditEvent.REQUEST, actor="shell:warm", detail=f"warm {i}")
    started = time.perf_counter()
    for i in range(1000):
        await audit.append(AuditEvent.REQUEST, actor="shell:bench", detail=f"sequential {i}")
    sequential = 1000 / (time.perf_counter() - started)
    started = time.perf_counter()
    await asyncio.gather(
        *(
            audit.append(AuditEvent.REQUEST, actor=f"shell:b{i % 50}", detail=f"concurrent {i}")
            for i in range(10_000)
        )
    )
    concurrent = 10_000 / (time.perf_counter() - started)
    ok = (await audit.verify()).ok
    await store.close()
    return {"sequential": sequential, "concurrent": concurrent, "chain_ok": ok}


async def child_router() -> dict[str, Any]:
    from opsbot.evaluation import load_cases
    from opsbot.intent.offline import OfflineRouter
    from opsbot.model import Actor, Request
    from opsbot.skills.base import load_registry

    cases = [case for path in sorted(ROOT.glob("eval/routing-*.yaml")) for case in load_cases(path)]
    router, catalog, actor = OfflineRouter(), list(load_registry()), Actor(id=ALICE)
    for case in cases:  # warm the caches
        await router.plan(Request(actor=actor, channel="b", text=case.text), catalog)
    gc.freeze()  # what start-up made stays, as `opsbot serve` does
    timings = []
    for _ in range(3):
        for case in cases:
            started = time.perf_counter()
            await router.plan(Request(actor=actor, channel="b", text=case.text), catalog)
            timings.append(time.perf_counter() - started)
    return {"p50_ms": pct(timings, 0.5) * 1000, "p99_ms": pct(timings, 0.99) * 1000}


async def child_llm(url: str, alertmanager: str) -> dict[str, Any]:
    """ "show firing alerts" by a read-only actor, planned by the LLM planner against the
    scripted OpenAI-compatible server of the tests: model calls, and the prompt tokens of
    what was sent (tiktoken, cl100k)."""
    from opsbot.engine import Engine
    from opsbot.intent import tokens
    from opsbot.model import Actor, Request
    from tests.fakes.openai_server import FakeOpenAI, call, reply

    async with FakeOpenAI() as model:
        services = await _services(
            url,
            openai_base_url=model.base_url,
            openai_api_key="bench",
            llm_model="gpt-4o-mini",
            backends={"alertmanager": {"url": alertmanager}},
        )
        engine = Engine(services)
        model.script(reply(None, call("alerts__list", {"state": "firing"})), reply("(unused)"))

        async def nothing(message: Any) -> None:
            return None

        await engine.handle(
            Request(actor=Actor(id="shell:eve"), channel="b", text="show firing alerts"),
            nothing,
        )
        await services.close()
        bodies = model.completions
        return {
            "calls": len(bodies),
            "prompt_tokens": sum(tokens.count_request(b) for b in bodies),
        }


async def child_seed(url: str, n: str) -> dict[str, Any]:
    from opsbot.audit import AuditEvent, AuditLog
    from opsbot.store import open_store

    store = await open_store(url)
    audit = AuditLog(store)
    await asyncio.gather(
        *(
            audit.append(
                AuditEvent.REQUEST,
                actor=f"shell:u{i % 20}",
                thread=f"T{i // 5}",
                request_id=f"r{i // 5}",
                detail=f"seeded request {i}",
            )
            for i in range(int(n))
        )
    )
    await store.close()
    return {"seeded": int(n)}


async def child_crash(url: str) -> dict[str, Any]:
    from opsbot.audit import AuditLog
    from opsbot.store import open_store
    from tests.test_audit_crash import _burst_then_kill, _verify

    await (await open_store(url)).close()
    acked = await asyncio.to_thread(_burst_then_kill, url, 1500)
    store = await open_store(url)
    stored = {r.seq: r.hash for r in await AuditLog(store).search(limit=1_000_000)}
    await store.close()
    verified = await asyncio.to_thread(_verify, url, Path(tempfile.gettempdir()))
    return {
        "acked": len(acked),
        "stored": len(stored),
        "lost": sum(1 for seq, digest in acked.items() if stored.get(seq) != digest),
        "verify_ok": verified.returncode == 0,
    }


CHILDREN: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "load": child_load,
    "overhead": child_overhead,
    "hung": child_hung,
    "append": child_append,
    "router": child_router,
    "llm": child_llm,
    "seed": child_seed,
    "crash": child_crash,
}


# -- a lean Slack Web API, and opsbot serve -------------------------------------------------


SECRET = "bench-signing-secret"
TOKEN = "xoxb-bench"
CHANNEL = "C0BENCH"


class Slack:
    """Answers the Web API calls opsbot serve makes and notes when each message arrives."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, dict[str, Any]]] = []
        self._ts = 1_800_000_000.0
        self._runner: Any = None
        self.url = ""
        #: when the first message of each thread (by its ts) arrived
        self.firsts: dict[str, float] = {}

    async def start(self) -> Slack:
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/api/"
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _api(self, request: Any) -> Any:
        from aiohttp import web

        method = request.match_info["method"]
        if request.content_type == "application/json":
            params = await request.json()
        else:
            params = dict(await request.post())
        headers = {"x-oauth-scopes": "app_mentions:read,chat:write,commands,files:write,im:history"}
        if method == "auth.test":
            return web.json_response(
                {"ok": True, "user_id": "UBOT", "bot_id": "B1"}, headers=headers
            )
        if method == "usergroups.list":
            return web.json_response({"ok": True, "usergroups": []}, headers=headers)
        if method == "chat.postMessage":
            self._ts += 0.000100
            ts = f"{self._ts:.6f}"
            now = time.perf_counter()
            self.posts.append((now, {**params, "ts": ts}))
            self.firsts.setdefault(str(params.get("thread_ts") or ""), now)
            return web.json_response(
                {"ok": True, "channel": params.get("channel"), "ts": ts, "message": {"ts": ts}},
                headers=headers,
            )
        return web.json_response({"ok": True}, headers=headers)

    def first_reply(self, thread_ts: str) -> float | None:
        return self.firsts.get(thread_ts)


def signed(body: str) -> dict[str, str]:
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
    }


def mention(ts: str, text: str, event_id: str) -> str:
    return json.dumps(
        {
            "token": "x",
            "team_id": "T1",
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": {
                "type": "app_mention",
                "user": "UBENCH",
                "text": f"<@UBOT> {text}",
                "ts": ts,
                "channel": CHANNEL,
                "event_ts": ts,
            },
        }
    )


@asynccontextmanager
async def serve(env: dict[str, str], log: Path) -> Any:
    """``opsbot serve`` in a process of its own; yields its base URL once /healthz answers."""
    import httpx

    port = free_port()
    full = {
        **clean_env(),
        "OPSBOT_HTTP_HOST": "127.0.0.1",
        "OPSBOT_HTTP_PORT": str(port),
        "OPSBOT_POLICY_PATH": str(ROOT / "policies"),
        "OPSBOT_LEADER_ELECTION": "off",
        **env,
    }
    out = log.open("ab")
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [PY, "-m", "opsbot.cli", "serve"],
        env=full,
        stdout=out,
        stderr=out,
        cwd=log.parent,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                try:
                    if (await client.get(f"{base}/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    told = await asyncio.to_thread(log.read_text)
                    raise RuntimeError(f"opsbot serve ended: {told[-2000:]}")
                await asyncio.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()


# -- scenarios in this process --------------------------------------------------------------


async def slack_scenario(base: str, slack: Slack, run: int) -> None:
    """500 mentions at 100 a second, each in a thread of its own: time to the first reply."""
    import aiohttp

    sent: dict[str, float] = {}
    async with aiohttp.ClientSession() as http:

        async def send(i: int) -> None:
            ts = f"{1_700_000_000 + run * 10_000 + i}.000100"
            body = mention(ts, "show firing alerts", f"Ev{run}x{i}")
            sent[ts] = time.perf_counter()
            async with http.post(f"{base}/slack/events", data=body, headers=signed(body)) as r:
                assert r.status == 200, await r.text()

        started = time.perf_counter()
        tasks = []
        for i in range(500):
            await asyncio.sleep(max(0.0, started + i / 100 - time.perf_counter()))
            tasks.append(asyncio.create_task(send(i)))
        await asyncio.gather(*tasks)
        deadline = time.perf_counter() + 15
        while time.perf_counter() < deadline and any(  # noqa: ASYNC110 (polls the fake)
            ts not in slack.firsts for ts in sent
        ):
            await asyncio.sleep(0.2)
    latencies = [
        (reply - sent[ts]) * 1000 for ts in sent if (reply := slack.first_reply(ts)) is not None
    ]
    record("slack_p50", pct(latencies, 0.5))
    record("slack_p99", pct(latencies, 0.99))
    record("slack_lost", len(sent) - len(latencies))


async def console_scenario(base: str) -> None:
    """/healthz probed every 10 ms, idle, then while 4 clients render /audit pages."""
    import aiohttp

    auth = {"Authorization": "Bearer bench-console", "Accept": "text/html"}
    async with aiohttp.ClientSession() as http:

        async def probe(seconds: float) -> list[float]:
            took = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                started = time.perf_counter()
                async with http.get(f"{base}/healthz") as r:
                    await r.read()
                took.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.01)
            return took

        record("healthz_idle", pct(await probe(2), 0.99))
        pages = [0]
        stop = asyncio.Event()

        async def render(n: int) -> None:
            paths = ["/audit", "/audit?limit=200", "/audit/chain", f"/audit/requests/r{n * 7}"]
            i = 0
            while not stop.is_set():
                async with http.get(f"{base}{paths[i % len(paths)]}", headers=auth) as r:
                    await r.read()
                    assert r.status in (200, 404), r.status
                pages[0] += 1
                i += 1

        renderers = [asyncio.create_task(render(n)) for n in range(4)]
        started = time.perf_counter()
        probed = await probe(3)
        stop.set()
        await asyncio.gather(*renderers)
        record("healthz_audit", pct(probed, 0.99))
        record("audit_pages", pages[0] / (time.perf_counter() - started))


def webhook(run: int) -> dict[str, Any]:
    labels = {
        "alertname": "HighErrorRate",
        "service": "checkout",
        "namespace": "shop",
        "severity": "critical",
        "bench": str(run),
    }
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "receiver": "opsbot",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "checkout is failing 21% of requests"},
                "startsAt": started,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.local/graph",
                "fingerprint": f"bench{run:04d}",
            }
        ],
        "groupLabels": {k: labels[k] for k in ("alertname", "service", "namespace")},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="HighErrorRate", bench="{run}"}}',
        "truncatedAlerts": 0,
    }


async def incident_scenario(base: str, slack: Slack, run: int) -> None:
    import aiohttp

    before = len(slack.posts)
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        async with http.post(
            f"{base}/alertmanager",
            json=webhook(run),
            headers={"Authorization": "Bearer bench-webhook"},
        ) as r:
            assert r.status == 200, await r.text()
    deadline = started + 30
    root = None
    while time.perf_counter() < deadline:
        new = slack.posts[before:]
        if root is None:
            root = next(((t, p) for t, p in new if not p.get("thread_ts")), None)
        if root is not None:
            done = next(
                (
                    t
                    for t, p in new
                    if p.get("thread_ts") == root[1]["ts"]
                    and "incident.triage`:" in str(p.get("text"))
                ),
                None,
            )
            if done is not None:
                record("webhook_first", (root[0] - started) * 1000)
                record("triage_full", done - started)
                return
        await asyncio.sleep(0.02)
    raise RuntimeError("the incident's triage did not finish within 30 s")


async def busy_scenario(slack: Slack, hung: str, tmp: Path, run: int) -> None:
    """One worker, room for one waiting: the third mention is told the bot is busy."""
    import aiohttp

    env = {
        "OPSBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / f'busy{run}.db'}",
        "OPSBOT_ADAPTERS": "slack",
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.url,
        "ALERTMANAGER_URL": hung,
        "OPSBOT_BACKEND_TIMEOUT": "5",
        "OPSBOT_WORKERS": "1",
        "OPSBOT_QUEUE_LIMIT": "1",
    }
    async with serve(env, tmp / "serve-busy.log") as base, aiohttp.ClientSession() as http:
        stamps = []
        for i in range(3):
            ts = f"{1_760_000_000 + run * 10 + i}.000100"
            body = mention(ts, "show firing alerts", f"Busy{run}x{i}")
            stamps.append((ts, time.perf_counter()))
            async with http.post(f"{base}/slack/events", data=body, headers=signed(body)) as r:
                assert r.status == 200
            await asyncio.sleep(0.2)
        ts, sent = stamps[2]
        deadline = sent + 5
        while time.perf_counter() < deadline:
            told = next(
                (
                    t
                    for t, p in slack.posts
                    if p.get("thread_ts") == ts and "busy" in str(p.get("text"))
                ),
                None,
            )
            if told is not None:
                record("busy", (told - sent) * 1000)
                return
            await asyncio.sleep(0.01)
        raise RuntimeError("no busy answer within 5 s")


# -- environment -----------------------------------------------------------------------------


def machine() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return [f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores{mem}"]


async def versions() -> str:
    import sqlite3
    from importlib.metadata import version

    rev = (
        await asyncio.to_thread(
            subprocess.run,
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
    ).stdout.strip()
    pg = ""
    if os.environ.get("OPSBOT_TEST_POSTGRES_URL"):
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        from opsbot.store import normalise_url

        engine = create_async_engine(normalise_url(os.environ["OPSBOT_TEST_POSTGRES_URL"]))
        async with engine.connect() as conn:
            pg = str(await conn.scalar(text("SHOW server_version"))).split()[0]
        await engine.dispose()
    prom = (
        await asyncio.to_thread(
            subprocess.run, ["prometheus", "--version"], capture_output=True, text=True, check=False
        )
    ).stdout.split("\n")[0]
    return (
        f"opsbot {version('opsbot')} ({rev or 'no git'}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, PostgreSQL {pg or 'not available'}, SQLAlchemy "
        f"{version('sqlalchemy')}, asyncpg {version('asyncpg')}, aiosqlite {version('aiosqlite')}, "
        f"{prom.replace('prometheus, version', 'Prometheus').split(' (')[0]}"
    )


#: starts a command from a small process of its own and prints its wall time and peak RSS:
#: a process forked from this one (grown by the scenarios) would report this one's peak RSS
#: as its own (Linux keeps the larger of the two across exec)
LAUNCH = """
import json, os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - started
print(json.dumps({"wall": wall, "rss_kib": usage.ru_maxrss, "rc": os.waitstatus_to_exitcode(status)}))
"""


def cold_ask(tmp: Path) -> None:
    """`opsbot ask --as shell:alice help` in a new process on a database already there."""
    env = {**clean_env(), "OPSBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'cold.db'}"}
    command = [str(Path(PY).parent / "opsbot"), "ask", "--as", ALICE, "help"]
    if not Path(command[0]).exists():
        command = [PY, "-m", "opsbot.cli", *command[1:]]
    subprocess.run(command, env=env, cwd=tmp, capture_output=True, check=True)  # migrates
    done = subprocess.run(
        [PY, "-c", LAUNCH, *command], env=env, cwd=tmp, capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    assert result["rc"] == 0, result
    record("cold_wall", result["wall"])
    record("cold_rss", result["rss_kib"] / 1024)


@contextmanager
def hung_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a hung backend)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1000)
    held: list[socket.socket] = []
    stop = False

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop:
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue

    import threading

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop = True
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


# -- the run ------------------------------------------------------------------------------------


async def main() -> None:
    from opsbot.demo import LocalStack
    from tests.fakes.loki import FakeLoki

    define()
    wall_started = time.perf_counter()
    pg = bool(os.environ.get("OPSBOT_TEST_POSTGRES_URL"))
    print(
        f"opsbot bench: {RUNS} runs; PostgreSQL {'on' if pg else 'off (set OPSBOT_TEST_POSTGRES_URL)'}",
        file=sys.stderr,
    )
    # the emulated Kubernetes API runs only while a scenario uses it (kube_cluster): its
    # controller's tick, in this process, would otherwise compete for the 2 cores while the
    # engine's own time is measured
    stack = await asyncio.to_thread(LocalStack(kubernetes=False).start)
    slack = await Slack().start()
    loki = FakeLoki()
    await loki.__aenter__()
    now_ns = time.time_ns()
    loki.push(
        {"service": "checkout", "namespace": "shop", "pod": "checkout-bbb-1"},
        [
            (now_ns - k * 1_000_000_000, f"ERROR payment gateway timeout after 30{k}1ms")
            for k in range(1, 20)
        ],
    )
    try:
        with tempfile.TemporaryDirectory(prefix="opsbot-bench-") as tmpdir, hung_server() as hung:
            tmp = Path(tmpdir)
            for run in range(RUNS):
                print(
                    f"run {run + 1}/{RUNS} ({time.perf_counter() - wall_started:.0f} s)",
                    file=sys.stderr,
                )
                await one_run(run, tmp, stack, slack, loki.url, hung, pg)
    finally:
        await loki.__aexit__(None, None, None)
        await slack.stop()
        await asyncio.to_thread(stack.stop)
    took = time.perf_counter() - wall_started
    header = [
        f"Machine: {machine()[0]}",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {RUNS} runs of each figure (median, and the lowest..highest run); the whole bench took {took / 60:.1f} min",
        f"Versions: {await versions()}",
    ]
    out = table()
    print("\n".join(header) + "\n\n" + out)
    (ROOT / "bench" / "RESULTS.md").write_text(results_md(header, out))


async def one_run(
    run: int, tmp: Path, stack: Any, slack: Slack, loki_url: str, hung: str, pg: bool
) -> None:
    sqlite = functools.partial(sqlite_url, tmp, run)
    # the engine, one request at a time, against a real Alertmanager
    result = child("overhead", sqlite("overhead"), stack.alertmanager_url, "1000", env=clean_env())
    record("overhead_p50", result["p50_ms"])
    record("overhead_p99", result["p99_ms"])
    if pg:
        async with await scratch_pg() as url:
            result = child("overhead", url, stack.alertmanager_url, "1000", env=clean_env())
            record("overhead_pg_p50", result["p50_ms"])
            record("overhead_pg_p99", result["p99_ms"])
    # load: 1,000 one at a time, 500 and 2,000 at once
    dbs = [("sq", sqlite)]
    if pg:
        dbs.append(("po", None))  # type: ignore[arg-type]
    for key, make in dbs:
        lost = 0
        for n, at_once, name in (
            ("1000", "1", "seq"),
            ("500", "500", "c500"),
            ("2000", "2000", "c2000"),
        ):
            if make is None:
                async with await scratch_pg() as url:
                    result = child("load", url, n, at_once, env=clean_env())
            else:
                result = child("load", make(f"{name}-"), n, at_once, env=clean_env())
            assert result["chain_ok"], result
            record(f"{name}_rps_{key}", result["rps"])
            record(f"{name}_p99_{key}", result["p99_ms"])
            FIGURES[f"{name}_p99_{key}"].p50s.append(result["p50_ms"])
            lost += int(result["lost"])
            if name == "c2000":
                record(f"rss_{key}", result["rss_mib"])
        record(f"lost_{key}", lost)
    # audit appends
    result = child("append", sqlite("append"), env=clean_env())
    record("append_seq_sq", result["sequential"])
    record("append_conc_sq", result["concurrent"])
    if pg:
        async with await scratch_pg() as url:
            result = child("append", url, env=clean_env())
            record("append_seq_po", result["sequential"])
            record("append_conc_po", result["concurrent"])
    # the cold command, the router, the LLM planner's prompt
    cold_ask(tmp)
    result = child("router", env=clean_env())
    record("router_p50", result["p50_ms"])
    record("router_p99", result["p99_ms"])
    result = child("llm", sqlite("llm"), stack.alertmanager_url, env=clean_env())
    record("llm_calls", result["calls"])
    record("llm_tokens", result["prompt_tokens"])
    # opsbot serve: Slack events, incidents, the console beside /healthz
    with kube_cluster(tmp) as kubeconfig:
        await serve_and_faults(run, tmp, stack, slack, loki_url, hung, kubeconfig)
    await busy_scenario(slack, hung, tmp, run)
    result = child("crash", sqlite("crash"), env=clean_env())
    assert result["verify_ok"], result
    record("crash_lost", result["lost"])
    record("crash_acked", result["acked"])


@contextmanager
def kube_cluster(tmp: Path) -> Iterator[str]:
    """The shop's emulated Kubernetes API (``opsbot demo``'s), for the scenarios that read it:
    yields its kubeconfig's path."""
    from opsbot.demo_cluster import BackgroundCluster

    cluster = BackgroundCluster(tmp / "kubeconfig").start()
    try:
        yield str(cluster.kubeconfig)
    finally:
        cluster.stop()


async def serve_and_faults(
    run: int, tmp: Path, stack: Any, slack: Slack, loki_url: str, hung: str, kubeconfig: str
) -> None:
    sqlite = functools.partial(sqlite_url, tmp, run)
    db = sqlite("serve")
    child("seed", db, "10000", env=clean_env())
    env = {
        "OPSBOT_DATABASE_URL": db,
        "OPSBOT_ADAPTERS": "slack",
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.url,
        "PROMETHEUS_URL": stack.prometheus_url,
        "ALERTMANAGER_URL": stack.alertmanager_url,
        "LOKI_URL": loki_url,
        "KUBECONFIG": kubeconfig,
        "OPSBOT_CONSOLE_TOKEN": "bench-console",
        "OPSBOT_ALERT_CHANNEL": f"slack:{CHANNEL}",
        "OPSBOT_ALERTMANAGER_TOKEN": "bench-webhook",
        "OPSBOT_CHART_DIR": str(tmp / "charts"),
    }
    async with serve(env, tmp / "serve.log") as base:
        await asyncio.sleep(1)  # the inventory's first snapshot, the console's first walk
        await slack_scenario(base, slack, run)
        await console_scenario(base)
        await incident_scenario(base, slack, run)
    # faults
    result = child(
        "hung",
        sqlite("hung"),
        hung,
        stack.prometheus_url,
        stack.alertmanager_url,
        kubeconfig,
        env=clean_env(),
    )
    record("hung_help", result["help_hung_p99_ms"])
    record("hung_help_more", result["help_hung_p99_ms"] - result["help_up_p99_ms"])
    record("hung_k8s", result["k8s_hung_p99_ms"])
    record("hung_k8s_more", result["k8s_hung_p99_ms"] - result["k8s_up_p99_ms"])
    record("hung_first", result["k8s_hung_first_ms"] / 1000)


def results_md(header: list[str], out: str) -> str:
    return (
        "# Benchmarks\n\n"
        "`make bench` (`python bench/run.py`): how each figure is measured is said in the "
        "script; this file is written by every run.\n\n"
        + "\n".join(f"- {line}" for line in header)
        + "\n\n"
        + out
        + "\n"
    )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        name, *args = sys.argv[2:]
        print(json.dumps(asyncio.run(CHILDREN[name](*args))))
    else:
        asyncio.run(main())
