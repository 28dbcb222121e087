"""What a skill's arguments mean, and the words that ask for a skill: declared once, as data,
read by both planners.

**Arguments.** A field of a skill's ``Args`` model says what it *means* with a marker in its
``Annotated`` type; :mod:`opsbot.intent.arguments` reads the marker to extract the value from a
request (the offline router), to ground it against the backends' inventory and to validate it
(both planners: the offline router and the LLM's tool calls)::

    class WorkloadArgs(BaseModel):
        name: Annotated[str, Grounded("deployment")] = Field(pattern=DNS_NAME)
        namespace: Annotated[str, Grounded("namespace")] = Field(pattern=DNS_LABEL)

    class RangeArgs(BaseModel):
        query: Annotated[str, Expression("promql", recipes=True)]
        since: Annotated[Duration, Since()] = "1h"

==================  =========================================================================
marker              the value, and how a request gives it
==================  =========================================================================
``Grounded(kind)``  a name the backends know (inventory kind ``deployment``, ``service``,
                    ``namespace``, ``alertname``...): a near miss becomes the real name, two
                    close names make a question; ``kind_field`` names the field holding the
                    kind (``k8s.describe``), ``also`` more kinds it may be (a pod);
                    ``complete=False``: the inventory lists only some names (alert names:
                    those firing now), so an unknown one is kept, not refused
``Since()``         how far back from now: "in the last 2h", "since 15m", ``--since=1h``
                    (and "for 3h" when the skill has no ``Lasting`` field)
``Lasting()``       how long something lasts: "for 2h", "for half an hour"
``Count(unit)``     a whole number by its unit: ``replicas`` ("to 3", "3 replicas",
                    ``--replicas=3``, "to zero"), ``revision`` ("revision 4",
                    ``--to-revision=4``), ``lines`` ("200 lines", ``--tail=50``), ``top``
                    ("top 5")
``Expression(l)``   a PromQL or LogQL expression (after ``promql:``, in backticks, after a verb
                    such as "graph"); ``recipes=True``: a question without PromQL ("top 5 pods
                    by CPU") may be answered by a named recipe (:mod:`opsbot.recipes`)
``Matchers()``      label equality matchers: ``team=payments``, "service checkout", a severity
                    word, a CamelCase alert name; ``name_label``: the label a bare name is
                    ("alerts for checkout" -> ``{service: checkout}``)
``ObjectKind()``    a Kubernetes kind: "pod", ``deploy/x``, "sts"
``Choice(words)``   one of a few values, each said by some words, by stem or ``=exact``
                    (an alert's state: ``{"silenced": ("silenced", "muted"), ...}``)
``Remark()``        free text: the reason after a comma, "because ..."
``Flag(name)``      a kubectl-style option's value (``-c``, ``-l``)
==================  =========================================================================

A field without a marker is read by its name as before (``namespace``, ``since``,
``replicas``...), so older plugins keep working.

**Words that ask for a skill.** A skill's ``keywords`` map *cues* to weights (negative weights
argue against the skill). :func:`cue` reads each key:

- ``"restart"``, ``"rollout status"``: words, compared by their stems ("restarted",
  "restarting" meet "restart"); a phrase matches adjacent words;
- ``"roll * back"``: ``*`` stands for up to three words ("roll payments back");
- ``"=restarted"``: this exact word, not its stem (the past tense argues for the audit log);
- ``"<promql>"``: a signal the router finds in the request (:class:`Signal`).

Everyday synonyms ("bounce", "kick" and "cycle" for restart) are the router's lexicon
(:mod:`opsbot.intent.lexicon`): a skill lists the words of its own domain, not every synonym.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

# -- argument meanings -----------------------------------------------------------------------


class Meaning:
    """Base of the markers; ``Annotated[str, Grounded("deployment")]``."""


@dataclass(frozen=True)
class Grounded(Meaning):
    """A name resolved against the inventory's names of ``kind`` (see module doc)."""

    kind: str = "deployment"
    also: tuple[str, ...] = ()
    kind_field: str | None = None
    #: the inventory lists every name of the kind; False (alert names: only those firing
    #: now): a name it does not list is kept as given, not refused
    complete: bool = True

    def kinds(self, args: Mapping[str, Any]) -> tuple[str, ...]:
        """The inventory kinds a value may be, given the other arguments."""
        if self.kind_field and args.get(self.kind_field):
            return (str(args[self.kind_field]),)
        return (self.kind, *self.also)


@dataclass(frozen=True)
class Since(Meaning):
    """How far back from now."""


@dataclass(frozen=True)
class Lasting(Meaning):
    """How long something lasts (a silence)."""


@dataclass(frozen=True)
class Count(Meaning):
    """A whole number, by what it counts."""

    unit: Literal["replicas", "revision", "lines", "top"]


@dataclass(frozen=True)
class Expression(Meaning):
    """A query expression; ``recipes``: may be filled from a named recipe."""

    language: Literal["promql", "logql"]
    recipes: bool = False


@dataclass(frozen=True)
class Matchers(Meaning):
    """Label equality matchers; a bare name is ``name_label`` (None: not taken)."""

    name_label: str | None = None


@dataclass(frozen=True)
class ObjectKind(Meaning):
    """A Kubernetes object kind."""


@dataclass(frozen=True)
class Choice(Meaning):
    """One of ``words``' keys, said by any of its words (stems; phrases allowed)."""

    words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(tuple((k, v) for k, v in self.words.items()))


@dataclass(frozen=True)
class Remark(Meaning):
    """Free text: why (a silence's comment)."""


@dataclass(frozen=True)
class Flag(Meaning):
    """The value of a kubectl-style option: ``container`` (``-c``), ``selector`` (``-l``)."""

    name: Literal["container", "selector"]


def meaning_of(metadata: list[Any]) -> Meaning | None:
    """The marker among a field's ``metadata`` (pydantic keeps ``Annotated`` extras there)."""
    return next((m for m in metadata if isinstance(m, Meaning)), None)


# -- cues: the words that ask for a skill ----------------------------------------------------


class Signal(StrEnum):
    """What the router finds in a request besides words, usable as a cue."""

    PROMQL = "<promql>"  # a PromQL expression
    LOGQL = "<logql>"  # a LogQL query (a selector with a line filter or parser)
    SELECTOR = "<selector>"  # a bare {label="value"} selector: either language
    EXPR = "<expr>"  # any expression
    ALERTNAME = "<alertname>"  # a CamelCase alert name
    MATCHER = "<matcher>"  # label=value
    NUMBER = "<number>"  # a number
    WRITE_TALK = "<write-talk>"  # talk about a write that was done (a report, a noun)
    HYPOTHETICAL = "<hypothetical>"  # a write imagined, not done: "what if we scaled it"
    RECIPE = "<recipe>"  # a measure a PromQL recipe answers ("CPU of the checkout pods")
    RANKING = "<ranking>"  # a ranking: "top 5", "which ... most", "highest"


@dataclass(frozen=True)
class Cue:
    """One parsed keyword: ``words`` (``*`` a gap) matched by stem, or ``exact`` (one word as
    written), or ``signal``."""

    words: tuple[str, ...] = ()
    exact: str = ""
    signal: Signal | None = None

    @property
    def gapped(self) -> bool:
        return "*" in self.words


def cue(key: str) -> Cue:
    """A keyword of ``Skill.keywords`` as data (see the module doc for the forms)."""
    key = key.strip()
    if key.startswith("<") and key.endswith(">"):
        return Cue(signal=Signal(key))
    if key.startswith("="):
        return Cue(exact=key[1:].lower())
    return Cue(words=tuple(key.lower().split()))
