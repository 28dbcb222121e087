"""One argument pipeline for both planners: extract, ground, validate.

Each field of a skill's ``Args`` declares what it means (:mod:`opsbot.meaning`:
``Grounded("deployment")``, ``Since()``, ``Count("replicas")``, ``Expression("promql")``...).
This module reads those declarations:

- :func:`extract` (the offline router, and a short answer to its question in
  :mod:`opsbot.clarify`) finds each argument's value in a request by its meaning, not by the
  field's name: kubectl options first (``-n``, ``deploy/x``, ``--replicas=3``), then the
  words; lets the skill refine them (``route_args``); resolves names against the inventory;
  fills a PromQL expression from a recipe when the request asks a question without one;
- :func:`resolve` grounds one name (a near miss becomes the real name; close names come back
  as candidates; a kind the inventory knows nothing of is left as typed), and
  :func:`ground` grounds every ``Grounded`` argument of a call: the LLM planner's tool calls go
  through it, so both planners accept, correct and refuse the same names;
- :func:`kind_holding` gives a workload named without a kind the kind the inventory has it
  as, when that is one kind only and no deployment has the name ("restart redis in shop":
  the statefulset redis), for both planners.

:func:`validate` is the skill's own model (``Skill.parse_args``), the same for both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel

from opsbot.grounding import ground as fuzzy_ground
from opsbot.intent import extract as ex
from opsbot.intent import lexicon
from opsbot.meaning import (
    Choice,
    Count,
    Cue,
    Expression,
    Flag,
    Grounded,
    Lasting,
    Matchers,
    Meaning,
    ObjectKind,
    Remark,
    Since,
    cue,
    meaning_of,
)
from opsbot.recipes import Recipe
from opsbot.skills.base import Skill

#: the meaning of a field that declares none, by its name (older plugins)
BY_NAME: dict[str, Meaning] = {
    "namespace": Grounded("namespace"),
    "name": Grounded("deployment", kind_field="kind"),
    "service": Grounded("service"),
    "alert": Grounded("alertname", complete=False),
    "since": Since(),
    "duration": Lasting(),
    "kind": ObjectKind(),
    "replicas": Count("replicas"),
    "revision": Count("revision"),
    "tail": Count("lines"),
    "limit": Count("top"),
    "top": Count("top"),
    "query": Expression("promql"),
    "matchers": Matchers(),
    "comment": Remark(),
    "state": Choice(
        {
            "firing": ("firing", "fire", "active"),
            "pending": ("pending",),
            "silenced": ("silenced", "muted", "suppressed"),
        }
    ),
    "container": Flag("container"),
    "selector": Flag("selector"),
}
POD_NAME = re.compile(r"-[a-z0-9]{5,10}-[a-z0-9]{5}$")


_MEANINGS: dict[type[BaseModel], dict[str, Meaning]] = {}


def meanings(model: type[BaseModel]) -> dict[str, Meaning]:
    """Each field of ``model`` with its meaning (declared, else by its name)."""
    if model not in _MEANINGS:
        found: dict[str, Meaning] = {}
        for name, info in model.model_fields.items():
            meaning = meaning_of(info.metadata) or BY_NAME.get(name)
            if meaning is not None:
                found[name] = meaning
        _MEANINGS[model] = found
    return _MEANINGS[model]


def grounds(skill: Skill[Any, Any]) -> bool:
    """Whether reading ``skill``'s arguments uses the inventory's names (a name, a namespace,
    alert matchers, a query recipe): a skill without such arguments needs no grounding."""
    return any(
        isinstance(m, Grounded | Matchers | Expression) for m in meanings(skill.Args).values()
    )


def allowed(model: type[BaseModel], name: str) -> tuple[Any, ...] | None:
    """The values field ``name`` of ``model`` takes when its type lists them (a ``Literal``,
    also inside ``Optional``/``Annotated``); None when any value of its type may do."""
    info = model.model_fields.get(name)
    if info is None:
        return None
    return _literal_values(info.annotation)


def _literal_values(annotation: Any) -> tuple[Any, ...] | None:
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if get_origin(annotation) is Annotated:
        return _literal_values(get_args(annotation)[0])
    values = [
        v for a in get_args(annotation) if a is not type(None) for v in (_literal_values(a) or ())
    ]
    return tuple(values) or None


def allows(model: type[BaseModel], name: str, value: Any) -> bool:
    """Whether field ``name`` of ``model`` may take ``value`` by its listed values."""
    values = allowed(model, name)
    return values is None or value in values


def declared(model: type[BaseModel]) -> dict[str, Meaning]:
    """The fields of ``model`` that declare a meaning (not read by name)."""
    return {
        name: meaning
        for name, info in model.model_fields.items()
        if (meaning := meaning_of(info.metadata)) is not None
    }


def validate(skill: Skill[Any, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` validated by the skill's ``Args`` and dumped as an invocation carries it;
    raises ``pydantic.ValidationError``."""
    dumped: dict[str, Any] = skill.parse_args(dict(raw)).model_dump(mode="json", exclude_none=True)
    return dumped


