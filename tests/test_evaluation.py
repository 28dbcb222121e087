"""The routing evaluation's report: per-skill precision and recall, the confusion list and
the CLI's text contract (one line per miss, the accuracy last), on a tiny dataset routed by
a scripted planner whose answers are known."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from opsbot.cli import app
from opsbot.evaluation import NONE, Case, Expect, Report, evaluate
from opsbot.model import Answer, Invocation, Plan, Request, Run
from opsbot.skills.base import Skill, SkillRegistry, load_registry
from tests.conftest import ROOT


class Scripted:
    """Routes each text to the skill (and args) it was told."""

    name = "scripted"

    def __init__(self, routes: dict[str, tuple[str | None, dict[str, Any]]]) -> None:
        self.routes = routes

    async def plan(
        self, request: Request, catalog: Sequence[Skill[Any, Any]], tools: Any = None
    ) -> Plan:
        skill, args = self.routes[request.text]
        if skill is None:
            return Answer(text="no", planner=self.name)
        return Run(invocations=[Invocation(skill=skill, args=args)], planner=self.name)

    async def explain(self, request: Request, withheld: Sequence[Skill[Any, Any]]) -> str | None:
        return None


def case(text: str, skill: str | None, **args: Any) -> Case:
    return Case(text=text, expect=Expect(skill=skill, args=args))


CASES = [
    case("restart checkout", "k8s.restart", name="checkout"),
    case("bounce payments", "k8s.restart", name="payments"),
    case("kick cart", "k8s.restart", name="cart"),
    case("pods in shop", "k8s.pods", namespace="shop"),
    case("is checkout ok", "k8s.pods"),
    case("logs of cart", "k8s.logs"),
    case("tell me a joke", None),
    case("what's the weather", None),
]
ROUTES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "restart checkout": ("k8s.restart", {"name": "checkout"}),
    "bounce payments": ("k8s.restart", {"name": "payment"}),  # right skill, wrong arg
    "kick cart": ("k8s.pods", {}),  # confused with k8s.pods
    "pods in shop": ("k8s.pods", {"namespace": "shop"}),
    "is checkout ok": ("k8s.restart", {"name": "checkout"}),  # confused with k8s.restart
    "logs of cart": (None, {}),  # nothing
    "tell me a joke": (None, {}),
    "what's the weather": ("k8s.logs", {}),  # a skill for nothing
}


@pytest.fixture(scope="module")
def registry() -> SkillRegistry:
    return load_registry()


async def run(registry: SkillRegistry) -> Report:
    return await evaluate(CASES, Scripted(ROUTES), registry)


async def test_per_skill_precision_and_recall(registry: SkillRegistry) -> None:
    report = await run(registry)
    assert (report.passed, len(report.results)) == (3, 8)
    scores = {s.skill: s for s in report.per_skill()}
    assert list(scores) == ["k8s.logs", "k8s.pods", "k8s.restart", NONE]
    restart, pods, logs, none = (
        scores["k8s.restart"],
        scores["k8s.pods"],
        scores["k8s.logs"],
        scores[NONE],
    )
    # k8s.restart: expected 3, routed 3 (two right, 'is checkout ok' wrong); 1 passed with args
    assert (restart.expected, restart.routed, restart.correct, restart.passed) == (3, 3, 2, 1)
    assert restart.precision == pytest.approx(2 / 3) and restart.recall == pytest.approx(2 / 3)
    # k8s.pods: expected 2, routed 2 ('pods in shop' right, 'kick cart' wrong)
    assert (pods.precision, pods.recall, pods.passed) == (0.5, 0.5, 1)
    # k8s.logs: its one case went nowhere, and the weather went to it
    assert (logs.expected, logs.routed, logs.correct) == (1, 1, 0)
    assert (logs.precision, logs.recall) == (0.0, 0.0)
    # (none): 2 expected, 2 routed to nothing ('logs of cart' and the joke), 1 right
    assert (none.precision, none.recall, none.passed) == (0.5, 0.5, 1)
    data = report.as_dict()
    assert data["per_skill"][2] == {
        "skill": "k8s.restart",
        "expected": 3,
        "routed": 3,
        "correct": 2,
        "passed": 1,
        "precision": 0.6667,
        "recall": 0.6667,
        "installed": True,
    }


async def test_an_uninstalled_skill_and_a_skill_never_expected(registry: SkillRegistry) -> None:
    cases = [case("page oncall", "pager.page"), case("pods", "k8s.pods")]
    routes: dict[str, tuple[str | None, dict[str, Any]]] = {
        "page oncall": ("k8s.pods", {}),
        "pods": ("k8s.pods", {}),
    }
    report = await evaluate(cases, Scripted(routes), registry)
    scores = {s.skill: s for s in report.per_skill()}
    assert scores["pager.page"].installed is False and scores["pager.page"].recall == 0.0
    assert scores["pager.page"].precision is None  # nothing was routed to it
    assert scores["k8s.pods"].precision == 0.5 and scores["k8s.pods"].recall == 1.0
    assert report.skill_lines()[1].split() == [
        "k8s.pods",
        "1",
        "2",
        "0.500",
        "1.000",
        "1/1",
    ]
    assert report.skill_lines()[2].split() == [
        "pager.page",
        "(not",
        "installed)",
        "1",
        "0",
        "-",
        "0.000",
        "0/1",
    ]


async def test_the_confusion_list(registry: SkillRegistry) -> None:
    report = await run(registry)
    pairs = [(c.expected, c.routed, c.count) for c in report.confusions()]
    assert pairs == [
        (NONE, "k8s.logs", 1),
        ("k8s.logs", NONE, 1),
        ("k8s.pods", "k8s.restart", 1),
        ("k8s.restart", "k8s.pods", 1),
    ]
    assert report.confusion_lines()[3] == "k8s.restart -> k8s.pods: 1 (e.g. 'kick cart')"
    twice = await evaluate(
        [*CASES, case("cycle the cart pods", "k8s.restart")],
        Scripted({**ROUTES, "cycle the cart pods": ("k8s.pods", {})}),
        registry,
    )
    first = twice.confusions()[0]
    assert (first.expected, first.routed, first.texts) == (
        "k8s.restart",
        "k8s.pods",
        ("kick cart", "cycle the cart pods"),
    )
    assert [c["count"] for c in twice.as_dict()["confusions"]] == [2, 1, 1, 1]


def test_cli_prints_the_table_the_confusions_and_the_accuracy_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = tmp_path / "set.yaml"
    dataset.write_text(
        "- text: restart checkout in shop\n  expect: {skill: k8s.restart, args: {name: checkout, namespace: shop}}\n"
        "- text: show pods in shop\n  expect: {skill: k8s.pods, args: {namespace: shop}}\n"
        "- text: tell me a joke\n  expect: {skill: k8s.pods}\n"
    )
    monkeypatch.setenv("OPSBOT_POLICY_PATH", str(ROOT / "policies"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["eval", str(dataset)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("MISS 'tell me a joke': routed to ")
    assert lines[-1] == "accuracy: 0.667 (2/3)"
    assert lines[-2] == "accuracy over installed skills: 0.667 (2/3)"
    table = lines[lines.index(next(x for x in lines if x.startswith("per skill"))) + 1 :]
    assert table[0].split() == ["skill", "expected", "routed", "precision", "recall", "passed"]
    pods = next(x for x in table if x.split()[0] == "k8s.pods").split()
    assert pods == ["k8s.pods", "2", "1", "1.000", "0.500", "1/2"]
    assert "confusions (expected -> routed): 1" in lines
    assert any(x.strip().startswith("k8s.pods -> ") for x in lines)
