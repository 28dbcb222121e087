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
import re
import time
from collections.abc import Mapping, Sequence
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
from opsbot.conversations import Conversations, Turn
from opsbot.intent import arguments, llmops, otel
from opsbot.intent import extract as ex
from opsbot.intent.base import Planner, ToolRunner
from opsbot.intent.offline import OfflineRouter
from opsbot.intent.templates import Prompts, default_prompts
from opsbot.intent.templates import tool_name as tool_name
from opsbot.model import Answer, Invocation, Plan, Request, Run
from opsbot.redact import redact
from opsbot.skills.base import Risk, Skill
from opsbot.store import UsageRow, now
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
    #: the model asked for the rest of the catalog (:data:`MORE_TOOLS`)
    wants_more: bool = False
    #: read tools that ran, and whether each succeeded (for answering from the result)
    ran: list[tuple[Skill[Any, Any], bool]] = field(default_factory=list)

    def give_up(self, problem: str) -> None:
        self.problems.append(problem)
        self.gave_up = True


#: the tool that asks for the rest of the catalog: the model is offered the skills the router
#: ranks first for the request (``OPSBOT_LLM_TOOLS``) and this
MORE_TOOLS = "more_tools"
MORE_TOOLS_DEFINITION: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": MORE_TOOLS,
        "description": "List the other tools you may call here (when none of these fits); "
        "they are offered from the next call on",
        "parameters": {"type": "object", "properties": {}},
    },
}
#: first words of a plain listing ("show firing alerts", "list pods in shop"): the tool's
#: result is the whole answer, so no second model call is made to repeat it
LISTING_VERBS = frozenset({"show", "list", "get", "display", "print", "fetch", "give"})
_WORDS = re.compile(r"[a-z0-9'_.-]+")


