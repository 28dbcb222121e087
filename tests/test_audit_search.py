"""audit.search in chat (issue 15, item 3): who / what / when / approved by, and a link to the
console view of those records."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from opsbot.model import Table
from opsbot.testing import Messages, TestBot
from tests.console_seed import seed

CONSOLE = "https://opsbot.example.com/audit"


def table_of(reply: Messages) -> Table:
    [table] = [b for m in reply for b in m.blocks if isinstance(b, Table)]
    return table


def link_of(reply: Messages) -> dict[str, list[str]]:
    text = reply.text
    url = text.split("](", 1)[1].split(")", 1)[0]
    assert url.startswith(CONSOLE + "?")
    return parse_qs(urlsplit(url).query)


@pytest.mark.opsbot(settings={"console_url": CONSOLE})
async def test_who_approved_the_rollback_of_payments(opsbot_bot: TestBot) -> None:
    await seed((await opsbot_bot.start()).store)
    reply = await opsbot_bot.ask("who approved the rollback of payments", as_="shell:carol")
    assert "audit.search skill=k8s.rollback target=payments since=7d" in reply.text
    table = table_of(reply)
    assert table.columns == ["who", "what", "when (UTC)", "approved by", "result"]
    [row] = table.rows
    assert row[0] == "slack:U01ALICE" and row[1] == "k8s.rollback shop/payments"
    assert row[3] == "slack:U02BOB, slack:U03CAROL"
    assert row[4].startswith("ok: rolled back deployment shop/payments from revision 8 to 7")
    assert link_of(reply) == {"since": ["7d"], "skill": ["k8s.rollback"], "q": ["payments"]}


@pytest.mark.opsbot(settings={"console_url": CONSOLE})
async def test_who_restarted_checkout_today(opsbot_bot: TestBot) -> None:
    await seed((await opsbot_bot.start()).store)
    reply = await opsbot_bot.ask("who restarted checkout today?", as_="shell:carol")
    [row] = table_of(reply).rows
    assert row[:2] == ["slack:U01ALICE", "k8s.restart shop/checkout"]
    assert row[3] == "slack:U02BOB" and row[4] == "ok: deployment shop/checkout restarted"
    assert link_of(reply)["skill"] == ["k8s.restart"]


@pytest.mark.opsbot(settings={"console_url": CONSOLE})
async def test_what_did_alice_do_in_the_last_day(opsbot_bot: TestBot) -> None:
    await seed((await opsbot_bot.start()).store)
    hour = await opsbot_bot.ask("what did alice do in the last hour", as_="shell:carol")
    assert "audit.search actor=alice since=1h" in hour.text
    [pending] = table_of(hour).rows  # the scale of cart, four minutes ago
    assert pending[1] == "k8s.scale staging/cart replicas=6"
    assert pending[3] == "none yet" and pending[4] == "waiting for approval"
    day = await opsbot_bot.ask("what did U02BOB do in the last 2 days", as_="shell:carol")
    rows = table_of(day).rows
    whats = [r[1] for r in rows]
    # bob's own read, and what he approved for alice, newest first
    assert whats[:2] == ["k8s.restart shop/checkout", "alerts.list"]
    assert "k8s.rollback shop/payments" in whats
    assert all(r[0] == "slack:U02BOB" or "slack:U02BOB" in r[3] for r in rows)
    assert link_of(day)["actor"] == ["U02BOB"]


async def test_no_records_and_no_console_link_without_a_console_url(opsbot_bot: TestBot) -> None:
    reply = await opsbot_bot.ask("who restarted checkout today?", as_="shell:carol")
    assert "No audit records for skill=k8s.restart target=checkout" in reply.text
    assert "](" not in reply.text
