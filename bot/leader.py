"""Leader election among the replicas of ``opsbot serve``: one of them runs the singleton work
(the Discord gateway connection, the approval sweeps, rollout follow-ups, the inventory).

Correctness never rests on the election alone: every piece of shared state is decided in the
database (an approval runs after a compare-and-set, an event is handled once per id, a
follow-up is claimed by a row update), so two replicas that both believe they lead for a
moment (a partition, a paused process) do some work twice as *reads*, never a write twice.
The election keeps that work, and the Discord gateway session, on one replica.

Electors (``OPSBOT_LEADER_ELECTION``):

- ``lease``: a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection`` does it,
  through the official ``kubernetes`` client (its synchronous API in a worker thread): read the
  Lease; a holder other than us whose record we have seen unchanged for less than its
  ``leaseDurationSeconds`` keeps it; otherwise we write ourselves in with the
  ``resourceVersion`` we read, and a 409 (someone wrote first) means we did not get it. The
  leader renews every ``OPSBOT_LEASE_RETRY_PERIOD``; one that cannot renew for
  ``OPSBOT_LEASE_RENEW_DEADLINE`` stops its work (before the others may take over at
  ``OPSBOT_LEASE_DURATION``). Validity is judged on this replica's clock from when it last saw
  the record change (client-go's observed time), so clocks need not agree. On shutdown the
  leader releases the Lease (holder emptied), and another takes it at its next try.
- ``postgres``: a session-level advisory lock on a connection of its own
  (``pg_try_advisory_lock``): the server frees it when the holder's connection ends, at once
  when the process dies (its socket closes), within about 15 s of a silent network loss (TCP
  keepalives set on that connection). The holder pings the connection every retry period and
  stops leading when it cannot within the renew deadline. ``application_name`` names the holder
  (``pg_stat_activity``).
- ``off``: this process leads (one replica, SQLite, tests).
- ``auto`` (the default): ``lease`` in a Kubernetes pod, ``postgres`` on PostgreSQL, else ``off``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from opsbot import telemetry
from opsbot.config import Settings
from opsbot.errors import ConfigError
from opsbot.store import Store, shown_url

log = structlog.get_logger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # metav1.MicroTime, as the API server writes it


def identity() -> str:
    """This replica's name in the election: the pod's (``POD_NAME``) or the host's, and a
    random suffix, so a restarted process is a new holder (as client-go's ``id_uuid``)."""
    name = os.environ.get("POD_NAME") or socket.gethostname() or "opsbot"
    return f"{name}_{uuid.uuid4().hex[:8]}"


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SERVICE_ACCOUNT / "token").exists()


class Elector(Protocol):
    """One way of choosing the leader. :meth:`try_lead` takes or renews the leadership and
    says whether this replica holds it now; it raises when the arbiter cannot be asked (the
    caller keeps leading until the renew deadline)."""

    kind: str
    identity: str

    def where(self) -> str:
        """The arbiter, for log lines (``Lease shop/opsbot``)."""
        ...

    async def try_lead(self) -> bool: ...

    async def release(self) -> None:
        """Give the leadership up now (shutdown), so another replica takes over at once."""
        ...

    async def close(self) -> None: ...


class Solo:
    """``OPSBOT_LEADER_ELECTION=off``: this process always leads."""

    kind = "off"

    def __init__(self, name: str = "") -> None:
        self.identity = name or identity()

    def where(self) -> str:
        return "this process (no election)"

    async def try_lead(self) -> bool:
        return True

    async def release(self) -> None:
        return None

    async def close(self) -> None:
        return None


# -- Kubernetes Lease ------------------------------------------------------------------------


class LeaseError(Exception):
    """The Lease API answered something other than what an election step expects."""


def _micro(at: datetime) -> str:
    return at.astimezone(UTC).strftime(MICRO_TIME)


