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
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from opsbot.durations import Duration, format_duration, parse_duration
from opsbot.meaning import Choice, Lasting, Matchers, Remark
from opsbot.model import Block, Code, SkillResult, Table, Text
from opsbot.skills.base import Backend, BackendSettings, Risk, Skill, SkillContext, SkillError
from opsbot.skills.prometheus import Prometheus

if TYPE_CHECKING:
    import httpx  # loaded on the first call (a command that calls no Alertmanager needs none)

LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
SEVERITY_ORDER = {"critical": 0, "page": 0, "error": 1, "warning": 2, "info": 3}
MAX_SILENCE = timedelta(days=7)
#: alert names listed in one line before "and N more"
SHOWN_NAMES = 5
#: at most this many silences are expired by one alerts.unsilence (else: by id, or narrower)
MAX_EXPIRE = 10
SILENCE_ID = r"^[0-9a-fA-F][0-9a-fA-F-]{7,35}$"
_UUID = re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b|\b[0-9a-f]{8}\b", re.I)
SILENCE_STATES = ("active", "pending", "expired")


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
        import httpx

        assert self.config.url
        return httpx.AsyncClient(
            base_url=self.config.url.rstrip("/"), timeout=self.settings.backend_timeout
        )

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; transport and HTTP errors become :class:`SkillError` with the reason."""
        import httpx

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
        return response.json() if response.content else None  # DELETE answers an empty 200

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


#: how requests say an alert's state (opsbot.meaning.Choice: first match in this order)
ALERT_STATE_WORDS = Choice(
    {
        "firing": ("firing", "fire", "active"),
        "pending": ("pending",),
        "silenced": ("silenced", "muted", "suppressed"),
    }
)
#: how requests say a silence's state (exact words: "end" is not "ended")
SILENCE_STATE_WORDS = Choice(
    {
        "expired": ("=expired", "=old", "=past", "=ended", "=finished", "=lifted", "=removed"),
        "pending": ("=pending", "=upcoming", "=scheduled", "=future", "=planned", "=later"),
        "active": ("=active", "=current", "=currently", "=running", "=live", "=effective"),
    }
)
#: label matchers; a bare name ("alerts for checkout") is the service label
ServiceMatchers = Annotated[dict[str, str], Matchers(name_label="service")]


class ListArgs(BaseModel):
    state: Annotated[Literal["firing", "pending", "silenced"] | None, ALERT_STATE_WORDS] = Field(
        None, description="firing (active, not silenced), pending (Prometheus) or silenced"
    )
    matchers: ServiceMatchers = Field(
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
        "on fire": -2.0,  # "orders is on fire": an incident, not a list of alerts
        "what be on fire": 3.0,  # but "what's on fire?" asks what alerts fire
        "list": 0.5,
        "show": 0.3,
        "critical": 0.5,
        "=silenced": 2.5,
        "be silenced": 1.5,  # a state: "what's silenced for payments?"
        "be muted": 1.5,
        "=silences": -1.0,
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
    matchers: ServiceMatchers = Field(
        min_length=1,
        description="label equality matchers the silence applies to, e.g. {alertname: HighErrorRate}",
    )
    duration: Annotated[Duration, Lasting()] = Field(
        "1h", description="how long the silence lasts, e.g. 30m, 2h (max 7d)"
    )
    comment: Annotated[str, Remark()] = Field(
        "", max_length=500, description="why; shown in Alertmanager"
    )

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
        "<alertname>": 0.5,
        "=silenced": -2.5,
        "=silences": -2.5,
        "=muted": -2.5,
        "list": -1.0,
        "who": -1.5,
        # removing a silence is alerts.unsilence, never a new silence
        "=unsilence": -4.0,
        "=unmute": -4.0,
        "=expire": -3.0,
        "remove * silence": -3.0,
        "delete * silence": -3.0,
        "lift * silence": -3.0,
        "end * silence": -3.0,
        "cancel * silence": -3.0,
        "kill * silence": -3.0,
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


# -- silences: list and expire ---------------------------------------------------------------


def _mentions(silence: dict[str, Any], matchers: dict[str, str]) -> bool:
    """Whether each ``label=value`` of ``matchers`` is matched by one of the silence's own
    (non-negated) matchers: ``{alertname="X"}`` and ``{alertname=~"X|Y"}`` mention X."""
    for name, value in matchers.items():
        if not any(
            m["name"] == name
            and m.get("isEqual", True)
            and (_regex_matches(m["value"], value) if m.get("isRegex") else m["value"] == value)
            for m in silence.get("matchers", [])
        ):
            return False
    return True


def _regex_matches(pattern: str, value: str) -> bool:
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error:
        return False


async def silences_on(
    am: Alertmanager, matchers: dict[str, str]
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Every silence (newest end first) that ``matchers`` select, and the alerts each one
    mutes now. With matchers: the silences whose own matchers name those labels, and the
    silences muting an alert that has them (a silence on ``service=checkout`` is "on"
    ``HighErrorRate{service="checkout"}``)."""
    silences = await am.silences()
    muted = await am.alerts(matchers, active=False)
    mutes: dict[str, list[dict[str, Any]]] = {}
    for alert in muted:
        for silence_id in alert["status"].get("silencedBy", []):
            mutes.setdefault(silence_id, []).append(alert)
    if matchers:
        silences = [s for s in silences if s["id"] in mutes or _mentions(s, matchers)]
    order = {"active": 0, "pending": 1, "expired": 2}
    silences.sort(key=lambda s: (order.get(s["status"]["state"], 3), s.get("endsAt", "")))
    return silences, mutes


