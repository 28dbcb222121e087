"""Incidents: Alertmanager alert groups as records, each with its own thread.

``POST /alertmanager`` (:mod:`opsbot.adapters.http`) reads Alertmanager's webhook JSON,
version 4 (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config), with
:func:`parse_webhook`: a payload that is not one is refused whole (:class:`BadPayload`); an
alert in it that is malformed is left out and named, and the rest are kept. Then
:meth:`Desk.receive`:

- **One incident per alert group** (Alertmanager's ``groupKey``), kept in the database
  (:class:`~opsbot.store.IncidentRow`): the first delivery inserts it under a unique key, so
  when two replicas receive the same group at once one inserts and the other finds it.
  Resends, repeats and changes are merged into it (new alerts, alerts that ended, the count of
  deliveries), never a new thread; ``resolved`` marks it resolved. Once resolved (and shown),
  the group's next firing is a new incident.
- **Routing**: the first of ``OPSBOT_ALERT_ROUTES`` whose label matchers hold for the group's
  labels names the channel (``discord:<id>`` / ``slack:<id>``), else ``OPSBOT_ALERT_CHANNEL``.
- **The thread**: the replica that inserted the incident posts its first message in that
  channel (the alert's own data: name, summary, labels, start, runbook and links, and an
  **Ack** button) and opens the thread under it; that is all the webhook waits for. The
  triage (``incident.triage``) then runs in the thread in the background, through the engine
  (:meth:`~opsbot.engine.Engine.run`: policy, audit, every step posted), as the receiver's
  system identity ``alertmanager:<receiver>``. Later changes are told in the thread and
  edited into the first message.
- **Ack**: the button's id is ``incident-ack:<incident id>``; :meth:`Engine.click` hands it
  to :meth:`Desk.ack`, which records who acknowledged it and when (first click wins, in the
  database), audits it, says so in the thread and edits the first message.

Every record of an incident in the audit log carries its id as ``request_id`` (the triage
request's id is the incident's too), so ``opsbot audit list``/``audit.search`` link them;
``opsbot incidents`` lists the incidents with the actions proposed and taken in their threads
(:meth:`Incidents.actions`, read from the suggested actions and the audit log).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError

from opsbot.audit import AuditEvent
from opsbot.config import Settings
from opsbot.durations import format_duration
from opsbot.model import (
    ActionButton,
    Actor,
    Audience,
    Block,
    ButtonStyle,
    Invocation,
    Message,
    Step,
    Table,
    Text,
)
from opsbot.store import ActionRow, AuditRow, IncidentRow, Store, now

if TYPE_CHECKING:
    from opsbot.engine import Engine, Reply
    from opsbot.services import Services

log = structlog.get_logger(__name__)

VERSION = "4"  # the webhook payload version opsbot reads
MAX_ALERTS = 500  # alerts of one payload that are read; the rest are refused (and said so)
ACK_PREFIX = "incident-ack:"
TRIAGE = "incident.triage"
#: a replica that took on posting an incident's first message and did not within this long
#: (it crashed, or the chat platform refused) is taken over by the next delivery
CLAIM_TTL = timedelta(seconds=30)
SHOWN_ALERTS = 10  # alerts listed in the first message and in an update
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
_FRACTION = re.compile(r"(\.\d{6})\d+")


class Status(StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class BadPayload(ValueError):
    """The body is not an Alertmanager webhook payload opsbot can read (nothing is kept)."""


# -- the webhook payload ---------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as Alertmanager writes it (nanoseconds, ``Z``); None when it is not
    one, or is Go's zero time (``0001-01-01T00:00:00Z``: not set)."""
    if not isinstance(value, str) or not value:
        return None
    text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return None if parsed.year <= 1 else parsed.astimezone(UTC)


def _strings(value: Any) -> dict[str, str] | None:
    """A label set: a mapping of strings to strings (None when it is not one)."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return None
    return dict(value)


@dataclass(frozen=True)
class Alert:
    """One alert of a payload, as kept in the incident's ``alerts``."""

    fingerprint: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str = ""
    generator_url: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
        }


