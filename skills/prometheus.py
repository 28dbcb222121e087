"""Prometheus skills: ``prometheus.query``, ``prometheus.range``, ``service.health``.

Backend: the Prometheus HTTP API v1 (``/api/v1/query``, ``/api/v1/query_range``,
``/api/v1/label/<name>/values``) through prometheus-api-client, run in a worker thread.
Errors: an expression Prometheus rejects comes back with Prometheus' own ``errorType`` and
message; a server that is down or slower than ``OPSBOT_BACKEND_TIMEOUT`` seconds gives a
clear "unreachable"/"did not answer" message.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from opsbot.durations import Duration, format_duration, parse_duration
from opsbot.meaning import Expression, Grounded, Since
from opsbot.model import Block, Code, Image, SkillResult, Table, Text
from opsbot.recipes import Recipe, merged
from opsbot.skills.base import Backend, BackendSettings, Risk, Skill, SkillContext, SkillError
from opsbot.skills.charts import Panel, Unit, balanced, line_chart, metric_names, render, shorten

if TYPE_CHECKING:
    from prometheus_api_client.prometheus_connect import PrometheusConnect
from pydantic import AliasChoices, BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

T = TypeVar("T")
LABEL_VALUE = r"^[A-Za-z0-9_.:-]+$"
MAX_POINTS = 240
#: known services listed when one is not found
MAX_KNOWN = 30


class HealthTemplates(BaseModel):
    """PromQL templates of ``service.health`` (RED: rate, errors, duration).

    ``{selector}`` is replaced by the label matchers of the service (and namespace), e.g.
    ``service="checkout",namespace="shop"``; ``{window}`` by the rate window. In
    ``first_sample``, ``{window}`` is the span looked at (the longer of ``window`` and
    ``chart_since``) and ``{step}`` a resolution of about a 300th of it (1s to 15s; data
    younger than one such step is looked for again at 1s).

    ``errors`` counts a service that has no 5xx series at all as 0 (``or vector(0)``), not
    as missing data. ``first_sample`` is the time of the oldest sample of the service's
    request counter within the window: when the data covers less than the window (a new
    service, a Prometheus started minutes ago), the rates are taken over the part the data
    covers, since ``rate()`` over the whole window would under-report.
    """

    service_label: str = "service"
    namespace_label: str = "namespace"
    window: str = "5m"
    rate: str = "sum(rate(http_requests_total{{{selector}}}[{window}]))"
    errors: str = (
        '(sum(rate(http_requests_total{{{selector},code=~"5.."}}[{window}])) or vector(0))'
        " / sum(rate(http_requests_total{{{selector}}}[{window}]))"
    )
    p95: str = (
        "histogram_quantile(0.95, sum by (le) "
        "(rate(http_request_duration_seconds_bucket{{{selector}}}[{window}])))"
    )
    p99: str = (
        "histogram_quantile(0.99, sum by (le) "
        "(rate(http_request_duration_seconds_bucket{{{selector}}}[{window}])))"
    )
    first_sample: str = (
        "min(min_over_time(timestamp(http_requests_total{{{selector}}})[{window}:{step}]))"
    )
    #: the span of the chart of the four signals under the table; "" draws none
    chart_since: str = "1h"

    @field_validator("window", "chart_since")
    @classmethod
    def _duration(cls, value: str) -> str:
        if value:
            parse_duration(value)
        return value


class PrometheusConfig(BackendSettings):
    """``PROMETHEUS_URL``; ``health`` (``opsbot.yaml``) holds the ``service.health`` templates,
    ``recipes`` (``prometheus_recipes``) the PromQL recipes the offline router fills in for
    questions asked without PromQL (:mod:`opsbot.recipes`: they replace or add to the
    defaults by name; ``{enabled: false}`` switches one off)."""

    model_config = SettingsConfigDict(env_prefix="PROMETHEUS_")
    url: str | None = None
    health: HealthTemplates = Field(
        default_factory=HealthTemplates,
        validation_alias=AliasChoices("health", "prometheus_health"),
    )
    recipes: dict[str, Recipe] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("recipes", "prometheus_recipes"),
    )


class Prometheus(Backend[PrometheusConfig]):
    """The Prometheus HTTP API v1 through prometheus-api-client (run in a worker thread)."""

    name = "prometheus"
    Config = PrometheusConfig

    def missing(self) -> list[str]:
        return [] if self.config.url else ["PROMETHEUS_URL"]

    def recipes(self) -> Mapping[str, Recipe]:
        """The PromQL recipes of this install: the defaults with ``recipes`` over them."""
        return merged(self.config.recipes)

    async def connect(self) -> PrometheusConnect:
        from prometheus_api_client.prometheus_connect import PrometheusConnect
        from urllib3.util.retry import Retry

        assert self.config.url
        return PrometheusConnect(
            url=self.config.url.rstrip("/"),
            disable_ssl=False,
            retry=Retry(total=1, backoff_factor=0.2, status_forcelist=[502, 503, 504]),
            timeout=self.settings.backend_timeout,  # type: ignore[arg-type]
        )

    async def call(self, fn: Callable[[PrometheusConnect], T]) -> T:
        """Run ``fn(client)`` in a thread, translating transport and API errors to SkillError."""
        import requests
        from prometheus_api_client.exceptions import PrometheusApiClientException

        prom: PrometheusConnect = await self.client()
        timeout = self.settings.backend_timeout
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, prom), timeout + 2)
        except PrometheusApiClientException as exc:
            raise SkillError(prometheus_error(exc)) from exc
        except (requests.Timeout, TimeoutError) as exc:
            raise SkillError(
                f"Prometheus at {prom.url} did not answer within {timeout:g}s."
            ) from exc
        except requests.RequestException as exc:
            raise SkillError(
                f"Prometheus at {prom.url} is unreachable ({type(exc).__name__})."
            ) from exc

    async def instant(self, query: str) -> list[dict[str, Any]]:
        """``GET /api/v1/query``: the instant vector of ``query`` (``[]`` when empty)."""
        result: list[dict[str, Any]] = await self.call(lambda p: p.custom_query(query))
        return result

    async def probe(self) -> str:
        """``GET /api/v1/status/buildinfo``: the server's version."""
        info: Any = await self.call(
            lambda p: p._session.get(
                f"{p.url}/api/v1/status/buildinfo", timeout=self.settings.backend_timeout
            ).json()
        )
        return str(info.get("data", {}).get("version", "")) if isinstance(info, dict) else ""

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta
    ) -> list[dict[str, Any]]:
        """``GET /api/v1/query_range``: the matrix of ``query`` (``[]`` when empty)."""
        step_s = f"{max(1, int(step.total_seconds()))}s"
        result: list[dict[str, Any]] = await self.call(
            lambda p: p.custom_query_range(query, start_time=start, end_time=end, step=step_s)
        )
        return result

    async def label_values(self, label: str, match: str | None = None) -> list[str]:
        """``GET /api/v1/label/<label>/values`` (of the series ``match`` selects), sorted."""
        params = {"match[]": match} if match else {}
        values: list[str] = await self.call(lambda p: p.get_label_values(label, params=params))
        return sorted(values)

    async def inventory(self) -> dict[str, set[str]]:
        """Names to ground on: values of the service, job and namespace labels."""
        health = self.config.health
        service: list[str] = await self.call(lambda p: p.get_label_values(health.service_label))
        namespace: list[str] = await self.call(lambda p: p.get_label_values(health.namespace_label))
        job: list[str] = await self.call(lambda p: p.get_label_values("job"))
        return {"service": set(service) | set(job), "namespace": set(namespace)}


