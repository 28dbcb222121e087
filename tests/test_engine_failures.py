"""An approved action that raises after the click: the engine (Engine.decide) tells the
approval's thread, audits it once and marks the approval failed, whatever the adapter (here
the in-memory bot, as the shell and the CLI run it; Slack's and Discord's tests show the same
through their fakes)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from opsbot.approvals import State, VoteStatus
from opsbot.audit import AuditEvent
from opsbot.model import SkillResult, Step
from opsbot.skills.base import Risk, Skill, SkillContext
from opsbot.testing import TestBot

POLICY = """
rules:
  - name: wobble needs one
    subjects: ["*"]
    skills: [test.wobble]
    effect: approve
    approvers: [shell:bob]
    min_approvals: 1
"""

pytestmark = pytest.mark.opsbot(policy=POLICY)


class WobbleArgs(BaseModel):
    name: str


class Wobble(Skill[WobbleArgs]):
    """A write whose follow-up (what the engine reports after it ran) raises."""

    name = "test.wobble"
    summary = "wobble a thing"
    Args = WobbleArgs
    risk = Risk.WRITE
    keywords: ClassVar[dict[str, float]] = {"wobble": 3.0}

    async def preview(self, args: WobbleArgs, ctx: SkillContext[Any]) -> str:
        return f"would wobble {args.name}"

    async def run(self, args: WobbleArgs, ctx: SkillContext[Any]) -> SkillResult:
        return SkillResult(summary=f"wobbled {args.name}")

    async def follow_up(self, args: WobbleArgs, ctx: SkillContext[Any]) -> SkillResult | None:
        raise RuntimeError("the cluster fell over")


@pytest.fixture
async def card(opsbot_bot: TestBot) -> str:
    opsbot_bot.add_skill(Wobble())
    asked = await opsbot_bot.ask("wobble web", as_="shell:alice")
    [approval_id] = asked.approvals
    return approval_id


async def errors(bot: TestBot) -> list[Any]:
    return [r for r in await bot.services.audit.search() if r.event == AuditEvent.ERROR]


async def test_an_approved_action_that_raises_is_told_in_its_thread_and_audited_once(
    opsbot_bot: TestBot, card: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the cluster fell over")

    monkeypatch.setattr(opsbot_bot.engine, "execute", explode)
    thread = opsbot_bot.thread[0].thread
    clicked = await opsbot_bot.click(card, as_="shell:bob")
    told = [m for m in clicked if "the cluster fell over" in m.plain and m.step is Step.ERROR]
    assert len(told) == 1 and told[0].thread == thread
    assert "running `test.wobble` failed with an internal error" in told[0].plain
    assert clicked.cards[-1].state == "failed" and not clicked.cards[-1].open
    [error] = await errors(opsbot_bot)
    assert error.thread == thread and error.skill == "test.wobble"
    assert error.actor == "shell:alice" and "the cluster fell over" in error.detail
    approval = await opsbot_bot.services.approvals.get(card)
    assert approval is not None and approval.state is State.FAILED
    assert clicked.outcome is not None and clicked.outcome.status is VoteStatus.UNKNOWN


async def test_a_skill_that_raises_after_it_ran_is_told_and_audited_once(
    opsbot_bot: TestBot, card: str
) -> None:
    """The write ran (its result is posted and kept); its follow-up raised."""
    clicked = await opsbot_bot.click(card, as_="shell:bob")
    assert "wobbled web" in clicked.text
    told = [m for m in clicked if "the cluster fell over" in m.plain and m.step is Step.ERROR]
    assert len(told) == 1 and told[0].thread == opsbot_bot.thread[0].thread
    [error] = await errors(opsbot_bot)
    assert "the cluster fell over" in error.detail
    approval = await opsbot_bot.services.approvals.get(card)
    assert approval is not None and approval.state is State.EXECUTED  # it did run
