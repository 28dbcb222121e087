"""Persistence (SQLAlchemy 2 async): approvals, their votes, the audit chain and incidents.

SQLite (``sqlite+aiosqlite://``) by default, PostgreSQL (``postgresql+asyncpg://``) by URL.
The schema is owned by the Alembic migrations in ``bot/migrations``; :func:`open_store`
upgrades the database to the newest revision before returning (Alembic is imported and run
only when the database's revision is not the newest the package ships: one SELECT tells),
and raises :class:`~opsbot.errors.DatabaseError` (naming the URL without its password) for a
URL it cannot use or a database it cannot reach.

SQLite runs in WAL mode with ``synchronous=FULL``: a commit is on disk when it returns, and
readers do not block the writer (the audit log's group commits, :mod:`opsbot.audit`).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from opsbot.errors import DatabaseError
from opsbot.wal import WalCheckpointer, pragmas

MIGRATIONS = Path(__file__).parent / "migrations"
#: the drivers opsbot runs on (the migrations and tests cover these two)
DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
SUPPORTED = "sqlite+aiosqlite (sqlite://) and postgresql+asyncpg (postgresql://, postgres://)"
EXAMPLES = "sqlite+aiosqlite:///path/opsbot.db or postgresql+asyncpg://user:password@host/db"
#: PostgreSQL advisory lock keys (one namespace of bigints per database): the migrations and,
#: with ``OPSBOT_LEADER_ELECTION=postgres``, the leader (:mod:`opsbot.leader`)
MIGRATION_LOCK = 0x6F707362_6D696772  # "opsbmigr"
#: appends to the audit chain, across replicas (each takes the next seq after the last hash)
AUDIT_LOCK = 0x6F707362_61756474  # "opsbaudt"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class AuditRow(Base):
    """One audit event; ``hash`` = sha256 over the canonical record and ``prev_hash``."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True, default="")
    channel: Mapped[str] = mapped_column(String(200), default="")
    thread: Mapped[str] = mapped_column(String(200), default="")
    request_id: Mapped[str] = mapped_column(String(64), index=True, default="")
    skill: Mapped[str] = mapped_column(String(100), index=True, default="")
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outcome: Mapped[str] = mapped_column(String(32), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ApprovalRow(Base):
    """An approval request. ``state``: pending -> approved|denied|expired; approved ->
    executing -> executed|failed (or unknown: its replica stopped while running it)."""

    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64))
    requester: Mapped[str] = mapped_column(String(200), index=True)
    channel: Mapped[str] = mapped_column(String(200))
    thread: Mapped[str] = mapped_column(String(200))
    skill: Mapped[str] = mapped_column(String(100))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    rule: Mapped[str] = mapped_column(String(200))
    approvers: Mapped[list[str]] = mapped_column(JSON)
    min_approvals: Mapped[int] = mapped_column(Integer)
    preview: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result: Mapped[str] = mapped_column(Text, default="")
    #: when the action started running, and the replica running it (state ``executing``)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    executor: Mapped[str] = mapped_column(String(200), default="")


