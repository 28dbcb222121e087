"""The engine's guarantees, with scripted planners standing in for a misbehaving model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opsbot.audit import AuditEvent
from opsbot.engine import Engine
from opsbot.model import Actor, Answer, Invocation, Plan, Request, Run, Step
from opsbot.services import Services
from opsbot.skills.base import Skill
from tests.conftest import Thread

EVE = Actor(id="shell:eve")


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


async def run(services: Services, planner: Scripted, text: str = "x", actor: Actor = EVE) -> Thread:
    thread = Thread()
    await Engine(services, planner).handle(
        Request(actor=actor, channel="c", text=text, thread="T1"), thread
    )
    return thread


async def test_planner_sees_only_permitted_skills(sqlite_services: Services) -> None:
    planner = Scripted(Answer(text="nothing to do"))
    await run(sqlite_services, planner)
    assert "alerts.list" in planner.shown and "alerts.silence" not in planner.shown
    await run(sqlite_services, planner, actor=Actor(id="shell:alice"))
    assert "alerts.silence" in planner.shown


async def test_a_skill_outside_the_catalog_is_refused_and_audited(
    sqlite_services: Services,
) -> None:
    plan = Run(
        invocations=[Invocation(skill="alerts.silence", args={"matchers": {"alertname": "X"}})],
        planner="scripted",
    )
    thread = await run(sqlite_services, Scripted(plan))
    assert "Refused: alerts.silence is not available to shell:eve here." in thread.text
    assert not await sqlite_services.approvals.find(state=None)
    [denial] = await sqlite_services.audit.search(event=AuditEvent.POLICY)
    assert denial.outcome == "deny" and denial.skill == "alerts.silence"
    invented = await run(
        sqlite_services, Scripted(Run(invocations=[Invocation(skill="k8s.delete_cluster")]))
    )
    assert "Refused: unknown skill 'k8s.delete_cluster'." in invented.text


async def test_invented_or_invalid_arguments_are_rejected(sqlite_services: Services) -> None:
    plan = Run(invocations=[Invocation(skill="audit.search", args={"since": "forever", "evil": 1})])
    thread = await run(sqlite_services, Scripted(plan))
    assert "Invalid arguments for audit.search: since:" in thread.text
    [error] = await sqlite_services.audit.search(event=AuditEvent.ERROR)
    assert error.skill == "audit.search"


async def test_planner_crash_is_answered_and_the_engine_keeps_serving(
    sqlite_services: Services,
) -> None:
    thread = await run(sqlite_services, Scripted(RuntimeError("boom")))
    assert "I could not understand that (RuntimeError)." in thread.text
    thread = await run(sqlite_services, Scripted(Run(invocations=[Invocation(skill="help")])))
    assert "Skills you (shell:eve) may use here" in thread.text


async def test_every_step_is_posted_in_the_thread_and_audited(sqlite_services: Services) -> None:
    thread = await run(
        sqlite_services, Scripted(Run(invocations=[Invocation(skill="approvals.pending")]))
    )
    assert {m.thread for m in thread.messages} == {"T1"}
    assert [m.step for m in thread.messages] == [Step.PLAN, Step.POLICY, Step.RESULT]
    events = [r.event for r in await sqlite_services.audit.search()]
    assert events == [
        AuditEvent.REQUEST,
        AuditEvent.PLAN,
        AuditEvent.POLICY,
        AuditEvent.EXECUTION,
        AuditEvent.RESULT,
    ]
    assert all(r.thread == "T1" for r in await sqlite_services.audit.search())
