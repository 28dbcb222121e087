"""The offline router: the embedded default planner, no LLM needed.

1. **Score** each permitted skill: its ``keywords`` (words and phrases, stemmed; negative
   weights argue against), signals such as an extracted PromQL/LogQL expression, a
   typo-tolerant match (rapidfuzz) for long words, and — as a tie-breaker only — the
   similarity of the request to the skill's ``examples``.
2. **Decide**: below the threshold the request maps to no skill (an answer, not a guess);
   two skills too close to tell apart get a clarifying question.
3. **Extract** the arguments the skill's ``Args`` model declares, by field name (namespace,
   name/service, kind, since, duration, replicas, revision, tail, matchers, ...), then let
   the skill refine them (``route_args``), **ground** names against the backends' inventory
   and **validate** with the model; a missing required argument becomes a question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from rapidfuzz import fuzz

from opsbot import wording
from opsbot.grounding import ground
from opsbot.intent import extract as ex
from opsbot.intent import speech
from opsbot.intent.base import ToolRunner
from opsbot.inventory import Inventory
from opsbot.model import Answer, Clarify, Invocation, Plan, Request, Run, first_invocation
from opsbot.skills.base import Risk, Skill

THRESHOLD = 1.0
AMBIGUITY_MARGIN = 0.1
SIGNALS = (
    "<promql>",
    "<logql>",
    "<selector>",
    "<expr>",
    "<alertname>",
    "<matcher>",
    "<number>",
    "<write-talk>",  # the request talks about a write that was done (a report, a noun)
)

_COURTESY = {
    "thanks": "You're welcome.",
    "thank": "You're welcome.",
    "thx": "You're welcome.",
    "ty": "You're welcome.",
    "hi": "Hi! Type `help` to see what I can do.",
    "hello": "Hello! Type `help` to see what I can do.",
    "hey": "Hey! Type `help` to see what I can do.",
}
NOTHING_ASKED = "Noted. I act only on requests; say what you need, or type `help`."
NO_SKILL = (
    "I can't map that to any skill you may use here. Type `help` to see what I can do, "
    "or give a PromQL expression after `promql:`."
)


@dataclass(frozen=True)
class _Keyword:
    stems: tuple[str, ...]
    weight: float


@dataclass(frozen=True)
class Scored:
    skill: Skill[Any, Any]
    score: float


def _compile(keywords: dict[str, float]) -> list[_Keyword]:
    out = []
    for phrase, weight in keywords.items():
        if phrase in SIGNALS or phrase.startswith("="):
            out.append(_Keyword((phrase,), weight))
        else:
            out.append(
                _Keyword(tuple(w if w == "*" else ex.stem(w) for w in phrase.split()), weight)
            )
    return out


MAX_GAP = 3  # "*" in a keyword phrase stands for up to this many words ("roll * back")


def _contains(seq: list[str], phrase: tuple[str, ...]) -> bool:
    """Whether the stems ``phrase`` occur in order in ``seq``: adjacent, except that ``*``
    allows up to MAX_GAP words in between."""
    if "*" not in phrase:
        n = len(phrase)
        return any(tuple(seq[i : i + n]) == phrase for i in range(len(seq) - n + 1))
    return _gapped(seq, phrase)


def _gapped(seq: list[str], phrase: tuple[str, ...]) -> bool:
    parts: list[tuple[str, ...]] = []
    current: list[str] = []
    for stem_ in phrase:
        if stem_ == "*":
            parts.append(tuple(current))
            current = []
        else:
            current.append(stem_)
    parts.append(tuple(current))

    def match_from(start: int, index: int) -> bool:
        if index == len(parts):
            return True
        part = parts[index]
        limit = len(seq) if index == 0 else min(len(seq), start + MAX_GAP + 1)
        for i in range(start, limit):
            if tuple(seq[i : i + len(part)]) == part and match_from(i + len(part), index + 1):
                return True
        return False

    return match_from(0, 0)


class OfflineRouter:
    """Deterministic keyword-and-pattern router. ``inventory`` grounds names when given."""

    name = "offline"

    def __init__(self, inventory: Inventory | None = None, threshold: float = THRESHOLD) -> None:
        self.inventory = inventory
        self.threshold = threshold
        self._compiled: dict[str, list[_Keyword]] = {}

    def _keywords(self, skill: Skill[Any, Any]) -> list[_Keyword]:
        if skill.name not in self._compiled:
            self._compiled[skill.name] = _compile(skill.keywords)
        return self._compiled[skill.name]

    # -- scoring -------------------------------------------------------------------------

    def _signals(self, parsed: ex.Parsed) -> set[str]:
        signals = set()
        if speech.write_mood(parsed.text) in (speech.Mood.REPORT, speech.Mood.NOUN):
            signals.add("<write-talk>")
        if parsed.expr:
            signals.add("<expr>")
            signals.add(f"<{parsed.expr_kind}>")
        if ex.ALERTNAME.search(parsed.rest):
            signals.add("<alertname>")
        if re.search(r"\w\s*(=~|!=|=)\s*\S", parsed.rest):
            signals.add("<matcher>")
        if re.search(r"\b\d+\b", parsed.rest):
            signals.add("<number>")
        return signals

    def score(self, parsed: ex.Parsed, skill: Skill[Any, Any]) -> float:
        signals = self._signals(parsed)
        stems = parsed.stems
        exact = {t.lower() for t in parsed.tokens}
        total = 0.0
        for kw in self._keywords(skill):
            if kw.stems[0] in SIGNALS:
                total += kw.weight if kw.stems[0] in signals else 0.0
            elif kw.stems[0].startswith("="):  # "=silenced": this exact word, not its stem
                total += kw.weight if kw.stems[0][1:] in exact else 0.0
            elif _contains(stems, kw.stems):
                total += kw.weight
            elif len(kw.stems) == 1 and len(kw.stems[0]) >= 5 and kw.weight > 0:
                best = max((fuzz.ratio(kw.stems[0], s) for s in stems if len(s) >= 4), default=0)
                if best >= 85:
                    total += 0.8 * kw.weight
        if total > 0 and skill.examples:
            similarity = max(
                fuzz.token_set_ratio(parsed.lowered, e.lower()) for e in skill.examples
            )
            total += 0.3 * max(0.0, similarity - 50) / 50
        return total

    def rank(self, parsed: ex.Parsed, catalog: Sequence[Skill[Any, Any]]) -> list[Scored]:
        """Every skill of ``catalog`` with its score, best first (ties keep catalog order)."""
        return sorted((Scored(s, self.score(parsed, s)) for s in catalog), key=lambda r: -r.score)

    # -- planning ------------------------------------------------------------------------

    async def explain(self, request: Request, withheld: Sequence[Skill[Any, Any]]) -> str | None:
        """The withheld skill this request would have matched, if any (to explain a refusal)."""
        ranked = self.rank(ex.parse(request.text[:2000]), withheld)
        return ranked[0].skill.name if ranked and ranked[0].score >= self.threshold else None

    async def plan(
        self, request: Request, catalog: Sequence[Skill[Any, Any]], tools: ToolRunner | None = None
    ) -> Plan:
        text = request.text.strip()[:2000]
        parsed = ex.parse(text)
        if not parsed.tokens and not parsed.expr:
            return Answer(text=wording.EMPTY)
        asked = self._what_is_asked(text, parsed, catalog)
        if asked is None:
            return Answer(text=NOTHING_ASKED)
        ranked = self.rank(*asked)
        mood = speech.write_mood(text)
        if mood is speech.Mood.IMPERATIVE:
            parsed = asked[0]  # its names, not those of a negated clause
        if (not ranked or ranked[0].score < self.threshold) and mood in (
            speech.Mood.QUESTION,
            speech.Mood.HYPOTHETICAL,
        ):
            return await self._about_write(parsed, catalog)
        if not ranked or ranked[0].score < self.threshold:
            first = ex.stem(parsed.tokens[0]) if parsed.tokens else ""
            return Answer(text=_COURTESY.get(first, NO_SKILL), unmatched=True)
        top = ranked[0]
        if len(ranked) > 1 and top.score - ranked[1].score < AMBIGUITY_MARGIN:
            other = ranked[1].skill
            vocabulary = self._vocabulary(catalog)
            built = [await self.build(s, parsed, vocabulary) for s in (top.skill, other)]
            return Clarify(
                question=(
                    f"Did you mean `{top.skill.name}` ({top.skill.summary}) or "
                    f"`{other.name}` ({other.summary})?"
                ),
                choices=[p.invocations[0] for p in built if isinstance(p, Run)],
            )
        vocabulary = self._vocabulary(catalog)
        return await self.build(top.skill, parsed, vocabulary)

    async def _about_write(self, parsed: ex.Parsed, catalog: Sequence[Skill[Any, Any]]) -> Plan:
        """A question about a write no read answers ("should we roll back checkout in shop?"):
        the write it is about, for the engine to preview, and nothing planned."""
        writes = [s for s in catalog if s.risk is not Risk.READ]
        ranked = self.rank(parsed, writes)
        if not ranked or ranked[0].score < self.threshold:
            return Answer(text=NO_SKILL, unmatched=True)
        built = await self.build(ranked[0].skill, parsed, self._vocabulary(catalog))
        about = first_invocation(built)
        return Answer(text=wording.about_write(about or ranked[0].skill.name), about=about)

    @staticmethod
    def _what_is_asked(
        text: str, parsed: ex.Parsed, catalog: Sequence[Skill[Any, Any]]
    ) -> tuple[ex.Parsed, Sequence[Skill[Any, Any]]] | None:
        """What to rank, and among which skills (None: nothing is asked). A request that only
        talks about a write (negated, asked, reported, imagined, quoted) is ranked among the
        read skills; negated clauses are left out of the text ("don't restart X, just check
        its pods"; "no, not checkout: restart payments"); a report or a plan for later that
        asks nothing ("fyi we rolled back payments") maps to no skill."""
        mood = speech.write_mood(text)
        if mood is speech.Mood.IMPERATIVE:
            rest = speech.without_negated(text)
            return (ex.parse(rest) if rest != text else parsed), catalog
        if mood.asks_for_write:
            return parsed, catalog
        reads = [s for s in catalog if s.risk is Risk.READ]
        if mood in (speech.Mood.REPORT, speech.Mood.HYPOTHETICAL) and not speech.asks_something(
            text
        ):
            return None
        if mood is speech.Mood.NEGATED and not speech.asks_something(
            speech.without_write_talk(text)
        ):
            return None
        rest = {
            speech.Mood.NEGATED: speech.without_write_talk(text),
            speech.Mood.QUOTED: speech.unquoted(text),
        }.get(mood, text)
        return ex.parse(rest) if rest.strip() and rest != text else parsed, reads

    def _vocabulary(self, catalog: Sequence[Skill[Any, Any]]) -> set[str]:
        vocab: set[str] = set()
        for skill in catalog:
            for kw in self._keywords(skill):
                vocab.update(s.lstrip("=") for s in kw.stems if s not in SIGNALS and s != "*")
        return vocab

    async def build(
        self,
        skill: Skill[Any, Any],
        parsed: ex.Parsed,
        vocabulary: set[str],
        given: dict[str, Any] | None = None,
    ) -> Plan:
        """Extract, refine, ground and validate the arguments of ``skill`` from ``parsed``;
        arguments already ``given`` (an earlier message, a choice) are not read again."""
        fields = skill.Args.model_fields
        inventory = await self.inventory.snapshot() if self.inventory else {}
        raw: dict[str, Any] = dict(given or {})
        skip: set[str] = {v.lower() for v in raw.values() if isinstance(v, str)}
        if "namespace" in fields and "namespace" not in raw:
            namespace = ex.extract_namespace(parsed, inventory.get("namespace"))
            if namespace:
                raw["namespace"] = namespace
                skip.add(namespace)
        for field_name, extractor in _EXTRACTORS.items():
            if field_name in fields and field_name not in raw:
                value = extractor(parsed, inventory)
                if value not in (None, {}, ""):
                    raw[field_name] = value
        if "matchers" in raw:
            skip.update(v.lower() for v in raw["matchers"].values())
        raw = skill.route_args(parsed, raw)
        for field_name in ("name", "service"):
            if field_name in fields and field_name not in raw:
                names = ex.candidate_names(parsed, vocabulary, skip)
                kind = "service" if field_name == "service" else raw.get("kind", "deployment")
                chosen = self._pick_name(names, inventory.get(kind, set()))
                if isinstance(chosen, tuple):  # close names: ask which, one button each
                    return Clarify(
                        question=f"Which one do you mean: {', '.join(chosen)}?",
                        skill=skill.name,
                        args=raw,
                        missing=[field_name],
                        choices=await self._choices(
                            skill, parsed, vocabulary, raw, field_name, chosen
                        ),
                    )
                if chosen:
                    raw[field_name] = chosen
        if "namespace" in fields and "namespace" not in raw and "name" in raw:
            homes = sorted(
                key.split("/", 1)[1]
                for key, names in inventory.items()
                if key.startswith(f"{raw.get('kind', 'deployment')}/") and raw["name"] in names
            )
            if len(homes) == 1:
                raw["namespace"] = homes[0]
            elif len(homes) > 1:
                return Clarify(
                    question=f"{raw['name']} exists in several namespaces: {', '.join(homes)}. Which one?",
                    skill=skill.name,
                    args=raw,
                    missing=["namespace"],
                    choices=await self._choices(skill, parsed, vocabulary, raw, "namespace", homes),
                )
        if "kind" in fields and "kind" not in raw:
            name = str(raw.get("name", ""))
            raw["kind"] = (
                "pod" if re.search(r"-[a-z0-9]{5,10}-[a-z0-9]{5}$", name) else "deployment"
            )
        try:
            args = skill.parse_args(raw)
        except ValidationError as exc:
            return Clarify(
                question=_question(skill, exc),
                skill=skill.name,
                args=raw,
                missing=wording.missing_fields(exc),
            )
        return Run(
            invocations=[
                Invocation(skill=skill.name, args=args.model_dump(mode="json", exclude_none=True))
            ]
        )

    async def _choices(
        self,
        skill: Skill[Any, Any],
        parsed: ex.Parsed,
        vocabulary: set[str],
        raw: dict[str, Any],
        field_name: str,
        values: Sequence[str],
    ) -> list[Invocation]:
        """The complete invocation for each of ``values`` of ``field_name`` (those that build)."""
        choices = []
        for value in values:
            plan = await self.build(skill, parsed, vocabulary, {**raw, field_name: value})
            if isinstance(plan, Run):
                choices.append(plan.invocations[0])
        return choices

    @staticmethod
    def _pick_name(names: list[str], known: set[str]) -> str | tuple[str, ...] | None:
        """The name among ``names`` grounded in ``known``; the close candidates when one is
        ambiguous; None when there is no name."""
        if not names:
            return None
        if not known:
            return names[0]
        for name in names:  # an exact name wins over any fuzzy one
            if name in known or name.lower() in known:
                return name.lower() if name.lower() in known else name
        for name in names:
            grounded = ground(name, known)
            if grounded.value:
                return grounded.value
            if grounded.candidates:
                return grounded.candidates
        return names[0]


def _question(skill: Skill[Any, Any], exc: ValidationError) -> str:
    missing = wording.missing_fields(exc)
    if missing:
        described = []
        for name in missing:
            info = skill.Args.model_fields[name]
            described.append(f"`{name}`" + (f" ({info.description})" if info.description else ""))
        them = "it" if len(missing) == 1 else "them"
        return (
            f"To run `{skill.name}` I need {', '.join(described)}. "
            f"Just answer with {them} here; I keep the rest of your request."
        )
    return f"`{skill.name}`: {wording.validation_problems(exc)}"


def _state(parsed: ex.Parsed, _: dict[str, set[str]]) -> str | None:
    for stem_ in parsed.stems:
        if stem_ in ("fir", "activ"):
            return "firing"
        if stem_ in ("pend",):
            return "pending"
        if stem_ in ("silenc", "mut", "suppress"):
            return "silenced"
    return None


def _alert(parsed: ex.Parsed, inventory: dict[str, set[str]]) -> str | None:
    return ex.extract_matchers(parsed, inventory.get("alertname")).get("alertname")


_EXTRACTORS: dict[str, Callable[[ex.Parsed, dict[str, set[str]]], Any]] = {
    "query": lambda p, _: p.expr,
    "since": lambda p, _: ex.extract_since(p),
    "duration": lambda p, _: ex.extract_for_duration(p),
    "kind": lambda p, _: ex.extract_kind(p),
    "replicas": lambda p, _: ex.extract_number(
        p,
        [
            r"\bto\s+(\d+)\b",
            r"\b(\d+)\s+replicas?\b",
            r"\breplicas?\s*(?:=|:)\s*(\d+)\b",
            r"\bx\s?(\d+)\b",
        ],
    ),
    "revision": lambda p, _: ex.extract_number(
        p,
        [r"\brevision\s*#?(\d+)", r"\brev\s*#?(\d+)", r"\bversion\s*#?(\d+)", r"\bto\s+#?(\d+)\b"],
    ),
    "tail": lambda p, _: ex.extract_number(
        p, [r"\b(\d+)\s+(?:log\s+)?lines?\b", r"\btail\s+(\d+)\b"]
    ),
    "limit": lambda p, _: ex.extract_number(p, [r"\btop\s+(\d+)\b", r"\blimit\s+(\d+)\b"]),
    "state": _state,
    "matchers": lambda p, inv: ex.extract_matchers(p, inv.get("alertname")),
    "comment": lambda p, _: ex.extract_comment(p),
    "alert": _alert,
}
