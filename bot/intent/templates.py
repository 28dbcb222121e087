"""The LLM planner's prompts as versioned templates (LLMOps governance).

The system prompt and the rendering of the tool schemas are Jinja2 files shipped in the
package (``opsbot/intent/prompts/``: ``system.md.j2``, ``tools.json.j2``), not string
constants. A template's *version* is the SHA-256 of its file's bytes: every model call's audit
record (``llm.call``) and span name the versions it was built from, so "which prompt did the
model see when it proposed that rollback?" has an answer that a changed file cannot blur.
:class:`Prompts` reads a folder of such files (the package's by default); a test or a team
trying a variant gives it another folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2

from opsbot.skills.base import Skill

SYSTEM = "system.md.j2"
TOOLS = "tools.json.j2"


def package_folder() -> Traversable:
    """``opsbot/intent/prompts`` inside the installed package."""
    return resources.files("opsbot.intent").joinpath("prompts")


def tool_name(skill_name: str) -> str:
    """``k8s.rollout.status`` -> ``k8s__rollout__status`` (OpenAI tool names allow no dots)."""
    return skill_name.replace(".", "__")


#: JSON-schema keywords a model does not need to call a tool well (the skill's own
#: validation still applies them): titles, defaults, regex patterns, length bounds
NOISE = frozenset({"title", "default", "pattern", "maxLength", "minLength"})
NULL = {"type": "null"}


def lean_schema(schema: Any) -> Any:
    """``schema`` without :data:`NOISE` and with ``anyOf: [X, null]`` (an optional
    argument) as ``X``: about a third fewer tokens for the same calls. Property names are
    kept whatever they are called (an argument may be named ``pattern``)."""
    if isinstance(schema, list):
        return [lean_schema(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    options = schema.get("anyOf")
    if isinstance(options, list) and NULL in options:
        kept = [o for o in options if o != NULL]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        schema = {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}
    lean: dict[str, Any] = {}
    for key, value in schema.items():
        if key in NOISE:
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            lean[key] = {name: lean_schema(v) for name, v in value.items()}
        else:
            lean[key] = lean_schema(value)
    return lean


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,  # a misspelt variable fails, not renders empty
        autoescape=False,
        keep_trailing_newline=False,
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}  # the schema's field order
    return env


@dataclass(frozen=True)
class Template:
    """One template file: its name, its source and its version (SHA-256 of the bytes)."""

    name: str
    source: str
    sha256: str

    @classmethod
    def read(cls, folder: Traversable | Path, name: str) -> Template:
        data = folder.joinpath(name).read_bytes()
        return cls(name=name, source=data.decode(), sha256=hashlib.sha256(data).hexdigest())

    @property
    def version(self) -> str:
        """``system.md.j2@1a2b3c4d5e6f``: the name and the hash's first 12 digits."""
        return f"{self.name}@{self.sha256[:12]}"

    def render(self, **context: Any) -> str:
        return _environment().from_string(self.source).render(**context)


class Prompts:
    """The system prompt and tool definitions of the LLM planner, from template files."""

    def __init__(self, folder: Traversable | Path | None = None) -> None:
        where = folder if folder is not None else package_folder()
        self.system = Template.read(where, SYSTEM)
        self.tools = Template.read(where, TOOLS)
        self._system_text = self.system.render()
        self._compiled_tools = _environment().from_string(self.tools.source)

    def system_prompt(self) -> str:
        return self._system_text

    def tool_definitions(self, catalog: Sequence[Skill[Any, Any]]) -> list[dict[str, Any]]:
        """OpenAI function-tool definitions of ``catalog``, as ``tools.json.j2`` renders them."""
        skills = [
            {
                "name": s.name,
                "tool_name": tool_name(s.name),
                "summary": s.summary,
                "risk": s.risk.value,
                "parameters": lean_schema(s.tool_schema()),
            }
            for s in catalog
        ]
        rendered = self._compiled_tools.render(skills=skills)
        try:
            definitions = json.loads(rendered)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.tools.name} did not render JSON: {exc}") from None
        if not isinstance(definitions, list):
            raise ValueError(f"{self.tools.name} must render a JSON list of tools")
        return definitions

    def versions(self) -> dict[str, dict[str, str]]:
        """What an audit record names: each template's file name and SHA-256."""
        return {
            "system": {"template": self.system.name, "sha256": self.system.sha256},
            "tools": {"template": self.tools.name, "sha256": self.tools.sha256},
        }


_default: Prompts | None = None


def default_prompts() -> Prompts:
    """The package's templates, read once per process."""
    global _default
    if _default is None:
        _default = Prompts()
    return _default
