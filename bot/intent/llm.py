"""The LLM planner: tool calling over the skills this actor may use, through LangChain.

One request is a bounded loop (``llm_max_steps`` model calls, ``llm_request_tokens`` tokens):
the model sees only the permitted skills as tools (``Args`` JSON schema + summary; tool name
= skill name with ``.`` as ``__``), may call read skills — which the engine runs (policy,
audit, thread message) and whose bounded, redacted output comes back fenced as untrusted
data — and ends with a short answer citing its evidence. Write and dangerous skills are
never run in the loop: a call becomes a proposal that the engine puts through policy and
human approval, with the model's rationale.

Arguments are validated by the skill's model and grounded against the inventory; an invalid
call is returned to the model once with the error, then reported. Unknown tool names are
refused and audited. Calls are retried with backoff on 429/5xx/timeouts (tenacity, honouring
``Retry-After``); a model that stays unreachable makes the offline router answer instead,
with a note saying so. Token usage and estimated cost are recorded per call.

Governance (:mod:`opsbot.intent.llmops`): the system prompt and the tool definitions are
rendered from versioned template files (:mod:`opsbot.intent.templates`), and every model call,
answered or failed, is an ``llm.call`` audit record naming the model and its parameters, the
templates' SHA-256, the tools offered, a digest of the messages, tokens, cost and latency; the
same call is a GenAI span when OpenTelemetry export is on (:mod:`opsbot.intent.otel`) and a
recorded response when the eval records (:mod:`opsbot.intent.recording`).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import openai
import structlog
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base

from opsbot import telemetry, wording
from opsbot.audit import AuditEvent
from opsbot.config import Settings
from opsbot.conversations import Conversations
from opsbot.intent import arguments, llmops, otel
from opsbot.intent.base import Planner, ToolRunner
from opsbot.intent.templates import Prompts, default_prompts
from opsbot.intent.templates import tool_name as tool_name
from opsbot.model import Answer, Invocation, Plan, Request, Run
from opsbot.redact import redact
from opsbot.skills.base import Risk, Skill
from opsbot.usage import Usage, UsageLedger, price

log = structlog.get_logger(__name__)

MAX_REQUEST_CHARS = 4000
MAX_TOOL_OUTPUT_CHARS = 3000
RETRYABLE = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APIConnectionError,
    openai.APITimeoutError,
    TimeoutError,
)
PROVIDERS = {
    "openai": ("langchain_openai", "ChatOpenAI"),
    "azure_openai": ("langchain_openai", "AzureChatOpenAI"),
    "anthropic": ("langchain_anthropic", "ChatAnthropic"),
    "ollama": ("langchain_ollama", "ChatOllama"),
    "google": ("langchain_google_genai", "ChatGoogleGenerativeAI"),
    "mistral": ("langchain_mistralai", "ChatMistralAI"),
}


@dataclass
class _Run:
    """What one request's loop has gathered so far."""

    proposals: list[Invocation] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    retried: set[str] = field(default_factory=set)
    gave_up: bool = False

    def give_up(self, problem: str) -> None:
        self.problems.append(problem)
        self.gave_up = True


class LLMUnavailable(RuntimeError):
    """The model cannot be used (not installed, misconfigured, unreachable)."""


def tool_definitions(catalog: Sequence[Skill[Any, Any]]) -> list[dict[str, Any]]:
    """OpenAI function-tool definitions of ``catalog`` (titles stripped to save tokens), as the
    package's ``tools.json.j2`` renders them."""
    return default_prompts().tool_definitions(catalog)


def fence(source: str, text: str) -> str:
    """Label ``text`` as untrusted data; its own fence markers are neutralised."""
    body = redact(text).replace("<data", "&lt;data").replace("</data>", "&lt;/data&gt;")
    return f'<data source="{source}" trust="untrusted">\n{body}\n</data>'


