"""A local OpenAI-compatible chat-completions server, scripted per test.

It speaks the wire format of ``POST /v1/chat/completions`` and ``GET /v1/models`` (OpenAI API
reference), so the real ``openai`` SDK and LangChain's ``ChatOpenAI`` talk to it over HTTP.
Each incoming completion request takes the next scripted step:

- :func:`reply` — an assistant message with text and/or tool calls (``tool_calls`` given as
  ``(name, arguments)``; ``arguments`` a dict, or a str sent verbatim, e.g. malformed JSON);
- :func:`status` — an HTTP error (``429`` with ``Retry-After``, ``500``...);
- :func:`stall` — no answer for ``seconds`` (a timeout on the client side).

Every request body is recorded in ``requests`` for assertions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Step:
    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 20


def reply(
    content: str | None = None,
    *calls: tuple[str, dict[str, Any] | str],
    prompt_tokens: int = 0,
    completion_tokens: int = 20,
) -> Step:
    return Step(
        content=content,
        tool_calls=list(calls),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def call(name: str, arguments: dict[str, Any] | str) -> tuple[str, dict[str, Any] | str]:
    return name, arguments


def status(code: int, retry_after: float | None = None) -> Step:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return Step(status=code, headers=headers)


def stall(seconds: float) -> Step:
    return Step(delay=seconds)


class FakeOpenAI:
    """``async with FakeOpenAI() as server: server.script(...)``; ``server.base_url`` is the
    value for ``OPENAI_BASE_URL``."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def script(self, *steps: Step) -> None:
        self.steps.extend(steps)

    @property
    def completions(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if "messages" in r]

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "fake-model", "object": "model", "created": 0, "owned_by": "tests"}
                ],
            }
        )

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if not self.steps:
            return web.json_response(
                {"error": {"message": "no scripted step left", "type": "server_error"}}, status=500
            )
        step = self.steps.pop(0)
        if step.delay:
            await asyncio.sleep(step.delay)
        if step.status != 200:
            return web.json_response(
                {
                    "error": {
                        "message": f"scripted {step.status}",
                        "type": "rate_limit_error" if step.status == 429 else "server_error",
                        "code": None,
                        "param": None,
                    }
                },
                status=step.status,
                headers=step.headers,
            )
        tool_calls = [
            {
                "id": f"call_{next(self._ids)}",
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
            for name, args in step.tool_calls
        ]
        message: dict[str, Any] = {"role": "assistant", "content": step.content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        prompt = step.prompt_tokens or len(json.dumps(body)) // 4
        return web.json_response(
            {
                "id": f"chatcmpl-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if tool_calls else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": step.completion_tokens,
                    "total_tokens": prompt + step.completion_tokens,
                },
            }
        )
