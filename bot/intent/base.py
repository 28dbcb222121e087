"""The planner protocol: a request and the skills this actor may call -> a :class:`Plan`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from opsbot.model import Invocation, Plan, Request
from opsbot.skills.base import Skill


class ToolRunner(Protocol):
    """Runs a *read* skill for a planner through the engine (policy, audit, a message in the
    thread) and returns its result as bounded, redacted text. Writes are refused."""

    async def __call__(self, invocation: Invocation) -> str: ...


class Planner(Protocol):
    name: str

    async def plan(
        self, request: Request, catalog: Sequence[Skill[Any, Any]], tools: ToolRunner | None = None
    ) -> Plan:
        """Map ``request`` to invocations of skills in ``catalog`` only (never others).
        With ``tools`` a planner may look at data first; without, it only routes."""
        ...

    async def explain(self, request: Request, withheld: Sequence[Skill[Any, Any]]) -> str | None:
        """When a plan found nothing the actor may call (``Answer.unmatched``): the name of
        the skill among ``withheld`` (those policy does not give the actor here) that the
        request asks for, so the refusal can say so; None when none fits."""
        ...
