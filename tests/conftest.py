"""Shared fixtures: a database per backend (SQLite always, PostgreSQL when
``OPSBOT_TEST_POSTGRES_URL`` is set), services/engine on it, and the real local
Prometheus + Alertmanager stack. With ``OPSBOT_REQUIRE_REAL_SERVERS=1`` (CI) a missing
server fails the run instead of skipping."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from opsbot.config import Settings
from opsbot.demo import LocalStack, missing_binaries
from opsbot.engine import Engine
from opsbot.policy import Policy
from opsbot.services import Services, build_services
from opsbot.skills.base import SkillRegistry
from opsbot.store import scratch_database
from opsbot.testing import Thread as Thread  # collects what the engine posts, as an adapter would

ROOT = Path(__file__).resolve().parent.parent
REQUIRE = os.environ.get("OPSBOT_REQUIRE_REAL_SERVERS") == "1"
PG_URL = os.environ.get("OPSBOT_TEST_POSTGRES_URL", "")


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (OPSBOT_REQUIRE_REAL_SERVERS=1)")
    pytest.skip(reason)


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'opsbot.db'}"
        return
    if not PG_URL:
        unavailable("OPSBOT_TEST_POSTGRES_URL is not set")
    async with scratch_database(PG_URL, "opsbot_t") as url:
        yield url


@pytest.fixture
def policy() -> Policy:
    return Policy.load(ROOT / "policies" / "default.yaml")


#: test shorthands for backend settings: keyword -> (backend, its Config field)
BACKEND_KEYS = {
    "prometheus_url": ("prometheus", "url"),
    "alertmanager_url": ("alertmanager", "url"),
    "loki_url": ("loki", "url"),
    "kubeconfig": ("kubernetes", "kubeconfig"),
    "k8s_max_replicas": ("kubernetes", "max_replicas"),
}


def make_settings(db_url: str, tmp_path: Path, **extra: Any) -> Settings:
    """Settings for a test; ``prometheus_url=``, ``kubeconfig=``... go to their backend."""
    defaults: dict[str, Any] = {
        "policy_path": ROOT / "policies",
        "chart_dir": tmp_path / "charts",
        "backend_timeout": 3.0,
    }
    backends: dict[str, dict[str, Any]] = {}
    for key in [k for k in extra if k in BACKEND_KEYS]:
        backend, field = BACKEND_KEYS[key]
        backends.setdefault(backend, {})[field] = extra.pop(key)
    return Settings(database_url=db_url, backends=backends, **{**defaults, **extra})


@pytest.fixture
async def services(db_url: str, tmp_path: Path, policy: Policy) -> AsyncIterator[Services]:
    svc = await build_services(make_settings(db_url, tmp_path), policy=policy)
    yield svc
    await svc.close()


@pytest.fixture
async def sqlite_services(tmp_path: Path, policy: Policy) -> AsyncIterator[Services]:
    svc = await build_services(
        make_settings(f"sqlite+aiosqlite:///{tmp_path / 'o.db'}", tmp_path), policy=policy
    )
    yield svc
    await svc.close()


@pytest.fixture
def thread() -> Thread:
    return Thread()


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    missing = missing_binaries()
    if missing:
        unavailable(f"missing {', '.join(missing)}")
    with LocalStack(kubernetes=False) as running:
        running.wait_for_alert("HighErrorRate", timeout=90)
        yield running


@pytest.fixture
async def live(stack: LocalStack, tmp_path: Path, policy: Policy) -> AsyncIterator[Engine]:
    """An engine on SQLite wired to the real local Prometheus and Alertmanager."""
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
        tmp_path,
        prometheus_url=stack.prometheus_url,
        alertmanager_url=stack.alertmanager_url,
    )
    svc = await build_services(settings, policy=policy)
    yield Engine(svc)
    await svc.close()


def registry_with(*skills: Any) -> SkillRegistry:
    from opsbot.skills.base import load_registry

    registry = load_registry()
    for skill in skills:
        registry.add(skill)
    return registry
