"""The planner protocol: a request and the skills this actor may call -> a :class:`Plan`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from bot.model import Plan, Request
from skills.base import Skill


class Planner(Protocol):
    name: str

    async def plan(self, request: Request, catalog: Sequence[Skill[Any]]) -> Plan:
        """Map ``request`` to invocations of skills in ``catalog`` only (never others)."""
        ...
