"""What every chat adapter shares: where approval cards are shown (kept across restarts and
replicas), and how a click whose handling raised is still reported in the thread."""

from __future__ import annotations

from collections import OrderedDict

import structlog
from sqlalchemy import select

from opsbot.approvals import State
from opsbot.audit import AuditEvent
from opsbot.engine import Engine, Reply
from opsbot.model import Message, Step, Text
from opsbot.store import SeenRow, Store, first_time

log = structlog.get_logger(__name__)

MAX_REMEMBERED = 2000  # card references each adapter also keeps in memory (oldest forgotten)


class CardRefs:
    """Where each approval card is shown on one platform (``channel:ts``, ``channel:message``),
    so every later state of the card is edited into that message: after a restart, and by
    whichever replica sweeps the expiry, too.

    Kept in memory and in the database's seen-events table under
    ``<platform>:card:<approval id>:<reference>`` (the newest reference wins)."""

    def __init__(self, store: Store, platform: str) -> None:
        self.store = store
        self.platform = platform
        self._memory: OrderedDict[str, str] = OrderedDict()

    def _key(self, approval_id: str) -> str:
        return f"{self.platform}:card:{approval_id}:"

    async def remember(self, approval_id: str, ref: str) -> None:
        if not approval_id or not ref or self._memory.get(approval_id) == ref:
            return
        self._memory[approval_id] = ref
        self._memory.move_to_end(approval_id)
        while len(self._memory) > MAX_REMEMBERED:
            self._memory.popitem(last=False)
        await first_time(self.store, self._key(approval_id) + ref)

    async def recall(self, approval_id: str) -> str | None:
        if approval_id in self._memory:
            return self._memory[approval_id]
        prefix = self._key(approval_id)
        async with self.store.sessions() as session:
            key = await session.scalar(
                select(SeenRow.key)
                .where(SeenRow.key.startswith(prefix, autoescape=True))
                .order_by(SeenRow.at.desc())
                .limit(1)
            )
        if key is None:
            return None
        ref = key[len(prefix) :]
        self._memory[approval_id] = ref
        return ref


async def report_failure(engine: Engine, approval_id: str, post: Reply, exc: BaseException) -> None:
    """Handling a click on approval ``approval_id`` raised ``exc``: say so in its thread, for
    everyone, and, when the action had been approved (it ran, or was about to, and never
    finished), mark it failed so that its card says so instead of "running it now"."""
    services = engine.services
    approval = await services.approvals.get(approval_id) if approval_id else None
    if approval is None:
        return
    reason = f"{type(exc).__name__}: {exc}"[:300]
    if approval.state is State.APPROVED:
        await services.approvals.finish(approval.id, ok=False, result=f"internal error ({reason})")
        text = (
            f"Approval `{approval.id}`: running `{approval.skill}` failed with an internal error "
            f"({reason}); it did not finish. The audit log has the details."
        )
    else:
        text = f"Approval `{approval.id}`: an internal error ({reason}) stopped this click."
    await services.audit.append(
        AuditEvent.ERROR,
        actor=approval.requester,
        channel=approval.channel,
        thread=approval.thread,
        request_id=approval.request_id,
        skill=approval.skill,
        args=approval.args,
        outcome="error",
        detail=text,
    )
    await post(
        Message(
            thread=approval.thread,
            step=Step.ERROR,
            blocks=[Text(text=text)],
            approval_id=approval.id,
        )
    )
    done = await services.approvals.get(approval.id)
    if done is not None and done.state is not State.PENDING:
        await post(
            Message(
                thread=done.thread,
                step=Step.APPROVAL,
                blocks=[done.card(text)],
                approval_id=done.id,
            )
        )
