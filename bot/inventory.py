"""The names backends know (deployments, namespaces, services, alert names...), gathered from
every :meth:`opsbot.skills.base.Backend.inventory` for the planners to ground against.

Backends are asked in parallel, each within ``timeout`` seconds; the result is cached for
``ttl`` seconds. A backend that is not configured, down or slow contributes nothing this
round (and is logged); it never fails a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import structlog

from opsbot.skills.base import Backend, NotConfigured, SkillRegistry

log = structlog.get_logger(__name__)


class Inventory:
    """Names by kind (``service``, ``namespace``, ``deployment``, ``deployment/<ns>``,
    ``alertname``...), from the registry's backends plus names added by hand."""

    def __init__(
        self, registry: SkillRegistry | None = None, *, ttl: float = 60.0, timeout: float = 2.0
    ) -> None:
        self.registry = registry
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, set[str]] = {}
        self._loaded_at = -float("inf")
        self._static: dict[str, set[str]] = {}

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
        if self.registry is None or time.monotonic() - self._loaded_at < self.ttl:
            return
        self._loaded_at = time.monotonic()
        found = await asyncio.gather(*(self._ask(b) for b in self.registry.backends))
        gathered: dict[str, set[str]] = {}
        for names in found:
            for kind, values in names.items():
                gathered.setdefault(kind, set()).update(values)
        self._cache = gathered

    async def _ask(self, backend: Backend[Any]) -> dict[str, set[str]]:
        if backend.missing():
            return {}
        try:
            return await asyncio.wait_for(backend.inventory(), self.timeout)
        except NotConfigured:
            return {}
        except Exception as exc:  # a down backend only means fewer names to ground on
            log.info("inventory.unavailable", backend=backend.name, error=str(exc) or repr(exc))
            return {}
