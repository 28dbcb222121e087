"""Optional OpenTelemetry export of model calls as GenAI spans (``pip install 'opsbot[otel]'``).

Each model call of the LLM planner becomes one span named ``chat {model}``, kind CLIENT, with
the attributes of the OpenTelemetry semantic conventions for generative AI's *inference*
span: ``gen_ai.operation.name`` (``chat``), ``gen_ai.provider.name`` (and the older
``gen_ai.system``, for backends still on conventions 1.36 or before), ``gen_ai.request.model``,
``gen_ai.request.temperature`` / ``max_tokens`` / ``top_p`` / ``seed`` when set,
``gen_ai.response.model``, ``gen_ai.response.id``, ``gen_ai.response.finish_reasons``,
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``, ``gen_ai.conversation.id``
(the chat thread), ``server.address`` / ``server.port`` and, for a failed call,
``error.type`` with an error status. Sources: "Semantic conventions for generative client AI
spans" (``docs/gen-ai/gen-ai-spans.md``, section Inference) and the GenAI attribute registry
(``docs/registry/attributes/gen-ai.md``) in https://github.com/open-telemetry/semantic-conventions
(status: Development). What the conventions do not cover is under ``opsbot.*``: the prompt
templates' SHA-256, the tools offered, the estimated cost, the request id and the step.
Prompts and completions are never put on spans (the conventions make that opt-in).

Export: :func:`spans_from_environment` uses the process's tracer provider when one is set
(e.g. by ``opentelemetry-instrument``); otherwise, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, it installs an SDK provider with a batching
OTLP/HTTP exporter configured by the standard ``OTEL_*`` variables (headers, timeout,
``OTEL_SERVICE_NAME``, default ``opsbot``). Without the packages, or with ``OTEL_SDK_DISABLED=true``,
nothing is exported and nothing else changes.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import structlog

from opsbot.intent.llmops import ModelCall

log = structlog.get_logger(__name__)

TRACER_NAME = "opsbot.llm"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

_installed: Any = None  # the provider spans_from_environment installed, once per process


def attributes(call: ModelCall) -> dict[str, Any]:
    """The span attributes of ``call`` (``gen_ai.*``, ``server.*``, ``error.type``, ``opsbot.*``)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": call.gen_ai_provider,
        "gen_ai.system": call.gen_ai_provider,
        "gen_ai.request.model": call.model,
        "gen_ai.usage.input_tokens": call.prompt_tokens,
        "gen_ai.usage.output_tokens": call.completion_tokens,
        "opsbot.request.id": call.request_id,
        "opsbot.llm.step": call.step,
        "opsbot.llm.tools": list(call.tools),
        "opsbot.llm.cost_usd": float(call.cost_usd),
    }
    for param in ("temperature", "max_tokens", "top_p", "seed"):
        value = call.params.get(param)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs[f"gen_ai.request.{param}"] = value
    if call.thread:
        attrs["gen_ai.conversation.id"] = call.thread
    if call.response_model:
        attrs["gen_ai.response.model"] = call.response_model
    if call.response_id:
        attrs["gen_ai.response.id"] = call.response_id
    if call.finish_reason:
        attrs["gen_ai.response.finish_reasons"] = [call.finish_reason]
    for key, version in call.templates.items():
        attrs[f"opsbot.prompt.{key}.template"] = version.get("template", "")
        attrs[f"opsbot.prompt.{key}.sha256"] = version.get("sha256", "")
    if call.endpoint:
        parts = urlsplit(call.endpoint)
        if parts.hostname:
            attrs["server.address"] = parts.hostname
            port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
            if port:
                attrs["server.port"] = port
    if call.error:
        attrs["error.type"] = call.error_type or "_OTHER"
    return attrs


class GenAISpans:
    """Emits one span per :class:`ModelCall` on ``provider`` (the global one when None)."""

    def __init__(self, provider: Any = None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.tracer = trace.get_tracer(TRACER_NAME, tracer_provider=provider)

    def __call__(self, call: ModelCall) -> None:
        start = int(call.started * 1e9)
        span = self.tracer.start_span(
            f"chat {call.model}",
            kind=self._trace.SpanKind.CLIENT,
            start_time=start,
            attributes=attributes(call),
        )
        if call.error:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, call.error))
        span.end(end_time=start + int(call.latency_s * 1e9))


def otlp_provider() -> Any:
    """An SDK tracer provider exporting to the OTLP/HTTP endpoint of the ``OTEL_*`` variables."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = os.environ.get("OTEL_SERVICE_NAME") or "opsbot"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def spans_from_environment() -> GenAISpans | None:
    """GenAI spans on the process's tracer provider, or on an OTLP exporter when the OTLP
    endpoint variables are set; None when OpenTelemetry is not installed or not wanted."""
    global _installed
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    if _installed is not None:
        return GenAISpans(_installed)
    configured = type(trace.get_tracer_provider()).__name__ not in (
        "ProxyTracerProvider",
        "NoOpTracerProvider",
    )
    if configured:
        return GenAISpans()
    if not any(os.environ.get(v) for v in ENDPOINT_VARIABLES):
        return None
    try:
        _installed = otlp_provider()
    except ImportError as exc:
        log.warning("otel.unavailable", error=str(exc), hint="pip install 'opsbot[otel]'")
        return None
    trace.set_tracer_provider(_installed)
    return GenAISpans(_installed)