def prometheus_error(exc: Exception) -> str:
    """Prometheus' ``errorType: error`` from the client's "HTTP Status Code N (b'...')" text."""
    text = str(exc)
    m = re.search(r"\((b'.*'|b\".*\")\)\s*$", text, re.S)
    if m:
        try:
            body = json.loads(ast.literal_eval(m.group(1)))
            return f"Prometheus rejected the query ({body.get('errorType')}): {body.get('error')}"
        except (ValueError, SyntaxError):
            pass
    return f"Prometheus error: {text}"


_OPENING = re.compile(r"(?:[A-Za-z_:][\w:]*\s*)?[(\[{]\s*$")


def as_written(text: str, expr: str | None) -> str | None:
    """The PromQL expression the user wrote, where the router picked a balanced piece of an
    unbalanced one (``http_requests_total[5m]`` out of ``rate(http_requests_total[5m]``) or
    found none: such an expression does not parse, and Prometheus should say so about what
    was written rather than answer a different query. ``expr`` otherwise."""
    if expr and expr in text:
        start = text.index(expr)
        end = start + len(expr)
    elif m := re.search(r"[A-Za-z_:][\w:]*\s*[(\[{]|\{", text):
        start = end = m.start()
    else:
        return expr
    while m := _OPENING.search(text[:start]):  # "sum(rate(" glued before it
        start = m.start()
    tail = text[end:]
    closing = max(tail.rfind(c) for c in "()[]{}")
    if closing >= 0:  # " by service)" after it: up to the end of that word
        stop = re.search(r"\s|$", tail[closing:])
        end += closing + (stop.start() if stop else 0)
    written = text[start:end].strip()
    if written == expr or balanced(written):
        return expr
    return written


