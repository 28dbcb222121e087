"""A question from the bot takes a short answer (issue 10, item 6): the request waits in its
thread, in the database, and the requester's next message there completes it; known choices
are buttons that run it whole as the clicker's own request."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kmock import KubernetesEmulator
from pydantic import BaseModel
from rich.console import Console
from sqlalchemy import update

from opsbot.adapters.shell import ShellRenderer, run_command
from opsbot.audit import AuditEvent
from opsbot.durations import Duration
from opsbot.intent.offline import OfflineRouter
from opsbot.inventory import Inventory
from opsbot.model import Actor, Clarify, Invocation, Request, SkillResult, Step
from opsbot.policy import BUNDLED_POLICIES
from opsbot.skills.base import Skill, SkillContext
from opsbot.skills.kubernetes import Kubernetes
from opsbot.store import ClarificationRow, now
from opsbot.testing import Messages, TestBot
from tests.fakes.kube import DEPLOYMENTS, ClusterEmulator, seed, write_kubeconfig

ALICE, BOB, DAVE = (Actor(id=f"shell:{n}") for n in ("alice", "bob", "dave"))
LOGS = "show me the errors in the checkout logs"
#: the bundled policy, with a second SRE (dave) who may restart with on-call approval
POLICY = (
    (BUNDLED_POLICIES / "default.yaml")
    .read_text()
    .replace("sre:    [shell:alice]", "sre:    [shell:alice, shell:dave]")
)


def no_cluster(bot: TestBot, tmp_path: Path) -> None:
    """The Kubernetes skills, on a cluster opsbot cannot reach: no names to ground against,
    so the router has to ask for the namespace."""
    bot.add_backend(Kubernetes, kubeconfig=tmp_path / "no-such-kubeconfig")


def cluster(bot: TestBot, kmock: KubernetesEmulator, tmp_path: Path) -> None:
    """The shop on kmock: checkout in shop and in staging, payments, cart."""
    seed(kmock)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url).rstrip("/"))
    bot.add_backend(Kubernetes, kubeconfig=kubeconfig)


def planned(thread: Messages) -> list[str]:
    return [m.plain for m in thread if m.step is Step.PLAN]


# -- a typed answer ----------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["shop", "in shop", "namespace shop"])
async def test_missing_namespace_is_completed_by_a_short_answer(
    opsbot_bot: TestBot, tmp_path: Path, answer: str
) -> None:
    no_cluster(opsbot_bot, tmp_path)
    asked = await opsbot_bot.ask(LOGS, as_=ALICE)
    assert "To run `k8s.logs` I need `namespace`" in asked.text and planned(asked) == []

    done = await opsbot_bot.ask(answer, as_=ALICE, thread=asked[0].thread)
    assert planned(done) == [
        "Plan (offline): `k8s.logs name=checkout namespace=shop tail=100` — your answer "
        "completes the request asked about in this thread"
    ]
    assert "Just answer with it here" in asked.text
    assert {m.thread for m in done} == {asked[0].thread}
    assert "Allowed by rule **everyone reads**" in done.text
    # it ran (the cluster is unreachable here, which the result says)
    assert "k8s.logs" in done.text and "not configured" in done.text
    [plan] = [
        r
        for r in await opsbot_bot.services.audit.search(event=AuditEvent.PLAN)
        if r.outcome == "invoke"
    ]
    assert (plan.actor, plan.args) == (
        "shell:alice",
        {"name": "checkout", "namespace": "shop", "tail": 100},
    )
    # the question is used up: the same word again is a request of its own
    again = await opsbot_bot.ask(answer, as_=ALICE, thread=asked[0].thread)
    assert planned(again) == []


class SpendArgs(BaseModel):
    since: Duration


class Spend(Skill[SpendArgs]):
    """A read whose one argument is a duration it cannot do without."""

    name = "toy.spend"
    summary = "What the cloud cost over a time range"
    Args = SpendArgs
    keywords: ClassVar[dict[str, float]] = {"spend": 3.0, "cost": 3.0}

    async def run(self, args: SpendArgs, ctx: SkillContext[Any]) -> SkillResult:
        return SkillResult(summary=f"spent 12 EUR in the last {args.since}")


SPEND_POLICY = """
rules:
  - name: everyone reads
    subjects: ["*"]
    skills: [toy.spend, help]
    effect: allow
