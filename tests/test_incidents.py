"""Incidents from Alertmanager (opsbot.incidents, ``POST /alertmanager``, ``opsbot incidents``).

Most tests post webhook payloads (written as Alertmanager 0.25 sends them, version 4) into the
real HTTP app; the chat platform is :class:`FakeChat` (what the Slack and Discord adapters do
is in tests/test_slack.py and tests/test_discord.py) and ``incident.triage`` a stub that says
how it was called. Two tests use the real servers: a real Prometheus rule firing through a
real Alertmanager into ``opsbot serve`` (no payload written here), and two ``opsbot serve``
processes receiving the same group at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from pydantic import AwareDatetime, BaseModel
from typer.testing import CliRunner

from opsbot.adapters.http import make_app, serve
from opsbot.audit import AuditEvent
from opsbot.cli import app
from opsbot.config import AlertRoute, load_settings
from opsbot.demo import LocalStack, free_port, missing_binaries
from opsbot.engine import Engine
from opsbot.errors import ConfigError
from opsbot.incidents import (
    ACK_PREFIX,
    MAX_ALERTS,
    BadPayload,
    Desk,
    Incidents,
    parse_webhook,
)
from opsbot.model import (
    ActionButton,
    Actor,
    Audience,
    Invocation,
    Message,
    SkillResult,
    Table,
)
from opsbot.policy import Policy
from opsbot.services import Services, build_services
from opsbot.skills.base import Skill, SkillContext, SkillRegistry
from tests.conftest import ROOT, make_settings, unavailable
from tests.fakes.slack_api import FakeSlack

TOKEN = "am-webhook-secret"
STARTED = "2026-11-01T10:00:00.123456789Z"  # Alertmanager writes nanoseconds
NOT_SET = "0001-01-01T00:00:00Z"  # Go's zero time: a firing alert's endsAt


# -- payloads as Alertmanager sends them ----------------------------------------------------


def alert(
    name: str = "HighErrorRate",
    *,
    status: str = "firing",
    fingerprint: str = "",
    summary: str = "",
    **labels: str,
) -> dict[str, Any]:
    labels = {"alertname": name, **labels}
    return {
        "status": status,
        "labels": labels,
        "annotations": {
            "summary": summary or f"{labels.get('service', name)} is failing 21% of requests",
            "runbook_url": "https://runbooks.test/high-error-rate",
        },
        "startsAt": STARTED,
        "endsAt": "2026-11-01T10:05:00Z" if status == "resolved" else NOT_SET,
        "generatorURL": "http://prometheus.test/graph?g0.expr=rate",
        "fingerprint": fingerprint or f"fp-{name}-{labels.get('service', '')}".lower(),
    }


def payload(*alerts: dict[str, Any], status: str = "", group: str = "") -> dict[str, Any]:
    """A notification of one group (its status: resolved when every alert is)."""
    alerts = alerts or (alert(service="checkout", namespace="shop", severity="critical"),)
    sets = [a.get("labels") or {} if isinstance(a, dict) else {} for a in alerts]
    common = dict(sets[0])
    for other in sets[1:]:
        common = {k: v for k, v in common.items() if other.get(k) == v}
    grouped = {k: v for k, v in common.items() if k in ("alertname", "service", "namespace")}
    key = group or "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(grouped.items())) + "}"
    return {
        "receiver": "opsbot",
        "status": status
        or (
            "resolved"
            if all(isinstance(a, dict) and a.get("status") == "resolved" for a in alerts)
            else "firing"
        ),
        "alerts": list(alerts),
        "groupLabels": grouped,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.test:9093",
        "version": "4",
        "groupKey": key,
        "truncatedAlerts": 0,
    }


# -- a chat platform in memory, and a triage that says how it was called --------------------


class FakeChat:
    """The incident methods of a chat adapter (open_thread, edit_root, post), in memory."""

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.roots: list[tuple[str, Message, str]] = []  # (channel, first message, title)
        self.edits: list[tuple[str, Message]] = []
        self.posts: list[Message] = []
        self.refuse: str = ""

    async def open_thread(self, channel: str, message: Message, title: str) -> tuple[str, str]:
        if self.refuse:
            raise RuntimeError(self.refuse)
        self.roots.append((channel, message, title))
        n = len(self.roots)
        return f"{self.platform}:thread-{n}", f"{channel}:root-{n}"

    async def edit_root(self, root: str, message: Message) -> bool:
        self.edits.append((root, message))
        return True

    async def post(self, message: Message) -> None:
        self.posts.append(message)

    def said(self, thread: str) -> str:
        return "\n".join(m.plain for m in self.posts if m.thread == thread)


class TriageArgs(BaseModel):
    alert: str | None = None
    service: str | None = None
    namespace: str | None = None
    started_at: AwareDatetime | None = None


class StubTriage(Skill[TriageArgs, Any]):
    name = "incident.triage"
    summary = "Triage an alert (a stub)"
    Args = TriageArgs
    examples: ClassVar[list[str]] = ["triage HighErrorRate"]
    keywords: ClassVar[dict[str, float]] = {"triage": 4.0}

    def __init__(self) -> None:
        self.runs: list[tuple[TriageArgs, str, str]] = []  # (args, actor, thread)
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self, args: TriageArgs, ctx: SkillContext[Any]) -> SkillResult:
        self.runs.append((args, ctx.actor.id, ctx.request.thread))
        await self.gate.wait()
        return SkillResult(
            summary=f"{args.alert}: checkout was rolled out 3 minutes before the alert",
            blocks=[
                ActionButton(
                    id="act-rollback-1",
                    label="Roll back checkout to revision 41",
                    invocation=Invocation(
                        skill="k8s.rollback", args={"name": "checkout", "namespace": "shop"}
                    ),
                )
            ],
        )


class Rig:
    def __init__(
        self, services: Services, engine: Engine, desk: Desk, client: TestClient, triage: StubTriage
    ) -> None:
        self.services, self.engine, self.desk, self.client = services, engine, desk, client
        self.triage = triage
        self.discord = FakeChat("discord")
        self.slack = FakeChat("slack")
        desk.chats.update(discord=self.discord, slack=self.slack)

    async def post(self, body: Any, *, token: str | None = TOKEN, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        if isinstance(body, bytes):
            answer = await self.client.post("/alertmanager", data=body, headers=headers, **kw)
        else:
            answer = await self.client.post("/alertmanager", json=body, headers=headers, **kw)
        return answer.status, await answer.json()

    async def incident(self, incident_id: str) -> Any:
        found = await self.desk.incidents.get(incident_id)
        assert found is not None
        return found


ROUTES = [
    AlertRoute(matchers={"severity": "critical", "team": "payments"}, channel="discord:111"),
    AlertRoute(matchers={"team": ["web", "frontend"]}, channel="slack:CWEB"),
]


@pytest.fixture
async def rig(tmp_path: Path, policy: Policy) -> AsyncIterator[Rig]:
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'incidents.db'}",
        tmp_path,
        alert_routes=ROUTES,
        alert_channel="discord:700",
        alertmanager_token=TOKEN,
    )
    triage = StubTriage()
    registry = SkillRegistry()
    registry.add(triage)
    services = await build_services(settings, policy=policy, registry=registry)
    engine = Engine(services)
    desk = Desk(services, engine)
    client = TestClient(TestServer(make_app(services, desk=desk)))
    await client.start_server()
    try:
        yield Rig(services, engine, desk, client, triage)
    finally:
        triage.gate.set()
        await desk.close()
        await client.close()
        await services.close()


# -- the payload -------------------------------------------------------------------------------


def test_parse_webhook_reads_version_4_and_names_the_bad_alerts() -> None:
    body = payload(
        alert(service="checkout", namespace="shop"),
        {"status": "firing", "labels": {"alertname": 7}},  # not strings
        alert(service="cart", namespace="shop", fingerprint="fp-cart") | {"startsAt": "soon"},
        "an alert",
        alert(service="payments", namespace="shop"),
    )
    hook = parse_webhook(body)
    assert [a.labels["service"] for a in hook.alerts] == ["checkout", "payments"]
    assert hook.alerts[0].starts_at == "2026-11-01T10:00:00.123456+00:00"
    assert hook.alerts[0].ends_at == ""  # Go's zero time: not set
    assert hook.rejected == [
        "alerts[1]: labels are missing or not a mapping of strings",
        "alerts[2]: startsAt 'soon' is not an RFC 3339 time",
        "alerts[3]: not an object but str",
    ]
    assert hook.labels == {"alertname": "HighErrorRate", "namespace": "shop"}
    many = payload(*[alert(service=f"s{i}", fingerprint=f"f{i}") for i in range(MAX_ALERTS + 2)])
    assert parse_webhook(many).rejected == [
        f"alerts[{MAX_ALERTS}:]: 2 alerts past the first {MAX_ALERTS} were not read "
        "(set max_alerts in the webhook_config)"
    ]
    for bad, reason in [
        ([], "the body is a JSON list, not an object"),
        (payload() | {"version": "3"}, "version '3': opsbot reads Alertmanager's webhook"),
        (payload() | {"groupKey": ""}, "groupKey is missing or not a string"),
        (payload() | {"status": "bad"}, "status is 'bad', not firing or resolved"),
        (payload() | {"alerts": []}, "alerts is missing, empty or not a list"),
        (payload({"labels": {}}), "no valid alert: alerts[0]: status is None"),
    ]:
        with pytest.raises(BadPayload) as refused:
            parse_webhook(bad)
        assert str(refused.value).startswith(reason)


# -- one incident per group, one thread ------------------------------------------------------


async def test_first_delivery_opens_one_thread_with_the_alerts_own_data(rig: Rig) -> None:
    status, answer = await rig.post(payload())
    assert status == 200 and answer["opened"] is True and answer["status"] == "firing"
    [(channel, first, title)] = rig.discord.roots
    assert (channel, title) == ("700", "HighErrorRate: checkout in shop")  # the default route
    text = first.plain
    assert "FIRING" in text and "HighErrorRate: checkout in shop" in text
    assert "checkout is failing 21% of requests" in text  # the summary annotation
    assert "[runbook](https://runbooks.test/high-error-rate)" in text
    assert "[Alertmanager](http://alertmanager.test:9093)" in text
    assert "started 10:00:00 UTC · 1 of 1 alert firing" in text
    [labels] = [b for b in first.blocks if isinstance(b, Table)]
    assert labels.rows == [["namespace", "shop"], ["service", "checkout"], ["severity", "critical"]]
    [ack] = [b for b in first.blocks if isinstance(b, ActionButton)]
    incident = await rig.incident(answer["incident"])
    assert ack.id == f"{ACK_PREFIX}{incident.id}" and ack.label == "Ack"
    assert (incident.thread, incident.channel, incident.root) == (
        "discord:thread-1",
        "discord:700",
        "700:root-1",
    )
    await rig.desk.settle()
    # the triage ran in the thread, as the receiver's system identity, with the alert's facts
    [(args, actor, thread)] = rig.triage.runs
    assert (actor, thread) == ("alertmanager:opsbot", "discord:thread-1")
    assert (args.alert, args.service, args.namespace) == ("HighErrorRate", "checkout", "shop")
    assert args.started_at == datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC)
    said = rig.discord.said("discord:thread-1")
    assert "Plan (alertmanager): `incident.triage alert=HighErrorRate" in said
    assert "[Roll back checkout to revision 41]" in said
    # the audit log links the incident: its records and the triage's carry its id
    records = await rig.services.audit.search(request_id=incident.id)
    assert [r.event for r in records] == [
        AuditEvent.INCIDENT_OPENED,
        AuditEvent.REQUEST,
        AuditEvent.PLAN,
        AuditEvent.POLICY,
        AuditEvent.RESULT,
    ]
    assert records[0].actor == "alertmanager:opsbot" and records[0].thread == incident.thread
    assert records[0].args["incident"] == incident.id
    proposed, taken = await rig.desk.incidents.actions(incident)
    assert proposed == ["Roll back checkout to revision 41 (k8s.rollback)"] and taken == []


async def test_the_webhook_answers_once_the_first_message_is_up_not_after_the_triage(
    rig: Rig,
) -> None:
    rig.triage.gate.clear()  # the triage takes as long as the test wants
    started = time.monotonic()
    status, answer = await asyncio.wait_for(rig.post(payload()), 5)  # not held by the triage
    elapsed = time.monotonic() - started
    assert status == 200 and answer["opened"] is True and len(rig.discord.roots) == 1
    assert "rolled out" not in rig.discord.said(answer["thread"])  # the triage has not ended
    assert elapsed < 1.0, f"the webhook took {elapsed:.3f}s"
    print(f"webhook to first message (in-memory chat, SQLite): {elapsed * 1000:.0f} ms")
    rig.triage.gate.set()
    await rig.desk.settle()
    assert len(rig.triage.runs) == 1


async def test_resends_update_the_incident_and_resolved_marks_it(rig: Rig) -> None:
    checkout = alert(service="checkout", namespace="shop", severity="critical")
    group = '{}:{alertname="HighErrorRate"}'
    _, first = await rig.post(payload(checkout, group=group))
    for _ in range(2):  # Alertmanager's repeat_interval: the same notification again
        status, again = await rig.post(payload(checkout, group=group))
        assert status == 200 and again["opened"] is False
        assert again["incident"] == first["incident"]
    incident = await rig.incident(first["incident"])
    assert incident.deliveries == 3 and len(rig.discord.roots) == 1
    assert "3 notifications" in rig.discord.edits[-1][1].plain  # the count, in place
    await rig.desk.settle()
    before = len(rig.discord.posts)
    assert "New alert" not in rig.discord.said(incident.thread)

    cart = alert(service="cart", namespace="shop", severity="critical")
    await rig.post(payload(checkout, cart, group=group))
    incident = await rig.incident(first["incident"])
    assert len(incident.alerts) == 2 and len(rig.discord.roots) == 1
    assert "New alert: `HighErrorRate` namespace=shop service=cart severity=critical (firing)" in (
        rig.discord.said(incident.thread)
    )
    assert "2 of 2 alerts firing" in rig.discord.edits[-1][1].plain

    ended = alert(service="cart", namespace="shop", severity="critical", status="resolved")
    await rig.post(payload(checkout, ended, group=group))
    assert "Ended: `HighErrorRate` namespace=shop service=cart" in rig.discord.said(incident.thread)
    assert (await rig.incident(first["incident"])).status == "firing"

    done = [
        alert(service=s, namespace="shop", severity="critical", status="resolved")
        for s in ("checkout", "cart")
    ]
    status, answer = await rig.post(payload(*done, group=group))
    assert status == 200 and answer["status"] == "resolved" and answer["opened"] is False
    incident = await rig.incident(first["incident"])
    assert incident.status == "resolved" and incident.resolved_at is not None
    said = rig.discord.said(incident.thread)
    assert "✅ **Resolved** at" in said and "all 2 alerts ended" in said
    last = rig.discord.edits[-1][1]
    assert last.plain.startswith("✅ **RESOLVED**") and "Resolved at" in last.plain
    assert not [b for b in last.blocks if isinstance(b, ActionButton)]  # no Ack any more
    assert len(rig.discord.posts) > before
    records = await rig.services.audit.search(request_id=incident.id)
    assert [r.event for r in records if r.event.startswith("incident.")] == [
        AuditEvent.INCIDENT_OPENED,
        AuditEvent.INCIDENT_UPDATED,
        AuditEvent.INCIDENT_UPDATED,
        AuditEvent.INCIDENT_RESOLVED,
    ]

    # the resolved notification again: the same incident; the next firing: a new incident
    status, repeat = await rig.post(payload(*done, group=group))
    assert repeat["incident"] == incident.id and len(rig.discord.roots) == 1
    status, again = await rig.post(payload(checkout, group=group))
    assert again["opened"] is True and again["incident"] != incident.id
    assert len(rig.discord.roots) == 2


async def test_alerts_route_to_channels_by_their_labels(rig: Rig) -> None:
    cases = [
        ({"severity": "critical", "team": "payments", "service": "payments"}, "discord", "111"),
        ({"severity": "warning", "team": "frontend", "service": "web"}, "slack", "CWEB"),
        ({"severity": "warning", "team": "payments", "service": "ledger"}, "discord", "700"),
    ]
    for labels, platform, channel in cases:
        status, answer = await rig.post(payload(alert("HighLatency", **labels)))
        assert status == 200 and answer["opened"], answer
        chat = rig.discord if platform == "discord" else rig.slack
        assert chat.roots[-1][0] == channel, labels
        assert answer["thread"].startswith(f"{platform}:")
    # no route and no default channel: recorded, no thread, and said why
    rig.services.settings.alert_channel = None
    status, answer = await rig.post(payload(alert("DiskFull", service="db")))
    assert status == 200 and answer["opened"] is False and answer["thread"] == ""
    assert (
        "no alert route matches its labels and OPSBOT_ALERT_CHANNEL is not set"
        in (answer["problem"])
    )
    incident = await rig.incident(answer["incident"])
    assert incident.status == "firing" and incident.channel == ""
    # a platform refusing the first message: said, and the next delivery tries again
    rig.services.settings.alert_channel = "discord:700"
    rig.discord.refuse = "503 Service Unavailable"
    status, refused = await rig.post(payload(alert("DiskFull", service="ledger-db")))
    assert status == 503  # Alertmanager retries a 5xx soon, not at its next repeat
    assert refused["opened"] is False and "503 Service Unavailable" in refused["problem"]
    rig.discord.refuse = ""
    status, retried = await rig.post(payload(alert("DiskFull", service="ledger-db")))
    assert retried["opened"] is True and retried["incident"] == refused["incident"]


def test_routes_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OPSBOT_ALERT_ROUTES",
        json.dumps([{"matchers": {"team": "payments"}, "channel": "discord:123"}]),
    )
    monkeypatch.setenv("OPSBOT_ALERT_CHANNEL", "slack:COPS")
    monkeypatch.setenv("OPSBOT_CONFIG", "")
    settings = load_settings()
    assert settings.alert_routes[0].matches({"team": "payments", "severity": "x"})
    assert not settings.alert_routes[0].matches({"team": "web"})
    assert settings.alert_channel == "slack:COPS"
    monkeypatch.setenv("OPSBOT_ALERT_ROUTES", json.dumps([{"channel": "irc:#ops"}]))
    with pytest.raises(ConfigError, match="OPSBOT_ALERT_ROUTES"):
        load_settings()


# -- Ack -------------------------------------------------------------------------------------


async def test_ack_records_the_responder_once_and_edits_the_first_message(rig: Rig) -> None:
    _, answer = await rig.post(payload())
    incident = await rig.incident(answer["incident"])
    replies: list[Message] = []

    async def reply(message: Message) -> None:
        replies.append(message)
        if message.audience is Audience.THREAD:
            await rig.discord.post(message)

    bob = Actor(id="discord:222", display_name="<@222>")
    await rig.engine.click(f"{ACK_PREFIX}{incident.id}", bob, reply, channel="700")
    acked = await rig.incident(incident.id)
    assert (acked.acked_by, acked.status) == ("discord:222", "acknowledged")
    assert acked.acked_at is not None
    assert "<@222> acknowledged this incident at" in rig.discord.said(incident.thread)
    root, shown = rig.discord.edits[-1]
    assert root == incident.root and "Acknowledged by discord:222 at" in shown.plain
    assert shown.plain.startswith("👀 **ACKNOWLEDGED**")
    assert not [b for b in shown.blocks if isinstance(b, ActionButton)]
    [record] = await rig.services.audit.search(event=AuditEvent.INCIDENT_ACKNOWLEDGED)
    assert (record.actor, record.request_id, record.thread) == (
        "discord:222",
        incident.id,
        incident.thread,
    )
    # a second click, by someone else: told to them alone; the responder stays
    carol = Actor(id="discord:333", display_name="<@333>")
    await rig.engine.click(f"{ACK_PREFIX}{incident.id}", carol, reply, channel="700")
    assert replies[-1].audience is Audience.CLICKER
    assert "was acknowledged by discord:222" in replies[-1].plain
    assert (await rig.incident(incident.id)).acked_by == "discord:222"
    await rig.engine.click(f"{ACK_PREFIX}0000deadbeef", carol, reply, channel="700")
    assert replies[-1].audience is Audience.CLICKER and "is not known" in replies[-1].plain
    # firing again after the ack keeps it acknowledged
    await rig.post(payload())
    assert (await rig.incident(incident.id)).status == "acknowledged"


# -- bad input -------------------------------------------------------------------------------


async def test_a_wrong_or_missing_token_is_401(rig: Rig) -> None:
    with structlog.testing.capture_logs() as logs:
        for token in (None, "wrong", ""):
            status, answer = await rig.post(payload(), token=token)
            assert status == 401 and "/alertmanager wants" in answer["error"]
    assert [e["reason"] for e in logs if e["event"] == "alertmanager.unauthorized"] == [
        "no credentials",
        "wrong credentials",
        "wrong credentials",
    ]
    assert rig.discord.roots == [] and await rig.desk.incidents.find() == []
    # basic auth, as http_config.basic_auth sends it
    settings = rig.services.settings
    settings.alertmanager_token = None
    settings.alertmanager_username, settings.alertmanager_password = "am", "pw"
    for secret, expected in (("am:pw", 200), ("am:nope", 401)):
        basic = base64.b64encode(secret.encode()).decode()
        answer = await rig.client.post(
            "/alertmanager", json=payload(), headers={"Authorization": f"Basic {basic}"}
        )
        assert answer.status == expected, secret


async def test_malformed_wrong_version_and_oversized_payloads_are_400_with_a_log_line(
    rig: Rig,
) -> None:
    with structlog.testing.capture_logs() as logs:
        for body, reason in [
            (b"{not json", "not JSON"),
            (b"[1, 2]", "the body is a JSON list, not an object"),
            (payload() | {"version": "3"}, "version '3'"),
            (payload() | {"groupKey": None}, "groupKey is missing"),
            (json.dumps(payload() | {"padding": "x" * 1_100_000}).encode(), "more than 1048576"),
        ]:
            status, answer = await rig.post(body)
            assert status == 400 and reason in answer["error"], (reason, answer)
    lines = [e for e in logs if e["event"] == "alertmanager.bad_payload"]
    assert len(lines) == 5 and all(e["log_level"] == "warning" for e in lines)
    assert await rig.desk.incidents.find() == [] and rig.discord.roots == []
    # one malformed alert in a batch: 400 and a log line, the valid ones kept (and shown)
    with structlog.testing.capture_logs() as logs:
        status, answer = await rig.post(
            payload(
                alert(service="checkout", namespace="shop"),
                alert(service="cart", namespace="shop") | {"status": "pending"},
            )
        )
    assert status == 400 and answer["rejected"] == [
        "alerts[1]: status is 'pending', not firing or resolved"
    ]
    assert "1 malformed alert(s) left out; the 1 valid one(s) were kept" in answer["error"]
    assert answer["opened"] is True
    [line] = [e for e in logs if e["event"] == "alertmanager.bad_payload"]
    assert line["rejected"] == answer["rejected"]
    incident = await rig.incident(answer["incident"])
    assert [a["labels"]["service"] for a in incident.alerts] == ["checkout"]
    assert len(rig.discord.roots) == 1


async def test_an_alert_for_a_service_nothing_knows_still_opens_a_thread(
    tmp_path: Path, policy: Policy
) -> None:
    """With the installed skills (the real incident.triage) and no backend configured."""
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'unknown.db'}", tmp_path, alert_channel="slack:COPS"
    )
    services = await build_services(settings, policy=policy)
    chat = FakeChat("slack")
    desk = Desk(services, Engine(services), {"slack": chat})
    client = TestClient(TestServer(make_app(services, desk=desk)))
    await client.start_server()
    try:
        ghost = alert(
            "GhostErrors", service="ghost-svc", namespace="nowhere", summary="ghost-svc fails"
        )
        answer = await client.post("/alertmanager", json=payload(ghost))
        body = await answer.json()
        assert answer.status == 200 and body["opened"] is True
        [(_, first, title)] = chat.roots
        assert title == "GhostErrors: ghost-svc in nowhere"
        assert "ghost-svc fails" in first.plain and "nowhere" in first.plain
        await desk.settle(within=60)
        said = chat.said(body["thread"])
        assert said, "the triage says something in the thread"
        if services.registry.get("incident.triage") is not None:
            assert "incident.triage" in said
    finally:
        await desk.close()
        await client.close()
        await services.close()


def test_without_a_desk_incidents_are_recorded_without_a_thread(tmp_path: Path) -> None:
    """``make_app`` without a desk still records incidents (no thread, said why)."""

    async def go() -> None:
        settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'bare.db'}", tmp_path)
        services = await build_services(
            settings, policy=Policy.load(ROOT / "policies"), registry=SkillRegistry()
        )
        client = TestClient(TestServer(make_app(services)))
        await client.start_server()
        try:
            answer = await client.post("/alertmanager", json=payload())
            body = await answer.json()
            assert answer.status == 200 and body["opened"] is False and body["problem"]
            assert len(await Incidents(services.store).find()) == 1
        finally:
            await client.close()
            await services.close()

    asyncio.run(go())


# -- opsbot incidents -----------------------------------------------------------------------


def test_opsbot_incidents_lists_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("OPSBOT_DATABASE_URL", db)
    monkeypatch.setenv("OPSBOT_POLICY_PATH", str(ROOT / "policies"))
    monkeypatch.chdir(tmp_path)

    async def seed() -> list[str]:
        settings = make_settings(db, tmp_path, alert_channel="discord:700")
        services = await build_services(
            settings, policy=Policy.load(ROOT / "policies"), registry=SkillRegistry()
        )
        chat = FakeChat("discord")
        desk = Desk(services, Engine(services), {"discord": chat})
        try:
            ids = []
            for service in ("checkout", "payments"):
                hook = parse_webhook(payload(alert(service=service, namespace="shop")))
                ids.append((await desk.receive(hook)).incident.id)
            await desk.incidents.ack(ids[0], "slack:UBOB")
            done = payload(alert(service="payments", namespace="shop", status="resolved"))
            await desk.receive(parse_webhook(done))
            return ids
        finally:
            await desk.close()
            await services.close()

    checkout, payments = asyncio.run(seed())
    runner = CliRunner()
    listed = runner.invoke(app, ["incidents"])
    assert listed.exit_code == 0, listed.output
    assert "2 incidents" in listed.output
    assert checkout in listed.output and payments in listed.output
    assert "HighErrorRate: checkout in shop" in listed.output and "slack:UBOB" in listed.output
    firing = runner.invoke(app, ["incidents", "--status", "resolved", "--since", "24h"])
    assert payments in firing.output and checkout not in firing.output
    assert "1 incidents (resolved since 24h)" in firing.output
    as_json = json.loads(runner.invoke(app, ["incidents", "--json"]).output)
    assert [i["id"] for i in as_json] == [payments, checkout]
    assert as_json[1]["acked_by"] == "slack:UBOB" and as_json[1]["status"] == "acknowledged"
    assert as_json[0]["thread"] == "discord:thread-2" and as_json[0]["actions_proposed"] == []
    bad = runner.invoke(app, ["incidents", "--status", "burning"])
    assert bad.exit_code == 64 and "firing, acknowledged, resolved" in bad.output


# -- the real servers ------------------------------------------------------------------------

#: rules of the real Prometheus: checkout's errors (critical, team payments) and cart's
#: traffic (info); windows of 5 s, so that the errors' alert ends soon after they stop
REAL_RULES = """groups:
  - name: opsbot-incidents-test
    interval: 1s
    rules:
      - alert: CheckoutErrors
        expr: sum by (service, namespace) (rate(http_requests_total{service="checkout", code=~"5.."}[5s])) > 0
        labels: {severity: critical, team: payments}
        annotations:
          summary: "{{ $labels.service }} answers errors"
          runbook_url: https://runbooks.test/checkout-errors
      - alert: CartTraffic
        expr: sum by (service, namespace) (rate(http_requests_total{service="cart"}[5s])) > 0
        labels: {severity: info, team: web}
        annotations: {summary: "cart has traffic"}
