"""Backends, skills, risk levels, the execution context and the registry.

A :class:`Backend` is the unit a package ships (HolmesGPT's toolset, typed): its own settings
(:class:`BackendSettings`, read from the environment under the backend's prefix and from
``opsbot.yaml``), a :meth:`Backend.health` check, a lazily created client, an optional
:meth:`Backend.inventory` of names the planners ground against, and its ``skills``.

A skill is a class with ``name``, a one-line ``summary``, an ``Args`` pydantic model (its
field descriptions double as the LLM tool schema), a ``risk``, a few ``examples`` (utterances
used by the offline router, the LLM prompt and tests), router ``keywords`` and
``async run(args, ctx)``; writes add ``async preview(args, ctx)``, a server-side dry run shown
in the approval request. ``ctx.backend`` is the skill's own backend, typed.

Backends are found through the ``opsbot.skills`` entry-point group: an entry point names a
Backend class (or a module holding Backend subclasses); a bare Skill class still loads, under
a backend of its own with no settings. Loading a backend imports none of its client
libraries: :meth:`Backend.client` does that on first use.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Generic

import structlog
import yaml
from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from typing_extensions import TypeVar

from opsbot.config import Settings, load_settings, settings_error
from opsbot.errors import ConfigError
from opsbot.model import Actor, Invocation, Request, SkillResult

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP = "opsbot.skills"
BUILTIN_BACKENDS = (
    "opsbot.skills.prometheus:Prometheus",
    "opsbot.skills.alertmanager:Alertmanager",
    "opsbot.skills.loki:Loki",
    "opsbot.skills.kubernetes:Kubernetes",
    "opsbot.skills.meta:Meta",
    "opsbot.skills.incident:Incident",
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


# -- backend settings ------------------------------------------------------------------------


@cache
def _yaml_settings(path: str) -> dict[str, Any]:
    """The top level of ``opsbot.yaml`` (lower-cased keys); {} when there is no file."""
    file = Path(path)
    if not file.is_file():
        return {}
    data = yaml.safe_load(file.read_text()) or {}
    return {str(k).lower(): v for k, v in data.items()} if isinstance(data, dict) else {}


class _YamlSource(PydanticBaseSettingsSource):
    """A backend's keys in ``opsbot.yaml``: the field's aliases, else ``<env_prefix><field>``
    in lower case (``prometheus_url`` for ``url`` under ``PROMETHEUS_``), as the environment
    names them, so the file holds "the same keys in lower case" (DESIGN.md, Configuration)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        data = _yaml_settings(os.environ.get("OPSBOT_CONFIG", "opsbot.yaml"))
        prefix = str(self.config.get("env_prefix", "")).lower()
        keys: list[str] = []
        if isinstance(field.validation_alias, AliasChoices):
            keys += [str(c).lower() for c in field.validation_alias.choices]
        keys.append(prefix + field_name)
        for key in keys:
            if key in data:
                return data[key], field_name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, info in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(info, name)
            if value is not None:
                found[key] = value
        return found


