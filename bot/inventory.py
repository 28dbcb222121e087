"""The names backends know (deployments, namespaces, services, alert names...), gathered from
every :meth:`opsbot.skills.base.Backend.inventory` for the planners to ground against.

Off the request path: a request reads the last snapshot. When it is older than ``ttl``
seconds, the request starts a refresh in the background and goes on with what it has; only a
process that has never had a snapshot waits for its first (at most one ``timeout``). A
refresh asks the backends in parallel, each within ``timeout`` seconds; a backend that is not
configured contributes nothing, one that is down or slow keeps what it said last time (and is
logged): a hung backend never holds up a request. ``opsbot serve`` warms the snapshot at
start (:meth:`Inventory.warm`). Skills whose arguments need no grounding do not ask for it
(the planners check the skill first).

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
        #: what each backend said last (a backend that does not answer keeps its last answer)
        self._answers: dict[str, dict[str, set[str]]] = {}
        self._loaded_at = -float("inf")
        self._ready = False  # a snapshot was made (a request never waits again)
        self._refreshing: asyncio.Task[None] | None = None
        self._static: dict[str, set[str]] = {}
        #: the database the leader keeps the names in for every replica (None: ask here)
        self.shared: Store | None = None
        self.refreshes = 0

    def add(self, kind: str, names: Iterable[str]) -> None:
        """Add names by hand (tests, static configuration)."""
        self._static.setdefault(kind, set()).update(names)

    async def names(self, kind: str) -> set[str]:
        await self._current()
        return self._cache.get(kind, set()) | self._static.get(kind, set())

    async def snapshot(self) -> dict[str, set[str]]:
        await self._current()
        kinds = set(self._cache) | set(self._static)
        return {k: self._cache.get(k, set()) | self._static.get(k, set()) for k in kinds}

    def warm(self) -> None:
        """Start the first refresh now, in the background (``opsbot serve`` at start)."""
        if self.registry is not None and not self._ready:
            self._refresh_soon()

    async def _current(self) -> None:
        """Refresh in the background when the snapshot is older than ``ttl``; wait only for a
        first snapshot (bounded by the backends' timeout)."""
        if self.registry is None or time.monotonic() - self._loaded_at < self.ttl:
            return
        task = self._refresh_soon()
        if not self._ready:
            await asyncio.shield(task)

    def _refresh_soon(self) -> asyncio.Task[None]:
        task = self._refreshing
        loop = asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._refreshing = loop.create_task(self._refresh(), name="inventory")
        return task

    async def _refresh(self) -> None:
        try:
            if self.shared is not None and (kept := await self._read_shared()) is not None:
                self._cache = kept
            else:
                self._cache = await self._gather()
        finally:
            self._loaded_at = time.monotonic()
            self._ready = True
            self.refreshes += 1

    async def _gather(self) -> dict[str, set[str]]:
        assert self.registry is not None
        backends = self.registry.backends
        found = await asyncio.gather(*(self._ask(b) for b in backends))
        gathered: dict[str, set[str]] = {}
        for backend, names in zip(backends, found, strict=True):
            if names is not None:
                self._answers[backend.name] = names
            for kind, values in self._answers.get(backend.name, {}).items():
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
        leader's refresher). A backend that does not answer keeps what it said last time."""
        if self.registry is None or self.shared is None:
            return
        gathered = await self._gather()
        self._cache, self._loaded_at, self._ready = gathered, time.monotonic(), True
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

    async def _ask(self, backend: Backend[Any]) -> dict[str, set[str]] | None:
        """What ``backend`` knows now ({} when it is not configured); None when it did not
        answer within ``timeout`` (its last answer stands)."""
        if backend.missing():
            return {}
        try:
            return await asyncio.wait_for(backend.inventory(), self.timeout)
        except NotConfigured:
            return {}
        except Exception as exc:  # a down backend only means older names to ground on
            log.info("inventory.unavailable", backend=backend.name, error=str(exc) or repr(exc))
            return None
