"""PromQL recipes: named query templates for the questions SREs ask without writing PromQL.

"top 5 pods by CPU in prod", "memory of checkout", "which pods restart most", "graph the error
rate of payments for 3h": the offline router finds the recipe whose ``words`` the request
says, fills in its template and plans ``prometheus.query`` (or ``prometheus.range`` for a
chart) with the query written out, so the plan shows exactly what runs and the recipe's name.

The defaults follow the kube-prometheus conventions (cAdvisor and kube-state-metrics series,
``namespace``/``pod``/``container`` labels) and the RED method for HTTP services
(``http_requests_total`` with a ``code`` label, ``http_request_duration_seconds`` histogram,
a ``service`` label). An install whose metrics are named differently overrides a recipe, or
adds its own, under ``prometheus_recipes`` in ``opsbot.yaml`` (the Prometheus backend's
``recipes`` setting); a recipe given there replaces the default of the same name, and one
set to ``{enabled: false}`` is switched off.

A template's placeholders:

- ``{selector}``: the label matchers the request implies, comma-separated, e.g.
  ``namespace="shop",pod=~"checkout(-.*)?"`` (may be empty: write it after the recipe's own
  matchers, ``{container!="",{selector}}``; a dangling comma is tidied away);
- ``{by}``: the label to break the result down by (``pod``, or what "by namespace"/"per
  container" says);
- ``{window}``: the rate/increase window (the recipe's ``window``, or the request's duration
  for an instant query: "restarts in the last 24h");
- ``{quantile}``: 0.99, or what "p95"/"median"/"90th percentile" says.

A ranking ("top 5", "which ... most", "highest") wraps the query in ``topk(N, ...)``
("lowest"/"least": ``bottomk``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field, model_validator

_CADVISOR = 'container!="",image!=""'


class Recipe(BaseModel):
    """One named PromQL template (see the module doc)."""

    summary: str = Field(default="", description="what it measures, shown with the plan")
    words: list[str] = Field(
        default_factory=list,
        description="what asks for it: words compared by stem, phrases, '*' for a gap",
    )
    query: str = Field(default="", description="the PromQL template")
    by: str = Field(
        default="pod", description="the label to break down by when the request says none"
    )
    name_selector: str = Field(
        default='pod=~"{name}(-.*)?"',
        description="the matcher a workload or service name becomes ({name})",
    )
    name_kind: str = Field(
        default="deployment",
        description="the inventory kind a name is grounded against (deployment, service...)",
    )
    namespace_label: str = "namespace"
    window: str = "5m"
    alone: bool = Field(
        default=True,
        description="its words alone ask for it; False: only in a ranking or a chart, since "
        "another skill answers the plain question (k8s.pods shows restarts, service.health "
        "the RED signals)",
    )
    ranked: bool = Field(
        default=True,
        description="a ranking word wraps it in topk; False: the ranking word is its name "
        "('top pods'), and a recipe the request names besides ('top pods by cpu') wins",
    )
    windowed: bool = Field(
        default=False,
        description="with alone=False: its words and a time window ('restarts in the last "
        "24h') ask for it, a count over the window that the other skills do not give",
    )
    unit: str = ""
    enabled: bool = True

    @model_validator(mode="after")
    def _needs_a_query(self) -> Recipe:
        if self.enabled and not self.query.strip():
            raise ValueError("a recipe needs a query (or enabled: false to switch it off)")
        return self

    def render(
        self,
        *,
        namespace: str | None = None,
        name: str | None = None,
        by: str | None = None,
        window: str | None = None,
        quantile: float | None = None,
        top: int | None = None,
        lowest: bool = False,
    ) -> str:
        """The PromQL this recipe stands for with these choices."""
        matchers = []
        if namespace:
            matchers.append(f'{self.namespace_label}="{namespace}"')
        if name:
            matchers.append(self.name_selector.format(name=name))
        query = self.query.format(
            selector=",".join(matchers),
            by=by or self.by,
            window=window or self.window,
            quantile=f"{quantile if quantile is not None else 0.99:g}",
        )
        query = re.sub(r",\s*}", "}", re.sub(r"{\s*,", "{", query))
        if top:
            query = f"{'bottomk' if lowest else 'topk'}({top}, {query})"
        return query


def _cadvisor(expr: str) -> str:
    return expr.replace("CADVISOR", _CADVISOR)


DEFAULT_RECIPES: dict[str, Recipe] = {
    "cpu": Recipe(
        summary="CPU used, in cores (cAdvisor container_cpu_usage_seconds_total)",
        words=["cpu", "cores", "processor", "cpu usage"],
        query=_cadvisor(
            "sum by ({by}) (rate(container_cpu_usage_seconds_total{{CADVISOR,{selector}}}[{window}]))"
        ),
        unit="cores",
    ),
    "memory": Recipe(
        summary="memory in use, in bytes (working set: what the OOM killer counts)",
        words=["memory", "mem", "ram", "working set", "rss"],
        query=_cadvisor(
            "sum by ({by}) (container_memory_working_set_bytes{{CADVISOR,{selector}}})"
        ),
        unit="bytes",
    ),
    "memory_limit": Recipe(
        summary="memory working set as a share of the memory limit (saturation)",
        words=["memory limit", "memory saturation", "close to * limit", "near * limit"],
        query=_cadvisor(
            "sum by ({by}) (container_memory_working_set_bytes{{CADVISOR,{selector}}}) / "
            'sum by ({by}) (kube_pod_container_resource_limits{{resource="memory",{selector}}})'
        ),
        unit="ratio",
    ),
    "oom_kills": Recipe(
        summary="containers whose last termination was an OOM kill (kube-state-metrics)",
        words=["oom", "oomkilled", "oom kill", "out of memory", "oom killer"],
        query=(
            "sum by ({by}) (kube_pod_container_status_last_terminated_reason"
            '{{reason="OOMKilled",{selector}}})'
        ),
    ),
    "disk": Recipe(
        summary="share of each persistent volume claim's capacity in use (kubelet)",
        words=["disk", "disk usage", "disk space", "volume", "pvc", "storage", "disk full"],
        query=(
            "sum by ({by}) (kubelet_volume_stats_used_bytes{{{selector}}}) / "
            "sum by ({by}) (kubelet_volume_stats_capacity_bytes{{{selector}}})"
        ),
        by="persistentvolumeclaim",
        name_selector='persistentvolumeclaim=~"{name}.*"',
        name_kind="persistentvolumeclaim",
        unit="ratio",
    ),
    "cpu_throttling": Recipe(
        summary="share of CPU periods throttled by the CPU limit (saturation)",
        words=[
            "throttling",
            "throttled",
            "throttle",
            "saturation",
            "saturated",
            "cpu limit",
            "cpu throttling",
            "throttled cpu",
        ],
        query=(
            'sum by ({by}) (rate(container_cpu_cfs_throttled_periods_total{{container!="",{selector}}}[{window}])) / '
            'sum by ({by}) (rate(container_cpu_cfs_periods_total{{container!="",{selector}}}[{window}]))'
        ),
        unit="ratio",
    ),
    "network": Recipe(
        summary="network bytes per second received and sent (cAdvisor)",
        words=["network", "bandwidth", "network traffic", "network usage", "throughput in bytes"],
        query=(
            "sum by ({by}) (rate(container_network_receive_bytes_total{{{selector}}}[{window}])) + "
            "sum by ({by}) (rate(container_network_transmit_bytes_total{{{selector}}}[{window}]))"
        ),
        unit="bytes/s",
    ),
    "restarts": Recipe(
        summary="container restarts over the window (kube-state-metrics)",
        words=["restart", "restarts", "restart count", "restarting", "crashloop", "crash"],
        query="sum by ({by}) (increase(kube_pod_container_status_restarts_total{{{selector}}}[{window}]))",
        window="1h",
        alone=False,
        windowed=True,
    ),
    "error_ratio": Recipe(
        summary="share of requests answered 5xx (RED: errors)",
        words=["error rate", "error ratio", "5xx", "failure rate", "error percentage"],
        query=(
            'sum by ({by}) (rate(http_requests_total{{code=~"5..",{selector}}}[{window}])) / '
            "sum by ({by}) (rate(http_requests_total{{{selector}}}[{window}]))"
        ),
        by="service",
        name_selector='service="{name}"',
        name_kind="service",
        alone=False,
        unit="ratio",
    ),
    "latency": Recipe(
        summary="request latency at a quantile, in seconds (RED: duration histogram)",
        words=[
            "latency",
            "response time",
            "p99",
            "p95",
            "p90",
            "p50",
            "percentile",
            "median",
            "slowest",
        ],
        query=(
            "histogram_quantile({quantile}, sum by (le, {by}) "
            "(rate(http_request_duration_seconds_bucket{{{selector}}}[{window}])))"
        ),
        by="service",
        name_selector='service="{name}"',
        name_kind="service",
        alone=False,
        unit="seconds",
    ),
    "request_rate": Recipe(
        summary="requests per second (RED: rate)",
        words=[
            "request rate",
            "rps",
            "qps",
            "throughput",
            "traffic",
            "requests per second",
            "busiest",
        ],
        query="sum by ({by}) (rate(http_requests_total{{{selector}}}[{window}]))",
        by="service",
        name_selector='service="{name}"',
        name_kind="service",
        alone=False,
        unit="req/s",
    ),
    "top": Recipe(
        summary="CPU (cores) and memory (bytes) per pod, as kubectl top pod",
        # any recipe the request names besides wins ("biggest pods by ram")
        words=["top pod", "hungriest pod", "heaviest pod", "biggest pod", "largest pod"],
        ranked=False,
        query=_cadvisor(
            "label_replace(sum by ({by}) (rate(container_cpu_usage_seconds_total{{CADVISOR,{selector}}}[{window}])), "
            '"resource", "cpu_cores", "", "") or label_replace(sum by ({by}) '
            '(container_memory_working_set_bytes{{CADVISOR,{selector}}}), "resource", "memory_bytes", "", "")'
        ),
    ),
}


def merged(configured: Mapping[str, Recipe] | None) -> dict[str, Recipe]:
    """The default recipes with ``configured`` ones replacing or adding to them (a recipe
    with ``enabled: false`` removes its name)."""
    recipes = {**DEFAULT_RECIPES, **(configured or {})}
    return {name: recipe for name, recipe in recipes.items() if recipe.enabled}


@runtime_checkable
class RecipeSource(Protocol):
    """A backend whose settings hold PromQL recipes (the Prometheus backend's ``recipes``)."""

    def recipes(self) -> Mapping[str, Recipe]: ...
