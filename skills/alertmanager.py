"""Alertmanager skills: ``alerts.list``, ``alerts.silence``, ``alerts.silences`` and
``alerts.unsilence`` (Alertmanager API v2).

Endpoints (https://github.com/prometheus/alertmanager/blob/main/api/v2/openapi.yaml):
``GET /api/v2/alerts?active=&silenced=&inhibited=&filter=<matcher>``;
``POST /api/v2/silences`` with ``{matchers: [{name, value, isRegex, isEqual}], startsAt,
endsAt, createdBy, comment}`` answering ``{silenceID}``; ``GET /api/v2/silences`` (each with
``id``, ``status.state`` active|pending|expired, ``matchers``, ``createdBy``, ``startsAt``,
``endsAt``, ``comment``) and ``DELETE /api/v2/silence/{id}`` (expires it). Pending alerts are
not sent to Alertmanager; they are read from Prometheus' ``ALERTS{alertstate="pending"}`` series.

What is already silenced is always said: ``alerts.list`` names the silenced alerts its matchers
also match (and until when), and a silence's preview counts apart the alerts it would newly
mute and those another silence already mutes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

from opsbot.durations import Duration, format_duration, parse_duration
from opsbot.model import Block, Code, SkillResult, Table, Text
from opsbot.skills.base import Backend, BackendSettings, Risk, Skill, SkillContext, SkillError
from opsbot.skills.prometheus import Prometheus

LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
SEVERITY_ORDER = {"critical": 0, "page": 0, "error": 1, "warning": 2, "info": 3}
MAX_SILENCE = timedelta(days=7)
#: alert names listed in one line before "and N more"
SHOWN_NAMES = 5


class AlertmanagerConfig(BackendSettings):
    """``ALERTMANAGER_URL``."""

    model_config = SettingsConfigDict(env_prefix="ALERTMANAGER_")
    url: str | None = None


class Alertmanager(Backend[AlertmanagerConfig]):
    """Alertmanager's API v2 over httpx."""

    name = "alertmanager"
    Config = AlertmanagerConfig

    def missing(self) -> list[str]:
        return [] if self.config.url else ["ALERTMANAGER_URL"]

    async def connect(self) -> httpx.AsyncClient:
        assert self.config.url
        return httpx.AsyncClient(
            base_url=self.config.url.rstrip("/"), timeout=self.settings.backend_timeout
        )

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; transport and HTTP errors become :class:`SkillError` with the reason."""
        am: httpx.AsyncClient = await self.client()
        try:
            response = await am.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise SkillError(
                f"Alertmanager at {am.base_url} did not answer within "
                f"{self.settings.backend_timeout:g}s."
            ) from exc
        except httpx.TransportError as exc:
            raise SkillError(
                f"Alertmanager at {am.base_url} is unreachable ({type(exc).__name__})."
            ) from exc
        if response.status_code >= 400:
            raise SkillError(
                f"Alertmanager answered {response.status_code}: {response.text.strip()[:300]}"
            )
        return response.json()

    async def probe(self) -> str:
        """``GET /api/v2/status``: the server's version."""
        status = await self.request("GET", "/api/v2/status")
        return str(status.get("versionInfo", {}).get("version", ""))

    async def inventory(self) -> dict[str, set[str]]:
        alerts = await self.request("GET", "/api/v2/alerts")
        return {
            "alertname": {a["labels"]["alertname"] for a in alerts if "alertname" in a["labels"]}
        }

    async def alerts(
        self,
        matchers: dict[str, str],
        *,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
    ) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: the alerts ``matchers`` match, in the states asked for
        (``active``: firing and neither silenced nor inhibited)."""
        params = [
            ("active", _flag(active)),
            ("silenced", _flag(silenced)),
            ("inhibited", _flag(inhibited)),
            *filters(matchers),
        ]
        found: list[dict[str, Any]] = await self.request("GET", "/api/v2/alerts", params=params)
        return found

    async def silences(self) -> list[dict[str, Any]]:
        """``GET /api/v2/silences``: every silence Alertmanager keeps, expired ones included."""
        found: list[dict[str, Any]] = await self.request("GET", "/api/v2/silences")
        return found


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _validate_matchers(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if not re.match(LABEL_NAME, name):
            raise ValueError(f"not a label name: {name!r}")
    return {k: str(v) for k, v in value.items()}


def filters(matchers: dict[str, str]) -> list[tuple[str, str]]:
    return [("filter", f'{k}="{_escape(v)}"') for k, v in matchers.items()]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _when(iso: str) -> datetime | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _age(iso: str) -> str:
    started = _when(iso)
    if started is None:
        return "?"
    return format_duration(
        timedelta(seconds=max(0, int((datetime.now(UTC) - started).total_seconds())))
    )


def clock(iso: str) -> str:
    """A silence's start or end as people read it: ``14:02 UTC`` today, else with the date
    (``Nov 25 14:02 UTC``)."""
    when = _when(iso)
    if when is None:
        return "?"
    if when.date() == datetime.now(UTC).date():
        return f"{when:%H:%M} UTC"
    return f"{when:%b %d %H:%M} UTC"


def _relative(iso: str) -> str:
    """``in 47m`` or ``2h ago`` (to the minute)."""
    when = _when(iso)
    if when is None:
        return ""
    seconds = int((when - datetime.now(UTC)).total_seconds())
    span = format_duration(timedelta(seconds=max(60, abs(seconds)) // 60 * 60))
    return f"in {span}" if seconds >= 0 else f"{span} ago"


def _matcher_text(matchers: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in matchers.items()) + "}"


def silence_matchers(silence: dict[str, Any]) -> str:
    """A silence's matchers in PromQL-like notation: ``{alertname="X", env=~"prod.*"}``."""
    ops = {(True, False): "=", (True, True): "=~", (False, False): "!=", (False, True): "!~"}
    return (
        "{"
        + ", ".join(
            f'{m["name"]}{ops[(m.get("isEqual", True), m.get("isRegex", False))]}"{m["value"]}"'
            for m in silence.get("matchers", [])
        )
        + "}"
    )


