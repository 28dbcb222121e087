"""The audit console (``/audit``) through aiohttp's test client: access (off unless configured,
401 for the anonymous, proxy headers only from trusted addresses, policy subjects, the token
and its login), every view audited, bad filters 400, paging, the request chain, exports,
CSRF and security headers, and the chain status: tampering, truncation against an anchor,
reordering, retention across the boundary, and verification that leaves /healthz alone."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import delete, select, update

from opsbot.adapters.console import CONSOLE, Console
from opsbot.adapters.http import make_app
from opsbot.anchors import Anchorer, AnchorFile
from opsbot.audit import AuditEvent, AuditRecord
from opsbot.policy import Policy
from opsbot.services import Services, build_services
from opsbot.store import AuditRow
from tests.conftest import make_settings
from tests.console_seed import (
    ALICE,
    BOB,
    CAROL,
    ROLLBACK_APPROVAL,
    ROLLBACK_REQUEST,
    seed,
)

TOKEN = "console-token-4f9a1c2e"
POLICY = """
groups:
  security: ["web-group:security", "console:auditor"]
  sre: [slack:U01ALICE]
  oncall: [slack:U02BOB, slack:U03CAROL]
rules:
  - name: security reviews the audit log
    subjects: [group:security, "web:lead@example.com"]
    skills: [audit.search]
    effect: allow
"""
PROXY = {"X-Forwarded-User": "alice@example.com", "X-Forwarded-Groups": "staff,security"}
HTML = {"Accept": "text/html"}

Client = TestClient  # type: ignore[type-arg]


async def console_services(tmp_path: Path, url: str = "", **settings: Any) -> Services:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    defaults: dict[str, Any] = {
        "console_token": TOKEN,
        "console_token_subject": "console:auditor",
        "console_trusted_proxies": "127.0.0.1",
        "audit_anchor_path": tmp_path / "anchors.jsonl",
        "audit_anchor_key": "anchor-key",
        "console_verify_interval": 3600,
    }
    return await build_services(
        make_settings(
            url or f"sqlite+aiosqlite:///{tmp_path / 'console.db'}",
            tmp_path,
            **{**defaults, **settings},
        ),
        policy=Policy.load(policy_file),
    )


@pytest.fixture
async def svc(tmp_path: Path, db_url: str) -> AsyncIterator[Services]:
    """The console's services on SQLite and on PostgreSQL."""
    services = await console_services(tmp_path, db_url)
    yield services
    await services.close()


@pytest.fixture
async def client(svc: Services) -> AsyncIterator[Client]:
    c = TestClient(TestServer(make_app(svc)))
    await c.start_server()
    yield c
    await c.close()


def console_of(client: Client) -> Console:
    return client.server.app[CONSOLE]


async def views(svc: Services) -> list[AuditRecord]:
    return [
        r
        for r in await svc.audit.search(limit=1000)
        if r.event in (AuditEvent.CONSOLE_VIEW, AuditEvent.CONSOLE_EXPORT)
    ]


# -- access -----------------------------------------------------------------------------------


async def test_the_console_is_off_unless_configured(tmp_path: Path) -> None:
    services = await console_services(tmp_path, console_token=None, console_trusted_proxies="")
    await services.audit.append(AuditEvent.REQUEST, actor="shell:alice", detail="secret plans")
    c = TestClient(TestServer(make_app(services)))
    await c.start_server()
    try:
        for path in ("/audit", "/audit/export.csv", "/audit/requests/x"):
            answer = await c.get(path, headers=PROXY)
            body = await answer.text()
            assert answer.status == 404, path
            assert "console is off" in body and "OPSBOT_CONSOLE_TOKEN" in body
            assert "alice" not in body and "secret" not in body
        assert (await c.get("/healthz")).status == 200
    finally:
        await c.close()
        await services.close()


async def test_anonymous_requests_get_401_and_no_data(svc: Services, client: Client) -> None:
    await seed(svc.store)
    for path in (
        "/audit",
        "/audit/requests/" + ROLLBACK_REQUEST,
        "/audit/export.csv",
        "/audit/chain",
    ):
        answer = await client.get(path)
        body = await answer.text()
        assert answer.status == 401, path
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert "U01ALICE" not in body and "payments" not in body
    page = await client.get("/audit", headers=HTML)  # a browser gets the sign-in form
    assert page.status == 401 and "Sign in to the audit console" in await page.text()
    assert (await client.get("/audit", headers={"Authorization": "Bearer wrong"})).status == 401
    assert await views(svc) == []  # the anonymous leave no records


