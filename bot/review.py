"""The audit log as reviewers read it (the console's and ``audit.search``'s read model).

Filters parsed from a query string (a bad value is a :class:`FilterError` naming the filter,
which the console answers 400), a keyset-paged timeline of records, one request's whole chain
(request -> plan -> policy -> approval votes -> execution -> result -> follow-up) with its
approval's votes and timings, approvals by state with their timings, incidents when the
incident tracker's table is there, and exports (JSON lines, CSV) of a filtered view.

Read-only: nothing here writes to the database.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Select, String, cast, func, inspect, or_, select, text

from opsbot.approvals import ID_ALPHABET, ID_LENGTH, State
from opsbot.audit import AuditEvent, AuditRecord
from opsbot.durations import parse_duration
from opsbot.store import ApprovalRow, AuditRow, Store, VoteRow

#: the default time range of the timeline
DEFAULT_SINCE = "7d"
PAGE_SIZES = (10, 500)
DEFAULT_PAGE = 50
OUTCOMES = (
    "ok",
    "failed",
    "error",
    "allow",
    "deny",
    "approve",
    "invoke",
    "answer",
    "clarify",
    "about",
    "note",
    "started",
    "recorded",
    "approved",
    "denied",
    "expired",
    "retention",
)
_NAME = re.compile(r"^[\w.:@*/+-]{1,200}$")
_APPROVAL_ID = re.compile(rf"^#?[{ID_ALPHABET}]{{{ID_LENGTH}}}$", re.I)
_INCIDENT_ID = re.compile(r"^[\w-]{1,40}$")
_REQUEST_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")
CONSOLE_EVENTS = (AuditEvent.CONSOLE_VIEW, AuditEvent.CONSOLE_EXPORT)


class FilterError(ValueError):
    """A filter value that cannot be used; the message names the filter and says why."""


def parse_time(name: str, raw: str, *, end: bool = False) -> datetime:
    """``2026-11-24``, ``2026-11-24T10:00`` (a datetime-local field), with seconds or a zone;
    UTC unless the value says otherwise. A bare date as ``end`` means the end of that day."""
    value = raw.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return day + timedelta(days=1) if end else day
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise FilterError(
            f"{name} must be a date or a date and time (2026-11-24 or 2026-11-24T10:00, UTC), "
            f"not {raw[:40]!r}"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True)
class Filters:
    """What the timeline, the exports and ``audit.search``'s console links select."""

    since: str = DEFAULT_SINCE  # a duration back from now, when no ``start`` is given
    start: datetime | None = None
    end: datetime | None = None
    actor: str = ""
    skill: str = ""
    channel: str = ""
    outcome: str = ""
    event: str = ""
    incident: str = ""
    approval: str = ""
    request: str = ""
    q: str = ""
    console: bool = False  # include the console's own view/export records
    before: int | None = None  # keyset cursor: records with a lower seq
    limit: int = DEFAULT_PAGE

    FIELDS = (
        "since",
        "from",
        "to",
        "actor",
        "skill",
        "channel",
        "outcome",
        "event",
        "incident",
        "approval",
        "request",
        "q",
        "console",
        "before",
        "limit",
    )

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        """Filters from a query string; raises :class:`FilterError` for a bad value."""
        unknown = sorted(k for k in query if k not in cls.FIELDS)
        if unknown:
            raise FilterError(
                f"unknown filter {unknown[0]!r}: the filters are {', '.join(cls.FIELDS)}"
            )

        def get(name: str) -> str:
            value = query.get(name, "").strip()
            if len(value) > 200:
                raise FilterError(f"{name} is at most 200 characters long")
            if any(ord(c) < 32 for c in value):
                raise FilterError(f"{name} may not hold control characters")
            return value

        since = get("since") or DEFAULT_SINCE
        try:
            span = parse_duration(since)
        except ValueError:
            raise FilterError(
                f"since must be a duration such as 24h, 7d or 90d, not {since[:40]!r}"
            ) from None
        if span > timedelta(days=3660):
            raise FilterError("since may reach back at most 3660d")
        start = parse_time("from", get("from")) if get("from") else None
        end = parse_time("to", get("to"), end=True) if get("to") else None
        if start and end and end <= start:
            raise FilterError("to must be later than from")
        for name in ("actor", "skill", "channel"):
            if get(name) and not _NAME.match(get(name)):
                raise FilterError(
                    f"{name} may hold letters, digits and . : @ * / + - _ only, not "
                    f"{get(name)[:40]!r}"
                )
        outcome = get("outcome")
        if outcome and not re.fullmatch(r"[a-z0-9-]{1,32}", outcome):
            raise FilterError(f"outcome must be one word such as ok, failed, deny, not {outcome!r}")
        event = get("event")
        if event and not re.fullmatch(r"[a-z._]{1,64}", event):
            raise FilterError(f"event must be an event name such as skill.result, not {event!r}")
        approval = get("approval")
        if approval and not _APPROVAL_ID.match(approval):
            raise FilterError(
                f"approval must be an approval id ({ID_LENGTH} letters and digits, e.g. 7kq2mx), "
                f"not {approval[:40]!r}"
            )
        incident = get("incident")
        if incident and not _INCIDENT_ID.match(incident):
            raise FilterError(f"incident must be an incident id, not {incident[:40]!r}")
        request = get("request")
        if request and not _REQUEST_ID.match(request):
            raise FilterError(f"request must be a request id, not {request[:40]!r}")
        before = _int("before", get("before"), 1, 2**62, None)
        limit = _int("limit", get("limit"), *PAGE_SIZES, DEFAULT_PAGE)
        console = get("console")
        if console not in ("", "0", "1", "on", "true", "false"):
            raise FilterError(f"console is 1 or 0, not {console[:10]!r}")
        return cls(
            since=since,
            start=start,
            end=end,
            actor=get("actor"),
            skill=get("skill"),
            channel=get("channel"),
            outcome=outcome,
            event=event,
            incident=incident,
            approval=approval.lower().removeprefix("#"),
            request=request,
            q=get("q"),
            console=console in ("1", "on", "true"),
            before=before,
            limit=limit or DEFAULT_PAGE,
        )

    def window(self, now: datetime | None = None) -> tuple[datetime, datetime | None]:
        now = now or datetime.now(UTC)
        return (self.start or now - parse_duration(self.since)), self.end

    def params(self, **changes: Any) -> dict[str, str]:
        """The non-default filters as query parameters (for links and forms)."""
        f = replace(self, **changes) if changes else self
        out = {
            "since": "" if f.start or f.since == DEFAULT_SINCE else f.since,
            "from": f.start.strftime("%Y-%m-%dT%H:%M") if f.start else "",
            "to": f.end.strftime("%Y-%m-%dT%H:%M") if f.end else "",
            "actor": f.actor,
            "skill": f.skill,
            "channel": f.channel,
            "outcome": f.outcome,
            "event": f.event,
            "incident": f.incident,
            "approval": f.approval,
            "request": f.request,
            "q": f.q,
            "console": "1" if f.console else "",
            "before": str(f.before) if f.before else "",
            "limit": str(f.limit) if f.limit != DEFAULT_PAGE else "",
        }
        return {k: v for k, v in out.items() if v}

    def query(self, **changes: Any) -> str:
        return urlencode(self.params(**changes))

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params(before=None).items()) or "everything"

    def describe_filters(self) -> str:
        """The filters other than the time range and paging, as ``key=value`` words."""
        skip = ("since", "from", "to", "before", "limit", "console")
        return " ".join(f"{k}={v}" for k, v in self.params().items() if k not in skip)