# -- grounding (both planners) --------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """``value``: the name to use (None: nothing close); ``candidates``: close names when
    several fit; ``checked``: False when the inventory knows no name of this kind."""

    value: str | None
    candidates: tuple[str, ...] = ()
    checked: bool = True
    exact: bool = False


def known_names(
    meaning: Grounded, args: Mapping[str, Any], inventory: Mapping[str, set[str]]
) -> set[str]:
    names: set[str] = set()
    for kind in meaning.kinds(args):
        names |= inventory.get(kind, set())
    return names


def resolve(
    meaning: Grounded, value: str, args: Mapping[str, Any], inventory: Mapping[str, set[str]]
) -> Resolution:
    """Ground ``value`` against the names of ``meaning``'s kinds (see module doc). A pod's
    name (``checkout-7d9f8b6c5-x2k4p``) stands when its deployment is known."""
    known = known_names(meaning, args, inventory)
    if not known:
        return Resolution(value, checked=False)
    if value in known:
        return Resolution(value, exact=True)
    kinds = meaning.kinds(args)
    if "pod" in kinds and POD_NAME.search(value):
        owner = POD_NAME.sub("", value)
        if owner in inventory.get("deployment", set()) or "pod" not in inventory:
            return Resolution(value, exact=True)
    grounded = fuzzy_ground(value, known)
    if grounded.value:
        return Resolution(grounded.value, exact=grounded.exact)
    if not meaning.complete and not grounded.candidates:
        return Resolution(value, checked=False)
    return Resolution(None, grounded.candidates)


def ground(
    skill: Skill[Any, Any],
    args: Mapping[str, Any],
    inventory: Mapping[str, set[str]],
    said: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Every ``Grounded`` argument of ``args`` resolved: (the arguments with near misses
    replaced, a problem per name the inventory does not have: "there is no deployment
    'nginx-ingress' (known: ...)" or "which one: cart-api, cart-web"). ``said``: the
    arguments as the caller gave them, before the model's defaults; when they name no kind,
    a workload the inventory has only as a statefulset or daemonset is that kind
    (:func:`kind_holding`)."""
    out = _with_kinds(skill.Args, args, inventory, said)
    problems = []
    for name, meaning in meanings(skill.Args).items():
        value = out.get(name)
        if not isinstance(meaning, Grounded) or not isinstance(value, str) or not value:
            continue
        found = resolve(meaning, value, out, inventory)
        if found.value:
            out[name] = found.value
            continue
        kind = meaning.kinds(out)[0]
        if found.candidates:
            problems.append(
                f"{kind} {value!r} is ambiguous: which one: {', '.join(found.candidates)}?"
            )
        else:
            alternatives = ", ".join(sorted(known_names(meaning, out, inventory))[:8])
            problems.append(f"there is no {kind} {value!r} (known: {alternatives})")
    return out, problems


def ground_given(
    skill: Skill[Any, Any], args: Mapping[str, Any], inventory: Mapping[str, set[str]]
) -> dict[str, Any] | Ask:
    """``args`` a person typed whole (a kubectl command) with near misses replaced; two
    close names make a question; a name nothing has is kept as typed (the skill then says
    what there is)."""
    out = dict(args)
    for name, meaning in meanings(skill.Args).items():
        value = out.get(name)
        if not isinstance(meaning, Grounded) or not isinstance(value, str) or not value:
            continue
        found = resolve(meaning, value, out, inventory)
        if found.value:
            out[name] = found.value
        elif found.candidates:
            question = f"Which one do you mean: {', '.join(found.candidates)}?"
            return Ask(
                name, question, list(found.candidates), {k: v for k, v in out.items() if k != name}
            )
    return out