async def test_the_token_opens_it_and_every_view_is_audited(svc: Services, client: Client) -> None:
    await seed(svc.store)
    answer = await client.get("/audit", headers={"Authorization": f"Bearer {TOKEN}", **HTML})
    assert answer.status == 200
    page = await answer.text()
    assert "rolled back deployment shop/payments" in page and "console:auditor" in page
    [view] = await views(svc)
    assert view.actor == "console:auditor" and view.channel == "console"
    assert view.event == AuditEvent.CONSOLE_VIEW and view.detail == "GET /audit"
    assert view.args["via"] == "token"


async def test_proxy_headers_from_a_trusted_address_sign_in_as_a_policy_subject(
    svc: Services, client: Client
) -> None:
    await seed(svc.store)
    answer = await client.get("/audit?actor=U01ALICE&skill=k8s.rollback", headers={**PROXY, **HTML})
    assert answer.status == 200
    assert "web:alice@example.com" in await answer.text()
    [view] = await views(svc)
    assert view.actor == "web:alice@example.com" and view.args["via"] == "proxy"
    assert view.args["filters"] == {"actor": "U01ALICE", "skill": "k8s.rollback"}
    assert view.detail == "GET /audit?actor=U01ALICE&skill=k8s.rollback"


async def test_a_person_the_policy_does_not_allow_sees_nothing(
    svc: Services, client: Client
) -> None:
    await seed(svc.store)
    answer = await client.get("/audit", headers={"X-Forwarded-User": "mallory@example.com", **HTML})
    body = await answer.text()
    assert answer.status == 403
    assert "web:mallory@example.com" in body and "audit.search" in body
    assert "payments" not in body
    [view] = await views(svc)
    assert view.actor == "web:mallory@example.com" and view.outcome == "denied"