class BackendSettings(BaseSettings):
    """A backend's own settings. Subclasses set ``model_config = SettingsConfigDict(
    env_prefix="LOKI_")``; values come from keyword arguments, then the environment, then
    ``opsbot.yaml`` (or the file ``OPSBOT_CONFIG`` names)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


class NoSettings(BackendSettings):
    pass


# -- backends --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """What ``opsbot skills`` and ``/readyz`` report of a backend.

    ``configured``: its settings are complete (else ``missing`` names the variables to set);
    ``reachable``: it answered a cheap call (None: not checked, e.g. not configured);
    ``version``: what it said it runs; ``detail``: why it is not usable, in one line.
    """

    configured: bool
    reachable: bool | None = None
    version: str = ""
    detail: str = ""
    missing: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.configured and self.reachable is not False


ClientT = TypeVar("ClientT")
ConfigT = TypeVar("ConfigT", bound=BackendSettings)


class Backend(Generic[ConfigT]):
    """A service opsbot talks to, with its settings, client, inventory and skills.

    Subclasses set ``name`` (``prometheus``), ``Config`` (a :class:`BackendSettings`) and
    ``skills`` (Skill classes), and override :meth:`missing`, :meth:`connect`,
    :meth:`probe` and :meth:`inventory` as they need. ``settings`` are opsbot's shared ones
    (timeouts, row and series bounds, chart folder).
    """

    name: ClassVar[str]
    Config: ClassVar[type[BackendSettings]] = NoSettings
    skills: ClassVar[tuple[type[Skill[Any, Any]], ...]] = ()

    def __init__(self, config: ConfigT, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Backend[Any]:
        """Build the backend from the environment, ``opsbot.yaml`` and ``overrides``."""
        return cls(cls.Config(**overrides), settings)  # type: ignore[arg-type]

    def missing(self) -> list[str]:
        """Names of the settings still needed (empty when the backend can be used)."""
        return []

    def require(self) -> None:
        """Raise :class:`NotConfigured` naming what to set, when something is missing."""
        if missing := self.missing():
            raise NotConfigured(f"{self.title} is not configured: set {', '.join(missing)}.")

    @property
    def title(self) -> str:
        return self.name.capitalize()

    async def connect(self) -> Any:
        """Create the client (import its library here, not at module level). Called once,
        on first use, by :meth:`client`."""
        return None

    async def client(self) -> Any:
        """The lazily created client; raises :class:`NotConfigured` when settings are missing."""
        self.require()
        if self._client is None:
            self._client = await self.connect()
        return self._client

    async def aclose(self) -> None:
        """Close the client, if one was made."""
        client, self._client = self._client, None
        closer = getattr(client, "aclose", None) or getattr(client, "close", None)
        if closer is not None:
            result = closer()
            if inspect.isawaitable(result):
                await result

    async def probe(self) -> str:
        """One cheap call to the service; returns its version (or ""), raises when it is
        unreachable. Only called when configured."""
        return ""

    async def health(self) -> Health:
        """Configured? reachable? version? Never raises."""
        try:
            missing = self.missing()
        except Exception as exc:  # e.g. a kubeconfig that cannot be read
            return Health(configured=False, detail=str(exc) or type(exc).__name__)
        if missing:
            return Health(configured=False, missing=tuple(missing), detail="not configured")
        try:
            version = await self.probe()
        except Exception as exc:
            return Health(configured=True, reachable=False, detail=str(exc) or type(exc).__name__)
        return Health(configured=True, reachable=True, version=version)

    async def inventory(self) -> dict[str, set[str]]:
        """Names the planners ground against, by kind (``service``, ``namespace``,
        ``deployment``, ``alertname``, ``metric``...). Raise or return {} when unavailable."""
        return {}


#: a skill's backend; a bare ``Skill[Args]`` (a small plugin) runs on any
BackendT = TypeVar("BackendT", bound=Backend[Any], default=Backend[Any])
PeerT = TypeVar("PeerT", bound=Backend[Any])
ArgsT = TypeVar("ArgsT", bound=BaseModel)


@dataclass(frozen=True)
class Impersonation:
    """Who the actor is on a backend that acts on their behalf (the policy's ``identities``:
    a Kubernetes user and groups). Empty: opsbot's own credentials."""

    user: str = ""
    groups: tuple[str, ...] = ()


@dataclass
class SkillContext(Generic[BackendT]):
    """What a running skill may use: who asked, where, its own backend and the shared
    settings (bounds and timeouts)."""

    actor: Actor
    request: Request
    backend: BackendT
    settings: Settings
    impersonate: Impersonation = field(default_factory=Impersonation)
    #: run a *read* skill as this same request, through policy and audit, posted in the
    #: thread (an investigation such as ``incident.triage``); None outside the engine
    read: Callable[[Invocation], Awaitable[SkillResult | None]] | None = None
    #: the registry's backends, for the rare skill that reads a second one (``peer``)
    backends: Sequence[Backend[Any]] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def peer(self, kind: type[PeerT]) -> PeerT:
        """Another installed backend of class ``kind`` (e.g. Prometheus for pending alerts);
        raises :class:`NotConfigured` when none is installed."""
        for backend in self.backends:
            if isinstance(backend, kind):
                return backend
        raise NotConfigured(f"{kind.__name__} is not installed.")


class Skill(Generic[ArgsT, BackendT]):
    name: ClassVar[str]
    summary: ClassVar[str]
    Args: type[ArgsT]
    risk: ClassVar[Risk] = Risk.READ
    examples: ClassVar[list[str]] = []
    #: router hints: cue -> weight (negative weights argue against this skill). A cue is a
    #: word or phrase compared by stem ("restart", "rollout status"), ``*`` for a gap of up
    #: to three words ("remove * silence"), ``=word`` for that exact word ("=restarted"), or
    #: a ``<signal>`` the router finds (``<promql>``, ``<recipe>``, ``<alertname>``...):
    #: :mod:`opsbot.meaning`. Synonyms ("bounce", "kick" for restart) are the router's
    #: lexicon (:mod:`opsbot.intent.lexicon`), not each skill's. What the arguments mean
    #: is declared on ``Args`` (``Annotated[str, Grounded("deployment")]``), not here.
    keywords: ClassVar[dict[str, float]] = {}

    async def run(self, args: ArgsT, ctx: SkillContext[BackendT]) -> SkillResult:
        raise NotImplementedError

    async def preview(self, args: ArgsT, ctx: SkillContext[BackendT]) -> str:
        """A dry run of a write, shown in the approval request. Reads need none."""
        return ""

    async def follow_up(self, args: ArgsT, ctx: SkillContext[BackendT]) -> SkillResult | None:
        """After a write ran: watch its effect (e.g. a rollout) and report; None = nothing to follow."""
        return None

    def route_args(self, parsed: Any, found: dict[str, Any]) -> dict[str, Any]:
        """Refine what the offline router extracted for this skill (skill-specific phrasing
        the ``Args`` meanings do not cover). ``parsed`` is the router's parse of the request
        (``.text``; ``.rest``: without its expression and kubectl options; ``.tokens``,
        ``.stems``; ``.flags``: kubectl options; ``.refs``: ``TYPE/NAME`` references);
        return the args to validate."""
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


