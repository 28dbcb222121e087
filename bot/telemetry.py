"""Logging (structlog: JSON when stderr is not a terminal) and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "opsbot_requests_total", "Chat requests handled", ["platform", "outcome"], registry=REGISTRY
)
SKILL_RUNS = Counter(
    "opsbot_skill_runs_total", "Skill executions", ["skill", "outcome"], registry=REGISTRY
)
SKILL_LATENCY = Histogram(
    "opsbot_skill_duration_seconds",
    "Skill execution time",
    ["skill"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REQUEST_LATENCY = Histogram(
    "opsbot_request_duration_seconds",
    "Time from request to last message",
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
APPROVALS = Counter("opsbot_approvals_total", "Approval events", ["event"], registry=REGISTRY)
POLICY_DECISIONS = Counter(
    "opsbot_policy_decisions_total", "Policy decisions", ["effect"], registry=REGISTRY
)
LLM_TOKENS = Counter("opsbot_llm_tokens_total", "Model tokens", ["kind"], registry=REGISTRY)
LLM_COST = Counter("opsbot_llm_cost_usd_total", "Estimated model cost (USD)", registry=REGISTRY)
LLM_LATENCY = Histogram(
    "opsbot_llm_call_duration_seconds",
    "Model call latency",
    registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
LLM_RETRIES = Counter("opsbot_llm_retries_total", "Model calls retried", registry=REGISTRY)
LLM_FALLBACKS = Counter(
    "opsbot_llm_fallbacks_total",
    "Requests answered by the offline router because the model failed",
    registry=REGISTRY,
)
ERRORS = Counter("opsbot_errors_total", "Errors answered to users", ["kind"], registry=REGISTRY)
LEADER = Gauge(
    "opsbot_leader",
    "1 while this replica leads (runs the Discord gateway, sweeps and follow-ups)",
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "opsbot_work_in_flight", "Requests, clicks and follow-ups being handled", registry=REGISTRY
)
WORK_WAITING = Gauge(
    "opsbot_work_waiting",
    "Chat requests queued for a worker, by adapter (opsbot.adapters.work)",
    ["adapter"],
    registry=REGISTRY,
)
WORK_WAIT = Histogram(
    "opsbot_work_wait_seconds",
    "How long a chat request waited for a worker",
    ["adapter"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
WORK_REFUSED = Counter(
    "opsbot_work_refused_total",
    "Chat requests answered 'busy, ask again' because the queue was full",
    ["adapter"],
    registry=REGISTRY,
)

APPROVALS_OLDEST_PENDING = Gauge(
    "opsbot_approvals_oldest_pending_seconds",
    "Age of the oldest pending approval in seconds, 0 when none (read from the database when "
    "/metrics is scraped)",
    registry=REGISTRY,
)


class Reading(Collector):
    """A gauge read when scraped, through :attr:`read` (set by whoever knows the value);
    absent from the exposition while there is nothing to read (None: not known yet)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.read: Callable[[], float | None] | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value = self.read() if self.read is not None else None
        if value is not None:
            yield GaugeMetricFamily(self.name, self.documentation, value=value)


AUDIT_CHAIN_INTACT = Reading(
    "opsbot_audit_chain_intact",
    "1 when the last verification of the audit chain (the chain watcher's walks, held against "
    "the anchors) found it intact, 0 when it found it broken; absent until one finished, and "
    "on a replica that does not lead when the leader alone walks the chain (console off)",
)
REGISTRY.register(AUDIT_CHAIN_INTACT)


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """structlog to stderr: human-readable on a terminal, JSON lines otherwise."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