async def test_proxy_headers_from_an_untrusted_address_are_ignored(tmp_path: Path) -> None:
    services = await console_services(tmp_path, console_trusted_proxies="10.9.8.7, 192.0.2.0/24")
    await seed(services.store)
    c = TestClient(TestServer(make_app(services)))
    await c.start_server()
    try:
        with structlog.testing.capture_logs() as logs:
            answer = await c.get("/audit", headers=PROXY)
        assert answer.status == 401
        assert "payments" not in await answer.text()
        [warning] = [e for e in logs if e["event"] == "console.untrusted_proxy_header"]
        assert warning["remote"] == "127.0.0.1" and warning["user"] == "alice@example.com"
        # the token still works from there
        ok = await c.get("/audit", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200
    finally:
        await c.close()
        await services.close()


async def test_the_login_form_sets_a_strict_http_only_session(
    svc: Services, client: Client
) -> None:
    form = await (await client.get("/audit/login", headers=HTML)).text()
    csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    wrong = await client.post(
        "/audit/login", data={"csrf": csrf, "token": "nope"}, headers=HTML, allow_redirects=False
    )
    assert wrong.status == 401 and "not the console token" in await wrong.text()
    signed = await client.post(
        "/audit/login",
        data={"csrf": csrf, "token": TOKEN, "next": "/audit/approvals"},
        allow_redirects=False,
    )
    assert signed.status == 303 and signed.headers["Location"] == "/audit/approvals"
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/audit" in cookie
    assert TOKEN not in cookie
    assert (await client.get("/audit/approvals")).status == 200  # the cookie jar sends it
    # no open redirect, and no login from another site
    again = await client.post(
        "/audit/login",
        data={"csrf": csrf, "token": TOKEN, "next": "https://evil.example/"},
        allow_redirects=False,
    )
    assert again.headers["Location"] == "/audit"
    cross = await client.post(
        "/audit/login",
        data={"csrf": csrf, "token": TOKEN},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status == 403


async def test_csrf_and_cross_site_requests_are_refused(svc: Services, client: Client) -> None:
    no_token = await client.post("/audit/chain/verify", headers=PROXY, data={})
    assert no_token.status == 403 and "form expired" in await no_token.text()
    chain = await (await client.get("/audit/chain", headers={**PROXY, **HTML})).text()
    csrf = chain.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    ok = await client.post(
        "/audit/chain/verify", headers=PROXY, data={"csrf": csrf}, allow_redirects=False
    )
    assert ok.status == 303
    other_origin = await client.post(
        "/audit/chain/verify",
        headers={**PROXY, "Origin": "https://evil.example"},
        data={"csrf": csrf},
    )
    assert other_origin.status == 403
    fetch = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    assert (await client.get("/audit/export.csv", headers={**PROXY, **fetch})).status == 403
    assert (await client.get("/audit", headers={**PROXY, **fetch})).status == 403
    link = {
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "document",
    }
    assert (await client.get("/audit", headers={**PROXY, **link})).status == 200  # a chat link
    download = {**link}
    assert (await client.get("/audit/export.csv", headers={**PROXY, **download})).status == 403


async def test_security_headers_on_every_console_answer(svc: Services, client: Client) -> None:
    for path, headers, status in (
        ("/audit", PROXY, 200),
        ("/audit", {}, 401),
        ("/audit?since=abc", PROXY, 400),
        ("/audit/requests/nothing-here", PROXY, 404),
    ):
        answer = await client.get(path, headers=headers)
        assert answer.status == status, path
        h = answer.headers
        assert "default-src 'none'" in h["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
        assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "no-referrer" and h["Cache-Control"] == "no-store"
    assert "Content-Security-Policy" not in (await client.get("/healthz")).headers


# -- filters, paging, the request chain, exports --------------------------------------------


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("since=abc", "since must be a duration such as 24h"),
        ("since=99999d", "since may reach back at most"),
        ("from=yesterday", "from must be a date or a date and time"),
        ("from=2026-11-24&to=2026-11-20", "to must be later than from"),
        ("limit=0", "limit must be a whole number from 10 to 500"),
        ("limit=1e3", "limit must be a whole number from 10 to 500"),
        ("before=-5", "before must be a whole number"),
        ("approval=DROP%20TABLE", "approval must be an approval id"),
        ("outcome=%27%20OR%201%3D1", "outcome must be one word"),
        ("actor=%3Cscript%3E", "actor may hold letters"),
        ("hours=48", "unknown filter 'hours'"),
        ("q=" + "x" * 300, "q is at most 200 characters long"),
    ],
)
async def test_bad_filter_values_are_400_with_a_message(
    svc: Services, client: Client, query: str, says: str
) -> None:
    answer = await client.get(f"/audit?{query}", headers=PROXY)
    assert answer.status == 400
    assert says in await answer.text()
    page = await client.get(f"/audit?{query}", headers={**PROXY, **HTML})
    assert page.status == 400 and "That filter does not work" in await page.text()
    assert (await client.get(f"/audit/export.csv?{query}", headers=PROXY)).status == 400


async def test_filters_select_and_huge_results_page(svc: Services, client: Client) -> None:
    await seed(svc.store)
    for i in range(130):
        await svc.audit.append(AuditEvent.REQUEST, actor=f"shell:bulk{i % 3}", detail=f"bulk {i}")
    seen: list[int] = []
    query = "actor=bulk&limit=50"
    for _ in range(5):
        page = await (await client.get(f"/audit?{query}", headers=PROXY)).text()
        seqs = [int(s.split('"', 1)[0]) for s in page.split('href="/audit/records/')[1:]]
        seen += seqs
        if "Older »" not in page:
            break
        query = (
            page.split('class="button" href="/audit?', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        )
    assert len(seen) == 130 and len(set(seen)) == 130 and seen == sorted(seen, reverse=True)
    assert "130 records in the last 7d" in (
        await (await client.get("/audit?actor=bulk", headers=PROXY)).text()
    )
    rollback = await (
        await client.get(f"/audit?approval={ROLLBACK_APPROVAL}&since=3d", headers=PROXY)
    ).text()
    assert "rolled back deployment shop/payments" in rollback and "bulk" not in rollback
    text = await (await client.get("/audit?q=failing%20checkouts&since=3d", headers=PROXY)).text()
    assert "roll back payments in shop" in text and "restart checkout" not in text
    denied = await (await client.get("/audit?outcome=deny&since=3d", headers=PROXY)).text()
    assert "no rule allows discord:2222" in denied and "bulk" not in denied


async def test_the_request_view_shows_the_whole_chain(svc: Services, client: Client) -> None:
    await seed(svc.store)
    answer = await client.get(f"/audit/requests/{ROLLBACK_REQUEST}", headers={**PROXY, **HTML})
    page = await answer.text()
    assert answer.status == 200
    for expected in (
        ALICE,  # requester
        BOB,
        CAROL,  # both approvers, with when
        "rollbacks need two approvers",
        "shop/payments:1.8.2",  # the executed patch
        "/spec/template",
        "rolled back deployment shop/payments from revision 8 to 7",  # the result
        "rollout complete: 3/3 replicas updated",  # the follow-up
        "https://slack.com/archives/C0OPS/p1732450000123456?thread_ts=1732450000.123456",
    ):
        assert expected in page, expected
    order = [
        page.index(f"step-{s}")
        for s in (
            "request",
            "plan",
            "policy",
            "approval",
            "vote",
            "execution",
            "result",
            "follow-up",
        )
    ]
    assert order == sorted(order)
    assert (await client.get("/audit/requests/nope", headers=PROXY)).status == 404


async def test_exports_csv_and_jsonl_of_the_filtered_view(svc: Services, client: Client) -> None:
    await seed(svc.store)
    await svc.audit.append(AuditEvent.REQUEST, actor="shell:eve", detail='=HYPERLINK("x")')
    answer = await client.get("/audit/export.csv?skill=k8s.rollback&since=3d", headers=PROXY)
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in answer.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await answer.text())))
    assert {r["skill"] for r in rows} == {"k8s.rollback"}
    assert {r["actor"] for r in rows} >= {ALICE, BOB, CAROL}
    assert any("shop/payments:1.8.2" in r["args"] for r in rows)
    evil = await (await client.get("/audit/export.csv?actor=eve", headers=PROXY)).text()
    assert "'=HYPERLINK" in evil  # never a formula in a spreadsheet
    lines = (
        await (await client.get("/audit/export.jsonl?since=3d", headers=PROXY)).text()
    ).splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    assert all(
        AuditRecord(**{**r, "at": datetime.fromisoformat(r["at"])}).computed_hash() == r["hash"]
        for r in records
    )
    exports = [r for r in await views(svc) if r.event == AuditEvent.CONSOLE_EXPORT]
    assert [e.args["format"] for e in exports] == ["csv", "csv", "jsonl"]
    assert exports[0].args["filters"] == {"skill": "k8s.rollback", "since": "3d"}