def kind_holding(
    model: type[BaseModel],
    meaning: Grounded,
    value: str,
    args: Mapping[str, Any],
    inventory: Mapping[str, set[str]],
) -> str | None:
    """The kind a workload named ``value`` is when the request said none: one of the kinds
    ``meaning``'s kind field takes, other than its default (a statefulset, a daemonset), when
    the inventory has ``value`` as that kind alone ("restart redis in shop": redis is a
    statefulset there) and has no object of the default kind by that name (a deployment of
    that name wins). Read in the namespace the arguments name (``statefulset/<ns>``), else
    cluster-wide; None when the inventory does not list the default kind, or two kinds hold
    the name."""
    field_name = meaning.kind_field
    if not field_name or args.get(field_name) or meaning.kind not in inventory:
        return None
    namespace = next(
        (args[n] for n, m in meanings(model).items() if _is_namespace(m) and args.get(n)), None
    )

    def holds(kind: str) -> bool:
        if kind not in inventory:
            return False  # not listed (an older role): it holds nothing we know of
        key = f"{kind}/{namespace}" if namespace else kind
        return value in inventory.get(key, set())

    if holds(meaning.kind):
        return None
    others = [
        str(k) for k in (allowed(model, field_name) or ()) if k != meaning.kind and holds(str(k))
    ]
    return others[0] if len(others) == 1 else None


def _bare(args: Mapping[str, Any], meaning: Grounded) -> dict[str, Any]:
    """``args`` without ``meaning``'s kind (one only defaulted, which the request never said)."""
    return {k: v for k, v in args.items() if k != meaning.kind_field}