class VoteRow(Base):
    """One approver's verdict on an approval; one vote per approver."""

    __tablename__ = "approval_votes"
    __table_args__ = (UniqueConstraint("approval_id", "approver", name="uq_vote_approver"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approval_id: Mapped[str] = mapped_column(ForeignKey("approvals.id"), index=True)
    approver: Mapped[str] = mapped_column(String(200))
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageRow(Base):
    """Tokens and cost of one model call, for budgets and accounting."""

    __tablename__ = "llm_usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float)


class TurnRow(Base):
    """One turn of a thread's conversation with the planner (bounded history)."""

    __tablename__ = "conversation_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    thread: Mapped[str] = mapped_column(String(200), index=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class SeenRow(Base):
    """Platform event/interaction ids already handled (Slack retries, reconnect replays)."""

    __tablename__ = "seen_events"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ActionRow(Base):
    """A suggested action offered as a button (``opsbot.model.ActionButton``): the click
    carries only ``id``; the invocation is kept here so any replica can run it."""

    __tablename__ = "suggested_actions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(String(200))
    skill: Mapped[str] = mapped_column(String(100))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    thread: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class ClarificationRow(Base):
    """A request waiting for the answer to the bot's question in its thread (one per
    thread): the skill, the arguments gathered so far and the required ones missing."""

    __tablename__ = "pending_clarifications"

    thread: Mapped[str] = mapped_column(String(200), primary_key=True)
    id: Mapped[str] = mapped_column(String(32))
    requester: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str] = mapped_column(String(64))
    skill: Mapped[str] = mapped_column(String(100))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    missing: Mapped[list[str]] = mapped_column(JSON)
    question: Mapped[str] = mapped_column(Text)
    asked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class IncidentRow(Base):
    """An incident: one Alertmanager alert group (``group_key``) and its thread
    (:mod:`opsbot.incidents`). ``open_key`` (the group key's SHA-256) is unique while the
    incident is open and NULL once it is resolved: the first delivery of a group inserts the
    row, every replica's later deliveries find it (deduplication in the database)."""

    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    group_key: Mapped[str] = mapped_column(Text)
    group_hash: Mapped[str] = mapped_column(String(64), index=True)
    open_key: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    receiver: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), index=True)  # firing|acknowledged|resolved
    title: Mapped[str] = mapped_column(String(300), default="")
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    alerts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    external_url: Mapped[str] = mapped_column(String(500), default="")
    channel: Mapped[str] = mapped_column(String(200), default="")  # route: platform:channel
    thread: Mapped[str] = mapped_column(String(200), default="")  # "" until it is opened
    root: Mapped[str] = mapped_column(String(200), default="")  # the first message's reference
    acked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: when a replica took on posting the first message (another takes over when it is stale)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    version: Mapped[int] = mapped_column(Integer, default=1)


