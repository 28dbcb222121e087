"""The chart's alerts and the bot's metrics cannot drift apart: every ``opsbot_*`` metric the
PrometheusRule's expressions use is in the ``/metrics`` exposition of a running ``opsbot
serve``. The rule comes from ``helm template`` when helm is there (tests/test_helm.py fetches
it into build/tools), else from the template file itself, so this runs everywhere.

Also the two gauges the alerts OpsbotApprovalQueueStuck and OpsbotAuditChainBroken read: the
age of the oldest pending approval (0 when none) and whether the audit chain verified."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import update

from opsbot.adapters.console import CONSOLE
from opsbot.adapters.http import make_app, serve, verify_while_leading
from opsbot.audit import AuditEvent
from opsbot.demo import free_port
from opsbot.leader import Leadership
from opsbot.model import Actor, Invocation, Request
from opsbot.policy import NeedsApproval, Policy
from opsbot.services import Services, build_services
from opsbot.store import ApprovalRow, AuditRow, now
from opsbot.telemetry import AUDIT_CHAIN_INTACT
from tests.conftest import ROOT, make_settings

CHART = ROOT / "helm" / "opsbot"
RULE = CHART / "templates" / "prometheusrule.yaml"
TOOLS = Path(os.environ.get("OPSBOT_TOOLS_DIR") or ROOT / "build" / "tools")
METRIC = re.compile(r"\bopsbot_[a-z0-9_]+\b")


def _helm() -> str | None:
    found = TOOLS / "bin" / "helm"
    return str(found) if found.is_file() else shutil.which("helm")


def _rendered_exprs(helm: str) -> list[str]:
    """The expressions of the PrometheusRule as ``helm template`` renders it (turned on)."""
    out = subprocess.run(
        [
            *(helm, "template", "opsbot", str(CHART), "-n", "opsbot"),
            *("--set", "prometheusRule.enabled=true"),
            *("--show-only", "templates/prometheusrule.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    [rule] = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert rule["kind"] == "PrometheusRule"
    return [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if "expr" in r]


def _template_exprs() -> list[str]:
    """The expressions of the template file: each ``expr:`` line, with its indented block."""
    exprs: list[str] = []
    lines = RULE.read_text().splitlines()
    for i, line in enumerate(lines):
        found = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if found is None:
            continue
        indent, expr = len(found.group(1)), [found.group(2)]
        for more in lines[i + 1 :]:
            if more.strip() and len(more) - len(more.lstrip()) <= indent:
                break
            expr.append(more)
        exprs.append("\n".join(expr))
    return exprs


def alert_metrics() -> set[str]:
    """Every ``opsbot_*`` metric name the chart's alert expressions use."""
    helm = _helm()
    exprs = _rendered_exprs(helm) if helm else _template_exprs()
    names = {name for expr in exprs for name in METRIC.findall(expr)}
    assert names, "no opsbot_* metric found in the PrometheusRule's expressions"
    return names


