"""The engine's guarantees, with scripted planners standing in for a misbehaving model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from opsbot.audit import AuditEvent
from opsbot.model import Actor, Answer, Invocation, Plan, Request, Run, SkillResult, Step
from opsbot.skills.base import NoArgs, Skill, SkillContext, SkillError
from opsbot.testing import Messages, TestBot

EVE = Actor(id="shell:eve")

# the whole installed bot with the bundled policy, as opsbot's own shell runs it
pytestmark = pytest.mark.opsbot(installed=True, channel="c")


class Scripted:
    """A planner that returns a fixed plan and records the catalog it was shown."""

    name = "scripted"

    def __init__(self, plan: Plan | Exception) -> None:
        self.result = plan
        self.shown: list[str] = []

    async def explain(self, request: Request, withheld: Sequence[Skill[Any, Any]]) -> str | None:
        return None

    async def plan(
        self, request: Request, catalog: Sequence[Skill[Any, Any]], tools: Any = None
    ) -> Plan:
        self.shown = [s.name for s in catalog]
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


async def run(bot: TestBot, planner: Scripted, text: str = "x", actor: Actor = EVE) -> Messages:
    bot.use_planner(planner)
    return await bot.ask(text, as_=actor, thread="T1")


async def test_planner_sees_only_permitted_skills(opsbot_bot: TestBot) -> None:
    planner = Scripted(Answer(text="nothing to do"))
    await run(opsbot_bot, planner)
    assert "alerts.list" in planner.shown and "alerts.silence" not in planner.shown
    await run(opsbot_bot, planner, actor=Actor(id="shell:alice"))
    assert "alerts.silence" in planner.shown


async def test_a_skill_outside_the_catalog_is_refused_and_audited(
    opsbot_bot: TestBot,
) -> None:
    plan = Run(
        invocations=[Invocation(skill="alerts.silence", args={"matchers": {"alertname": "X"}})],
        planner="scripted",
    )
    thread = await run(opsbot_bot, Scripted(plan))
    assert "Refused: alerts.silence is not available to shell:eve here." in thread.text
    assert not await opsbot_bot.services.approvals.find(state=None)
    [denial] = await opsbot_bot.services.audit.search(event=AuditEvent.POLICY)
    assert denial.outcome == "deny" and denial.skill == "alerts.silence"
    invented = await run(
        opsbot_bot, Scripted(Run(invocations=[Invocation(skill="k8s.delete_cluster")]))
    )
    assert "Refused: unknown skill 'k8s.delete_cluster'." in invented.text


async def test_invented_or_invalid_arguments_are_rejected(opsbot_bot: TestBot) -> None:
    plan = Run(invocations=[Invocation(skill="audit.search", args={"since": "forever", "evil": 1})])
    thread = await run(opsbot_bot, Scripted(plan))
    assert "Invalid arguments for audit.search: since:" in thread.text
    [error] = await opsbot_bot.services.audit.search(event=AuditEvent.ERROR)
    assert error.skill == "audit.search"


async def test_planner_crash_is_answered_and_the_engine_keeps_serving(
    opsbot_bot: TestBot,
) -> None:
    thread = await run(opsbot_bot, Scripted(RuntimeError("boom")))
    assert "I could not understand that (RuntimeError)." in thread.text
    thread = await run(opsbot_bot, Scripted(Run(invocations=[Invocation(skill="help")])))
    assert "Skills you (shell:eve) may use here" in thread.text


async def test_every_step_is_posted_in_the_thread_and_audited(opsbot_bot: TestBot) -> None:
    thread = await run(
        opsbot_bot, Scripted(Run(invocations=[Invocation(skill="approvals.pending")]))
    )
    assert {m.thread for m in thread} == {"T1"}
    assert [m.step for m in thread] == [Step.PLAN, Step.POLICY, Step.RESULT]
    events = [r.event for r in await opsbot_bot.services.audit.search()]
    # a read's one record of running is its result (a write's start has its own: approvals)
    assert events == [
        AuditEvent.REQUEST,
        AuditEvent.PLAN,
        AuditEvent.POLICY,
        AuditEvent.RESULT,
    ]
    assert all(r.thread == "T1" for r in await opsbot_bot.services.audit.search())


@pytest.mark.parametrize(
    ("asked_text", "ordered_text"),
    [
        ("should we restart checkout in shop?", "restart checkout in shop"),
        # a model may answer "is checkout ok?" with a restart: a question with no write word
        # in it plans none either (it used to pass the gate: no write word read as no objection)
        ("is checkout in shop ok?", "checkout in shop, do it"),
    ],
)
async def test_no_planner_can_open_a_write_from_a_question(
    opsbot_bot: TestBot, asked_text: str, ordered_text: str
) -> None:
    """Structural: whatever a planner (a model included) proposes, a write reaches policy and
    approval only from an imperative request; a question gets what it would do, audited."""
    restart = Run(
        invocations=[
            Invocation(skill="k8s.restart", args={"name": "checkout", "namespace": "shop"})
        ],
        planner="scripted",
    )
    alice = Actor(id="shell:alice")
    asked = await run(opsbot_bot, Scripted(restart), asked_text, alice)
    assert "nothing was planned" in asked.text
    assert Step.POLICY not in [m.step for m in asked]
    [about] = await opsbot_bot.services.audit.search(event=AuditEvent.PLAN)
    assert about.outcome == "about" and about.skill == "k8s.restart"
    assert about.detail == "not planned: the request is question, not a request for it"
    ordered = await run(opsbot_bot, Scripted(restart), ordered_text, alice)
    assert Step.POLICY in [m.step for m in ordered]  # an order (no question) goes on to policy


class Investigate(Skill[NoArgs]):
    """A read skill that investigates by running other skills through the engine."""

    name = "test.investigate"
    summary = "test"
    Args = NoArgs
    keywords = {"investigate": 3.0}

    async def run(self, args: NoArgs, ctx: SkillContext[Any]) -> SkillResult:
        assert ctx.read is not None
        pending = await ctx.read(Invocation(skill="approvals.pending"))
        try:
            await ctx.read(Invocation(skill="alerts.silence", args={"matchers": {"a": "b"}}))
        except SkillError as exc:
            refused = str(exc)
        return SkillResult(summary=f"saw: {pending.summary if pending else '-'}; {refused}")


async def test_a_skill_reads_through_the_engine_and_never_writes(opsbot_bot: TestBot) -> None:
    opsbot_bot.add_skill(Investigate())
    opsbot_bot.use_policy(
        "rules:\n  - {name: reads, subjects: ['*'], skills: ['test.*', 'approvals.pending'], effect: allow}\n"
    )
    thread = await opsbot_bot.ask("investigate", as_="shell:eve")
    assert "Plan (test.investigate): `approvals.pending`" in thread.text  # the nested read...
    assert "`approvals.pending`: nothing pending" in thread.text  # ...ran, in the thread
    assert "saw: nothing pending; test.investigate may only run read skills" in thread.text
    events = [(r.event, r.skill) for r in await opsbot_bot.services.audit.search()]
    assert (AuditEvent.RESULT, "approvals.pending") in events
    assert all(skill != "alerts.silence" for _, skill in events)


@pytest.mark.parametrize("text", ["", "   ", "\x00\x01\x02 binary", "QUJD" * 60])
async def test_input_no_planner_can_read_never_reaches_one(opsbot_bot: TestBot, text: str) -> None:
    """Screened in the engine, before any planner (a model included) is asked."""
    planner = Scripted(RuntimeError("a planner was asked"))
    thread = await run(opsbot_bot, planner, text)
    assert "could not understand" not in thread.text and thread.text
    assert planner.shown == []
