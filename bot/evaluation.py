"""Routing evaluation over a dataset in DESIGN.md's "Eval dataset format".

Each case: ``text``, optional ``actor``, ``expect: {skill, args}``; a case passes when the
planner's first invocation names the expected skill (or none, for ``skill: null``) and every
listed arg matches (dicts exactly, scalars by their string form). A case whose expected
skill is not installed is a miss, reported as such, and left out of the
``installed`` accuracy.
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
        }


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
    cases: Sequence[Case], planner: Planner, registry: SkillRegistry, policy: Policy | None = None
) -> Report:
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
        plan = await planner.plan(Request(actor=actor, channel="eval", text=case.text), catalog)
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
            )
        )
    return report
