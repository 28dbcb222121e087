"""The names backends know (deployments, namespaces, services, alert names...), gathered from
every :meth:`opsbot.skills.base.Backend.inventory` for the planners to ground against.

Backends are asked in parallel, each within ``timeout`` seconds; the result is cached for
``ttl`` seconds. A backend that is not configured, down or slow contributes nothing this
round (and is logged); it never fails a request.

With several replicas (``shared``, set by ``opsbot serve``), the leader asks the backends
(:meth:`Inventory.publish`, every ``ttl / 2`` seconds) and keeps the names in the database;
every replica reads them from there while they are fresh (younger than ``3 * ttl``), and asks
the backends itself only when they are not (no leader for a while).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select

from opsbot.skills.base import Backend, NotConfigured, SkillRegistry
from opsbot.store import InventoryRow, Store, now

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
        #: the database the leader keeps the names in for every replica (None: ask here)
        self.shared: Store | None = None

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
        if self.shared is not None and (kept := await self._read_shared()) is not None:
            self._cache = kept
            return
        self._cache = await self._gather()

    async def _gather(self) -> dict[str, set[str]]:
        assert self.registry is not None
        found = await asyncio.gather(*(self._ask(b) for b in self.registry.backends))
        gathered: dict[str, set[str]] = {}
        for names in found:
            for kind, values in names.items():
                gathered.setdefault(kind, set()).update(values)
        return gathered

    async def _read_shared(self) -> dict[str, set[str]] | None:
        """The names the leader published, when they are fresh; None otherwise."""
        assert self.shared is not None
        try:
            async with self.shared.sessions() as session:
                rows = (await session.scalars(select(InventoryRow))).all()
        except Exception as exc:
            log.info("inventory.shared_unavailable", error=str(exc)[:200])
            return None
        if not rows or min(r.at for r in rows) < now() - timedelta(seconds=3 * self.ttl):
            return None
        return {r.kind: set(r.names) for r in rows}

    async def publish(self) -> None:
        """Ask every backend now and keep the names in :attr:`shared` for all replicas (the
        leader's refresher). A backend that does not answer keeps nothing of its kinds."""
        if self.registry is None or self.shared is None:
            return
        gathered = await self._gather()
        self._cache, self._loaded_at = gathered, time.monotonic()
        at = now()
        async with self.shared.sessions() as session:
            await session.execute(delete(InventoryRow))
            session.add_all(
                InventoryRow(kind=kind[:200], names=sorted(names), at=at)
                for kind, names in gathered.items()
            )
            await session.commit()

    async def refresher(self) -> None:
        """:meth:`publish` every ``ttl / 2`` seconds, until cancelled (the leader runs it)."""
        while True:
            try:
                await self.publish()
            except Exception as exc:
                log.warning("inventory.publish_failed", error=str(exc)[:200])
            await asyncio.sleep(max(1.0, self.ttl / 2))

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