def lease_api(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ``ApiClient`` of the official client for the Lease: ``KUBECONFIG`` (or
    ``~/.kube/config``) when the file exists, else the pod's service account."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    path = Path(kubeconfig or os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
    cfg = client.Configuration()
    try:
        if path.exists():
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(path), context=context, client_configuration=cfg
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            raise ConfigError(
                "OPSBOT_LEADER_ELECTION=lease needs the Kubernetes API: no kubeconfig at "
                f"{path} and not running in a pod",
                hint="set KUBECONFIG, or OPSBOT_LEADER_ELECTION=postgres (an advisory lock in "
                "the database) outside Kubernetes",
            )
    except (ConfigException, ValueError, TypeError, KeyError, OSError) as exc:
        raise ConfigError(
            f"OPSBOT_LEADER_ELECTION=lease: cannot load the Kubernetes configuration {path}: {exc}",
            hint="fix KUBECONFIG, or set OPSBOT_LEADER_ELECTION=postgres",
        ) from exc
    cfg.retries = 0
    return client.ApiClient(cfg)


def lease_namespace(settings: Settings) -> str:
    """``OPSBOT_LEASE_NAMESPACE`` (or ``POD_NAMESPACE``), else the service account's."""
    if settings.lease_namespace:
        return settings.lease_namespace
    try:
        return (SERVICE_ACCOUNT / "namespace").read_text().strip() or "default"
    except OSError:
        return "default"


class LeaseElector:
    """Leadership by a ``coordination.k8s.io/v1`` Lease (client-go's algorithm)."""

    kind = "lease"

    def __init__(
        self,
        api_client: Any,
        *,
        name: str,
        namespace: str,
        duration: float,
        timeout: float,
        holder: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.api = client.CoordinationV1Api(api_client)
        self.name, self.namespace = name, namespace
        self.duration = duration
        self.timeout = timeout
        self.identity = holder or identity()
        self.clock = clock
        self._observed: dict[str, Any] | None = None
        self._observed_at = -math.inf

    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    # the API's calls, in a worker thread, answered as (status, JSON body)
    def _call(self, fn: Callable[..., Any], *args: Any) -> tuple[int, dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout)
        except ApiException as exc:
            try:
                body = json.loads(exc.body) if exc.body else {}
            except ValueError:
                body = {"message": str(exc.body)[:200]}
            return int(exc.status or 0), body
        data = response.data
        return int(response.status), json.loads(data) if data else {}

    async def _ask(self, fn: Callable[..., Any], *args: Any) -> tuple[int, dict[str, Any]]:
        return await asyncio.to_thread(self._call, fn, *args)

    def _body(self, spec: dict[str, Any], resource_version: str = "") -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }

    def _spec(self, transitions: int, acquired: str) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.duration)),
            "acquireTime": acquired,
            "renewTime": _micro(datetime.now(UTC)),
            "leaseTransitions": transitions,
        }

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed:
            self._observed = dict(spec)
            self._observed_at = self.clock()

    async def try_lead(self) -> bool:
        status, lease = await self._ask(self.api.read_namespaced_lease, self.name, self.namespace)
        if status == 404:
            now = _micro(datetime.now(UTC))
            spec = self._spec(0, now)
            status, created = await self._ask(
                self.api.create_namespaced_lease, self.namespace, self._body(spec)
            )
            if status == 409:  # another replica created it first
                return False
            if status >= 300:
                raise LeaseError(f"creating {self.where()}: {status} {_reason(created)}")
            self._observe(created.get("spec") or spec)
            return True
        if status >= 300:
            raise LeaseError(f"reading {self.where()}: {status} {_reason(lease)}")
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        valid_for = float(spec.get("leaseDurationSeconds") or self.duration)
        if holder and holder != self.identity and self._observed_at + valid_for > self.clock():
            return False  # held, and renewed within its duration as far as we have seen
        ours = holder == self.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        acquired = spec.get("acquireTime") if ours and spec.get("acquireTime") else None
        new = self._spec(transitions, acquired or _micro(datetime.now(UTC)))
        version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        status, replaced = await self._ask(
            self.api.replace_namespaced_lease, self.name, self.namespace, self._body(new, version)
        )
        if status == 409:  # written by another replica since we read it: not ours
            return False
        if status >= 300:
            raise LeaseError(f"updating {self.where()}: {status} {_reason(replaced)}")
        self._observe(replaced.get("spec") or new)
        return True

    async def release(self) -> None:
        """Empty the holder (client-go's ReleaseOnCancel), if we still hold it."""
        status, lease = await self._ask(self.api.read_namespaced_lease, self.name, self.namespace)
        spec = dict(lease.get("spec") or {}) if status == 200 else {}
        if spec.get("holderIdentity") != self.identity:
            return
        now = _micro(datetime.now(UTC))
        released = {
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": int(spec.get("leaseTransitions") or 0),
        }
        version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        status, answer = await self._ask(
            self.api.replace_namespaced_lease,
            self.name,
            self.namespace,
            self._body(released, version),
        )
        if status >= 300:
            raise LeaseError(f"releasing {self.where()}: {status} {_reason(answer)}")

    async def close(self) -> None:
        await asyncio.to_thread(self.api_client.close)


