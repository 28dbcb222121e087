"""Grounding: resolve names the planner proposes against what the backends really have.

Skills contribute names through an optional ``async inventory(services) -> {kind: names}``
method (kinds: ``service``, ``namespace``, ``alertname``, ``deployment``...). Results are
cached for ``ttl`` seconds; a backend that is down contributes nothing (and is logged).
Matching uses rapidfuzz's ``WRatio``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from opsbot.skills.base import NotConfigured
from rapidfuzz import fuzz, process

if TYPE_CHECKING:
    from opsbot.services import Services

log = structlog.get_logger(__name__)


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


class Inventory:
    """Names known to the backends, gathered from the skills that can list them."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._services: Services | None = None
        self._cache: dict[str, set[str]] = {}
        self._loaded_at = 0.0
        self._static: dict[str, set[str]] = {}

    def bind(self, services: Services) -> None:
        self._services = services

    def add(self, kind: str, names: Iterable[str]) -> None:
        """Add names by hand (tests, static configuration)."""
        self._static.setdefault(kind, set()).update(names)

    async def names(self, kind: str) -> set[str]:
        await self._refresh()
        return self._cache.get(kind, set()) | self._static.get(kind, set())

    async def snapshot(self) -> dict[str, set[str]]:
        await self._refresh()
        kinds = set(self._cache) | set(self._static)
        return {k: self._cache.get(k, set()) | self._static.get(k, set()) for k in kinds}

    async def _refresh(self) -> None:
        if self._services is None or time.monotonic() - self._loaded_at < self.ttl:
            return
        self._loaded_at = time.monotonic()
        gathered: dict[str, set[str]] = {}
        for skill in self._services.registry:
            provider: Any = getattr(skill, "inventory", None)
            if provider is None:
                continue
            try:
                found = await provider(self._services)
            except NotConfigured:
                continue
            except Exception as exc:  # a down backend only means fewer names to ground on
                log.info("inventory.unavailable", skill=skill.name, error=str(exc))
                continue
            for kind, names in found.items():
                gathered.setdefault(kind, set()).update(names)
        self._cache = gathered