def _ends(silence: dict[str, Any]) -> str:
    state = silence["status"]["state"]
    if state == "pending":
        return f"starts {clock(silence['startsAt'])}, ends {clock(silence['endsAt'])}"
    if state == "expired":
        return f"ended {clock(silence['endsAt'])} ({_relative(silence['endsAt'])})"
    return f"{clock(silence['endsAt'])} ({_relative(silence['endsAt'])})"


def _mutes(silence: dict[str, Any], mutes: dict[str, list[dict[str, Any]]]) -> str:
    alerts = mutes.get(silence["id"], [])
    if not alerts:
        return "-" if silence["status"]["state"] != "active" else "no alert now"
    labels = sorted({_alert_label(a) for a in alerts})
    more = f" and {len(labels) - SHOWN_NAMES} more" if len(labels) > SHOWN_NAMES else ""
    return ", ".join(labels[:SHOWN_NAMES]) + more


class SilencesArgs(BaseModel):
    state: Annotated[Literal["active", "pending", "expired"] | None, SILENCE_STATE_WORDS] = Field(
        None,
        description="active (muting now), pending (starts later) or expired; "
        "default: active and pending",
    )
    matchers: Annotated[dict[str, str], Matchers()] = Field(
        default_factory=dict,
        description="only silences on these labels (their own matchers, or an alert they "
        "mute), e.g. {alertname: HighErrorRate}",
    )

    _check = field_validator("matchers")(_validate_matchers)