def _route_query(parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
    """``route_args`` of the PromQL skills: the query as the user wrote it."""
    query = as_written(str(getattr(parsed, "text", "")), found.get("query"))
    if query:
        found["query"] = query
    return found


def series_label(metric: dict[str, str]) -> str:
    name = metric.get("__name__", "")
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{labels}}}" if labels else (name or "{}")


def fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


class QueryArgs(BaseModel):
    query: Annotated[str, Expression("promql", recipes=True)] = Field(
        description="PromQL expression, e.g. sum(rate(http_requests_total[5m]))"
    )
    time: str | None = Field(
        None, description="evaluation time: RFC 3339 or unix seconds; default now"
    )


class PrometheusQuery(Skill[QueryArgs, Prometheus]):
    name = "prometheus.query"
    summary = "Evaluate a PromQL expression now and show the resulting series"
    Args = QueryArgs
    risk = Risk.READ
    examples = [
        "query up",
        "promql: sum(rate(http_requests_total[5m])) by (service)",
        "what is the value of node_load1",
        "run the query `up == 0`",
    ]
    keywords = {
        "promql": 3.0,
        "<promql>": 1.2,
        "<recipe>": 3.0,  # "top 5 pods by CPU", "memory of checkout": a PromQL recipe
        "<ranking>": 0.5,
        "<selector>": 0.8,
        "query": 1.5,
        "metric": 1.0,
        "evaluate": 1.2,
        "value of": 0.8,
        "current value": 0.8,
        "log": -2.0,
        "logql": -3.0,
        "<logql>": -2.0,
    }

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        return _route_query(parsed, found)

    async def run(self, args: QueryArgs, ctx: SkillContext[Prometheus]) -> SkillResult:
        params: dict[str, str] = {"time": args.time} if args.time else {}
        result: Any = await ctx.backend.call(lambda p: p.custom_query(args.query, params=params))
        limit = ctx.settings.max_rows
        if result and isinstance(result, list) and isinstance(result[0], dict):
            rows = []
            # a range vector (``x[5m]``) has "values": its last sample, and how many there are
            matrix = "values" in result[0]
            for sample in result:
                points = sample.get("values") or [sample.get("value", [0, "nan"])]
                rows.append((float(points[-1][1]), series_label(sample.get("metric", {}))))
            rows.sort(key=lambda r: -r[0] if not math.isnan(r[0]) else math.inf)
            table = Table.bounded(
                ["series", "last value" if matrix else "value"],
                [[s, fmt(v)] for v, s in rows],
                limit,
                "series",
            )
            summary = f"{len(rows)} series" + (
                " (a range vector: last sample each)" if matrix else ""
            )
            return SkillResult(
                summary=summary,
                blocks=[Code(code=args.query, language="promql"), table],
                data={"series": len(rows)},
            )
        if result and isinstance(result, list) and len(result) == 2:  # scalar or string
            return SkillResult(
                summary=f"scalar {result[1]}",
                blocks=[Code(code=args.query, language="promql"), Text(text=f"= {result[1]}")],
            )
        return SkillResult(
            summary="no data",
            blocks=[
                Code(code=args.query, language="promql"),
                Text(text="The query returned no series."),
            ],
            data={"series": 0},
        )


