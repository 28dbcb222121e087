"""The offline router: the embedded default planner, no LLM needed.

0. **Screen** what cannot be a request (empty, binary-looking, emoji-only, another script:
   :mod:`opsbot.intent.screen`); read only the start of a very long one.
1. **kubectl**: a request that is a kubectl command ("kubectl rollout undo deploy/cart -n
   shop --to-revision=4", "get po -n shop") maps to the skill that does the same
   (:mod:`opsbot.intent.kubectl`); one opsbot never runs (``exec``, ``delete``, ``apply``,
   ``get secret``) is refused with what it can do instead, and nothing runs.
2. **Score** each permitted skill: its ``keywords`` (cues, :mod:`opsbot.meaning`: words and
   phrases compared by stem, with the lexicon's synonyms, :mod:`opsbot.intent.lexicon`;
   exact words; signals such as an extracted PromQL/LogQL expression or a question a PromQL
   recipe answers), a typo-tolerant match (rapidfuzz) for long words, and — as a tie-breaker
   only — the similarity of the request to the skill's ``examples``.
3. **Decide**: below the threshold the request maps to no skill (an answer, not a guess);
   two skills too close to tell apart get a clarifying question.
4. **Extract** the arguments by what the skill's ``Args`` declare they mean, ground names
   against the backends' inventory and validate with the model (:mod:`opsbot.intent.
   arguments`, the pipeline the LLM planner's calls go through too); a missing required
   argument, or two names that fit, becomes a question.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError
from rapidfuzz import fuzz, process

from opsbot import wording
from opsbot.intent import arguments, kubectl, lexicon, screen, speech
from opsbot.intent import extract as ex
from opsbot.intent.base import ToolRunner
from opsbot.inventory import Inventory
from opsbot.meaning import Cue, Grounded, ObjectKind, Signal, cue
from opsbot.model import Answer, Clarify, Invocation, Plan, Request, Run, first_invocation
from opsbot.recipes import Recipe, RecipeSource, merged
from opsbot.skills.base import Risk, Skill

THRESHOLD = 1.0
AMBIGUITY_MARGIN = 0.1
#: the signals a keyword may name (kept for plugins that referred to the tuple)
SIGNALS = tuple(s.value for s in Signal)

_COURTESY = {
    "thanks": "You're welcome.",
    "thank": "You're welcome.",
    "thx": "You're welcome.",
    "ty": "You're welcome.",
    "hi": "Hi! Type `help` to see what I can do.",
    "hello": "Hello! Type `help` to see what I can do.",
    "hey": "Hey! Type `help` to see what I can do.",
}
#: thanks that open a message: answered as such when the message asks nothing besides
_THANKS = frozenset({"thank", "thx", "ty", "cheer", "kudo"})
#: a cry that opens a request, not its subject: "help, orders is on fire", "urgent: ..."
_INTERJECTION = re.compile(
    r"^\s*(?:help|urgent|sos|ugh|argh|yikes|uh oh|oh no)\s*[,!:;.-]+\s*(?=\S+\s+\S+)", re.I
)
#: what follows the request: "scale checkout to 3, then tell me the rollout status"
_THEN = re.compile(r"(?<=\w)\s*,?\s+(?:and\s+)?then\s+(?=\w+\s+\w+)", re.I)
_CONDITION = re.compile(r"\s*(?:if|when|whenever|once|after|before|unless|in case)\b", re.I)
#: a whole request in backticks (a pasted command)
_BACKTICKED = re.compile(r"\s*`{1,3}(?:sh|bash|shell|console)?\s*([^`]+?)\s*`{1,3}\s*")
#: a pasted notification in another tool's format, read as Alertmanager's "[FIRING:1] X"
_NOTIFICATION = re.compile(
    r"^\s*(?:\[alert\]\s*[:\-]?|(?:alert|alarm|page|incident)\s*[:\-])\s*"
    r"(?=(?-i:[A-Z][a-z0-9]+[A-Z]))",
    re.I,
)
#: actions no skill takes, asked for in the imperative ("deploy checkout v2 to prod"): refused
#: with what the bot does instead, nothing planned (as kubectl's exec, delete or apply)
UNSUPPORTED_ACTIONS = frozenset(
    {
        "deploy", "create", "install", "uninstall", "upgrade", "downgrade", "provision",
        "apply", "patch", "edit", "ssh", "exec", "cordon", "uncordon", "taint", "migrate",
        "ship", "merge", "approve", "deny", "reboot-node", "page", "notify", "escalate",
    }
)  # fmt: skip
UNSUPPORTED = (
    "I don't {verb} anything, so nothing was planned. I read pods, logs, events, metrics "
    "and alerts, and with approval restart, scale, roll back and silence; type `help`."
)
#: the actions on people rather than systems, which a paging tool takes
PAGING = frozenset({"page", "notify", "escalate"})
NOT_PAGING = (
    "I don't page, notify or escalate to people, so nothing was planned; your paging tool "
    "does that. I read pods, logs, events, metrics and alerts, and with approval restart, "
    "scale, roll back and silence; type `help`."
)
APPROVING = (
    "A request is approved or denied with the Approve/Deny buttons on it (or `opsbot approve "
    "ID`), never by a chat message; nothing was done. `what's waiting for approval?` lists them."
)
NOTHING_ASKED = "Noted. I act only on requests; say what you need, or type `help`."
NO_SKILL = (
    "I can't map that to any skill you may use here. Type `help` to see what I can do, "
    "or give a PromQL expression after `promql:`."
)


@dataclass(frozen=True)
class _Keyword:
    cue: Cue
    stems: tuple[str, ...]
    weight: float


@dataclass(frozen=True)
class Scored:
    skill: Skill[Any, Any]
    score: float


def _compile(keywords: Mapping[str, float]) -> list[_Keyword]:
    out = []
    for key, weight in keywords.items():
        parsed = cue(key)
        stems = ex.phrase(" ".join(parsed.words)) if parsed.words else ()
        out.append(_Keyword(parsed, stems, weight))
    return out


MAX_GAP = ex.MAX_GAP
gapped = ex.gapped


def _contains(seq: list[str], phrase: tuple[str, ...]) -> bool:
    return ex.contains(seq, phrase)


class OfflineRouter:
    """Deterministic keyword-and-pattern router. ``inventory`` grounds names when given;
    ``recipes`` are the PromQL recipes (default: the Prometheus backend's, else the
    built-in ones)."""

    name = "offline"

    def __init__(
        self,
        inventory: Inventory | None = None,
        threshold: float = THRESHOLD,
        recipes: Mapping[str, Recipe] | None = None,
    ) -> None:
        self.inventory = inventory
        self.threshold = threshold
        self._recipes = dict(recipes) if recipes is not None else None
        self._compiled: dict[str, list[_Keyword]] = {}
        self._vocabularies: dict[tuple[str, ...], frozenset[str]] = {}
        self._typos: dict[frozenset[str], dict[str, str]] = {}

    @property
    def recipes(self) -> Mapping[str, Recipe]:
        """The PromQL recipes the router fills in (see :mod:`opsbot.recipes`)."""
        if self._recipes is None:
            registry = self.inventory.registry if self.inventory is not None else None
            sources = [
                b for b in (registry.backends if registry else []) if isinstance(b, RecipeSource)
            ]
            self._recipes = dict(sources[0].recipes()) if sources else merged(None)
        return self._recipes

    def _keywords(self, skill: Skill[Any, Any]) -> list[_Keyword]:
        if skill.name not in self._compiled:
            self._compiled[skill.name] = _compile(skill.keywords)
        return self._compiled[skill.name]

    # -- scoring -------------------------------------------------------------------------

    def signals(self, parsed: ex.Parsed) -> set[str]:
        """The :class:`~opsbot.meaning.Signal` values ``parsed`` shows."""
        signals: set[str] = set()
        mood = speech.write_mood(parsed.text)
        if mood in (speech.Mood.REPORT, speech.Mood.NOUN) and not speech.is_state(parsed.text):
            signals.add(Signal.WRITE_TALK)
        elif mood is speech.Mood.HYPOTHETICAL:
            signals.add(Signal.HYPOTHETICAL)
        if parsed.expr:
            signals.add(Signal.EXPR)
            signals.add(f"<{parsed.expr_kind}>")
        if ex.ALERTNAME.search(parsed.rest):
            signals.add(Signal.ALERTNAME)
        if re.search(r"\w\s*(=~|!=|=)\s*\S", parsed.rest):
            signals.add(Signal.MATCHER)
        if re.search(r"\b\d+\b", parsed.rest) or parsed.flags.get("replicas"):
            signals.add(Signal.NUMBER)
        if (
            not parsed.expr
            and mood is not speech.Mood.IMPERATIVE  # a write asked for: no recipe question
            and (asked := arguments.match_recipe(parsed, self.recipes))
        ):
            if asked.strong:
                signals.add(Signal.RECIPE)
            if asked.top is not None:
                signals.add(Signal.RANKING)
        return signals

    def score(
        self, parsed: ex.Parsed, skill: Skill[Any, Any], signals: set[str] | None = None
    ) -> float:
        signals = self.signals(parsed) if signals is None else signals
        stems, canon = parsed.stems, parsed.canon
        exact = parsed.exact
        present = parsed.present  # a phrase whose first word is absent: no match
        total = 0.0
        for kw in self._keywords(skill):
            if kw.cue.signal is not None:
                total += kw.weight if kw.cue.signal in signals else 0.0
            elif kw.cue.exact:  # "=silenced": this exact word, not its stem
                total += kw.weight if kw.cue.exact in exact else 0.0
            elif (not kw.stems or kw.stems[0] in present or kw.stems[0] == "*") and (
                ex.contains(stems, kw.stems)
                or (canon is not stems and ex.contains(canon, kw.stems))
            ):
                total += kw.weight
            elif (
                len(kw.stems) == 1
                and len(kw.stems[0]) >= 5
                and kw.weight > 0
                and process.extractOne(
                    kw.stems[0], parsed.long_stems, scorer=fuzz.ratio, score_cutoff=85
                )
            ):
                total += 0.8 * kw.weight  # a typo of a long word
        if total > 0 and skill.examples:
            similarity = max(
                fuzz.token_set_ratio(parsed.lowered, e.lower()) for e in skill.examples
            )
            total += 0.3 * max(0.0, similarity - 50) / 50
        return total

    def rank(self, parsed: ex.Parsed, catalog: Sequence[Skill[Any, Any]]) -> list[Scored]:
        """Every skill of ``catalog`` with its score, best first (ties keep catalog order)."""
        signals = self.signals(parsed)
        return sorted(
            (Scored(s, self.score(parsed, s, signals)) for s in catalog), key=lambda r: -r.score
        )

    # -- planning ------------------------------------------------------------------------

    async def explain(self, request: Request, withheld: Sequence[Skill[Any, Any]]) -> str | None:
        """The withheld skill this request would have matched, if any (to explain a refusal)."""
        text = request.text[: screen.READ_CHARS]
        if (cmd := kubectl.command(text)) is not None:
            mapped = kubectl.translate(cmd)
            names = {s.name for s in withheld}
            return (
                mapped.skill
                if isinstance(mapped, kubectl.Mapped) and mapped.skill in names
                else None
            )
        ranked = self.rank(self._parse(text, withheld), withheld)
        return ranked[0].skill.name if ranked and ranked[0].score >= self.threshold else None

    async def plan(
        self, request: Request, catalog: Sequence[Skill[Any, Any]], tools: ToolRunner | None = None
    ) -> Plan:
        whole = request.text.strip()
        if (problem := screen.screen(whole)) is not None:
            return Answer(text=problem)
        text = whole[: screen.READ_CHARS]
        plan = await self._plan(text, catalog)
        if len(whole) > screen.MAX_CHARS:
            sizes = {"n": len(whole), "read": screen.READ_CHARS, "max": screen.MAX_CHARS}
            if isinstance(plan, Answer) and plan.unmatched:
                return Answer(text=screen.TOO_LONG.format(**sizes), unmatched=True)
            plan.notes.append(screen.LONG_NOTE.format(**sizes))
        return plan

    async def _plan(self, text: str, catalog: Sequence[Skill[Any, Any]]) -> Plan:
        text = _INTERJECTION.sub("", text)  # "help, orders in prod is on fire"
        if not _CONDITION.match(text):  # "if latency spikes, then restart it" stays whole
            text = _THEN.split(text, maxsplit=1)[0]  # "scale X to 3, then tell me ..."
        text = _NOTIFICATION.sub("[FIRING:1] ", text)  # "Alert: HighLatency firing on ..."
        quoted = False
        if (pasted := _BACKTICKED.fullmatch(text)) and kubectl.command(pasted.group(1)):
            text, quoted = pasted.group(1), True  # "`kubectl get pods -n shop`"
        parsed = self._parse(text, catalog)
        if not parsed.tokens and not parsed.expr:
            return Answer(text=wording.EMPTY)
        if (command := await self._command(text, parsed, catalog, quoted)) is not None:
            return command
        if (refused := _embedded_refusal(text)) is not None:
            return Answer(text=refused.text)  # "can you ...? kubectl delete pods --all -n x"
        if parsed.tokens and ex.stem(parsed.tokens[0]) in _THANKS and not speech.requests(text):
            return Answer(text=_COURTESY["thanks"])  # "thanks for all the help yesterday!"
        if (verb := _unsupported(text)) is not None:
            why = (
                APPROVING
                if verb in ("approve", "deny")
                else NOT_PAGING
                if verb in PAGING
                else UNSUPPORTED.format(verb=verb)
            )
            return Answer(text=why, unmatched=True)
        asked = self._what_is_asked(text, parsed, catalog)
        if asked is None:
            return Answer(text=NOTHING_ASKED)
        mood = speech.write_mood(text)
        ordered = speech.ordered(text) if mood is speech.Mood.IMPERATIVE else ""
        focus: ex.Parsed | None = None  # the part that asks, read first for arguments
        if ordered and ordered != text:  # "restart orders in prod, it's leaking memory":
            focus = self._parse(ordered, catalog)
            ranked = self.rank(focus, asked[1])  # the order decides
        else:
            ranked = self.rank(*asked)
            if mood is not speech.Mood.IMPERATIVE:
                ranked, focus = self._focused(asked[0], asked[1], catalog, ranked)
        if (
            mood is speech.Mood.NONE
            and ranked
            and ranked[0].skill.risk is not Risk.READ
            and speech.is_question(text)
        ):  # "what was the prev version of checkout?": no write word, a write's keyword, asked
            mood = speech.Mood.QUESTION
            ranked = self.rank(focus or asked[0], [s for s in asked[1] if s.risk is Risk.READ])
        if mood is speech.Mood.IMPERATIVE:
            parsed = asked[0]  # its names, not those of a negated clause
        if (not ranked or ranked[0].score < self.threshold) and mood in (
            speech.Mood.QUESTION,
            speech.Mood.HYPOTHETICAL,
        ):
            return await self._about_write(parsed, catalog, focus)
        if not ranked or ranked[0].score < self.threshold:
            if screen.foreign(text):
                return Answer(text=screen.FOREIGN, unmatched=True)
            first = ex.stem(parsed.tokens[0]) if parsed.tokens else ""
            return Answer(text=_COURTESY.get(first, NO_SKILL), unmatched=True)
        top = ranked[0]
        if len(ranked) > 1 and top.score - ranked[1].score < AMBIGUITY_MARGIN:
            other = ranked[1].skill
            vocabulary = self._vocabulary(catalog)
            built = [
                await self.build(s, parsed, vocabulary, focus=focus) for s in (top.skill, other)
            ]
            return Clarify(
                question=(
                    f"Did you mean `{top.skill.name}` ({top.skill.summary}) or "
                    f"`{other.name}` ({other.summary})?"
                ),
                choices=[p.invocations[0] for p in built if isinstance(p, Run)],
            )
        vocabulary = self._vocabulary(catalog)
        return await self.build(top.skill, parsed, vocabulary, focus=focus)

    def _focused(
        self,
        parsed: ex.Parsed,
        skills: Sequence[Skill[Any, Any]],
        catalog: Sequence[Skill[Any, Any]],
        ranked: list[Scored],
    ) -> tuple[list[Scored], ex.Parsed | None]:
        """The ranking of the sentences that ask (:func:`opsbot.intent.speech.focus`) in a
        message with context around its request ("I'm investigating a CrashLoopBackOff
        report. Can you show me the pods in warehouse?"), and their parse; the ranking of
        the whole when they match nothing, unless they ask about a write ("... looks flaky.
        Should we roll it back?": what the rollback would do, not a diagnosis)."""
        said = speech.focus(parsed.text)
        if said == parsed.text:
            return ranked, None
        focus = self._parse(said, catalog)
        mine = self.rank(focus, skills)
        if (mine and mine[0].score >= self.threshold) or speech.write_mood(said) in (
            speech.Mood.QUESTION,
            speech.Mood.HYPOTHETICAL,
        ):
            return mine, focus
        return ranked, None

    async def _command(
        self,
        text: str,
        parsed: ex.Parsed,
        catalog: Sequence[Skill[Any, Any]],
        quoted: bool = False,
    ) -> Plan | None:
        """The plan of a request that is a kubectl command (None: it is not one, or it asks
        for a write without saying it in the imperative, which the words then decide).
        ``quoted``: the command was pasted in backticks, which runs a read but only shows
        what a write would do (pasted text asks for no write)."""
        cmd = kubectl.command(text)
        if cmd is None:
            return None
        mapped = kubectl.translate(cmd)
        if isinstance(mapped, kubectl.Refusal):
            return Answer(text=mapped.text)
        skill = next((s for s in catalog if s.name == mapped.skill), None)
        if skill is None:
            return Answer(
                text=f"`{cmd.shown}` is `{mapped.skill}` here, which you may not use in this channel.",
                unmatched=True,
            )
        kind = mapped.args.get("kind")
        if kind and not (
            "kind" in skill.Args.model_fields and arguments.allows(skill.Args, "kind", kind)
        ):  # "kubectl rollout restart sts/x" where the skill acts on deployments only
            return Answer(text=kubectl.kind_refused(cmd, kind).text)
        # the mood of the command's words ("kubectl rollout undo deploy/x"): its options
        # (-n shop) are no clause of English, and "oc"/"k" are kubectl
        words = kubectl.options(text).rest.split()
        if words and words[0].lower() in kubectl.PREFIXES:
            words = words[1:]
        said = "kubectl " + " ".join(words) + ("?" if text.rstrip().endswith("?") else "")
        asked_about = skill.risk is not Risk.READ and (
            quoted or not speech.write_mood(said).asks_for_write
        )
        given: dict[str, Any] = dict(mapped.args)
        rationale = mapped.note
        if mapped.recipe:
            filled = arguments.render_named(
                self.recipes, mapped.recipe, namespace=given.pop("namespace", None)
            )
            if filled is None:
                return Answer(text=f"No `{mapped.recipe}` PromQL recipe is configured here.")
            given["query"], rationale = filled
        inventory = await self._inventory(skill)
        # the command's words are kubectl's, not names: only its options are read again
        options = ex.Parsed(text=text, flags=parsed.flags, refs=parsed.refs)
        grounded = arguments.ground_given(skill, given, inventory)
        if isinstance(grounded, arguments.Ask):
            return await self._ask(skill, options, self._vocabulary(catalog), grounded)
        plan = await self.build(skill, options, self._vocabulary(catalog), given=grounded)
        if asked_about:  # "kubectl rollout restart deploy/x?": what it would do, nothing planned
            about = first_invocation(plan)
            return Answer(text=wording.about_write(about or skill.name), about=about)
        if isinstance(plan, Run) and rationale:
            plan.invocations[0] = plan.invocations[0].model_copy(update={"rationale": rationale})
        return plan

    async def _about_write(
        self,
        parsed: ex.Parsed,
        catalog: Sequence[Skill[Any, Any]],
        focus: ex.Parsed | None = None,
    ) -> Plan:
        """A question about a write no read answers ("should we roll back checkout in shop?"):
        the write it is about, for the engine to preview, and nothing planned."""
        writes = [s for s in catalog if s.risk is not Risk.READ]
        ranked = self.rank(focus or parsed, writes)
        if not ranked or ranked[0].score < self.threshold:
            return Answer(text=NO_SKILL, unmatched=True)
        built = await self.build(ranked[0].skill, parsed, self._vocabulary(catalog), focus=focus)
        about = first_invocation(built)
        return Answer(text=wording.about_write(about or ranked[0].skill.name), about=about)

    def _what_is_asked(
        self, text: str, parsed: ex.Parsed, catalog: Sequence[Skill[Any, Any]]
    ) -> tuple[ex.Parsed, Sequence[Skill[Any, Any]]] | None:
        """What to rank, and among which skills (None: nothing is asked). A request that only
        talks about a write (negated, asked, reported, quoted) is ranked among the read skills;
        negated clauses are left out of the text ("don't restart X, just check its pods"; "no,
        not checkout: restart payments"); a report or a plan for later that asks nothing ("fyi
        we rolled back payments") maps to no skill; a question that imagines a write ("would
        10 replicas help?") is answered with what that write would do, and nothing runs."""
        mood = speech.write_mood(text)
        if mood is speech.Mood.IMPERATIVE:
            rest = speech.without_negated(text)
            return (self._parse(rest, catalog) if rest != text else parsed), catalog
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
        if mood is speech.Mood.HYPOTHETICAL:
            return parsed, []  # "what if we scaled it to 0?": what the write would do, no read
        rest = {
            speech.Mood.NEGATED: speech.without_write_talk(text),
            speech.Mood.QUOTED: speech.unquoted(text),
            speech.Mood.QUESTION: speech.without_alternatives(text),
        }.get(mood, text)
        return self._parse(rest, catalog) if rest.strip() and rest != text else parsed, reads

    def _parse(self, text: str, catalog: Sequence[Skill[Any, Any]]) -> ex.Parsed:
        """``text`` parsed, with a misspelt skill word read as the word ("helath of
        checkout", "evnets in staging", "pdos in shop": :func:`opsbot.intent.lexicon.typo_of`
        against the catalog's vocabulary)."""
        parsed = ex.parse(text)
        pool = self._pool(catalog)
        typos = self._typos.setdefault(pool, {})
        fixed = []
        named = {w for w in ex.placed_names(parsed.rest) if ex.shortened(w)}
        for s in parsed.stems:
            if s in pool or s in ex.STOPWORDS or not s.isalpha() or s in named:
                fixed.append(s)  # ("the strt service": a short form placed as a name)
                continue
            if s not in typos:
                if len(typos) > 4096:
                    typos.clear()
                typos[s] = lexicon.typo_of(s, pool, ex.stem) or s
            fixed.append(typos[s])
        if fixed == parsed.stems:
            return parsed
        return replace(
            parsed,
            stems=fixed,
            canon=ex.canonical(fixed, asked=parsed.text.rstrip().endswith("?")),
            long_stems=sorted({s for s in fixed if len(s) >= 5}),
        )

    def _pool(self, catalog: Sequence[Skill[Any, Any]]) -> frozenset[str]:
        """:meth:`_vocabulary` (one frozen object per catalog, so caches key on it)."""
        return self._vocabulary(catalog)

    def _vocabulary(self, catalog: Sequence[Skill[Any, Any]]) -> frozenset[str]:
        """Words that are skill vocabulary (never names): every keyword's stems, the
        lexicon's words and the recipes' words."""
        key = tuple(s.name for s in catalog)
        if key not in self._vocabularies:
            vocab: set[str] = set()
            for skill in catalog:
                for kw in self._keywords(skill):
                    vocab.update(s for s in kw.stems if s != "*")
                    if kw.cue.exact:
                        vocab.add(kw.cue.exact)
            vocab.update(_lexicon_words())
            for recipe in self.recipes.values():
                for words in recipe.words:
                    vocab.update(s for s in ex.phrase(words) if s != "*")
            if len(self._vocabularies) > 64:
                self._vocabularies.clear()
            self._vocabularies[key] = frozenset(vocab)
        return self._vocabularies[key]

    async def _inventory(self, skill: Skill[Any, Any]) -> dict[str, set[str]]:
        """The inventory's names, for a skill whose arguments are grounded (others ask for
        none, so they never wait on a backend's inventory)."""
        if self.inventory is None or not arguments.grounds(skill):
            return {}
        return await self.inventory.snapshot()

    async def build(
        self,
        skill: Skill[Any, Any],
        parsed: ex.Parsed,
        vocabulary: AbstractSet[str],
        given: dict[str, Any] | None = None,
        focus: ex.Parsed | None = None,
    ) -> Plan:
        """Extract, refine, ground and validate the arguments of ``skill`` from ``parsed``
        (:func:`opsbot.intent.arguments.extract`); arguments already ``given`` (an earlier
        message, a choice, a kubectl command) are not read again. ``focus``: the part of the
        request that asks (its order, its question), read first; the rest of ``parsed`` only
        gives what it does not say ("the nightly-etl deployment in data ... would you mind
        taking it down to zero?")."""
        inventory = await self._inventory(skill)
        rationale = ""
        if focus is not None and focus.text != parsed.text:
            first = arguments.extract(
                skill, arguments.Reading(focus, inventory, vocabulary, self.recipes), given
            )
            if isinstance(first, arguments.Extracted):
                said = _said(skill, focus, first.args, inventory.get("namespace"))
                given, rationale = said, first.rationale
        reading = arguments.Reading(parsed, inventory, vocabulary, self.recipes)
        found = arguments.extract(skill, reading, given)
        if isinstance(found, arguments.Ask):
            return await self._ask(skill, parsed, vocabulary, found)
        try:
            args = arguments.validate(skill, found.args)
        except ValidationError as exc:
            return Clarify(
                question=_question(skill, exc),
                skill=skill.name,
                args=found.args,
                missing=wording.missing_fields(exc),
            )
        return Run(
            invocations=[
                Invocation(
                    skill=skill.name,
                    args=args,
                    rationale=found.rationale or rationale,
                )
            ]
        )

    async def _ask(
        self,
        skill: Skill[Any, Any],
        parsed: ex.Parsed,
        vocabulary: AbstractSet[str],
        ask: arguments.Ask,
    ) -> Clarify:
        """Two or more values fit an argument: which one, each a button."""
        choices = []
        for value in ask.choices:
            plan = await self.build(skill, parsed, vocabulary, {**ask.args, ask.field: value})
            if isinstance(plan, Run):
                choices.append(plan.invocations[0])
        return Clarify(
            question=ask.question,
            skill=skill.name,
            args=ask.args,
            missing=[ask.field],
            choices=choices,
        )


#: words that point back to a name said before ("... would you mind taking it down?")
_BACK = frozenset({"it", "its", "it's", "them", "their", "theirs", "they"})


def _said(
    skill: Skill[Any, Any],
    parsed: ex.Parsed,
    args: dict[str, Any],
    namespaces: set[str] | None = None,
) -> dict[str, Any]:
    """``args`` read from ``parsed`` (the part of a request that asks) that it says itself:
    not a kind it only defaulted to, nor a name where it points back with "it" ("the kafka
    statefulset in data ... could you restart it?"; a namespace it says stays: "... could you
    restart it in staging?"), nor an empty value ("silence X for 1h,
    cli test": the comment): the rest of the request says them."""
    meanings = arguments.meanings(skill.Args)
    drop = set()
    if not (parsed.refs or ex.extract_kind(parsed)):
        drop |= {n for n, m in meanings.items() if isinstance(m, ObjectKind)}
    if _BACK & {t.lower() for t in parsed.tokens}:
        drop |= {n for n, m in meanings.items() if isinstance(m, Grounded)}
        said = ex.extract_namespace(parsed, namespaces)  # "... restart it in staging?"
        if said is not None and (namespaces is None or said in namespaces):
            spaces = [
                n for n, m in meanings.items() if isinstance(m, Grounded) and m.kind == "namespace"
            ]
            args = {**args, **dict.fromkeys(spaces, said)}
            drop -= set(spaces)
    return {k: v for k, v in args.items() if k not in drop and v not in (None, "", {}, [])}


_KUBECTL_INSIDE = re.compile(r"(?<![\w./-])(?:kubectl|oc)\s+(?=[a-z-])", re.I)


def _embedded_refusal(text: str) -> kubectl.Refusal | None:
    """The refusal of a kubectl command opsbot never runs, pasted after words ("can you
    clean up my namespace? kubectl delete pods --all -n sandbox"): refused as if typed alone."""
    for m in _KUBECTL_INSIDE.finditer(text):
        if m.start() == 0:
            continue
        cmd = kubectl.command(text[m.start() :])
        if cmd is not None and isinstance(refused := kubectl.translate(cmd), kubectl.Refusal):
            return refused
    return None


def _unsupported(text: str) -> str | None:
    """The action no skill takes that ``text`` opens with as an order, if any."""
    words = speech.opening_words(text)
    return words[0] if words and words[0] in UNSUPPORTED_ACTIONS and len(words) > 1 else None


def _lexicon_words() -> set[str]:
    from opsbot.intent import lexicon

    return {s for key in lexicon.SYNONYMS for s in ex.phrase(key) if s != "*"}


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
