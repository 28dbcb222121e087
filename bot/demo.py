"""A local, real Prometheus + Alertmanager with live data, for ``opsbot demo`` and the tests.

:class:`DemoExporter` serves shop traffic metrics (``http_requests_total``,
``http_request_duration_seconds``) for checkout, payments and cart, with checkout failing
often enough to fire the ``HighErrorRate`` alert within seconds. :class:`LocalStack` writes
the configs, starts ``prometheus`` (1 s scrape and evaluation, ``--rules.alert.resend-delay=1s``)
and ``prometheus-alertmanager`` on 127.0.0.1, waits until both are ready and stops them.
Binaries come from the Debian packages ``prometheus`` and ``prometheus-alertmanager``.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import start_http_server

from opsbot.demo_cluster import BackgroundCluster

PROMETHEUS_BIN = "prometheus"
ALERTMANAGER_BINS = ("prometheus-alertmanager", "alertmanager")
#: service -> (requests per tick, error ratio, typical latency in seconds)
SERVICES = {"checkout": (6, 0.2, 0.3), "payments": (3, 0.01, 0.05), "cart": (2, 0.0, 0.03)}

ALERT_RULES = """groups:
  - name: opsbot-demo
    interval: 1s
    rules:
      - alert: HighErrorRate
        expr: |
          sum by (service, namespace) (rate(http_requests_total{code=~"5.."}[15s]))
            / sum by (service, namespace) (rate(http_requests_total[15s])) > 0.05
        for: 0s
        labels: {severity: critical}
        annotations:
          summary: "{{ $labels.service }} is failing {{ $value | humanizePercentage }} of requests"
      - alert: ServiceDown
        expr: up{job="shop"} == 0
        for: 5s
        labels: {severity: warning}
        annotations: {summary: "the shop exporter is down"}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_alertmanager() -> str | None:
    for name in ALERTMANAGER_BINS:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_binaries() -> list[str]:
    missing = []
    if not shutil.which(PROMETHEUS_BIN):
        missing.append("prometheus")
    if not find_alertmanager():
        missing.append("prometheus-alertmanager")
    return missing