class AlertsSilences(Skill[SilencesArgs, Alertmanager]):
    name = "alerts.silences"
    summary = "List silences (active, pending or expired) with id, matchers, creator and end"
    Args = SilencesArgs
    risk = Risk.READ
    examples = [
        "list silences",
        "show the active silences",
        "which silences are there for HighErrorRate",
        "show expired silences",
        "what silences are pending",
    ]
    keywords = {
        "=silences": 4.0,
        "silence": 1.0,
        "list": 0.5,
        "show": 0.3,
        "=active": 0.8,
        "=expired": 1.5,
        "=pending": 0.8,
        "<alertname>": 0.3,
        "=silenced": -2.0,
        "unsilence": -4.0,
        "unmute": -4.0,
        "who": -1.0,
        # removing silences is alerts.unsilence, not a list of them
        "remove * silence": -3.0,
        "delete * silence": -3.0,
        "lift * silence": -3.0,
        "cancel * silence": -3.0,
        "clear * silence": -3.0,
        "drop * silence": -3.0,
        "end * silence": -3.0,
        "kill * silence": -3.0,
        "expire * silence": -3.0,
        "create * silence": 3.0,  # "who created the silence on checkout?": its creator
    }

    async def run(self, args: SilencesArgs, ctx: SkillContext[Alertmanager]) -> SkillResult:
        found, mutes = await silences_on(ctx.backend, args.matchers)
        states = (args.state,) if args.state else ("active", "pending")
        shown = [s for s in found if s["status"]["state"] in states]
        hidden = len(found) - len(shown)
        where = f" on {_matcher_text(args.matchers)}" if args.matchers else ""
        what = f"{args.state} silences" if args.state else "active or pending silences"
        counts = {s: sum(1 for x in shown if x["status"]["state"] == s) for s in states}
        data: dict[str, Any] = {**counts, "ids": [s["id"] for s in shown]}
        note = (
            f"{hidden} expired not shown (ask for expired silences)"
            if hidden and not args.state
            else ""
        )
        if not shown:
            text = f"No {what}{where}." + (f" {note[0].upper()}{note[1:]}." if note else "")
            return SkillResult(summary=f"no {what}{where}", blocks=[Text(text=text)], data=data)
        rows = [
            [
                s["id"],
                s["status"]["state"],
                silence_matchers(s),
                s.get("createdBy", ""),
                _ends(s),
                _mutes(s, mutes),
                s.get("comment", "")[:120],
            ]
            for s in shown
        ]
        table = Table.bounded(
            ["id", "state", "matchers", "created by", "ends", "mutes now", "comment"],
            rows,
            ctx.settings.max_rows,
            "silences",
        )
        if note:
            table.note = "; ".join(filter(None, [table.note, note]))
        breakdown = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        return SkillResult(
            summary=f"{len(shown)} silence(s){where} ({breakdown})",
            blocks=[table],
            data=data,
        )


class UnsilenceArgs(BaseModel):
    id: str | None = Field(
        None,
        pattern=SILENCE_ID,
        description="the silence's id as alerts.silences shows it (its first 8 characters do)",
    )
    matchers: ServiceMatchers = Field(
        default_factory=dict,
        description="expire the active or pending silences on these labels (their own "
        "matchers, or an alert they mute), e.g. {alertname: HighErrorRate}",
    )

    _check = field_validator("matchers")(_validate_matchers)

    @model_validator(mode="after")
    def _one_of(self) -> UnsilenceArgs:
        if not self.id and not self.matchers:
            raise ValueError("say which silence: its id, or the labels it is on")
        return self