def plain_listing(text: str) -> bool:
    """Whether ``text`` only asks to see something: one clause that opens with a listing
    verb, no question ("show firing alerts"; not "anything wrong with the pods?", "show the
    pods and tell me why they restart")."""
    if "?" in text or any(mark in text for mark in (",", ";", "\n")):
        return False
    words = _WORDS.findall(text.lower())
    while words and words[0] in ("please", "pls", "just", "now", "ok", "okay", "opsbot"):
        words = words[1:]
    if not words or words[0] not in LISTING_VERBS:
        return False
    return not {"and", "why", "explain", "then", "but", "if", "whether"} & set(words)


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
        #: usage of requests in flight, recorded at their end (:meth:`_settle`)
        self._pending: dict[str, list[UsageRow]] = {}
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
        finally:
            await self._settle(request)

    async def _over_budget(self, actor: str) -> str | None:
        team, own = await self.ledger.totals(actor)  # one query for both budgets
        if team >= self.settings.llm_daily_tokens:
            return (
                f"The team's daily model budget ({self.settings.llm_daily_tokens} tokens) is used up; "
                "ask again tomorrow, or use exact commands (the offline router needs no model)."
            )
        if own >= self.settings.llm_user_daily_tokens:
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
        by_tool = {tool_name(s.name): s for s in catalog}  # any of them may be called
        offered = self._offered(text, catalog)
        definitions = self.prompts.tool_definitions(offered)
        if len(offered) < len(catalog):
            definitions.append(MORE_TOOLS_DEFINITION)
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
                if call.get("name") == MORE_TOOLS:
                    run.wants_more = True
                    messages.append(
                        ToolMessage(
                            content=self._more(offered, catalog),
                            tool_call_id=call.get("id") or "call",
                        )
                    )
                    continue
                reply, routed = await self._tool_call(
                    call, by_tool, request, tools, run, rationale=_text(ai)
                )
                if routed is not None:  # routing only (eval): the first call is the plan
                    return Run(invocations=[routed], planner=self.name, usage=usage.__dict__)
                messages.append(ToolMessage(content=reply, tool_call_id=call.get("id") or "call"))
            if run.wants_more and len(offered) < len(catalog):
                offered = list(catalog)
                definitions = self.prompts.tool_definitions(offered)
            if run.gave_up:
                break
            if self._answered_by_result(text, ai, run):
                await self._remember(
                    request, text, f"(answered with the result of {run.ran[0][0].name})", []
                )
                # the result is in the thread already: it is the answer, no model call repeats it
                return Answer(text="", planner=self.name, usage=usage.__dict__)
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

    def _offered(self, text: str, catalog: Sequence[Skill[Any, Any]]) -> list[Skill[Any, Any]]:
        """The skills offered to the model with their schemas: at most ``llm_tools``, those the
        offline router scores for ``text``, best first, then the read skills of their
        backends (the rest are a :data:`MORE_TOOLS` call away); in catalog order, so the
        same request sends the same prompt. All of them with ``llm_tools`` 0 or a fallback
        that does not rank."""
        keep = self.settings.llm_tools
        router = self.fallback
        if keep <= 0 or len(catalog) <= keep or not isinstance(router, OfflineRouter):
            return list(catalog)
        ranked = router.rank(ex.parse(text[:MAX_REQUEST_CHARS]), catalog)
        chosen = [r.skill.name for r in ranked if r.score > 0][:keep]
        registry = self.services.registry
        near = {registry.backend_of(name).name for name in chosen if name in registry}
        for skill in catalog:  # then the reads of the same backends, to look around with
            if len(chosen) >= keep:
                break
            if (
                skill.name not in chosen
                and skill.risk is Risk.READ
                and skill.name in registry
                and registry.backend_of(skill.name).name in near
            ):
                chosen.append(skill.name)
        return [s for s in catalog if s.name in chosen]

    @staticmethod
    def _more(offered: Sequence[Skill[Any, Any]], catalog: Sequence[Skill[Any, Any]]) -> str:
        shown = {s.name for s in offered}
        rest = [
            f"{tool_name(s.name)}: {s.summary} [{s.risk.value}]"
            for s in catalog
            if s.name not in shown
        ]
        return "These tools are offered from now on:\n" + "\n".join(rest or ["(no other)"])

    @staticmethod
    def _answered_by_result(text: str, ai: AIMessage, run: _Run) -> bool:
        """The request only asked to see something and the model made exactly one read call
        for it, which succeeded: the result posted in the thread is the answer."""
        return (
            len(ai.tool_calls) == 1
            and not ai.invalid_tool_calls
            and len(run.ran) == 1
            and run.ran[0][1]
            and not run.proposals
            and not run.problems
            and plain_listing(text)
        )

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
            invocation = await self._ground(skill, invocation, args)
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
        run.ran.append((skill, output.startswith("ok:")))
        run.evidence.append(wording.describe(invocation))
        return fence(skill.name, output[:MAX_TOOL_OUTPUT_CHARS]), None

    async def _ground(
        self, skill: Skill[Any, Any], invocation: Invocation, said: Mapping[str, Any]
    ) -> Invocation:
        """Replace near-miss names with what the backends have; refuse names nothing has.
        The argument pipeline the offline router uses (:func:`opsbot.intent.arguments.
        ground`): each ``Grounded`` argument of the skill's ``Args``, by its declared kind
        (``said``: the model's arguments before defaults; a workload it names without a
        kind is the kind the inventory has it as)."""
        if not arguments.grounds(skill):  # nothing to ground: the inventory is not asked
            return invocation
        inventory = await self.services.inventory.snapshot()
        args, problems = arguments.ground(skill, invocation.args, inventory, said)
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
        self._usage_rows(request).append(
            UsageRow(
                at=now(),
                actor=request.actor.id,
                request_id=request.id,
                model=usage.model,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=cost,
            )
        )
        return prompt, completion, cost

    def _usage_rows(self, request: Request) -> list[UsageRow]:
        """This request's model calls not yet in the ledger (written once, at its end)."""
        return self._pending.setdefault(request.id, [])

    async def _settle(self, request: Request) -> None:
        """The request's usage into the ledger, in one transaction."""
        await self.ledger.record_all(self._pending.pop(request.id, []))

    async def _remember(
        self, request: Request, text: str, answer: str, proposals: list[Invocation]
    ) -> None:
        proposed = "".join(f"\n[proposed for approval: {wording.describe(p)}]" for p in proposals)
        await self.conversations.add_turns(
            request.thread_key,
            [
                Turn("user", text[:MAX_REQUEST_CHARS]),
                Turn("assistant", redact(answer) + proposed),
            ],
        )


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
