"""``incident.triage`` through the engine: the real Prometheus and Alertmanager (the ``stack``
fixture: HighErrorRate fires on checkout in shop), the fake Loki seeded with error lines
before and after the alert's start, and the kmock cluster with a rollout of checkout a few
minutes before it, a crash-looping pod and warning events. Each evidence read shows in the
thread (plan, policy, result), then the chart, the summary and the suggested actions; a
click on one runs as the clicker's own request through policy and approval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from kmock import KubernetesEmulator

from opsbot.demo import LocalStack
from opsbot.model import ActionButton, Actor, Image, Invocation, Request, Run, Table
from opsbot.skills.alertmanager import Alertmanager
from opsbot.skills.incident import (
    Incident,
    IncidentTriage,
    TriageArgs,
    action_id,
    rollout_of,
    service_of,
)
from opsbot.skills.kubernetes import Kubernetes
from opsbot.skills.loki import Loki
from opsbot.skills.prometheus import Prometheus
from opsbot.testing import Messages, TestBot
from tests.fakes.kube import (
    PODS,
    REPLICASETS,
    ClusterEmulator,
    complete_rollout,
    pod,
    seed,
    write_kubeconfig,
)
from tests.fakes.loki import NS, FakeLoki

pytestmark = pytest.mark.kmock(cls=ClusterEmulator)

CHECKOUT = {"service": "checkout", "namespace": "shop", "pod": "checkout-bbb-1"}
NEW_PATTERN = "payment gateway timeout"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def firing_since(stack: LocalStack, alertname: str = "HighErrorRate") -> datetime:
    """When the alert on checkout started, once Alertmanager lists it active and unsilenced
    (a silence an earlier test expired takes a moment to let go)."""
    async with httpx.AsyncClient(base_url=stack.alertmanager_url) as am, asyncio.timeout(20):
        while True:
            for alert in (await am.get("/api/v2/alerts")).json():
                labels = alert["labels"]
                if (
                    labels.get("alertname") == alertname
                    and labels.get("service") == "checkout"
                    and alert["status"]["state"] == "active"
                ):
                    return datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00"))
            await asyncio.sleep(0.2)


def seed_logs(loki: FakeLoki, start: datetime) -> None:
    """Errors before the start (one stops, one goes on) and a new pattern after it."""
    now = time.time_ns()

    def before(minutes: int) -> int:
        return int((start - timedelta(minutes=minutes)).timestamp() * NS)

    loki.push(
        CHECKOUT,
        [
            (before(25), "ERROR cache warmup failed for key session-1"),
            (before(24), "ERROR cache warmup failed for key session-2"),
            (before(20), "ERROR db connection refused 10.0.0.12:5432"),
            (before(15), "ERROR db connection refused 10.0.0.13:5432"),
            (now - 3 * NS, "ERROR payment gateway timeout after 3001ms for order 1001"),
            (now - 2 * NS, "ERROR payment gateway timeout after 2950ms for order 1002"),
            (now - 2 * NS + 1, "ERROR payment gateway timeout after 3120ms for order 1003"),
            (now - 1 * NS, "ERROR db connection refused 10.0.0.12:5432"),
        ],
    )


def seed_cluster(kmock: KubernetesEmulator, start: datetime) -> None:
    """The shop of tests/fakes/kube.py, with checkout's revision 3 rolled out 4 minutes
    before the alert (revision 2 three days before) and payments crash-looping (4 pods)."""
    seed(kmock)
    rs = kmock.objects[kmock.resource(*REPLICASETS), "shop", "checkout-bbb"]
    rs.patch({"metadata": {"creationTimestamp": stamp(start - timedelta(minutes=4))}})
    old = kmock.objects[kmock.resource(*REPLICASETS), "shop", "checkout-aaa"]
    old.patch({"metadata": {"creationTimestamp": stamp(start - timedelta(days=3))}})
    for n in range(2, 6):
        name = f"payments-ccc-{n}"
        kmock.objects[kmock.resource(*PODS), "shop", name] = pod(
            name, "shop", "payments", reason="CrashLoopBackOff", ready=False, restarts=n
        )


@pytest.fixture
async def loki() -> AsyncIterator[FakeLoki]:
    async with FakeLoki() as fake:
        yield fake


@pytest.fixture
def charts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """What each chart saved shows: its texts (title, annotations) and vertical lines."""
    import matplotlib.figure

    seen: list[dict[str, Any]] = []
    save = matplotlib.figure.Figure.savefig

    def savefig(fig: Any, *args: Any, **kwargs: Any) -> Any:
        texts = [fig._suptitle.get_text()] if fig._suptitle else []
        vertical = 0
        for ax in fig.axes:
            texts += [t.get_text() for t in ax.texts]
            vertical += sum(1 for line in ax.get_lines() if line.get_linestyle() == "--")
        seen.append({"texts": texts, "vertical": vertical})
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    yield seen


def setup(
    bot: TestBot,
    stack: LocalStack,
    *,
    loki: str | None = None,
    kubeconfig: Path | None = None,
) -> None:
    bot.add_backend(Prometheus, url=stack.prometheus_url)
    bot.add_backend(Alertmanager, url=stack.alertmanager_url)
    if loki is not None:
        bot.add_backend(Loki, url=loki)
    if kubeconfig is not None:
        bot.add_backend(Kubernetes, kubeconfig=kubeconfig)
    bot.add_backend(Incident)


def triage_result(reply: Messages) -> Any:
    [message] = [m for m in reply if m.step.value == "result" and "`incident.triage`" in m.plain]
    return message


def reads(reply: Messages) -> dict[str, list[str]]:
    """The steps of each evidence read: plan, policy, result (or error) lines by skill."""
    steps: dict[str, list[str]] = {}
    for m in reply:
        text = m.plain
        for skill in (
            "alerts.list",
            "service.health",
            "logs.errors",
            "k8s.pods",
            "k8s.events",
            "k8s.rollout.history",
        ):
            if f"Plan (incident.triage): `{skill} " in text:
                steps.setdefault(skill, []).append("plan")
            elif m.step.value in ("result", "error") and text.startswith(f"`{skill}`"):
                steps.setdefault(skill, []).append(m.step.value)
    return steps


# -- the whole triage ------------------------------------------------------------------------


async def test_an_alert_is_triaged_with_evidence_a_chart_a_summary_and_suggested_actions(
    opsbot_bot: TestBot,
    stack: LocalStack,
    loki: FakeLoki,
    kmock: KubernetesEmulator,
    tmp_path: Path,
    charts: list[dict[str, Any]],
) -> None:
    start = await firing_since(stack)
    seed_logs(loki, start)
    seed_cluster(kmock, start)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    setup(opsbot_bot, stack, loki=loki.url, kubeconfig=kubeconfig)

    began = time.monotonic()
    reply = await opsbot_bot.ask("triage HighErrorRate", as_="shell:alice")
    took = time.monotonic() - began
    assert took < 9, f"the triage took {took:.1f}s, over its budget"
    assert "Plan (offline): `incident.triage alert=HighErrorRate" in reply.text, reply.text

    # every evidence read ran as this request: planned, allowed by policy, answered
    steps = reads(reply)
    for skill in ("alerts.list", "service.health", "logs.errors", "k8s.pods", "k8s.events"):
        assert steps.get(skill) == ["plan", "result"], (skill, steps, reply.text)
    assert steps.get("k8s.rollout.history") == ["plan", "result"], steps
    assert reply.text.count("Allowed by rule **everyone reads**") >= 7, reply.text
    assert (
        "Plan (incident.triage): `service.health service=checkout namespace=shop chart=False`"
        in reply.text
    )

    message = triage_result(reply)
    text = message.plain
    # the alert's own data and the summary tying the evidence together
    assert "**HighErrorRate** (critical) firing since" in text, text
    assert "checkout is failing" in text  # its summary annotation
    assert (
        "A deploy of **checkout** (revision 3, `app=shop/checkout:1.3`) 4 min before the alert"
        in text
    ), text
    assert "Error ratio" in text and "since the start" in text
    assert "New error pattern since the start: `ERROR payment gateway timeout after" in text, text
    assert "Most likely cause: the checkout deploy (revision 3)" in text, text
    assert "**payments**: 4 pods in CrashLoopBackOff" in text, text
    assert "BackOff on checkout-bbb-2" in text
    # new patterns first, then the one that goes on, then the one that stopped
    [patterns, kube] = [b for b in message.blocks if isinstance(b, Table)]
    assert [row[0] for row in patterns.rows] == ["new", "ongoing", "stopped"], patterns.rows
    assert NEW_PATTERN in patterns.rows[0][3] and patterns.rows[0][1] == "3"
    assert kube.rows[0][:2] == ["rollout", "deployment/checkout"], kube.rows

    # the chart: request rate and error ratio, the alert start and the deploy marked
    [image] = [b for b in message.blocks if isinstance(b, Image)]
    assert image.data.startswith(b"\x89PNG")
    mine = [c for c in charts if any("request rate and error ratio" in t for t in c["texts"])]
    assert mine, charts
    assert any(t.startswith("HighErrorRate started") for t in mine[-1]["texts"]), mine
    assert any(t == "checkout rev 3" for t in mine[-1]["texts"]), mine
    assert mine[-1]["vertical"] == 4  # two markers across two panels

    # the suggested actions: complete, valid invocations with unique short ids
    buttons = [b for b in message.blocks if isinstance(b, ActionButton)]
    labels = [b.label for b in buttons]
    assert labels == [
        "roll back checkout to revision 2 (revision 3 deployed 4 min before the alert)",
        "restart payments (4 pods in CrashLoopBackOff)",
        "silence HighErrorRate (service=checkout, namespace=shop) for 1h",
    ], labels
    assert len({b.id for b in buttons}) == 3 and all(len(b.id) == 12 for b in buttons)
    registry = opsbot_bot.services.registry
    for button in buttons:
        skill = registry.get(button.invocation.skill)
        assert skill is not None
        skill.parse_args(button.invocation.args)  # valid as they stand
    rollback, restart, silence = (b.invocation for b in buttons)
    assert rollback == Invocation(
        skill="k8s.rollback", args={"name": "checkout", "namespace": "shop", "revision": 2}
    )
    assert restart.args == {"name": "payments", "namespace": "shop"}
    assert silence.args["matchers"] == {
        "alertname": "HighErrorRate",
        "service": "checkout",
        "namespace": "shop",
    }

    # clicking the rollback: the clicker's own request, two approvals, run once
    clicked = await opsbot_bot.click(buttons[0], as_="shell:alice")
    assert "Plan (button): `k8s.rollback name=checkout namespace=shop revision=2`" in clicked.text
    [approval_id] = clicked.approvals
    assert "Needs approval by 2" in clicked.text, clicked.text

    def patches() -> list[Any]:
        return [r for r in kmock if r.method.value == "PATCH" and r.params.get("dryRun") != "All"]

    assert patches() == []
    await opsbot_bot.click(approval_id, as_="shell:bob")
    assert patches() == []  # one of two approvals
    controller = asyncio.create_task(_complete(kmock))
    done = await opsbot_bot.click(approval_id, as_="shell:carol")
    await controller
    assert "approved by shell:carol; running it now" in done.text, done.text
    assert len(patches()) == 1
    again = await opsbot_bot.click(approval_id, as_="shell:carol")
    assert len(patches()) == 1, again.text  # exactly once


async def _complete(kmock: KubernetesEmulator) -> None:
    await asyncio.sleep(0.3)
    complete_rollout(kmock, "shop", "checkout")


# -- what could not be gathered --------------------------------------------------------------


async def test_loki_down_the_triage_still_answers_and_says_loki_failed(
    opsbot_bot: TestBot, stack: LocalStack
) -> None:
    await firing_since(stack)
    setup(opsbot_bot, stack, loki="http://127.0.0.1:9")  # nothing listens there
    reply = await opsbot_bot.ask("why is checkout slow?", as_="shell:alice")
    assert "Plan (offline): `incident.triage service=checkout" in reply.text, reply.text
    text = triage_result(reply).plain
    assert "Loki failed: Loki at http://127.0.0.1:9 is unreachable (ConnectError)" in text, text
    assert "Kubernetes skipped: not installed" in text
    # the alert on the service was found and its start used; the metrics were read
    assert "**HighErrorRate** (critical) firing since" in text, text
    assert "Error ratio" in text
    assert "silence HighErrorRate (service=checkout, namespace=shop) for 1h" in text
    assert "roll back" not in text


@pytest.mark.opsbot(settings={"backend_timeout": 1.0})
async def test_a_slow_loki_is_cut_off_within_the_budget(
    opsbot_bot: TestBot, stack: LocalStack
) -> None:
    async with FakeLoki(delay=30) as slow:
        setup(opsbot_bot, stack, loki=slow.url)
        began = time.monotonic()
        reply = await opsbot_bot.ask("what's wrong with checkout in shop", as_="shell:alice")
        took = time.monotonic() - began
    assert took < 3.2, took  # the triage's budget: 3 backend timeouts
    text = triage_result(reply).plain
    assert "Loki failed: no answer within" in text, text
    assert "Error ratio" in text


async def test_an_alert_for_a_service_nothing_knows_answers_from_the_alert(
    opsbot_bot: TestBot,
    stack: LocalStack,
    loki: FakeLoki,
    kmock: KubernetesEmulator,
    tmp_path: Path,
) -> None:
    seed(kmock)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    setup(opsbot_bot, stack, loki=loki.url, kubeconfig=kubeconfig)
    labels = {
        "alertname": "LedgerDiskFull",
        "service": "ledger",
        "namespace": "vault",
        "severity": "warning",
    }
    annotations = {
        "summary": "ledger's disk is 97% full",
        "description": "the ledger volume fills at 2 GB/h",
        "runbook_url": "https://runbooks.example.com/ledger-disk",
    }
    async with httpx.AsyncClient(base_url=stack.alertmanager_url) as am:
        ends = datetime.now(UTC) + timedelta(minutes=2)
        alert = {"labels": labels, "annotations": annotations, "endsAt": ends.isoformat()}
        await am.post("/api/v2/alerts", json=[alert])
        try:
            reply = await opsbot_bot.ask("look into LedgerDiskFull", as_="shell:alice")
        finally:  # resolve it: other tests see only the demo's alerts
            alert["endsAt"] = datetime.now(UTC).isoformat()
            await am.post("/api/v2/alerts", json=[alert])
    message = triage_result(reply)
    text = message.plain
    assert "**LedgerDiskFull** (warning) firing since" in text, text
    assert "on ledger in vault: ledger's disk is 97% full." in text, text
    assert "the ledger volume fills at 2 GB/h" in text
    assert "[runbook](https://runbooks.example.com/ledger-disk)" in text
    assert "service.health: no metrics for ledger in vault" in text, text
    assert "Loki: Loki has no logs of ledger" in text, text
    assert "Kubernetes: no deployment in vault runs ledger" in text, text
    assert [b.label for b in message.blocks if isinstance(b, ActionButton)] == [
        "silence LedgerDiskFull (service=ledger, namespace=vault) for 1h"
    ]


async def test_a_namespace_is_triaged_from_kubernetes_alone(
    opsbot_bot: TestBot, kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    seed_cluster(kmock, datetime.now(UTC))  # checkout's revision 3: 4 minutes ago
    opsbot_bot.add_backend(
        Kubernetes, kubeconfig=write_kubeconfig(tmp_path / "kc", str(kmock.url).rstrip("/"))
    )
    opsbot_bot.add_backend(Incident)
    reply = await opsbot_bot.ask("triage namespace shop", as_="shell:alice")
    steps = reads(reply)
    assert steps == {
        "k8s.pods": ["plan", "result"],
        "k8s.events": ["plan", "result"],
        "k8s.rollout.history": ["plan", "result"],
    }, steps
    message = triage_result(reply)
    text = message.plain
    assert "Triage of **namespace shop** over the last 1h." in text, text
    assert "A deploy of **checkout** (revision 3, `app=shop/checkout:1.3`) 4 min ago." in text
    assert "Alertmanager skipped: not installed" in text
    assert "Prometheus skipped: no service named" in text
    assert [b.label for b in message.blocks if isinstance(b, ActionButton)] == [
        "roll back checkout to revision 2 (revision 3 deployed 4 min ago)",
        "restart payments (4 pods in CrashLoopBackOff)",
    ]


async def test_a_service_in_several_namespaces_is_not_guessed(
    opsbot_bot: TestBot, kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    seed(kmock)  # checkout runs in shop and in staging
    opsbot_bot.add_backend(
        Kubernetes, kubeconfig=write_kubeconfig(tmp_path / "kc", str(kmock.url).rstrip("/"))
    )
    opsbot_bot.add_backend(Incident)
    reply = await opsbot_bot.ask("why is checkout slow?", as_="shell:alice")
    text = triage_result(reply).plain
    assert "Kubernetes skipped: checkout runs in shop, staging: ask again with a namespace" in text
    assert not reads(reply)  # nothing read on a guess
    assert not reply.actions


async def test_a_read_the_policy_refuses_is_said_and_none_of_its_evidence_is_used(
    opsbot_bot: TestBot, kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    seed_cluster(kmock, datetime.now(UTC))
    opsbot_bot.add_backend(
        Kubernetes, kubeconfig=write_kubeconfig(tmp_path / "kc", str(kmock.url).rstrip("/"))
    )
    opsbot_bot.add_backend(Incident)
    opsbot_bot.use_policy(
        "rules:\n"
        "  - name: triage without pods\n"
        '    subjects: ["*"]\n'
        "    skills: [incident.triage, k8s.events, k8s.rollout.history]\n"
        "    effect: allow\n"
    )
    reply = await opsbot_bot.ask("triage namespace shop", as_="shell:alice")
    assert "Refused" in reply.text or "Denied" in reply.text, reply.text
    text = triage_result(reply).plain
    assert "k8s.pods failed: k8s.pods was not run for you here" in text, text
    assert "CrashLoopBackOff" not in text  # the pods it was not allowed to read
    assert "BackOff on checkout-bbb-2" in text  # the events it was
    assert "restart payments" not in text


# -- routing and the pieces ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "args"),
    [
        ("why is checkout slow?", {"service": "checkout"}),
        ("what's wrong with payments in shop", {"service": "payments", "namespace": "shop"}),
        ("look into KubePodCrashLooping", {"alert": "KubePodCrashLooping"}),
        ("frontend is throwing 500s, dig in", {"service": "frontend", "since": "1h"}),
        (
            "[FIRING:1] HighErrorRate (checkout shop critical)",
            {"alert": "HighErrorRate", "since": "1h"},
        ),
        (
            "[FIRING:2] KubePodCrashLooping (cart-7f9c8d6b5-zt4rp shop)",
            {"alert": "KubePodCrashLooping", "service": "cart"},
        ),
    ],
)
async def test_open_ended_diagnosis_routes_to_the_triage(
    opsbot_bot: TestBot, text: str, args: dict[str, str]
) -> None:
    opsbot_bot.add_backend(Incident)
    await opsbot_bot.start()
    engine = opsbot_bot.engine
    actor = Actor(id="shell:alice")
    plan = await engine.planner.plan(
        Request(actor=actor, channel="shell", text=text), engine.catalog(actor, "shell")
    )
    assert isinstance(plan, Run), plan
    [invocation] = plan.invocations
    assert invocation.skill == "incident.triage"
    assert {k: invocation.args.get(k) for k in args} == args, invocation.args


def test_the_service_of_an_alert_comes_from_its_labels() -> None:
    assert service_of({"service": "checkout", "app": "x"}) == "checkout"
    assert service_of({"app": "cart"}) == "cart"
    assert service_of({"pod": "cart-7f9c8d6b5-zt4rp", "container": "app"}) == "cart"
    assert service_of({"container": "payments"}) == "payments"
    assert service_of({"job": "kube-state-metrics"}) is None


def test_a_rollback_to_an_old_replicaset_dates_the_rollout_by_its_scale_up() -> None:
    from tests.fakes.kube import deployment, event, replicaset

    dep = deployment("checkout", "shop", revision=4)
    old = replicaset(dep, 4, "shop/checkout:1.2", "aaa")  # revision 2 brought back as 4
    newer = replicaset(dep, 3, "shop/checkout:1.3", "bbb")
    at = datetime.now(UTC) - timedelta(minutes=6)
    scaled = event(
        "shop",
        "checkout",
        "ScalingReplicaSet",
        "Scaled up replica set checkout-aaa from 0 to 2",
        kind="Deployment",
        at=stamp(at),
    )
    rollout = rollout_of(dep, [old, newer], [scaled])
    assert rollout is not None
    assert (rollout.revision, rollout.previous, rollout.image) == (4, 3, "app=shop/checkout:1.2")
    assert rollout.at == at.replace(microsecond=0)


def test_action_ids_are_short_and_stable_per_incident() -> None:
    restart = Invocation(skill="k8s.restart", args={"name": "a", "namespace": "shop"})
    assert action_id("t1|x", restart) == action_id("t1|x", restart)
    assert action_id("t1|x", restart) != action_id("t2|x", restart)
    assert len(action_id("t1|x", restart)) == 12


def test_the_triage_needs_a_subject() -> None:
    with pytest.raises(ValueError, match="say what to triage"):
        TriageArgs.model_validate({})
    assert IncidentTriage().namespaced
