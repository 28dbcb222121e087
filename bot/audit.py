"""Append-only, hash-chained audit log.

Every record carries ``seq`` (1, 2, 3, ... with no gaps), ``prev_hash`` (the previous
record's ``hash``; 64 zeros for the first) and ``hash`` = SHA-256 of the canonical JSON of
its own fields plus ``prev_hash``. Editing a record breaks its hash; deleting one leaves a gap
in ``seq`` and a ``prev_hash`` that no longer matches. :meth:`AuditLog.verify` reports which.

Appends go through one writer per process and database (:class:`AuditWriter`): callers
queue their records and the writer commits whatever has queued in one transaction (group
commit), computing the chain in queue order. Across processes (replicas, ``opsbot`` commands
beside ``opsbot serve``) the transaction first takes the database's write lock (SQLite
``BEGIN IMMEDIATE``; PostgreSQL a transaction-scoped advisory lock) and reads the head under
it; the head the writer last wrote is cached, so the batch is hashed before the lock is taken
and only re-hashed when another process wrote in between. :meth:`AuditLog.append` returns
once its record is committed (durable): a crash loses only records nobody was told about, and
a commit is all of a batch or none of it, so the chain stays whole. The primary key on ``seq``
still refuses a record written twice (an older opsbot without the lock): the batch retries on
the new head.

Verification keeps a checkpoint (the last record verified intact and its hash, in the
database) so the console and ``opsbot audit verify --since-checkpoint`` check only what was
appended since; a full walk stays available.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from opsbot.redact import redact, redact_value
from opsbot.store import AUDIT_LOCK, AuditRow, SeenRow, Store, now
from opsbot.wal import pragmas

log = structlog.get_logger(__name__)

GENESIS = "0" * 64
#: the most records one transaction of the writer commits
MAX_BATCH = 500
#: where the verification checkpoint is kept (a row of ``seen_events``: prefix + seq:hash)
VERIFIED = "audit:verified:"


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

    def fields(self) -> dict[str, Any]:
        """Every field but ``hash``: what the hash covers."""
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
        }

    def canonical(self) -> bytes:
        return json.dumps(
            self.fields(), sort_keys=True, separators=(",", ":"), default=str
        ).encode()

    def computed_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {**self.fields(), "hash": self.hash}

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
        """Append one record; returns it with its ``seq`` and ``hash`` once it is committed
        (the writer commits it with whatever else was queued meanwhile)."""
        future = self.enqueue(
            event,
            actor=actor,
            channel=channel,
            thread=thread,
            request_id=request_id,
            skill=skill,
            args=args,
            outcome=outcome,
            detail=detail,
        )
        return await asyncio.shield(future)  # a cancelled caller's record is still written

    def enqueue(
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
    ) -> asyncio.Future[AuditRecord]:
        """Queue one record and return at once: the future is the record once it is
        committed (it raises when its batch could not be). Records are committed in the
        order they were queued, so a later record's commit implies the earlier ones'."""
        entry = _Entry(
            event=event,
            actor=actor,
            channel=channel,
            thread=thread,
            request_id=request_id,
            skill=skill,
            args=redact_value(args or {}),
            outcome=outcome,
            detail=redact(detail)[:4000],
        )
        return AuditWriter.of(self.store).submit(entry)

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

    async def verified(self) -> tuple[int, str] | None:
        """The verification checkpoint: (seq, hash) of the newest record a walk found intact
        (None when nothing was verified yet)."""
        async with self.store.sessions() as session:
            key = await session.scalar(
                select(SeenRow.key)
                .where(SeenRow.key.startswith(VERIFIED, autoescape=True))
                .order_by(SeenRow.at.desc())
                .limit(1)
            )
        if key is None:
            return None
        seq, _, digest = key[len(VERIFIED) :].partition(":")
        return (int(seq), digest) if seq.isdigit() and len(digest) == 64 else None

    async def keep_verified(self, status: ChainStatus) -> None:
        """Keep ``status``'s head as the verification checkpoint when the walk found the
        chain intact (a broken chain moves nothing)."""
        if not status.ok or status.head_seq <= 0:
            return
        key = f"{VERIFIED}{status.head_seq}:{status.head_hash}"
        async with self.store.sessions() as session:
            await session.execute(
                delete(SeenRow).where(
                    SeenRow.key.startswith(VERIFIED, autoescape=True), SeenRow.key != key
                )
            )
            if await session.get(SeenRow, key) is None:
                session.add(SeenRow(key=key, at=now()))
            await session.commit()

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


@dataclass
class _Entry:
    """A record queued for the writer (redacted; ``seq``, time and hashes come at commit)."""

    event: str
    actor: str
    channel: str
    thread: str
    request_id: str
    skill: str
    args: dict[str, Any]
    outcome: str
    detail: str

    def record(self, seq: int, prev: str) -> AuditRecord:
        record = AuditRecord(
            seq=seq,
            at=now(),
            event=self.event,
            actor=self.actor,
            channel=self.channel,
            thread=self.thread,
            request_id=self.request_id,
            skill=self.skill,
            args=self.args,
            outcome=self.outcome,
            detail=self.detail,
            prev_hash=prev,
        )
        return replace(record, hash=record.computed_hash())


def _retrieved(future: asyncio.Future[AuditRecord]) -> None:
    """Mark a failed append's exception as seen (its caller may have been cancelled)."""
    if not future.cancelled():
        future.exception()