def _alert_name(alert: dict[str, Any]) -> str:
    return str(alert["labels"].get("alertname", "?"))


def _alert_label(alert: dict[str, Any]) -> str:
    """``HighErrorRate{service="checkout"}``: the alert name and its identifying labels."""
    labels = ", ".join(
        f'{k}="{v}"'
        for k, v in sorted(alert["labels"].items())
        if k not in ("alertname", "severity")
    )
    return _alert_name(alert) + (f"{{{labels}}}" if labels else "")


def _silenced_until(alert: dict[str, Any], silences: dict[str, dict[str, Any]]) -> str:
    """When the last of the silences muting ``alert`` ends (as :func:`clock` says it)."""
    ends = [silences[i]["endsAt"] for i in alert["status"].get("silencedBy", []) if i in silences]
    return (
        clock(max(ends, key=lambda e: _when(e) or datetime.min.replace(tzinfo=UTC)))
        if ends
        else "?"
    )


def silenced_summary(
    alerts: list[dict[str, Any]], silences: dict[str, dict[str, Any]], what: str = "silenced"
) -> str:
    """``1 silenced: HighErrorRate until 14:02 UTC``: silenced alerts by name and end."""
    groups: dict[tuple[str, str], int] = {}
    for alert in alerts:
        key = (_alert_name(alert), _silenced_until(alert, silences))
        groups[key] = groups.get(key, 0) + 1
    parts = [
        f"{name}{f' ({n})' if n > 1 else ''} until {when}"
        for (name, when), n in sorted(groups.items())
    ]
    shown = ", ".join(parts[:SHOWN_NAMES])
    more = f" and {len(parts) - SHOWN_NAMES} more" if len(parts) > SHOWN_NAMES else ""
    return f"{len(alerts)} {what}: {shown}{more}"


def _names(alerts: list[dict[str, Any]]) -> str:
    names = sorted({_alert_name(a) for a in alerts})
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def _silenced(alert: dict[str, Any]) -> bool:
    return bool(alert.get("status", {}).get("silencedBy"))


def _by_id(silences: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in silences}


