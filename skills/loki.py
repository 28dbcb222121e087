"""Loki skills: ``logs.query`` (LogQL) and ``logs.errors`` (error patterns of a service).

Backend: Grafana Loki's HTTP API (https://grafana.com/docs/loki/latest/reference/loki-http-api/)
over httpx: ``GET /loki/api/v1/query_range`` (log and metric queries: ``streams`` and
``matrix`` results, nanosecond timestamps), ``GET /loki/api/v1/query`` (an instant metric
query: the total count of error lines when more matched than were read),
``GET /loki/api/v1/label/<name>/values`` (the inventory names are grounded against) and
``GET /loki/api/v1/status/buildinfo`` (the version; ``/ready`` where a gateway hides it).

Settings (``LOKI_*``, or the same keys in lower case in ``opsbot.yaml``): ``LOKI_URL``;
``LOKI_TENANT`` (sent as ``X-Scope-OrgID``); ``LOKI_TOKEN`` (bearer) or ``LOKI_USERNAME`` +
``LOKI_PASSWORD`` (basic); ``LOKI_SERVICE_LABEL`` (default ``service``) and
``LOKI_SERVICE_FALLBACK_LABELS`` (``app,job``: tried, in order, for a service the first label
does not name); ``LOKI_NAMESPACE_LABEL`` (``namespace``); ``LOKI_ERROR_FILTER`` (the LogQL line
filter that picks error lines); ``LOKI_MAX_LINES`` (error lines ``logs.errors`` reads, 5000:
Loki's default ``max_entries_limit_per_query``); ``LOKI_INVENTORY_SINCE`` (the window of the
label values offered for grounding, 6h).

Errors: a query Loki rejects comes back with Loki's own text ("Loki rejected the query: parse
error at line 1, col 5: ..."); 401/403 name the setting to fix (``LOKI_TENANT`` for Loki's
``no org id``, else the credentials); a Loki that is down or slower than
``OPSBOT_BACKEND_TIMEOUT`` gives a one-line "unreachable"/"did not answer" message.

Results are bounded (``OPSBOT_MAX_ROWS`` lines or patterns, ``OPSBOT_MAX_SERIES`` series) and
every log line is redacted (:func:`opsbot.redact.redact`) before it is mined or shown.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from opsbot.durations import Duration, format_duration, parse_duration
from opsbot.meaning import Count, Expression, Grounded, Since
from opsbot.model import Block, Code, Image, SkillResult, Table, Text
from opsbot.redact import redact
from opsbot.skills.base import Backend, BackendSettings, Risk, Skill, SkillContext, SkillError

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")

NS = 1_000_000_000
#: a service or namespace as a label value (``job`` values are often ``namespace/app``)
LABEL_VALUE = r"^[A-Za-z0-9_.:/-]+$"
#: Loki's default ``max_query_length`` is 721h; a chat request asks for less
MAX_SINCE = timedelta(days=30)
#: Loki's default ``max_entries_limit_per_query``
MAX_LIMIT = 5000
MAX_POINTS = 240
MAX_LINE_CHARS = 300
DEFAULT_ERROR_FILTER = r"|~ `(?i)(error|exception|fatal|panic|failed|\b5\d\d\b)`"

#: what drain3 masks before mining, in order: ``order 123 failed`` and ``order 456 failed``
#: are one pattern, ``order <NUM> failed``
MASKS: tuple[tuple[str, str], ...] = (
    (r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?", "TIME"),
    (r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b", "TIME"),
    (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "ID"),
    (r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\w.])", "IP"),
    (r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){5,7}[0-9a-fA-F]{1,4}(?![\w:])", "IP"),
    (
        r"(?<![\w:])[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{1,4})*::(?:[0-9a-fA-F]{1,4}:)*[0-9a-fA-F]{1,4}\b",
        "IP",
    ),
    (r"\b0x[0-9a-fA-F]+\b", "HEX"),
    (
        r"\b[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)*[-_][A-Za-z]*\d[A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)*\b",
        "ID",
    ),
    (r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{7,}\b", "HEX"),
    (r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:ms|us|µs|ns|s|m|h|d|%|[kKMGT]i?B)?(?![\w.])", "NUM"),
)


class LokiConfig(BackendSettings):
    """``LOKI_URL``, ``LOKI_TENANT``, ``LOKI_TOKEN`` or ``LOKI_USERNAME``/``LOKI_PASSWORD``,
    the service and namespace labels, the error-line filter (see the module docstring)."""

    model_config = SettingsConfigDict(env_prefix="LOKI_")
    url: str | None = None
    tenant: str | None = None
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    service_label: str = Field("service", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    #: comma-separated labels tried, in order, when ``service_label`` does not name a service
    service_fallback_labels: str = Field("app,job", pattern=r"^[a-zA-Z0-9_,\s]*$")
    namespace_label: str = Field("namespace", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    error_filter: str = DEFAULT_ERROR_FILTER
    max_lines: int = Field(MAX_LIMIT, ge=1, le=100_000)
    inventory_since: Duration = "6h"

    @property
    def service_labels(self) -> list[str]:
        """The labels that may name a service, in the order they are tried."""
        labels = [self.service_label]
        for label in self.service_fallback_labels.split(","):
            if label.strip() and label.strip() not in labels:
                labels.append(label.strip())
        return labels


class Loki(Backend[LokiConfig]):
    """Grafana Loki's HTTP API over httpx."""

    name = "loki"
    Config = LokiConfig

    def missing(self) -> list[str]:
        missing = [] if self.config.url else ["LOKI_URL"]
        if self.config.username and not self.config.password:
            missing.append("LOKI_PASSWORD")
        return missing

    async def connect(self) -> httpx.AsyncClient:
        import httpx

        assert self.config.url
        headers = {"Accept": "application/json"}
        if self.config.tenant:
            headers["X-Scope-OrgID"] = self.config.tenant
        auth: httpx.Auth | None = None
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token.get_secret_value()}"
        elif self.config.username and self.config.password:
            auth = httpx.BasicAuth(self.config.username, self.config.password.get_secret_value())
        return httpx.AsyncClient(
            base_url=self.config.url.rstrip("/"),
            headers=headers,
            auth=auth,
            timeout=self.settings.backend_timeout,
        )

    @property
    def where(self) -> str:
        return f"Loki at {(self.config.url or '').rstrip('/')}"

    async def send(self, path: str, params: Mapping[str, str] | None = None) -> httpx.Response:
        """``GET path``; a transport failure or a timeout becomes a one-line
        :class:`SkillError`."""
        import httpx

        client: httpx.AsyncClient = await self.client()
        timeout = self.settings.backend_timeout
        try:
            return await asyncio.wait_for(client.get(path, params=params), timeout + 1)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise SkillError(f"{self.where} did not answer within {timeout:g}s.") from exc
        except httpx.TransportError as exc:
            raise SkillError(f"{self.where} is unreachable ({type(exc).__name__}).") from exc

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``GET path``: Loki's JSON answer; HTTP errors become :class:`SkillError` with a
        reason a person can act on."""
        response = await self.send(path, params)
        if response.status_code >= 400:
            raise SkillError(self.http_error(response.status_code, response.text, path))
        try:
            return response.json()
        except ValueError as exc:
            raise SkillError(
                f"{self.where} answered {path} with something that is not JSON "
                f"({response.headers.get('content-type', 'no content type')}): "
                "is LOKI_URL Loki's address?"
            ) from exc

    def http_error(self, status: int, text: str, path: str) -> str:
        """One line on an HTTP error, naming the setting to fix where there is one."""
        body = " ".join(text.split())[:300]
        if status == 400:
            return f"Loki rejected the query: {body}"
        if status in (401, 403) and "no org id" in body:
            return f"{self.where} needs a tenant: set LOKI_TENANT (sent as X-Scope-OrgID)."
        body = body.removeprefix(str(status)).strip()
        reason = f"{status} {body}" if body else str(status)
        if status in (401, 403):
            if self.config.token:
                setting = "check LOKI_TOKEN"
            elif self.config.username:
                setting = "check LOKI_USERNAME and LOKI_PASSWORD"
            else:
                setting = "set LOKI_TOKEN, or LOKI_USERNAME and LOKI_PASSWORD"
            what = "refused the credentials" if status == 401 else "forbids this"
            tenant = (
                f" for tenant {self.config.tenant}" if self.config.tenant and status == 403 else ""
            )
            return f"{self.where} {what}{tenant} ({reason}): {setting}."
        if status == 404:
            return f"{self.where} has no {path} (404): is LOKI_URL Loki's base URL?"
        if status == 429:
            return f"{self.where} is rate limiting queries ({reason})."
        return f"{self.where} answered {reason}."

    async def probe(self) -> str:
        """``GET /loki/api/v1/status/buildinfo``: the version; ``GET /ready`` where a gateway
        serves only the query API."""
        response = await self.send("/loki/api/v1/status/buildinfo")
        if response.status_code == 404:
            response = await self.send("/ready")
            if response.status_code != 200:
                raise SkillError(self.http_error(response.status_code, response.text, "/ready"))
            return ""
        if response.status_code >= 400:
            raise SkillError(self.http_error(response.status_code, response.text, "buildinfo"))
        try:
            info = response.json()
        except ValueError:
            return ""
        return str(info.get("version", "")) if isinstance(info, dict) else ""

    async def label_values(self, label: str, since: str) -> list[str]:
        """``GET /loki/api/v1/label/<label>/values`` over the last ``since`` (Loki leaves
        ``data`` out when there are none)."""
        answer = await self.get(f"/loki/api/v1/label/{label}/values", {"since": since})
        data = answer.get("data") if isinstance(answer, dict) else None
        return [str(v) for v in data or []]

    async def inventory(self) -> dict[str, set[str]]:
        """Values of the service labels (``service``, then ``app``, ``job``) and of the
        namespace label, so "errors from chekout" grounds to ``checkout``."""
        since = self.config.inventory_since
        labels = [*self.config.service_labels, self.config.namespace_label]
        found = await gather(*(self.label_values(label, since) for label in labels))
        names = [{v for v in values if re.match(LABEL_VALUE, v)} for values in found]
        return {"service": set().union(*names[:-1]), "namespace": names[-1]}

    async def query_range(
        self,
        query: str,
        start: datetime,
        end: datetime,
        *,
        limit: int,
        direction: str = "backward",
        step: int | None = None,
    ) -> dict[str, Any]:
        """``GET /loki/api/v1/query_range``: Loki's ``data`` (``resultType``, ``result``)."""
        params = {
            "query": query,
            "start": str(_ns(start)),
            "end": str(_ns(end)),
            "limit": str(limit),
            "direction": direction,
        }
        if step:
            params["step"] = str(step)
        return _data(await self.get("/loki/api/v1/query_range", params))

    async def instant(self, query: str, at: datetime) -> dict[str, Any]:
        """``GET /loki/api/v1/query``: Loki's ``data`` of an instant metric query."""
        return _data(await self.get("/loki/api/v1/query", {"query": query, "time": str(_ns(at))}))


