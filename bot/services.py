"""The shared, long-lived parts of a running bot, built once and handed to the engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from opsbot.approvals import Approvals, State
from opsbot.audit import AuditLog, AuditRecord
from opsbot.config import Settings
from opsbot.inventory import Inventory
from opsbot.model import Actor
from opsbot.policy import BUNDLED_POLICIES, Policy
from opsbot.skills.base import Impersonation, SkillRegistry, load_registry
from opsbot.skills.meta import Meta, PendingApproval
from opsbot.store import Store, open_store


@dataclass
class Services:
    """Settings, store, audit log, approvals, policy and the backends with their skills.

    Also the :class:`opsbot.skills.meta.BotState` the meta skills (``help``,
    ``approvals.pending``, ``audit.search``) read the bot through.
    """

    settings: Settings
    store: Store
    audit: AuditLog
    approvals: Approvals
    policy: Policy
    registry: SkillRegistry
    inventory: Inventory

    def permitted(self, actor: Actor, skill: str, *, channel: str, namespaced: bool) -> bool:
        return self.policy.permitted(actor, skill, channel=channel, namespaced=namespaced)

    async def pending_approvals(self) -> Sequence[PendingApproval]:
        pending: list[PendingApproval] = list(await self.approvals.find(state=State.PENDING))
        return pending

    async def search_audit(
        self, *, since: datetime, actor: str | None, skill: str | None, limit: int
    ) -> list[AuditRecord]:
        return await self.audit.search(since=since, actor=actor, skill=skill, limit=limit)

    async def audit_of_requests(self, request_ids: Sequence[str]) -> list[AuditRecord]:
        return await self.audit.of_requests(request_ids)

    def impersonation(self, actor: Actor) -> Impersonation:
        """The backend identity the policy maps ``actor`` to (empty: opsbot's own)."""
        mapped = self.policy.identity_for(actor)
        return Impersonation(mapped.user, tuple(mapped.groups)) if mapped else Impersonation()

    async def close(self) -> None:
        await self.registry.aclose()
        await self.store.close()


def policy_path(settings: Settings) -> Path:
    """The configured policy path, or the bundled ``policies/`` when the default is absent."""
    path = settings.policy_path
    if not path.exists() and path == Path("policies"):
        return BUNDLED_POLICIES
    return path


async def build_services(
    settings: Settings,
    *,
    registry: SkillRegistry | None = None,
    policy: Policy | None = None,
    backends: dict[str, dict[str, Any]] | None = None,
) -> Services:
    """Load the policy (raises ``PolicyError``), open and migrate the store, load backends.

    ``backends[name]`` are settings of that backend that win over the environment and
    ``opsbot.yaml`` (e.g. ``prometheus={"url": ...}``), used when ``registry`` is not given.
    """
    policy = policy or Policy.load(policy_path(settings))
    store = await open_store(settings.database_url)
    registry = registry or load_registry(settings, backends)
    services = Services(
        settings=settings,
        store=store,
        audit=AuditLog(store),
        approvals=Approvals(store),
        policy=policy,
        registry=registry,
        inventory=Inventory(registry, timeout=settings.backend_timeout),
    )
    for backend in registry.backends:
        if isinstance(backend, Meta):
            backend.state = services
    return services