def _with_kinds(
    model: type[BaseModel],
    args: Mapping[str, Any],
    inventory: Mapping[str, set[str]],
    said: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``args`` with the kind of each named workload filled in by :func:`kind_holding` when
    ``said`` (the arguments as given, before defaults) names no kind."""
    out = dict(args)
    for name, meaning in meanings(model).items():
        value = out.get(name)
        if (
            not isinstance(meaning, Grounded)
            or not meaning.kind_field
            or not isinstance(value, str)
        ):
            continue
        if (said if said is not None else out).get(meaning.kind_field):
            continue
        if kind := kind_holding(model, meaning, value, _bare(out, meaning), inventory):
            out[meaning.kind_field] = kind
    return out


# -- extraction (the offline router) -------------------------------------------------------


@dataclass
class Reading:
    """A request as the pipeline reads it: the parse, the inventory's names, the words that
    are skill vocabulary (never names), the PromQL recipes."""

    parsed: ex.Parsed
    inventory: Mapping[str, set[str]] = field(default_factory=dict)
    vocabulary: AbstractSet[str] = field(default_factory=frozenset)
    recipes: Mapping[str, Recipe] = field(default_factory=dict)


@dataclass
class Extracted:
    """The arguments found (to validate), and why a value was chosen (a recipe's name)."""

    args: dict[str, Any]
    rationale: str = ""


@dataclass
class Ask:
    """Two or more values fit ``field``: a question with the ``choices``."""

    field: str
    question: str
    choices: list[str]
    args: dict[str, Any]


def extract(
    skill: Skill[Any, Any], reading: Reading, given: Mapping[str, Any] | None = None
) -> Extracted | Ask:
    """The arguments of ``skill`` that ``reading`` gives (see module doc); arguments already
    ``given`` (an earlier message, a choice) are not read again."""
    fields = meanings(skill.Args)
    parsed = reading.parsed
    inventory = reading.inventory
    raw: dict[str, Any] = dict(given or {})
    skip: set[str] = {v.lower() for v in raw.values() if isinstance(v, str)}
    namespace_fields = [n for n, m in fields.items() if _is_namespace(m)]
    for name in namespace_fields:
        if name not in raw and (namespace := read_namespace(parsed, inventory)):
            raw[name] = namespace
            skip.add(namespace)
    for name, meaning in fields.items():
        if name in raw or isinstance(meaning, Grounded):
            continue
        value = _read(meaning, parsed, inventory, fields)
        if isinstance(meaning, ObjectKind) and not allows(skill.Args, name, value):
            continue  # "the tracking pixel service": no kind the skill acts on
        if value not in (None, {}, ""):
            raw[name] = value
    for name, meaning in fields.items():
        if isinstance(meaning, Grounded) and meaning.kind == "alertname" and name not in raw:
            alert = ex.extract_matchers(parsed, inventory.get("alertname")).get("alertname")
            if alert:
                raw[name] = alert
    if not namespace_fields:  # "silence everything in namespace staging": a matcher
        known = inventory.get("namespace")
        said = ex.extract_namespace(parsed, known, guess=False)
        if said is None and (guessed := ex.extract_namespace(parsed, known)) is not None:
            # known, or after "in": "silence everything in staging" (but "alerts on
            # payments", "alerts for cart" name a service)
            inside = re.search(rf"\b(?:in|within)\s+{re.escape(guessed)}\b", parsed.rest, re.I)
            said = guessed if known or inside else None
        for name, meaning in fields.items():
            if said and isinstance(meaning, Matchers) and name not in (given or {}):
                raw[name] = {"namespace": said, **(raw.get(name) or {})}
    for name, meaning in fields.items():
        if isinstance(meaning, Matchers) and isinstance(raw.get(name), dict):
            skip.update(str(v).lower() for v in raw[name].values())
    # the kinds the request or an earlier message said; a skill's route_args may default one
    said_kinds = {n for n, m in fields.items() if isinstance(m, ObjectKind) and raw.get(n)}
    raw = skill.route_args(parsed, raw)
    skip.update(v.lower() for v in raw.values() if isinstance(v, str))
    rationale = ""
    for name, meaning in fields.items():
        if isinstance(meaning, Expression) and meaning.recipes and not parsed.expr:
            filled = fill_recipe(reading, skill, skip)
            if filled is not None:
                raw[name], rationale = filled
    for name, meaning in fields.items():
        if not isinstance(meaning, Grounded) or name in raw or _is_namespace(meaning):
            continue
        if meaning.kind == "alertname":
            continue
        kind_field = meaning.kind_field if meaning.kind_field in fields else None
        unsaid = kind_field is not None and kind_field not in said_kinds
        found = _read_name(
            name, meaning, reading, raw, skip, _own_words(skill), skill.Args if unsaid else None
        )
        if isinstance(found, Ask):
            return found
        if found:
            raw[name] = found
            if meaning.kind_field and meaning.kind_field in fields and parsed.refs:
                raw.setdefault(meaning.kind_field, parsed.refs[0][0])
            elif kind_field and unsaid:
                bare = _bare(raw, meaning)
                if kind := kind_holding(skill.Args, meaning, found, bare, inventory):
                    raw[kind_field] = kind  # "restart redis in shop": a statefulset
    guessed = _guessed_namespace(parsed, inventory, raw, namespace_fields, given)
    for name, meaning in fields.items():
        if guessed and _is_name(meaning) and name not in raw and _required(skill, name):
            # "health check on frontend", "error patterns in payments": the word taken for a
            # namespace is the name the skill needs (the inventory knows no such namespace)
            raw[name] = raw.pop(guessed)
            break
    for name, meaning in fields.items():
        said_matchers = raw.get(name) or {}
        if (
            isinstance(meaning, Matchers)
            and meaning.name_label
            and isinstance(said_matchers, dict)
            and not said_matchers.keys() & {meaning.name_label, "alertname"}
            and (not said_matchers or name not in (given or {}))
        ):  # "alerts for checkout"; "critical alerts on payments": a severity and a service
            names = ex.candidate_names(parsed, reading.vocabulary, skip)
            if said_matchers:  # beside other labels, only a word that stands for a service
                names = [
                    n
                    for n in names
                    if _owned(parsed.rest, n)
                    and n.lower() not in ex.LABEL_WORDS
                    and n not in said_matchers.values()
                ]
            if names:
                service = _pick(names, Grounded("service", complete=False), raw, inventory)
                if isinstance(service, str):
                    raw[name] = {**said_matchers, meaning.name_label: service}
    for name in namespace_fields:
        if name not in raw:
            homes = _homes(fields, raw, inventory)
            if len(homes) == 1:
                raw[name] = homes[0]
            elif len(homes) > 1:
                subject = next(str(raw[n]) for n, m in fields.items() if _is_name(m) and n in raw)
                return Ask(
                    name,
                    f"{subject} exists in several namespaces: {', '.join(homes)}. Which one?",
                    homes,
                    raw,
                )
    for name, meaning in fields.items():
        if isinstance(meaning, ObjectKind) and name not in raw:
            subject = next((str(raw[n]) for n, m in fields.items() if _is_name(m) and n in raw), "")
            kind = "pod" if POD_NAME.search(subject) else "deployment"
            if allows(skill.Args, name, kind):
                raw[name] = kind
    return Extracted(raw, rationale)


#: the words before a name that say whose something is ("alerts on payments", "for cart")
_OWNER = re.compile(r"\b(?:on|for|of|from)\s+(?:the\s+)?$", re.I)
_OWNED = re.compile(
    r"\s+(?:alerts?|pages?|silences?|alarms?|pods?|deployments?|deploy|services?|logs?)\b",
    re.I,
)


def _owned(text: str, name: str) -> bool:
    """Whether ``name`` stands for whose something is: "alerts on payments", "for cart",
    "checkout alerts"."""
    m = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)
    return m is not None and bool(_OWNER.search(text[: m.start()]) or _OWNED.match(text[m.end() :]))


def _after(text: str, name: str, own: AbstractSet[str]) -> bool:
    """Whether ``name`` is the object of the skill's own verb, which opens a clause
    ("..., investigate search in prod")."""
    m = re.search(
        rf"(?:^|[,.;:!?]\s*|\b(?:and|then|please|pls)\s+)(\w+)\s+(?:the\s+)?"
        rf"{re.escape(name)}(?![\w-])",
        text,
    )
    return m is not None and ex.stem(m.group(1)) in own


def _owns(parsed: ex.Parsed, names: Sequence[str]) -> bool:
    """Whether one of ``names`` stands where a name does ("logs for cart", "cart alerts")."""
    return any(_owned(parsed.rest, n) for n in names)


def _required(skill: Skill[Any, Any], name: str) -> bool:
    return bool(skill.Args.model_fields[name].is_required())


def _guessed_namespace(
    parsed: ex.Parsed,
    inventory: Mapping[str, set[str]],
    raw: Mapping[str, Any],
    namespace_fields: list[str],
    given: Mapping[str, Any] | None,
) -> str | None:
    """The namespace field whose value was only guessed from "in X"/"on X" (no inventory
    confirms it), or None."""
    for name in namespace_fields:
        value = raw.get(name)
        if not value or name in (given or {}) or value in inventory.get("namespace", set()):
            continue
        if ex.extract_namespace(parsed, inventory.get("namespace"), guess=False) is None:
            return name
    return None


def _is_namespace(meaning: Meaning) -> bool:
    return isinstance(meaning, Grounded) and meaning.kind == "namespace"


def _is_name(meaning: Meaning) -> bool:
    return isinstance(meaning, Grounded) and meaning.kind not in ("namespace", "alertname")


def read_namespace(parsed: ex.Parsed, inventory: Mapping[str, set[str]]) -> str | None:
    """``-n shop`` (kubectl's option) first, then the words ("in shop", "shop namespace")."""
    return ex.extract_namespace(parsed, inventory.get("namespace"))


def _read(
    meaning: Meaning,
    parsed: ex.Parsed,
    inventory: Mapping[str, set[str]],
    fields: Mapping[str, Meaning],
) -> Any:
    if isinstance(meaning, Since):
        option = parsed.flags.get("since", "")
        if re.fullmatch(r"(?:\d+[smhdw])+", option):
            return option
        since = ex.extract_since(parsed)
        if since is None and not any(isinstance(m, Lasting) for m in fields.values()):
            since = ex.extract_for_duration(parsed)  # "graph it for 3h": the chart's span
        return since
    if isinstance(meaning, Lasting):
        return ex.extract_for_duration(parsed)
    if isinstance(meaning, Count):
        return count(parsed, meaning.unit)
    if isinstance(meaning, Expression):
        return parsed.expr
    if isinstance(meaning, Matchers):
        return ex.extract_matchers(parsed, inventory.get("alertname"))
    if isinstance(meaning, ObjectKind):
        return parsed.refs[0][0] if parsed.refs else ex.extract_kind(parsed)
    if isinstance(meaning, Choice):
        return choose(parsed, meaning)
    if isinstance(meaning, Remark):
        return ex.extract_comment(parsed)
    if isinstance(meaning, Flag):
        return flag(parsed, meaning.name)
    return None


_N = lexicon.NUMBER
_UNITS = r"(?!\s*(?:s|sec|secs|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)\b)"
#: kubectl options, then phrases, for each kind of count
COUNTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "replicas": (
        ("replicas",),
        (
            rf"\bto\s+{_N}\b{_UNITS}",
            rf"\b{_N}\s+(?:replicas?|pods?|instances?|copies)\b",
            rf"\breplicas?\s*(?:=|:)\s*{_N}\b",
            rf"\bmake\s+it\s+{_N}\b{_UNITS}",
            # "scale deploy checkout 3": kubectl's word order without --replicas
            rf"\bscale\s+(?:(?:deploy|deployment|the)\s+)?[a-z][\w.-]*\s+{_N}\b{_UNITS}(?!\s*%)",
            r"\bx\s?(\d+)\b",
        ),
    ),
    "revision": (
        ("to-revision", "revision"),
        (
            r"\brevision\s*#?(\d+)",
            r"\brev\s*#?(\d+)",
            r"\bversion\s*#?(\d+)",
            r"\bto\s+#?(\d+)\b",
        ),
    ),
    "lines": (
        ("tail", "limit"),
        (
            rf"\b{_N}\s+(?:log\s+)?lines?\b",
            rf"\btail\s+(?:-n\s*)?{_N}\b",
            rf"\blimit\s+(?:to\s+)?{_N}\b",
            rf"\blast\s+{_N}\s*(?:$|[,.;!?)])",  # "tail the logs of x, last 50"
        ),
    ),
    "top": (("limit",), (rf"\btop\s+{_N}\b", rf"\blimit\s+{_N}\b")),
}


