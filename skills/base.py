"""Skill contract, risk levels, execution context and the registry.

A skill is a class with ``name``, a one-line ``summary``, an ``Args`` pydantic model (its
field descriptions double as the LLM tool schema), a ``risk``, a few ``examples`` (utterances
used by the offline router, the LLM prompt and tests), router ``keywords`` and
``async run(args, ctx)``; writes add ``async preview(args, ctx)``, a server-side dry run shown
in the approval request. Skills are found through the ``opsbot.skills`` entry-point group:
an entry point names a module (every :class:`Skill` subclass in it is registered) or a class.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import structlog
from opsbot.model import Actor, Request, SkillResult
from pydantic import BaseModel

if TYPE_CHECKING:
    from opsbot.intent.extract import Parsed
    from opsbot.services import Services

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP = "opsbot.skills"
BUILTIN_MODULES = (
    "opsbot.skills.prometheus",
    "opsbot.skills.alertmanager",
    "opsbot.skills.kubernetes",
    "opsbot.skills.meta",
)


class Risk(StrEnum):
    READ = "read"
    WRITE = "write"
    DANGEROUS = "dangerous"


class SkillError(Exception):
    """A failure the user should read as is (backend said no, object not found, ...)."""


class NotConfigured(SkillError):
    """The backend this skill needs is not configured (e.g. ``PROMETHEUS_URL`` unset)."""


class NoArgs(BaseModel):
    pass


ArgsT = TypeVar("ArgsT", bound=BaseModel)


@dataclass
class SkillContext:
    """What a running skill may use: who asked, where, and the shared services."""

    actor: Actor
    request: Request
    services: Services
    extra: dict[str, Any] = field(default_factory=dict)


class Skill(Generic[ArgsT]):
    name: ClassVar[str]
    summary: ClassVar[str]
    Args: type[ArgsT]
    risk: ClassVar[Risk] = Risk.READ
    examples: ClassVar[list[str]] = []
    #: router hints: word or phrase -> weight (negative weights argue against this skill)
    keywords: ClassVar[dict[str, float]] = {}
    #: names of ``Settings`` fields that must be set for the skill to work
    requires: ClassVar[tuple[str, ...]] = ()

    async def run(self, args: ArgsT, ctx: SkillContext) -> SkillResult:
        raise NotImplementedError

    async def preview(self, args: ArgsT, ctx: SkillContext) -> str:
        """A dry run of a write, shown in the approval request. Reads need none."""
        return ""

    async def follow_up(self, args: ArgsT, ctx: SkillContext) -> SkillResult | None:
        """After a write ran: watch its effect (e.g. a rollout) and report; None = nothing to follow."""
        return None

    def missing_config(self, settings: Any) -> list[str]:
        """Names of the settings this skill still needs (empty when it can run)."""
        return [name.upper() for name in self.requires if not getattr(settings, name, None)]

    def route_args(self, parsed: Parsed, found: dict[str, Any]) -> dict[str, Any]:
        """Refine what the offline router extracted for this skill (skill-specific phrasing).
        ``parsed`` is :class:`opsbot.intent.extract.Parsed`; return the args to validate."""
        return found

    @property
    def namespaced(self) -> bool:
        return "namespace" in self.Args.model_fields

    def parse_args(self, raw: dict[str, Any]) -> ArgsT:
        """Validate ``raw`` with ``Args``; raises ``pydantic.ValidationError``."""
        return self.Args.model_validate(raw)

    def tool_schema(self) -> dict[str, Any]:
        """The JSON schema of ``Args`` (OpenAI tool-call ``parameters``)."""
        return self.Args.model_json_schema()


class SkillRegistry:
    """Skills by name. Later registrations of the same name are refused with a log line."""

    def __init__(self, skills: Iterable[Skill[Any]] = ()) -> None:
        self._skills: dict[str, Skill[Any]] = {}
        for skill in skills:
            self.add(skill)

    def add(self, skill: Skill[Any]) -> None:
        if skill.name in self._skills:
            log.warning(
                "skill.duplicate", skill=skill.name, kept=type(self._skills[skill.name]).__name__
            )
            return
        self._skills[skill.name] = skill

    def get(self, name: str) -> Skill[Any] | None:
        return self._skills.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._skills

    def __iter__(self) -> Any:
        return iter(sorted(self._skills.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._skills)

    def names(self) -> list[str]:
        return sorted(self._skills)


def skills_in(obj: ModuleType | type) -> list[Skill[Any]]:
    """Instantiate the skill class ``obj``, or every concrete Skill subclass defined in module ``obj``."""
    if inspect.isclass(obj):
        return [obj()] if issubclass(obj, Skill) else []
    found = []
    for _, member in inspect.getmembers(obj, inspect.isclass):
        if (
            issubclass(member, Skill)
            and member.__module__ == obj.__name__
            and "name" in member.__dict__
        ):
            found.append(member())
    return found


def load_registry() -> SkillRegistry:
    """Every skill exposed through the ``opsbot.skills`` entry points, plus the built-ins when
    the package is used from a source tree without being installed."""
    registry = SkillRegistry()
    seen_modules: set[str] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
        except Exception as exc:  # a broken third-party plugin must not stop the bot
            log.error("skill.entry_point_failed", entry_point=ep.name, error=str(exc))
            continue
        if inspect.ismodule(target):
            seen_modules.add(target.__name__)
        for skill in skills_in(target):
            registry.add(skill)
    for module_name in BUILTIN_MODULES:
        if module_name not in seen_modules:
            for skill in skills_in(importlib.import_module(module_name)):
                registry.add(skill)
    return registry