def _chain(entries: Sequence[_Entry], head: tuple[int, str]) -> list[AuditRecord]:
    seq, prev = head
    records: list[AuditRecord] = []
    for entry in entries:
        record = entry.record(seq + 1, prev)
        records.append(record)
        seq, prev = record.seq, record.hash
    return records


def _row(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "at": record.at,
        "event": record.event,
        "actor": record.actor,
        "channel": record.channel,
        "thread": record.thread,
        "request_id": record.request_id,
        "skill": record.skill,
        "args": record.args,
        "outcome": record.outcome,
        "detail": record.detail,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


class AuditWriter:
    """The one writer of a store's audit log in this process: appends queue here, and a
    task commits what has queued, up to :data:`MAX_BATCH` records per transaction, in order.

    A batch's transaction takes the database's write lock, reads the head, inserts the
    batch chained on it and commits; then every append of the batch returns its record. A
    failed commit fails the appends of that batch (nothing of it was written) and the
    writer goes on with the next. :meth:`close` (called by ``Store.close``) waits for what is
    queued to be written.

    The transaction runs on a connection of the writer's own: an SQLite file's in a thread
    of its own (the whole transaction is one hand-off to it), PostgreSQL's through asyncpg;
    other databases through the store's engine."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: deque[tuple[_Entry, asyncio.Future[AuditRecord]]] = deque()
        #: (seq, hash) of the newest record this writer committed (what the next batch is
        #: hashed on before the lock tells whether another process wrote since)
        self.head: tuple[int, str] | None = None
        self.batches = 0
        self.records = 0
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db: _Database | None = None

    @classmethod
    def of(cls, store: Store) -> AuditWriter:
        """``store``'s writer (made on first use)."""
        writer = store.audit_writer
        if not isinstance(writer, AuditWriter):
            writer = cls(store)
            store.audit_writer = writer
            store.on_close.append(writer.close)
        return writer

    def _running(self) -> asyncio.Event:
        """Start the writer task in the running loop (again, when an earlier loop ended)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            if self._loop is not loop:
                self._db = None  # a connection belongs to the loop it was made in
            self._loop = loop
            self._wake = asyncio.Event()
            self._idle = asyncio.Event()
            self._task = loop.create_task(self._run(), name="audit-writer")
        assert self._wake is not None
        return self._wake

    def submit(self, entry: _Entry) -> asyncio.Future[AuditRecord]:
        """Queue ``entry``; the future is its record once committed. Awaiting it through
        :func:`asyncio.shield` (as :meth:`AuditLog.append` does) keeps a cancelled caller's
        record queued."""
        wake = self._running()
        future: asyncio.Future[AuditRecord] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        self.queue.append((entry, future))
        wake.set()
        return future

    async def close(self) -> None:
        """Write what is queued, then stop the task and close the writer's connection."""
        task, idle = self._task, self._idle
        if task is not None and not task.done() and self._loop is asyncio.get_running_loop():
            assert idle is not None
            while self.queue or not idle.is_set():
                await idle.wait()
                await asyncio.sleep(0)  # let appends woken by the last batch queue theirs
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._task = None
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def _run(self) -> None:
        try:
            await self._write()
        except asyncio.CancelledError:  # the loop is shutting down (close() waits for idle):
            waiting = list(self.queue)  # nobody would ever answer these records' futures;
            self.queue.clear()  # wake whoever waits on them rather than leave them hanging
            for _, future in waiting:
                future.cancel()
            if waiting:
                log.error("audit.writer_cancelled", records=len(waiting))
            raise

    async def _write(self) -> None:
        wake, idle = self._wake, self._idle
        assert wake is not None and idle is not None
        while True:
            if not self.queue:
                idle.set()
                wake.clear()
                await wake.wait()
                continue
            idle.clear()
            batch = [self.queue.popleft() for _ in range(min(len(self.queue), MAX_BATCH))]
            try:
                records = await self._commit([entry for entry, _ in batch])
            except asyncio.CancelledError:
                self.queue.extendleft(reversed(batch))
                raise
            except Exception as exc:
                log.error("audit.append_failed", records=len(batch), error=str(exc)[:300])
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for record, (_, future) in zip(records, batch, strict=True):
                    if not future.done():
                        future.set_result(record)

    async def _commit(self, entries: list[_Entry]) -> list[AuditRecord]:
        if self._db is None:
            self._db = await _Database.open(self.store)
        try:
            records = await self._db.commit(entries, self.head)
        except Exception:
            db, self._db = self._db, None  # a fresh connection for the next batch
            await db.close()
            raise
        self.head = (records[-1].seq, records[-1].hash)
        self.batches += 1
        self.records += len(records)
        return records


class _Database:
    """Where the writer's transactions go: the store's engine (any database)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    async def open(store: Store) -> _Database:
        url = store.engine.url
        if url.get_backend_name() == "sqlite" and _is_file(url.database):
            return await _SqliteFile.connect(store, str(url.database))
        if url.get_backend_name() == "postgresql" and url.get_driver_name() == "asyncpg":
            return await _Postgres.connect(store)
        return _Database(store)

    async def close(self) -> None:
        return None

    async def commit(
        self, entries: list[_Entry], cached: tuple[int, str] | None
    ) -> list[AuditRecord]:
        guessed = _chain(entries, cached) if cached is not None else None
        sqlite = self.store.dialect == "sqlite"
        for _attempt in range(20):
            async with self.store.engine.connect() as conn:
                try:
                    if sqlite:
                        await conn.exec_driver_sql("BEGIN IMMEDIATE")
                    else:
                        await conn.execute(
                            text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK}
                        )
                    last = (
                        await conn.execute(
                            select(AuditRow.seq, AuditRow.hash)
                            .order_by(AuditRow.seq.desc())
                            .limit(1)
                        )
                    ).first()
                    head = (int(last[0]), str(last[1])) if last else (0, GENESIS)
                    records = guessed if guessed and head == cached else _chain(entries, head)
                    await conn.execute(insert(AuditRow), [_row(r) for r in records])
                    await conn.commit()
                except IntegrityError:  # a writer without the lock took the seq
                    await conn.rollback()
                    guessed = None
                    continue
            return records
        raise RuntimeError(LOST_RACE)


LOST_RACE = "audit append lost the race 20 times; is the database healthy?"
_HEAD = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"
_COLUMNS = tuple(c.name for c in AuditRow.__table__.columns)


def _json_text(value: Any) -> str:
    return json.dumps(value, default=str)


def _is_file(database: str | None) -> bool:
    return bool(database) and database != ":memory:" and not str(database).startswith("file:")


class _SqliteFile(_Database):
    """An SQLite file: a connection of the writer's own (WAL, ``synchronous=FULL``) in a
    thread of its own; each batch's whole transaction is one call into that thread."""

    def __init__(self, store: Store, path: str) -> None:
        super().__init__(store)
        self.path = path
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self.conn: sqlite3.Connection | None = None
        dialect = store.engine.dialect
        self.binds = [
            AuditRow.__table__.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in _COLUMNS
        ]
        # args as the JSON column stores them, and a value JSON has no type for as its text
        # (what the hash covers: AuditRecord.canonical), so no record can fail its batch
        self.binds[_COLUMNS.index("args")] = _json_text
        self.insert = (
            f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
        )

    @classmethod
    async def connect(cls, store: Store, path: str) -> _SqliteFile:
        db = cls(store, path)
        await asyncio.get_running_loop().run_in_executor(db.thread, db._connect)
        return db

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        for pragma in pragmas():
            conn.execute(pragma)
        self.conn = conn

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self.thread, conn.close)
        self.thread.shutdown(wait=False)

    def _values(self, record: AuditRecord) -> tuple[Any, ...]:
        row = _row(record)
        return tuple(
            bind(row[name]) if bind is not None else row[name]
            for name, bind in zip(_COLUMNS, self.binds, strict=True)
        )

    async def commit(
        self, entries: list[_Entry], cached: tuple[int, str] | None
    ) -> list[AuditRecord]:
        guessed = _chain(entries, cached) if cached is not None else None
        rows = [self._values(r) for r in guessed] if guessed is not None else None
        return await asyncio.get_running_loop().run_in_executor(
            self.thread, self._transaction, entries, cached, guessed, rows
        )

    def _transaction(
        self,
        entries: list[_Entry],
        cached: tuple[int, str] | None,
        guessed: list[AuditRecord] | None,
        rows: list[tuple[Any, ...]] | None,
    ) -> list[AuditRecord]:
        conn = self.conn
        assert conn is not None
        for _attempt in range(20):
            try:
                conn.execute("BEGIN IMMEDIATE")  # the write lock, across processes
                last = conn.execute(_HEAD).fetchone()
                head = (int(last[0]), str(last[1])) if last else (0, GENESIS)
                if guessed is None or rows is None or head != cached:
                    guessed = _chain(entries, head)
                    rows = [self._values(r) for r in guessed]
                conn.executemany(self.insert, rows)
                conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                guessed = None
                continue
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):  # as the store's would say
                    raise ConnectionError(f"the audit log's database: {exc}") from exc
                raise
            return guessed
        raise RuntimeError(LOST_RACE)