class Standalone(Backend[NoSettings]):
    """The backend of a bare Skill class loaded from an entry point (no settings, no client)."""

    name = "standalone"


# -- registry --------------------------------------------------------------------------------


class SkillRegistry:
    """Skills by name, each with the backend it runs on. Later registrations of the same
    skill name are refused with a log line."""

    def __init__(self, backends: list[Backend[Any]] | None = None) -> None:
        self._skills: dict[str, Skill[Any, Any]] = {}
        self._backend_of: dict[str, Backend[Any]] = {}
        self.backends: list[Backend[Any]] = []
        for backend in backends or []:
            self.add_backend(backend)

    def add_backend(self, backend: Backend[Any]) -> None:
        self.backends.append(backend)
        for skill_cls in type(backend).skills:
            self.add(skill_cls(), backend)

    def add(self, skill: Skill[Any, Any], backend: Backend[Any] | None = None) -> None:
        """Register ``skill`` on ``backend`` (default: a standalone backend of its own)."""
        if skill.name in self._skills:
            log.warning(
                "skill.duplicate", skill=skill.name, kept=type(self._skills[skill.name]).__name__
            )
            return
        if backend is None:
            backend = Standalone(NoSettings(), load_settings())
            self.backends.append(backend)
        self._skills[skill.name] = skill
        self._backend_of[skill.name] = backend

    def get(self, name: str) -> Skill[Any, Any] | None:
        return self._skills.get(name)

    def backend_of(self, skill: str) -> Backend[Any]:
        return self._backend_of[skill]

    def backend(self, name: str) -> Backend[Any] | None:
        return next((b for b in self.backends if b.name == name), None)

    def __contains__(self, name: object) -> bool:
        return name in self._skills

    def __iter__(self) -> Iterator[Skill[Any, Any]]:
        return iter(sorted(self._skills.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._skills)

    def names(self) -> list[str]:
        return sorted(self._skills)

    async def aclose(self) -> None:
        for backend in self.backends:
            try:
                await backend.aclose()
            except Exception as exc:  # closing must not stop the others
                log.warning("backend.close_failed", backend=backend.name, error=str(exc))


def _backends_in(obj: ModuleType | type) -> list[type[Backend[Any]] | type[Skill[Any, Any]]]:
    """The Backend (or bare Skill) class ``obj``, or the Backend subclasses module ``obj``
    defines."""
    if inspect.isclass(obj):
        return [obj] if issubclass(obj, Backend | Skill) else []
    return [
        member
        for _, member in inspect.getmembers(obj, inspect.isclass)
        if issubclass(member, Backend)
        and member.__module__ == obj.__name__
        and "name" in member.__dict__
    ]


def _load(target: str) -> ModuleType | type:
    module, _, attr = target.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attr) if attr else loaded


def load_registry(
    settings: Settings | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> SkillRegistry:
    """Every backend exposed through the ``opsbot.skills`` entry points (plus the built-ins
    when opsbot runs from a source tree without being installed), configured from the
    environment and ``opsbot.yaml``; ``settings.backends[name]`` and ``overrides[name]`` are
    keyword settings of that backend that win over both (tests, the demo).

    A backend whose settings do not validate is an error (:class:`~opsbot.errors.ConfigError`
    naming the variable), not a backend silently left out."""
    settings = settings or load_settings()
    overrides = {**settings.backends, **(overrides or {})}
    registry = SkillRegistry()
    seen: set[type] = set()
    targets: list[tuple[str, ModuleType | type]] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            targets.append((ep.value, ep.load()))
        except Exception as exc:  # a broken third-party plugin must not stop the bot
            log.error("skill.entry_point_failed", entry_point=ep.name, error=str(exc))
    for builtin in BUILTIN_BACKENDS:
        if builtin not in {value for value, _ in targets}:
            targets.append((builtin, _load(builtin)))
    for _, target in targets:
        for cls in _backends_in(target):
            if cls in seen:
                continue
            seen.add(cls)
            if issubclass(cls, Skill):
                registry.add(cls())
                continue
            try:
                backend = cls.from_settings(settings, **(overrides or {}).get(cls.name, {}))
            except ValidationError as exc:  # a bad setting: refuse to start, naming it
                raise settings_error(exc, cls.Config, f"{cls.name} backend") from None
            except Exception as exc:
                raise ConfigError(
                    f"the {cls.name} backend cannot be configured: {exc}",
                    hint="fix its settings (`opsbot skills` names them), or uninstall it",
                ) from exc
            registry.add_backend(backend)
    return registry
