"""The request trail: DESIGN.md's "every step -> an audit event + a message in the request's
thread" as one object bound to one request, so each step is one call.

A message is posted only once its step's audit record is committed. A step may be *held*
(``hold=True``): its record is queued at once and its message waits for the next step that
is not held (or :meth:`Trail.flush`), which waits for all of them together: the records of a
request's first steps (received, plan, policy) then share one commit instead of waiting for
one each, and nothing is said before it is on record. :meth:`Trail.flush_soon` posts what is
held in the background, as its records are committed, while the request goes on (a read
runs meanwhile; a write waits for its records before anything is sent).

A flush that is cancelled (the request's task was) cancels the background flushes with it:
nothing of the request is posted once its task has ended (cancelled again in its last flush,
say); a step whose message was not sent yet stays held, in its place, for the next flush (the
request's last, in its ``finally``) to post in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from opsbot.audit import AuditLog, AuditRecord
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
    #: held steps: their records (queued) and the messages waiting for them
    held: list[tuple[asyncio.Future[AuditRecord], Message | None]] = field(
        default_factory=list, compare=False, repr=False
    )
    #: a flush going on in the background (:meth:`flush_soon`)
    posting: list[asyncio.Task[None]] = field(default_factory=list, compare=False, repr=False)

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
        hold: bool = False,
    ) -> None:
        """Write one audit record and, when there is something to ``say``, post it in the
        thread (``audience``: everyone there, or only the person who clicked). ``hold``:
        queue the record and keep the message until the next step that is not held."""
        message = self._message(step, say, audience, approval_id) if say else None
        future = self.audit.enqueue(
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
        self.held.append((future, message))
        if not hold:
            await self.flush()
            # its own record (another read's failed flush may have dropped it); shielded: a
            # cancelled step leaves the record, which another flush may still wait for
            await asyncio.shield(future)

    async def record(
        self,
        event: str,
        *,
        skill: str = "",
        args: dict[str, Any] | None = None,
        outcome: str = "",
        detail: str = "",
        hold: bool = False,
    ) -> None:
        """An audit record of this request, with nothing posted (e.g. model usage)."""
        await self.step(
            Step.RECEIVED,
            event,
            None,
            skill=skill,
            args=args,
            outcome=outcome,
            detail=detail,
            hold=hold,
        )

    def flush_soon(self) -> None:
        """Post the held steps in the background, each once its record is committed, while
        the request goes on (a read runs meanwhile; nothing is sent to a backend for a write
        before its records are committed: that waits in :meth:`flush`). The next
        :meth:`flush` waits for it first, so messages keep their order."""
        if self.held:
            before = self.posting[-1] if self.posting else None
            self.posting.append(asyncio.ensure_future(self._flush_after(before)))

    async def _flush_after(self, before: asyncio.Task[None] | None) -> None:
        if before is not None:  # one background flush at a time, in order
            await asyncio.wait([before])
        await self._flush_held()

    async def flush(self) -> None:
        """Wait for the held steps' records to be committed, then post their messages, in
        order (a record that could not be written raises before its message is posted).
        Cancelled, it cancels the background flushes too (the module's docstring)."""
        try:
            while self.posting:
                task = self.posting[0]
                await asyncio.wait([task])  # cancelling this flush does not cancel the task
                if task in self.posting:  # its failure goes up once, from the flush that saw it
                    self.posting.remove(task)
                    if not task.cancelled():
                        task.result()
            await self._flush_held()
        except asyncio.CancelledError:
            await self._stop_posting()
            raise

    async def _stop_posting(self) -> None:
        """Cancel the background flushes, and wait until they have stopped (cancelled again
        meanwhile, this returns at once: they are cancelled all the same)."""
        tasks = list(self.posting)
        self.posting.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _flush_held(self) -> None:
        while self.held:
            step = self.held[0]  # taken off only once its record is committed: a flush
            future, message = step  # cancelled while it waits leaves it in its place
            try:
                await asyncio.shield(future)
            except Exception:
                if not self.held or self.held[0] is not step:
                    continue  # another flush saw it fail first and dropped what was held
                # its record could not be written: it is not said, nor is what was held
                for dropped, _ in self.held[1:]:  # after it; the error goes up (once)
                    dropped.add_done_callback(_retrieved)
                self.held.clear()
                raise
            if not self.held or self.held[0] is not step:
                continue  # another flush took it
            self.held.pop(0)
            if message is not None:
                await self.post(message)

    async def say(
        self,
        step: Step,
        say: str | list[Block],
        *,
        audience: Audience = Audience.THREAD,
        approval_id: str | None = None,
    ) -> None:
        """A message in the thread whose audit record another step already wrote."""
        await self.flush()
        await self.post(self._message(step, say, audience, approval_id))

    def _message(
        self,
        step: Step,
        say: str | list[Block],
        audience: Audience,
        approval_id: str | None,
    ) -> Message:
        blocks: list[Block] = [Text(text=say)] if isinstance(say, str) else say
        return Message(
            thread=self.thread,
            step=step,
            blocks=blocks,
            approval_id=approval_id,
            audience=audience,
            actor=self.label or self.actor,
        )


def _retrieved(future: asyncio.Future[AuditRecord]) -> None:
    """Marks a dropped step's failure as seen (its step raises it, or the first failure did)."""
    if not future.cancelled():
        future.exception()