class RangeArgs(BaseModel):
    query: Annotated[str, Expression("promql", recipes=True)] = Field(
        description="PromQL expression to chart"
    )
    since: Annotated[Duration, Since()] = Field(
        "1h", description="how far back from now, e.g. 30m, 6h, 2d"
    )
    step: Duration | None = Field(None, description="resolution; default: since / 240")


class PrometheusRange(Skill[RangeArgs, Prometheus]):
    name = "prometheus.range"
    summary = "Chart a PromQL expression over a time range (PNG) with min/max/last per series"
    Args = RangeArgs
    risk = Risk.READ
    examples = [
        "graph rate(http_requests_total[5m]) over the last 6h",
        "plot node_load1 for the past hour",
        "chart up over the last 30m",
    ]
    keywords = {
        "graph": 2.0,
        "plot": 2.0,
        "chart": 2.0,
        "draw": 1.5,
        "visualize": 1.5,
        "visualise": 1.5,
        "trend": 2.0,  # a chart word, as graph and plot: "trend of 5xx for payments"
        "over time": 2.0,
        "<promql>": 1.0,
        "<recipe>": 1.5,  # with a chart word: "graph the error rate of payments for 3h"
        "promql": 1.0,
        "log": -2.0,
        "<logql>": -2.0,
    }

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        return _route_query(parsed, found)

    async def run(self, args: RangeArgs, ctx: SkillContext[Prometheus]) -> SkillResult:
        span = parse_duration(args.since)
        if span > timedelta(days=31):
            raise SkillError("since is limited to 31d so a chart stays readable")
        step = (
            parse_duration(args.step)
            if args.step
            else timedelta(seconds=max(1, int(span.total_seconds() // MAX_POINTS)))
        )
        if span / step > 11000:
            raise SkillError(
                f"step {format_duration(step)} is too fine for {args.since} (max 11000 points)"
            )
        end = datetime.now(UTC)
        start = end - span
        step_s = f"{int(step.total_seconds())}s"
        result = await ctx.backend.range(args.query, start, end, step)
        code = Code(code=args.query, language="promql")
        if not result:
            return SkillResult(
                summary="no data", blocks=[code, Text(text=f"No data in the last {args.since}.")]
            )
        series: list[tuple[dict[str, str], list[tuple[float, float]]]] = []
        for item in result:
            points = [(float(t), float(v)) for t, v in item.get("values", [])]
            if points:
                series.append((item.get("metric", {}), points))
        series.sort(key=lambda s: -s[1][-1][1] if not math.isnan(s[1][-1][1]) else math.inf)
        shown = series[: ctx.settings.max_series]
        title = f"{', '.join(metric_names(args.query)[:2]) or 'PromQL'} · last {args.since}"
        png = await asyncio.to_thread(
            line_chart, title, shown, start, end, query=args.query, total=len(series)
        )
        rows = [
            [
                series_label(metric),
                fmt(min(v for _, v in pts)),
                fmt(max(v for _, v in pts)),
                fmt(pts[-1][1]),
            ]
            for metric, pts in shown
        ]
        table = Table(columns=["series", "min", "max", "last"], rows=rows)
        if len(series) > len(shown):
            table.note = (
                f"{len(series) - len(shown)} more series not shown (top {len(shown)} by last value)"
            )
        image = Image(title=shorten(title, 80), data=png, alt=args.query)
        return SkillResult(
            summary=f"{len(series)} series over {args.since}",
            blocks=[code, image, table],
            data={"series": len(series), "step": step_s},
        )


class HealthArgs(BaseModel):
    service: Annotated[str, Grounded("service")] = Field(
        pattern=LABEL_VALUE, description="service name (the service label)"
    )
    namespace: Annotated[str | None, Grounded("namespace")] = Field(
        None, pattern=LABEL_VALUE, description="Kubernetes namespace"
    )
    chart: bool | None = Field(
        None, description="draw the rate/errors/latency chart too (default: yes)"
    )


class ServiceHealth(Skill[HealthArgs, Prometheus]):
    name = "service.health"
    summary = "RED health of a service: request rate, error ratio, p95/p99 latency"
    Args = HealthArgs
    risk = Risk.READ
    examples = [
        "how is checkout doing?",
        "error rate and latency of payments in shop",
        "health of cart",
        "is payments healthy",
    ]
    keywords = {
        "health": 2.0,
        "healthy": 2.0,
        "how is": 1.2,
        "doing": 0.8,
        "error rate": 2.0,
        "error ratio": 2.0,
        "5xx": 2.0,
        "failure rate": 1.5,
        "latency": 2.0,
        "slow": 1.0,
        "throughput": 2.0,
        "request rate": 2.0,
        "success rate": 2.0,  # the error ratio's complement
        "error budget": 2.5,  # "error budget of checkout"
        "slo": 1.5,
        "availability": 1.5,
        "traffic": 1.5,
        "rps": 2.0,
        "requests per second": 2.0,
        "p99": 1.5,
        "p95": 1.5,
        "response time": 2.0,
        "red": 1.5,  # "red for checkout" (the RED method)
        "<promql>": -1.5,
        "<recipe>": -1.0,
        "log": -1.5,
        "alert": -1.0,
        "pod": -1.5,  # "are the checkout pods healthy": their pods' status
        "graph": -0.5,
    }

    async def run(self, args: HealthArgs, ctx: SkillContext[Prometheus]) -> SkillResult:
        prom = ctx.backend
        tpl = prom.config.health
        selector = f'{tpl.service_label}="{args.service}"'
        if args.namespace:
            selector += f',{tpl.namespace_label}="{args.namespace}"'
        where = f"{args.service}" + (f" in {args.namespace}" if args.namespace else "")
        configured = parse_duration(tpl.window)
        span = max(configured, parse_duration(tpl.chart_since or tpl.window))
        oldest = await self._first_sample(prom, tpl, selector, span)
        window, since = tpl.window, None
        if oldest is not None and datetime.now(UTC) - oldest < configured:
            # rate() over a window the data only partly covers under-reports: take the part
            since = oldest
            covered = math.ceil((datetime.now(UTC) - oldest).total_seconds())
            window = format_duration(timedelta(seconds=max(2, covered)))
        queries = {
            "request rate": tpl.rate.format(selector=selector, window=window),
            "error ratio": tpl.errors.format(selector=selector, window=window),
            "p95 latency": tpl.p95.format(selector=selector, window=window),
            "p99 latency": tpl.p99.format(selector=selector, window=window),
        }
        results = await asyncio.gather(*(prom.instant(q) for q in queries.values()))
        values: dict[str, float | None] = {
            label: float(result[0]["value"][1]) if result else None
            for label, result in zip(queries, results, strict=True)
        }
        if all(v is None for v in values.values()):
            if since is not None:  # one sample or two: no rate yet
                return SkillResult(
                    ok=False,
                    summary=f"too little data for {where} yet",
                    blocks=[
                        Text(
                            text=f"Prometheus has data for {where} only since "
                            f"{since:%H:%M:%S} UTC, too little for a rate: ask again in a minute."
                        )
                    ],
                )
            return SkillResult(
                ok=False,
                summary=f"no metrics for {where}",
                blocks=[Text(text=await self._unknown(prom, tpl, args, where))],
            )
        idle = values["request rate"] == 0
        rows = [[label, _unit(label, value, idle)] for label, value in values.items()]
        head = f"*{where}* over the last {window}"
        if since is not None:
            head += (
                f": Prometheus has data for it only since {since:%H:%M:%S} UTC, "
                f"so the {tpl.window} window would under-report"
            )
        blocks: list[Block] = [Text(text=head), Table(columns=["signal", "value"], rows=rows)]
        if (
            args.chart is not False
            and tpl.chart_since
            and (chart := await self._chart(prom, tpl, selector, where, oldest))
        ):
            blocks.append(chart)
        return SkillResult(
            summary=f"{where}: " + ", ".join(f"{r[0]} {r[1]}" for r in rows),
            blocks=blocks,
            data={**values, "window": window},
        )

    @staticmethod
    async def _first_sample(
        prom: Prometheus, tpl: HealthTemplates, selector: str, span: timedelta
    ) -> datetime | None:
        """When the service's data starts, if that is within the last ``span`` (else None:
        it covers the whole span, or there is none)."""
        step = min(15, max(1, int(span.total_seconds()) // 300))
        tries = [(format_duration(span), step)] + ([(f"{step}s", 1)] if step > 1 else [])
        for looked_at, resolution in tries:
            first = await prom.instant(
                tpl.first_sample.format(selector=selector, window=looked_at, step=f"{resolution}s")
            )
            if first:
                oldest = datetime.fromtimestamp(float(first[0]["value"][1]), UTC)
                return (
                    oldest if datetime.now(UTC) - oldest < span - timedelta(seconds=step) else None
                )
        return None

    @staticmethod
    async def _chart(
        prom: Prometheus, tpl: HealthTemplates, selector: str, where: str, oldest: datetime | None
    ) -> Image | None:
        """Rate, error ratio and p95/p99 latency over ``chart_since``, one panel each, with
        the recipe's units. Rates are over 4 steps (shorter while the data is young), and the
        chart starts one such window after the data does, so no point under-reports."""
        end = datetime.now(UTC)
        start = end - parse_duration(tpl.chart_since)
        step = max(1, int((end - start).total_seconds()) // MAX_POINTS)
        rate_window = 4 * step
        if oldest is not None and oldest > start - timedelta(seconds=rate_window):
            age = int((end - oldest).total_seconds())
            rate_window = min(rate_window, max(2, age // 4))
            start = max(start, oldest + timedelta(seconds=rate_window))
            step = max(1, int((end - start).total_seconds()) // MAX_POINTS)
        if (end - start).total_seconds() < 2 * step:
            return None
        window = format_duration(timedelta(seconds=rate_window))
        queries = {
            label: template.format(selector=selector, window=window)
            for label, template in (
                ("request rate", tpl.rate),
                ("error ratio", tpl.errors),
                ("p95 latency", tpl.p95),
                ("p99 latency", tpl.p99),
            )
        }
        results = await asyncio.gather(
            *(prom.range(q, start, end, timedelta(seconds=step)) for q in queries.values())
        )
        rate, errors, p95, p99 = (
            [(float(t), float(v)) for t, v in result[0]["values"]] if result else []
            for result in results
        )
        panels = [
            Panel(Unit("req/s"), [("", rate)]),
            Panel(Unit("error ratio", "ratio"), [("", errors)]),
            Panel(Unit("latency (seconds)", "seconds"), [("p95", p95), ("p99", p99)]),
        ]
        span = (
            "last " + tpl.chart_since
            if start == end - parse_duration(tpl.chart_since)
            else (f"since {start:%H:%M:%S} UTC (data starts {oldest:%H:%M:%S})" if oldest else "")
        )
        caption = [f"{label}: {query}" for label, query in queries.items()]
        caption.append(
            f"rates over {window}, a point every {format_duration(timedelta(seconds=step))}"
        )
        png = await asyncio.to_thread(
            render, f"{where}: rate, errors, latency · {span}", panels, start, end, caption=caption
        )
        return Image(
            title=f"{where} health", data=png, alt=f"rate, error ratio, latency of {where}"
        )

    @staticmethod
    async def _unknown(prom: Prometheus, tpl: HealthTemplates, args: HealthArgs, where: str) -> str:
        """Why there is nothing for ``where``: the namespaces the service has metrics in, or
        the services Prometheus knows (its ``service`` label values)."""
        text = f"Prometheus has no request metrics for {where}."
        if args.namespace:
            homes = await prom.label_values(
                tpl.namespace_label, f'{{{tpl.service_label}="{args.service}"}}'
            )
            if homes:
                return f"{text} {args.service} has metrics in namespace {', '.join(homes)}."
        known = await prom.label_values(tpl.service_label)
        if not known:
            return f"{text} No series has a {tpl.service_label} label: check the service.health templates (health.*)."
        more = f" and {len(known) - MAX_KNOWN} more" if len(known) > MAX_KNOWN else ""
        return f"{text} Known services: {', '.join(known[:MAX_KNOWN])}{more}."


def _unit(label: str, value: float | None, idle: bool = False) -> str:
    if label != "request rate" and idle:
        return "n/a (no requests)"
    if value is None or math.isnan(value):
        return "no data"
    if label == "request rate":
        return f"{value:.3g} req/s"
    if label == "error ratio":
        return f"{value * 100:.2f} %"
    return f"{value * 1000:.0f} ms"


Prometheus.skills = (PrometheusQuery, PrometheusRange, ServiceHealth)