"""


@pytest.mark.opsbot(skills=[Spend()], policy=SPEND_POLICY)
async def test_a_duration_answers_for_a_missing_duration(opsbot_bot: TestBot) -> None:
    asked = await opsbot_bot.ask("what did we spend", as_=ALICE)
    assert "To run `toy.spend` I need `since`" in asked.text

    done = await opsbot_bot.ask("the last 2h", as_=ALICE, thread=asked[0].thread)
    assert "`toy.spend since=2h`" in done.text
    assert "spent 12 EUR in the last 2h" in done.text


# -- buttons for the known choices ---------------------------------------------------------


@pytest.mark.kmock(cls=ClusterEmulator)
@pytest.mark.opsbot(policy=POLICY)
async def test_namespaces_of_a_name_are_buttons_and_a_click_asks_approval_as_the_clicker(
    opsbot_bot: TestBot, kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    cluster(opsbot_bot, kmock, tmp_path)
    asked = await opsbot_bot.ask("restart checkout", as_=ALICE)
    assert "checkout exists in several namespaces: shop, staging. Which one?" in asked.text
    [question] = [m for m in asked if m.step is Step.ANSWER]
    assert [(b.label, b.invocation.args) for b in question.blocks if b.kind == "action"] == [
        ("k8s.restart name=checkout namespace=shop", {"name": "checkout", "namespace": "shop"}),
        (
            "k8s.restart name=checkout namespace=staging",
            {"name": "checkout", "namespace": "staging"},
        ),
    ]
    assert opsbot_bot.approvals == []

    shop = opsbot_bot.actions[0]
    clicked = await opsbot_bot.click(shop, as_=DAVE)
    assert {m.thread for m in clicked} == {asked[0].thread}
    [approval] = clicked.approvals
    card = clicked.card(approval)
    assert card.summary == "k8s.restart name=checkout namespace=shop"
    assert card.requester == "shell:dave" and card.open
    [request] = await opsbot_bot.services.approvals.find(state=None)
    assert request.requester == "shell:dave"
    # nothing was changed yet: only the approval's dry run reached the cluster
    assert not [r for r in kmock if r.method.value == "PATCH" and "dryRun" not in r.params]
    # the click settled the question: a later word in the thread is a request of its own
    later = await opsbot_bot.ask("staging", as_=ALICE, thread=asked[0].thread)
    assert later.approvals == [] and planned(later) == []


@pytest.mark.kmock(cls=ClusterEmulator)
async def test_a_typed_namespace_answers_the_choice_as_the_requester(
    opsbot_bot: TestBot, kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    cluster(opsbot_bot, kmock, tmp_path)
    asked = await opsbot_bot.ask("restart checkout", as_=ALICE)
    assert len(asked.actions) == 2

    done = await opsbot_bot.ask("staging", as_=ALICE, thread=asked[0].thread)
    [approval] = done.approvals
    card = done.card(approval)
    assert card.summary == "k8s.restart name=checkout namespace=staging"
    assert card.requester == "shell:alice" and card.open
    dry = [r for r in kmock if r.method.value == "PATCH"]
    assert dry and all(r.params.get("dryRun") == "All" for r in dry)
    assert kmock.objects[kmock.resource(*DEPLOYMENTS), "staging", "checkout"]


@pytest.mark.kmock(cls=ClusterEmulator)
async def test_a_name_or_a_number_answers_what_is_missing(
    opsbot_bot: TestBot, kmock: KubernetesEmulator, tmp_path: Path
) -> None:
    cluster(opsbot_bot, kmock, tmp_path)
    asked = await opsbot_bot.ask("show the pod logs in shop", as_=ALICE)
    assert "To run `k8s.logs` I need `name`" in asked.text
    named = await opsbot_bot.ask("chekout", as_=ALICE, thread=asked[0].thread)  # grounded
    assert "`k8s.logs name=checkout namespace=shop tail=100`" in named.text
    assert "logs of 2 pod(s) of checkout" in named.text

    scale = await opsbot_bot.ask("scale checkout in shop", as_=ALICE)
    assert "To run `k8s.scale` I need `replicas`" in scale.text
    sized = await opsbot_bot.ask("5", as_=ALICE, thread=scale[0].thread)
    [approval] = sized.approvals
    assert sized.card(approval).summary == "k8s.scale name=checkout namespace=shop replicas=5"


async def test_close_names_and_tied_skills_are_offered_as_choices() -> None:
    inventory = Inventory()
    inventory.add("namespace", ["shop"])
    inventory.add("deployment", ["cart-api", "cart-web"])
    inventory.add("deployment/shop", ["cart-api", "cart-web"])
    router = OfflineRouter(inventory)
    registry = list(Kubernetes.skills)
    catalog: list[Skill[Any, Any]] = [cls() for cls in registry]
    plan = await router.plan(_request("restart cart in shop"), catalog)
    assert isinstance(plan, Clarify)
    assert plan.question == "Which one do you mean: cart-api, cart-web?"
    assert (plan.skill, plan.missing) == ("k8s.restart", ["name"])
    assert plan.choices == [
        Invocation(skill="k8s.restart", args={"name": "cart-api", "namespace": "shop"}),
        Invocation(skill="k8s.restart", args={"name": "cart-web", "namespace": "shop"}),
    ]

    class Ping(Skill[SpendArgs]):
        name = "toy.ping"
        summary = "Ping"
        Args = SpendArgs
        keywords: ClassVar[dict[str, float]] = {"check": 3.0}

    class Probe(Ping):
        name = "toy.probe"
        summary = "Probe"

    tied = await OfflineRouter().plan(_request("check over the last 1h"), [Ping(), Probe()])
    assert isinstance(tied, Clarify) and "`toy.ping`" in tied.question
    assert tied.choices == [
        Invocation(skill="toy.ping", args={"since": "1h"}),
        Invocation(skill="toy.probe", args={"since": "1h"}),
    ]


def _request(text: str) -> Request:
    return Request(actor=ALICE, channel="c", text=text)


# -- what is not an answer ----------------------------------------------------------------


async def test_a_different_request_drops_the_question(opsbot_bot: TestBot, tmp_path: Path) -> None:
    no_cluster(opsbot_bot, tmp_path)
    dropped = (await opsbot_bot.ask(LOGS, as_=ALICE))[0].thread
    kept = (await opsbot_bot.ask(LOGS, as_=ALICE))[0].thread
    for thread in (dropped, kept):  # someone else in the thread: a request of their own
        other = await opsbot_bot.ask("shop", as_=BOB, thread=thread)
        assert planned(other) == [] and "I can't map that to any skill" in other.text

    different = await opsbot_bot.ask("show pending approvals", as_=ALICE, thread=dropped)
    assert planned(different) == ["Plan (offline): `approvals.pending`"]
    late = await opsbot_bot.ask("shop", as_=ALICE, thread=dropped)
    assert planned(late) == [] and "k8s.logs" not in late.text
    answered = await opsbot_bot.ask("shop", as_=ALICE, thread=kept)
    assert "`k8s.logs name=checkout namespace=shop tail=100`" in answered.text
    assert not await opsbot_bot.engine.awaits_answer(dropped, ALICE)


async def test_an_answer_after_expiry_is_a_new_request(opsbot_bot: TestBot, tmp_path: Path) -> None:
    no_cluster(opsbot_bot, tmp_path)
    fresh = (await opsbot_bot.ask(LOGS, as_=ALICE))[0].thread
    stale = (await opsbot_bot.ask(LOGS, as_=ALICE))[0].thread
    in_time = await opsbot_bot.ask("shop", as_=ALICE, thread=fresh)
    assert "`k8s.logs name=checkout namespace=shop tail=100`" in in_time.text

    async with opsbot_bot.services.store.sessions() as session:  # 15 minutes later
        await session.execute(
            update(ClarificationRow)
            .where(ClarificationRow.thread == stale)
            .values(expires_at=now() - timedelta(seconds=1))
        )
        await session.commit()
    late = await opsbot_bot.ask("shop", as_=ALICE, thread=stale)
    assert planned(late) == [] and "I can't map that to any skill" in late.text
    assert not await opsbot_bot.engine.awaits_answer(stale, ALICE)


async def test_the_question_survives_a_restart(tmp_path: Path) -> None:
    """It is kept in the database: another engine (a replica, the bot restarted) completes it."""
    async with TestBot(tmp_path / "bot") as first:
        no_cluster(first, tmp_path)
        thread = (await first.ask(LOGS, as_=ALICE))[0].thread
    async with TestBot(tmp_path / "bot") as second:
        no_cluster(second, tmp_path)
        done = await second.ask("in shop", as_=ALICE, thread=thread)
    assert "`k8s.logs name=checkout namespace=shop tail=100`" in done.text


# -- in the shell ------------------------------------------------------------------------------


async def test_the_shell_sends_the_next_line_to_the_question(
    opsbot_bot: TestBot, tmp_path: Path
) -> None:
    no_cluster(opsbot_bot, tmp_path)
    await opsbot_bot.start()
    out = io.StringIO()
    renderer = ShellRenderer(Console(file=out, width=200), tmp_path / "charts")

    await run_command(opsbot_bot.engine, renderer, ALICE, LOGS)
    assert "To run `k8s.logs` I need `namespace`" in out.getvalue()
    question = renderer.messages[-1].thread
    await run_command(opsbot_bot.engine, renderer, ALICE, "in shop")
    answered = [m for m in renderer.messages if m.thread == question]
    assert any("k8s.logs name=checkout namespace=shop" in m.plain for m in answered)
    assert "Plan (offline): `k8s.logs name=checkout namespace=shop tail=100`" in out.getvalue()

    # the line after that is a request of its own, in a thread of its own
    await run_command(opsbot_bot.engine, renderer, ALICE, "shop")
    assert renderer.messages[-1].thread != question
    assert "I can't map that to any skill" in renderer.messages[-1].plain
