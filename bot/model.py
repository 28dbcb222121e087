"""Platform-neutral data of one request: who asked, what was planned, what came back.

Adapters build a :class:`Request` from a platform event and render :class:`Message` blocks
back; nothing in here knows about Slack, Discord or a terminal.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Actor:
    """An authenticated chat identity.

    ``id`` is ``platform:user`` (``slack:U01ALICE``, ``discord:1111``, ``shell:alice``) and is
    what policies name as a subject. ``roles`` are extra subjects the platform vouches for,
    e.g. ``discord-role:42`` or ``slack-group:S0123``.
    """

    id: str
    display_name: str = ""
    roles: tuple[str, ...] = ()

    @property
    def platform(self) -> str:
        return self.id.split(":", 1)[0]

    @property
    def user(self) -> str:
        return self.id.split(":", 1)[-1]

    @property
    def label(self) -> str:
        return self.display_name or self.id


@dataclass(frozen=True)
class Request:
    """One chat request. ``thread`` identifies where every step of it is posted."""

    actor: Actor
    channel: str
    text: str
    thread: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: the request opens its thread (a top-level message): nothing can be pending there yet
    new_thread: bool = False

    @property
    def thread_key(self) -> str:
        return self.thread or self.id


class Invocation(BaseModel):
    """A call of one skill with validated arguments (``args`` holds the ``Args`` model dump)."""

    model_config = ConfigDict(frozen=True)

    skill: str
    args: dict[str, Any] = Field(default_factory=dict)
    rationale: str = ""

    @property
    def namespace(self) -> str | None:
        value = self.args.get("namespace")
        return str(value) if value else None


class _Planned(BaseModel):
    """What every plan carries besides its outcome."""

    planner: str = "offline"
    #: things the user should know about how this plan was made (e.g. a fallback)
    notes: list[str] = Field(default_factory=list)
    #: model usage of this plan: tokens, cost, latency (see opsbot.usage.Usage)
    usage: dict[str, Any] = Field(default_factory=dict)


class Run(_Planned):
    """Invoke these skills, in order (each still goes through policy)."""

    kind: Literal["run"] = "run"
    invocations: list[Invocation] = Field(min_length=1)
    #: what the planner says before they run (a model's own answer), if anything
    text: str = ""


class Clarify(_Planned):
    """The planner needs the human to say more before anything runs.

    With ``skill``, ``args`` (gathered so far) and ``missing`` (required, not given), the
    engine keeps the request in the thread so a short answer ("shop") completes it;
    ``choices`` are complete invocations to offer as buttons when the answers are known."""

    kind: Literal["clarify"] = "clarify"
    question: str
    skill: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)
    choices: list[Invocation] = Field(default_factory=list)


class Answer(_Planned):
    """The planner answers in text without calling a skill (chit-chat, refusals, questions
    about a write).

    ``unmatched``: nothing the actor may call fits the request (the engine then asks the
    planner whether a skill the policy withholds would have, to explain the refusal)."""

    kind: Literal["answer"] = "answer"
    text: str
    unmatched: bool = False
    #: a write the request asks *about* ("should we roll back checkout?"): the engine shows
    #: its dry run and how to ask for it; it is never planned
    about: Invocation | None = None


#: what the intent layer proposes (DESIGN.md): invocations to run, a question, or an answer
Plan = Run | Clarify | Answer


def first_invocation(plan: Plan) -> Invocation | None:
    """The first skill call a plan makes (None for a question or an answer)."""
    return plan.invocations[0] if isinstance(plan, Run) else None


# --- message blocks -------------------------------------------------------------------------


class Text(BaseModel):
    """Text in one neutral markup that every renderer converts: ``**bold**``, ``_italic_``,
    `` `code` `` and ``[label](https://url)``; nothing else is special."""

    kind: Literal["text"] = "text"
    text: str


class Code(BaseModel):
    kind: Literal["code"] = "code"
    code: str
    language: str = ""


class Table(BaseModel):
    """A bounded table; ``note`` says what was left out (e.g. "12 more rows not shown")."""

    kind: Literal["table"] = "table"
    columns: list[str]
    rows: list[list[str]]
    note: str = ""

    @classmethod
    def bounded(
        cls, columns: list[str], rows: list[list[str]], limit: int, what: str = "rows"
    ) -> Table:
        """At most ``limit`` rows; the note says how many more there were."""
        note = f"{len(rows) - limit} more {what} not shown" if len(rows) > limit else ""
        return cls(
            columns=columns, rows=[[str(c)[:200] for c in r] for r in rows[:limit]], note=note
        )

    def aligned(self, max_width: int = 40) -> str:
        """The table as monospace text: columns padded to their widest cell (at most
        ``max_width`` characters), header first. For code blocks in chat."""
        widths = [
            min(max_width, max(len(str(c)) for c in col))
            for col in zip(self.columns, *self.rows, strict=False)
        ]
        return "\n".join(
            "  ".join(str(c)[:w].ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
            for row in [self.columns, *self.rows]
        )


class Image(BaseModel):
    """A rendered chart. ``data`` is PNG bytes; ``path`` is set once an adapter saved it."""

    kind: Literal["image"] = "image"
    title: str
    data: bytes = b""
    path: str = ""
    alt: str = ""


class ButtonStyle(StrEnum):
    PRIMARY = "primary"
    DANGER = "danger"
    DEFAULT = "default"


class ActionButton(BaseModel):
    """A suggested action (e.g. from a triage): clicking runs ``invocation`` as the clicker's
    own request, through policy and approval, exactly as if they had typed it. ``id`` is what
    the platform carries back on a click (the engine keeps the invocation under it)."""

    kind: Literal["action"] = "action"
    id: str
    label: str
    invocation: Invocation
    style: ButtonStyle = ButtonStyle.DEFAULT


class Vote(BaseModel):
    actor: str
    verdict: Literal["approve", "deny"]
    at: datetime | None = None
    reason: str = ""


class ApprovalCard(BaseModel):
    """An approval request as people see it: what, who asked, the votes, and its state.

    Built once from the approval (``opsbot.wording.approval_card``); renderers show Approve /
    Deny buttons only while ``open``, and state the outcome otherwise."""

    kind: Literal["approval"] = "approval"
    approval_id: str
    summary: str  # the invocation, described and redacted
    requester: str
    approvers: list[str]
    min_approvals: int
    expires_at: datetime
    state: str  # pending | approved | denied | expired | executing | done | failed
    #: one line on the state, in the neutral markup ("approved by shell:bob; running it now")
    status: str = ""
    preview: str = ""
    votes: list[Vote] = Field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.state == "pending"

    def head(self) -> str:
        """The card's first line (neutral markup): what, who asked, and, while it is open,
        who may decide until when; once decided, its state."""
        if self.open:
            return (
                f"Approval `{self.approval_id}` needed: `{self.summary}` requested by "
                f"{self.requester}. Needs {self.min_approvals} of {', '.join(self.approvers)} "
                f"(not the requester); expires {self.expires_at:%H:%M:%S} UTC."
            )
        return (
            f"Approval `{self.approval_id}` **{self.state}**: `{self.summary}` requested by "
            f"{self.requester}."
        )


Block = Text | Code | Table | Image | ApprovalCard | ActionButton


class Audience(StrEnum):
    """Who sees a message: everyone in the thread, or only the person who clicked."""

    THREAD = "thread"
    CLICKER = "clicker"


class Step(StrEnum):
    """Which step of the request flow a message reports (adapters may style by it)."""

    RECEIVED = "received"
    PLAN = "plan"
    POLICY = "policy"
    APPROVAL = "approval"
    RESULT = "result"
    ERROR = "error"
    ANSWER = "answer"


class Message(BaseModel):
    """One message posted into a request's thread."""

    thread: str
    step: Step
    blocks: list[Block]
    approval_id: str | None = None
    audience: Audience = Audience.THREAD
    #: who this step is for (the requester, or the approver who clicked), for context lines
    actor: str = ""
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def plain(self) -> str:
        """A plain-text rendering, for logs, tests and terminals without rich."""
        parts: list[str] = []
        for block in self.blocks:
            if isinstance(block, Text):
                parts.append(block.text)
            elif isinstance(block, Code):
                parts.append(block.code)
            elif isinstance(block, Table):
                parts.append(" | ".join(block.columns))
                parts.extend(" | ".join(row) for row in block.rows)
                if block.note:
                    parts.append(block.note)
            elif isinstance(block, Image):
                parts.append(f"[chart: {block.title}{' -> ' + block.path if block.path else ''}]")
            elif isinstance(block, ApprovalCard):
                parts.append(card_text(block))
            elif isinstance(block, ActionButton):
                parts.append(f"[{block.label}]")
        return "\n".join(parts)


def card_text(card: ApprovalCard) -> str:
    """An approval card as plain lines (logs, tests, the terminal)."""
    lines = [card.head()]
    if card.preview:
        lines.append(card.preview)
    if card.status:
        lines.append(card.status)
    if card.open:
        lines.append("[Approve] [Deny]")
    return "\n".join(lines)


class SkillResult(BaseModel):
    """What a skill returns: ``ok`` False means the skill ran but the backend said no."""

    ok: bool = True
    summary: str = ""
    blocks: list[Block] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)


class Outcome(StrEnum):
    """How a request ended (``Engine.handle`` returns it; ``opsbot ask`` maps it to its exit
    code, and it labels ``opsbot_requests_total``)."""

    OK = "ok"  #: done: a skill ran and succeeded, or the bot answered
    APPROVAL = "approval"  #: an approval request was opened; nothing ran yet
    DENIED = "denied"  #: policy refused it
    CLARIFY = "clarify"  #: the bot asked a question; nothing ran
    UNMATCHED = "unmatched"  #: nothing the actor may call fits the request
    FAILED = "failed"  #: the skill ran and failed (the backend said no, or is not configured)
    ERROR = "error"  #: it could not be run (invalid arguments, planner or internal error)

    @classmethod
    def of(cls, value: str) -> Outcome:
        """The outcome named ``value``; a name this enum does not know counts as an error, so
        that nothing unexpected passes for a success."""
        return cls._value2member_map_.get(value, cls.ERROR)  # type: ignore[return-value]
