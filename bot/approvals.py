"""Approval requests and their state machine, kept in the database.

States: ``pending -> approved | denied | expired``, then ``approved -> executing`` (the winner
marks it, with its replica and the time, just before the skill runs) ``-> executed | failed``.
Every transition is a compare-and-set (``UPDATE ... WHERE id = ? AND state = ?``) whose row
count says who won, so with any number of replicas and double clicks exactly one caller sees
:attr:`VoteStatus.APPROVED` and runs the action. Votes are unique per (approval, approver).

A replica that dies while running an action leaves it ``executing``: nobody runs it again,
and after ``OPSBOT_EXECUTION_UNKNOWN_AFTER`` the leader's sweep (:meth:`Approvals.stale`) moves
it to ``unknown`` (it may or may not have happened: look before asking again) and says so in
its thread. One that won the vote but died before marking it ``executing`` ran nothing: it
becomes ``failed`` ("not run"). A late finish of an ``unknown`` one still records the outcome.

Rules enforced here: the requester's own vote never counts; an approver must match the
rule's ``approvers`` under the policy *at the time of the click*; an expired request cannot
be approved.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from opsbot.model import Actor, ApprovalCard, Invocation, Request
from opsbot.model import Vote as CardVote
from opsbot.policy import NeedsApproval, Policy
from opsbot.store import ApprovalRow, Store, VoteRow, now
from opsbot.wording import describe

ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i: typable from a screen
ID_LENGTH = 6


class State(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    EXECUTING = "executing"
    EXECUTED = "executed"
    FAILED = "failed"
    UNKNOWN = "unknown"


OUTCOME_WORDS = {
    State.EXECUTED: "approved and executed",
    State.FAILED: "approved; execution failed",
    State.EXECUTING: "approved; running",
    State.UNKNOWN: "approved; outcome unknown",
    State.APPROVED: "approved",
    State.DENIED: "denied",
    State.EXPIRED: "expired",
}


class VoteStatus(StrEnum):
    RECORDED = "recorded"  # counted, more approvals needed
    APPROVED = "approved"  # this call won the transition: the caller must execute
    DENIED = "denied"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    DECIDED = "already-decided"
    DUPLICATE = "duplicate"
    SELF = "self-approval"
    NOT_ALLOWED = "not-an-approver"


@dataclass(frozen=True)
class Vote:
    approver: str
    verdict: str
    at: datetime
    reason: str = ""


@dataclass(frozen=True)
class Approval:
    id: str
    request_id: str
    requester: str
    channel: str
    thread: str
    skill: str
    args: dict[str, Any]
    rule: str
    approvers: list[str]
    min_approvals: int
    preview: str
    state: State
    created_at: datetime
    expires_at: datetime
    result: str = ""
    votes: list[Vote] = field(default_factory=list)

    @property
    def approvals(self) -> int:
        return sum(1 for v in self.votes if v.verdict == "approve")

    @property
    def outcome(self) -> str:
        """How a decided approval ended, in words ("approved and executed", "denied"...)."""
        return OUTCOME_WORDS.get(self.state, self.state.value)

    @property
    def invocation(self) -> Invocation:
        return Invocation(skill=self.skill, args=self.args)

    def card(self, status: str = "") -> ApprovalCard:
        """The approval as the one card block every adapter renders (and edits in place as
        the state changes); ``status`` is a line on the latest change."""
        return ApprovalCard(
            approval_id=self.id,
            summary=describe(self.invocation),
            requester=self.requester,
            approvers=list(self.approvers),
            min_approvals=self.min_approvals,
            expires_at=self.expires_at,
            state=self.state.value,
            status=status or (f"{self.outcome}: {self.result}" if self.result else ""),
            preview=self.preview,
            votes=[
                CardVote(actor=v.approver, verdict=v.verdict, at=v.at, reason=v.reason)  # type: ignore[arg-type]
                for v in self.votes
            ],
        )


@dataclass(frozen=True)
class VoteOutcome:
    status: VoteStatus
    approval: Approval | None
    message: str


def new_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def normalise_id(text: str) -> str:
    return text.strip().lower().removeprefix("#")


class Approvals:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def open(
        self,
        request: Request,
        invocation: Invocation,
        decision: NeedsApproval,
        preview: str = "",
    ) -> Approval:
        """Create a pending approval that expires ``decision.ttl`` from now."""
        created = now()
        for _ in range(10):
            row = ApprovalRow(
                id=new_id(),
                request_id=request.id,
                requester=request.actor.id,
                channel=request.channel,
                thread=request.thread_key,
                skill=invocation.skill,
                args=invocation.args,
                rule=decision.rule,
                approvers=list(decision.approvers),
                min_approvals=decision.min_approvals,
                preview=preview,
                state=State.PENDING.value,
                created_at=created,
                expires_at=created + decision.ttl,
                result="",
            )
            async with self.store.sessions() as session:
                session.add(row)
                try:
                    await session.commit()
                except IntegrityError:
                    continue
            found = await self.get(row.id)
            assert found is not None
            return found
        raise RuntimeError("could not allocate an approval id")

    async def get(self, approval_id: str) -> Approval | None:
        approval_id = normalise_id(approval_id)
        async with self.store.sessions() as session:
            row = await session.get(ApprovalRow, approval_id)
            if row is None:
                return None
            votes = (
                await session.scalars(
                    select(VoteRow).where(VoteRow.approval_id == approval_id).order_by(VoteRow.id)
                )
            ).all()
        return _to_approval(row, votes)

    async def find(self, *, state: State | None = State.PENDING, limit: int = 50) -> list[Approval]:
        """Approvals in ``state`` (all when None), oldest first."""
        query = select(ApprovalRow).order_by(ApprovalRow.created_at).limit(limit)
        if state is not None:
            query = query.where(ApprovalRow.state == state.value)
        async with self.store.sessions() as session:
            rows = (await session.scalars(query)).all()
        out = []
        for row in rows:
            approval = await self.get(row.id)
            if approval is not None:
                out.append(approval)
        return out

    async def _transition(
        self, approval_id: str, src: State | tuple[State, ...], dst: State, **values: Any
    ) -> bool:
        sources = [s.value for s in (src if isinstance(src, tuple) else (src,))]
        async with self.store.sessions() as session:
            result = await session.execute(
                update(ApprovalRow)
                .where(ApprovalRow.id == approval_id, ApprovalRow.state.in_(sources))
                .values(state=dst.value, **values)
            )
            await session.commit()
        return bool(getattr(result, "rowcount", 0) == 1)

    async def start(self, approval_id: str, executor: str) -> bool:
        """``approved -> executing``, by ``executor`` (this replica), just before the action
        runs; False when it is no longer ``approved`` (the sweep gave it up: do not run it)."""
        return await self._transition(
            approval_id, State.APPROVED, State.EXECUTING, started_at=now(), executor=executor[:200]
        )

    async def stale(self, after: float) -> list[tuple[Approval, State]]:
        """Approvals whose replica stopped: ``executing`` for more than ``after`` seconds ->
        ``unknown``; ``approved`` (won, never started) for as long -> ``failed`` (not run).
        Returns each one moved with the state it left."""
        cutoff = now() - timedelta(seconds=after)
        async with self.store.sessions() as session:
            rows = (
                await session.execute(
                    select(ApprovalRow.id, ApprovalRow.state).where(
                        or_(
                            and_(
                                ApprovalRow.state == State.EXECUTING.value,
                                ApprovalRow.started_at <= cutoff,
                            ),
                            and_(
                                ApprovalRow.state == State.APPROVED.value,
                                ApprovalRow.decided_at <= cutoff,
                            ),
                        )
                    )
                )
            ).all()
        moved: list[tuple[Approval, State]] = []
        for approval_id, state in rows:
            if state == State.EXECUTING.value:
                done = await self._transition(
                    approval_id,
                    State.EXECUTING,
                    State.UNKNOWN,
                    result=f"no outcome from the replica running it within {after:g}s",
                )
            else:
                done = await self._transition(
                    approval_id,
                    State.APPROVED,
                    State.FAILED,
                    finished_at=now(),
                    result="not run: the replica that took it stopped before running it",
                )
            if done and (approval := await self.get(approval_id)) is not None:
                moved.append((approval, State(state)))
        return moved

    async def expire_due(self) -> list[Approval]:
        """Move every pending approval past its expiry to ``expired``; return those moved."""
        async with self.store.sessions() as session:
            due = (
                await session.scalars(
                    select(ApprovalRow.id).where(
                        ApprovalRow.state == State.PENDING.value, ApprovalRow.expires_at <= now()
                    )
                )
            ).all()
        moved = []
        for approval_id in due:
            if await self._transition(approval_id, State.PENDING, State.EXPIRED, decided_at=now()):
                approval = await self.get(approval_id)
                if approval:
                    moved.append(approval)
        return moved

    async def vote(
        self,
        approval_id: str,
        approver: Actor,
        verdict: str,
        policy: Policy,
        reason: str = "",
    ) -> VoteOutcome:
        """Record ``approver``'s ``verdict`` (``approve``/``deny``) and advance the state.

        Exactly one concurrent caller gets :attr:`VoteStatus.APPROVED` for an approval.
        """
        if verdict not in ("approve", "deny"):
            raise ValueError(f"verdict must be approve or deny, not {verdict!r}")
        approval_id = normalise_id(approval_id)
        approval = await self.get(approval_id)
        if approval is None:
            return VoteOutcome(
                VoteStatus.UNKNOWN, None, f"no approval request with id {approval_id}"
            )
        if approval.state != State.PENDING:
            return VoteOutcome(
                VoteStatus.DECIDED, approval, f"approval {approval.id} is already {approval.state}"
            )
        if approval.expires_at <= now():
            await self._transition(approval.id, State.PENDING, State.EXPIRED, decided_at=now())
            return VoteOutcome(
                VoteStatus.EXPIRED,
                await self.get(approval.id),
                f"approval {approval.id} expired at {approval.expires_at:%H:%M:%S} UTC",
            )
        if approver.id == approval.requester and verdict == "approve":
            return VoteOutcome(
                VoteStatus.SELF, approval, "you requested this action; someone else must approve it"
            )
        # the requester may withdraw (deny) their own request; anyone else must be an approver
        if approver.id != approval.requester and not policy.may_approve(
            approver, approval.approvers
        ):
            return VoteOutcome(
                VoteStatus.NOT_ALLOWED,
                approval,
                f"{approver.id} may not decide approval {approval.id} "
                f"(approvers: {', '.join(approval.approvers)})",
            )
        async with self.store.sessions() as session:
            session.add(
                VoteRow(
                    approval_id=approval.id,
                    approver=approver.id,
                    verdict=verdict,
                    reason=reason,
                    at=now(),
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                return VoteOutcome(
                    VoteStatus.DUPLICATE, approval, f"{approver.id} already voted on {approval.id}"
                )
        if verdict == "deny":
            if await self._transition(approval.id, State.PENDING, State.DENIED, decided_at=now()):
                return VoteOutcome(VoteStatus.DENIED, await self.get(approval.id), "denied")
            return await self._decided(approval.id)
        async with self.store.sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(VoteRow)
                .where(
                    VoteRow.approval_id == approval.id,
                    VoteRow.verdict == "approve",
                    VoteRow.approver != approval.requester,
                )
            )
        if (count or 0) < approval.min_approvals:
            return VoteOutcome(
                VoteStatus.RECORDED,
                await self.get(approval.id),
                f"approval recorded ({count}/{approval.min_approvals})",
            )
        if await self._transition(approval.id, State.PENDING, State.APPROVED, decided_at=now()):
            return VoteOutcome(VoteStatus.APPROVED, await self.get(approval.id), "approved")
        return await self._decided(approval.id)

    async def _decided(self, approval_id: str) -> VoteOutcome:
        approval = await self.get(approval_id)
        state = approval.state if approval else "gone"
        return VoteOutcome(
            VoteStatus.DECIDED, approval, f"approval {approval_id} is already {state}"
        )

    async def finish(self, approval_id: str, *, ok: bool, result: str) -> bool:
        """``executing`` (or ``approved``, or ``unknown`` when it finished late) ``->
        executed|failed``; False if it was in none of these."""
        return await self._transition(
            approval_id,
            (State.EXECUTING, State.APPROVED, State.UNKNOWN),
            State.EXECUTED if ok else State.FAILED,
            finished_at=now(),
            result=result[:4000],
        )


def _to_approval(row: ApprovalRow, votes: Any) -> Approval:
    return Approval(
        id=row.id,
        request_id=row.request_id,
        requester=row.requester,
        channel=row.channel,
        thread=row.thread,
        skill=row.skill,
        args=dict(row.args),
        rule=row.rule,
        approvers=list(row.approvers),
        min_approvals=row.min_approvals,
        preview=row.preview,
        state=State(row.state),
        created_at=row.created_at,
        expires_at=row.expires_at,
        result=row.result,
        votes=[Vote(v.approver, v.verdict, v.at, v.reason) for v in votes],
    )