async def gather(*calls: Coroutine[Any, Any, T]) -> list[T]:
    """Run ``calls`` together; the first failure cancels the others and is raised as is
    (one clear message, not an exception group)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as failed:
        first: BaseException = failed
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [task.result() for task in tasks]


def _n(count: int, word: str) -> str:
    """``1 error line``, ``7 error lines``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _data(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict) or answer.get("status") != "success":
        raise SkillError(f"Loki answered with an error: {str(answer)[:300]}")
    data = answer.get("data")
    if not isinstance(data, dict):
        raise SkillError("Loki's answer holds no data.")
    return data


def _ns(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def _moment(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / NS, UTC)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector(labels: Mapping[str, str]) -> str:
    """``{service="checkout", namespace="shop"}``."""
    return "{" + ", ".join(f"{k}={_quote(v)}" for k, v in labels.items()) + "}"


def _window(since: str) -> tuple[datetime, datetime, timedelta]:
    span = parse_duration(since)
    if span > MAX_SINCE:
        raise SkillError(
            f"since is limited to {format_duration(MAX_SINCE)} (Loki's own query length limit)"
        )
    end = datetime.now(UTC)
    return end - span, end, span


def _step(span: timedelta) -> int:
    """A step (seconds) that gives about MAX_POINTS points over ``span``."""
    return max(1, int(span.total_seconds() // MAX_POINTS))


def clock(moment: datetime, *, dated: bool) -> str:
    """``14:02:03`` (UTC), with the day (``Jan 02 14:02:03``) when ``dated``."""
    return f"{moment:%b %d %H:%M:%S}" if dated else f"{moment:%H:%M:%S}"


def _dated(moments: list[datetime]) -> bool:
    """Whether times must carry their day: some are not today's (UTC)."""
    today = datetime.now(UTC).date()
    return any(m.date() != today for m in moments)


def one_line(line: str, limit: int = MAX_LINE_CHARS) -> str:
    """A log line for a chat: redacted, first line of a multi-line entry, bounded."""
    text = redact(line).strip()
    first, _, more = text.partition("\n")
    first = first.rstrip()
    if more.strip():
        first += " …"
    return first if len(first) <= limit else first[: limit - 1] + "…"


def fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


# -- logs.query ---------------------------------------------------------------------------


class QueryArgs(BaseModel):
    query: Annotated[str, Expression("logql")] = Field(
        min_length=1,
        description='LogQL: a stream selector with line filters, e.g. {app="checkout"} |= "error", '
        'or a metric query, e.g. sum by (app) (count_over_time({namespace="shop"}[5m]))',
    )
    since: Annotated[Duration, Since()] = Field(
        "1h", description="how far back from now, e.g. 15m, 6h, 2d"
    )
    limit: Annotated[int, Count("lines")] = Field(
        100, ge=1, le=MAX_LIMIT, description="most log lines to fetch (max 5000)"
    )
    direction: Literal["backward", "forward"] = Field(
        "backward", description="backward: the newest lines; forward: the oldest of the window"
    )


@dataclass
class _Entry:
    ns: int
    labels: dict[str, str]
    line: str


class LogsQuery(Skill[QueryArgs, Loki]):
    name = "logs.query"
    summary = "Run a LogQL query on Loki: log lines (time, labels, line) or a metric table"
    Args = QueryArgs
    risk = Risk.READ
    examples = [
        'logql: {app="checkout"} |= "timeout"',
        'search the logs {namespace="shop"} |~ "refused|reset" since 15m',
        'logql: sum by (app) (count_over_time({namespace="shop"} |= "error" [5m]))',
        "grep loki for 'deadline exceeded' in the payments logs",
        'query loki {service="frontend"} != "healthz" for the last 2h',
    ]
    keywords = {
        "logql": 3.0,
        "<logql>": 3.0,
        "<selector>": 1.0,
        "loki": 3.0,
        "grep": 2.0,
        "match": 2.0,  # "logs from checkout matching 'timeout'"
        "contain": 1.5,
        "search * log": 1.5,
        "log line": 1.0,
        "log": 0.8,
        "query": 0.5,
        "<promql>": -3.0,
        "promql": -3.0,
        "metric": -1.0,
        "graph": -1.0,
        "plot": -1.0,
        "chart": -1.0,
        "pod": -1.0,
        "tail": -1.0,
    }

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        """A request with no LogQL but a quoted phrase ("grep loki for 'connection refused'
        in namespace shop") or a word after "grep" ("grep timeout in the checkout logs")
        becomes a line filter on the named namespace or service; "oldest first" reads the
        window forward."""
        text = str(getattr(parsed, "text", ""))
        words = str(getattr(parsed, "rest", text))  # the request without its LogQL
        if re.search(r"\b(?:oldest|earliest|forward)\b|\bfirst\s+(?:\d+\s+)?lines?\b", words, re.I):
            found.setdefault("direction", "forward")
        count = re.search(
            r"\b(?:first|last|newest|latest|oldest)\s+(\d+)\s+(?:log\s+)?lines?\b", words, re.I
        )
        if count and "limit" not in found:
            found["limit"] = int(count.group(1))
        if found.get("query"):
            # "query loki {...}": the router reads the word after the verb into the expression
            found["query"] = re.sub(r"^(?:loki|logs?)\s+(?=\{)", "", str(found["query"]))
            return found
        phrase = re.search(r"'([^']+)'|\"([^\"]+)\"", text)
        needle = (phrase.group(1) or phrase.group(2)) if phrase else None
        if needle is None:  # "grep timeout in the checkout logs": one word, unquoted
            word = re.search(r"\bgrep\s+(?:-i\s+)?(?:for\s+)?([\w.:/-]+)", words, re.I)
            if word and word.group(1).lower() not in ("loki", "logs", "log", "the", "for"):
                needle = word.group(1)
        if needle is None:
            return found
        labels: dict[str, str] = {}
        for pattern in (
            r"(?:^|\s)(?:namespace|ns|-n)[\s=:]+([a-z0-9][a-z0-9-]*)",
            r"\b([a-z0-9][a-z0-9-]*)\s+namespace\b",
        ):
            if namespace := re.search(pattern, text, re.I):
                labels["namespace"] = namespace.group(1).lower()
                break
        service = re.search(
            r"\b(?:of|from|in)\s+(?:the\s+)?([a-z0-9][a-z0-9-]*)(?:'s)?\s+logs?\b", text, re.I
        )
        if service and service.group(1).lower() not in ("the", "its", "their", "my", "our"):
            labels["service"] = service.group(1).lower()
        if labels:
            found["query"] = f"{selector(labels)} |= {_quote(needle)}"
        return found

    async def run(self, args: QueryArgs, ctx: SkillContext[Loki]) -> SkillResult:
        start, end, span = _window(args.since)
        data = await ctx.backend.query_range(
            args.query,
            start,
            end,
            limit=args.limit,
            direction=args.direction,
            step=_step(span),
        )
        kind = data.get("resultType")
        result = data.get("result") or []
        code = Code(code=args.query, language="logql")
        if kind == "streams":
            return self.streams(args, result, ctx.settings.max_rows, code)
        if kind == "matrix":
            return await self.matrix(args, result, start, end, ctx, code)
        raise SkillError(f"Loki answered a {kind!r} result, which logs.query does not show.")

    def streams(
        self, args: QueryArgs, result: list[dict[str, Any]], max_rows: int, code: Code
    ) -> SkillResult:
        entries = [
            _Entry(int(ts), dict(stream.get("stream", {})), str(line))
            for stream in result
            for ts, line, *_ in stream.get("values", [])
        ]
        if not entries:
            return SkillResult(
                summary=f"no log lines in the last {args.since}",
                blocks=[code, Text(text=f"No log lines matched in the last {args.since}.")],
                data={"lines": 0, "streams": 0},
            )
        forward = args.direction == "forward"
        entries.sort(key=lambda e: e.ns, reverse=not forward)
        label_sets = [dict(stream.get("stream", {})) for stream in result]
        common = dict(set.intersection(*(set(s.items()) for s in label_sets)))
        differ = sorted({k for s in label_sets for k in s} - set(common))
        shown = entries[:max_rows]
        dated = _dated([_moment(e.ns) for e in shown])
        width = max((len(_labels_text(e.labels, differ)) for e in shown), default=0)
        lines = []
        for entry in shown:
            where = _labels_text(entry.labels, differ).ljust(width)
            stamp = clock(_moment(entry.ns), dated=dated)
            lines.append("  ".join(p for p in (stamp, where, one_line(entry.line)) if p))
        order = "oldest first" if forward else "newest first"
        streams = _n(len(result), "stream")
        head = f"**{_n(len(entries), 'line')}** from {streams}"
        if common:
            head += f" {redact(selector(dict(sorted(common.items()))))}"
        head += f" in the last {args.since}, {order} (UTC)"
        notes = []
        if len(entries) > len(shown):
            notes.append(f"{len(entries) - len(shown)} more lines not shown")
        if len(entries) >= args.limit:
            edge = "newer" if forward else "older"
            notes.append(
                f"the limit of {args.limit} lines was reached: {edge} lines of the window "
                "were not fetched (raise `limit` or narrow the query)"
            )
        blocks: list[Block] = [code, Text(text=head), Code(code="\n".join(lines), language="text")]
        if notes:
            blocks.append(Text(text="; ".join(notes).capitalize() + "."))
        return SkillResult(
            summary=f"{_n(len(entries), 'line')} from {streams} in the last {args.since}",
            blocks=blocks,
            data={"lines": len(entries), "streams": len(result), "shown": len(shown)},
        )

    async def matrix(
        self,
        args: QueryArgs,
        result: list[dict[str, Any]],
        start: datetime,
        end: datetime,
        ctx: SkillContext[Loki],
        code: Code,
    ) -> SkillResult:
        series: list[tuple[str, list[tuple[float, float]]]] = []
        for item in result:
            points = [(float(t), float(v)) for t, v in item.get("values", [])]
            if points:
                series.append((redact(selector(item.get("metric", {}))), points))
        if not series:
            return SkillResult(
                summary=f"no data in the last {args.since}",
                blocks=[code, Text(text=f"No data in the last {args.since}.")],
                data={"series": 0},
            )
        series.sort(key=lambda s: -s[1][-1][1] if not math.isnan(s[1][-1][1]) else math.inf)
        shown = series[: ctx.settings.max_series]
        rows = [
            [label, fmt(pts[-1][1]), fmt(min(v for _, v in pts)), fmt(max(v for _, v in pts))]
            for label, pts in shown
        ]
        table = Table(columns=["series", "last", "min", "max"], rows=rows)
        if len(series) > len(shown):
            table.note = (
                f"{len(series) - len(shown)} more series not shown (top {len(shown)} by last value)"
            )
        blocks: list[Block] = [code, table]
        if any(len(pts) > 1 for _, pts in shown):
            from opsbot.skills.charts import line_chart  # matplotlib loads on the first chart

            png = await asyncio.to_thread(
                line_chart, f"{args.query}  (last {args.since})", shown, start, end
            )
            blocks.insert(
                1, Image(title=f"{args.query} over {args.since}", data=png, alt=args.query)
            )
        return SkillResult(
            summary=f"{len(series)} series over the last {args.since}",
            blocks=blocks,
            data={"series": len(series)},
        )


def _labels_text(labels: Mapping[str, str], keys: list[str]) -> str:
    return " ".join(f"{k}={redact(labels[k])}" for k in keys if k in labels)


# -- logs.errors --------------------------------------------------------------------------


class ErrorsArgs(BaseModel):
    service: Annotated[str, Grounded("service")] = Field(
        pattern=LABEL_VALUE, description="service name (the service label)"
    )
    namespace: Annotated[str | None, Grounded("namespace")] = Field(
        None, pattern=LABEL_VALUE, description="Kubernetes namespace"
    )
    since: Annotated[Duration, Since()] = Field(
        "1h", description="how far back from now, e.g. 15m, 6h, 2d"
    )
    top: Annotated[int, Count("top")] = Field(
        10, ge=1, le=50, description="how many patterns to show, most frequent first"
    )


@dataclass
class Pattern:
    """Error lines of one template: how many, first and last seen, the newest sample."""

    cluster: int
    count: int = 0
    first: int = 0
    last: int = 0
    sample: str = ""
    template: str = ""

    def json(self) -> dict[str, Any]:
        return {
            "pattern": self.template,
            "count": self.count,
            "first_seen": _moment(self.first).isoformat(),
            "last_seen": _moment(self.last).isoformat(),
            "sample": self.sample,
        }


def mine(entries: list[tuple[int, str]]) -> list[Pattern]:
    """Group ``(ns, line)`` error lines (redacted already) into drain3 templates, numbers,
    ids, hex, IPs and times masked; most frequent first."""
    from drain3 import TemplateMiner  # loaded on the first logs.errors, not at start
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    config = TemplateMinerConfig()  # in memory: no persistence handler, no drain3.ini
    config.masking_instructions = [MaskingInstruction(regex, name) for regex, name in MASKS]
    config.drain_sim_th = 0.4
    config.drain_depth = 4
    config.parametrize_numeric_tokens = True
    config.snapshot_compress_state = False
    miner = TemplateMiner(persistence_handler=None, config=config)
    patterns: dict[int, Pattern] = {}
    for ns, line in sorted(entries, key=lambda e: e[0]):
        text = line.strip().partition("\n")[0].strip()[:2000]
        if not text:
            continue
        cluster = int(miner.add_log_message(text)["cluster_id"])
        pattern = patterns.setdefault(cluster, Pattern(cluster, first=ns))
        pattern.count += 1
        pattern.last = ns
        pattern.sample = line
    clusters = {c.cluster_id: c for c in miner.drain.clusters}
    for pattern in patterns.values():
        pattern.template = clusters[pattern.cluster].get_template()
    return sorted(patterns.values(), key=lambda p: (-p.count, -p.last))


class LogsErrors(Skill[ErrorsArgs, Loki]):
    name = "logs.errors"
    summary = "Top error patterns in a service's logs (Loki): count, first/last seen, a sample"
    Args = ErrorsArgs
    risk = Risk.READ
    examples = [
        "errors from checkout",
        "what errors is frontend logging in shop?",
        "top error patterns of payments in the last 6h",
        "which exceptions does cart throw",
        "what is checkout complaining about",
        "most frequent errors in the frontend logs since 30m",
    ]
    keywords = {
        "error": 2.0,
        "complain": 2.5,
        "pattern": 1.5,
        "throw": 1.0,
        "log": 1.0,
        "loki": 1.0,
        "top": 0.5,
        "most common": 0.8,
        "most frequent": 0.8,
        "why": -1.0,  # "why does checkout keep erroring": a diagnosis (incident.triage)
        "cause": -1.0,  # "what's causing the errors on payments?": a diagnosis too
        "error budget": -2.0,  # the SLO's, not log lines
        "rate": -1.5,
        "ratio": -1.5,
        "latency": -1.5,
        "health": -1.0,
        "alert": -1.0,
        "tail": -0.5,  # "tail errors for cart" follows its errors; "tail the logs" has none
        "line": -0.8,
        "pod": -0.5,
        "<promql>": -2.0,
        "<logql>": -2.0,
        "<selector>": -1.0,
        "logql": -2.0,
    }

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        """The word in "errors from cart" or "in payments logs" names the service, not a
        namespace (the router takes "from X"/"in X" for a namespace when it knows none)."""
        text = str(getattr(parsed, "text", ""))
        named = re.search(
            r"\b(?:errors?|exceptions?|panics?)\s+from\s+([a-z0-9][a-z0-9-]*)\b"
            r"|\b(?:in|of|from)\s+([a-z0-9][a-z0-9-]*)(?:'s)?\s+logs?\b",
            text,
            re.I,
        )
        service = (named.group(1) or named.group(2)).lower() if named else ""
        if service and "service" not in found and found.get("namespace") == service:
            found["service"] = found.pop("namespace")
            for other in re.finditer(r"\b(?:in|-n|namespace)\s+([a-z0-9][a-z0-9-]*)\b", text, re.I):
                value = other.group(1).lower()
                if value != service and value not in ("the", "last", "past", "its", "their"):
                    found["namespace"] = value
                    break
        return found

    async def run(self, args: ErrorsArgs, ctx: SkillContext[Loki]) -> SkillResult:
        loki = ctx.backend
        config = loki.config
        start, end, _ = _window(args.since)
        where = f"`{args.service}`" + (f" in {args.namespace}" if args.namespace else "")
        label = config.service_label
        data = await loki.query_range(
            self.query(config, label, args), start, end, limit=config.max_lines
        )
        entries = _stream_entries(data)
        if not entries:
            found = await self.service_label(loki, args)
            if found is None:
                tried = "/".join(config.service_labels)
                return SkillResult(
                    ok=False,
                    summary=f"Loki has no logs of {args.service} in the last {args.since}",
                    blocks=[
                        Text(
                            text=f"Loki has no log streams with {tried}={_quote(args.service)}"
                            + (f" in {args.namespace}" if args.namespace else "")
                            + f" in the last {args.since}. Check the name, or the service "
                            "label (LOKI_SERVICE_LABEL)."
                        )
                    ],
                    data={"service": args.service, "found": False},
                )
            if found != label:
                label = found
                data = await loki.query_range(
                    self.query(config, label, args), start, end, limit=config.max_lines
                )
                entries = _stream_entries(data)
        code = Code(code=self.query(config, label, args), language="logql")
        if not entries:
            return SkillResult(
                summary=f"no error lines from {args.service} in the last {args.since}",
                blocks=[
                    Text(text=f"No error lines from {where} in the last {args.since}."),
                    code,
                ],
                data={"service": args.service, "label": label, "lines": 0, "patterns": []},
            )
        total = len(entries)
        truncated = total >= config.max_lines
        if truncated:
            total = await self.count(loki, config, label, args, end) or total
        redacted = [(ns, redact(line)) for ns, line in entries]
        patterns = await asyncio.to_thread(mine, redacted)
        shown = patterns[: min(args.top, ctx.settings.max_rows)]
        dated = _dated([_moment(p.first) for p in shown] + [_moment(p.last) for p in shown])
        lines = []
        width = len(str(shown[0].count))
        for p in shown:
            span = clock(_moment(p.first), dated=dated)
            if p.last != p.first:
                span += f" → {clock(_moment(p.last), dated=dated)}"
            lines.append(f"{p.count:>{width}}×  {span}  {one_line(p.template)}")
            lines.append(f"{'':>{width}}   e.g. {one_line(p.sample)}")
        head = (
            f"**{_n(len(patterns), 'error pattern')}** in {_n(total, 'error line')} of {where} "
            f"over the last {args.since} (UTC)"
        )
        if len(patterns) > len(shown):
            head += f"; the top {len(shown)} by count"
        blocks: list[Block] = [Text(text=head), Code(code="\n".join(lines), language="text")]
        if truncated:
            blocks.append(
                Text(
                    text=f"Patterns are mined from the newest {len(entries)} error lines "
                    f"(LOKI_MAX_LINES); counts of older lines are not included."
                )
            )
        blocks.append(code)
        top = shown[0]
        return SkillResult(
            summary=(
                f"{_n(len(patterns), 'error pattern')} in {_n(total, 'error line')} of "
                f"{args.service} over the last {args.since}; most frequent ({top.count}×): "
                f"{one_line(top.template, 120)}"
            ),
            blocks=blocks,
            data={
                "service": args.service,
                "namespace": args.namespace,
                "label": label,
                "lines": total,
                "mined": len(entries),
                "patterns": [p.json() for p in shown],
            },
        )

    @staticmethod
    def query(config: LokiConfig, label: str, args: ErrorsArgs) -> str:
        labels = {label: args.service}
        if args.namespace:
            labels[config.namespace_label] = args.namespace
        return f"{selector(labels)} {config.error_filter}".strip()

    @staticmethod
    async def service_label(loki: Loki, args: ErrorsArgs) -> str | None:
        """The first of the service labels that has ``args.service`` among its values."""
        labels = loki.config.service_labels
        found = await gather(*(loki.label_values(label, args.since) for label in labels))
        for label, values in zip(labels, found, strict=True):
            if args.service in values:
                return label
        return None

    async def count(
        self, loki: Loki, config: LokiConfig, label: str, args: ErrorsArgs, end: datetime
    ) -> int | None:
        """How many error lines the window holds (when more matched than were read)."""
        query = f"sum(count_over_time({self.query(config, label, args)} [{args.since}]))"
        try:
            data = await loki.instant(query, end)
        except SkillError:
            return None
        result = data.get("result") or []
        if not result:
            return None
        return int(float(result[0].get("value", [0, "0"])[1]))


def _stream_entries(data: dict[str, Any]) -> list[tuple[int, str]]:
    if data.get("resultType") != "streams":
        raise SkillError(
            f"Loki answered a {data.get('resultType')!r} result to a log query: "
            "is LOKI_ERROR_FILTER a line filter?"
        )
    return [
        (int(ts), str(line))
        for stream in data.get("result") or []
        for ts, line, *_ in stream.get("values", [])
    ]


Loki.skills = (LogsQuery, LogsErrors)
