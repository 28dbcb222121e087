"""Secret redaction for anything that is logged, audited, posted or sent to a model.

Covers key=value secrets (``password=``, ``token:``, ``api_key``), ``Authorization: Bearer``
headers, URLs with credentials, and well-known token shapes (Slack ``xox*-``, GitHub
``ghp_``, OpenAI ``sk-``, AWS access keys, JWTs, PEM private keys).
"""

from __future__ import annotations

import re
from typing import Any

MASK = "[REDACTED]"

_SECRET_KEY = r"(?:pass(?:word|wd)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|auth)"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        MASK,
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), MASK),
    (re.compile(r"\bxapp-[A-Za-z0-9-]{10,}"), MASK),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), MASK),
    (re.compile(r"(?i)(://[^/\s:@]+:)[^@\s/]+@"), rf"\1{MASK}@"),
    (
        re.compile(rf"(?i)(\b[\w.-]*{_SECRET_KEY}[\w.-]*\"?\s*[=:]\s*\"?)([^\s\"',;&]+)"),
        rf"\1{MASK}",
    ),
]
_SECRET_FIELD = re.compile(rf"(?i){_SECRET_KEY}")


def redact(text: str) -> str:
    """Return ``text`` with every recognised secret replaced by ``[REDACTED]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any, key: str = "") -> Any:
    """Redact a JSON-like value recursively; a string under a key named like a secret
    (``password``, ``api_key``, ``token``...) is masked whole. Numbers are never secrets
    here (``prompt_tokens`` is a count)."""
    if key and _SECRET_FIELD.search(key) and isinstance(value, str) and value:
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value
