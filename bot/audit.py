"""Append-only, hash-chained audit log.

Every record carries ``seq`` (1, 2, 3, ... with no gaps), ``prev_hash`` (the previous
record's ``hash``; 64 zeros for the first) and ``hash`` = SHA-256 of the canonical JSON of
its own fields plus ``prev_hash``. Editing a record breaks its hash; deleting one leaves a gap
in ``seq`` and a ``prev_hash`` that no longer matches. :meth:`AuditLog.verify` reports which.

Appends are serialised per process by a lock and across replicas by the primary key on
``seq``: a replica that loses the race gets an integrity error and retries on the new head.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError

from opsbot.redact import redact, redact_value
from opsbot.store import AUDIT_LOCK, AuditRow, Store, now

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
    #: one model call: model, parameters, prompt template versions, tools offered, tokens,
    #: cost, latency (opsbot.intent.llmops.ModelCall.audit_args)
    LLM_CALL = "llm.call"
    ERROR = "error"
    INCIDENT_OPENED = "incident.opened"
    INCIDENT_UPDATED = "incident.updated"
    INCIDENT_ACKNOWLEDGED = "incident.acknowledged"
    INCIDENT_RESOLVED = "incident.resolved"
    #: retention removed a prefix of the log; args carry the hash that prefix ended with
    CHECKPOINT = "audit.checkpoint"
    #: a person looked at (or exported) records in the audit console
    CONSOLE_VIEW = "console.view"
    CONSOLE_EXPORT = "console.export"


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
                    if self.store.dialect == "postgresql":  # replicas append one at a time
                        await session.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK}
                        )
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

    async def of_requests(self, request_ids: Sequence[str]) -> list[AuditRecord]:
        """Every record of these requests, oldest first (their whole chains)."""
        ids = [r for r in dict.fromkeys(request_ids) if r]
        out: list[AuditRecord] = []
        for start in range(0, len(ids), 200):
            async with self.store.sessions() as session:
                rows = (
                    await session.scalars(
                        select(AuditRow)
                        .where(AuditRow.request_id.in_(ids[start : start + 200]))
                        .order_by(AuditRow.seq)
                    )
                ).all()
            out += [AuditRecord.from_row(r) for r in rows]
        return sorted(out, key=lambda r: r.seq)

    async def get(self, seq: int) -> AuditRecord | None:
        async with self.store.sessions() as session:
            row = await session.get(AuditRow, seq)
        return AuditRecord.from_row(row) if row else None

    async def count(self) -> int:
        async with self.store.sessions() as session:
            return int((await session.scalar(select(func.count()).select_from(AuditRow))) or 0)

    async def verify(self, *, batch: int = 1000) -> VerifyReport:
        """Walk the whole chain; report edited records, gaps (deletions) and broken links.
        A log whose oldest records were removed by :meth:`retain` is checked from the
        retention checkpoint (the hash the removed prefix ended with)."""
        status = await self.verify_chain(batch=batch)
        return VerifyReport(
            ok=status.ok,
            checked=status.checked,
            head=status.head_hash,
            problems=[p.message for p in status.problems],
        )

    # -- verification from a checkpoint, anchors, retention (issue 15) ----------------------

    async def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest record; (0, GENESIS) for an empty log."""
        async with self.store.sessions() as session:
            last = (
                await session.execute(
                    select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)
                )
            ).first()
        return (int(last[0]), str(last[1])) if last else (0, GENESIS)

    async def retention_checkpoints(self) -> list[AuditRecord]:
        """The retention checkpoint records still in the log, newest first."""
        async with self.store.sessions() as session:
            rows = (
                await session.scalars(
                    select(AuditRow)
                    .where(AuditRow.event == AuditEvent.CHECKPOINT)
                    .order_by(AuditRow.seq.desc())
                    .limit(100)
                )
            ).all()
        return [AuditRecord.from_row(r) for r in rows]

    async def _base(self, first_seq: int) -> tuple[str, str, ChainProblem | None]:
        """The hash the record before ``first_seq`` had, and what vouches for it: the
        genesis, or the retention checkpoint that removed records up to ``first_seq - 1``."""
        if first_seq <= 1:
            return GENESIS, "genesis", None
        for checkpoint in await self.retention_checkpoints():
            if int(checkpoint.args.get("through_seq", -1)) == first_seq - 1:
                where = checkpoint.args.get("export", "")
                return (
                    str(checkpoint.args.get("through_hash", "")),
                    f"retention checkpoint (record {checkpoint.seq}): records "
                    f"{checkpoint.args.get('first_seq', 1)}..{first_seq - 1} exported"
                    + (f" to {where}" if where else ""),
                    None,
                )
        return (
            GENESIS,
            "genesis",
            ChainProblem(
                first_seq,
                "missing",
                f"records 1..{first_seq - 1} are missing (deleted?)",
            ),
        )

    async def verify_chain(
        self,
        *,
        start: tuple[int, str] | None = None,
        anchors: Sequence[AnchorPoint] = (),
        batch: int = 500,
    ) -> ChainStatus:
        """Walk the chain and name each record that breaks it (edited, missing, relinked,
        reordered), then hold the result against ``anchors`` (heads written outside the
        database): a log that ends before an anchor was truncated, a record whose hash
        differs from its anchor's was rewritten.

        ``start=(seq, hash)`` verifies incrementally from a record verified before (it
        must still have that hash). Hashing runs in a worker thread one batch at a time,
        so a long walk leaves the event loop free (``/healthz`` answers meanwhile).
        """
        started = datetime.now(UTC)
        problems: list[ChainProblem] = []
        seen: dict[int, str] = {}
        wanted = {a.seq for a in anchors}
        async with self.store.sessions() as session:
            first_row = (
                await session.scalars(select(AuditRow).order_by(AuditRow.seq).limit(1))
            ).first()
        if start is not None and start[0] > 0:
            after, prev = start
            base = f"checkpoint at record {after}"
            kept = await self.get(after)
            if kept is None or kept.hash != prev or kept.computed_hash() != kept.hash:
                problems.append(
                    ChainProblem(
                        after,
                        "edited" if kept is not None else "missing",
                        f"record {after}: no longer the record verified before (edited or deleted)",
                    )
                )
            expected = after + 1
        else:
            first_seq = first_row.seq if first_row is not None else 1
            prev, base, missing = await self._base(first_seq)
            if missing is not None:
                problems.append(missing)
            after, expected = first_seq - 1, first_seq
        first_checked = after + 1
        checked = 0
        while True:
            async with self.store.sessions() as session:
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
            records, found, expected, prev = await asyncio.to_thread(
                _check_rows, rows, expected, prev
            )
            problems.extend(found)
            for record in records:
                if record.seq in wanted:
                    seen[record.seq] = record.hash
            checked += len(records)
            after = records[-1].seq
        head_seq = expected - 1
        problems.extend(_against_anchors(anchors, seen, head_seq, first_checked, base))
        return ChainStatus(
            ok=not problems,
            checked=checked,
            first_seq=first_checked,
            head_seq=head_seq,
            head_hash=prev,
            base=base,
            problems=problems,
            started=started,
            finished=datetime.now(UTC),
        )

    async def retain(self, *, before: datetime, export_dir: Path) -> Retention | None:
        """Remove the records older than ``before`` (the prefix of the log up to the first
        record that is not), export first: they are written to a
        JSON-lines file in ``export_dir`` (fsynced, its SHA-256 kept), then a checkpoint
        record carrying the hash the removed prefix ended with is appended, then they are
        deleted. The chain stays verifiable across the boundary (:meth:`verify_chain` starts
        from the checkpoint). Refuses (:class:`ValueError`) when the prefix does not verify:
        a broken record is never deleted out of sight. None when nothing is that old."""
        async with self.store.sessions() as session:
            first = await session.scalar(select(func.min(AuditRow.seq)))
            newer = await session.scalar(
                select(func.min(AuditRow.seq)).where(AuditRow.at >= before)
            )
            last = await session.scalar(select(func.max(AuditRow.seq)))
        if first is None or last is None:
            return None
        if newer is not None:  # the prefix before the first record that is not that old
            last = newer - 1
        if last < first:
            return None
        prev, _base, missing = await self._base(first)
        if missing is not None:
            raise ValueError(f"not removing records: {missing.message}")
        target = export_dir / f"audit-{first:09d}-{last:09d}.jsonl"
        await asyncio.to_thread(export_dir.mkdir, parents=True, exist_ok=True)
        out = await asyncio.to_thread(target.open, "w", encoding="utf-8")
        digest = hashlib.sha256()
        expected, count, after = first, 0, first - 1
        try:
            while after < last:
                async with self.store.sessions() as session:
                    rows = (
                        await session.scalars(
                            select(AuditRow)
                            .where(AuditRow.seq > after, AuditRow.seq <= last)
                            .order_by(AuditRow.seq)
                            .limit(1000)
                        )
                    ).all()
                if not rows:
                    break
                records = [AuditRecord.from_row(r) for r in rows]
                found, expected, prev = await asyncio.to_thread(_check, records, expected, prev)
                if found:
                    raise ValueError(f"not removing records: {found[0].message}")
                chunk = "".join(json.dumps(r.as_dict(), sort_keys=True) + "\n" for r in records)
                digest.update(chunk.encode())
                await asyncio.to_thread(out.write, chunk)
                count += len(records)
                after = records[-1].seq
            await asyncio.to_thread(_sync_close, out)
        except BaseException:
            out.close()
            await asyncio.to_thread(target.unlink, missing_ok=True)
            raise
        through_hash = prev
        checkpoint = await self.append(
            AuditEvent.CHECKPOINT,
            actor="opsbot",
            outcome="retention",
            args={
                "first_seq": first,
                "through_seq": last,
                "through_hash": through_hash,
                "records": count,
                "export": str(target),
                "export_sha256": digest.hexdigest(),
                "before": before.isoformat(),
            },
            detail=f"records {first}..{last} older than {before:%Y-%m-%d %H:%M} UTC exported "
            f"to {target.name} and removed; the chain continues from their last hash",
        )
        async with self.store.sessions() as session:
            await session.execute(delete(AuditRow).where(AuditRow.seq <= last))
            await session.commit()
        return Retention(
            first_seq=first,
            through_seq=last,
            through_hash=through_hash,
            records=count,
            export=target,
            export_sha256=digest.hexdigest(),
            checkpoint=checkpoint,
        )


