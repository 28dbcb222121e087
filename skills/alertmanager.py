"""Alertmanager skills: ``alerts.list`` and ``alerts.silence`` (Alertmanager API v2).

Endpoints (https://github.com/prometheus/alertmanager/blob/main/api/v2/openapi.yaml):
``GET /api/v2/alerts?active=&silenced=&inhibited=&filter=<matcher>`` and
``POST /api/v2/silences`` with ``{matchers: [{name, value, isRegex, isEqual}], startsAt,
endsAt, createdBy, comment}`` answering ``{silenceID}``. Pending alerts are not sent to
Alertmanager; they are read from Prometheus' ``ALERTS{alertstate="pending"}`` series.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

from opsbot.durations import Duration, format_duration, parse_duration
from opsbot.model import Code, SkillResult, Table, Text
from opsbot.skills.base import Backend, BackendSettings, Risk, Skill, SkillContext, SkillError
from opsbot.skills.prometheus import Prometheus

LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
SEVERITY_ORDER = {"critical": 0, "page": 0, "error": 1, "warning": 2, "info": 3}
MAX_SILENCE = timedelta(days=7)


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


def _validate_matchers(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if not re.match(LABEL_NAME, name):
            raise ValueError(f"not a label name: {name!r}")
    return {k: str(v) for k, v in value.items()}


def filters(matchers: dict[str, str]) -> list[tuple[str, str]]:
    return [("filter", f'{k}="{_escape(v)}"') for k, v in matchers.items()]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _age(iso: str) -> str:
    try:
        started = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    return format_duration(
        timedelta(seconds=max(0, int((datetime.now(UTC) - started).total_seconds())))
    )


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
        silenced = args.state == "silenced"
        params: list[tuple[str, str]] = [
            ("active", "false" if silenced else "true"),
            ("silenced", "true" if silenced else "false"),
            ("inhibited", "false"),
            *filters(args.matchers),
        ]
        alerts: list[dict[str, Any]] = await ctx.backend.request(
            "GET", "/api/v2/alerts", params=params
        )
        if silenced:
            alerts = [a for a in alerts if a.get("status", {}).get("silencedBy")]
        alerts.sort(
            key=lambda a: (
                SEVERITY_ORDER.get(a["labels"].get("severity", ""), 9),
                a.get("startsAt", ""),
            )
        )
        what = "silenced" if silenced else "firing"
        where = "".join(f" {k}={v}" for k, v in args.matchers.items())
        if not alerts:
            return SkillResult(
                summary=f"no {what} alerts{where}",
                blocks=[Text(text=f"No {what} alerts{where}.")],
                data={"count": 0},
            )
        rows = [
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
            for a in alerts
        ]
        table = Table.bounded(
            ["alert", "severity", "labels", "for", "summary"],
            rows,
            ctx.settings.max_rows,
            "alerts",
        )
        return SkillResult(
            summary=f"{len(alerts)} {what} alert(s){where}",
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
        alerts: list[dict[str, Any]] = await ctx.backend.request(
            "GET",
            "/api/v2/alerts",
            params=[("active", "true"), *filters(args.matchers)],
        )
        names = sorted({a["labels"].get("alertname", "?") for a in alerts})
        matchers = ", ".join(f'{k}="{v}"' for k, v in args.matchers.items())
        lines = [f"silence {{{matchers}}} for {args.duration}"]
        lines.append(
            f"would mute {len(alerts)} alert(s) firing now: {', '.join(names)[:300]}"
            if alerts
            else "matches no alert firing right now"
        )
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
        matchers = ", ".join(f'{k}="{v}"' for k, v in args.matchers.items())
        return SkillResult(
            summary=f"silence {silence_id} created for {{{matchers}}} until {end:%H:%M} UTC",
            blocks=[],
            data={"silence_id": silence_id, "ends_at": end.isoformat()},
        )


Alertmanager.skills = (AlertsList, AlertsSilence)