async def test_approvals_and_incidents_pages(svc: Services, client: Client) -> None:
    await seed(svc.store)
    page = await (await client.get("/audit/approvals", headers={**PROXY, **HTML})).text()
    for expected in ("m5tv2k", "h3np9c", ROLLBACK_APPROVAL, "q4w8ze", "median time to decide"):
        assert expected in page
    assert (await client.get("/audit/approvals?state=bogus", headers=PROXY)).status == 400
    incidents = await client.get("/audit/incidents", headers={**PROXY, **HTML})
    assert incidents.status == 200


# -- the chain ------------------------------------------------------------------------------


async def test_a_tampered_record_is_named_on_the_chain_view(svc: Services, client: Client) -> None:
    await seed(svc.store)
    target = (await svc.audit.search(actor="U03CAROL", limit=100))[-1].seq
    async with svc.store.sessions() as session:
        await session.execute(
            update(AuditRow).where(AuditRow.seq == target).values(actor="slack:U09MALLORY")
        )
        await session.commit()
    await console_of(client).watcher.check(full=True)
    chain = await (await client.get("/audit/chain", headers={**PROXY, **HTML})).text()
    assert f'Broken at <a href="/audit/records/{target}">record {target}</a>' in chain
    assert f"record {target}: content does not match its hash (edited)" in chain
    timeline = await (await client.get("/audit?since=3d", headers={**PROXY, **HTML})).text()
    assert "tampered" in timeline and "U09MALLORY" in timeline  # shown, never hidden
    record = await (await client.get(f"/audit/records/{target}", headers={**PROXY, **HTML})).text()
    assert "content does not match its hash" in record


async def test_truncation_is_caught_against_the_last_anchor(svc: Services, client: Client) -> None:
    await seed(svc.store)
    file = AnchorFile(svc.settings.audit_anchor_path, "anchor-key")  # type: ignore[arg-type]
    anchor = await Anchorer(svc.audit, file, interval=60).anchor_once()
    assert anchor is not None and anchor.sig
    assert await Anchorer(svc.audit, file, interval=60).anchor_once() is None  # head unchanged
    head = anchor.seq
    async with svc.store.sessions() as session:  # delete the newest three records
        await session.execute(delete(AuditRow).where(AuditRow.seq > head - 3))
        await session.commit()
    assert (await svc.audit.verify()).ok  # the chain alone cannot tell
    status = await svc.audit.verify_chain(anchors=file.points())
    [problem] = status.problems
    assert problem.kind == "truncated" and problem.seq == head - 2
    assert f"records {head - 2}..{head} were deleted" in problem.message
    await console_of(client).watcher.check(full=True)
    chain = await (await client.get("/audit/chain", headers={**PROXY, **HTML})).text()
    assert f"the log ends at record {head - 3}" in chain and "truncated" in chain


