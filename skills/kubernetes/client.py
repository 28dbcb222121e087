"""Kubernetes API access: configuration, per-user impersonation, raw JSON calls through the
official ``kubernetes`` client, and errors a human can read. The only module of the package
that imports the ``kubernetes`` library; :class:`~opsbot.skills.kubernetes.Kubernetes`
imports it on first use.

Configuration follows the client's standard loading: ``KUBECONFIG`` (or ``~/.kube/config``,
context ``OPSBOT_K8S_CONTEXT``), else the in-cluster service account. When the policy maps a
chat identity to a Kubernetes user (``identities:``), every call for that actor carries
``Impersonate-User`` (and ``Impersonate-Group`` per group), so the cluster's RBAC applies per
person (https://kubernetes.io/docs/reference/access-authn-authz/authentication/#user-impersonation).

Objects are handled as the API's JSON (dicts), exactly as the server sent them.

Importing this module (the ``kubernetes`` library), :func:`load_configuration` and
:func:`new_kube` block for about a second on an idle machine, several on a busy one: they
run in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from opsbot.skills.base import Impersonation, NotConfigured
from opsbot.skills.kubernetes.errors import KubeError, KubeNotFound
from opsbot.skills.kubernetes.objects import MERGE_PATCH


def load_configuration(path: Path, context: str | None) -> client.Configuration:
    """The cluster configuration from the kubeconfig at ``path`` (context ``context``), else
    in-cluster; raises :class:`NotConfigured` with the reason. Blocking (file reads, and an
    exec credential plugin may run): called in a worker thread."""
    cfg = client.Configuration()
    try:
        if path.exists():
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(path), context=context, client_configuration=cfg
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            raise NotConfigured(
                f"Kubernetes is not configured: no kubeconfig at {path} and not running in a "
                "cluster (set KUBECONFIG)."
            )
    except (ConfigException, yaml.YAMLError, ValueError, TypeError, KeyError, OSError) as exc:
        raise NotConfigured(
            f"Kubernetes is not configured: invalid kubeconfig {path}: {exc}"
        ) from exc
    cfg.retries = 1
    return cfg


class ImpersonatingApiClient(client.ApiClient):
    """An ApiClient that adds impersonation headers to every request (one header per group,
    which a plain dict of default headers cannot hold)."""

    def __init__(self, configuration: client.Configuration, identity: Impersonation) -> None:
        super().__init__(configuration)
        self.identity = identity

    def call_api(
        self, method: str, url: str, header_params: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        if self.identity.user:
            headers = urllib3.HTTPHeaderDict(header_params or {})
            headers["Impersonate-User"] = self.identity.user
            for group in self.identity.groups:
                headers.add("Impersonate-Group", group)
            header_params = headers
        return super().call_api(method, url, header_params, *args, **kwargs)


def new_kube(configuration: client.Configuration, identity: Impersonation, timeout: float) -> Kube:
    """The API as ``identity``: a fresh :class:`ImpersonatingApiClient` and its API groups.
    Blocking (the client's API classes are imported on first use, about half a second):
    :class:`~opsbot.skills.kubernetes.Kubernetes` calls it in a worker thread."""
    return Kube(ImpersonatingApiClient(configuration, identity), identity, timeout)


class Kube:
    """Calls to one cluster as one identity; every method returns the API's JSON."""

    def __init__(
        self, api_client: client.ApiClient, identity: Impersonation, timeout: float
    ) -> None:
        self.api_client = api_client
        self.identity = identity
        self.timeout = timeout
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.versions = client.VersionApi(api_client)
        self.host: str = api_client.configuration.host

    @property
    def label(self) -> str:
        """Who the calls are made as, for messages."""
        return self.identity.user or "opsbot's own credentials"

    def close(self) -> None:
        """Release the client's connection pool and worker threads."""
        self.api_client.close()  # type: ignore[no-untyped-call]

    async def call(
        self, verb: str, resource: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Run one client call in a thread; translate failures to :class:`KubeError`."""

        def invoke() -> Any:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
            status = getattr(response, "status", 200)
            body = response.data
            if status >= 400:
                raise ApiException(
                    status=status, reason=getattr(response, "reason", ""), http_resp=response
                )
            return json.loads(body) if body else {}

        try:
            return await asyncio.to_thread(invoke)
        except ApiException as exc:
            raise self._translate(exc, verb, resource) from exc
        except (urllib3.exceptions.HTTPError, TimeoutError) as exc:
            raise self._transport_error(exc) from exc

    def _transport_error(self, exc: Exception) -> KubeError:
        """A connection that failed or an answer that did not come in time."""
        reason = (
            getattr(exc, "reason", None)
            if isinstance(exc, urllib3.exceptions.MaxRetryError)
            else exc
        )
        timeouts = (
            urllib3.exceptions.ReadTimeoutError,
            urllib3.exceptions.ConnectTimeoutError,
            TimeoutError,
        )
        # NewConnectionError subclasses ConnectTimeoutError in urllib3, but it is a refusal
        refused = isinstance(reason, urllib3.exceptions.NewConnectionError)
        if isinstance(reason, timeouts) and not refused:
            return KubeError(
                f"the Kubernetes API at {self.host} did not answer within {self.timeout:g}s"
            )
        return KubeError(
            f"the Kubernetes API at {self.host} is unreachable ({type(reason or exc).__name__})"
        )

    def _translate(self, exc: ApiException, verb: str, resource: str) -> KubeError:
        message = exc.reason or ""
        try:
            status_obj = json.loads(exc.body or "{}")
            message = status_obj.get("message") or message
        except (ValueError, TypeError):
            pass
        status = int(exc.status or 0)
        if status in (401, 403):
            return KubeError(
                f"Kubernetes RBAC denied {verb} {resource} for {self.label}: {message}",
                status,
            )
        if status == 404:
            return KubeNotFound(f"{resource} not found: {message}", status)
        if status == 409:
            return KubeError(
                f"conflict on {verb} {resource}: {message} (it changed meanwhile; try again)",
                status,
            )
        if status == 422:
            return KubeError(f"Kubernetes refused {verb} {resource}: {message}", status)
        return KubeError(
            f"the Kubernetes API answered {status} to {verb} {resource}: {message}", status
        )

    # -- reads ---------------------------------------------------------------------------

    async def version(self) -> str:
        """``GET /version``: the server's ``gitVersion`` (``v1.32.4``)."""
        data = await self.call("get", "version", self.versions.get_code)
        return str(data.get("gitVersion", ""))

    async def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        data: dict[str, Any] = await self.call(
            "get",
            f"deployment {namespace}/{name}",
            self.apps.read_namespaced_deployment,
            name,
            namespace,
        )
        return data

    async def deployments(self, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace:
            data = await self.call(
                "list",
                f"deployments in {namespace}",
                self.apps.list_namespaced_deployment,
                namespace,
            )
        else:
            data = await self.call(
                "list", "deployments", self.apps.list_deployment_for_all_namespaces
            )
        return list(data.get("items", []))

    async def workloads(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """LIST the deployments, statefulsets or daemonsets of a namespace (None: all)."""
        if kind == "deployment":
            return await self.deployments(namespace)
        namespaced, everywhere = {
            "statefulset": (
                self.apps.list_namespaced_stateful_set,
                self.apps.list_stateful_set_for_all_namespaces,
            ),
            "daemonset": (
                self.apps.list_namespaced_daemon_set,
                self.apps.list_daemon_set_for_all_namespaces,
            ),
        }[kind]
        if namespace:
            data = await self.call("list", f"{kind}s in {namespace}", namespaced, namespace)
        else:
            data = await self.call("list", f"{kind}s", everywhere)
        return list(data.get("items", []))

    async def controller_revisions(
        self, namespace: str, selector: str | None
    ) -> list[dict[str, Any]]:
        """LIST ``controllerrevisions`` with a label selector (a StatefulSet's or DaemonSet's
        history, as ``kubectl rollout history/undo`` lists it)."""
        data = await self.call(
            "list",
            f"controllerrevisions in {namespace}",
            self.apps.list_namespaced_controller_revision,
            namespace,
            label_selector=selector,
        )
        return list(data.get("items", []))

    async def replicasets(self, namespace: str, selector: str | None) -> list[dict[str, Any]]:
        data = await self.call(
            "list",
            f"replicasets in {namespace}",
            self.apps.list_namespaced_replica_set,
            namespace,
            label_selector=selector,
        )
        return list(data.get("items", []))

    async def pods(self, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        data = await self.call(
            "list",
            f"pods in {namespace}",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        )
        return list(data.get("items", []))

    async def events(self, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name}" if name else None
        data = await self.call(
            "list",
            f"events in {namespace}",
            self.core.list_namespaced_event,
            namespace,
            field_selector=selector,
        )
        return list(data.get("items", []))

    async def namespaces(self) -> list[str]:
        data = await self.call("list", "namespaces", self.core.list_namespace)
        return [n["metadata"]["name"] for n in data.get("items", [])]

    async def read(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        """GET one object of ``kind`` (deployment, pod, statefulset, daemonset, service, node)."""
        readers: dict[str, tuple[Callable[..., Any], bool]] = {
            "deployment": (self.apps.read_namespaced_deployment, True),
            "statefulset": (self.apps.read_namespaced_stateful_set, True),
            "daemonset": (self.apps.read_namespaced_daemon_set, True),
            "pod": (self.core.read_namespaced_pod, True),
            "service": (self.core.read_namespaced_service, True),
            "node": (self.core.read_node, False),
        }
        fn, namespaced = readers[kind]
        where = f"{namespace}/{name}" if namespaced else name
        args = (name, namespace) if namespaced else (name,)
        data: dict[str, Any] = await self.call("get", f"{kind} {where}", fn, *args)
        return data

    async def pod_log(
        self,
        namespace: str,
        pod: str,
        *,
        container: str | None,
        since_seconds: int | None,
        tail_lines: int,
    ) -> str:
        def invoke() -> str:
            response: Any = self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                since_seconds=since_seconds,
                tail_lines=tail_lines,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
            if getattr(response, "status", 200) >= 400:
                raise ApiException(
                    status=response.status, reason=response.reason, http_resp=response
                )
            data: bytes = response.data
            return data.decode("utf-8", errors="replace")

        try:
            return await asyncio.to_thread(invoke)
        except ApiException as exc:
            raise self._translate(exc, "get", f"pods/log {namespace}/{pod}") from exc
        except (urllib3.exceptions.HTTPError, TimeoutError) as exc:
            raise self._transport_error(exc) from exc

    # -- writes (bodies from opsbot.skills.kubernetes.write; see tests/test_kubernetes.py) --

    async def patch_workload(
        self,
        kind: str,
        namespace: str,
        name: str,
        body: Any,
        *,
        content_type: str,
        field_manager: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PATCH a deployment, statefulset or daemonset (``apps/v1``)."""
        patchers: dict[str, Callable[..., Any]] = {
            "deployment": self.apps.patch_namespaced_deployment,
            "statefulset": self.apps.patch_namespaced_stateful_set,
            "daemonset": self.apps.patch_namespaced_daemon_set,
        }
        data: dict[str, Any] = await self.call(
            "patch",
            f"{kind} {namespace}/{name}",
            patchers[kind],
            name,
            namespace,
            body,
            dry_run="All" if dry_run else None,
            field_manager=field_manager,
            _content_type=content_type,
        )
        return data

    async def patch_scale(
        self,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        kind: str = "deployment",
        content_type: str = MERGE_PATCH,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PATCH the ``scale`` subresource of a deployment or statefulset (a daemonset has
        none: it runs one pod per eligible node)."""
        scalers: dict[str, Callable[..., Any]] = {
            "deployment": self.apps.patch_namespaced_deployment_scale,
            "statefulset": self.apps.patch_namespaced_stateful_set_scale,
        }
        data: dict[str, Any] = await self.call(
            "patch",
            f"{kind}s/scale {namespace}/{name}",
            scalers[kind],
            name,
            namespace,
            body,
            dry_run="All" if dry_run else None,
            _content_type=content_type,
        )
        return data
