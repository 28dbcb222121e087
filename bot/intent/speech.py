"""Is this request an imperative for a write, or only talk about one?

A write (restart, scale, roll back, silence, unsilence) is planned only from an imperative
request for it: "restart checkout in shop", "please roll back payments", "kubectl rollout
undo deploy/cart -n shop". Not from a negation ("don't restart checkout"), a question
("should we roll back checkout?", "did anyone restart it?"), a report ("I restarted cart
yesterday"), a hypothetical ("if it gets worse we might scale it") or quoted text (a runbook
line, a pasted command in backticks), nor from a write word used as a noun ("restart count").

:func:`write_mood` classifies a request by the clauses that hold a write word; the router
ranks only read skills unless the mood is imperative, and the engine refuses to open an
approval for any planner's write (the offline router's or a model's) otherwise, answering
with what it would do and how to ask for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from opsbot.intent import lexicon
from opsbot.intent.extract import phrase, stem


class Mood(StrEnum):
    IMPERATIVE = "imperative"  # asks for the write
    NONE = "none"  # no write word at all (e.g. "do it", "checkout to 5 replicas")
    NEGATED = "negated"
    QUESTION = "question"
    REPORT = "report"
    HYPOTHETICAL = "hypothetical"
    QUOTED = "quoted"
    NOUN = "noun"  # "restart count", "the rollback history"

    @property
    def asks_for_write(self) -> bool:
        return self in (Mood.IMPERATIVE, Mood.NONE)


#: base forms that start an imperative for a write (first word of a clause)
WRITE_VERBS = frozenset(
    {
        "restart", "bounce", "kick", "cycle", "recycle", "reboot", "redeploy", "scale",
        "bump", "resize", "rollback", "undo", "revert", "silence", "mute", "snooze", "shush",
        "unsilence", "unmute", "expire", "delete", "remove", "lift", "drain", "downscale",
        "upscale", "nudge", "ack", "acknowledge", "quiet", "hush",
    }
)  # fmt: skip
#: "roll back", "take down", "roll out restart": two-word verbs (first word, second word)
PHRASAL = {
    ("roll", "back"),
    ("take", "down"),
    ("spin", "down"),
    ("scale", "down"),
    ("put", "back"),
    ("set", "back"),
    ("shut", "down"),
    ("shut", "off"),
    ("go", "back"),
    ("turn", "off"),
    ("switch", "off"),
    ("kill", "pod"),
    ("kill", "pods"),
    ("bring", "up"),
    ("bring", "down"),
    ("took", "down"),
    ("taken", "down"),
    ("brought", "down"),
    ("spun", "down"),
    ("reduce", "to"),
    ("increase", "to"),
    ("shrink", "to"),
    ("grow", "to"),
} | {
    (verb, thing)  # "end the silence 3f2a9c1e", "kill that mute": a silence removed
    for verb in ("end", "kill", "clear", "drop")
    for thing in ("silence", "silences", "mute", "mutes")
}
#: other forms of the write words: their presence makes a clause about a write
WRITE_FORMS = WRITE_VERBS | frozenset(
    {
        "restarted", "restarts", "restarting", "bounced", "bouncing", "kicked", "kicking",
        "cycled", "cycling", "rebooted", "redeployed", "scaled", "scaling", "bumped", "rolled",
        "rolling", "rollbacks", "undid", "undoing", "reverted", "reverting", "silenced",
        "silencing", "silences", "muted", "muting", "snoozed", "unsilenced", "expired",
        "deleted", "removed", "lifted", "drained", "replicas", "copies", "nudged", "nudging",
        "acked", "acknowledged", "quieted", "hushed",
    }
)  # fmt: skip
PAST = frozenset(
    {
        "restarted", "bounced", "kicked", "cycled", "rebooted", "redeployed", "scaled",
        "bumped", "rolled", "undid", "reverted", "silenced", "muted", "snoozed", "unsilenced",
        "deleted", "removed", "lifted", "drained", "ran", "did", "nudged", "acked",
        "acknowledged",
    }
)  # fmt: skip
NEGATIONS = frozenset(
    {"not", "don't", "dont", "do not", "never", "no", "without", "nobody", "hold off", "avoid",
     "stop", "cancel", "won't", "shouldn't", "mustn't", "can't", "cannot", "no need"}
)  # fmt: skip
QUESTION_STARTS = frozenset(
    {
        "should", "could", "can", "would", "will", "shall", "did", "does", "do", "is", "are",
        "was", "were", "has", "have", "had", "who", "what", "when", "why", "how", "which",
        "whether", "may", "might", "any", "anyone", "anybody", "someone",
    }
)  # fmt: skip
#: verbs that make an imperative of a write noun: "do a rolling restart", "set replicas to 3"
DOING = frozenset(
    {
        "do", "perform", "run", "trigger", "issue", "give", "set", "make", "bring", "take",
        "put", "add", "roll", "start", "initiate", "launch",
    }
)  # fmt: skip
PRONOUNS = frozenset({"you", "we", "i", "they", "he", "she", "it", "anyone", "people"})
HYPOTHETICAL = re.compile(
    r"\b(if|in case|suppose|supposing|maybe|perhaps|probably|might|would|could we|what if|"
    r"the plan is|plan is to|later|(?<!until )(?<!till )tomorrow|eventually|in the future|"
    r"at some point|"
    r"sometime|someday|one day|(?:we|i|you|someone) (?:should|could|ought to)|"
    r"(?:i'm|im|i am|we're|were|we are) (?:going to|gonna|about to)|i'll|we'll|i will|we will)\b"
)
#: words that may stand before the verb of an imperative
LEAD_INS = (
    "please", "pls", "plz", "kindly", "ok", "okay", "now", "go ahead and", "also", "and",
    "then", "just", "quickly", "i want to", "i'd like to", "i would like to", "let's",
    "lets", "we need to", "need to", "i need", "we need", "i want", "we want", "time to", "kubectl", "k", "rollout", "opsbot",
    "@opsbot", "hey opsbot", "yes", "yes,", "right,", "ops",
)  # fmt: skip

#: how a request is put politely: a question in form, an order in meaning ("could you please
#: restart checkout?", "would you mind taking cart down to zero?"). "Can you restart
#: checkout?" (with a please or not) may ask what the bot can do or may do: it stays a
#: question, answered with what the write would do and how to ask for it.
#: A bare "would you <write>?" asks what the bot would do ("what do you think, would you
#: roll it back?"): its "would" is a hypothetical, not politeness.
POLITE = (
    "would you mind", "do you mind", "would you kindly", "would you please",
    "could you please", "could you kindly", "could you", "will you please", "will you",
    "please could you", "please would you", "could u",
)  # fmt: skip
#: what takes back a request said before it ("could you restart cart? nvm, I'll do it
#: myself", "... no, wait", "... just kidding", "... just asking"): opening a later clause
_RETRACTION = re.compile(
    r"^(?:(?:actually|oh|hmm+|um+|on second thought|sorry)\s+)*(?:no\b(?!\s+(?:rush|hurry|"
    r"worries|problem|pressure))|nope|nah|wait\b|nvm|never\s*mind|nevermind|hold (?:off|on)|"
    r"forget (?:it|that)|scratch that|cancel that|ignore (?:it|that)|just kidding|kidding|jk\b|"
    r"(?:just|only) asking|not yet|don'?t\b|do not\b)"
    r"|\bdo it (?:myself|ourselves|later)\b"
)
#: a condition a polite request puts on its write ("will you restart cart automatically when
#: it crashes?", "... if it were failing?"): what the bot would do, not an order
_WHEN = re.compile(r"\b(?:when|whenever|if|unless|in case)\b")
#: a question asked for an opinion ("what do you think, ...", "do you think we should ..."):
#: the write it names is asked about, not for
_OPINION = re.compile(
    r"\b(?:what do you think|do you think|would you say|in your opinion|your (?:take|opinion)|"
    r"thoughts\b)"
)

_CONDITIONAL = re.compile(r"\s*(?:if|in case|unless|once|whenever|should it)\b")
_STATE = re.compile(
    r"(?:\bis|\bare|'s)\s+(?:[\w-]+\s+){0,6}?(?:silenced|muted|snoozed|rolled out)\b(?!\s+by\b)"
)


def is_state(text: str) -> bool:
    """Whether ``text`` asks about a state a write leaves ("is checkout rolled out?",
    "what's silenced?"), not about the write done."""
    return bool(_STATE.search(" ".join(_words(text))))


_COUNTED = re.compile(r"\b(?:how many|number of|count of)\s+(\w+)")
_HOW_OFTEN = re.compile(r"\b(?:how many times|how often)\b")
_CLAUSE = re.compile(r"[,;:.!?\n]+|\s[-–—]\s|\b(?:but|instead|so|and then|then)\b")
#: an Alertmanager notification pasted in a message ("... [FIRING:2] HighErrorRate ..."):
#: it and everything after it are the alert's words (its runbook's), not the person's
_PASTED_ALERT = re.compile(r"(?:^|\s)\[(?:firing|resolved)(?::\d+)?\]", re.I)
#: quoted words; a single quote opens only before a word and closes only after one, never
#: inside one ("we're ... the comment 'planned maintenance'": one quote, not two; "'restart
#: it when it's stuck'": the apostrophe inside a word closes nothing)
_QUOTED = re.compile(
    r"\"[^\"]*\"|“[^”]*”|(?<!\w)'(?=\S)(?:[^']|(?<=\w)'(?=\w)){3,}?(?<=\S)'(?!\w)|`[^`]*`"
)
#: words reported after a colon, to the end of their sentence ("bob said: restart cart.",
#: "alice asked: would you ...?", "the runbook says: ...", "Runbook: ...", "action: ...")
_REPORTED = re.compile(
    r"\b(?:said|says|say|asked|asks|ask|wrote|writes|told (?:me|us)|tells (?:me|us)|"
    r"suggested|suggests|recommends|recommended|runbook|playbook|action|step \d+)\s*:"
    r"[^.!?\n]*(?:[.!?]+|$)",
    re.I,
)
#: a word; a metric's name is one ("kube_deployment_status_replicas_unavailable")
_WORD = re.compile(r"[a-z0-9_']+")


@dataclass(frozen=True)
class Clause:
    text: str
    mood: Mood


def _words(text: str) -> list[str]:
    found = (w.strip("'") for w in _WORD.findall(text.lower().replace("’", "'")))
    return [_spelled(w) for w in found if w]


@lru_cache(maxsize=4096)
def _spelled(word: str) -> str:
    """A misspelt write word as the write word ("restrat" -> "restart", "rollbak" ->
    "rollback"), so a typo neither hides a write nor its negation ("don't restrat it")."""
    if word in WRITE_FORMS or len(word) < lexicon.TYPO_MIN:
        return word
    return lexicon.typo_of(word, WRITE_FORMS, stem) or word


def _phrasal_at(words: list[str], i: int) -> bool:
    """A two-word write verb starting at ``words[i]``, up to two words apart ("roll it back",
    "take the payments pods down")."""
    first = _base(words[i])  # "(would you mind) taking it down"
    return any((first, w) in PHRASAL for w in words[i + 1 : i + 7])


#: the lexicon's idioms for a write ("force a new deployment", "off and on", "desired count"),
#: as stems: each is a write word here too, so the lexicon never maps to a write words this
#: module does not see (see :mod:`opsbot.intent.lexicon`)
WRITE_IDIOMS: tuple[tuple[str, ...], ...] = tuple(
    phrase(key) for key, word in lexicon.SYNONYMS.items() if word in lexicon.WRITE_WORDS
)


def _idiom_at(stems: list[str], i: int) -> bool:
    """A write idiom of the lexicon starting at ``stems[i]`` (``*``: up to three words)."""
    return any(idiom[0] == stems[i] and _matches(stems, i, idiom) for idiom in WRITE_IDIOMS)


def _matches(stems: list[str], i: int, idiom: tuple[str, ...]) -> bool:
    if not idiom:
        return True
    if idiom[0] == "*":
        return any(_matches(stems, j, idiom[1:]) for j in range(i, min(i + 4, len(stems) + 1)))
    return i < len(stems) and stems[i] == idiom[0] and _matches(stems, i + 1, idiom[1:])


def _ordered_idiom(words: list[str]) -> bool:
    """A write idiom of the lexicon said in the imperative at ``words[0]`` ("force a new
    deployment of x"; not "rolled back x": a past form)."""
    first = words[0]
    if first in PAST or first.endswith("ed") or len(words) < 2:
        return False
    stems = list(map(stem, words))
    return any(len(i) > 1 and i[0] == stems[0] and _matches(stems, 0, i) for i in WRITE_IDIOMS)


def _has_write(words: list[str]) -> bool:
    if any(w in WRITE_FORMS or _phrasal_at(words, i) for i, w in enumerate(words)):
        return True
    stems = [stem(w) for w in words]
    return any(_idiom_at(stems, i) for i in range(len(stems)))


def _negated(text: str, words: list[str]) -> bool:
    joined = " ".join(words)
    return any(
        (" " in n and f" {n} " in f" {joined} ") or (" " not in n and n in words) for n in NEGATIONS
    ) or bool(re.search(r"\w+n't\b", text))


def _strip_lead_ins(words: list[str]) -> list[str]:
    changed = True
    while changed and words:
        changed = False
        for lead in LEAD_INS:
            parts = lead.split()
            if words[: len(parts)] == parts and len(words) > len(parts):
                words = words[len(parts) :]
                changed = True
    return words


def polite(text: str) -> list[str] | None:
    """The order in ``text`` (one clause) put as a polite request (lead-ins stripped): "could
    you please do a rolling restart of x" -> ["do", "a", "rolling", "restart", "of", "x"];
    "would you mind taking it down" -> ["take", "it", "down"] (the verb's base form); None
    when it is none ("can you restart x?", "should we ...", "would you restart x?"): see
    :data:`POLITE`."""
    words = _strip_lead_ins(_words(text))
    for lead in POLITE:
        parts = lead.split()
        if words[: len(parts)] == parts and len(words) > len(parts):
            rest = _strip_lead_ins(words[len(parts) :])
            return [_base(rest[0]), *rest[1:]] if rest else None
    return None


#: the first words of two-word write verbs ("take" of "take down")
_PHRASAL_FIRST = frozenset(first for first, _ in PHRASAL)


@lru_cache(maxsize=1024)
def _base(word: str) -> str:
    """A write verb's -ing form as its base ("taking" -> "take", "rolling" -> "roll",
    "scaling" -> "scale"), after "would you mind"; any other word as it is."""
    if not word.endswith("ing"):
        return word
    root = word[:-3]
    for guess in (root, root + "e", root[:-1]):
        if guess in WRITE_VERBS or guess in _PHRASAL_FIRST:
            return guess
    return word


def _asks(words: list[str]) -> bool:
    """Whether words (lead-ins stripped) open a question: "should we", "did anyone", "do you"
    (but "do a rolling restart" is an order)."""
    if not words or words[0] not in QUESTION_STARTS:
        return False
    return not (words[0] == "do" and len(words) > 1 and words[1] not in PRONOUNS)


def _clause_mood(text: str) -> Mood:
    words = _words(text)
    if not _has_write(words):
        return Mood.NONE
    if _negated(text, words):
        return Mood.NEGATED
    rest = _strip_lead_ins(words)
    order = polite(text) if rest else None
    if order is not None:
        rest = order  # "could you please restart x?": the order it puts politely
    if HYPOTHETICAL.search(" ".join(rest if order is not None else words)):
        return Mood.HYPOTHETICAL  # (not the "would" of "would you mind ...")
    if not rest:
        return Mood.NONE
    first = rest[0]
    second = rest[1] if len(rest) > 1 else ""
    counted = _COUNTED.search(" ".join(rest))
    if (counted and counted.group(1) in WRITE_FORMS) or _HOW_OFTEN.search(" ".join(rest)):
        return Mood.NOUN  # "how many restarts did the pods have", "how many times ...": a count
    if _STATE.search(" ".join(words)):
        return Mood.NOUN  # "what's silenced for payments?": a state, not a deed
    if _asks(rest):
        if first in ("did", "was", "were", "has", "have", "had") or any(w in PAST for w in rest):
            return Mood.REPORT  # a question about what was done: "did anyone restart it?"
        return Mood.QUESTION
    if first in DOING:
        return Mood.IMPERATIVE  # "do a rolling restart of ...", "set replicas of cart to 0"
    if first.isdigit() and second in ("replicas", "replica", "pods", "instances"):
        return Mood.IMPERATIVE  # "(I need) 3 replicas of payments"
    if re.search(r"\bto \d+ (?:replicas?|pods|instances)\b", " ".join(rest)):
        if first not in WRITE_VERBS and any(w in PAST for w in rest):
            return Mood.REPORT  # "priya already scaled cart to 4 replicas"
        return Mood.IMPERATIVE  # "checkout to 5 replicas in shop"
    if first in WRITE_VERBS or _phrasal_at(rest, 0) or _ordered_idiom(rest):
        if len(rest) > 1 and rest[1] in ("count", "counts", "history", "status", "loop"):
            return Mood.NOUN  # "restart count of ...", "rollback history"
        return Mood.IMPERATIVE
    if any(w in PAST for w in rest):
        return Mood.REPORT
    return Mood.NOUN


def clauses(text: str) -> list[Clause]:
    """The request cut at punctuation and conjunctions, each with its mood."""
    return [Clause(part.strip(), _clause_mood(part)) for part in _CLAUSE.split(text) if part]


@lru_cache(maxsize=256)
def write_mood(text: str) -> Mood:
    """How ``text`` stands toward a write: :attr:`Mood.IMPERATIVE` only when a clause asks for
    it in the imperative and the request as a whole is neither a question, a hypothetical,
    quoted words, nor taken back after (:data:`_RETRACTION`); :attr:`Mood.NONE` when no write
    word appears. A polite request ("could you please restart x?") is an order unless a
    clause of the message negates a write, it offers an alternative ("... or wait for the
    hotfix?") or asks an opinion ("what do you think, ...")."""
    lowered = text.strip().lower()
    if pasted := _PASTED_ALERT.search(lowered):  # "can someone look? [FIRING:1] ... Runbook: ..."
        own = write_mood(lowered[: pasted.start()]) if pasted.start() else Mood.NONE
        if own is not Mood.NONE:
            return own  # what the person says, before the alert
        alert = write_mood(lowered[pasted.end() :])  # the alert's words: never an order
        return alert if alert in (Mood.NONE, Mood.REPORT) else Mood.QUOTED  # ("rolled back x")
    unquoted = _unquote(lowered)
    if not _has_write(_words(unquoted)):
        return Mood.QUOTED if _has_write(_words(lowered)) else Mood.NONE
    if _CONDITIONAL.match(unquoted):
        return Mood.HYPOTHETICAL  # "if latency spikes, then restart checkout": not now
    parts = [c for c in clauses(unquoted) if c.mood is not Mood.NONE]
    ordered = [c for c in parts if c.mood is Mood.IMPERATIVE]
    if ordered:
        after = unquoted[unquoted.rfind(ordered[-1].text) + len(ordered[-1].text) :]
        if any(_RETRACTION.search(c.strip()) for c in _CLAUSE.split(after) if c and c.strip()):
            return Mood.NEGATED  # "could you restart cart? nvm, I'll do it myself"
        if _OPINION.search(unquoted):
            return Mood.QUESTION  # "what do you think, ..."
    if any(polite(c.text) is not None for c in ordered):
        if any(c.mood is Mood.NEGATED for c in parts):
            return Mood.NEGATED  # "could you restart cart? actually, don't restart it"
        if re.search(r"\bor\b", unquoted):
            return Mood.QUESTION  # "could you restart cart, or is that too risky?"
        for mood in (Mood.HYPOTHETICAL, Mood.QUESTION):
            if any(c.mood is mood for c in parts):
                return mood
        if _WHEN.search(unquoted):
            return Mood.HYPOTHETICAL  # "will you restart cart when it crashes?": a behaviour
        return Mood.IMPERATIVE  # "could you please restart x? thanks!": asked politely
    if ordered:
        if lowered.endswith("?") or _asks(_strip_lead_ins(_words(unquoted))):
            return Mood.QUESTION
        asked = [s for s in re.split(r"(?<=\?)", unquoted) if s.rstrip().endswith("?")]
        if any(c.mood is Mood.IMPERATIVE for s in asked for c in clauses(s)):
            return Mood.QUESTION  # "scale checkout to 3? then tell me": the write is asked
        return Mood.IMPERATIVE
    for mood in (Mood.NEGATED, Mood.QUESTION, Mood.HYPOTHETICAL, Mood.REPORT):
        if any(c.mood is mood for c in parts):
            return mood
    if lowered.endswith("?"):
        return Mood.QUESTION
    return Mood.NOUN


def _unquote(text: str) -> str:
    """``text`` without quoted words nor words reported after a colon (:data:`_REPORTED`)."""
    return _REPORTED.sub(" ", _QUOTED.sub(" ", text))


#: verbs that ask to read something ("show", "check"...): a clause opening with one asks
READ_VERBS = frozenset(
    {
        "show", "list", "get", "check", "describe", "tell", "display", "graph", "plot",
        "chart", "find", "look", "investigate", "dig", "give", "what's", "whats", "how's",
        "hows", "explain", "diagnose", "query", "fetch", "print", "watch",
    }
)  # fmt: skip


def ordered(text: str) -> str:
    """The clauses of ``text`` that order a write, joined ("restart orders in prod, it's
    leaking memory" -> "restart orders in prod"); "" when none does."""
    parts = (p.strip() for p in _SENTENCE_PART.split(unquoted(text)) if p and p.strip())
    kept = [p for p in parts if _clause_mood(p) is Mood.IMPERATIVE]
    return ", ".join(kept)


#: clauses as :data:`_CLAUSE` cuts them, but a dot only between sentences ("k8s.scale")
_SENTENCE_PART = re.compile(
    r"[,;:!?\n]+|\.+(?=\s|$)|\s[-–—]\s|\b(?:but|instead|so|and then|then)\b"
)


#: where a sentence ends ("... namespace. Could you ...", "... again? Thanks!")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def focus(text: str) -> str:
    """The sentences of ``text`` that ask for something, joined: what a long message with
    context before (or thanks after) the request asks ("The mailer has been quiet for a
    while. Could you show me its last 100 lines of logs? Thanks!" -> "Could you show me its
    last 100 lines of logs?"); ``text`` itself when it is one sentence, when none or every
    sentence asks, or when it holds a pasted alert notification (what it asks about)."""
    sentences = [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]
    if len(sentences) < 2 or _PASTED_ALERT.search(text):
        return text  # ("can someone look at this? [FIRING:2] ...": the alert is the subject)
    kept = [_main(s) for s in sentences if requests(s)]
    return " ".join(kept) if kept and len(kept) < len(sentences) else text


#: a clause that says why or when, after the request ("... so I can tell if it's real",
#: "... until we're done", "... because the fix isn't ready")
_SUBORDINATE = re.compile(
    r"\s+(?:so that|so|because|since|as|until|till|unless|if|once|while)\s+(?=\S)", re.I
)


def _main(sentence: str) -> str:
    """``sentence`` without a clause that says why or when after its request (a duration
    such as "since 2h" or "as a graph" stays)."""
    for m in _SUBORDINATE.finditer(sentence):
        after = sentence[m.end() :]
        if re.match(r"(?:\d|yesterday|last\b|an?\s+(?:graph|chart|table)\b)", after, re.I):
            continue
        head = sentence[: m.start()]
        return head + ("?" if sentence.rstrip().endswith("?") else "") if head.split() else sentence
    return sentence


#: an alternative offered to a write asked about ("should we roll it back, or wait for the
#: hotfix?"): part of the question, not a request
_ALTERNATIVE = re.compile(r",?\s+or\s+[^?.!]*")


def without_alternatives(text: str) -> str:
    """``text`` without the alternative a question about a write offers ("should we roll it
    back, or wait for the hotfix?" -> "should we roll it back?")."""
    for m in _ALTERNATIVE.finditer(text):
        asked = _SENTENCE.split(text[: m.start()])[-1]  # the sentence it ends
        if _clause_mood(asked) in (Mood.QUESTION, Mood.HYPOTHETICAL):
            return text[: m.start()] + text[m.end() :]
    return text


def requests(text: str) -> bool:
    """Whether a sentence of ``text`` asks or orders: a question, a read verb, a polite
    request or a write ordered (see :func:`asks_something`, :func:`polite`). "Thanks for all
    the help yesterday! Have a lovely weekend" does not."""
    return any(
        asks_something(s)
        or polite(s) is not None
        or any(c.mood is Mood.IMPERATIVE for c in clauses(unquoted(s)))
        for s in _SENTENCE.split(text)
        if s and s.strip()
    )


def opening_words(text: str) -> list[str]:
    """The words of ``text``'s first clause after its lead-ins ("please", "ok", "@opsbot")."""
    first = _CLAUSE.split(unquoted(text), maxsplit=1)[0] if text.strip() else ""
    return _strip_lead_ins(_words(first or ""))


def request_mood(text: str) -> Mood:
    """The mood a write gate reads (the engine's, whatever planner proposed the write):
    :func:`write_mood`, except that a question with no write word in it ("is checkout ok?",
    "did someone force a new deployment of billing?") is :attr:`Mood.QUESTION`, so a planner
    (a model) that answers a question with a write plans none."""
    mood = write_mood(text)
    return Mood.QUESTION if mood is Mood.NONE and is_question(text) else mood


def is_question(text: str) -> bool:
    """Whether ``text`` is put as a question: it ends with "?" or opens with a question word
    ("what was the previous version of checkout", "did someone ...")."""
    return text.rstrip().endswith("?") or _asks(opening_words(text))


def asks_something(text: str) -> bool:
    """Whether ``text`` asks for anything: a question, or a clause that opens with a read
    verb ("just check its pods", "show me its history"). "All good now" asks nothing."""
    if text.strip().endswith("?"):
        return True
    for clause in _CLAUSE.split(unquoted(text)):
        words = _strip_lead_ins(_words(clause or ""))
        if words and (words[0] in READ_VERBS or words[0] in ("why", "what")):
            return True
        if words and _asks(words) and not (len(words) > 1 and words[1] in ("a", "an")):
            return True  # (not "have a lovely weekend": no question without a subject)
    return False


def without_negated(text: str) -> str:
    """``text`` without its negated clauses ("no, not checkout: restart payments in shop" ->
    "restart payments in shop"), so their names are not taken for the request's."""
    parts = [c for c in _CLAUSE.split(text) if c and c.strip()]
    kept = [c for c in parts if not _negated(c, _words(c))]
    if len(kept) == len(parts):
        return text  # nothing negated: the text as written ("shop: bounce payments")
    return ", ".join(c.strip() for c in kept) or text


def unquoted(text: str) -> str:
    """``text`` without quoted words ("...", '...', `...`): what the person says themselves."""
    return _unquote(text)


def without_write_talk(text: str) -> str:
    """``text`` without the clauses that talk about a write without asking for it ("don't
    restart checkout in shop, just check its pods" -> "just check its pods"): what is left is
    what the request does ask for."""
    kept = [
        c.text
        for c in clauses(_unquote(text))
        if c.mood is Mood.NONE and not _negated(c.text, _words(c.text))
    ]
    return ", ".join(kept)