def exposed(text: str) -> set[str]:
    """The series names an exposition offers: each family (from its TYPE line) with the
    names of its samples (a histogram's _bucket, _sum, _count), and every sample's name."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind in ("histogram", "summary"):
                names.update(f"{name}{end}" for end in ("_bucket", "_sum", "_count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_the_template_and_its_rendering_name_the_same_metrics() -> None:
    """The fallback (reading the template file) finds what helm renders."""
    helm = _helm()
    if helm is None:
        pytest.skip("no helm (scripts/chart.sh tools fetches it into build/tools)")
    from_file = {n for e in _template_exprs() for n in METRIC.findall(e)}
    assert from_file == {n for e in _rendered_exprs(helm) for n in METRIC.findall(e)}


async def test_every_metric_the_chart_alerts_on_is_exported_by_opsbot_serve(
    tmp_path: Path, policy: Policy
) -> None:
    wanted = alert_metrics()
    assert {"opsbot_approvals_oldest_pending_seconds", "opsbot_audit_chain_intact"} <= wanted
    port = free_port()
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        tmp_path,
        http_host="127.0.0.1",
        http_port=port,
        slack_bot_token=None,
        discord_token=None,
    )
    services = await build_services(settings, policy=policy)
    task = asyncio.create_task(serve(services))
    missing: set[str] = set(wanted)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):  # the chain's first walk runs in the background
                try:
                    answer = await client.get("/metrics")
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
                    continue
                missing = wanted - exposed(answer.text)
                if not missing:
                    break
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await services.close()
    assert not missing, f"the chart alerts on metrics opsbot does not export: {sorted(missing)}"


def sample(text: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


async def scrape(client: TestClient) -> str:  # type: ignore[type-arg]
    return await (await client.get("/metrics")).text()


async def test_the_oldest_pending_approval_and_the_chain_are_read_when_scraped(
    sqlite_services: Services,
) -> None:
    services = sqlite_services
    await services.audit.append(AuditEvent.REQUEST, actor="shell:alice", detail="x")
    app = make_app(services)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        assert sample(await scrape(client), "opsbot_approvals_oldest_pending_seconds") == 0.0
        decision = NeedsApproval("r", ("shell:bob",), 1, timedelta(hours=2))
        alice = Actor(id="shell:alice")
        for age in (600, 60):  # the older one counts
            approval = await services.approvals.open(
                Request(actor=alice, channel="ops", text="x"),
                Invocation(skill="k8s.restart", args={"name": "web", "namespace": "shop"}),
                decision,
            )
            async with services.store.sessions() as session:
                await session.execute(
                    update(ApprovalRow)
                    .where(ApprovalRow.id == approval.id)
                    .values(created_at=now() - timedelta(seconds=age))
                )
                await session.commit()
        oldest = sample(await scrape(client), "opsbot_approvals_oldest_pending_seconds")
        assert oldest is not None and 600 <= oldest < 660
        async with services.store.sessions() as session:  # decided: none pending
            await session.execute(update(ApprovalRow).values(state="denied"))
            await session.commit()
        assert sample(await scrape(client), "opsbot_approvals_oldest_pending_seconds") == 0.0

        watcher: Any = app[CONSOLE].watcher
        await watcher.check(full=True)
        assert sample(await scrape(client), "opsbot_audit_chain_intact") == 1.0
        async with services.store.sessions() as session:  # a record rewritten
            await session.execute(update(AuditRow).values(actor="shell:mallory"))
            await session.commit()
        await watcher.check(full=True)
        assert sample(await scrape(client), "opsbot_audit_chain_intact") == 0.0
    finally:
        await client.close()


class Ballot:
    """An elector the test decides: this replica leads while ``wins``."""

    kind, identity = "test", "replica-a"

    def __init__(self) -> None:
        self.wins = True

    def where(self) -> str:
        return "the test"

    async def try_lead(self) -> bool:
        return self.wins

    async def release(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_replica_that_stops_leading_stops_exporting_the_chain_gauge(
    sqlite_services: Services,
) -> None:
    """With the console off the leader alone walks the chain: a former leader's last value
    (here 0, a broken chain) leaves its /metrics when it stops leading, and a replica that
    leads again exports nothing until a walk of its own term has finished."""
    services = sqlite_services
    await services.audit.append(AuditEvent.REQUEST, actor="shell:alice", detail="x")
    app = make_app(services)
    client = TestClient(TestServer(app))
    await client.start_server()
    ballot = Ballot()
    leadership = Leadership(ballot, renew_deadline=0.3, retry_period=0.05)
    watcher: Any = app[CONSOLE].watcher
    verify_while_leading(app[CONSOLE], leadership)  # what `opsbot serve` does, console off
    electing = asyncio.create_task(leadership.run())

    async def gauge_becomes(wanted: float) -> None:
        for _ in range(400):  # the watcher walks in the background
            if sample(await scrape(client), "opsbot_audit_chain_intact") == wanted:
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"opsbot_audit_chain_intact never became {wanted}")

    try:
        assert await leadership.wait(True, within=5)
        await gauge_becomes(1.0)
        async with services.store.sessions() as session:  # a record rewritten
            await session.execute(update(AuditRow).values(actor="shell:mallory"))
            await session.commit()
        watcher.request_full()
        await gauge_becomes(0.0)

        ballot.wins = False  # another replica leads now, and walks the chain itself
        assert await leadership.wait(False, within=5)
        assert "opsbot_audit_chain_intact" not in await scrape(client)

        walked, walk = asyncio.Event(), watcher.check

        async def held_check(*, full: bool) -> Any:
            await walked.wait()
            return await walk(full=full)

        watcher.check = held_check
        ballot.wins = True  # leading again: what it found last term is not this term's
        assert await leadership.wait(True, within=5)
        await asyncio.sleep(0.1)
        assert "opsbot_audit_chain_intact" not in await scrape(client)
        walked.set()
        await gauge_becomes(0.0)
    finally:
        electing.cancel()
        await asyncio.gather(electing, return_exceptions=True)
        await leadership.stop()
        AUDIT_CHAIN_INTACT.read = None
        await client.close()
