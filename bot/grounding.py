"""Grounding: resolve a name someone typed against the names a backend really has (the
planners against :class:`opsbot.inventory.Inventory`, skills for "did you mean"). Matching
uses rapidfuzz."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import fuzz, process


@dataclass(frozen=True)
class Grounded:
    """``value``: the resolved name (None: no match); ``candidates``: close alternatives."""

    value: str | None
    exact: bool
    candidates: tuple[str, ...] = ()


def ground(name: str, known: Iterable[str], *, cutoff: float = 80.0) -> Grounded:
    """Resolve ``name`` against ``known``: exact (any case); else the one close spelling
    (rapidfuzz ``ratio`` >= ``cutoff``: "chekout" -> "checkout"); else the names it is a
    prefix of ("cart" -> cart-api, cart-web), as candidates; else nothing."""
    pool = sorted(set(known))
    if name in pool:
        return Grounded(name, True)
    lowered = {p.lower(): p for p in pool}
    if name.lower() in lowered:
        return Grounded(lowered[name.lower()], True)
    matches = process.extract(name, pool, scorer=fuzz.ratio, limit=4, score_cutoff=cutoff)
    if matches:
        best = matches[0]
        close = [m[0] for m in matches if best[1] - m[1] < 3]
        if len(close) == 1:
            return Grounded(str(best[0]), False, tuple(m[0] for m in matches[1:]))
        return Grounded(None, False, tuple(close))
    prefixed = [p for p in pool if p.lower().startswith(name.lower() + "-")]
    if len(prefixed) == 1:
        return Grounded(prefixed[0], False)
    return Grounded(None, False, tuple(prefixed))