def _int(name: str, raw: str, low: int, high: int, default: int | None) -> int | None:
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise FilterError(f"{name} must be a whole number from {low} to {high}, not {raw[:40]!r}")
    return int(raw)


@dataclass
class Page:
    records: list[AuditRecord]
    filters: Filters
    older: int | None  # the cursor of the next (older) page, None at the end
    total: int


@dataclass
class VoteView:
    approver: str
    verdict: str
    at: datetime
    reason: str = ""


@dataclass
class ApprovalView:
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
    state: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    finished_at: datetime | None
    result: str
    votes: list[VoteView] = field(default_factory=list)

    @property
    def approved_by(self) -> list[str]:
        return [v.approver for v in self.votes if v.verdict == "approve"]

    @property
    def time_to_decide(self) -> timedelta | None:
        return self.decided_at - self.created_at if self.decided_at else None

    @property
    def time_to_finish(self) -> timedelta | None:
        return self.finished_at - self.decided_at if self.finished_at and self.decided_at else None

    def expires_in(self, now: datetime | None = None) -> timedelta:
        return self.expires_at - (now or datetime.now(UTC))


STEP_OF_EVENT = {
    AuditEvent.REQUEST: "request",
    AuditEvent.PLAN: "plan",
    AuditEvent.LLM_USAGE: "plan",
    AuditEvent.POLICY: "policy",
    AuditEvent.APPROVAL_REQUESTED: "approval",
    AuditEvent.APPROVAL_VOTE: "vote",
    AuditEvent.APPROVAL_APPROVED: "vote",
    AuditEvent.APPROVAL_DENIED: "vote",
    AuditEvent.APPROVAL_EXPIRED: "approval",
    AuditEvent.APPROVAL_REFUSED: "vote",
    AuditEvent.EXECUTION: "execution",
    AuditEvent.RESULT: "result",
    AuditEvent.FOLLOW_UP: "follow-up",
    AuditEvent.ERROR: "error",
}