class _Postgres(_Database):
    """PostgreSQL: an asyncpg connection of the writer's own; the transaction takes an
    advisory lock (:data:`AUDIT_LOCK`) before it reads the head."""

    def __init__(self, store: Store, conn: Any) -> None:
        super().__init__(store)
        self.conn = conn
        self.insert = (
            f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join(f'${i}' for i in range(1, len(_COLUMNS) + 1))})"
        )

    @classmethod
    async def connect(cls, store: Store) -> _Postgres:
        import asyncpg

        url = store.engine.url
        conn = await asyncpg.connect(
            user=url.username,
            password=url.password,
            host=url.host,
            port=url.port,
            database=url.database,
            **{k: v for k, v in url.query.items() if k in ("ssl", "server_settings")},
        )
        return cls(store, conn)

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()

    @staticmethod
    def _values(record: AuditRecord) -> tuple[Any, ...]:
        row = _row(record)
        row["args"] = _json_text(row["args"])
        return tuple(row[name] for name in _COLUMNS)

    async def commit(
        self, entries: list[_Entry], cached: tuple[int, str] | None
    ) -> list[AuditRecord]:
        import asyncpg

        conn = self.conn
        guessed = _chain(entries, cached) if cached is not None else None
        for _attempt in range(20):
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)
                    last = await conn.fetchrow(_HEAD)
                    head = (int(last[0]), str(last[1])) if last else (0, GENESIS)
                    records = guessed if guessed and head == cached else _chain(entries, head)
                    await conn.executemany(self.insert, [self._values(r) for r in records])
            except asyncpg.UniqueViolationError:
                guessed = None
                continue
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                # the server is gone (restarted, failed over, unreachable): the callers see
                # what the store's own connections raise then (opsbot.store.unavailable)
                raise ConnectionError(f"the audit log's database connection: {exc}") from exc
            return records
        raise RuntimeError(LOST_RACE)


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