def count(parsed: ex.Parsed, unit: str) -> int | None:
    """A number of ``unit`` (see :data:`COUNTS`): "to 3", "three replicas", ``--replicas=3``."""
    options, patterns = COUNTS[unit]
    for option in options:
        if parsed.flags.get(option, "").isdigit():
            return int(parsed.flags[option])
    for pattern in patterns:
        m = re.search(pattern, parsed.rest, re.I)
        if m:
            return lexicon.number(m.group(1))
    if unit == "replicas" and _OFF.search(parsed.rest):
        return 0
    return None


#: "spin cart down", "take the orders pods down", "shut payments off": no replicas left
_OFF = re.compile(
    r"\b(?:spin|take|shut|bring|switch)\s+(?:[\w.-]+\s+){0,3}?(?:down|off)\b(?!\s+(?:to|by|and)\b)",
    re.I,
)


@lru_cache(maxsize=64)
def _choice_cues(meaning: Choice) -> list[tuple[str, list[Cue]]]:
    return [(value, [cue(w) for w in words]) for value, words in meaning.words.items()]


def choose(parsed: ex.Parsed, meaning: Choice) -> str | None:
    """The first value of ``meaning`` (in its order) whose words the request says (by stem,
    in its own words or the lexicon's, or exactly for ``=word``)."""
    exact = {t.lower() for t in parsed.tokens}
    for value, cues in _choice_cues(meaning):
        for said in cues:
            if said.exact and said.exact in exact:
                return value
            words = ex.phrase(" ".join(said.words)) if said.words else ()
            if words and (ex.contains(parsed.stems, words) or ex.contains(parsed.canon, words)):
                return value  # (said in the lexicon's words too: "alerts going off": firing)
    return None