@dataclass
class RequestView:
    """One request's whole chain, oldest record first."""

    request_id: str
    records: list[AuditRecord]
    approvals: list[ApprovalView]

    @property
    def first(self) -> AuditRecord:
        return self.records[0]

    @property
    def requester(self) -> str:
        request = next((r for r in self.records if r.event == AuditEvent.REQUEST), None)
        if request is not None:
            return request.actor
        if self.approvals:
            return self.approvals[0].requester
        return self.first.actor

    @property
    def text(self) -> str:
        request = next((r for r in self.records if r.event == AuditEvent.REQUEST), None)
        return request.detail if request else ""

    @property
    def thread(self) -> str:
        return next((r.thread for r in self.records if r.thread), "")

    @property
    def channel(self) -> str:
        return next((r.channel for r in self.records if r.channel), "")

    @property
    def skill(self) -> str:
        ran = [r.skill for r in self.records if r.event == AuditEvent.EXECUTION and r.skill]
        planned = [r.skill for r in self.records if r.skill]
        return (ran or planned or [""])[0]

    @property
    def target(self) -> str:
        """What the request acted on, as ``namespace/name`` when its args say."""
        for r in self.records:
            if r.skill == self.skill and r.args:
                return target_of(r.args)
        return ""

    @property
    def outcome(self) -> str:
        results = [r for r in self.records if r.event == AuditEvent.RESULT]
        if results:
            return results[-1].outcome
        for event, word in (
            (AuditEvent.APPROVAL_DENIED, "denied"),
            (AuditEvent.APPROVAL_EXPIRED, "expired"),
            (AuditEvent.APPROVAL_REQUESTED, "awaiting approval"),
        ):
            if any(r.event == event for r in self.records):
                return word
        if any(r.event == AuditEvent.POLICY and r.outcome == "deny" for r in self.records):
            return "denied"
        if any(r.event == AuditEvent.ERROR for r in self.records):
            return "error"
        return self.records[-1].outcome or "answered"

    @property
    def approved_by(self) -> list[str]:
        voters = [v.approver for a in self.approvals for v in a.votes if v.verdict == "approve"]
        if voters:
            return voters
        return [
            r.actor
            for r in self.records
            if r.event in (AuditEvent.APPROVAL_VOTE, AuditEvent.APPROVAL_APPROVED)
        ]

    @property
    def change(self) -> Any:
        """What the write sent (a patch), when its result recorded it."""
        for r in self.records:
            if r.event == AuditEvent.RESULT and "change" in r.args:
                return r.args["change"]
        return None

    def steps(self) -> list[tuple[str, AuditRecord]]:
        return [(STEP_OF_EVENT.get(r.event, r.event), r) for r in self.records]


def target_of(args: Mapping[str, Any]) -> str:
    name = args.get("name") or args.get("service") or args.get("alert") or ""
    namespace = args.get("namespace") or ""
    if name and namespace:
        return f"{namespace}/{name}"
    return str(name or args.get("matchers") or args.get("query") or "")[:80]


def _approval(row: ApprovalRow, votes: Sequence[VoteRow]) -> ApprovalView:
    return ApprovalView(
        id=row.id,
        request_id=row.request_id,
        requester=row.requester,
        channel=row.channel,
        thread=row.thread,
        skill=row.skill,
        args=dict(row.args or {}),
        rule=row.rule,
        approvers=list(row.approvers or []),
        min_approvals=row.min_approvals,
        preview=row.preview,
        state=row.state,
        created_at=row.created_at,
        expires_at=row.expires_at,
        decided_at=row.decided_at,
        finished_at=row.finished_at,
        result=row.result,
        votes=[VoteView(v.approver, v.verdict, v.at, v.reason) for v in votes],
    )


