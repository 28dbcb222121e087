"""Kubernetes: inspect (``k8s.pods``, ``k8s.describe``, ``k8s.events``, ``k8s.logs``,
``k8s.rollout.status``, ``k8s.rollout.history``) and act (``k8s.restart``, ``k8s.scale``,
``k8s.rollback``) with the API semantics of ``kubectl``.

The package, by job:

- this module: the :class:`Kubernetes` backend (settings, configuration loaded once, one API
  client per impersonated identity, health probe, inventory);
- :mod:`.client`: configuration loading, impersonation and the :class:`~.client.Kube` API
  wrapper, the only module importing the ``kubernetes`` library (on first use);
- :mod:`.errors`: :class:`~.errors.KubeError`, :class:`~.errors.KubeNotFound`;
- :mod:`.objects`: pure readers of API objects (pod state, rollout status, describe rows...);
- :mod:`.read`: the six read skills; :mod:`.write`: the three write skills and the patches
  ``kubectl`` sends for them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from opsbot.skills.base import Backend, BackendSettings, Impersonation, NotConfigured
from opsbot.skills.kubernetes.read import (
    K8sDescribe,
    K8sEvents,
    K8sLogs,
    K8sPods,
    K8sRolloutHistory,
    K8sRolloutStatus,
)
from opsbot.skills.kubernetes.write import K8sRestart, K8sRollback, K8sScale

if TYPE_CHECKING:
    from kubernetes.client import Configuration

    from opsbot.config import Settings
    from opsbot.skills.kubernetes.client import Kube

__all__ = ["Kubernetes", "KubernetesConfig"]

#: what :class:`Kubernetes` builds once: the configuration (``None``), an identity's API
#: client (``(user, groups)``)
_Key = tuple[str, tuple[str, ...]] | None
_T = TypeVar("_T")


def _load_configuration(path: Path, context: str | None) -> Configuration:
    """Import the client library and load the configuration (in a worker thread)."""
    from opsbot.skills.kubernetes.client import load_configuration

    return load_configuration(path, context)


def _new_kube(configuration: Configuration, identity: Impersonation, timeout: float) -> Kube:
    """Build the API client of one identity (in a worker thread)."""
    from opsbot.skills.kubernetes.client import new_kube

    return new_kube(configuration, identity, timeout)


class KubernetesConfig(BackendSettings):
    """``KUBECONFIG``, ``OPSBOT_K8S_CONTEXT``, ``OPSBOT_K8S_MAX_REPLICAS`` (in ``opsbot.yaml``:
    ``kubeconfig``, ``k8s_context``, ``k8s_max_replicas``)."""

    model_config = SettingsConfigDict(env_prefix="OPSBOT_K8S_")
    kubeconfig: Path | None = Field(
        None,
        validation_alias=AliasChoices("KUBECONFIG", "kubeconfig"),
        description="kubeconfig file; unset: ~/.kube/config, else in-cluster config",
    )
    context: str | None = Field(
        None,
        validation_alias=AliasChoices("OPSBOT_K8S_CONTEXT", "k8s_context"),
        description="kubeconfig context; unset: its current-context",
    )
    max_replicas: int = Field(
        50,
        validation_alias=AliasChoices("OPSBOT_K8S_MAX_REPLICAS", "k8s_max_replicas"),
        description="k8s.scale refuses more replicas than this, whatever the policy says",
    )


class Kubernetes(Backend[KubernetesConfig]):
    """One cluster through the official ``kubernetes`` client (run in worker threads).

    The client configuration is built once, on first use (:meth:`connect`); each identity
    the calls impersonate gets its own cached API client (:meth:`api`). :meth:`aclose` drops
    them all, so changed settings take effect on the next call.

    Both are built in a worker thread, never on the event loop: importing the library,
    loading the kubeconfig and building an ``ApiClient`` take a second or more (13 s were
    seen on a busy machine), which on the loop stalled every other request and kept the
    inventory's timeout from firing. Concurrent first callers share one build, and a caller
    that gives up (a timeout) leaves it running for the next.
    """

    name = "kubernetes"
    Config = KubernetesConfig
    skills = (
        K8sPods,
        K8sDescribe,
        K8sEvents,
        K8sLogs,
        K8sRolloutStatus,
        K8sRolloutHistory,
        K8sRestart,
        K8sScale,
        K8sRollback,
    )

    def __init__(self, config: KubernetesConfig, settings: Settings) -> None:
        super().__init__(config, settings)
        self._missing: list[str] | None = None
        self._apis: dict[tuple[str, tuple[str, ...]], Kube] = {}
        #: the builds under way (see :data:`_Key`), shared by concurrent callers
        self._building: dict[_Key, asyncio.Task[Any]] = {}
        #: incremented by :meth:`aclose`: a build started before it is not kept
        self._generation = 0

    def kubeconfig_path(self) -> Path:
        """The kubeconfig file to read: ``kubeconfig`` (``KUBECONFIG``), else ~/.kube/config."""
        return self.config.kubeconfig or Path(
            os.environ.get("KUBECONFIG", "") or Path.home() / ".kube" / "config"
        )

    def missing(self) -> list[str]:
        """``KUBECONFIG`` when there is no kubeconfig file and opsbot is not running in a
        cluster. Checked once (until :meth:`aclose`); the file is only parsed by
        :meth:`connect`."""
        if self._missing is None:
            found = self.kubeconfig_path().exists() or bool(
                os.environ.get("KUBERNETES_SERVICE_HOST")
            )
            self._missing = [] if found else ["KUBECONFIG"]
        return list(self._missing)

    def require(self) -> None:
        if self.missing():
            raise NotConfigured(
                f"Kubernetes is not configured: no kubeconfig at {self.kubeconfig_path()} and "
                "not running in a cluster (set KUBECONFIG)."
            )

    async def connect(self) -> Configuration:
        """Load the cluster configuration in a worker thread (raises :class:`NotConfigured`
        when the kubeconfig is invalid; the next call tries again)."""
        path, context = self.kubeconfig_path(), self.config.context
        return await asyncio.to_thread(_load_configuration, path, context)

    async def client(self) -> Configuration:
        """The configuration, loaded once (:meth:`connect`); concurrent first callers wait
        for the same load."""
        self.require()
        if self._client is None:
            return await self._once(None, self.connect, self._generation)
        configuration: Configuration = self._client
        return configuration

    async def api(self, impersonate: Impersonation | None = None) -> Kube:
        """The API as ``impersonate`` (None or an empty one: opsbot's own credentials); one
        client per identity, made on first use in a worker thread."""
        identity = impersonate or Impersonation()
        key = (identity.user, tuple(identity.groups))
        generation = self._generation
        configuration = await self.client()
        if (api := self._apis.get(key)) is not None:
            return api
        timeout = self.settings.backend_timeout
        return await self._once(
            key,
            lambda: asyncio.to_thread(_new_kube, configuration, identity, timeout),
            generation,
        )

    async def _once(self, key: _Key, build: Callable[[], Awaitable[_T]], generation: int) -> _T:
        """``build()``'s result, kept under ``key``; a build already under way for ``key``
        is awaited rather than started again. The build is a task of its own, shielded: a
        caller that is cancelled (the inventory's timeout) does not cancel it."""
        loop = asyncio.get_running_loop()
        task = self._building.get(key)
        if task is None or task.get_loop() is not loop or generation != self._generation:
            task = loop.create_task(self._build(key, build, generation), name="kubernetes.build")
            if generation == self._generation:
                self._building[key] = task
        made: _T = await asyncio.shield(task)
        return made

    async def _build(self, key: _Key, build: Callable[[], Awaitable[_T]], generation: int) -> _T:
        try:
            made = await build()
        finally:
            if self._building.get(key) is asyncio.current_task():
                del self._building[key]
        if generation == self._generation:  # not dropped by aclose() meanwhile
            if key is None:
                self._client = made
            else:
                self._apis[key] = cast("Kube", made)
        return made

    async def aclose(self) -> None:
        apis, self._apis = self._apis, {}
        self._building.clear()
        self._generation += 1
        for api in apis.values():
            api.close()
        self._missing = None
        await super().aclose()

    async def probe(self) -> str:
        """``GET /version``: the cluster's ``gitVersion``."""
        return await (await self.api()).version()

    async def inventory(self) -> dict[str, set[str]]:
        """Namespaces, deployments, statefulsets and daemonsets, for grounding
        (``deployment/<ns>``, ``statefulset/<ns>``, ``daemonset/<ns>``: those of one
        namespace), read with opsbot's own credentials. Statefulsets and daemonsets are left
        out when opsbot may not list them (an older role) or the API does not serve them:
        deployments still ground."""
        from opsbot.skills.kubernetes.errors import KubeError

        api = await self.api()
        found: dict[str, set[str]] = {"namespace": set(await api.namespaces())}
        for kind in ("deployment", "statefulset", "daemonset"):
            try:
                objects = await api.workloads(kind)
            except KubeError as exc:
                if kind == "deployment" or exc.status not in (401, 403, 404):
                    raise
                continue
            found[kind] = set()
            for obj in objects:
                ns, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
                found[kind].add(name)
                found.setdefault(f"{kind}/{ns}", set()).add(name)
        return found