def flag(parsed: ex.Parsed, name: str) -> str | None:
    """``-c app``/``--container app``/"container app"; ``-l app=x``/"selector app=x"."""
    if parsed.flags.get(name):
        return parsed.flags[name]
    word = {
        "container": r"container",
        "selector": r"(?:selector|label selector|(?:with\s+)?labels?)",
    }[name]
    m = re.search(rf"\b{word}\s+([a-z0-9][\w.=,!-]*)", parsed.rest, re.I)
    if m and (name != "selector" or "=" in m.group(1)):
        return m.group(1)
    if name == "selector" and (bare := _LABEL_EQ.search(parsed.rest)):
        return bare.group(1)  # "pods for app=checkout in shop"
    return None


#: a bare label matcher that selects pods (not the namespace: "ns=shop" is one)
_LABEL_EQ = re.compile(
    r"(?<![\w./-])((?!(?:ns|namespace)=)[a-z][\w./-]*=[a-z0-9][\w.-]*)(?![\w=])", re.I
)


def _read_name(
    name: str,
    meaning: Grounded,
    reading: Reading,
    raw: dict[str, Any],
    skip: set[str],
    own: frozenset[str] = frozenset(),
    model: type[BaseModel] | None = None,
) -> str | Ask | None:
    parsed = reading.parsed
    kinds = meaning.kinds(raw)
    for kind, value in parsed.refs:  # deploy/checkout
        if kind in kinds or meaning.kind_field:
            return value
    names = ex.candidate_names(parsed, reading.vocabulary, skip)
    slots = ex.slot_names(parsed, skip, set(own)) if not _owns(parsed, names) else []
    said = {n.lower() for n in names}
    words = [s for s in slots if s.lower() not in said]  # skill words, not candidates
    verb = ex.opening_verb(parsed)

    def strong(n: str) -> bool:
        return _owned(parsed.rest, n) or _after(parsed.rest, n, own)

    if not [n for n in names if n.lower() != verb] or any(strong(n) for n in words):
        # "logs for search", "the search pods", "latency spike on search", "dump the last
        # 20 lines from search", "investigate search": a word other skills use stands where
        # the name does
        names = (
            [*sorted(words, key=lambda n: not strong(n)), *(n for n in names if n.lower() != verb)]
            if names
            else slots
        )  # the verb that opens the request names nothing ("could you summarise the ...")
    chosen = _pick(names, meaning, raw, reading.inventory, model)
    if isinstance(chosen, tuple):
        return Ask(name, f"Which one do you mean: {', '.join(chosen)}?", list(chosen), raw)
    return chosen


