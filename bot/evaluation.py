"""Routing evaluation over a dataset in DESIGN.md's "Eval dataset format".

Each case: ``text``, optional ``actor``, ``expect: {skill, args}``; a case passes when the
planner's first invocation names the expected skill (or none, for ``skill: null``) and every
listed arg matches (dicts exactly, scalars by their string form). A case whose expected
skill is not installed is a miss, reported as such, and left out of the
``installed`` accuracy.

Besides accuracy, a :class:`Report` scores each skill as a classifier of requests: a skill's
*precision* is the share of the cases routed to it that expected it, its *recall* the share of
the cases expecting it that were routed to it (the skill alone; wrong arguments count against
``passed``, not these), and :meth:`Report.confusions` counts each (expected, routed) pair of
the cases routed to the wrong skill. "No skill" (``skill: null``, or a plan that calls none)
is a label of its own, ``(none)``. With the LLM planner each case also carries its model
calls, tokens and cost.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from opsbot.intent.base import Planner
from opsbot.model import Actor, Clarify, Request, first_invocation
from opsbot.policy import Policy
from opsbot.skills.base import Skill, SkillRegistry


class Expect(BaseModel):
    skill: str | None
    args: dict[str, Any] = Field(default_factory=dict)


class Case(BaseModel):
    text: str
    actor: str = "shell:alice"
    expect: Expect


@dataclass
class CaseResult:
    case: Case
    skill: str | None
    args: dict[str, Any]
    ok: bool
    installed: bool
    reason: str = ""
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    cost_usd: float = 0.0

    @property
    def expected_label(self) -> str:
        return self.case.expect.skill or NONE

    @property
    def routed_label(self) -> str:
        return self.skill or NONE


NONE = "(none)"


@dataclass(frozen=True)
class SkillScore:
    """One skill (or ``(none)``) as a classifier over the dataset."""

    skill: str
    expected: int  # cases expecting it (support)
    routed: int  # cases routed to it
    correct: int  # cases expecting it and routed to it
    passed: int  # of those expecting it, the cases that passed (arguments too)
    installed: bool = True

    @property
    def precision(self) -> float | None:
        return self.correct / self.routed if self.routed else None

    @property
    def recall(self) -> float | None:
        return self.correct / self.expected if self.expected else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "skill": self.skill,
            "expected": self.expected,
            "routed": self.routed,
            "correct": self.correct,
            "passed": self.passed,
            "precision": None if self.precision is None else round(self.precision, 4),
            "recall": None if self.recall is None else round(self.recall, 4),
            "installed": self.installed,
        }


@dataclass(frozen=True)
class Confusion:
    """Cases expecting ``expected`` that were routed to ``routed`` instead."""

    expected: str
    routed: str
    texts: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.texts)


@dataclass
class Report:
    results: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def accuracy(self) -> float:
        return self.passed / len(self.results) if self.results else 0.0

    @property
    def installed(self) -> list[CaseResult]:
        return [r for r in self.results if r.installed]

    @property
    def installed_accuracy(self) -> float:
        cases = self.installed
        return sum(r.ok for r in cases) / len(cases) if cases else 0.0

    def mean(self, attribute: str) -> float:
        values = [float(getattr(r, attribute)) for r in self.results]
        return sum(values) / len(values) if values else 0.0

    def per_skill(self) -> list[SkillScore]:
        """Every label expected or routed to, by name (``(none)`` last)."""
        labels = {r.expected_label for r in self.results} | {r.routed_label for r in self.results}
        scores = []
        for label in sorted(labels, key=lambda name: (name == NONE, name)):
            expecting = [r for r in self.results if r.expected_label == label]
            scores.append(
                SkillScore(
                    skill=label,
                    expected=len(expecting),
                    routed=sum(r.routed_label == label for r in self.results),
                    correct=sum(r.routed_label == label for r in expecting),
                    passed=sum(r.ok for r in expecting),
                    installed=all(r.installed for r in expecting),
                )
            )
        return scores

    def confusions(self) -> list[Confusion]:
        """(expected, routed) pairs of the cases routed to a wrong skill, most frequent first."""
        pairs: dict[tuple[str, str], list[str]] = {}
        for r in self.results:
            if r.routed_label != r.expected_label:
                pairs.setdefault((r.expected_label, r.routed_label), []).append(r.case.text)
        return sorted(
            (Confusion(e, g, tuple(texts)) for (e, g), texts in pairs.items()),
            key=lambda c: (-c.count, c.expected, c.routed),
        )

    def skill_lines(self) -> list[str]:
        """The per-skill table as text lines (header first)."""
        scores = self.per_skill()
        names = [s.skill if s.installed else f"{s.skill} (not installed)" for s in scores]
        width = max([len("skill"), *(len(n) for n in names)])
        lines = [
            f"{'skill':<{width}} {'expected':>8} {'routed':>6} {'precision':>9} {'recall':>6} {'passed':>7}"
        ]
        for s, name in zip(scores, names, strict=True):
            lines.append(
                f"{name:<{width}} {s.expected:>8} {s.routed:>6} {_ratio(s.precision):>9} "
                f"{_ratio(s.recall):>6} {f'{s.passed}/{s.expected}':>7}"
            )
        return lines

    def confusion_lines(self) -> list[str]:
        """One line per (expected -> routed) pair: its count and the first case's text."""
        return [
            f"{c.expected} -> {c.routed}: {c.count} (e.g. {c.texts[0]!r})"
            for c in self.confusions()
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": len(self.results),
            "passed": self.passed,
            "accuracy": round(self.accuracy, 4),
            "installed_cases": len(self.installed),
            "installed_accuracy": round(self.installed_accuracy, 4),
            "mean_latency_ms": round(1000 * self.mean("seconds"), 3),
            "mean_prompt_tokens": round(self.mean("prompt_tokens"), 1),
            "mean_completion_tokens": round(self.mean("completion_tokens"), 1),
            "misses": [
                {
                    "text": r.case.text,
                    "expected": r.case.expect.model_dump(),
                    "got": {"skill": r.skill, "args": r.args},
                    "reason": r.reason,
                }
                for r in self.results
                if not r.ok
            ],
            "per_skill": [s.as_dict() for s in self.per_skill()],
            "confusions": [
                {
                    "expected": c.expected,
                    "routed": c.routed,
                    "count": c.count,
                    "texts": list(c.texts),
                }
                for c in self.confusions()
            ],
            "per_case": [
                {
                    "text": r.case.text,
                    "expected": r.case.expect.skill,
                    "routed": r.skill,
                    "ok": r.ok,
                    "latency_ms": round(1000 * r.seconds, 3),
                    "calls": r.calls,
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                    "cost_usd": round(r.cost_usd, 6),
                }
                for r in self.results
            ],
        }


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def load_cases(path: Path) -> list[Case]:
    data = yaml.safe_load(path.read_text()) or []
    if not isinstance(data, list):
        raise ValueError(f"{path}: an eval dataset is a YAML list of cases")
    return [Case.model_validate(item) for item in data]


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and {str(k): str(v) for k, v in expected.items()} == {
            str(k): str(v) for k, v in actual.items()
        }
    return str(expected) == str(actual)