async def test_a_rewritten_table_and_an_edited_anchor_are_caught(svc: Services) -> None:
    for i in range(6):
        await svc.audit.append(AuditEvent.REQUEST, actor="shell:alice", detail=f"r{i}")
    path = svc.settings.audit_anchor_path
    assert path is not None
    file = AnchorFile(path, "anchor-key")
    await Anchorer(svc.audit, file, interval=60).anchor_once()
    # a forger rewrites every record from 3 on with fresh, consistent hashes
    records = await svc.audit.search(limit=100)
    prev = records[1].hash
    async with svc.store.sessions() as session:
        for r in records[2:]:
            forged = AuditRecord(
                **{**r.as_dict(), "at": r.at, "detail": "nothing", "prev_hash": prev}
            )
            prev = forged.computed_hash()
            await session.execute(
                update(AuditRow)
                .where(AuditRow.seq == r.seq)
                .values(detail="nothing", prev_hash=forged.prev_hash, hash=prev)
            )
        await session.commit()
    assert (await svc.audit.verify()).ok
    status = await svc.audit.verify_chain(anchors=file.points())
    assert [p.kind for p in status.problems] == ["rewritten"] and status.first_broken == 6
    # an anchor line edited to match is refused by its signature
    line = json.loads(path.read_text())
    path.write_text(json.dumps({**line, "hash": prev}) + "\n")
    read = file.read()
    assert read.anchors == [] and "signature does not match" in read.problems[0]


async def test_a_reordered_log_names_the_first_record_out_of_place(svc: Services) -> None:
    for i in range(6):
        await svc.audit.append(AuditEvent.REQUEST, actor="shell:alice", detail=f"r{i}")
    three, four = await svc.audit.get(3), await svc.audit.get(4)
    assert three and four
    async with svc.store.sessions() as session:  # swap two records' contents
        for target, source in ((3, four), (4, three)):
            await session.execute(
                update(AuditRow)
                .where(AuditRow.seq == target)
                .values(
                    detail=source.detail, prev_hash=source.prev_hash, hash=source.hash, at=source.at
                )
            )
        await session.commit()
    status = await svc.audit.verify_chain()
    assert status.first_broken == 3 and not status.ok


async def test_retention_exports_then_removes_and_the_chain_stays_verifiable(
    svc: Services, tmp_path: Path
) -> None:
    old = datetime.now(UTC) - timedelta(days=400)
    await seed(svc.store, now=old, approvals=False)
    kept_from = (await svc.audit.head())[0] + 1
    await seed(svc.store)
    exports = tmp_path / "exports"
    done = await svc.audit.retain(
        before=datetime.now(UTC) - timedelta(days=365), export_dir=exports
    )
    assert done is not None and done.first_seq == 1 and done.through_seq == kept_from - 1
    lines = done.export.read_text().splitlines()
    assert len(lines) == done.records == kept_from - 1
    assert json.loads(lines[-1])["hash"] == done.through_hash
    assert await svc.audit.get(1) is None
    status = await svc.audit.verify_chain()
    assert status.ok, status.problems
    assert status.first_seq == kept_from and "retention checkpoint" in status.base
    assert (await svc.audit.verify()).ok  # `opsbot audit verify` too
    # the first record kept, relinked to a forged prefix, is named
    async with svc.store.sessions() as session:
        await session.execute(
            update(AuditRow).where(AuditRow.seq == kept_from).values(prev_hash="f" * 64)
        )
        await session.commit()
    assert (await svc.audit.verify_chain()).first_broken == kept_from
    # nothing old enough: nothing happens; a broken prefix is never removed out of sight
    assert await svc.audit.retain(before=old - timedelta(days=1), export_dir=exports) is None
    with pytest.raises(ValueError, match="not removing records"):
        await svc.audit.retain(before=datetime.now(UTC), export_dir=exports)