@dataclass(frozen=True)
class ChainProblem:
    """One break in the chain: ``seq`` names the record where it shows."""

    seq: int
    kind: str  # edited | missing | relinked | truncated | rewritten
    message: str


@dataclass(frozen=True)
class AnchorPoint:
    """A chain head seen outside the database (an anchor file line, a log line)."""

    seq: int
    hash: str
    at: datetime
    where: str = ""


@dataclass
class ChainStatus:
    ok: bool
    checked: int
    first_seq: int
    head_seq: int
    head_hash: str
    base: str
    problems: list[ChainProblem] = field(default_factory=list)
    started: datetime | None = None
    finished: datetime | None = None

    @property
    def first_broken(self) -> int | None:
        """The lowest record that breaks the chain (None when intact)."""
        return min((p.seq for p in self.problems), default=None)

    @property
    def broken(self) -> set[int]:
        return {p.seq for p in self.problems}


@dataclass(frozen=True)
class Retention:
    first_seq: int
    through_seq: int
    through_hash: str
    records: int
    export: Path
    export_sha256: str
    checkpoint: AuditRecord


def _sync_close(out: Any) -> None:
    out.flush()
    os.fsync(out.fileno())
    out.close()


def _check_rows(
    rows: Sequence[AuditRow], expected: int, prev: str
) -> tuple[list[AuditRecord], list[ChainProblem], int, str]:
    """:func:`_check` on loaded rows, turning them into records too (in a worker thread)."""
    records = [AuditRecord.from_row(r) for r in rows]
    return (records, *_check(records, expected, prev))


