"""Skills about the bot itself: ``help``, ``approvals.pending``, ``audit.search``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol
from urllib.parse import urlencode

from pydantic import BaseModel, Field

from opsbot.audit import AuditRecord
from opsbot.durations import Duration, format_duration, parse_duration
from opsbot.meaning import Since
from opsbot.model import Actor, Block, SkillResult, Table, Text
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

    async def audit_of_requests(self, request_ids: Sequence[str]) -> list[AuditRecord]:
        """Every record of these requests (their whole chains: votes, results)."""
        ...


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
        "what can i ask": 3.0,
        "what can i do": 2.0,
        "commands": 2.0,
        "capabilities": 2.0,
        "how do i use": 2.0,
        "how do i": 1.5,
        "usage": 1.0,
        "skills": 1.5,
        "help * with": 2.0,  # "help me with silences" (a topic), not "help, X is down"
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
    keywords = {
        "approval": 2.5,
        "approve": 1.5,
        "wait": 1.0,
        "awaiting": 1.0,
        "pending": 0.8,
        "who": -2.0,  # "who approved the rollback": the audit log answers
        "=approved": -1.0,
    }

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
    r"\brolled back\b|\broll(?:ed)?[- ]?backs?\b|\brollbacks?\b|\bundid\b|\breverted\b": "k8s.rollback",
    r"\bsilenced?\b|\bmuted?\b": "alerts.silence",
}


class AuditArgs(BaseModel):
    actor: str | None = Field(None, description="who (substring of the actor id, e.g. alice)")
    skill: str | None = Field(None, description="skill name, e.g. k8s.restart")
    target: str | None = Field(
        None, description="what was acted on: a deployment or service name, e.g. checkout"
    )
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
        "who approved the rollback of payments",
    ]
    keywords = {
        "audit": 3.0,
        "who": 2.0,
        "anyone": 1.5,
        "someone": 1.0,
        "<write-talk>": 1.0,
        "<hypothetical>": -2.0,  # "what if we scaled it": nothing was done to look up
        "=restarted": 1.5,
        "=scaled": 1.5,
        "=rolled": 1.5,
        "=silenced": 1.5,
        "=muted": 1.5,
        "=did": 1.5,
        "changed": 1.0,
        "action": 1.5,  # "actions in the last day"
        "why": -2.0,  # the log says who and when, not why: "why did orders restart?"
        "history of actions": 1.0,
        "on call": -3.0,  # "who is on call": no skill knows the rota
        "oncall": -3.0,
        # opsbot deploys nothing: "when did payments last deploy" is the rollout history
        "deploy": -1.0,
        "who approved": 4.0,
    }

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        rest = parsed.rest
        for pattern, skill in _ACTIONS.items():
            if re.search(pattern, rest, re.I):
                found["skill"] = skill
                break
        target = re.search(
            rf"(?:{'|'.join(_ACTIONS)})\s+(?:of\s+|on\s+|to\s+)?(?:the\s+)?(?:deployment\s+)?"
            r"([a-z][\w.-]*)",
            rest,
            re.I,
        )
        if target and re.match(r"\S+s\s+(?!of\b|on\b|to\b)", target.group(0), re.I):
            target = None  # "which rollbacks went through the bot": things done, no target
        if target and target.group(1).lower() not in _NOT_NAMES:
            found["target"] = target.group(1).lower()
        m = re.search(r"\b(?:for|by|from|did|has|of)\s+([a-z]+:[\w.-]+|[a-z][\w.-]*)", rest, re.I)
        if m and m.group(1).lower() not in _NOT_NAMES and m.group(1).lower() != found.get("target"):
            found["actor"] = m.group(1)
        found.update(_since_words(rest))
        if "since" not in found and (found.get("target") or found.get("skill")):
            found["since"] = "7d"  # "who restarted checkout?": the last week, not the last day
        return found

    async def run(self, args: AuditArgs, ctx: SkillContext[Meta]) -> SkillResult:
        bot = ctx.backend.bot
        since = datetime.now(UTC) - parse_duration(args.since)
        records = await bot.search_audit(since=since, actor=None, skill=args.skill, limit=2000)
        if args.actor:  # what they asked for, and what they approved or denied
            records += await bot.search_audit(
                since=since, actor=args.actor, skill=args.skill, limit=2000
            )
        ids = [r.request_id for r in records if r.request_id and r.request_id != ctx.request.id]
        chains = _chains(await bot.audit_of_requests(list(dict.fromkeys(ids))[-300:]))
        rows: list[list[str]] = []
        for chain in chains:
            row = _row(chain, args)
            if row is not None:
                rows.append(row)
        what = " ".join(f"{k}={v}" for k, v in args.model_dump(exclude_none=True).items())
        link = _console_link(ctx.settings, args)
        if not rows:
            blocks: list[Block] = [Text(text=f"No audit records for {what}.")]
            if link:
                blocks.append(Text(text=f"[Search the audit console]({link})"))
            return SkillResult(summary="no records", blocks=blocks)
        rows.reverse()  # newest first
        table = Table.bounded(
            ["who", "what", "when (UTC)", "approved by", "result"],
            rows,
            ctx.settings.max_rows,
            "requests",
        )
        blocks = [Text(text=f"Audit, {what}:"), table]
        if link:
            blocks.append(Text(text=f"[Open these records in the audit console]({link})"))
        return SkillResult(
            summary=f"{len(rows)} request{'s' if len(rows) != 1 else ''}",
            blocks=blocks,
            data={"request_ids": [c[0].request_id for c in chains]},
        )


_NOT_NAMES = {
    "the",
    "a",
    "an",
    "last",
    "past",
    "today",
    "yesterday",
    "this",
    "me",
    "it",
    "in",
    "on",
    "at",
    "to",
    "anything",
    "something",
    "what",
    "who",
    "since",
    "during",
    "ago",
    "do",
    "done",
    "there",
    "any",
    "all",
    "alerts",
    "week",
    "hour",
    "night",
    "morning",
}


_UNITS = {"minute": "m", "hour": "h", "day": "d", "week": "w"}


def _since_words(text: str) -> dict[str, str]:
    """``since`` from today / yesterday / last night / this week / the last hour."""
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    lowered = text.lower()
    if re.search(r"\bthis week\b", lowered):
        return {"since": "7d"}
    if re.search(r"\b(?:yesterday|last night)\b", lowered):
        return {"since": _minutes(now - midnight + timedelta(days=1))}
    if re.search(r"\btoday\b|\bthis morning\b", lowered):
        return {"since": _minutes(now - midnight)}
    m = re.search(r"\b(?:last|past)\s+(\d+\s*)?(minute|hour|day|week)s?\b", lowered)
    if m:
        count = int(m.group(1) or 1)
        return {"since": f"{count}{_UNITS[m.group(2)]}"}
    return {}


def _minutes(delta: timedelta) -> str:
    return format_duration(timedelta(minutes=max(1, int(delta.total_seconds() // 60))))


def _chains(records: Sequence[AuditRecord]) -> list[list[AuditRecord]]:
    """Records grouped by request, each oldest first, requests in order of their start."""
    by: dict[str, list[AuditRecord]] = {}
    for record in sorted(records, key=lambda r: r.seq):
        by.setdefault(record.request_id, []).append(record)
    return list(by.values())


def _row(chain: Sequence[AuditRecord], args: AuditArgs) -> list[str] | None:
    """who | what | when | approved by | result for one request; None when it does not match
    the question (another skill or target, or the actor neither asked nor voted)."""
    events = [r.event for r in chain]
    if all(e.startswith("console.") for e in events):
        return None
    request = next((r for r in chain if r.event == "request.received"), chain[0])
    acting = [r for r in chain if r.skill and r.event not in ("plan",)] or [
        r for r in chain if r.skill
    ]
    skill = acting[-1].skill if acting else ""
    call_args = next((r.args for r in chain if r.skill == skill and r.args), {})
    if args.skill and skill != args.skill:
        return None
    target = _target(call_args)
    if args.target and args.target not in target.lower():
        return None
    voters = [
        r.actor
        for r in chain
        if r.event == "approval.approved"
        or (r.event == "approval.vote" and r.outcome == "recorded")
    ]
    deniers = [r.actor for r in chain if r.event == "approval.denied"]
    who = request.actor
    if args.actor:
        needle = args.actor.lower()
        if needle not in who.lower() and not any(needle in v.lower() for v in voters + deniers):
            return None
    what = " ".join(p for p in (skill, target) if p) or request.detail[:60]
    extra = {k: v for k, v in call_args.items() if k in ("replicas", "revision", "duration")}
    if extra:
        what += " " + " ".join(f"{k}={v}" for k, v in extra.items())
    results = [r for r in chain if r.event == "skill.result"]
    done = results[-1] if results else chain[-1]
    if results:
        outcome = f"{done.outcome}: {re.sub(r' [(][0-9.]+ ms[)]$', '', done.detail)}"
    elif "approval.denied" in events:
        outcome = f"denied by {', '.join(deniers)}"
    elif "approval.expired" in events:
        outcome = "approval expired"
    elif "approval.requested" in events:
        outcome = "waiting for approval"
    elif any(r.event == "policy.decision" and r.outcome == "deny" for r in chain):
        outcome = "refused by policy"
    else:
        outcome = done.outcome or "answered"
    approved = ", ".join(voters) or ("—" if "approval.requested" not in events else "none yet")
    return [who, what[:80], f"{done.at:%m-%d %H:%M}", approved, outcome[:90]]


def _target(call_args: dict[str, Any]) -> str:
    name = call_args.get("name") or call_args.get("service") or ""
    namespace = call_args.get("namespace") or ""
    if name:
        return f"{namespace}/{name}" if namespace else str(name)
    return str(call_args.get("matchers") or call_args.get("query") or "")[:50]


def _console_link(settings: Any, args: AuditArgs) -> str:
    """The console's timeline filtered as this answer was (``OPSBOT_CONSOLE_URL``)."""
    base = str(getattr(settings, "console_url", None) or "")
    if not base:
        return ""
    query = {"since": args.since, "actor": args.actor or "", "skill": args.skill or ""}
    if args.target:
        query["q"] = args.target
    return base.rstrip("/") + "?" + urlencode({k: v for k, v in query.items() if v})


Meta.skills = (Help, ApprovalsPending, AuditSearch)
