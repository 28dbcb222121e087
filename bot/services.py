"""The shared, long-lived parts of a running bot, built once and handed to the engine and skills."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsbot.approvals import Approvals
from opsbot.audit import AuditLog
from opsbot.config import Settings
from opsbot.intent.grounding import Inventory
from opsbot.policy import BUNDLED_POLICIES, Policy
from opsbot.skills.base import SkillRegistry, load_registry
from opsbot.store import Store, open_store


@dataclass
class Services:
    settings: Settings
    store: Store
    audit: AuditLog
    approvals: Approvals
    policy: Policy
    registry: SkillRegistry
    inventory: Inventory
    #: backend clients built on first use by the skill modules, keyed by backend name
    clients: dict[str, Any] = field(default_factory=dict)

    async def close(self) -> None:
        for client in self.clients.values():
            closer = getattr(client, "aclose", None)
            if closer is not None:
                await closer()
        await self.store.close()


def policy_path(settings: Settings) -> Path:
    """The configured policy path, or the bundled ``policies/`` when the default is absent."""
    path = settings.policy_path
    if not path.exists() and path == Path("policies"):
        return BUNDLED_POLICIES
    return path


async def build_services(
    settings: Settings, *, registry: SkillRegistry | None = None, policy: Policy | None = None
) -> Services:
    """Load the policy (raises ``PolicyError``), open and migrate the store, load skills."""
    policy = policy or Policy.load(policy_path(settings))
    store = await open_store(settings.database_url)
    audit = AuditLog(store)
    registry = registry or load_registry()
    services = Services(
        settings=settings,
        store=store,
        audit=audit,
        approvals=Approvals(store),
        policy=policy,
        registry=registry,
        inventory=Inventory(),
    )
    services.inventory.bind(services)
    return services