async def evaluate(
    cases: Sequence[Case],
    planner: Planner,
    registry: SkillRegistry,
    policy: Policy | None = None,
    *,
    case_errors: tuple[type[Exception], ...] = (),
) -> Report:
    """Route every case with ``planner``; an exception of ``case_errors`` raised while
    planning one case (e.g. a replay that lacks that case) makes it a miss saying so."""
    report = Report()
    for case in cases:
        actor = Actor(id=case.actor)
        catalog: list[Skill[Any, Any]] = [
            s
            for s in registry
            if policy is None
            or policy.permitted(actor, s.name, channel="eval", namespaced=s.namespaced)
        ]
        started = time.perf_counter()
        try:
            plan = await planner.plan(Request(actor=actor, channel="eval", text=case.text), catalog)
        except case_errors as exc:
            installed = case.expect.skill is None or case.expect.skill in registry
            report.results.append(
                CaseResult(
                    case,
                    None,
                    {},
                    ok=False,
                    installed=installed,
                    reason=f"{type(exc).__name__}: {exc}",
                    seconds=time.perf_counter() - started,
                )
            )
            continue
        seconds = time.perf_counter() - started
        first = first_invocation(plan)
        got_skill = first.skill if first else None
        got_args = first.args if first else {}
        expected = case.expect
        installed = expected.skill is None or expected.skill in registry
        reason = ""
        if not installed:
            reason = f"skill {expected.skill} is not installed"
        elif got_skill != expected.skill:
            reason = f"routed to {got_skill or 'no skill'}" + (
                f" ({plan.question})" if isinstance(plan, Clarify) else ""
            )
        else:
            wrong = [k for k, v in expected.args.items() if not _same(v, got_args.get(k))]
            if wrong:
                reason = "args " + ", ".join(
                    f"{k}={got_args.get(k)!r} (want {expected.args[k]!r})" for k in wrong
                )
        report.results.append(
            CaseResult(
                case,
                got_skill,
                got_args,
                ok=not reason,
                installed=installed,
                reason=reason,
                seconds=seconds,
                prompt_tokens=int(plan.usage.get("prompt_tokens", 0)),
                completion_tokens=int(plan.usage.get("completion_tokens", 0)),
                calls=int(plan.usage.get("calls", 0)),
                cost_usd=float(plan.usage.get("cost_usd", 0.0)),
            )
        )
    return report