"""


async def until(predicate: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = await predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {within:g}s")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(240)
async def test_a_real_rule_fires_through_the_real_alertmanager_into_one_thread(
    tmp_path: Path, policy: Policy
) -> None:
    """Prometheus evaluates a rule, Alertmanager groups and sends it to ``opsbot serve``'s
    ``/alertmanager`` (its webhook_configs, with a bearer token): the incident opens one
    thread in the channel its labels route to, resends go into it, the triage runs there, and
    when the rule stops firing the resolved notification marks it resolved."""
    if missing := missing_binaries():
        unavailable(f"missing {', '.join(missing)}")
    port = free_port()
    stack = LocalStack(
        kubernetes=False,
        webhook_url=f"http://127.0.0.1:{port}/alertmanager",
        webhook_token=TOKEN,
        repeat_interval="2s",
        rules=REAL_RULES,
    )
    await asyncio.to_thread(stack.start)
    async with FakeSlack() as slack:
        settings = make_settings(
            f"sqlite+aiosqlite:///{tmp_path / 'real.db'}",
            tmp_path,
            http_host="127.0.0.1",
            http_port=port,
            slack_bot_token="xoxb-test",
            slack_signing_secret="secret",
            slack_api_url=slack.base_url,
            alert_routes=[
                AlertRoute(
                    matchers={"severity": "critical", "team": "payments"}, channel="slack:CPAY"
                )
            ],
            alert_channel="slack:COPS",
            alertmanager_token=TOKEN,
            prometheus_url=stack.prometheus_url,
            alertmanager_url=stack.alertmanager_url,
        )
        services = await build_services(settings, policy=policy)
        incidents = Incidents(services.store)
        task = asyncio.create_task(serve(services))

        def roots(channel: str) -> list[Any]:
            return [
                c
                for c in slack.posted()
                if c.params["channel"] == channel and not c.params.get("thread_ts")
            ]

        async def incident_in(channel: str, **wanted: Any) -> Any:
            for found in await incidents.find():
                if (
                    found.channel == channel
                    and found.thread
                    and all(
                        getattr(found, k) >= v if isinstance(v, int) else getattr(found, k) == v
                        for k, v in wanted.items()
                    )
                ):
                    return found
            return None

        try:
            opened = await until(
                lambda: incident_in("slack:CPAY"), 90, "CheckoutErrors opened no incident"
            )
            assert opened.title == "CheckoutErrors: checkout in shop"
            assert opened.labels["team"] == "payments" and opened.receiver == "opsbot"
            [root] = roots("CPAY")
            assert "CheckoutErrors: checkout in shop" in root.params["text"]
            assert "checkout answers errors" in root.params["text"]
            assert opened.thread == f"slack:CPAY:{root.answer['ts']}"
            # the other rule's labels route it to the default channel
            cart = await until(lambda: incident_in("slack:COPS"), 30, "CartTraffic")
            assert cart.title == "CartTraffic: cart in shop" and len(roots("COPS")) == 1
            # Alertmanager's resends (repeat_interval 2s) go to the same incident
            await until(lambda: incident_in("slack:CPAY", deliveries=3), 30, "no resends")
            assert len(roots("CPAY")) == 1
            # the triage ran in the thread as alertmanager:opsbot
            ts = root.answer["ts"]

            async def triaged() -> bool:
                said = " ".join(
                    str(c.params.get("text"))
                    for c in slack.posted()
                    if c.params.get("thread_ts") == ts
                )
                return "incident.triage" in said and "Allowed by rule" in said

            await until(triaged, 60, "no triage in the thread")
            # the rule stops firing: resolved in the same thread, the incident resolved
            assert stack.exporter is not None
            stack.exporter.services["checkout"] = (6, 0.0, 0.3)
            resolved = await until(
                lambda: incident_in("slack:CPAY", status="resolved"), 90, "not resolved"
            )
            assert resolved.id == opened.id and resolved.resolved_at is not None
            assert len(roots("CPAY")) == 1
            thread = [c.params for c in slack.posted() if c.params.get("thread_ts") == ts]
            assert any("Resolved" in str(p.get("text")) for p in thread)
            assert "RESOLVED" in slack.messages[("CPAY", ts)]["text"]
            events = [r.event for r in await services.audit.search(request_id=opened.id)]
            assert AuditEvent.INCIDENT_OPENED in events and AuditEvent.INCIDENT_RESOLVED in events
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.to_thread(stack.stop)
            await services.close()


@pytest.mark.timeout(180)
async def test_two_replicas_receiving_a_group_at_once_open_one_thread(
    db_url: str, tmp_path: Path
) -> None:
    """Two ``opsbot serve`` processes on one database get each group's notification at the
    same moment (as two Alertmanagers, or a retry, would send it): one opens the thread."""
    from opsbot.store import open_store

    store = await open_store(db_url)  # migrated once, as a deploy's migration step would
    await store.close()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPSBOT_", "SLACK_", "DISCORD_"))
        and k not in ("PROMETHEUS_URL", "ALERTMANAGER_URL", "LOKI_URL", "KUBECONFIG")
    }
    ports = [free_port(), free_port()]
    async with FakeSlack() as slack:
        env.update(
            OPSBOT_DATABASE_URL=db_url,
            OPSBOT_POLICY_PATH=str(ROOT / "policies"),
            OPSBOT_CHART_DIR=str(tmp_path / "charts"),
            OPSBOT_HTTP_HOST="127.0.0.1",
            OPSBOT_ALERT_CHANNEL="slack:CRACE",
            OPSBOT_ALERTMANAGER_TOKEN=TOKEN,
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET="secret",
            SLACK_API_URL=slack.base_url,
        )
        logs = [(tmp_path / f"replica-{i}.log").open("wb") for i in range(2)]
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "opsbot.cli",
                "serve",
                env={**env, "OPSBOT_HTTP_PORT": str(port)},
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            for port, log in zip(ports, logs, strict=True)
        ]
        try:
            async with httpx.AsyncClient(timeout=20) as client:
                for port, proc in zip(ports, procs, strict=True):

                    async def up(port: int = port, proc: Any = proc) -> bool:
                        assert proc.returncode is None, (tmp_path / "replica-0.log").read_text()
                        try:
                            return (await client.get(f"http://127.0.0.1:{port}/healthz")).is_success
                        except httpx.TransportError:
                            return False

                    await until(up, 60, f"opsbot serve on {port} did not start")
                headers = {"Authorization": f"Bearer {TOKEN}"}
                groups = 6
                for i in range(groups):
                    body = payload(
                        alert(f"Race{i}", service="checkout", namespace="shop"),
                        group=f'{{}}:{{alertname="Race{i}"}}',
                    )
                    answers = await asyncio.gather(
                        *(
                            client.post(
                                f"http://127.0.0.1:{p}/alertmanager", json=body, headers=headers
                            )
                            for p in ports
                        )
                    )
                    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
                    results = [a.json() for a in answers]
                    assert sorted(r["opened"] for r in results) == [False, True], results
                    assert results[0]["incident"] == results[1]["incident"]
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                await asyncio.wait_for(proc.wait(), 20)
            for log in logs:
                log.close()
        roots = [
            c
            for c in slack.posted()
            if c.params["channel"] == "CRACE" and not c.params.get("thread_ts")
        ]
        assert len(roots) == groups
        store = await open_store(db_url)
        try:
            found = await Incidents(store).find()
        finally:
            await store.close()
        assert len(found) == groups and all(i.thread for i in found)
        assert sorted(i.deliveries for i in found) == [2] * groups