_OWN: dict[str, frozenset[str]] = {}


def _own_words(skill: Skill[Any, Any]) -> frozenset[str]:
    """The stems no name of ``skill`` can be: its own keywords' words, the lexicon's words
    for them ("bounce" for restart; not "quiet", a silence word, in "errors from quiet") and
    ranking or chart words."""
    if skill.name not in _OWN:
        words = [w for key in skill.keywords for w in cue(key).words]
        mine = {ex.stem(w) for w in words}
        words += [
            w
            for key, value in lexicon.SYNONYMS.items()
            if ex.stem(value) in mine
            for w in key.split()
        ]
        words += [*lexicon.RANKING, *lexicon.LOWEST, *lexicon.CHART]
        stems = {ex.stem(w) for w in words if w not in ("*", ex.END)}
        _OWN[skill.name] = frozenset(stems - ex.STOPWORDS)  # "what do i do": not "i"
    return _OWN[skill.name]


def _pick(
    names: Sequence[str],
    meaning: Grounded,
    raw: Mapping[str, Any],
    inventory: Mapping[str, set[str]],
    model: type[BaseModel] | None = None,
) -> str | tuple[str, ...] | None:
    """The name among ``names`` grounded for ``meaning``; the close candidates when one is
    ambiguous; the first as typed when none is known; None when there is no name. A name
    the inventory has exactly as another kind the skill takes (a statefulset) is that name,
    not a deployment's near miss."""
    if not names:
        return None
    resolved = [resolve(meaning, n, raw, inventory) for n in names]
    if model is not None and not any(r.exact for r in resolved):
        for n in names:
            if kind_holding(model, meaning, n, _bare(raw, meaning), inventory):
                return n
    if not resolved[0].checked and not known_names(meaning, raw, inventory):
        return names[0]
    for found in resolved:  # an exact name wins over any fuzzy one
        if found.exact and found.value:
            return found.value
    for found in resolved:
        if found.value and found.checked:
            return found.value
        if found.candidates:
            return found.candidates
    return names[0]


def _homes(
    fields: Mapping[str, Meaning], raw: Mapping[str, Any], inventory: Mapping[str, set[str]]
) -> list[str]:
    """The namespaces whose inventory has the named object (``deployment/<ns>`` keys)."""
    for name, meaning in fields.items():
        if _is_name(meaning) and name in raw and isinstance(meaning, Grounded):
            kind = meaning.kinds(raw)[0]
            return sorted(
                key.split("/", 1)[1]
                for key, names in inventory.items()
                if key.startswith(f"{kind}/") and raw[name] in names
            )
    return []


# -- PromQL recipes -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeAsk:
    """A recipe the request asks for, and how: ranked (``top``), charted."""

    name: str
    recipe: Recipe
    top: int | None = None
    lowest: bool = False
    chart: bool = False
    window: bool = False
    breakdown: bool = False

    @property
    def strong(self) -> bool:
        """Whether the request asks for the recipe itself, not something a skill answers:
        its words alone, a ranking, a chart, a breakdown ("p99 latency per service") or, for
        a windowed recipe, a time window."""
        return (
            self.recipe.alone
            or self.top is not None
            or self.chart
            or self.breakdown
            or (self.window and self.recipe.windowed)
        )


def says(stems: list[str], words: str) -> bool:
    """Whether ``stems`` contain the phrase ``words`` (stems compared; ``*`` a gap)."""
    return ex.contains(stems, ex.phrase(words))


#: how many a ranking without a number shows ("which pods restart most")
DEFAULT_TOP = 10
_TOP = re.compile(
    rf"\b(?:top|bottom|first)\s+{_N}\b|\b{_N}\s+(?:most|highest|biggest|largest|lowest|least)\b",
    re.I,
)
_WHICH_MOST = re.compile(
    r"\b(?:which|what|who)\b.*\b(?:most|highest|biggest|largest|heaviest|hungriest|worst|"
    r"slowest|busiest|lowest|least)\b",
    re.I,
)


