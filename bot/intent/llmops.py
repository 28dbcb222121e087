"""What one model call was, for the audit log, the traces and recordings (LLMOps governance).

The LLM planner builds a :class:`ModelCall` after every call to the model, successful or not,
and hands it to its observers: the audit log (an ``llm.call`` record per call, written by the
planner), the OpenTelemetry spans of :mod:`opsbot.intent.otel` when enabled, and the eval's
recorder (:mod:`opsbot.intent.recording`). An auditor asking "which prompt, which model, what
did it see?" after a proposed rollback reads it there: the model and its parameters, the
versions (SHA-256) of the prompt templates, the tools offered, a digest of the messages sent,
tokens, cost, latency, what came back (finish reason, tools called) or why it failed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, messages_to_dict

from opsbot.config import Settings

#: OPSBOT_LLM_PROVIDER -> the ``gen_ai.provider.name`` value of the OpenTelemetry GenAI
#: conventions (their well-known values; ``ollama`` has none and keeps its own name)
GEN_AI_PROVIDERS = {
    "openai": "openai",
    "azure_openai": "azure.ai.openai",
    "anthropic": "anthropic",
    "google": "gcp.gemini",
    "mistral": "mistral_ai",
    "ollama": "ollama",
}


@dataclass
class ModelCall:
    """One call to the model (retries included) within one request's planning loop."""

    request_id: str
    actor: str
    channel: str
    thread: str
    step: int  # 1 for the request's first call
    provider: str  # OPSBOT_LLM_PROVIDER
    model: str  # the model asked for
    endpoint: str  # scheme://host[:port] of the API, '' for the provider's default
    params: dict[str, Any]
    templates: dict[str, dict[str, str]]  # Prompts.versions(): name and SHA-256 of each
    tools: list[str]  # the tool names offered
    messages: int  # how many messages were sent
    input_sha256: str  # digest of the messages sent (what the model saw)
    started: float  # epoch seconds
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    response_model: str = ""
    response_id: str = ""
    finish_reason: str = ""
    tool_calls: list[str] = field(default_factory=list)
    error: str = ""  # why the call failed (a short reason), '' when it answered
    error_type: str = ""  # the HTTP status, else the exception's class name
    response: AIMessage | None = None  # not audited: the recorder keeps it

    @property
    def gen_ai_provider(self) -> str:
        return GEN_AI_PROVIDERS.get(self.provider, self.provider)

    @property
    def prompt_version(self) -> str:
        system = self.templates.get("system", {})
        return f"{system.get('template', '?')}@{system.get('sha256', '')[:12]}"

    def audit_args(self) -> dict[str, Any]:
        """The ``args`` of the call's ``llm.call`` audit record."""
        args: dict[str, Any] = {
            "step": self.step,
            "provider": self.provider,
            "model": self.model,
            "endpoint": self.endpoint,
            "params": self.params,
            "prompt_template": self.templates.get("system", {}).get("template", ""),
            "prompt_sha256": self.templates.get("system", {}).get("sha256", ""),
            "tools_template": self.templates.get("tools", {}).get("template", ""),
            "tools_sha256": self.templates.get("tools", {}).get("sha256", ""),
            "tools": self.tools,
            "messages": self.messages,
            "input_sha256": self.input_sha256,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 8),
            "latency_s": round(self.latency_s, 4),
            "response_model": self.response_model,
            "response_id": self.response_id,
            "finish_reason": self.finish_reason,
            "tool_calls": self.tool_calls,
        }
        if self.error:
            args["error"] = self.error
            args["error_type"] = self.error_type
        return args

    def describe(self) -> str:
        what = (
            f"failed: {self.error}"
            if self.error
            else (
                f"called {', '.join(self.tool_calls)}"
                if self.tool_calls
                else f"answered ({self.finish_reason or 'stop'})"
            )
        )
        return (
            f"{self.model} call {self.step} with prompt {self.prompt_version}, "
            f"{len(self.tools)} tools offered: {what}; {self.prompt_tokens} prompt + "
            f"{self.completion_tokens} completion tokens, ~${self.cost_usd:.4f}, {self.latency_s:.2f}s"
        )


#: something told of every model call; may be a coroutine function
Observer = Callable[[ModelCall], Awaitable[None] | None]


def model_params(model: BaseChatModel, settings: Settings) -> dict[str, Any]:
    """The parameters a call is made with: the model's sampling settings (as LangChain reports
    them for any provider) and the planner's timeout, retries and budgets."""
    try:
        reported: dict[str, Any] = dict(model._get_ls_params())
    except Exception:  # a provider class that cannot say
        reported = {}
    params: dict[str, Any] = {}
    for key, name in (
        ("ls_temperature", "temperature"),
        ("ls_max_tokens", "max_tokens"),
        ("ls_stop", "stop"),
    ):
        if reported.get(key) is not None:
            params[name] = reported[key]
    for name in ("top_p", "seed", "frequency_penalty", "presence_penalty"):
        value = getattr(model, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            params[name] = value
    params.update(
        timeout_s=settings.llm_timeout,
        retries=settings.llm_retries,
        max_steps=settings.llm_max_steps,
        request_budget=settings.llm_request_tokens,
    )
    return params


def endpoint(base_url: str | None) -> str:
    """``scheme://host:port`` of the API (no path, no credentials); '' for the default."""
    if not base_url:
        return ""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def error_type(exc: BaseException) -> str:
    """A low-cardinality class of a failed call (OTel ``error.type``): the HTTP status the
    provider answered, else the exception's class name."""
    code = getattr(exc, "status_code", None)
    return str(code) if isinstance(code, int) else type(exc).__name__


def digest(messages: Sequence[BaseMessage]) -> str:
    """SHA-256 of the messages as LangChain serialises them (content, tool calls, ids)."""
    text = json.dumps(messages_to_dict(list(messages)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def response_facts(ai: AIMessage) -> dict[str, Any]:
    """The response model, id and finish reason as the provider reported them."""
    meta: dict[str, Any] = dict(ai.response_metadata or {})
    return {
        "response_model": str(meta.get("model_name") or meta.get("model") or ""),
        "response_id": str(
            meta.get("id") or ("" if (ai.id or "").startswith("lc_run") else ai.id) or ""
        ),
        "finish_reason": str(meta.get("finish_reason") or meta.get("stop_reason") or ""),
        "tool_calls": [str(c.get("name", "")) for c in ai.tool_calls]
        + [str(c.get("name") or "") for c in ai.invalid_tool_calls],
    }