async def test_verification_runs_off_the_event_loop(svc: Services, client: Client) -> None:
    """A full walk of 10k records while /healthz keeps answering quickly."""
    rows = []
    prev = (await svc.audit.head())[1]
    start = datetime.now(UTC) - timedelta(hours=1)
    for seq in range(1, 10_001):
        record = AuditRecord(
            seq=seq,
            at=start,
            event="request.received",
            actor="shell:load",
            detail=f"r{seq}",
            prev_hash=prev,
        )
        prev = record.computed_hash()
        rows.append(
            AuditRow(
                **{k: v for k, v in record.as_dict().items() if k not in ("at", "hash")},
                at=start,
                hash=prev,
            )
        )
    async with svc.store.sessions() as session:
        session.add_all(rows)
        await session.commit()
    walk = asyncio.create_task(console_of(client).watcher.check(full=True))
    worst = 0.0
    while not walk.done():
        began = time.monotonic()
        assert (await client.get("/healthz")).status == 200
        worst = max(worst, time.monotonic() - began)
        await asyncio.sleep(0.01)
    watch = await walk
    assert watch.full is not None and watch.full.ok and watch.full.checked == 10_000
    assert worst < 0.25, f"/healthz waited {worst:.3f}s during verification"
    # later checks are incremental: only the new records are walked
    await svc.audit.append(AuditEvent.REQUEST, actor="shell:x")
    watch = await console_of(client).watcher.check(full=False)
    assert watch.latest is not None and watch.latest.head_seq == 10_001 and watch.ok


async def test_views_write_nothing_but_their_own_records(svc: Services, client: Client) -> None:
    await seed(svc.store)
    async with svc.store.sessions() as session:
        before = len((await session.scalars(select(AuditRow.seq))).all())
    for path in (
        "/audit",
        "/audit/approvals",
        "/audit/chain",
        f"/audit/requests/{ROLLBACK_REQUEST}",
    ):
        assert (await client.get(path, headers=PROXY)).status == 200
    async with svc.store.sessions() as session:
        after = len((await session.scalars(select(AuditRow.seq))).all())
    assert after - before == 4
    assert (await svc.audit.verify()).ok


async def test_incidents_are_listed_and_filter_the_timeline(svc: Services, client: Client) -> None:
    from opsbot.store import IncidentRow

    await seed(svc.store)
    opened = datetime.now(UTC) - timedelta(hours=2)
    thread = "slack:C0OPS:1732520000.000400"  # where bob listed the firing alerts
    async with svc.store.sessions() as session:
        session.add(
            IncidentRow(
                id="inc7q2",
                group_key='{}:{alertname="HighErrorRate"}',
                group_hash="h" * 64,
                open_key=None,
                receiver="opsbot",
                status="resolved",
                title="HighErrorRate: checkout 5xx above 5%",
                labels={"alertname": "HighErrorRate", "service": "checkout"},
                annotations={},
                alerts=[],
                external_url="",
                channel="slack:C0OPS",
                thread=thread,
                root="",
                acked_by="slack:U02BOB",
                acked_at=opened + timedelta(minutes=3),
                opened_at=opened,
                updated_at=opened,
                resolved_at=opened + timedelta(minutes=41),
                claimed_at=opened,
                deliveries=2,
                version=3,
            )
        )
        await session.commit()
    page = await (await client.get("/audit/incidents", headers={**PROXY, **HTML})).text()
    for expected in ("inc7q2", "HighErrorRate: checkout 5xx above 5%", "slack:U02BOB", "41m"):
        assert expected in page, expected
    assert "https://slack.com/archives/C0OPS/p1732520000000400" in page
    timeline = await (await client.get("/audit?incident=inc7q2", headers=PROXY)).text()
    assert "2 alerts firing: HighErrorRate" in timeline and "rolled back" not in timeline


def test_a_bad_trusted_proxy_setting_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opsbot.config import load_settings
    from opsbot.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPSBOT_CONSOLE_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "OPSBOT_CONSOLE_TRUSTED_PROXIES='10.0.0.0/8, proxy.internal'" in str(err.value)
    assert "'proxy.internal' is not an address or a network" in str(err.value)


def test_thread_links() -> None:
    from opsbot.adapters.console import thread_link
    from opsbot.config import Settings

    settings = Settings(console_slack_url="https://acme.slack.com/", console_discord_guild="42")
    assert thread_link("slack:C0OPS:1732450000.123456", settings) == (
        "https://acme.slack.com/archives/C0OPS/p1732450000123456"
        "?thread_ts=1732450000.123456&cid=C0OPS"
    )
    assert thread_link("discord:1190000000000000001", settings) == (
        "https://discord.com/channels/42/1190000000000000001"
    )
    assert thread_link("discord:1190000000000000001", Settings()) == ""
    assert thread_link("shell:abc", settings) == "" and thread_link("", settings) == ""
