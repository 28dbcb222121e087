"""The first Kubernetes client is built off the event loop.

Importing the ``kubernetes`` library (its API classes load on first attribute access),
parsing the kubeconfig or the in-cluster service account and building the ``ApiClient``
take about a second on an idle machine and several on a busy one. Done on the event loop,
that stalled every other request (Slack events, ``/healthz``) and kept the inventory's own
timeout from firing, so a process's first request waited far longer than the one
``timeout`` :mod:`opsbot.inventory` promises. Here the configuration loader is made slow (it
sleeps in whatever thread calls it) and the loop must keep ticking meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kmock import KubernetesEmulator

from opsbot.config import Settings
from opsbot.inventory import Inventory
from opsbot.skills.base import Impersonation, NotConfigured, SkillRegistry
from opsbot.skills.kubernetes import Kubernetes, KubernetesConfig
from tests.fakes.kube import ClusterEmulator, seed, write_kubeconfig

pytestmark = pytest.mark.kmock(cls=ClusterEmulator)

SLOW = 2.0  # seconds the configuration takes to load
TICK = 0.05  # the period of the coroutine standing for every other request
MAX_GAP = 0.5  # the longest the loop may go without running it


class SlowLoader:
    """``kubernetes.config.load_kube_config`` taking :data:`SLOW` seconds longer, counting its
    calls and the threads it ran in (thread-safe: it only sleeps and appends)."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.threads: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.threads.append(threading.get_ident())
        time.sleep(SLOW)
        return self.real(*args, **kwargs)


@pytest.fixture
def slow_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowLoader]:
    import kubernetes.config

    loader = SlowLoader(kubernetes.config.load_kube_config)
    monkeypatch.setattr(kubernetes.config, "load_kube_config", loader)
    yield loader


@pytest.fixture
def backend(kmock: KubernetesEmulator, tmp_path: Path) -> Iterator[Kubernetes]:
    seed(kmock)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    yield Kubernetes(KubernetesConfig(kubeconfig=kubeconfig), Settings(backend_timeout=3.0))


class Ticker:
    """A coroutine that wakes every :data:`TICK` seconds and notes the longest gap."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.gap = 0.0
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            at = time.monotonic()
            self.gap, self.last = max(self.gap, at - self.last), at

    async def stop(self) -> float:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.gap = max(self.gap, time.monotonic() - self.last)
        return self.gap


async def test_a_slow_first_client_leaves_the_loop_serving_and_the_timeout_on_time(
    backend: Kubernetes, slow_config: SlowLoader
) -> None:
    inventory = Inventory(SkillRegistry([backend]), ttl=60.0, timeout=0.5)
    ticker = Ticker()
    await asyncio.sleep(TICK * 2)  # the ticker runs
    started = time.monotonic()
    first = await inventory.snapshot()  # waits for the first snapshot: one timeout at most
    waited = time.monotonic() - started
    assert first == {}  # Kubernetes did not answer in time: nothing to ground on yet
    assert waited < 1.2, f"the first snapshot waited {waited:.2f}s (timeout 0.5s)"
    assert await ticker.stop() < MAX_GAP, f"the event loop stalled {ticker.gap:.2f}s"

    # the build was not given up with the request that timed out: it ends in the background
    # and the next refresh uses it, without loading the configuration again
    ticker = Ticker()
    api = await asyncio.wait_for(backend.api(), SLOW + 2.0)
    assert await ticker.stop() < MAX_GAP, f"the event loop stalled {ticker.gap:.2f}s"
    assert len(slow_config.threads) == 1
    assert threading.get_ident() not in slow_config.threads  # never on the loop's thread
    names = await backend.inventory()
    assert names["deployment/shop"] == {"checkout", "payments"}
    assert await backend.api() is api
    await backend.aclose()


async def test_concurrent_first_callers_share_one_build(
    backend: Kubernetes, slow_config: SlowLoader
) -> None:
    alice = Impersonation(user="alice@example.com", groups=("sre",))
    ticker = Ticker()
    started = time.monotonic()
    apis = await asyncio.gather(
        *(backend.api() for _ in range(4)), *(backend.api(alice) for _ in range(4))
    )
    took = time.monotonic() - started
    assert await ticker.stop() < MAX_GAP, f"the event loop stalled {ticker.gap:.2f}s"
    assert len(slow_config.threads) == 1  # one configuration load for all eight callers
    assert took < SLOW + 1.5  # the callers waited for the same load, not one after another
    assert len({id(a) for a in apis[:4]}) == 1 and len({id(a) for a in apis[4:]}) == 1
    assert apis[0] is not apis[4] and apis[4].identity == alice
    assert await backend.api() is apis[0] and await backend.api(alice) is apis[4]
    await backend.aclose()


async def test_a_failed_load_is_tried_again_and_aclose_drops_a_build_under_way(
    backend: Kubernetes, slow_config: SlowLoader, tmp_path: Path
) -> None:
    good = backend.config.kubeconfig
    assert good is not None
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n")
    backend.config.kubeconfig = bad
    with pytest.raises(NotConfigured, match="invalid kubeconfig"):
        await backend.api()
    backend.config.kubeconfig = good
    assert await backend.api() is not None  # the failure was not kept: loaded again
    assert len(slow_config.threads) == 2

    await backend.aclose()
    pending = asyncio.ensure_future(backend.api())  # a load under way when the backend closes
    await asyncio.sleep(0.2)
    await backend.aclose()
    assert await pending is not None  # the caller still gets its client...
    assert backend._client is None and not backend._apis  # ...but it is not kept
    await backend.aclose()


COLD = """
import asyncio, json, sys, time
from pathlib import Path

from opsbot.config import Settings
from opsbot.skills.kubernetes import Kubernetes, KubernetesConfig

async def main() -> None:
    backend = Kubernetes(KubernetesConfig(kubeconfig=Path(sys.argv[1])), Settings())
    assert not backend.missing()
    before = sorted(m for m in sys.modules if m.split(".")[0] == "kubernetes")
    gap, last = 0.0, time.monotonic()

    async def tick() -> None:
        nonlocal gap, last
        while True:
            await asyncio.sleep(0.01)
            at = time.monotonic()
            gap, last = max(gap, at - last), at

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await backend.api()
    took = time.monotonic() - started
    ticker.cancel()
    gap = max(gap, time.monotonic() - last)
    print(json.dumps({"before": before, "took": took, "gap": gap}))

asyncio.run(main())
"""


def test_a_cold_process_builds_its_first_client_off_the_loop(tmp_path: Path) -> None:
    """In a fresh interpreter (nothing of ``kubernetes`` imported yet, as in ``opsbot
    serve``): the library is not imported before the first call, and the import, the
    configuration and the ``ApiClient`` (about 0.9s here idle) do not stall the loop."""
    import json
    import subprocess
    import sys

    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-c", COLD, str(kubeconfig)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["before"] == []
    assert found["gap"] < min(0.5, found["took"] / 2), found