def _sorted(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most severe first, then the oldest."""
    return sorted(
        alerts,
        key=lambda a: (
            SEVERITY_ORDER.get(a["labels"].get("severity", ""), 9),
            a.get("startsAt", ""),
        ),
    )


def _rows(alerts: list[dict[str, Any]]) -> list[list[str]]:
    """Table rows (alert, severity, other labels, for, summary), most severe first."""
    return [
        [
            a["labels"].get("alertname", ""),
            a["labels"].get("severity", ""),
            ", ".join(
                f"{k}={v}"
                for k, v in sorted(a["labels"].items())
                if k not in ("alertname", "severity")
            )[:120],
            _age(a.get("startsAt", "")),
            (
                a.get("annotations", {}).get("summary")
                or a.get("annotations", {}).get("description", "")
            )[:120],
        ]
        for a in _sorted(alerts)
    ]


class ListArgs(BaseModel):
    state: Literal["firing", "pending", "silenced"] | None = Field(
        None, description="firing (active, not silenced), pending (Prometheus) or silenced"
    )
    matchers: dict[str, str] = Field(
        default_factory=dict, description="label equality matchers, e.g. {severity: critical}"
    )

    _check = field_validator("matchers")(_validate_matchers)


class AlertsList(Skill[ListArgs, Alertmanager]):
    name = "alerts.list"
    summary = "List alerts (firing, pending or silenced), optionally filtered by labels"
    Args = ListArgs
    risk = Risk.READ
    examples = [
        "what's firing?",
        "show firing alerts",
        "list critical alerts",
        "any alerts for checkout",
        "show silenced alerts",
    ]
    keywords = {
        "alert": 2.0,
        "fir": 2.0,
        "paging": 0.8,
        "list": 0.5,
        "show": 0.3,
        "critical": 0.5,
        "=silenced": 2.5,
        "=silences": 2.5,
        "=muted": 2.0,
        "=suppressed": 2.0,
        "<alertname>": 0.3,
        "silence": -1.0,
        "mute": -1.0,
        "who": -1.5,
    }

    async def run(self, args: ListArgs, ctx: SkillContext[Alertmanager]) -> SkillResult:
        if args.state == "pending":
            return await self._pending(args, ctx)
        am = ctx.backend
        only_silenced = args.state == "silenced"
        firing = (
            [] if only_silenced else await am.alerts(args.matchers, silenced=False, inhibited=False)
        )
        suppressed = await am.alerts(args.matchers, active=False)
        silenced = [a for a in suppressed if _silenced(a)]
        inhibited = [a for a in suppressed if not _silenced(a)]
        silences = _by_id(await am.silences()) if silenced else {}
        where = "".join(f" {k}={v}" for k, v in args.matchers.items())
        if only_silenced:
            return self._silenced(silenced, silences, where, ctx.settings.max_rows)
        # what the matchers also match but does not notify: said, so "no alerts" is not read
        # as "all clear" while a silence hides one
        aside = "; ".join(
            ([silenced_summary(silenced, silences)] if silenced else [])
            + ([f"{len(inhibited)} inhibited: {_names(inhibited)}"] if inhibited else [])
        )
        if not firing:
            summary = f"no firing alerts{where}" + (f"; {aside}" if aside else "")
            return SkillResult(
                summary=summary,
                blocks=[Text(text=f"No firing alerts{where}" + (f"; {aside}." if aside else "."))],
                data={"count": 0, "silenced": len(silenced), "inhibited": len(inhibited)},
            )
        rows = _rows(firing)
        table = Table.bounded(
            ["alert", "severity", "labels", "for", "summary"], rows, ctx.settings.max_rows, "alerts"
        )
        blocks: list[Block] = [table]
        if aside:
            blocks.append(Text(text=f"Also {aside}."))
        return SkillResult(
            summary=f"{len(firing)} firing alert(s){where}" + (f"; also {aside}" if aside else ""),
            blocks=blocks,
            data={
                "count": len(firing),
                "alertnames": sorted({r[0] for r in rows}),
                "silenced": len(silenced),
                "inhibited": len(inhibited),
            },
        )

    @staticmethod
    def _silenced(
        alerts: list[dict[str, Any]], silences: dict[str, dict[str, Any]], where: str, limit: int
    ) -> SkillResult:
        if not alerts:
            return SkillResult(
                summary=f"no silenced alerts{where}",
                blocks=[Text(text=f"No silenced alerts{where}.")],
                data={"count": 0},
            )
        rows = [
            [*row[:4], _silenced_until(alert, silences), row[4]]
            for row, alert in zip(_rows(alerts), _sorted(alerts), strict=True)
        ]
        table = Table.bounded(
            ["alert", "severity", "labels", "for", "silenced until", "summary"],
            rows,
            limit,
            "alerts",
        )
        return SkillResult(
            summary=f"{len(alerts)} silenced alert(s){where}",
            blocks=[table],
            data={"count": len(alerts), "alertnames": sorted({r[0] for r in rows})},
        )

    async def _pending(self, args: ListArgs, ctx: SkillContext[Alertmanager]) -> SkillResult:
        selector = ",".join(
            ['alertstate="pending"', *(f'{k}="{_escape(v)}"' for k, v in args.matchers.items())]
        )
        query = f"ALERTS{{{selector}}}"
        result: list[dict[str, Any]] = await ctx.peer(Prometheus).call(
            lambda p: p.custom_query(query)
        )
        rows = [
            [
                s["metric"].get("alertname", ""),
                s["metric"].get("severity", ""),
                ", ".join(
                    f"{k}={v}"
                    for k, v in sorted(s["metric"].items())
                    if k not in ("__name__", "alertname", "alertstate", "severity")
                )[:120],
            ]
            for s in result
        ]
        table = Table.bounded(
            ["alert", "severity", "labels"], rows, ctx.settings.max_rows, "alerts"
        )
        return SkillResult(
            summary=f"{len(rows)} pending alert(s)",
            blocks=[Code(code=query, language="promql"), table],
            data={"count": len(rows)},
        )


class SilenceArgs(BaseModel):
    matchers: dict[str, str] = Field(
        min_length=1,
        description="label equality matchers the silence applies to, e.g. {alertname: HighErrorRate}",
    )
    duration: Duration = Field(
        "1h", description="how long the silence lasts, e.g. 30m, 2h (max 7d)"
    )
    comment: str = Field("", max_length=500, description="why; shown in Alertmanager")

    _check = field_validator("matchers")(_validate_matchers)

    @field_validator("duration")
    @classmethod
    def _bounded(cls, value: str) -> str:
        if parse_duration(value) > MAX_SILENCE:
            raise ValueError("a silence may last at most 7d")
        return value


class AlertsSilence(Skill[SilenceArgs, Alertmanager]):
    name = "alerts.silence"
    summary = "Create an Alertmanager silence for alerts matching the given labels"
    Args = SilenceArgs
    risk = Risk.WRITE
    examples = [
        "silence HighErrorRate for 2h, deploy in progress",
        "mute alerts for service checkout for 30m",
        "snooze KubePodCrashLooping for 1h",
    ]
    keywords = {
        "silence": 3.0,
        "mute": 3.0,
        "snooze": 2.5,
        "shush": 2.0,
        "<alertname>": 0.5,
        "=silenced": -2.5,
        "=silences": -2.5,
        "=muted": -2.5,
        "list": -1.0,
        "who": -1.5,
    }

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        if not found.get("comment"):
            found["comment"] = ""
        return found

    async def preview(self, args: SilenceArgs, ctx: SkillContext[Alertmanager]) -> str:
        alerts = await ctx.backend.alerts(args.matchers)
        firing = [a for a in alerts if not _silenced(a) and not a["status"].get("inhibitedBy")]
        silenced = [a for a in alerts if _silenced(a)]
        inhibited = [a for a in alerts if not _silenced(a) and a["status"].get("inhibitedBy")]
        lines = [f"silence {_matcher_text(args.matchers)} for {args.duration}"]
        if firing:
            lines.append(f"would mute {len(firing)} alert(s) firing now: {_names(firing)}")
        elif alerts:
            lines.append("would mute no new alert: none it matches is firing unsilenced")
        else:
            lines.append("matches no alert firing right now")
        if silenced:
            silences = _by_id(await ctx.backend.silences())
            lines.append(silenced_summary(silenced, silences, "already silenced"))
        if inhibited:
            lines.append(f"{len(inhibited)} inhibited now: {_names(inhibited)}")
        return "\n".join(lines)

    async def run(self, args: SilenceArgs, ctx: SkillContext[Alertmanager]) -> SkillResult:
        start = datetime.now(UTC)
        end = start + parse_duration(args.duration)
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in args.matchers.items()
            ],
            "startsAt": start.isoformat().replace("+00:00", "Z"),
            "endsAt": end.isoformat().replace("+00:00", "Z"),
            "createdBy": f"opsbot:{ctx.actor.id}",
            "comment": args.comment or f"silenced via opsbot by {ctx.actor.id}",
        }
        answer = await ctx.backend.request("POST", "/api/v2/silences", json=body)
        silence_id = answer.get("silenceID", "")
        return SkillResult(
            summary=f"silence {silence_id} created for {_matcher_text(args.matchers)} "
            f"until {end:%H:%M} UTC",
            blocks=[],
            data={"silence_id": silence_id, "ends_at": end.isoformat()},
        )


Alertmanager.skills = (AlertsList, AlertsSilence)