class DemoExporter:
    """Simulated shop traffic on its own registry, served on ``127.0.0.1:port/metrics``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests",
            ["service", "namespace", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["service", "namespace"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        #: service -> (requests per tick, error ratio, latency): change it to change the traffic
        self.services = dict(SERVICES)
        self._rng = random.Random(7)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._traffic, daemon=True, name="demo-traffic")
        self._server: object | None = None

    def start(self) -> DemoExporter:
        self._server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self._tick()
        self._thread.start()
        return self

    def _tick(self) -> None:
        rng = self._rng
        for service, (count, error_ratio, latency) in list(self.services.items()):
            for _ in range(count):
                code = "500" if rng.random() < error_ratio else "200"
                self.requests.labels(service, "shop", code).inc()
                self.duration.labels(service, "shop").observe(rng.expovariate(1 / latency))

    def _traffic(self) -> None:
        while not self._stop.wait(0.1):
            self._tick()

    def stop(self) -> None:
        self._stop.set()
        shutdown = getattr(self._server, "shutdown", None)
        if shutdown:
            shutdown()


def wait_ready(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{url}: the server exited with {proc.returncode} before becoming ready"
            )
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout:g}s ({last})")


@dataclass
class LocalStack:
    """Exporter + Prometheus + Alertmanager in ``workdir`` (a temporary folder by default),
    and the emulated Kubernetes API of the same shop unless ``kubernetes=False``."""

    workdir: Path | None = None
    exporter: DemoExporter | None = None
    prometheus_url: str = ""
    alertmanager_url: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    #: also run the emulated Kubernetes API (opsbot.demo_cluster) and export KUBECONFIG
    kubernetes: bool = True
    cluster: BackgroundCluster | None = None
    kubeconfig: Path | None = None
    _kubeconfig_before: str | None = None
    #: Alertmanager notifies this webhook (``opsbot serve``'s ``/alertmanager``) instead of no one
    webhook_url: str = ""
    #: the bearer token Alertmanager sends it (its ``http_config.authorization``)
    webhook_token: str = ""
    #: how soon Alertmanager sends an unchanged alert group again (its ``repeat_interval``)
    repeat_interval: str = "1h"
    #: the alerting rules Prometheus evaluates
    rules: str = ALERT_RULES

    def start(self) -> LocalStack:
        missing = missing_binaries()
        if missing:
            raise FileNotFoundError(
                "missing "
                + ", ".join(missing)
                + ": install the Debian packages (apt-get install --no-install-recommends prometheus "
                "prometheus-alertmanager) or set PROMETHEUS_URL and ALERTMANAGER_URL"
            )
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="opsbot-stack-")
            self.workdir = Path(self._tmp.name)
        work = self.workdir
        work.mkdir(parents=True, exist_ok=True)
        self.exporter = DemoExporter().start()
        am_port, prom_port = free_port(), free_port()
        self.alertmanager_url = f"http://127.0.0.1:{am_port}"
        self.prometheus_url = f"http://127.0.0.1:{prom_port}"
        (work / "alertmanager.yml").write_text(self._alertmanager_config())
        (work / "rules.yml").write_text(self.rules)
        (work / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [rules.yml]\n"
            f"alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}\n"
            "scrape_configs:\n"
            f"  - job_name: shop\n    static_configs: [{{targets: ['127.0.0.1:{self.exporter.port}']}}]\n"
            f"  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{prom_port}']}}]\n"
        )
        log = (work / "servers.log").open("ab")
        am = find_alertmanager()
        assert am is not None
        self.procs.append(
            subprocess.Popen(
                [
                    am,
                    f"--config.file={work / 'alertmanager.yml'}",
                    f"--storage.path={work / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                stdout=log,
                stderr=log,
                cwd=work,
            )
        )
        self.procs.append(
            subprocess.Popen(
                [
                    PROMETHEUS_BIN,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--rules.alert.resend-delay=1s",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=log,
                cwd=work,
            )
        )
        try:
            wait_ready(f"{self.alertmanager_url}/-/ready", proc=self.procs[0])
            wait_ready(f"{self.prometheus_url}/-/ready", proc=self.procs[1])
        except Exception:
            self.stop()
            raise
        if self.kubernetes:
            try:
                self._start_cluster(work)
            except Exception as exc:
                self.stop()
                raise RuntimeError(f"the emulated Kubernetes API did not start: {exc}") from exc
        return self

    def _alertmanager_config(self) -> str:
        """Alertmanager's config: groups by alert, service and namespace, at once (1 s), to
        :attr:`webhook_url` when there is one."""
        route = (
            "route: {receiver: %s, group_by: [alertname, service, namespace], group_wait: 1s, "
            f"group_interval: 1s, repeat_interval: {self.repeat_interval}}}\n"
        )
        if not self.webhook_url:
            return route % "'null'" + "receivers: [{name: 'null'}]\n"
        auth = (
            f"\n      http_config: {{authorization: {{credentials: '{self.webhook_token}'}}}}"
            if self.webhook_token
            else ""
        )
        return (
            route % "opsbot"
            + "receivers:\n  - name: opsbot\n    webhook_configs:\n"
            + f"    - url: '{self.webhook_url}'\n      send_resolved: true{auth}\n"
        )

    @property
    def database_url(self) -> str:
        """A SQLite database of this stack's own, in its work folder: approvals left pending
        by an earlier demo never act on this stack (its objects are new)."""
        if self.workdir is None:
            raise RuntimeError("the stack has no work folder before it starts")
        return f"sqlite+aiosqlite:///{self.workdir / 'opsbot.db'}"

    def _start_cluster(self, work: Path) -> None:
        """The shop as a Kubernetes API (:mod:`opsbot.demo_cluster`); ``KUBECONFIG`` points
        this process (the bot) at it until :meth:`stop`."""
        self.cluster = BackgroundCluster(work / "kubeconfig").start()
        self.kubeconfig = self.cluster.kubeconfig
        self._kubeconfig_before = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(self.kubeconfig)
        print(
            f"local Kubernetes API (emulated) {self.cluster.url}, kubeconfig {self.kubeconfig}\n"
            f"  try: kubectl --kubeconfig {self.kubeconfig} get deploy -n shop",
            file=sys.stderr,
        )

    def wait_for_alert(self, alertname: str = "HighErrorRate", timeout: float = 60.0) -> None:
        """Block until Alertmanager lists ``alertname`` as active."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alerts = httpx.get(f"{self.alertmanager_url}/api/v2/alerts", timeout=2).json()
            if any(a["labels"].get("alertname") == alertname for a in alerts):
                return
            time.sleep(0.5)
        raise TimeoutError(f"{alertname} did not reach Alertmanager within {timeout:g}s")

    def stop(self) -> None:
        if self.cluster:
            self.cluster.stop()
            self.cluster = None
            if self._kubeconfig_before is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = self._kubeconfig_before
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        if self.exporter:
            self.exporter.stop()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
