"""One conversation, through every adapter: Slack over HTTP, Slack over Socket Mode, Discord.

Each platform is the real client library (slack-bolt, discord.py) against a fake of the
platform that refuses what the platform refuses (tests/fakes/). The same script runs on each:
a mention -> the plan -> an approval card with buttons -> a click by someone who may not
decide (only they see the refusal; the card keeps its buttons) -> a click by an approver ->
the result in the thread and the card edited in place (no buttons) -> a second card that
expires (edited in place, buttons gone) -> a long result delivered as a file.

A new adapter proves itself by adding a :class:`Platform` here. The toy skills below (no
backend needed) are shared with tests/test_slack.py and tests/test_discord.py.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from opsbot.model import Code, SkillResult, Table
from opsbot.skills.base import Risk, Skill, SkillContext

# -- toy skills ------------------------------------------------------------------------------


class Target(BaseModel):
    name: str = Field(description="the toy service, e.g. web")
    namespace: str = Field("shop", description="its namespace")


class Gate:
    """Lets a test hold a toy skill mid-run: ``close()`` before, ``open()`` to let it end."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.event.set()
        self.entered = asyncio.Event()

    def close(self) -> None:
        self.event = asyncio.Event()
        self.entered = asyncio.Event()

    def open(self) -> None:
        self.event.set()

    async def passage(self) -> None:
        self.entered.set()
        await self.event.wait()


class ToyBounce(Skill[Target, Any]):
    """A write: bounce a toy service (one on-call approval)."""

    name = "toy.bounce"
    summary = "Bounce a toy service"
    Args = Target
    risk = Risk.WRITE
    examples: ClassVar[list[str]] = ["bounce web in shop"]
    keywords: ClassVar[dict[str, float]] = {"bounce": 4.0}
    gate: ClassVar[Gate] = Gate()
    runs: ClassVar[list[str]] = []

    async def preview(self, args: Target, ctx: SkillContext[Any]) -> str:
        return f"would bounce {args.name} in {args.namespace}"

    async def run(self, args: Target, ctx: SkillContext[Any]) -> SkillResult:
        await ToyBounce.gate.passage()
        ToyBounce.runs.append(args.name)
        return SkillResult(summary=f"bounced {args.name} in {args.namespace}")


class ToyDump(Skill[Target, Any]):
    """A read with a long result: 300 rows."""

    name = "toy.dump"
    summary = "Every connection of a toy service"
    Args = Target
    examples: ClassVar[list[str]] = ["dump web in shop"]
    keywords: ClassVar[dict[str, float]] = {"dump": 4.0}
    ROWS = 300

    async def run(self, args: Target, ctx: SkillContext[Any]) -> SkillResult:
        rows = [
            [f"conn-{i:03d}", f"10.0.{i // 250}.{i % 250}", "ESTABLISHED"] for i in range(self.ROWS)
        ]
        table = Table(columns=["connection", "peer", "state"], rows=rows)
        return SkillResult(summary=f"{self.ROWS} connections of {args.name}", blocks=[table])


class ToyTail(Skill[Target, Any]):
    """A read with long logs: 1,500 lines, the newest last."""

    name = "toy.tail"
    summary = "The log of a toy service"
    Args = Target
    examples: ClassVar[list[str]] = ["tail web in shop"]
    keywords: ClassVar[dict[str, float]] = {"tail": 4.0}
    LINES = 1500

    async def run(self, args: Target, ctx: SkillContext[Any]) -> SkillResult:
        lines = [
            f"12:{i // 60:02d}:{i % 60:02d} {args.name} line {i:04d} ok" for i in range(self.LINES)
        ]
        return SkillResult(
            summary=f"log of {args.name}", blocks=[Code(code="\n".join(lines), language="text")]
        )


class ToySlow(Skill[Target, Any]):
    """A read that takes as long as the test holds its gate."""

    name = "toy.slow"
    summary = "A slow look at a toy service"
    Args = Target
    examples: ClassVar[list[str]] = ["ponder web in shop"]
    keywords: ClassVar[dict[str, float]] = {"ponder": 4.0}
    gate: ClassVar[Gate] = Gate()

    async def run(self, args: Target, ctx: SkillContext[Any]) -> SkillResult:
        await ToySlow.gate.passage()
        return SkillResult(summary=f"pondered {args.name}")


TOYS = (ToyBounce, ToyDump, ToyTail, ToySlow)


def toy_rules(oncall: list[str]) -> str:
    """Policy rules (YAML, to append under ``rules:``) for the toys: everyone reads them;
    group:sre and group:oncall may bounce, with one approval of ``oncall`` subjects."""
    return f"""
  - name: everyone reads the toys
    subjects: ["*"]
    skills: [toy.dump, toy.tail, toy.slow]
    effect: allow
  - name: toy bounces need one on-call approval
    subjects: [group:sre, group:oncall]
    skills: [toy.bounce]
    effect: approve
    approvers: [{", ".join(oncall)}]
    min_approvals: 1
    ttl: 15m
"""


def reset_toys() -> None:
    ToyBounce.gate, ToySlow.gate = Gate(), Gate()
    ToyBounce.runs = []