def match_recipe(parsed: ex.Parsed, recipes: Mapping[str, Recipe]) -> RecipeAsk | None:
    """The recipe the request's words ask for (the longest match), with its ranking."""
    best: tuple[int, int, str, Recipe] | None = None
    stems = parsed.stems
    for name, recipe in recipes.items():
        for words in recipe.words:
            if says(stems, words):
                size = (recipe.ranked, len(ex.phrase(words)))
                if best is None or size > best[:2]:
                    best = (*size, name, recipe)
    if best is None:
        return None
    if not best[3].ranked:  # "top pods in shop": its name is the ranking word
        return RecipeAsk(best[2], best[3])
    text = parsed.rest
    top: int | None = None
    said = {t.lower() for t in parsed.tokens}
    lowest = bool(said & set(lexicon.LOWEST))
    if m := _TOP.search(text):
        top = lexicon.number(next(g for g in m.groups() if g))
    elif said & set(lexicon.RANKING) or _WHICH_MOST.search(text) or lowest:
        top = DEFAULT_TOP
    chart = any(says(stems, w) for w in lexicon.CHART)
    window = ex.extract_since(parsed) is not None
    breakdown = _BY.search(text) is not None
    return RecipeAsk(best[2], best[3], top, lowest, chart, window, breakdown)


_BY = re.compile(
    r"\b(?:by|per|for each|each)\s+(pod|namespace|container|node|service|instance|job)s?\b", re.I
)
_TOP_OF = re.compile(
    r"\b(?:top|which|what|the)\s+(?:\w+\s+){0,2}?(pod|namespace|container|node|service|instance|job)s?\b",
    re.I,
)
_QUANTILE = re.compile(
    r"\bp(\d{2}(?:\.\d+)?)\b|\b(\d{2})(?:th|st|nd|rd)?\s+percentile\b|\b(median)\b", re.I
)


def fill_recipe(reading: Reading, skill: Skill[Any, Any], skip: set[str]) -> tuple[str, str] | None:
    """The PromQL of the recipe the request asks for, filled in (namespace, the workload or
    service named, the breakdown label, window, quantile, ranking), and the rationale that
    names the recipe; None when it asks for none."""
    parsed = reading.parsed
    asked = match_recipe(parsed, reading.recipes)
    if asked is None or not asked.strong:
        return None
    recipe = asked.recipe
    namespace = read_namespace(parsed, reading.inventory)
    vocabulary = _with_recipe_words(frozenset(reading.vocabulary), _recipe_words(reading.recipes))
    names = ex.candidate_names(parsed, vocabulary, skip | ({namespace} if namespace else set()))
    name = None
    if names:
        kind = recipe.name_kind
        picked = _pick(
            names,
            Grounded(kind, also=("pod",) if kind == "deployment" else (), complete=False),
            {},
            reading.inventory,
        )
        name = picked if isinstance(picked, str) else None
    label = (m.group(1).lower() if (m := _BY.search(parsed.rest)) else None) or (
        m.group(1).lower() if asked.top and (m := _TOP_OF.search(parsed.rest)) else None
    )
    window = None
    if not any(isinstance(m, Since) for m in meanings(skill.Args).values()) and parsed.durations:
        window = parsed.durations[0].value
    quantile = None
    if m := _QUANTILE.search(parsed.rest):
        quantile = 0.5 if m.group(3) else float("0." + (m.group(1) or m.group(2)).replace(".", ""))
    query = recipe.render(
        namespace=namespace,
        name=name,
        by=label,
        window=window,
        quantile=quantile,
        top=asked.top,
        lowest=asked.lowest,
    )
    return query, f"recipe `{asked.name}`: {recipe.summary}"


def render_named(
    recipes: Mapping[str, Recipe], name: str, *, namespace: str | None = None
) -> tuple[str, str] | None:
    """Recipe ``name`` rendered for a namespace (``kubectl top pods -n shop``)."""
    recipe = recipes.get(name)
    if recipe is None:
        return None
    return recipe.render(namespace=namespace), f"recipe `{name}`: {recipe.summary}"


@lru_cache(maxsize=8)
def _with_recipe_words(vocabulary: frozenset[str], words: frozenset[str]) -> frozenset[str]:
    return vocabulary | words


def _recipe_words(recipes: Mapping[str, Recipe]) -> frozenset[str]:
    words = [w for r in recipes.values() for w in r.words]
    return _words_of((*words, *lexicon.RANKING, *lexicon.LOWEST))


@lru_cache(maxsize=8)
def _words_of(words: tuple[str, ...]) -> frozenset[str]:
    return frozenset(ex.stem(w) for phrase in words for w in phrase.split() if w != "*")