def _reason(body: dict[str, Any]) -> str:
    return str(body.get("message") or body.get("reason") or "")[:200]


# -- PostgreSQL advisory lock ----------------------------------------------------------------


def lock_key(name: str) -> int:
    """The advisory lock's key for the election named ``name`` (a signed 64-bit integer)."""
    digest = hashlib.sha256(f"opsbot-leader:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLockElector:
    """Leadership by a session-level PostgreSQL advisory lock on a connection of its own."""

    kind = "postgres"

    def __init__(self, store: Store, *, name: str, timeout: float, holder: str = "") -> None:
        self.store = store
        self.name = name
        self.key = lock_key(name)
        self.timeout = timeout
        self.identity = holder or identity()
        self._engine: Any = None
        self._conn: Any = None

    def where(self) -> str:
        return f"advisory lock {self.name!r} ({self.key}) on {shown_url(self.store.engine.url)}"

    async def _connect(self) -> Any:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        if self._engine is None:  # its own connection: never handed to other work by a pool
            self._engine = create_async_engine(
                self.store.engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
            )
        conn = await self._engine.connect()
        # who holds it, in pg_stat_activity; and a dead holder's session ends within ~15 s
        # (the server's keepalives), freeing the lock for the others
        await conn.execute(
            text(
                "SELECT set_config('application_name', :name, false),"
                " set_config('tcp_keepalives_idle', '5', false),"
                " set_config('tcp_keepalives_interval', '2', false),"
                " set_config('tcp_keepalives_count', '3', false)"
            ),
            {"name": f"opsbot leader {self.identity}"[:63]},
        )
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # the socket closes: the server frees the lock
            with contextlib.suppress(Exception):
                await conn.close()

    async def try_lead(self) -> bool:
        from sqlalchemy import text

        if self._conn is not None:  # holding: the lock lives as long as this session
            try:
                held = await asyncio.wait_for(
                    self._conn.scalar(
                        text(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND "
                            "granted AND pid = pg_backend_pid() AND objsubid = 1 AND "
                            "classid::bigint = :high AND objid::bigint = :low"
                        ),
                        {"high": (self.key >> 32) & 0xFFFFFFFF, "low": self.key & 0xFFFFFFFF},
                    ),
                    self.timeout,
                )
            except BaseException:
                await self._drop()
                raise
            if held:
                return True
            await self._drop()
            return False
        conn = await asyncio.wait_for(self._connect(), self.timeout)
        try:
            got = await asyncio.wait_for(
                conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}),
                self.timeout,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            raise
        if not got:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def release(self) -> None:
        from sqlalchemy import text

        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key}),
                    self.timeout,
                )
            await self._drop()

    async def close(self) -> None:
        await self.release()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


def elector_for(settings: Settings, store: Store) -> Elector:
    """The elector ``OPSBOT_LEADER_ELECTION`` chooses (``auto``: a Lease in a pod, an
    advisory lock on PostgreSQL, else none). Raises :class:`ConfigError` when the chosen one
    cannot work here (a Lease without the Kubernetes API, an advisory lock on SQLite)."""
    mode = settings.leader_election
    if mode == "auto":
        mode = "lease" if in_cluster() else "postgres" if store.dialect == "postgresql" else "off"
    timeout = max(0.5, min(settings.lease_renew_deadline, settings.lease_retry_period * 2))
    if mode == "lease":
        return LeaseElector(
            lease_api(context=os.environ.get("OPSBOT_K8S_CONTEXT")),
            name=settings.lease_name,
            namespace=lease_namespace(settings),
            duration=settings.lease_duration,
            timeout=timeout,
        )
    if mode == "postgres":
        if store.dialect != "postgresql":
            raise ConfigError(
                "OPSBOT_LEADER_ELECTION=postgres needs PostgreSQL, and OPSBOT_DATABASE_URL is "
                f"{store.dialect}",
                hint="use a postgresql:// database (several replicas need one anyway), or "
                "OPSBOT_LEADER_ELECTION=off for one replica",
            )
        return AdvisoryLockElector(store, name=settings.lease_name, timeout=timeout)
    return Solo()


