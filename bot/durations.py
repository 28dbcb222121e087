"""Durations in Prometheus' notation (``30s``, ``15m``, ``1h30m``, ``2d``, ``1w``)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_WHOLE = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")


def parse_duration(text: str) -> timedelta:
    """``"1h30m"`` -> ``timedelta(hours=1, minutes=30)``; raises ``ValueError`` otherwise."""
    text = text.strip().lower()
    if not _WHOLE.match(text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 1h30m, 2d)")
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """``timedelta(hours=1, minutes=30)`` -> ``"1h30m"`` (largest units first, no zeros)."""
    seconds = int(delta.total_seconds())
    out = []
    for unit in ("w", "d", "h", "m", "s"):
        size = int(_UNITS[unit])
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out) or "0s"


def _check(text: str) -> str:
    parse_duration(text)
    return text.strip().lower()


#: A pydantic field type: a validated duration string, kept as written (``"30m"``).
Duration = Annotated[str, AfterValidator(_check)]