@dataclass
class Incident:
    id: str
    status: str
    title: str
    channel: str
    thread: str
    opened_at: datetime | None
    acked_by: str
    acked_at: datetime | None
    resolved_at: datetime | None
    labels: dict[str, Any]


class Review:
    """Read-only queries over the audit log, approvals and incidents of a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- timeline ----------------------------------------------------------------------------

    async def _where(self, query: Select[Any], f: Filters) -> Select[Any]:
        start, end = f.window()
        query = query.where(AuditRow.at >= start)
        if end is not None:
            query = query.where(AuditRow.at < end)
        if f.actor:
            query = query.where(AuditRow.actor.icontains(f.actor.replace("*", ""), autoescape=True))
        if f.skill:
            if f.skill.endswith("*"):
                query = query.where(AuditRow.skill.startswith(f.skill.rstrip("*"), autoescape=True))
            else:
                query = query.where(AuditRow.skill == f.skill)
        if f.channel:
            query = query.where(AuditRow.channel.icontains(f.channel, autoescape=True))
        if f.outcome:
            query = query.where(AuditRow.outcome == f.outcome)
        if f.event:
            query = query.where(AuditRow.event == f.event)
        elif not f.console:
            query = query.where(AuditRow.event.not_in(CONSOLE_EVENTS))
        if f.request:
            query = query.where(AuditRow.request_id == f.request)
        if f.approval:
            async with self.store.sessions() as session:
                row = await session.get(ApprovalRow, f.approval)
            query = query.where(AuditRow.request_id == (row.request_id if row else "-"))
        if f.incident:
            thread = await self.incident_thread(f.incident)
            mention = AuditRow.detail.icontains(f.incident, autoescape=True)
            query = query.where(or_(AuditRow.thread == thread, mention) if thread else mention)
        if f.q:
            query = query.where(
                or_(
                    AuditRow.detail.icontains(f.q, autoescape=True),
                    AuditRow.actor.icontains(f.q, autoescape=True),
                    AuditRow.skill.icontains(f.q, autoescape=True),
                    AuditRow.thread.icontains(f.q, autoescape=True),
                    AuditRow.request_id == f.q,
                    cast(AuditRow.args, String).icontains(f.q, autoescape=True),
                )
            )
        return query

    async def timeline(self, f: Filters) -> Page:
        """One page of matching records, newest first (keyset paging on ``seq``)."""
        query = await self._where(select(AuditRow), f)
        counted = await self._where(select(func.count()).select_from(AuditRow), f)
        if f.before:
            query = query.where(AuditRow.seq < f.before)
        query = query.order_by(AuditRow.seq.desc()).limit(f.limit + 1)
        async with self.store.sessions() as session:
            rows = (await session.scalars(query)).all()
            total = int(await session.scalar(counted) or 0)
        records = [AuditRecord.from_row(r) for r in rows[: f.limit]]
        older = records[-1].seq if len(rows) > f.limit else None
        return Page(records=records, filters=f, older=older, total=total)

    async def export(self, f: Filters, *, batch: int = 1000) -> AsyncIterator[AuditRecord]:
        """Every record the filters select (no paging), oldest first."""
        query = await self._where(select(AuditRow), f)
        after = 0
        while True:
            page = query.where(AuditRow.seq > after).order_by(AuditRow.seq).limit(batch)
            async with self.store.sessions() as session:
                rows = (await session.scalars(page)).all()
            if not rows:
                return
            for row in rows:
                yield AuditRecord.from_row(row)
            after = rows[-1].seq

    # -- requests and approvals ---------------------------------------------------------------

    async def request(self, request_id: str) -> RequestView | None:
        async with self.store.sessions() as session:
            rows = (
                await session.scalars(
                    select(AuditRow).where(AuditRow.request_id == request_id).order_by(AuditRow.seq)
                )
            ).all()
        if not rows:
            return None
        approvals = await self.approvals(request_id=request_id)
        return RequestView(request_id, [AuditRecord.from_row(r) for r in rows], approvals)

    async def requests(self, request_ids: Sequence[str]) -> list[RequestView]:
        """The chains of several requests (in the order given)."""
        ids = [r for r in dict.fromkeys(request_ids) if r][:200]
        if not ids:
            return []
        async with self.store.sessions() as session:
            rows = (
                await session.scalars(
                    select(AuditRow).where(AuditRow.request_id.in_(ids)).order_by(AuditRow.seq)
                )
            ).all()
            approval_rows = (
                await session.scalars(select(ApprovalRow).where(ApprovalRow.request_id.in_(ids)))
            ).all()
            votes = (
                await session.scalars(
                    select(VoteRow)
                    .where(VoteRow.approval_id.in_([a.id for a in approval_rows]))
                    .order_by(VoteRow.id)
                )
            ).all()
        by_request: dict[str, list[AuditRecord]] = {}
        for row in rows:
            by_request.setdefault(row.request_id, []).append(AuditRecord.from_row(row))
        approvals: dict[str, list[ApprovalView]] = {}
        for a in approval_rows:
            mine = [v for v in votes if v.approval_id == a.id]
            approvals.setdefault(a.request_id, []).append(_approval(a, mine))
        return [
            RequestView(rid, by_request[rid], approvals.get(rid, []))
            for rid in ids
            if rid in by_request
        ]

    async def approvals(
        self,
        *,
        state: str | None = None,
        request_id: str | None = None,
        since: datetime | None = None,
        limit: int = 200,
    ) -> list[ApprovalView]:
        """Approvals, newest first, with their votes and timings."""
        query = select(ApprovalRow).order_by(ApprovalRow.created_at.desc()).limit(limit)
        if state == "decided":
            query = query.where(
                ApprovalRow.state.in_(
                    [State.APPROVED.value, State.DENIED.value, State.EXECUTED.value, "failed"]
                )
            )
        elif state:
            query = query.where(ApprovalRow.state == state)
        if request_id:
            query = query.where(ApprovalRow.request_id == request_id)
        if since is not None:
            query = query.where(ApprovalRow.created_at >= since)
        async with self.store.sessions() as session:
            rows = (await session.scalars(query)).all()
            votes = (
                await session.scalars(
                    select(VoteRow)
                    .where(VoteRow.approval_id.in_([r.id for r in rows]))
                    .order_by(VoteRow.id)
                )
            ).all()
        return [_approval(r, [v for v in votes if v.approval_id == r.id]) for r in rows]

    # -- incidents (issue 11's table, when it is there) ----------------------------------------

    async def has_incidents(self) -> bool:
        async with self.store.engine.connect() as conn:
            return bool(await conn.run_sync(lambda c: inspect(c).has_table("incidents")))

    async def incidents(self, limit: int = 100) -> list[Incident] | None:
        """Recent incidents, newest first; None when this database has no incidents table."""
        if not await self.has_incidents():
            return None
        async with self.store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT id, status, title, channel, thread, opened_at, acked_by, "
                        "acked_at, resolved_at, labels FROM incidents "
                        "ORDER BY opened_at DESC LIMIT :limit"
                    ),
                    {"limit": limit},
                )
            ).all()
        return [
            Incident(
                id=str(r[0]),
                status=str(r[1] or ""),
                title=str(r[2] or ""),
                channel=str(r[3] or ""),
                thread=str(r[4] or ""),
                opened_at=_when(r[5]),
                acked_by=str(r[6] or ""),
                acked_at=_when(r[7]),
                resolved_at=_when(r[8]),
                labels=_json(r[9]),
            )
            for r in rows
        ]

    async def incident_thread(self, incident_id: str) -> str:
        if not await self.has_incidents():
            return ""
        async with self.store.engine.connect() as conn:
            thread = await conn.scalar(
                text("SELECT thread FROM incidents WHERE id = :id"), {"id": incident_id}
            )
        return str(thread or "")


def _when(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        loaded = json.loads(value) if value else {}
    except (TypeError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


# -- exports -------------------------------------------------------------------------------

CSV_COLUMNS = (
    "seq",
    "at",
    "event",
    "actor",
    "channel",
    "thread",
    "request_id",
    "skill",
    "args",
    "outcome",
    "detail",
    "prev_hash",
    "hash",
)


def csv_cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP's CSV-injection advice)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_header() -> str:
    out = io.StringIO()
    csv.writer(out).writerow(CSV_COLUMNS)
    return out.getvalue()


def csv_row(record: AuditRecord) -> str:
    data = record.as_dict()
    out = io.StringIO()
    csv.writer(out).writerow(
        [
            csv_cell(json.dumps(data[c], sort_keys=True) if c == "args" else str(data[c]))
            for c in CSV_COLUMNS
        ]
    )
    return out.getvalue()


def jsonl_row(record: AuditRecord) -> str:
    return json.dumps(record.as_dict(), sort_keys=True) + "\n"
