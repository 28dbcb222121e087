"""Skills about the bot itself: ``help``, ``approvals.pending``, ``audit.search``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, Field

from opsbot.audit import AuditRecord
from opsbot.durations import Duration, format_duration, parse_duration
from opsbot.meaning import Since
from opsbot.model import Actor, SkillResult, Table, Text
from opsbot.skills.base import Backend, NoArgs, NoSettings, Risk, Skill, SkillContext, SkillRegistry


class PendingApproval(Protocol):
    """What ``approvals.pending`` shows of an approval request (read-only)."""

    @property
    def id(self) -> str: ...
    @property
    def skill(self) -> str: ...
    @property
    def args(self) -> dict[str, Any]: ...
    @property
    def requester(self) -> str: ...
    @property
    def approvals(self) -> int: ...
    @property
    def min_approvals(self) -> int: ...
    @property
    def expires_at(self) -> datetime: ...


class BotState(Protocol):
    """The running bot as the meta skills read it (``opsbot.services.Services`` provides it:
    skills sit below policy and approvals, so they see them through this protocol)."""

    registry: SkillRegistry

    def permitted(self, actor: Actor, skill: str, *, channel: str, namespaced: bool) -> bool: ...

    async def pending_approvals(self) -> Sequence[PendingApproval]: ...

    async def search_audit(
        self, *, since: datetime, actor: str | None, skill: str | None, limit: int
    ) -> list[AuditRecord]: ...


class Meta(Backend[NoSettings]):
    """opsbot itself: its skills, policy, approvals and audit log."""

    name = "meta"

    def __init__(self, config: NoSettings, settings: Any) -> None:
        super().__init__(config, settings)
        self.state: BotState | None = None

    @property
    def bot(self) -> BotState:
        if self.state is None:
            raise RuntimeError("the meta backend is used before the bot bound it")
        return self.state


class HelpArgs(BaseModel):
    topic: str | None = Field(None, description="a skill name or backend to explain, e.g. alerts")


class Help(Skill[HelpArgs, Meta]):
    name = "help"
    summary = "What I can do for you here, with examples"
    Args = HelpArgs
    risk = Risk.READ
    examples = ["help", "what can you do?", "help with alerts", "how do I use you"]
    keywords = {
        "help": 3.0,
        "what can you do": 3.0,
        "commands": 2.0,
        "capabilities": 2.0,
        "how do i use": 2.0,
        "how do i": 1.5,
        "usage": 1.0,
        "skills": 1.5,
    }

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        m = re.search(r"\bhelp\s+(?:with|on|about|for)?\s*([a-z0-9_.]+)", parsed.rest, re.I)
        if m and m.group(1).lower() not in ("me", "please"):
            found["topic"] = m.group(1).lower()
        return found

    async def run(self, args: HelpArgs, ctx: SkillContext[Meta]) -> SkillResult:
        bot = ctx.backend.bot
        rows = []
        for skill in bot.registry:
            if args.topic and args.topic not in skill.name:
                continue
            if not bot.permitted(
                ctx.actor, skill.name, channel=ctx.request.channel, namespaced=skill.namespaced
            ):
                continue
            missing = bot.registry.backend_of(skill.name).missing()
            example = skill.examples[0] if skill.examples else ""
            note = f" (not configured: set {', '.join(missing)})" if missing else ""
            rows.append([skill.name, skill.risk.value, skill.summary + note, example])
        if not rows:
            return SkillResult(
                summary="no skills", blocks=[Text(text=f"No skill matches {args.topic!r}.")]
            )
        return SkillResult(
            summary=f"{len(rows)} skills",
            blocks=[
                Text(
                    text=f"Skills you ({ctx.actor.id}) may use here. Writes ask for approval first."
                ),
                Table(columns=["skill", "risk", "what it does", "try"], rows=rows),
            ],
        )


class ApprovalsPending(Skill[NoArgs, Meta]):
    name = "approvals.pending"
    summary = "Approval requests waiting for a decision"
    Args = NoArgs
    risk = Risk.READ
    examples = ["what's waiting for approval?", "pending approvals", "anything to approve?"]
    keywords = {"approval": 2.5, "approve": 1.5, "wait": 1.0, "awaiting": 1.0, "pending": 0.8}

    async def run(self, args: NoArgs, ctx: SkillContext[Meta]) -> SkillResult:
        now = datetime.now(UTC)
        pending = [a for a in await ctx.backend.bot.pending_approvals() if a.expires_at > now]
        if not pending:
            return SkillResult(
                summary="nothing pending", blocks=[Text(text="Nothing is waiting for approval.")]
            )
        rows = [
            [
                a.id,
                a.skill,
                " ".join(f"{k}={v}" for k, v in a.args.items())[:100],
                a.requester,
                f"{a.approvals}/{a.min_approvals}",
                format_duration(a.expires_at - now),
            ]
            for a in pending
        ]
        table = Table.bounded(
            ["id", "skill", "args", "requested by", "approvals", "expires in"],
            rows,
            ctx.settings.max_rows,
            "approvals",
        )
        return SkillResult(
            summary=f"{len(rows)} pending", blocks=[table], data={"ids": [a.id for a in pending]}
        )


# verbs people use for the write skills of DESIGN.md's catalog (the audit may hold any of them)
_ACTIONS = {
    r"\brestart(?:ed|s)?\b|\bbounced?\b|\brebooted\b": "k8s.restart",
    r"\bscaled?\b": "k8s.scale",
    r"\brolled back\b|\broll(?:ed)?[- ]?back\b|\brollback\b|\bundid\b|\breverted\b": "k8s.rollback",
    r"\bsilenced?\b|\bmuted?\b": "alerts.silence",
}


class AuditArgs(BaseModel):
    actor: str | None = Field(None, description="who (substring of the actor id, e.g. alice)")
    skill: str | None = Field(None, description="skill name, e.g. k8s.restart")
    since: Annotated[Duration, Since()] = Field("24h", description="how far back, e.g. 2h, 7d")


class AuditSearch(Skill[AuditArgs, Meta]):
    name = "audit.search"
    summary = "Search the audit log: who did what, when"
    Args = AuditArgs
    risk = Risk.READ
    examples = [
        "who restarted checkout today?",
        "show audit log for alice in the last 24h",
        "what did bob do this week",
    ]
    keywords = {
        "audit": 3.0,
        "who": 2.0,
        "anyone": 1.5,
        "someone": 1.0,
        "<write-talk>": 1.0,
        "=restarted": 1.5,
        "=scaled": 1.5,
        "=rolled": 1.5,
        "=silenced": 1.5,
        "=muted": 1.5,
        "=did": 0.5,
        "changed": 1.0,
        "history of actions": 1.0,
    }

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        for pattern, skill in _ACTIONS.items():
            if re.search(pattern, parsed.rest, re.I):
                found["skill"] = skill
                break
        m = re.search(
            r"\b(?:for|by|of|from|did)\s+([a-z]+:[\w.-]+|[a-z][\w.-]*)", parsed.rest, re.I
        )
        if m and m.group(1).lower() not in (
            "the",
            "a",
            "an",
            "last",
            "past",
            "today",
            "this",
            "me",
        ):
            found["actor"] = m.group(1)
        if re.search(r"\bthis week\b", parsed.rest, re.I):
            found.setdefault("since", "7d")
        return found

    async def run(self, args: AuditArgs, ctx: SkillContext[Meta]) -> SkillResult:
        since = datetime.now(UTC) - parse_duration(args.since)
        records = await ctx.backend.bot.search_audit(
            since=since, actor=args.actor, skill=args.skill, limit=500
        )
        if args.skill:  # the interesting records of a skill are its executions and decisions
            records = [r for r in records if r.event not in ("plan",)]
        rows = [
            [
                str(r.seq),
                f"{r.at:%m-%d %H:%M:%S}",
                r.event,
                r.actor,
                r.skill,
                r.outcome,
                r.detail[:80],
            ]
            for r in reversed(records)
        ]
        what = " ".join(f"{k}={v}" for k, v in args.model_dump(exclude_none=True).items())
        if not rows:
            return SkillResult(
                summary="no records", blocks=[Text(text=f"No audit records for {what}.")]
            )
        table = Table.bounded(
            ["seq", "at (UTC)", "event", "actor", "skill", "outcome", "detail"],
            rows,
            ctx.settings.max_rows,
            "records",
        )
        return SkillResult(
            summary=f"{len(rows)} records", blocks=[Text(text=f"Audit, {what}:"), table]
        )


Meta.skills = (Help, ApprovalsPending, AuditSearch)
