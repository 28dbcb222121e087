"""Record a model's answers once, re-score them offline (``opsbot eval --record / --replay``).

A team with a real model runs ``opsbot eval DATASET --planner llm --record FILE`` once: every
model response of every case is kept in FILE. ``opsbot eval DATASET --planner llm --replay
FILE`` then routes the same cases with no model and no network: a :class:`ReplayModel` (a
LangChain chat model) answers each call of the planner with the next recorded response of
that case, and the planner runs its real code on it: LangChain's parsing of the raw tool-call
arguments (malformed JSON becomes an invalid tool call, as with the OpenAI client), the
planner's argument validation and grounding, its retry of an invalid call, its budgets. A
change to the planner's validation, to the skills' ``Args`` or to the router is re-scored on
the recorded answers (the way HolmesGPT's evals keep recorded tool outputs); a change to the
prompts is not (the answers are the old prompt's: the replay says so).

The file (JSON, ``format: opsbot-llm-recording/1``)::

    {
      "format": "opsbot-llm-recording/1",
      "recorded_at": "2025-01-31T12:00:00+00:00",
      "dataset": "eval/routing-dev.yaml",
      "provider": "openai", "model": "gpt-4o-mini",
      "params": {"temperature": 0.0, "timeout_s": 30.0, ...},
      "templates": {"system": {"template": "system.md.j2", "sha256": "..."},
                    "tools": {"template": "tools.json.j2", "sha256": "..."}},
      "cases": [
        {"actor": "shell:alice", "text": "restart checkout in shop",
         "responses": [
           {"content": "",
            "tool_calls": [{"id": "call_1", "name": "k8s__restart",
                            "arguments": "{\\"name\\": \\"checkout\\", \\"namespace\\": \\"shop\\"}"}],
            "prompt_tokens": 912, "completion_tokens": 31,
            "response_model": "gpt-4o-mini-2024-07-18", "response_id": "chatcmpl-...",
            "finish_reason": "tool_calls", "latency_s": 0.84}
         ]}
      ]
    }

``arguments`` is the raw JSON text the model sent (kept as sent, malformed or not); a call
that failed (rate limited past its retries, timed out) is ``{"error": "...", "error_type":
"..."}`` and replays as an unavailable model (the offline router answers, as it did). Cases
are matched by actor and text (the n-th occurrence of a repeated case by the n-th
recording). A case the recording lacks, or a planner that asks for more responses than were
recorded, raises :class:`ReplayMismatch`: the eval reports that case as a miss.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

from opsbot.intent.base import Planner, ToolRunner
from opsbot.intent.llm import LLMUnavailable
from opsbot.intent.llmops import ModelCall
from opsbot.model import Plan, Request
from opsbot.skills.base import Skill

FORMAT = "opsbot-llm-recording/1"


class ReplayMismatch(RuntimeError):
    """The recording holds no (more) responses for what the planner asks now."""


class ReplayedFailure(LLMUnavailable):
    """A recorded failed call, replayed: the planner treats it as an unavailable model."""


class Recording:
    """The responses of a model per eval case: being recorded, or loaded to replay."""

    def __init__(self, meta: dict[str, Any] | None = None, *, replaying: bool = False) -> None:
        self.meta: dict[str, Any] = dict(meta or {})
        self.cases: list[dict[str, Any]] = list(self.meta.pop("cases", []))
        self.replaying = replaying
        self._current: dict[str, Any] | None = None
        self._cursor = 0
        self._seen: dict[tuple[str, str], int] = {}
        self.short: list[str] = []  # cases that replayed fewer responses than were recorded

    # -- files ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> Recording:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a recording: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a recording (no 'format: {FORMAT}')")
        cases = data.get("cases")
        if not isinstance(cases, list) or not all(
            isinstance(c, dict) and isinstance(c.get("responses"), list) for c in cases
        ):
            raise ValueError(f"{path}: 'cases' must be a list of {{actor, text, responses}}")
        return cls(data, replaying=True)

    def save(self, path: Path) -> None:
        body = {
            "format": FORMAT,
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **{k: v for k, v in self.meta.items() if k not in ("format", "recorded_at")},
            "cases": self.cases,
        }
        path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")

    # -- both ways -----------------------------------------------------------------------

    def start(self, actor: str, text: str) -> None:
        """The next model calls belong to this case."""
        self._finish_case()
        key = (actor, text)
        nth = self._seen.get(key, 0)
        self._seen[key] = nth + 1
        self._cursor = 0
        if not self.replaying:
            self._current = {"actor": actor, "text": text, "responses": []}
            self.cases.append(self._current)
            return
        matching = [c for c in self.cases if (c.get("actor"), c.get("text")) == key]
        self._current = matching[nth] if nth < len(matching) else None

    def finish(self) -> None:
        self._finish_case()

    def _finish_case(self) -> None:
        current = self._current
        if self.replaying and current is not None and self._cursor < len(current["responses"]):
            self.short.append(str(current.get("text", "")))
        self._current = None

    # -- recording -----------------------------------------------------------------------

    def observe(self, call: ModelCall) -> None:
        """An observer of the LLM planner: keeps each response of the current case."""
        if self.replaying or self._current is None:
            return
        if not self.meta.get("model"):
            self.meta.update(provider=call.provider, model=call.model, params=call.params)
            self.meta["templates"] = call.templates
        self._current["responses"].append(_response_of(call))

    # -- replaying -----------------------------------------------------------------------

    def next(self) -> dict[str, Any]:
        if self._current is None:
            raise ReplayMismatch("the recording has no responses for this case")
        responses = self._current["responses"]
        if self._cursor >= len(responses):
            raise ReplayMismatch(
                f"the planner asked for model response {self._cursor + 1}; "
                f"{len(responses)} were recorded for this case"
            )
        response: dict[str, Any] = responses[self._cursor]
        self._cursor += 1
        return response

    def drift(self, templates: dict[str, dict[str, str]]) -> list[str]:
        """How this build's prompt templates differ from those the answers were given to."""
        recorded: dict[str, dict[str, str]] = self.meta.get("templates") or {}
        notes = []
        for key, now in templates.items():
            then = recorded.get(key, {})
            if then.get("sha256") and then.get("sha256") != now.get("sha256"):
                notes.append(
                    f"{now.get('template')} changed since the recording "
                    f"({then.get('sha256', '')[:12]} -> {now.get('sha256', '')[:12]}): "
                    "the replayed answers were given to the old prompt"
                )
        return notes


