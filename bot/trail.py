"""The request trail: DESIGN.md's "every step -> an audit event + a message in the request's
thread" as one object bound to one request, so each step is one call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from opsbot.audit import AuditLog
from opsbot.model import Audience, Block, Message, Step, Text

Reply = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class Trail:
    """Where one request's steps go: its audit fields and its thread.

    ``actor`` is who the step is by (the requester; the approver for a vote; the requester
    again when an approved action runs); ``label`` is how messages name them.
    """

    audit: AuditLog
    post: Reply
    actor: str
    channel: str
    thread: str
    request_id: str
    label: str = ""

    def by(self, actor: str, label: str = "") -> Trail:
        """The same request's trail, with steps by someone else."""
        return replace(self, actor=actor, label=label or actor)

    async def step(
        self,
        step: Step,
        event: str,
        say: str | list[Block] | None = None,
        *,
        skill: str = "",
        args: dict[str, Any] | None = None,
        outcome: str = "",
        detail: str = "",
        audience: Audience = Audience.THREAD,
        approval_id: str | None = None,
    ) -> None:
        """Write one audit record and, when there is something to ``say``, post it in the
        thread (``audience``: everyone there, or only the person who clicked)."""
        await self.record(event, skill=skill, args=args, outcome=outcome, detail=detail)
        if say:
            await self.say(step, say, audience=audience, approval_id=approval_id)

    async def record(
        self,
        event: str,
        *,
        skill: str = "",
        args: dict[str, Any] | None = None,
        outcome: str = "",
        detail: str = "",
    ) -> None:
        """An audit record of this request, with nothing posted (e.g. model usage)."""
        await self.audit.append(
            event,
            actor=self.actor,
            channel=self.channel,
            thread=self.thread,
            request_id=self.request_id,
            skill=skill,
            args=args or {},
            outcome=outcome,
            detail=detail,
        )

    async def say(
        self,
        step: Step,
        say: str | list[Block],
        *,
        audience: Audience = Audience.THREAD,
        approval_id: str | None = None,
    ) -> None:
        """A message in the thread whose audit record another step already wrote."""
        blocks: list[Block] = [Text(text=say)] if isinstance(say, str) else say
        await self.post(
            Message(
                thread=self.thread,
                step=step,
                blocks=blocks,
                approval_id=approval_id,
                audience=audience,
                actor=self.label or self.actor,
            )
        )