def parse_alert(raw: Any) -> Alert:
    """One alert of the payload's ``alerts``; raises ``ValueError`` saying what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"not an object but {type(raw).__name__}")
    status = raw.get("status")
    if status not in ("firing", "resolved"):
        raise ValueError(f"status is {status!r}, not firing or resolved")
    labels = _strings(raw.get("labels"))
    if not labels:
        raise ValueError("labels are missing or not a mapping of strings")
    annotations = _strings(raw.get("annotations", {}))
    if annotations is None:
        raise ValueError("annotations are not a mapping of strings")
    starts = parse_time(raw.get("startsAt"))
    if starts is None:
        raise ValueError(f"startsAt {str(raw.get('startsAt'))[:40]!r} is not an RFC 3339 time")
    ends = raw.get("endsAt", "")
    if ends and not isinstance(ends, str):
        raise ValueError("endsAt is not a string")
    fingerprint = raw.get("fingerprint") or ""
    if not isinstance(fingerprint, str):
        raise ValueError("fingerprint is not a string")
    if not fingerprint:  # Alertmanager always sends one; derive it from the labels otherwise
        canonical = json.dumps(labels, sort_keys=True).encode()
        fingerprint = hashlib.sha256(canonical).hexdigest()[:16]
    url = raw.get("generatorURL", "")
    return Alert(
        fingerprint=fingerprint[:64],
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=starts.isoformat(),
        ends_at=e.isoformat() if (e := parse_time(ends)) else "",
        generator_url=url if isinstance(url, str) else "",
    )


@dataclass(frozen=True)
class Webhook:
    """A payload that can be acted on: its group and its valid alerts; ``rejected`` says
    which alerts were left out and why (one line each)."""

    group_key: str
    status: str
    receiver: str
    alerts: list[Alert]
    group_labels: dict[str, str] = field(default_factory=dict)
    common_labels: dict[str, str] = field(default_factory=dict)
    common_annotations: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    rejected: list[str] = field(default_factory=list)
    truncated: int = 0

    @property
    def labels(self) -> dict[str, str]:
        """The labels the group's alerts share (routing, the title): Alertmanager's
        ``commonLabels``, else those every valid alert has."""
        if self.common_labels:
            return dict(self.common_labels)
        shared = dict(self.alerts[0].labels)
        for alert in self.alerts[1:]:
            shared = {k: v for k, v in shared.items() if alert.labels.get(k) == v}
        return {**self.group_labels, **shared}


def parse_webhook(payload: Any) -> Webhook:
    """The payload of one notification; raises :class:`BadPayload` when it is not version 4
    or not a webhook payload, or holds no valid alert. Malformed alerts are left out and
    named in ``rejected``, as are those past :data:`MAX_ALERTS`."""
    if not isinstance(payload, dict):
        raise BadPayload(f"the body is a JSON {type(payload).__name__}, not an object")
    version = payload.get("version")
    if version != VERSION:
        raise BadPayload(
            f"version {version!r}: opsbot reads Alertmanager's webhook payload version {VERSION}"
        )
    group_key = payload.get("groupKey")
    if not isinstance(group_key, str) or not group_key.strip():
        raise BadPayload("groupKey is missing or not a string")
    status = payload.get("status")
    if status not in ("firing", "resolved"):
        raise BadPayload(f"status is {status!r}, not firing or resolved")
    raw_alerts = payload.get("alerts")
    if not isinstance(raw_alerts, list) or not raw_alerts:
        raise BadPayload("alerts is missing, empty or not a list")
    receiver = payload.get("receiver", "")
    if not isinstance(receiver, str):
        raise BadPayload("receiver is not a string")
    alerts: list[Alert] = []
    rejected: list[str] = []
    for index, raw in enumerate(raw_alerts[:MAX_ALERTS]):
        try:
            alerts.append(parse_alert(raw))
        except ValueError as exc:
            rejected.append(f"alerts[{index}]: {exc}")
    if len(raw_alerts) > MAX_ALERTS:
        rejected.append(
            f"alerts[{MAX_ALERTS}:]: {len(raw_alerts) - MAX_ALERTS} alerts past the first "
            f"{MAX_ALERTS} were not read (set max_alerts in the webhook_config)"
        )
    if not alerts:
        raise BadPayload("no valid alert: " + "; ".join(rejected[:5]))
    external = payload.get("externalURL", "")
    truncated = payload.get("truncatedAlerts", 0)
    return Webhook(
        group_key=group_key,
        status=status,
        receiver=receiver,
        alerts=alerts,
        group_labels=_strings(payload.get("groupLabels")) or {},
        common_labels=_strings(payload.get("commonLabels")) or {},
        common_annotations=_strings(payload.get("commonAnnotations")) or {},
        external_url=external if isinstance(external, str) else "",
        rejected=rejected,
        truncated=truncated if isinstance(truncated, int) else 0,
    )


def route(settings: Settings, labels: Mapping[str, str]) -> str | None:
    """The channel (``platform:id``) of the first route whose matchers hold for ``labels``;
    ``OPSBOT_ALERT_CHANNEL`` when none does; None when neither is configured."""
    for candidate in settings.alert_routes:
        if candidate.matches(dict(labels)):
            return candidate.channel
    return settings.alert_channel or None


def title_of(labels: Mapping[str, str]) -> str:
    """``HighErrorRate: checkout in shop`` (the alert name, its service and namespace)."""
    name = labels.get("alertname") or "alert"
    service = labels.get("service") or labels.get("app") or ""
    namespace = labels.get("namespace") or ""
    about = service + (f" in {namespace}" if namespace else "") if service else namespace
    return f"{name}: {about}"[:300] if about else name[:300]


def group_hash(group_key: str) -> str:
    return hashlib.sha256(group_key.encode()).hexdigest()


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Incident:
    id: str
    group_key: str
    receiver: str
    status: str
    title: str
    labels: dict[str, str]
    annotations: dict[str, str]
    alerts: list[dict[str, Any]]
    external_url: str
    channel: str
    thread: str
    root: str
    acked_by: str | None
    acked_at: datetime | None
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    deliveries: int
    version: int

    @classmethod
    def of(cls, row: IncidentRow) -> Incident:
        return cls(
            id=row.id,
            group_key=row.group_key,
            receiver=row.receiver,
            status=row.status,
            title=row.title,
            labels=dict(row.labels or {}),
            annotations=dict(row.annotations or {}),
            alerts=list(row.alerts or []),
            external_url=row.external_url,
            channel=row.channel,
            thread=row.thread,
            root=row.root,
            acked_by=row.acked_by,
            acked_at=row.acked_at,
            opened_at=row.opened_at,
            updated_at=row.updated_at,
            resolved_at=row.resolved_at,
            deliveries=row.deliveries,
            version=row.version,
        )

    @property
    def actor(self) -> str:
        """The system identity the incident's own steps are by: ``alertmanager:<receiver>``."""
        return f"alertmanager:{self.receiver or 'webhook'}"

    @property
    def firing(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts if a.get("status") == "firing"]

    @property
    def resolved(self) -> bool:
        return self.status == Status.RESOLVED

    @property
    def started_at(self) -> datetime | None:
        times = [t for a in self.alerts if (t := parse_time(a.get("startsAt")))]
        return min(times) if times else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group_key": self.group_key,
            "receiver": self.receiver,
            "status": self.status,
            "title": self.title,
            "labels": self.labels,
            "annotations": self.annotations,
            "alerts": self.alerts,
            "external_url": self.external_url,
            "channel": self.channel,
            "thread": self.thread,
            "acked_by": self.acked_by,
            "acked_at": self.acked_at.isoformat() if self.acked_at else None,
            "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "deliveries": self.deliveries,
        }