class AlertsUnsilence(Skill[UnsilenceArgs, Alertmanager]):
    name = "alerts.unsilence"
    summary = "Expire a silence (by id, or the silences on given labels) so its alerts notify again"
    Args = UnsilenceArgs
    risk = Risk.WRITE
    examples = [
        "unsilence HighErrorRate",
        "remove the silence on KubePodCrashLooping",
        "expire silence 3f2a9c1e",
        "delete the silence for service checkout",
        "lift the mute on HighLatency",
    ]
    keywords = {
        # exact words: as stems, "unsilenc" would also fuzzily match "silenc" (a new silence)
        "=unsilence": 5.0,
        "=unmute": 5.0,
        "=expire": 3.0,
        "=expired": -3.0,
        "silence": 1.0,
        "remove * silence": 3.5,
        "delete * silence": 3.5,
        "lift * silence": 3.5,
        "end * silence": 3.0,
        "cancel * silence": 3.5,
        "kill * silence": 3.5,
        "drop * silence": 3.0,
        "clear * silence": 3.0,
        "remove * mute": 3.0,
        "lift * mute": 3.0,
        "<alertname>": 0.5,
        "=silences": -1.0,
        "list": -1.5,
        "who": -1.5,
    }

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        text = str(getattr(parsed, "text", ""))
        if m := _UUID.search(text):
            return {"id": m.group(0).lower()}  # an id names one silence: no label guesses
        if not found.get("matchers"):
            # "the silence on checkout", "silence for cart": a bare name, taken as a service
            m = re.search(r"\b(?:on|for|of)\s+([a-z][a-z0-9_.-]*[a-z0-9])\b", text)
            if m and m.group(1) not in _NOT_NAMES:
                found["matchers"] = {"service": m.group(1)}
        return found

    async def _targets(
        self, args: UnsilenceArgs, am: Alertmanager
    ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """The silences this request expires, and the alerts each mutes now; raises
        :class:`SkillError` saying why when there is none (or too many) to expire."""
        found, mutes = await silences_on(am, args.matchers)
        if args.id:
            wanted = args.id.lower()
            found = [s for s in found if s["id"] == wanted or s["id"].startswith(wanted)]
            if not found:
                on = f" on {_matcher_text(args.matchers)}" if args.matchers else ""
                raise SkillError(f"No silence{on} has id {args.id}; `alerts.silences` lists them.")
            if len(found) > 1:
                raise SkillError(
                    f"{len(found)} silences have ids starting {args.id}: "
                    f"{', '.join(s['id'] for s in found[:SHOWN_NAMES])}; give more of the id."
                )
            [silence] = found
            if silence["status"]["state"] == "expired":
                raise SkillError(
                    f"Silence {silence['id']} {silence_matchers(silence)} already ended "
                    f"{clock(silence['endsAt'])}."
                )
            return found, mutes
        live = [s for s in found if s["status"]["state"] != "expired"]
        where = _matcher_text(args.matchers)
        if not live:
            ended = len(found) - len(live)
            raise SkillError(
                f"No active or pending silence is on {where}"
                + (f" ({ended} expired already)." if ended else ".")
            )
        if len(live) > MAX_EXPIRE:
            raise SkillError(
                f"{len(live)} silences are on {where}; expire at most {MAX_EXPIRE} at once: "
                "narrow the labels, or give a silence's id (`alerts.silences` lists them)."
            )
        return live, mutes

    async def preview(self, args: UnsilenceArgs, ctx: SkillContext[Alertmanager]) -> str:
        targets, mutes = await self._targets(args, ctx.backend)
        lines = [f"would expire {len(targets)} silence(s):"]
        for s in targets:
            muting = mutes.get(s["id"], [])
            lines.append(
                f"- {s['id']} {silence_matchers(s)} ({s['status']['state']}, by "
                f"{s.get('createdBy', '?')}, ends {clock(s['endsAt'])}): "
                + (
                    f"mutes {len(muting)} alert(s) now, which would notify again: "
                    f"{_mutes(s, mutes)}"
                    if muting
                    else "mutes no alert right now"
                )
            )
        return "\n".join(lines)

    async def run(self, args: UnsilenceArgs, ctx: SkillContext[Alertmanager]) -> SkillResult:
        targets, mutes = await self._targets(args, ctx.backend)
        for s in targets:
            await ctx.backend.request("DELETE", f"/api/v2/silence/{s['id']}")
        released = sorted({_alert_label(a) for s in targets for a in mutes.get(s["id"], [])})
        rows = [[s["id"], silence_matchers(s), s.get("createdBy", "")] for s in targets]
        blocks: list[Block] = [
            Table(columns=["expired silence", "matchers", "created by"], rows=rows)
        ]
        if released:
            blocks.append(Text(text=f"Notifying again: {', '.join(released[:SHOWN_NAMES])}."))
        ids = ", ".join(s["id"] for s in targets)
        return SkillResult(
            summary=f"expired {len(targets)} silence(s): {ids}",
            blocks=blocks,
            data={"expired": [s["id"] for s in targets], "released": released},
        )


#: words after "silence on/for" that name no service ("the silence for now")
_NOT_NAMES = {"now", "today", "tonight", "this", "that", "it", "them", "all", "every", "everything"}


Alertmanager.skills = (AlertsList, AlertsSilence, AlertsSilences, AlertsUnsilence)