def make_chat_model(settings: Settings) -> BaseChatModel:
    """The LangChain chat model for ``OPSBOT_LLM_PROVIDER``; raises :class:`LLMUnavailable`."""
    module_name, class_name = PROVIDERS.get(settings.llm_provider, ("", ""))
    if not module_name:
        raise LLMUnavailable(
            f"unknown OPSBOT_LLM_PROVIDER {settings.llm_provider!r} (one of {', '.join(PROVIDERS)})"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise LLMUnavailable(
            f"provider {settings.llm_provider} needs the package {module_name.replace('_', '-')}"
        ) from exc
    if settings.llm_provider in ("openai", "azure_openai"):
        model: BaseChatModel = cls(
            model=settings.llm_model,
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key or "not-needed",
            timeout=settings.llm_timeout,
            max_retries=0,
            temperature=0,
        )
    else:
        model = cls(model=settings.llm_model)
    return model


class _WaitRetryAfter(wait_base):
    """Exponential backoff (0.25 s, 0.5 s, ... up to 8 s), or the server's ``Retry-After``."""

    def __call__(self, retry_state: Any) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        response = getattr(exc, "response", None)
        header = response.headers.get("retry-after") if response is not None else None
        if header:
            try:
                return min(float(header), 10.0)
            except ValueError:
                pass
        return float(min(8.0, 0.25 * 2 ** (retry_state.attempt_number - 1)))


class LLMPlanner:
    name = "llm"

    def __init__(
        self,
        services: Any,
        fallback: Planner,
        model: BaseChatModel | None = None,
        *,
        prompts: Prompts | None = None,
        observers: Sequence[llmops.Observer] = (),
        tracer_provider: Any = None,
    ) -> None:
        """``prompts``: the templates (the package's by default); ``observers``: told of every
        model call after the audit log; ``tracer_provider``: an OpenTelemetry provider for the
        GenAI spans (default: the process's, or OTLP when its variables are set; none without
        the ``otel`` extra)."""
        self.services = services
        self.settings: Settings = services.settings
        self.fallback = fallback
        self.model = model or make_chat_model(self.settings)
        self.ledger = UsageLedger(services.store)
        self.conversations = Conversations(services.store)
        self.prompts = prompts or default_prompts()
        self.params = llmops.model_params(self.model, self.settings)
        spans = (
            otel.GenAISpans(tracer_provider)
            if tracer_provider is not None
            else otel.spans_from_environment()
        )
        self.observers: list[llmops.Observer] = [*([spans] if spans else []), *observers]

    async def check(self) -> str | None:
        """None when the model endpoint answers; else why not (shown at start)."""
        try:
            await self._call([HumanMessage("ping")], tools=[], attempts=1)
        except Exception as exc:
            return f"the model {self.settings.llm_model} at {self.settings.openai_base_url or 'the default endpoint'} is not usable: {why(exc)}"
        return None

    async def _call(
        self, messages: list[BaseMessage], tools: list[dict[str, Any]], attempts: int | None = None
    ) -> AIMessage:
        bound = self.model.bind_tools(tools) if tools else self.model
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts or self.settings.llm_retries + 1),
            wait=_WaitRetryAfter(),
            retry=retry_if_exception_type(RETRYABLE),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    telemetry.LLM_RETRIES.inc()
                result = await asyncio.wait_for(
                    bound.ainvoke(messages), self.settings.llm_timeout + 5
                )
        assert isinstance(result, AIMessage)
        return result

    # -- the loop --------------------------------------------------------------------------

    async def explain(self, request: Request, withheld: Sequence[Skill[Any, Any]]) -> str | None:
        """Refusals are explained by the offline router, as when the model is down."""
        return await self.fallback.explain(request, withheld)

    async def plan(
        self, request: Request, catalog: Sequence[Skill[Any, Any]], tools: ToolRunner | None = None
    ) -> Plan:
        text = request.text.strip()
        if not text:
            return Answer(text=wording.EMPTY, planner=self.name)
        budget_note = await self._over_budget(request.actor.id)
        if budget_note:
            return Answer(text=budget_note, planner=self.name)
        try:
            return await self._loop(request, text, catalog, tools)
        except (openai.OpenAIError, LLMUnavailable, TimeoutError) as exc:
            telemetry.LLM_FALLBACKS.inc()
            log.warning("llm.fallback", error=str(exc)[:300])
            plan = await self.fallback.plan(request, catalog)
            plan.notes.insert(
                0,
                f"The model is unavailable ({why(exc)}); the offline router answered instead.",
            )
            return plan

    async def _over_budget(self, actor: str) -> str | None:
        if await self.ledger.tokens() >= self.settings.llm_daily_tokens:
            return (
                f"The team's daily model budget ({self.settings.llm_daily_tokens} tokens) is used up; "
                "ask again tomorrow, or use exact commands (the offline router needs no model)."
            )
        if await self.ledger.tokens(actor=actor) >= self.settings.llm_user_daily_tokens:
            return (
                f"Your daily model budget ({self.settings.llm_user_daily_tokens} tokens) is used up; "
                "exact commands still work through the offline router."
            )
        return None

    async def _history(self, thread: str) -> list[BaseMessage]:
        turns = await self.conversations.history(thread, self.settings.llm_history_turns)
        if not turns:
            return []
        transcript = "\n".join(
            f"{'user' if t.role == 'user' else 'opsbot'}: {t.content}" for t in turns
        )
        return [
            HumanMessage(
                content="Earlier in this thread (context only):\n"
                + fence("thread-history", transcript)
            )
        ]

    async def _loop(
        self,
        request: Request,
        text: str,
        catalog: Sequence[Skill[Any, Any]],
        tools: ToolRunner | None,
    ) -> Plan:
        by_tool = {tool_name(s.name): s for s in catalog}
        definitions = self.prompts.tool_definitions(catalog)
        truncated = len(text) > MAX_REQUEST_CHARS
        messages: list[BaseMessage] = [
            SystemMessage(content=self.prompts.system_prompt()),
            *await self._history(request.thread_key),
            HumanMessage(
                content=f"{request.actor.label} asks: {text[:MAX_REQUEST_CHARS]}"
                + (" [message truncated]" if truncated else "")
            ),
        ]
        usage = Usage(
            model=self.settings.llm_model or "",
            prompt_sha256=self.prompts.system.sha256,
            tools_sha256=self.prompts.tools.sha256,
        )
        run = _Run()
        final = ""
        for step in range(1, self.settings.llm_max_steps + 1):
            if usage.total_tokens >= self.settings.llm_request_tokens:
                run.give_up(
                    f"stopped at the per-request token budget ({self.settings.llm_request_tokens})"
                )
                break
            ai = await self._model_call(messages, definitions, usage, request, step)
            messages.append(ai)
            if not ai.tool_calls and not ai.invalid_tool_calls:
                final = _text(ai)
                break
            for bad in ai.invalid_tool_calls:
                key = f"json:{bad.get('name')}"
                if key in run.retried:
                    run.give_up(f"the model sent malformed arguments for {bad.get('name')} twice")
                    content = "error: malformed arguments again; giving up on this call"
                else:
                    run.retried.add(key)
                    content = (
                        f"error: the arguments are not valid JSON ({str(bad.get('error', ''))[:200]}). "
                        "Call again with valid JSON."
                    )
                messages.append(
                    ToolMessage(content=content, tool_call_id=bad.get("id") or "invalid")
                )
            for call in ai.tool_calls:
                reply, routed = await self._tool_call(
                    call, by_tool, request, tools, run, rationale=_text(ai)
                )
                if routed is not None:  # routing only (eval): the first call is the plan
                    return Run(invocations=[routed], planner=self.name, usage=usage.__dict__)
                messages.append(ToolMessage(content=reply, tool_call_id=call.get("id") or "call"))
            if run.gave_up:
                break
        else:
            run.problems.append(
                f"stopped after {self.settings.llm_max_steps} model calls (the step budget)"
            )
        if final:
            answer = final + (f"\n({'; '.join(run.problems)})" if run.problems else "")
            if run.evidence:
                answer += "\nEvidence: " + "; ".join(run.evidence[:8])
        elif run.problems:
            answer = "I could not finish: " + "; ".join(run.problems)
        else:
            answer = "The model gave no answer; try rephrasing."
        await self._remember(request, text, answer, run.proposals)
        if run.proposals:
            return Run(
                invocations=run.proposals,
                text=redact(answer),
                planner=self.name,
                usage=usage.__dict__,
            )
        return Answer(text=redact(answer), planner=self.name, usage=usage.__dict__)

    async def _tool_call(
        self,
        call: Any,
        by_tool: dict[str, Skill[Any, Any]],
        request: Request,
        tools: ToolRunner | None,
        run: _Run,
        rationale: str,
    ) -> tuple[str, Invocation | None]:
        """Handle one tool call: (text for the model, or the invocation when only routing)."""
        name = str(call.get("name", ""))
        skill = by_tool.get(name)
        if skill is None:
            await self.services.audit.append(
                AuditEvent.POLICY,
                actor=request.actor.id,
                channel=request.channel,
                thread=request.thread_key,
                request_id=request.id,
                skill=name[:100],
                args=call.get("args") or {},
                outcome="deny",
                detail="the model called a tool it was not given (refused)",
            )
            run.problems.append(f"refused unknown tool {name!r}")
            return f"error: there is no tool {name!r}. Use only the tools you were given.", None
        args = dict(call.get("args") or {})
        try:
            invocation = Invocation(
                skill=skill.name, args=arguments.validate(skill, args), rationale=rationale[:500]
            )
            invocation = await self._ground(skill, invocation)
        except (ValidationError, ValueError) as exc:
            detail = _validation_text(exc)
            if skill.name in run.retried:
                run.give_up(f"invalid arguments for {skill.name}: {detail}")
                return "error: still invalid; giving up on this call", None
            run.retried.add(skill.name)
            return f"error: invalid arguments: {detail}. Fix them and call again.", None
        if tools is None:
            return "", invocation
        if skill.risk is not Risk.READ:
            if any(
                p.skill == invocation.skill and p.args == invocation.args for p in run.proposals
            ):
                return "Already submitted for approval; do not call it again.", None
            run.proposals.append(invocation)
            return (
                "Submitted to humans for approval; it runs only if they approve. Do not call it again; "
                "say in your answer why you proposed it."
            ), None
        output = await tools(invocation)
        run.evidence.append(wording.describe(invocation))
        return fence(skill.name, output[:MAX_TOOL_OUTPUT_CHARS]), None

    async def _ground(self, skill: Skill[Any, Any], invocation: Invocation) -> Invocation:
        """Replace near-miss names with what the backends have; refuse names nothing has.
        The argument pipeline the offline router uses (:func:`opsbot.intent.arguments.
        ground`): each ``Grounded`` argument of the skill's ``Args``, by its declared kind."""
        inventory = await self.services.inventory.snapshot()
        args, problems = arguments.ground(skill, invocation.args, inventory)
        if problems:
            raise ValueError("; ".join(problems))
        return invocation.model_copy(update={"args": args})

    async def _model_call(
        self,
        messages: list[BaseMessage],
        definitions: list[dict[str, Any]],
        usage: Usage,
        request: Request,
        step: int,
    ) -> AIMessage:
        """One model call, accounted, audited (``llm.call``) and told to the observers."""
        call = llmops.ModelCall(
            request_id=request.id,
            actor=request.actor.id,
            channel=request.channel,
            thread=request.thread_key,
            step=step,
            provider=self.settings.llm_provider,
            model=usage.model,
            endpoint=llmops.endpoint(self.settings.openai_base_url),
            params=self.params,
            templates=self.prompts.versions(),
            tools=[str(d.get("function", {}).get("name", "")) for d in definitions],
            messages=len(messages),
            input_sha256=llmops.digest(messages),
            started=time.time(),
        )
        started = time.monotonic()
        try:
            ai = await self._call(messages, definitions)
        except Exception as exc:
            call.latency_s = time.monotonic() - started
            call.error, call.error_type = why(exc), llmops.error_type(exc)
            await self._observe(call)
            raise
        call.latency_s = time.monotonic() - started
        call.prompt_tokens, call.completion_tokens, call.cost_usd = await self._account(
            usage, ai, call.latency_s, request
        )
        for key, value in llmops.response_facts(ai).items():
            setattr(call, key, value)
        call.response = ai
        await self._observe(call)
        return ai

    async def _observe(self, call: llmops.ModelCall) -> None:
        await self.services.audit.append(
            AuditEvent.LLM_CALL,
            actor=call.actor,
            channel=call.channel,
            thread=call.thread,
            request_id=call.request_id,
            args=call.audit_args(),
            outcome="error" if call.error else "ok",
            detail=call.describe(),
        )
        for observer in self.observers:
            try:
                result = observer(call)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # an exporter's trouble never fails a request
                log.warning("llm.observer_failed", observer=repr(observer), exc_info=True)

    async def _account(
        self, usage: Usage, ai: AIMessage, seconds: float, request: Request
    ) -> tuple[int, int, float]:
        meta: dict[str, Any] = dict(ai.usage_metadata or {})
        prompt, completion = int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0))
        cost = price(self.settings.llm_prices, usage.model, prompt, completion)
        usage.prompt_tokens += prompt
        usage.completion_tokens += completion
        usage.cost_usd += cost
        usage.latency_s += seconds
        usage.calls += 1
        telemetry.LLM_TOKENS.labels("prompt").inc(prompt)
        telemetry.LLM_TOKENS.labels("completion").inc(completion)
        telemetry.LLM_COST.inc(cost)
        telemetry.LLM_LATENCY.observe(seconds)
        await self.ledger.record(
            request.actor.id, request.id, usage.model, prompt, completion, cost
        )
        return prompt, completion, cost

    async def _remember(
        self, request: Request, text: str, answer: str, proposals: list[Invocation]
    ) -> None:
        await self.conversations.add(request.thread_key, "user", text[:MAX_REQUEST_CHARS])
        proposed = "".join(f"\n[proposed for approval: {wording.describe(p)}]" for p in proposals)
        await self.conversations.add(request.thread_key, "assistant", redact(answer) + proposed)


def why(exc: BaseException) -> str:
    """A short, human reason for a failed model call."""
    reasons: list[tuple[type[BaseException], str]] = [
        (openai.RateLimitError, "rate limited (429)"),
        (openai.APITimeoutError, "timed out"),
        (TimeoutError, "timed out"),
        (openai.APIConnectionError, "unreachable"),
        (openai.AuthenticationError, "the API key was rejected"),
        (openai.NotFoundError, "model or endpoint not found"),
        (openai.InternalServerError, "server error"),
    ]
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    return str(exc)[:200] if isinstance(exc, LLMUnavailable) else type(exc).__name__


def _text(ai: AIMessage) -> str:
    content = ai.content
    if isinstance(content, list):
        content = " ".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content
        )
    return str(content or "").strip()


def _validation_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return wording.validation_problems(exc, limit=400)
    return str(exc)[:400]
