"""A fake of the Kubernetes API's ``coordination.k8s.io/v1`` Leases, with the optimistic
concurrency the API server enforces and kmock lacks (no PUT, no resourceVersion checks).

What it does as the API server does
(https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/lease-v1/,
https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions):

- ``GET .../namespaces/{ns}/leases/{name}``: the Lease, or 404 ``NotFound`` (a ``Status``);
- ``POST .../namespaces/{ns}/leases``: 201 with ``resourceVersion``, ``uid`` and
  ``creationTimestamp`` set; 409 ``AlreadyExists`` when it exists;
- ``PUT .../namespaces/{ns}/leases/{name}``: a replace; with a ``metadata.resourceVersion``
  other than the stored one, 409 ``Conflict`` ("the object has been modified; please apply
  your changes to the latest version and try again"); without one, an unconditional update;
  404 when there is none to replace; 400 when the body's name is not the path's;
- every write gets a new ``resourceVersion`` (one counter, as etcd's revision);
- ``spec`` is checked: ``leaseDurationSeconds`` and ``leaseTransitions`` integers,
  ``acquireTime``/``renewTime`` MicroTime (RFC 3339 with microseconds), else 422 ``Invalid``.

Tests can make it fail (``down``: every call 503) and read what happened (``calls``,
``holders``: each holder change with the time).
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

PATH = re.compile(
    r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/leases(?:/(?P<name>[^/]+))?$"
)
MICRO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")


def status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    return web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        },
        status=code,
    )


def spec_errors(spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return ["spec: must be an object"]
    errors = []
    for key in ("leaseDurationSeconds", "leaseTransitions"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            errors.append(f"spec.{key}: must be an integer")
    for key in ("acquireTime", "renewTime"):
        value = spec.get(key)
        if value is not None and not (isinstance(value, str) and MICRO_TIME.match(value)):
            errors.append(f"spec.{key}: {value!r} is not a MicroTime (RFC 3339, microseconds)")
    holder = spec.get("holderIdentity")
    if holder is not None and not isinstance(holder, str):
        errors.append("spec.holderIdentity: must be a string")
    return errors


@dataclass
class Call:
    method: str
    path: str
    status: int
    body: Any = None


@dataclass
class Leases:
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    #: (time.time(), namespace, name, holderIdentity) at every change of holder
    holders: list[tuple[float, str, str, str]] = field(default_factory=list)
    down: bool = False
    _versions: Any = field(default_factory=lambda: itertools.count(100))

    def holder(self, namespace: str, name: str) -> str:
        lease = self.objects.get((namespace, name))
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    def conflicts(self) -> list[Call]:
        return [c for c in self.calls if c.status == 409]

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """The answer to ``request`` when it is a Lease call; None otherwise."""
        found = PATH.match(request.path)
        if found is None:
            return None
        body: Any = None
        if request.method in ("POST", "PUT"):
            try:
                body = await request.json()
            except ValueError:
                body = None
        answer = self._answer(request.method, found["ns"], found["name"], body)
        self.calls.append(Call(request.method, request.path, answer.status, body))
        return answer

    def _answer(self, method: str, ns: str, name: str | None, body: Any) -> web.Response:
        if self.down:
            return status(503, "ServiceUnavailable", "the server is currently unable to respond")
        if method == "GET" and name:
            lease = self.objects.get((ns, name))
            if lease is None:
                return status(
                    404, "NotFound", f'leases.coordination.k8s.io "{name}" not found', name=name
                )
            return web.json_response(lease)
        if method == "POST" and not name:
            return self._create(ns, body)
        if method == "PUT" and name:
            return self._replace(ns, name, body)
        return status(405, "MethodNotAllowed", f"{method} is not supported here")

    def _stamp(self, ns: str, name: str, lease: dict[str, Any]) -> None:
        old = self.holder(ns, name)
        self.objects[(ns, name)] = lease
        new = self.holder(ns, name)
        if new != old:
            self.holders.append((time.time(), ns, name, new))

    def _create(self, ns: str, body: Any) -> web.Response:
        if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
            return status(400, "BadRequest", "a Lease needs metadata.name")
        name = str(body["metadata"]["name"])
        if errors := spec_errors(body.get("spec") or {}):
            return status(422, "Invalid", "; ".join(errors), name=name)
        if (ns, name) in self.objects:
            return status(
                409, "AlreadyExists", f'leases.coordination.k8s.io "{name}" already exists'
            )
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                **body["metadata"],
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "resourceVersion": str(next(self._versions)),
                "creationTimestamp": datetime.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "spec": dict(body.get("spec") or {}),
        }
        self._stamp(ns, name, lease)
        return web.json_response(lease, status=201)

    def _replace(self, ns: str, name: str, body: Any) -> web.Response:
        current = self.objects.get((ns, name))
        if current is None:
            return status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
        if not isinstance(body, dict):
            return status(400, "BadRequest", "the body is not a Lease")
        metadata = body.get("metadata") or {}
        if metadata.get("name") not in (None, name):
            return status(400, "BadRequest", "the name of the object does not match the URL")
        if errors := spec_errors(body.get("spec") or {}):
            return status(422, "Invalid", "; ".join(errors), name=name)
        wanted = metadata.get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            return status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the '
                "object has been modified; please apply your changes to the latest version "
                "and try again",
                name=name,
            )
        lease = {
            **current,
            "metadata": {**current["metadata"], "resourceVersion": str(next(self._versions))},
            "spec": dict(body.get("spec") or {}),
        }
        self._stamp(ns, name, lease)
        return web.json_response(lease)


class LeaseServer:
    """:class:`Leases` alone on an HTTP server (``async with``; ``url``)."""

    def __init__(self, leases: Leases | None = None) -> None:
        self.leases = leases or Leases()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        answer = await self.leases.handle(request)
        return answer if answer is not None else status(404, "NotFound", "no such path")

    async def __aenter__(self) -> LeaseServer:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