class FollowUpRow(Base):
    """What a write's follow-up (e.g. its rollout) is still to report, kept so that the
    leader runs it and a new leader resumes it (:mod:`opsbot.followups`). ``state``:
    pending -> running (``runner`` heartbeats) -> done | interrupted."""

    __tablename__ = "follow_ups"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    skill: Mapped[str] = mapped_column(String(100))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: the request it follows: its actor (id, roles) for the backend identity, and its thread
    actor: Mapped[dict[str, Any]] = mapped_column(JSON)
    channel: Mapped[str] = mapped_column(String(200))
    thread: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str] = mapped_column(String(64))
    approval_id: Mapped[str] = mapped_column(String(16), default="")
    state: Mapped[str] = mapped_column(String(16), index=True)
    runner: Mapped[str] = mapped_column(String(200), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result: Mapped[str] = mapped_column(Text, default="")


class InventoryRow(Base):
    """The names of one kind the backends know (:mod:`opsbot.inventory`), as the leader last
    gathered them: the other replicas ground against these instead of asking every backend."""

    __tablename__ = "inventory"

    kind: Mapped[str] = mapped_column(String(200), primary_key=True)
    names: Mapped[list[str]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


async def first_time(store: Store, key: str) -> bool:
    """Record ``key``; False when some replica already did (the event is a repeat). When the
    database cannot be reached, True: the event is handled, and fails there with a message
    (nothing can run without the database)."""
    try:
        async with store.sessions() as session:
            session.add(SeenRow(key=key[:200], at=now()))
            try:
                await session.commit()
            except IntegrityError:
                return False
    except Exception as exc:
        if not unavailable(exc):
            raise
        return True
    return True


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached now (refused, lost, timed out),
    rather than a mistake: the caller says so and keeps serving."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        if isinstance(orig, OSError | TimeoutError | ConnectionError):
            return True
        if isinstance(exc, OperationalError | InterfaceError):
            return True
        name = type(orig).__name__ if orig is not None else ""
        return name in (
            "ConnectionDoesNotExistError",
            "CannotConnectNowError",
            "ConnectionFailureError",
            "InterfaceError",
            "AdminShutdownError",
        )
    return isinstance(exc, OSError | TimeoutError | ConnectionError)


def normalise_url(url: str) -> str:
    """Pick the async driver for plain URLs (``postgresql://`` -> ``postgresql+asyncpg://``)."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


@dataclass
class Store:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    #: serialises this process's audit appends (the database's unique ``seq`` guards replicas)
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: the audit log's single writer in this process (:class:`opsbot.audit.AuditWriter`),
    #: made on the first append
    audit_writer: Any = None
    #: awaited by :meth:`close` before the connections go (e.g. the audit writer's flush)
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: a SQLite file's log checkpoints, off the commit path (:mod:`opsbot.wal`)
    checkpointer: WalCheckpointer | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def close(self) -> None:
        for flush in self.on_close:
            await flush()
        await self.engine.dispose()
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)


def now() -> datetime:
    return datetime.now(UTC)


_REVISION = re.compile(r"^revision\s*(?::[^=]*)?=\s*[\"']([^\"']+)[\"']", re.M)
_DOWN = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(.+)$", re.M)


def shipped_heads(folder: Path = MIGRATIONS / "versions") -> set[str]:
    """The head revisions of the migrations in ``folder``, read from the files' ``revision``
    and ``down_revision`` lines (without importing Alembic)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for file in folder.glob("*.py"):
        source = file.read_text(encoding="utf-8")
        found = _REVISION.search(source)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN.search(source)
        if down is not None:
            parents.update(re.findall(r"[\"']([^\"']+)[\"']", down.group(1)))
    return revisions - parents


async def _current_revisions(engine: AsyncEngine) -> set[str] | None:
    """The revisions ``alembic_version`` holds (None: no such table, a new database)."""
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return {str(r[0]) for r in rows}
    except DBAPIError:
        return None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in pragmas():
            cursor.execute(pragma)
    finally:
        cursor.close()


def _upgrade(sync_conn: Any) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = sync_conn
    command.upgrade(config, "head")


def shown_url(url: str | URL) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def database_url(url: str) -> URL:
    """``url`` parsed, with its async driver; :class:`DatabaseError` when it is not a URL of
    a supported database, or names an SQLite file in a folder that does not exist."""
    hint = f"set OPSBOT_DATABASE_URL to e.g. {EXAMPLES}"
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        raise DatabaseError(
            f"OPSBOT_DATABASE_URL {shown_url(url)!r} is not a database URL", hint=hint
        ) from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if DRIVERS.get(backend) != driver:
        raise DatabaseError(
            f"unsupported database URL {shown_url(parsed)}: the supported drivers are {SUPPORTED}",
            hint=hint,
        )
    file = parsed.database or ""
    if backend == "sqlite" and file and file != ":memory:" and not file.startswith("file:"):
        folder = Path(file).parent
        if not folder.is_dir():
            raise DatabaseError(
                f"cannot open the SQLite database {file}: the folder {folder} does not exist",
                hint=f"create {folder}, or set OPSBOT_DATABASE_URL to a file in a folder "
                "that exists",
            )
    return parsed


async def open_store(url: str, *, migrate: bool = True) -> Store:
    """Connect to ``url`` and (by default) run the Alembic migrations up to ``head``, when
    the database is not there yet (its revision is read first: an up-to-date database costs
    one query, and Alembic is not imported).

    Raises :class:`DatabaseError` for a URL that is not one of a supported database, and when
    the database cannot be reached (the message names the URL without its password).
    """
    parsed = database_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
    else:  # a server that restarted (or failed over): pooled connections are checked first
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    try:
        async with engine.connect():
            pass
    except (DBAPIError, OSError, TimeoutError) as exc:
        await engine.dispose()
        reason = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
        raise DatabaseError(
            f"cannot open the database {shown_url(parsed)}: {reason or type(exc).__name__}",
            hint="check that the server runs and accepts this user, or fix OPSBOT_DATABASE_URL",
        ) from exc
    if migrate and await _current_revisions(engine) != shipped_heads():
        async with engine.begin() as conn:
            if parsed.get_backend_name() == "postgresql":
                # replicas starting together: one migrates, the others wait here and then
                # find the schema current (the lock ends with this transaction; PostgreSQL's
                # DDL is transactional, so a migration is all or nothing)
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            await conn.run_sync(_upgrade)
    store = Store(engine, async_sessionmaker(engine, expire_on_commit=False))
    file = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and file not in ("", ":memory:")
        and "file:" not in file
    ):
        store.checkpointer = WalCheckpointer(file).start()
    return store


@asynccontextmanager
async def scratch_database(server_url: str, prefix: str = "opsbot_scratch") -> AsyncIterator[str]:
    """A new, empty PostgreSQL database on the server of ``server_url``, dropped afterwards
    (for tests and benchmarks). Yields its URL."""
    base = normalise_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield base.rsplit("/", 1)[0] + "/" + name
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