# -- running for leader ----------------------------------------------------------------------

Work = Callable[[], Awaitable[None]]


@dataclass
class Leadership:
    """Runs the election and, while this replica leads, the singleton work (each a coroutine
    that runs until cancelled; one that raises is logged and started again)."""

    elector: Elector
    renew_deadline: float
    retry_period: float
    work: dict[str, Work] = field(default_factory=dict)
    leading: bool = False
    #: monotonic time this replica became the leader (None: it does not lead)
    since: float | None = None
    #: transitions (became leader, stopped leading), for tests and /healthz
    changes: list[tuple[float, bool]] = field(default_factory=list)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, name: str, work: Work) -> None:
        """Run ``work`` while leading (started at once when leading already)."""
        self.work[name] = work
        if self.leading:
            self._start(name, work)

    async def run(self) -> None:
        """Take and keep the leadership until cancelled."""
        last_renewed = -math.inf
        failing = False
        while True:
            started = time.monotonic()
            try:
                held: bool | None = await asyncio.wait_for(
                    self.elector.try_lead(), max(self.renew_deadline, 1.0)
                )
                if failing:
                    log.info("leader.arbiter_back", arbiter=self.elector.where())
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                held = None
                if not failing:  # one line per outage, not one per try
                    log.warning(
                        "leader.arbiter_unreachable",
                        arbiter=self.elector.where(),
                        error=(str(exc) or type(exc).__name__)[:300],
                        leading=self.leading,
                    )
                failing = True
            if held:
                last_renewed = time.monotonic()
                if not self.leading:
                    self._gain()
            elif self.leading and (
                held is False or time.monotonic() - last_renewed > self.renew_deadline
            ):
                reason = "another replica holds it" if held is False else "could not renew"
                await self._lose(reason)
            await asyncio.sleep(max(0.0, self.retry_period - (time.monotonic() - started)))

    async def wait(self, leading: bool = True, within: float | None = None) -> bool:
        """Wait until this replica leads (or not); False when ``within`` seconds passed first."""
        deadline = None if within is None else time.monotonic() + within
        while self.leading is not leading:
            self._changed.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    def _gain(self) -> None:
        self.leading, self.since = True, time.monotonic()
        self.changes.append((time.time(), True))
        self._changed.set()
        telemetry.LEADER.set(1)
        log.info(
            "leader.elected",
            identity=self.elector.identity,
            elector=self.elector.kind,
            arbiter=self.elector.where(),
            work=sorted(self.work),
        )
        for name, work in self.work.items():
            self._start(name, work)

    def _start(self, name: str, work: Work) -> None:
        async def supervised() -> None:
            while True:
                try:
                    await work()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("leader.work_failed", work=name)
                    await asyncio.sleep(self.retry_period)

        self._tasks[name] = asyncio.create_task(supervised(), name=f"leader:{name}")

    async def _lose(self, reason: str) -> None:
        tasks, self._tasks = self._tasks, {}
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        if self.leading:
            self.changes.append((time.time(), False))
            say = log.info if reason == "shutting down" else log.warning
            say(
                "leader.stopped_leading",
                identity=self.elector.identity,
                reason=reason,
                led_for=round(time.monotonic() - (self.since or time.monotonic()), 1),
            )
        self.leading, self.since = False, None
        self._changed.set()
        telemetry.LEADER.set(0)

    async def stop(self) -> None:
        """Stop the singleton work and give the leadership up (shutdown)."""
        was_leading = self.leading
        await self._lose("shutting down")
        if was_leading:
            try:
                await asyncio.wait_for(self.elector.release(), max(self.renew_deadline, 1.0))
                log.info("leader.released", arbiter=self.elector.where())
            except Exception as exc:
                log.warning("leader.release_failed", error=(str(exc) or repr(exc))[:200])
        with contextlib.suppress(Exception):
            await self.elector.close()

    def status(self) -> dict[str, Any]:
        """For ``/healthz``: who this replica is in the election and whether it leads."""
        return {
            "identity": self.elector.identity,
            "elector": self.elector.kind,
            "leader": self.leading,
        }
