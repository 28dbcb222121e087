"""Append-only, hash-chained audit log.

Every record carries ``seq`` (1, 2, 3, ... with no gaps), ``prev_hash`` (the previous
record's ``hash``; 64 zeros for the first) and ``hash`` = SHA-256 of the canonical JSON of
its own fields plus ``prev_hash``. Editing a record breaks its hash; deleting one leaves a gap
in ``seq`` and a ``prev_hash`` that no longer matches. :meth:`AuditLog.verify` reports which.

Appends are serialised per process by a lock and across replicas by the primary key on
``seq``: a replica that loses the race gets an integrity error and retries on the new head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from opsbot.redact import redact, redact_value
from opsbot.store import AuditRow, Store, now

GENESIS = "0" * 64


class AuditEvent:
    """Event names written to the log (a closed vocabulary, used by ``audit.search``)."""

    REQUEST = "request.received"
    PLAN = "plan"
    POLICY = "policy.decision"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_VOTE = "approval.vote"
    APPROVAL_APPROVED = "approval.approved"
    APPROVAL_DENIED = "approval.denied"
    APPROVAL_EXPIRED = "approval.expired"
    APPROVAL_REFUSED = "approval.refused"
    EXECUTION = "skill.execution"
    RESULT = "skill.result"
    FOLLOW_UP = "skill.follow_up"
    LLM_USAGE = "llm.usage"
    ERROR = "error"


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: datetime
    event: str
    actor: str = ""
    channel: str = ""
    thread: str = ""
    request_id: str = ""
    skill: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""
    detail: str = ""
    prev_hash: str = GENESIS
    hash: str = ""

    def canonical(self) -> bytes:
        body = {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "event": self.event,
            "actor": self.actor,
            "channel": self.channel,
            "thread": self.thread,
            "request_id": self.request_id,
            "skill": self.skill,
            "args": self.args,
            "outcome": self.outcome,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()

    def computed_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "event": self.event,
            "actor": self.actor,
            "channel": self.channel,
            "thread": self.thread,
            "request_id": self.request_id,
            "skill": self.skill,
            "args": self.args,
            "outcome": self.outcome,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_row(cls, row: AuditRow) -> AuditRecord:
        return cls(
            seq=row.seq,
            at=row.at,
            event=row.event,
            actor=row.actor,
            channel=row.channel,
            thread=row.thread,
            request_id=row.request_id,
            skill=row.skill,
            args=row.args or {},
            outcome=row.outcome,
            detail=row.detail,
            prev_hash=row.prev_hash,
            hash=row.hash,
        )


@dataclass
class VerifyReport:
    ok: bool
    checked: int
    head: str
    problems: list[str] = field(default_factory=list)


class AuditLog:
    """The audit log on a :class:`~opsbot.store.Store`. Args and details are redacted on write."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def append(
        self,
        event: str,
        *,
        actor: str = "",
        channel: str = "",
        thread: str = "",
        request_id: str = "",
        skill: str = "",
        args: dict[str, Any] | None = None,
        outcome: str = "",
        detail: str = "",
    ) -> AuditRecord:
        """Append one record and return it with its ``seq`` and ``hash``."""
        clean_args = redact_value(args or {})
        clean_detail = redact(detail)[:4000]
        async with self.store.write_lock:
            for _attempt in range(20):
                async with self.store.sessions() as session:
                    last = (
                        await session.execute(
                            select(AuditRow.seq, AuditRow.hash)
                            .order_by(AuditRow.seq.desc())
                            .limit(1)
                        )
                    ).first()
                    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                    record = AuditRecord(
                        seq=seq,
                        at=now(),
                        event=event,
                        actor=actor,
                        channel=channel,
                        thread=thread,
                        request_id=request_id,
                        skill=skill,
                        args=clean_args,
                        outcome=outcome,
                        detail=clean_detail,
                        prev_hash=prev,
                    )
                    digest = record.computed_hash()
                    session.add(
                        AuditRow(
                            **{
                                k: v for k, v in record.as_dict().items() if k not in ("at", "hash")
                            },
                            at=record.at,
                            hash=digest,
                        )
                    )
                    try:
                        await session.commit()
                    except IntegrityError:
                        await session.rollback()
                        continue
                    return AuditRecord(**{**record.as_dict(), "at": record.at, "hash": digest})
        raise RuntimeError("audit append lost the race 20 times; is the database healthy?")

    async def search(
        self,
        *,
        since: datetime | None = None,
        actor: str | None = None,
        skill: str | None = None,
        event: str | None = None,
        request_id: str | None = None,
        limit: int = 200,
    ) -> list[AuditRecord]:
        """Newest-last records matching every given filter; ``actor`` matches a substring."""
        query = select(AuditRow)
        if since is not None:
            query = query.where(AuditRow.at >= since)
        if actor:
            query = query.where(AuditRow.actor.contains(actor))
        if skill:
            query = query.where(AuditRow.skill == skill)
        if event:
            query = query.where(AuditRow.event == event)
        if request_id:
            query = query.where(AuditRow.request_id == request_id)
        query = query.order_by(AuditRow.seq.desc()).limit(limit)
        async with self.store.sessions() as session:
            rows: Sequence[AuditRow] = (await session.scalars(query)).all()
        return [AuditRecord.from_row(r) for r in reversed(rows)]

    async def get(self, seq: int) -> AuditRecord | None:
        async with self.store.sessions() as session:
            row = await session.get(AuditRow, seq)
        return AuditRecord.from_row(row) if row else None

    async def count(self) -> int:
        async with self.store.sessions() as session:
            return int((await session.scalar(select(func.count()).select_from(AuditRow))) or 0)

    async def verify(self, *, batch: int = 1000) -> VerifyReport:
        """Walk the whole chain; report edited records, gaps (deletions) and broken links."""
        problems: list[str] = []
        expected_seq, prev = 1, GENESIS
        checked = 0
        async with self.store.sessions() as session:
            after = 0
            while True:
                rows = (
                    await session.scalars(
                        select(AuditRow)
                        .where(AuditRow.seq > after)
                        .order_by(AuditRow.seq)
                        .limit(batch)
                    )
                ).all()
                if not rows:
                    break
                for row in rows:
                    record = AuditRecord.from_row(row)
                    if record.seq != expected_seq:
                        problems.append(
                            f"records {expected_seq}..{record.seq - 1} are missing (deleted?)"
                        )
                    if record.prev_hash != prev:
                        problems.append(
                            f"record {record.seq}: prev_hash does not match the record before it"
                        )
                    if record.computed_hash() != record.hash:
                        problems.append(
                            f"record {record.seq}: content does not match its hash (edited)"
                        )
                    prev, expected_seq = record.hash, record.seq + 1
                    checked += 1
                after = rows[-1].seq
        return VerifyReport(ok=not problems, checked=checked, head=prev, problems=problems)