def _check(
    records: Sequence[AuditRecord], expected: int, prev: str
) -> tuple[list[ChainProblem], int, str]:
    """Check consecutive records from ``expected`` (seq) after ``prev`` (hash)."""
    problems: list[ChainProblem] = []
    for record in records:
        if record.seq != expected:
            problems.append(
                ChainProblem(
                    record.seq,
                    "missing",
                    f"records {expected}..{record.seq - 1} are missing (deleted?)",
                )
            )
        if record.prev_hash != prev:
            problems.append(
                ChainProblem(
                    record.seq,
                    "relinked",
                    f"record {record.seq}: prev_hash does not match the record before it",
                )
            )
        if record.computed_hash() != record.hash:
            problems.append(
                ChainProblem(
                    record.seq,
                    "edited",
                    f"record {record.seq}: content does not match its hash (edited)",
                )
            )
        prev, expected = record.hash, record.seq + 1
    return problems, expected, prev


def _against_anchors(
    anchors: Sequence[AnchorPoint],
    seen: dict[int, str],
    head_seq: int,
    first_seq: int,
    base: str,
) -> list[ChainProblem]:
    problems: list[ChainProblem] = []
    latest = max(anchors, key=lambda a: a.seq, default=None)
    if latest is not None and latest.seq > head_seq:
        problems.append(
            ChainProblem(
                head_seq + 1,
                "truncated",
                f"the log ends at record {head_seq}, but the anchor of "
                f"{latest.at:%Y-%m-%d %H:%M:%S} UTC{_where(latest)} saw record {latest.seq} "
                f"(hash {latest.hash[:16]}…): records {head_seq + 1}..{latest.seq} were "
                "deleted",
            )
        )
    for anchor in anchors:
        found = seen.get(anchor.seq)
        if found is not None and found != anchor.hash:
            problems.append(
                ChainProblem(
                    anchor.seq,
                    "rewritten",
                    f"record {anchor.seq}: hash {found[:16]}… differs from the anchor of "
                    f"{anchor.at:%Y-%m-%d %H:%M:%S} UTC{_where(anchor)} ({anchor.hash[:16]}…): "
                    "the log was truncated or rewritten at or before this record",
                )
            )
    return problems


def _where(anchor: AnchorPoint) -> str:
    return f" in {anchor.where}" if anchor.where else ""
