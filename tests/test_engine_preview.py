"""A write's dry run (its preview) within the skill timeout: shown on the approval request and
on a request that only talks about the write; one that fails or hangs refuses the approval
with the reason, and is left out of the talk (Engine._dry_run, shared by both)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from opsbot.audit import AuditEvent
from opsbot.model import Actor, Invocation, Plan, Request, Run, SkillResult
from opsbot.skills.base import Risk, Skill, SkillContext, SkillError
from opsbot.testing import TestBot

POLICY = """
rules:
  - name: poke needs one
    subjects: ["*"]
    skills: [test.poke]
    effect: approve
    approvers: [shell:bob]
    min_approvals: 1
"""
ALICE = Actor(id="shell:alice")

# backend timeout 0.1 s: a skill (and its dry run) is given 0.3 s
pytestmark = pytest.mark.opsbot(policy=POLICY, settings={"backend_timeout": 0.1})


class PokeArgs(BaseModel):
    name: str


class Poke(Skill[PokeArgs]):
    name = "test.poke"
    summary = "poke a thing"
    Args = PokeArgs
    risk = Risk.WRITE
    keywords: ClassVar[dict[str, float]] = {"poke": 3.0}
    #: what the preview does: "ok", "fail", "hang" or "fail-silently"
    mode: ClassVar[str] = "ok"

    async def preview(self, args: PokeArgs, ctx: SkillContext[Any]) -> str:
        if Poke.mode == "hang":
            await asyncio.sleep(5)
        if Poke.mode == "fail":
            raise SkillError(f"{args.name} does not exist")
        if Poke.mode == "fail-silently":
            raise SkillError()
        return f"would poke {args.name}"

    async def run(self, args: PokeArgs, ctx: SkillContext[Any]) -> SkillResult:
        return SkillResult(summary=f"poked {args.name}")


class Planned:
    name = "scripted"

    async def explain(self, request: Request, withheld: Sequence[Skill[Any, Any]]) -> None:
        return None

    async def plan(
        self, request: Request, catalog: Sequence[Skill[Any, Any]], tools: Any = None
    ) -> Plan:
        return Run(invocations=[Invocation(skill="test.poke", args={"name": "web"})])


@pytest.fixture
def bot(opsbot_bot: TestBot) -> TestBot:
    Poke.mode = "ok"
    opsbot_bot.add_skill(Poke())
    opsbot_bot.use_planner(Planned())
    return opsbot_bot


async def test_the_dry_run_is_on_the_approval_request(bot: TestBot) -> None:
    reply = await bot.ask("poke web", as_=ALICE)
    assert "would poke web" in reply.text and len(reply.approvals) == 1


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("fail", "Not submitted for approval: web does not exist"),
        ("hang", "Not submitted for approval: the dry run did not finish within 0.3s"),
        ("fail-silently", "Not submitted for approval: the dry run did not finish within 0.3s"),
    ],
)
async def test_a_dry_run_that_fails_or_hangs_opens_no_approval(
    bot: TestBot, mode: str, said: str
) -> None:
    Poke.mode = mode
    reply = await bot.ask("poke web", as_=ALICE)
    assert said in reply.text and reply.approvals == []
    [error] = await bot.services.audit.search(event=AuditEvent.ERROR)
    assert error.skill == "test.poke" and error.detail == said


@pytest.mark.parametrize(("mode", "shown"), [("ok", True), ("fail", False), ("hang", False)])
async def test_talk_about_a_write_shows_its_dry_run_when_there_is_one(
    bot: TestBot, mode: str, shown: bool
) -> None:
    Poke.mode = mode
    reply = await bot.ask("should we restart web?", as_=ALICE)
    assert reply.approvals == [] and ("would poke web" in reply.text) is shown
    [about] = await bot.services.audit.search(event=AuditEvent.PLAN)
    assert about.outcome == "about" and about.skill == "test.poke"
