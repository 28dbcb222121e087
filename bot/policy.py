"""Policy: who may call which skill, where, and whose approval it needs.

The file format and semantics are DESIGN.md's "Policy file" contract: groups, optional
identities, and rules matched first-to-last (first match wins, no match = deny). A rule
matches when the actor is one of its ``subjects``, the skill matches one of its ``skills``
globs, the channel one of its ``channels`` and, for skills that take a namespace, the
namespace one of its ``namespaces``. A namespaced skill called without a namespace only
matches rules that do not restrict namespaces, so a rule scoped to ``shop`` can never grant
a cluster-wide call.

Malformed files raise :class:`PolicyError` naming the file, line and reason of every
problem found. :meth:`Policy.warnings` names what is valid but probably not meant: skill
patterns that match no installed skill, a policy without rules (it denies everything).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.resources
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from opsbot.durations import Duration, parse_duration
from opsbot.errors import OpsbotError
from opsbot.model import Actor

#: the policy a new install runs with: ``policies/`` in the repository, ``opsbot/policies`` installed
BUNDLED_POLICIES = Path(str(importlib.resources.files("opsbot.policies")))


class PolicyError(OpsbotError, ValueError):
    """A policy file that cannot be used; ``str()`` is one ``file:line: reason`` line per
    problem (:attr:`problems`)."""

    label = "policy error"

    def __init__(
        self, message: str, hint: str = "fix it, then check it with `opsbot policy check`"
    ) -> None:
        super().__init__(message, hint)

    @property
    def problems(self) -> list[str]:
        return self.message.splitlines()


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    subjects: list[str] = Field(min_length=1)
    skills: list[str] = Field(min_length=1)
    namespaces: list[str] = Field(default_factory=lambda: ["*"])
    channels: list[str] = Field(default_factory=lambda: ["*"])
    effect: Literal["allow", "deny", "approve"]
    approvers: list[str] = Field(default_factory=list)
    min_approvals: int = Field(1, ge=1, le=10)
    ttl: Duration = "15m"
    reason: str = ""
    #: numeric ceilings on arguments, e.g. {replicas: 20}; a call above one is denied
    limits: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _approvers_for_approve(self) -> Rule:
        if self.effect == "approve" and not self.approvers:
            raise ValueError("effect: approve needs a non-empty approvers list")
        if self.effect != "approve" and self.approvers:
            raise ValueError(
                f"approvers only apply to effect: approve (this rule is {self.effect})"
            )
        return self

    @property
    def ttl_delta(self) -> timedelta:
        return parse_duration(self.ttl)

    def restricts_namespaces(self) -> bool:
        return "*" not in self.namespaces


class KubeIdentity(BaseModel):
    """The Kubernetes user (and groups) a chat identity acts as, via impersonation."""

    model_config = ConfigDict(extra="forbid")

    user: str
    groups: list[str] = Field(default_factory=list)


class PolicyDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: dict[str, list[str]] = Field(default_factory=dict)
    #: chat identity -> Kubernetes user ("alice@example.com") or {user, groups}
    identities: dict[str, str | KubeIdentity] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("groups")
    @classmethod
    def _no_nested_groups(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, members in groups.items():
            for member in members:
                if member.startswith("group:"):
                    raise ValueError(f"group {name!r}: groups cannot contain groups ({member})")
        return groups


@dataclass(frozen=True)
class Allow:
    rule: str


@dataclass(frozen=True)
class Deny:
    reason: str
    rule: str | None = None


@dataclass(frozen=True)
class NeedsApproval:
    rule: str
    approvers: tuple[str, ...]
    min_approvals: int
    ttl: timedelta


Decision = Allow | Deny | NeedsApproval


class Policy:
    """A loaded policy. Use :meth:`decide` per invocation, :meth:`may_approve` per click."""

    def __init__(
        self, doc: PolicyDoc, sources: list[str], lines: dict[tuple[int, str], str] | None = None
    ) -> None:
        self.doc = doc
        self.sources = sources
        #: (rule's index, skill pattern or "") -> "file:line" where it is written, when loaded
        self.lines = lines or {}
        self._check_references()
        #: :meth:`permitted` answers by (subjects, skill, channel, namespaced): the catalog is
        #: filtered several times per request (planner, policy, help)
        self._permitted: dict[tuple[frozenset[str], str, str, bool], bool] = {}
        self._permitted_rules: tuple[int, int] = (0, -1)

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str) -> Policy:
        """Load a policy file, or every ``*.yaml``/``*.yml`` of a folder in name order
        (groups and identities merged, rules concatenated)."""
        path = Path(path)
        if path.is_dir():
            files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not files:
                raise PolicyError(f"{path}: no *.yaml policy files in this folder")
        elif path.exists():
            files = [path]
        else:
            raise PolicyError(f"{path}: no such policy file or folder")
        merged = PolicyDoc()
        problems: list[str] = []
        lines: dict[tuple[int, str], str] = {}
        for file in files:
            try:
                doc, node = _load_file(file)
            except PolicyError as exc:
                problems += exc.problems
                continue
            for group, members in doc.groups.items():
                merged.groups.setdefault(group, []).extend(members)
            merged.identities.update(doc.identities)
            for i, rule in enumerate(doc.rules):
                index = len(merged.rules) + i
                lines[index, ""] = f"{file}:{_line_of(node, ('rules', i))}"
                for j, pattern in enumerate(rule.skills):
                    lines[index, pattern] = f"{file}:{_line_of(node, ('rules', i, 'skills', j))}"
            merged.rules.extend(doc.rules)
        for index, problem in _reference_problems(merged):
            problems.append(f"{lines.get((index, ''), ', '.join(map(str, files)))}: {problem}")
        if problems:
            raise PolicyError("\n".join(problems))
        return cls(merged, [str(f) for f in files], lines)

    def _check_references(self) -> None:
        if problems := _reference_problems(self.doc):
            raise PolicyError("\n".join(problem for _, problem in problems))

    def warnings(self, skills: Collection[str]) -> list[str]:
        """What is valid but probably not meant, given the installed ``skills``: a policy
        without rules (deny-all), and skill patterns that match no installed skill (a typo,
        or a skill whose package is not installed), with the closest name when one is close."""
        if not self.doc.rules:
            return [
                f"{', '.join(self.sources)}: no rules, so every request is denied (deny by "
                "default); add rules (see the bundled policies/default.yaml)"
            ]
        found: list[str] = []
        for index, rule in enumerate(self.doc.rules):
            for pattern in rule.skills:
                if any(fnmatch.fnmatchcase(skill, pattern) for skill in skills):
                    continue
                where = self.lines.get((index, pattern), ", ".join(self.sources))
                close = closest(pattern, skills)
                found.append(
                    f"{where}: rule {rule.name!r}: {pattern!r} matches no installed skill"
                    + (f" (did you mean {close}?)" if close else "")
                )
        return found

    # -- subjects ------------------------------------------------------------------------

    def subjects_of(self, actor: Actor) -> set[str]:
        """Every subject the actor answers to: its id, its platform roles and its groups."""
        own = {actor.id, *actor.roles}
        groups = {
            f"group:{name}"
            for name, members in self.doc.groups.items()
            if any(
                member in own or (_is_glob(member) and _glob_in(member, own)) for member in members
            )
        }
        return own | groups

    def _matches_subject(self, patterns: list[str], subjects: set[str] | frozenset[str]) -> bool:
        return any(p == "*" or _glob_in(p, subjects) for p in patterns)

    def identity_for(self, actor: Actor) -> KubeIdentity | None:
        """The Kubernetes identity this chat identity is mapped to (``identities:``), if any."""
        mapped = self.doc.identities.get(actor.id)
        if isinstance(mapped, str):
            return KubeIdentity(user=mapped)
        return mapped

    # -- decisions -----------------------------------------------------------------------

    def match(
        self,
        actor: Actor,
        skill: str,
        *,
        channel: str = "",
        namespace: str | None = None,
        namespaced: bool = False,
    ) -> Rule | None:
        """The first rule that applies, or None. ``namespaced``: the skill takes a namespace."""
        subjects = self.subjects_of(actor)
        for rule in self.doc.rules:
            if not self._matches_subject(rule.subjects, subjects):
                continue
            if not any(fnmatch.fnmatchcase(skill, pattern) for pattern in rule.skills):
                continue
            if not any(c == "*" or fnmatch.fnmatchcase(channel, c) for c in rule.channels):
                continue
            if namespaced and rule.restricts_namespaces():
                if namespace is None:
                    continue
                if not any(fnmatch.fnmatchcase(namespace, n) for n in rule.namespaces):
                    continue
            return rule
        return None

    def decide(
        self,
        actor: Actor,
        skill: str,
        *,
        channel: str = "",
        namespace: str | None = None,
        namespaced: bool = False,
        args: dict[str, Any] | None = None,
    ) -> Decision:
        """Allow, Deny(reason) or NeedsApproval for this call; ``args`` are checked against
        the matching rule's ``limits``."""
        rule = self.match(actor, skill, channel=channel, namespace=namespace, namespaced=namespaced)
        if rule is None:
            where = f" in namespace {namespace}" if namespace else ""
            return Deny(f"no policy rule allows {actor.id} to call {skill}{where}")
        for arg, ceiling in rule.limits.items():
            value = (args or {}).get(arg)
            if isinstance(value, int | float) and value > ceiling:
                return Deny(
                    f"{arg}={value} is above the limit {ceiling} of rule {rule.name!r}", rule.name
                )
        if rule.effect == "allow":
            return Allow(rule.name)
        if rule.effect == "deny":
            return Deny(rule.reason or f"denied by rule {rule.name!r}", rule.name)
        return NeedsApproval(rule.name, tuple(rule.approvers), rule.min_approvals, rule.ttl_delta)

    def permitted(
        self, actor: Actor, skill: str, *, channel: str = "", namespaced: bool = False
    ) -> bool:
        """Whether *some* call of ``skill`` could be allowed or approved for this actor here
        (used to filter the catalog a planner is shown)."""
        subjects = frozenset(self.subjects_of(actor))
        rules = (id(self.doc.rules), len(self.doc.rules))
        if rules != self._permitted_rules:  # another rule list: forget what it answered
            self._permitted.clear()
            self._permitted_rules = rules
        key = (subjects, skill, channel, namespaced)
        known = self._permitted.get(key)
        if known is None:
            if len(self._permitted) > 10_000:
                self._permitted.clear()
            known = self._permitted[key] = self._permitted_by_rules(
                subjects, skill, channel, namespaced
            )
        return known

    def _permitted_by_rules(
        self, subjects: frozenset[str], skill: str, channel: str, namespaced: bool
    ) -> bool:
        for rule in self.doc.rules:
            if not self._matches_subject(rule.subjects, subjects):
                continue
            if not any(fnmatch.fnmatchcase(skill, p) for p in rule.skills):
                continue
            if not any(c == "*" or fnmatch.fnmatchcase(channel, c) for c in rule.channels):
                continue
            if rule.effect == "deny" and not (namespaced and rule.restricts_namespaces()):
                return False
            if rule.effect != "deny":
                return True
        return False

    def may_approve(self, approver: Actor, approvers: list[str]) -> bool:
        """Whether ``approver`` is one of ``approvers`` under the groups as they are *now*."""
        return self._matches_subject(approvers, self.subjects_of(approver))