def _response_of(call: ModelCall) -> dict[str, Any]:
    if call.error or call.response is None:
        return {"error": call.error or "no response", "error_type": call.error_type}
    ai = call.response
    content = ai.content
    if isinstance(content, list):
        content = " ".join(
            str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content
        )
    calls = [
        {"id": c.get("id") or "", "name": c["name"], "arguments": json.dumps(c["args"])}
        for c in ai.tool_calls
    ] + [
        {"id": c.get("id") or "", "name": c.get("name") or "", "arguments": c.get("args") or ""}
        for c in ai.invalid_tool_calls
    ]
    return {
        "content": str(content or ""),
        "tool_calls": calls,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "response_model": call.response_model,
        "response_id": call.response_id,
        "finish_reason": call.finish_reason,
        "latency_s": round(call.latency_s, 4),
    }


def to_message(response: dict[str, Any]) -> AIMessage:
    """A recorded response as the AIMessage a provider's client would have built: the raw
    ``arguments`` go through LangChain's own tool-call parser (invalid JSON -> an invalid
    tool call, as ``langchain_openai`` does with a live response)."""
    if response.get("error"):
        raise ReplayedFailure(str(response["error"]))
    tool_calls, invalid = [], []
    for raw in response.get("tool_calls") or []:
        wire = {
            "id": raw.get("id") or None,
            "type": "function",
            "function": {"name": raw.get("name", ""), "arguments": raw.get("arguments", "")},
        }
        try:
            parsed = parse_tool_call(wire, return_id=True)
        except OutputParserException as exc:
            invalid.append(make_invalid_tool_call(wire, str(exc)))
            continue
        if parsed:
            tool_calls.append(parsed)
    prompt, completion = (
        int(response.get("prompt_tokens", 0)),
        int(response.get("completion_tokens", 0)),
    )
    return AIMessage(
        content=str(response.get("content") or ""),
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
        usage_metadata=UsageMetadata(
            input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion
        ),
        response_metadata={
            "model_name": response.get("response_model", ""),
            "finish_reason": response.get("finish_reason", ""),
            "id": response.get("response_id", ""),
        },
    )


class ReplayModel(BaseChatModel):
    """A chat model that answers with a :class:`Recording`'s responses, in order."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    recording: Recording
    model_name: str = "replay"
    temperature: float | None = None
    max_tokens: int | None = None

    @classmethod
    def of(cls, recording: Recording) -> ReplayModel:
        params: dict[str, Any] = recording.meta.get("params") or {}
        return cls(
            recording=recording,
            model_name=str(recording.meta.get("model") or "replay"),
            temperature=params.get("temperature"),
            max_tokens=params.get("max_tokens"),
        )

    @property
    def _llm_type(self) -> str:
        return "opsbot-replay"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=list(tools), **kwargs)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_model_name"] = self.model_name
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        return params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=to_message(self.recording.next()))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop, **kwargs)


class Taped:
    """A planner whose model calls are told which eval case they belong to."""

    def __init__(self, planner: Planner, recording: Recording) -> None:
        self.planner = planner
        self.recording = recording
        self.name = planner.name

    async def plan(
        self, request: Request, catalog: Sequence[Skill[Any, Any]], tools: ToolRunner | None = None
    ) -> Plan:
        self.recording.start(request.actor.id, request.text)
        return await self.planner.plan(request, catalog, tools)

    async def explain(self, request: Request, withheld: Sequence[Skill[Any, Any]]) -> str | None:
        return await self.planner.explain(request, withheld)