@dataclass(frozen=True)
class Change:
    """What one delivery did to its incident."""

    incident: Incident
    #: this call inserted the incident (or took over its stale opening): it posts the first
    #: message and opens the thread
    opened: bool = False
    new: list[dict[str, Any]] = field(default_factory=list)
    ended: list[dict[str, Any]] = field(default_factory=list)
    refiring: list[dict[str, Any]] = field(default_factory=list)
    became_resolved: bool = False

    @property
    def news(self) -> bool:
        return bool(self.new or self.ended or self.refiring or self.became_resolved)


def merge(
    known: Sequence[dict[str, Any]], incoming: Sequence[Alert], group_resolved: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(all alerts, new ones, ones that ended, ones firing again): ``incoming`` merged into
    ``known`` by fingerprint. A resolved group ends every alert still firing."""
    merged = [dict(a) for a in known]
    at = {a.get("fingerprint"): i for i, a in enumerate(merged)}
    new: list[dict[str, Any]] = []
    ended: list[dict[str, Any]] = []
    refiring: list[dict[str, Any]] = []
    for alert in incoming:
        data = alert.as_dict()
        index = at.get(alert.fingerprint)
        if index is None:
            at[alert.fingerprint] = len(merged)
            merged.append(data)
            new.append(data)
            continue
        before = merged[index].get("status")
        merged[index] = data
        if before == "firing" and alert.status == "resolved":
            ended.append(data)
        elif before == "resolved" and alert.status == "firing":
            refiring.append(data)
    if group_resolved:
        for alert_data in merged:
            if alert_data.get("status") == "firing":
                alert_data["status"] = "resolved"
                ended.append(alert_data)
    return merged, new, ended, refiring


@dataclass(frozen=True)
class Acked:
    """The outcome of an Ack click: whether this click acknowledged it (False: someone had)."""

    incident: Incident
    now: bool


class Incidents:
    """The incidents in the database (:class:`~opsbot.store.IncidentRow`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(self, hook: Webhook, channel: str) -> Change:
        """Insert the incident of ``hook``'s group, or merge ``hook`` into it (one incident per
        group, whatever the number of replicas receiving it: the database decides)."""
        key = group_hash(hook.group_key)
        resolved = hook.status == "resolved"
        for _attempt in range(50):
            async with self.store.sessions() as session:
                row = await session.scalar(select(IncidentRow).where(IncidentRow.open_key == key))
                if row is None and resolved:
                    row = await self._resolved_one(session, key, hook)
                if row is None:
                    created = self._new_row(hook, key, channel)
                    session.add(created)
                    try:
                        await session.commit()
                    except IntegrityError:  # another replica inserted it first: merge into it
                        await session.rollback()
                        continue
                    incident = Incident.of(created)
                    return Change(incident, opened=True, new=list(incident.alerts))
                change = await self._merge(session, row, hook)
                if change is not None:
                    return change
        raise RuntimeError("recording the incident lost the race 50 times; is the database well?")

    async def _resolved_one(self, session: Any, key: str, hook: Webhook) -> IncidentRow | None:
        """A resolved notification for a group with no open incident: the newest incident of
        the group when it knows these alerts (a repeat of its resolution), else None."""
        row: IncidentRow | None = await session.scalar(
            select(IncidentRow)
            .where(IncidentRow.group_hash == key)
            .order_by(IncidentRow.opened_at.desc())
            .limit(1)
        )
        if row is None:
            return None
        known = {a.get("fingerprint") for a in row.alerts or []}
        return row if any(a.fingerprint in known for a in hook.alerts) else None

    def _new_row(self, hook: Webhook, key: str, channel: str) -> IncidentRow:
        at = now()
        merged, _, _, _ = merge([], hook.alerts, hook.status == "resolved")
        labels = hook.labels
        resolved = hook.status == "resolved"
        return IncidentRow(
            id=uuid.uuid4().hex[:12],
            group_key=hook.group_key,
            group_hash=key,
            open_key=key,  # held until the incident is resolved and shown
            receiver=hook.receiver[:200],
            status=Status.RESOLVED if resolved else Status.FIRING,
            title=title_of(labels),
            labels=labels,
            annotations=hook.common_annotations or dict(hook.alerts[0].annotations),
            alerts=merged,
            external_url=hook.external_url[:500],
            channel=channel,
            thread="",
            root="",
            opened_at=at,
            updated_at=at,
            resolved_at=at if resolved else None,
            claimed_at=at,
            deliveries=1,
            version=1,
        )

    async def _merge(self, session: Any, row: IncidentRow, hook: Webhook) -> Change | None:
        """Merge ``hook`` into ``row`` if nobody changed it meanwhile (None: try again)."""
        resolved = hook.status == "resolved"
        merged, new, ended, refiring = merge(row.alerts or [], hook.alerts, resolved)
        at = now()
        status = row.status
        became_resolved = False
        if resolved and status != Status.RESOLVED:
            status, became_resolved = Status.RESOLVED, True
        elif not resolved:
            status = Status.ACKNOWLEDGED if row.acked_by else Status.FIRING
        values: dict[str, Any] = {
            "alerts": merged,
            "status": status,
            "updated_at": at,
            "deliveries": row.deliveries + 1,
            "version": row.version + 1,
        }
        if became_resolved:
            values["resolved_at"] = at
        elif status != Status.RESOLVED:
            values["resolved_at"] = None
        if status == Status.RESOLVED and row.thread:
            values["open_key"] = None  # shown resolved: the group's next firing is new
        takeover = not row.thread and row.claimed_at < at - CLAIM_TTL
        if takeover:
            values["claimed_at"] = at
        done = await session.execute(
            update(IncidentRow)
            .where(IncidentRow.id == row.id, IncidentRow.version == row.version)
            .values(**values)
        )
        if getattr(done, "rowcount", 0) != 1:
            await session.rollback()
            return None
        await session.commit()
        fresh = await self.get(row.id)
        assert fresh is not None
        return Change(
            fresh,
            opened=takeover,
            new=new,
            ended=ended,
            refiring=refiring,
            became_resolved=became_resolved,
        )

    async def opened(self, incident_id: str, thread: str, root: str) -> Incident:
        """The incident's thread is open: keep where (a resolved one lets its group go)."""
        async with self.store.sessions() as session:
            row = await session.get(IncidentRow, incident_id)
            assert row is not None
            row.thread, row.root = thread, root
            if row.status == Status.RESOLVED:
                row.open_key = None
            row.version += 1
            row.updated_at = now()
            await session.commit()
            return Incident.of(row)

    async def release(self, incident_id: str) -> None:
        """Posting the first message failed: the next delivery of the group tries again."""
        async with self.store.sessions() as session:
            await session.execute(
                update(IncidentRow)
                .where(IncidentRow.id == incident_id, IncidentRow.thread == "")
                .values(claimed_at=NEVER)
            )
            await session.commit()

    async def ack(self, incident_id: str, actor: str) -> Acked | None:
        """``actor`` acknowledges the incident: the first one does (None: no such incident)."""
        at = now()
        async with self.store.sessions() as session:
            row = await session.get(IncidentRow, incident_id)
            if row is None:
                return None
            done = await session.execute(
                update(IncidentRow)
                .where(IncidentRow.id == incident_id, IncidentRow.acked_by.is_(None))
                .values(
                    acked_by=actor[:200],
                    acked_at=at,
                    status=case(
                        (IncidentRow.status == Status.FIRING, Status.ACKNOWLEDGED.value),
                        else_=IncidentRow.status,
                    ),
                    updated_at=at,
                    version=IncidentRow.version + 1,
                )
            )
            await session.commit()
        incident = await self.get(incident_id)
        assert incident is not None
        return Acked(incident, now=getattr(done, "rowcount", 0) == 1)

    async def get(self, incident_id: str) -> Incident | None:
        async with self.store.sessions() as session:
            row = await session.get(IncidentRow, incident_id)
            return Incident.of(row) if row is not None else None

    async def find(
        self, *, status: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[Incident]:
        """The newest ``limit`` incidents (opened since ``since``, in ``status``), newest
        first."""
        query = select(IncidentRow)
        if status:
            query = query.where(IncidentRow.status == status)
        if since is not None:
            query = query.where(IncidentRow.opened_at >= since)
        query = query.order_by(IncidentRow.opened_at.desc()).limit(limit)
        async with self.store.sessions() as session:
            return [Incident.of(r) for r in (await session.scalars(query)).all()]

    async def actions(self, incident: Incident) -> tuple[list[str], list[str]]:
        """(proposed, taken) in the incident's thread: the suggested actions offered there
        (their labels), and the skills people ran there (``skill: outcome by actor``)."""
        if not incident.thread:
            return [], []
        async with self.store.sessions() as session:
            offered = (
                await session.scalars(
                    select(ActionRow)
                    .where(ActionRow.thread == incident.thread)
                    .order_by(ActionRow.at)
                )
            ).all()
            ran = (
                await session.scalars(
                    select(AuditRow)
                    .where(
                        AuditRow.thread == incident.thread,
                        AuditRow.event == AuditEvent.RESULT,
                        AuditRow.actor != incident.actor,
                    )
                    .order_by(AuditRow.seq)
                )
            ).all()
        return (
            [f"{a.label} ({a.skill})" for a in offered],
            [f"{r.skill}: {r.outcome} by {r.actor}" for r in ran],
        )


# -- what is shown ---------------------------------------------------------------------------

ICONS = {Status.FIRING: "🔥", Status.ACKNOWLEDGED: "👀", Status.RESOLVED: "✅"}


def _clock(at: datetime | None) -> str:
    return f"{at:%H:%M:%S} UTC" if at else "?"


def alert_line(alert: Mapping[str, Any]) -> str:
    """``HighErrorRate`` service=checkout namespace=shop (firing)"""
    labels = dict(alert.get("labels") or {})
    name = labels.pop("alertname", "alert")
    rest = " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"`{name}` {rest} ({alert.get('status', '?')})".replace("  ", " ")


def _links(incident: Incident) -> list[str]:
    links: list[str] = []
    runbook = incident.annotations.get("runbook_url") or next(
        (
            a["annotations"]["runbook_url"]
            for a in incident.alerts
            if a.get("annotations", {}).get("runbook_url")
        ),
        "",
    )
    if runbook.startswith(("http://", "https://")):
        links.append(f"[runbook]({runbook})")
    source = next((a.get("generatorURL", "") for a in incident.alerts if a.get("generatorURL")), "")
    if source.startswith(("http://", "https://")):
        links.append(f"[source]({source})")
    if incident.external_url.startswith(("http://", "https://")):
        links.append(f"[Alertmanager]({incident.external_url})")
    return links


def ack_button(incident: Incident) -> ActionButton:
    return ActionButton(
        id=f"{ACK_PREFIX}{incident.id}",
        label="Ack",
        invocation=Invocation(skill="incident.ack", args={"incident": incident.id}),
        style=ButtonStyle.PRIMARY,
    )


def first_message(incident: Incident) -> list[Block]:
    """The incident's first message, from the alerts' own data (no backend is asked): its
    state, the summary, the labels, when it started, links, and Ack while nobody has."""
    status = Status(incident.status)
    head = f"{ICONS[status]} **{status.value.upper()}** · **{incident.title}**"
    blocks: list[Block] = [Text(text=head)]
    about = incident.annotations.get("summary") or incident.annotations.get("description")
    if not about and incident.alerts:
        about = (incident.alerts[0].get("annotations") or {}).get("summary", "")
    if about:
        blocks.append(Text(text=str(about)[:1500]))
    labels = {k: v for k, v in incident.labels.items() if k != "alertname"}
    if labels:
        rows = [[k, str(v)] for k, v in sorted(labels.items())]
        blocks.append(Table.bounded(["label", "value"], rows, 20, "labels"))
    firing = len(incident.firing)
    facts = [
        f"started {_clock(incident.started_at)}",
        f"{firing} of {len(incident.alerts)} alert{'s' if len(incident.alerts) != 1 else ''} firing",
    ]
    if incident.deliveries > 1:
        facts.append(f"{incident.deliveries} notifications")
    blocks.append(Text(text=" · ".join(facts + _links(incident))))
    if len(incident.alerts) > 1:
        shown = [alert_line(a) for a in incident.alerts[:SHOWN_ALERTS]]
        more = len(incident.alerts) - SHOWN_ALERTS
        blocks.append(Text(text="\n".join(shown + ([f"… and {more} more"] if more > 0 else []))))
    if incident.acked_by:
        blocks.append(
            Text(text=f"Acknowledged by {incident.acked_by} at {_clock(incident.acked_at)}.")
        )
    if incident.resolved:
        lasted = (
            f" after {format_duration(incident.resolved_at - start)}"
            if incident.resolved_at and (start := incident.started_at)
            else ""
        )
        blocks.append(Text(text=f"Resolved at {_clock(incident.resolved_at)}{lasted}."))
    blocks.append(Text(text=f"_incident `{incident.id}`_"))
    if not incident.acked_by and not incident.resolved:
        blocks.append(ack_button(incident))
    return blocks


def change_text(change: Change) -> str:
    """What a delivery changed, as one message in the thread."""
    incident = change.incident
    lines: list[str] = []
    for what, alerts in (
        ("New alert", change.new),
        ("Firing again", change.refiring),
        ("Ended", change.ended if not change.became_resolved else []),
    ):
        if alerts:
            shown = ", ".join(alert_line(a) for a in alerts[:SHOWN_ALERTS])
            more = f" and {len(alerts) - SHOWN_ALERTS} more" if len(alerts) > SHOWN_ALERTS else ""
            plural = "s" if len(alerts) != 1 and what != "Firing again" and what != "Ended" else ""
            lines.append(f"{what}{plural}: {shown}{more}")
    if change.became_resolved:
        start = incident.started_at
        lasted = (
            f" after {format_duration(incident.resolved_at - start)}"
            if incident.resolved_at and start
            else ""
        )
        lines.append(
            f"✅ **Resolved** at {_clock(incident.resolved_at)}{lasted}: "
            f"all {len(incident.alerts)} alert{'s' if len(incident.alerts) != 1 else ''} ended."
        )
    elif incident.firing:
        lines.append(f"{len(incident.firing)} of {len(incident.alerts)} alerts firing.")
    return "\n".join(lines)


# -- the desk: records, threads, triage, Ack -------------------------------------------------


class Chat(Protocol):
    """What the desk needs of a chat adapter (Slack's and Discord's have these)."""

    async def open_thread(self, channel: str, message: Message, title: str) -> tuple[str, str]:
        """Post ``message`` in ``channel`` and open a thread under it: (thread key, the
        message's reference for :meth:`edit_root`). Raises when the platform refuses."""
        ...

    async def edit_root(self, root: str, message: Message) -> bool:
        """Replace the message at ``root`` with ``message`` (False: it could not)."""
        ...

    async def post(self, message: Message) -> None:
        """Post ``message`` into its thread."""
        ...


@dataclass(frozen=True)
class Received:
    """What one delivery did: its incident, whether this call opened the thread, and why
    there is no thread when there is none; ``retry``: the chat platform failed, so the
    webhook asks Alertmanager to send it again (a 5xx) rather than wait for its next repeat."""

    incident: Incident
    opened: bool = False
    problem: str = ""
    retry: bool = False


class Desk:
    """Incidents from webhook to thread: :meth:`receive` records a delivery and shows it,
    :meth:`ack` handles the Ack button (registered on ``engine`` by its id prefix). The
    triage of a new incident runs in the background (:meth:`settle` waits for it)."""

    def __init__(
        self,
        services: Services,
        engine: Engine | None = None,
        chats: Mapping[str, Chat] | None = None,
    ) -> None:
        self.services = services
        self.engine = engine
        self.chats: dict[str, Chat] = dict(chats or {})
        self.incidents = Incidents(services.store)
        self._tasks: set[asyncio.Task[None]] = set()
        if engine is not None:
            engine.buttons[ACK_PREFIX] = self.ack

    def _chat(self, where: str) -> Chat | None:
        return self.chats.get(where.split(":", 1)[0])

    async def receive(self, hook: Webhook) -> Received:
        """Record one delivery; open the incident's thread when it is new (the first message
        is posted before this returns; the triage runs after), else tell what changed."""
        channel = route(self.services.settings, hook.labels) or ""
        change = await self.incidents.record(hook, channel)
        incident = change.incident
        if change.opened:
            return await self._open(incident)
        if change.news:
            await self._audit_change(change)
            if incident.thread:
                await self._tell(change)
        elif incident.thread and incident.root and (chat := self._chat(incident.thread)):
            await chat.edit_root(incident.root, self._root(incident))  # the count of repeats
        return Received(incident, problem="" if incident.thread else "it has no thread yet")

    async def _open(self, incident: Incident) -> Received:
        problem = ""
        chat = self._chat(incident.channel)
        if not incident.channel:
            problem = (
                "no alert route matches its labels and OPSBOT_ALERT_CHANNEL is not set: "
                "the incident is recorded without a thread"
            )
        elif chat is None:
            problem = (
                f"its route names {incident.channel}, but the "
                f"{incident.channel.split(':', 1)[0]} adapter is not running"
            )
        if problem or chat is None:
            log.warning("incident.no_thread", incident=incident.id, reason=problem)
            await self._audit(
                AuditEvent.INCIDENT_OPENED, incident, outcome="no thread", detail=problem
            )
            await self.incidents.release(incident.id)
            return Received(incident, problem=problem)
        where = incident.channel.split(":", 1)[1]
        message = Message(
            thread=incident.channel,
            step=Step.RECEIVED,
            blocks=first_message(incident),
            actor=incident.actor,
        )
        try:
            thread, root = await chat.open_thread(where, message, incident.title)
        except Exception as exc:
            problem = f"posting in {incident.channel} failed: {type(exc).__name__}: {exc}"[:400]
            log.error("incident.post_failed", incident=incident.id, error=problem)
            await self._audit(
                AuditEvent.INCIDENT_OPENED, incident, outcome="no thread", detail=problem
            )
            await self.incidents.release(incident.id)
            return Received(incident, problem=problem, retry=True)
        shown = await self.incidents.opened(incident.id, thread, root)
        await self._audit(
            AuditEvent.INCIDENT_OPENED,
            shown,
            outcome=shown.status,
            detail=f"{shown.title}: {len(shown.firing)} of {len(shown.alerts)} alerts firing; "
            f"thread opened in {shown.channel}",
        )
        if shown.version != incident.version + 1:  # a delivery was merged while posting
            await chat.edit_root(root, self._root(shown))
            if shown.resolved:
                await self._say(shown, change_text(Change(shown, became_resolved=True)))
        if not shown.resolved:
            self._background(self._triage(shown, chat))
        return Received(shown, opened=True)

    def _root(self, incident: Incident) -> Message:
        return Message(
            thread=incident.thread,
            step=Step.RECEIVED,
            blocks=first_message(incident),
            actor=incident.actor,
        )

    async def _say(self, incident: Incident, text: str, actor: str = "") -> None:
        chat = self._chat(incident.thread)
        if chat is None or not text:
            return
        await chat.post(
            Message(
                thread=incident.thread,
                step=Step.RECEIVED,
                blocks=[Text(text=text)],
                actor=actor or incident.actor,
            )
        )

    async def _tell(self, change: Change) -> None:
        """Say what changed in the thread and edit the first message to the new state."""
        incident = change.incident
        chat = self._chat(incident.thread)
        if chat is None:
            log.warning("incident.adapter_off", incident=incident.id, thread=incident.thread)
            return
        await self._say(incident, change_text(change))
        if incident.root:
            await chat.edit_root(incident.root, self._root(incident))

    async def _audit_change(self, change: Change) -> None:
        incident = change.incident
        event = (
            AuditEvent.INCIDENT_RESOLVED if change.became_resolved else AuditEvent.INCIDENT_UPDATED
        )
        detail = change_text(change).replace("\n", " ")
        await self._audit(event, incident, outcome=incident.status, detail=detail)

    async def _audit(
        self, event: str, incident: Incident, *, outcome: str, detail: str, actor: str = ""
    ) -> None:
        await self.services.audit.append(
            event,
            actor=actor or incident.actor,
            channel=incident.channel.split(":", 1)[-1],
            thread=incident.thread,
            request_id=incident.id,
            args={
                "incident": incident.id,
                "group_key": incident.group_key[:300],
                "alerts": len(incident.alerts),
                "firing": len(incident.firing),
            },
            outcome=outcome,
            detail=detail,
        )

    # -- triage ------------------------------------------------------------------------------

    def _background(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def triage_args(self, incident: Incident) -> dict[str, Any]:
        """The triage's arguments from the alert's labels: the ones its skill takes."""
        labels = incident.labels or (incident.alerts[0].get("labels") if incident.alerts else {})
        labels = dict(labels or {})
        started = incident.started_at
        args = {
            "alert": labels.get("alertname"),
            "service": labels.get("service") or labels.get("app"),
            "namespace": labels.get("namespace"),
            "started_at": started.isoformat() if started else None,
            "incident": incident.id,
        }
        skill = self.services.registry.get(TRIAGE)
        wanted = set(skill.Args.model_fields) if skill is not None else set(args)
        return {k: v for k, v in args.items() if v and k in wanted}

    async def _triage(self, incident: Incident, chat: Chat) -> None:
        """Run ``incident.triage`` in the thread as the receiver's system identity."""
        if self.engine is None:
            return
        try:
            if self.services.registry.get(TRIAGE) is None:
                await self._say(incident, f"No triage: the skill `{TRIAGE}` is not installed.")
                return
            where = incident.channel.split(":", 1)[1]
            await self.engine.run(
                Invocation(skill=TRIAGE, args=self.triage_args(incident)),
                Actor(id=incident.actor, display_name=incident.actor),
                chat.post,
                channel=where,
                thread=incident.thread,
                planner="alertmanager",
                request_id=incident.id,
                text=f"triage of incident {incident.id}: {incident.title}",
            )
        except Exception:  # the engine answers in the thread; this is the last line
            log.exception("incident.triage_failed", incident=incident.id)

    async def settle(self, within: float = 30.0) -> None:
        """Wait for the triages running in the background (tests; shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- Ack ---------------------------------------------------------------------------------

    async def ack(self, action_id: str, clicker: Actor, reply: Reply, channel: str) -> None:
        """The Ack button: ``clicker`` is the responder (the first click wins)."""
        incident_id = action_id.removeprefix(ACK_PREFIX)
        acked = await self.incidents.ack(incident_id, clicker.id)
        if acked is None:
            await reply(
                Message(
                    thread="",
                    step=Step.ERROR,
                    blocks=[Text(text=f"Incident `{incident_id}` is not known here.")],
                    audience=Audience.CLICKER,
                    actor=clicker.label,
                )
            )
            return
        incident = acked.incident
        if not acked.now:
            await reply(
                Message(
                    thread=incident.thread,
                    step=Step.ANSWER,
                    blocks=[
                        Text(
                            text=f"Incident `{incident.id}` was acknowledged by "
                            f"{incident.acked_by} at {_clock(incident.acked_at)}."
                        )
                    ],
                    audience=Audience.CLICKER,
                    actor=clicker.label,
                )
            )
            return
        await self._audit(
            AuditEvent.INCIDENT_ACKNOWLEDGED,
            incident,
            outcome=incident.status,
            detail=f"{incident.title}: acknowledged by {clicker.id} in {channel or '?'}",
            actor=clicker.id,
        )
        await reply(
            Message(
                thread=incident.thread,
                step=Step.ANSWER,
                blocks=[
                    Text(
                        text=f"👀 {clicker.label} acknowledged this incident at "
                        f"{_clock(incident.acked_at)} and is on it."
                    )
                ],
                actor=clicker.label,
            )
        )
        chat = self._chat(incident.thread)
        if chat is not None and incident.root:
            await chat.edit_root(incident.root, self._root(incident))