def _reference_problems(doc: PolicyDoc) -> list[tuple[int, str]]:
    """(rule's index, problem) for each repeated rule name and each unknown group named."""
    problems: list[tuple[int, str]] = []
    names: set[str] = set()
    for index, rule in enumerate(doc.rules):
        if rule.name in names:
            problems.append((index, f"rule names must be unique: {rule.name!r} appears twice"))
        names.add(rule.name)
        for subject in [*rule.subjects, *rule.approvers]:
            if subject.startswith("group:") and subject[6:] not in doc.groups:
                problems.append((index, f"rule {rule.name!r} names unknown group {subject!r}"))
    return problems


def closest(name: str, names: Collection[str]) -> str | None:
    """The name in ``names`` closest to ``name`` (a likely typo's fix), if one is close."""
    found = difflib.get_close_matches(name, list(names), n=1, cutoff=0.75)
    return found[0] if found else None


def _glob_in(pattern: str, subjects: set[str] | frozenset[str]) -> bool:
    return any(fnmatch.fnmatchcase(s, pattern) for s in subjects)


def _is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern or "[" in pattern


# -- file loading with line numbers --------------------------------------------------------


def _load_file(file: Path) -> tuple[PolicyDoc, yaml.Node | None]:
    """The file's policy and its YAML node (for line numbers); :class:`PolicyError` naming
    every problem in it, a misspelt key first (it explains the missing ones that follow)."""
    text = file.read_text()
    try:
        node = yaml.compose(text)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.line + 1}" if mark else "?"
        reason = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"{file}:{where}: invalid YAML: {reason}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{file}:1: a policy is a mapping with groups, identities and rules")
    try:
        return PolicyDoc.model_validate(data), node
    except ValidationError as exc:
        errors = sorted(
            exc.errors(),
            key=lambda e: (e["type"] != "extra_forbidden", _line_of(node, e["loc"])),
        )
        problems: list[str] = []
        for err in errors:
            loc = [str(p) for p in err["loc"]]
            where = ".".join(loc) or "(top)"
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = f"unknown key {loc[-1]!r}"
            problem = f"{file}:{_line_of(node, err['loc'])}: {where}: {message}"
            if problem not in problems:
                problems.append(problem)
        raise PolicyError("\n".join(problems)) from None


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of the YAML node at ``loc`` (or its deepest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for k, v in node.value:
                if k.value == key:
                    found = v
                    line = k.start_mark.line + 1
                    break
            if found is None:
                return line
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line
