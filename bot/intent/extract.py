"""Lexical analysis of a chat request for the offline router.

:func:`parse` splits a request into an *expression* (PromQL or LogQL, found after a
``promql:``/``logql:`` prefix, in backticks or quotes, after a command verb such as "graph",
or as a bracketed span), time phrases, numbers, label matchers and the remaining words.
The ``extract_*`` helpers read one kind of argument each; none of them knows any skill.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from opsbot.intent import kubectl, lexicon

# -- normalisation -------------------------------------------------------------------------

_IRREGULAR = {
    "ran": "run",
    "did": "do",
    "does": "do",
    "done": "do",
    "is": "be",
    "are": "be",
    "was": "be",
    "were": "be",
    "went": "go",
    "gone": "go",
    "going": "go",
    "has": "have",
    "been": "be",
    "being": "be",
    "took": "tak",  # as stem("take")
    "taken": "tak",
    "brought": "bring",
    "spun": "spin",
    "wrong": "wrong",
    "its": "it",
    "whats": "what",
    "what's": "what",
    "who's": "who",
    "how's": "how",
    "isn't": "be",
    "aren't": "be",
    "crashlooping": "crashloop",
    "crashloopbackoff": "crashloop",
}


@lru_cache(maxsize=8192)
def stem(word: str) -> str:
    """A small suffix stripper so "restarted", "restarting", "restarts" meet "restart"."""
    w = word.lower().strip("'\"?!.,;:()")
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if w in lexicon.ABBREVIATIONS:  # "hist", "prev", "errs"
        return stem(lexicon.ABBREVIATIONS[w])
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith(("ies", "ied")):  # "copies", "replied": "copy", "reply"
        return w[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not w.endswith("ss"):
            w = w[: -len(suffix)]
            break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":  # "scalled", "stopp"
        w = w[:-1]
    return w


WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*[A-Za-z0-9]|[A-Za-z0-9]")
_CONTRACTIONS = re.compile(
    r"\b(what|how|who|where|when|that|there|it|which)'s\b|\b(is|are|was|were|do|does|did|can|could|would|should)n't\b",
    re.I,
)


def expand_contractions(text: str) -> str:
    """ "what's" -> "what is", "isn't" -> "is not" (so the two spellings score alike)."""
    return _CONTRACTIONS.sub(
        lambda m: f"{m.group(1)} is" if m.group(1) else f"{m.group(2)} not", text
    )


def words(text: str) -> list[str]:
    return WORD.findall(text)


def _wordlist(text: str) -> list[str]:
    return text.split()


STOPWORDS = {
    stem(w)
    for w in _wordlist(
        """
        a an the of for from in on at to into onto by with without about and or but not no is are
        was were be been being am me my mine our ours us we you your i it its this that these those
        there here their them they he she his her please pls plz can could would should will shall
        may might must do does did doing done have has had get got give gives show list tell find
        what what's whats which who whom whose why how when where any all some every each now right
        currently current just again up down out over under then than so very really also still ok
        okay hey hi hello yo bot opsbot let lets let's see look check need want like make sure going
        gonna last past previous recent recently since ago today yesterday tonight hour hours minute
        minutes min mins day days week weeks second seconds time times lines line many much more
        most top first latest one two three progress namespace ns svc service deployment deploy pod
        pods statefulset daemonset node nodes replica replicas instance instances revision rev
        everything anything something thing things stuff happening set change put bring increase
        decrease reduce raise lower bump run go quick quickly asap urgently use using used
        consume consuming eat eating hog hogging burn burning keep keeps grab fetch pull
        think guess compare sorted sort across through between among via versus vs anything
        everything something broken spike blip surge dip regression outage issue problem
        degradation slowness new old fresh weird strange odd lemme gimme wanna gotta u ur
        couple few team folks guys everyone morning afternoon evening context question heads
        mind ahead yes yeah yep yup sure alright another other extra results pending
        until till unless whether though although while anyway otherwise meanwhile
        super extremely pretty quite totally completely app application thanks thank thx ty
        cheers kudos
        running failed ready terminating evicted maintenance migration weekend double
        """
    )
}

KIND_ALIASES = {
    "pod": "pod",
    "pods": "pod",
    "po": "pod",
    "deployment": "deployment",
    "deployments": "deployment",
    "deploy": "deployment",
    "statefulset": "statefulset",
    "statefulsets": "statefulset",
    "sts": "statefulset",
    "daemonset": "daemonset",
    "daemonsets": "daemonset",
    "ds": "daemonset",
    "service": "service",
    "services": "service",
    "svc": "service",
    "node": "node",
    "nodes": "node",
}

LABEL_WORDS = (
    "service",
    "job",
    "namespace",
    "instance",
    "team",
    "app",
    "pod",
    "alertname",
    "severity",
    "cluster",
    "env",
    "environment",
    "container",
)
SEVERITIES = {
    "critical": "critical",
    "crit": "critical",
    "warning": "warning",
    "warn": "warning",
    "info": "info",
    "page": "page",
    "major": "major",
    "minor": "minor",
}

# -- durations -----------------------------------------------------------------------------

_UNIT = {
    "s": "s",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "m": "m",
    "min": "m",
    "mins": "m",
    "minute": "m",
    "minutes": "m",
    "h": "h",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "d": "d",
    "day": "d",
    "days": "d",
    "w": "w",
    "wk": "w",
    "week": "w",
    "weeks": "w",
}
_UNIT_RE = "|".join(sorted(_UNIT, key=len, reverse=True))
_COMPACT = re.compile(r"\b(\d+(?:ms|s|m|h|d|w))+\b")
_NUM_UNIT = re.compile(rf"\b(\d+)\s*({_UNIT_RE})\b", re.I)
_WORD_UNIT = re.compile(
    r"\b(?:(half an? hour)|(?:an?|one|the)\s+(hour|day|week|minute)|"
    r"(?<=last |past )(hour|day|week|minute)|(?<=previous )(hour|day|week|minute))\b",
    re.I,
)
#: days said by name: how far back each reaches from now (at most)
_DAY_WORDS_VALUE = {
    "yesterday": "1d",
    "today": "1d",  # since midnight: a day at most, shown in the plan
    "overnight": "12h",
    "last night": "12h",
    "until tomorrow": "1d",  # a silence "until tomorrow": a day at most, shown in the plan
    "till tomorrow": "1d",
}
_DAY_WORDS = re.compile(
    r"\b(yesterday|today|overnight|last night|until tomorrow|till tomorrow)\b", re.I
)
#: "ninety minutes", "a couple of hours", "fifteen mins": a count said in words, and a unit
_WORDS_UNIT = re.compile(
    rf"(?<![\w-])({'|'.join(sorted(lexicon.NUMBERS, key=len, reverse=True))})\s+"
    rf"({'|'.join(sorted((u for u in _UNIT if len(u) > 1), key=len, reverse=True))})\b",
    re.I,
)
_WORD_COUNT = "|".join(sorted(lexicon.NUMBERS, key=len, reverse=True))
#: a duration with a fraction: "1.5h", "2.5 hours", "an hour and a half", "one and a half
#: days", "a quarter (of an) hour", "three quarters of an hour", "half a day"
_FRACTIONS = (
    re.compile(r"(?<![\w.])(\d+\.\d+)\s*(" + _UNIT_RE + r")\b", re.I),
    re.compile(
        rf"\b(an?|\d+|{_WORD_COUNT})\s+(minute|hour|day|week)s?\s+and\s+a\s+(half|quarter)\b",
        re.I,
    ),
    re.compile(
        rf"\b(an?|\d+|{_WORD_COUNT})\s+and\s+a\s+(half|quarter)\s+(minute|hour|day|week)s?\b",
        re.I,
    ),
    re.compile(
        r"\b(?:(an?|one|three)\s+)?(quarters?|half)\s+(?:of\s+)?(?:an?\s+)?(hour|day|week)\b",
        re.I,
    ),
)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = {"half": 0.5, "quarter": 0.25, "quarters": 0.25}


def _compact(seconds: float) -> str:
    """``5400`` -> ``"90m"``: the largest unit that counts it whole."""
    whole = round(seconds)
    for unit in ("w", "d", "h", "m"):
        if whole >= _SECONDS[unit] and whole % _SECONDS[unit] == 0:
            return f"{whole // _SECONDS[unit]}{unit}"
    return f"{max(whole, 1)}s"


def _fraction(m: re.Match[str], kind: int) -> str | None:
    """The duration a match of ``_FRACTIONS[kind]`` says, compact."""
    if kind == 0:
        return _compact(float(m.group(1)) * _SECONDS[_UNIT[m.group(2).lower()]])
    if kind in (1, 2):
        count, part, unit = (m.group(1), m.group(3), m.group(2)) if kind == 1 else m.groups()
        n = 1 if count.lower() in ("a", "an") else lexicon.number(count)
        return _compact((n + _PART[part.lower()]) * _SECONDS[_UNIT[unit.lower()]])
    count, part, unit = m.group(1), m.group(2).lower(), m.group(3).lower()
    times = 3 if (count or "").lower() == "three" else 1
    if part == "half" and count and count.lower() not in ("a", "an", "one"):
        return None
    return _compact(times * _PART[part] * _SECONDS[_UNIT[unit]])


_CONTEXT_SINCE = {"last", "past", "previous", "since", "over", "within", "during", "ago", "recent"}


@dataclass(frozen=True)
class Duration:
    value: str  # compact, e.g. "30m"
    start: int
    end: int
    context: str  # the word before it ("last", "for", "since", ...)


def find_durations(text: str) -> list[Duration]:
    """Every duration phrase in ``text`` with the word that introduces it."""
    found: list[Duration] = []
    taken: list[tuple[int, int]] = []

    def add(value: str, start: int, end: int) -> None:
        if any(s < end and start < e for s, e in taken):
            return
        before = text[max(0, start - 60) : start].lower().split()
        context = ""
        for word in reversed(before[-3:]):
            if word in _CONTEXT_SINCE or word == "for":
                context = word
                break
        taken.append((start, end))
        found.append(Duration(value, start, end, context))

    for kind, pattern in enumerate(_FRACTIONS):  # before "1h" or "5h" inside them is read
        for m in pattern.finditer(text):
            if value := _fraction(m, kind):
                add(value, m.start(), m.end())
    for m in _COMPACT.finditer(text):
        add(m.group(0).lower(), m.start(), m.end())
    for m in _NUM_UNIT.finditer(text):
        add(f"{int(m.group(1))}{_UNIT[m.group(2).lower()]}", m.start(), m.end())
    for m in _DAY_WORDS.finditer(text):  # "since yesterday", "errors overnight"
        add(_DAY_WORDS_VALUE[m.group(1).lower()], m.start(), m.end())
    for m in _WORDS_UNIT.finditer(text):
        if (n := lexicon.number(m.group(1))) > 0:
            add(f"{n}{_UNIT[m.group(2).lower()]}", m.start(), m.end())
    for m in _WORD_UNIT.finditer(text):
        if m.group(1):
            add("30m", m.start(), m.end())
        else:
            unit = next(g for g in m.groups()[1:] if g)
            add(f"1{_UNIT[unit.lower()]}", m.start(), m.end())
    found.sort(key=lambda d: d.start)
    return found


_TIME_TAIL = re.compile(
    rf"\s*(?:,\s*)?(?:(?:\b(?:over|for|in|during|within|from)\s+)?(?:\bthe\s+)?"
    rf"\b(?:last|past|previous|since)|\b(?:for|over|during))\s+"
    rf"(?:\d+\s*(?:{_UNIT_RE})\b|\d+(?:[smhdw])+\b|"
    # "the past two hours", "the last couple of hours": a count said in words
    rf"(?:(?:{'|'.join(sorted(lexicon.NUMBERS, key=len, reverse=True))})\s+)?"
    r"(?:an?\s+|one\s+|half\s+an?\s+)?(?:hour|day|week|minute)s?\b)\s*[?.!]*\s*$",
    re.I,
)


def first_clause(text: str) -> tuple[str, str]:
    """Split ``"up for 30m, half the targets look gone"`` at its first comma or semicolon
    outside brackets and quotes: an expression has none there, the remark after it is no
    part of it."""
    depth, quote = 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch in ",;" and text[i + 1 : i + 2].isspace():
            return text[:i], text[i + 1 :]
    return text, ""


def strip_time_tail(text: str) -> tuple[str, str]:
    """Split ``"rate(x[5m]) over the last 6h"`` into ``("rate(x[5m])", "over the last 6h")``."""
    m = _TIME_TAIL.search(text)
    if not m:
        return text.strip(), ""
    return text[: m.start()].strip(), text[m.start() :].strip()


# -- expressions (PromQL / LogQL) ----------------------------------------------------------

_PREFIX = re.compile(r"\b(promql|logql)\s*:\s*(.+)$", re.I | re.S)
#: "run promql sum(...)", "promql query up == 0", "logql {app=...}": the language named
_LEAD = re.compile(
    r"^\s*(?:please\s+)?(?:(?:run|eval(?:uate)?|execute|query|try|check)\s+)?(?:a\s+|the\s+|this\s+)?"
    r"(promql|logql)(?:\s+(?:query|expression|expr))?\s+(.+)$",
    re.I | re.S,
)
_BACKTICK = re.compile(r"`([^`]+)`")
_COMMAND = re.compile(
    r"^\s*(?:please\s+|can you\s+|could you\s+|(?:would you\s+|do you\s+)?mind\s+)?"
    r"(?:(?:show|give|draw|make)\s+(?:me\s+|us\s+)?(?:a\s+|the\s+)?(?:graph|chart|plot)\s+(?:of|for)|"
    r"(?:instant\s+)?query|run query|run|eval(?:uate)?|"
    r"(?:graph(?:ing)?|plot(?:ting)?|chart(?:ing)?|draw(?:ing)?|visuali[sz]e)(?:\s+(?:of|for))?|"
    r"(?:search|grep|find)\s+(?:the\s+)?logs?(?:\s+for)?)"
    # "run this: sum(up)", "run this promql for me: sum(up)"
    r"(?:\s+(?:this|that|the|a))?(?:\s+(?:promql|logql|query|expression|expr))?"
    r"(?:\s+for\s+(?:me|us))?(?:\s*:)?\s+(.+)$",
    re.I | re.S,
)
_LOGQL_PIPE = re.compile(
    r"\}\s*(?:\|=|\|~|!=|!~|\|\s*(?:json|logfmt|pattern|regexp|line_format|label_format|unwrap|drop|keep|decolorize))"
)
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "==",
    "!=",
    ">",
    "<",
    ">=",
    "<=",
    "@",
}
_IDENT = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")


def _balanced(text: str) -> bool:
    depth = 0
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and not quote


def _outside_brackets(text: str) -> list[str]:
    """Words of ``text`` that are not inside (), [], {} or quotes."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
            cur += "\0"
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            if ch.isspace():
                if cur:
                    out.append(cur)
                cur = ""
            else:
                cur += ch
    if cur:
        out.append(cur)
    return [w.replace("\0", "") for w in out if w.replace("\0", "")]


def looks_like_expression(text: str) -> bool:
    """Whether ``text`` reads as a PromQL/LogQL expression rather than English."""
    text = text.strip()
    if not text or not _balanced(text):
        return False
    if text.startswith("{"):
        return True
    outside = _outside_brackets(text)
    if len(outside) == 1:
        token = outside[0]
        return bool(_IDENT.match(token)) or any(c in text for c in "([{")
    # several words: every word outside brackets must be an identifier, number or operator,
    # and at least one must be PromQL syntax (an operator/keyword or a bracketed call)
    for word in outside:
        if word.lower() in _PROMQL_WORDS or re.fullmatch(r"[\d.]+", word):
            continue
        if not _IDENT.match(word):
            return False
    return any(w.lower() in _PROMQL_WORDS for w in outside) or any(c in text for c in "([{")


def expression_kind(expr: str, hint: str = "") -> str:
    if hint in ("promql", "logql"):
        return hint
    if _LOGQL_PIPE.search(expr):
        return "logql"
    if expr.strip().startswith("{"):
        return "selector"  # valid in both languages; the skill decides
    return "promql"


#: PromQL's aggregation operators, often written apart from their brackets: "sum (rate(...))"
_AGGREGATIONS = frozenset(
    {
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
        "quantile", "count_values", "limitk",
    }
)  # fmt: skip


#: a function called or a breakdown: what makes a whole request PromQL or LogQL
_CALLS = re.compile(r"\b(?:by|without)\s*\(|\b[a-z_]+\(", re.I)


def _opens_expression(text: str) -> bool:
    """Whether ``text`` opens as PromQL/LogQL does, with calls in it: an aggregation ("sum by
    (app) (...)"), a function called, a snake_case name (not "show sum (rate(...))")."""
    first = re.match(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)(\()?", text)
    if not first or not _CALLS.search(text):
        return False
    word = first.group(1).lower()
    return word in _AGGREGATIONS or "_" in word or first.group(2) is not None


def _scan_bracketed(text: str) -> tuple[int, int] | None:
    """The first span that starts a token with brackets or a snake_case metric and is balanced."""
    for m in re.finditer(
        r"[A-Za-z_:][A-Za-z0-9_:]*\s*[({\[]|\{|\b[a-z][a-zA-Z0-9]*_[a-zA-Z0-9_:]+\b", text
    ):
        start = m.start()
        end = m.end()
        depth = 0
        i = start
        if gap := re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)\s+([({\[])$", m.group(0)):
            i = m.end() - 1  # "sum (rate(x[5m]))": the operator, then its brackets
            if gap.group(1).lower() not in _AGGREGATIONS:
                if gap.group(2) != "{":
                    continue  # "restart checkout (shop)": words in brackets, no PromQL
                start = i  # "loki query {app="x"}": a word, then the expression
        while i < len(text):
            ch = text[i]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            elif ch.isspace() and depth == 0:
                break
            elif ch == '"':
                j = text.find('"', i + 1)
                i = j if j > 0 else len(text)
            i += 1
        end = i
        if depth != 0:
            continue
        # extend over PromQL tails: "by (service)", "without (x)", "> 0.5", "|= \"x\""
        tail = re.match(
            r'(\s+(?:by|without|on|ignoring)\s*\([^)]*\)|\s*(?:\|=|\|~|!=|!~)\s*"[^"]*"'
            r"|\s*(?:[-+*/%^]|==|!=|>=|<=|>|<)\s*[\w.]+)+",
            text[end:],
        )
        if tail:
            end += tail.end()
        return start, end
    return None


@dataclass
class Parsed:
    """A request split into its parts. ``rest`` is the text with the expression removed."""

    text: str
    expr: str | None = None
    expr_kind: str = ""  # promql | logql | selector
    explicit: bool = False  # the expression came after a prefix, in backticks or after a verb
    rest: str = ""
    durations: list[Duration] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    stems: list[str] = field(default_factory=list)
    #: kubectl options (``namespace``, ``replicas``, ``to-revision``, ``tail``...) by key
    flags: dict[str, str] = field(default_factory=dict)
    #: ``TYPE/NAME`` references as (kind, name): ``deploy/cart`` -> ("deployment", "cart")
    refs: list[tuple[str, str]] = field(default_factory=list)
    #: the distinct stems of five letters or more (typo-tolerant matching compares these)
    long_stems: list[str] = field(default_factory=list)
    #: the words as written, lower-cased (``=word`` cues compare these)
    exact: frozenset[str] = frozenset()
    #: the stems in the lexicon's words: a synonym replaced in place ("bounce" ->
    #: "restart"), then, after a separator no phrase crosses, the words of idioms ("take *
    #: down" -> "scale") the request does not say already
    canon: list[str] = field(default_factory=list)

    @property
    def lowered(self) -> str:
        return self.rest.lower()

    @cached_property
    def present(self) -> frozenset[str]:
        """Every stem of the request, said or canonical: a phrase whose first stem is not
        here cannot match (worked out once, read for every keyword of every skill)."""
        return frozenset(self.stems).union(self.canon)


def parse(text: str) -> Parsed:
    text = " ".join(text.strip().split())
    parsed = Parsed(text=text)
    expr, hint, rest = None, "", text
    if m := _PREFIX.search(text):
        expr, hint, rest = (
            m.group(2).strip(),
            m.group(1).lower(),
            text[: m.start()] + " " + m.group(1),
        )
        parsed.explicit = True
    elif (m := _LEAD.search(text)) and looks_like_expression(strip_time_tail(m.group(2))[0]):
        expr, hint = m.group(2), m.group(1).lower()
        rest = text[: m.start()] + " " + m.group(1)
        parsed.explicit = True
    elif m := _BACKTICK.search(text):
        expr, rest = m.group(1).strip(), text[: m.start()] + " " + text[m.end() :]
        parsed.explicit = True
    elif (m := _COMMAND.match(text)) and looks_like_expression(strip_time_tail(m.group(1))[0]):
        expr = m.group(1)
        rest = text[: m.start(1)]
        parsed.explicit = True
    elif (
        (m := _COMMAND.match(text))
        and (clause := first_clause(m.group(1)))[1]
        and looks_like_expression(strip_time_tail(clause[0])[0])
    ):  # "graph up for the last 30m, half the targets look gone": the remark is no query
        expr = clause[0]
        rest = text[: m.start(1)] + " " + clause[1]
        parsed.explicit = True
    elif _opens_expression(text) and looks_like_expression(text):  # "sum by (app) (...)"
        expr, rest = text, ""
    elif span := _scan_bracketed(text):
        expr, rest = text[span[0] : span[1]], text[: span[0]] + " " + text[span[1] :]
    if expr is not None:
        body, tail = strip_time_tail(expr)
        # a duration tail "since 15m" also counts when written without last/past
        m2 = re.search(rf"\s+(?:since|for)\s+(\d+\s*(?:{_UNIT_RE})|\d+[smhdw])\s*$", body, re.I)
        if m2 and parsed.explicit:
            tail = body[m2.start() :] + " " + tail
            body = body[: m2.start()]
        body = body.strip().rstrip("?").strip()
        if body.startswith(("'", '"')) and body.endswith(body[0]) and len(body) > 1:
            body = body[1:-1]
        parsed.expr = body
        parsed.expr_kind = expression_kind(body, hint)
        rest = f"{rest} {tail}"
    found = kubectl.options(" ".join(expand_contractions(rest).split()))
    parsed.flags, parsed.refs = found.values, found.refs
    parsed.rest = found.rest
    parsed.durations = find_durations(parsed.rest)
    parsed.tokens = words(parsed.rest)
    parsed.stems = [stem(t) for t in parsed.tokens]
    parsed.canon = canonical(parsed.stems, asked=text.rstrip().endswith("?"))
    parsed.long_stems = sorted({s for s in parsed.stems if len(s) >= 5})
    parsed.exact = frozenset(t.lower() for t in parsed.tokens)
    return parsed


# -- phrases and the lexicon ------------------------------------------------------------------

#: "*" in a phrase stands for up to this many words ("roll the cart pods in shop back")
MAX_GAP = 5


@lru_cache(maxsize=1024)
def phrase(words: str) -> tuple[str, ...]:
    """``"roll * back"`` as stems: ("roll", "*", "back")."""
    return tuple(w if w in ("*", END) else stem(w) for w in words.lower().split())


def contains(seq: list[str], phrase: tuple[str, ...]) -> bool:
    """Whether the stems ``phrase`` occur in order in ``seq``: adjacent, except that ``*``
    allows up to MAX_GAP words in between."""
    if "*" not in phrase:
        return _at(seq, list(phrase), 0, len(seq)) >= 0
    return gapped(seq, phrase)


def _at(seq: list[str], part: list[str], start: int, stop: int) -> int:
    """The first index in ``start..stop-1`` where ``part`` begins in ``seq`` (-1: none)."""
    n = len(part)
    i = start - 1
    while True:
        try:
            i = seq.index(part[0], i + 1, stop)  # a C-speed scan for the first word
        except ValueError:
            return -1
        if n == 1 or seq[i : i + n] == part:
            return i


def gapped(seq: list[str], phrase: tuple[str, ...]) -> bool:
    parts: list[list[str]] = [[]]
    for stem_ in phrase:
        if stem_ == "*":
            parts.append([])
        else:
            parts[-1].append(stem_)

    def match_from(start: int, index: int) -> bool:
        if index == len(parts):
            return True
        part = parts[index]
        stop = len(seq) if index == 0 else min(len(seq), start + MAX_GAP + 1)
        if not part:
            return match_from(start, index + 1)
        i = start - 1
        while (i := _at(seq, part, i + 1, stop)) >= 0:
            if match_from(i + len(part), index + 1):
                return True
        return False

    return match_from(0, 0)


@lru_cache(maxsize=1)
def _lexicon() -> tuple[dict[str, str], tuple[tuple[tuple[str, ...], str, frozenset[str]], ...]]:
    words: dict[str, str] = {}
    idioms: list[tuple[tuple[str, ...], str, frozenset[str]]] = []
    for key, value in lexicon.SYNONYMS.items():
        stems = phrase(key)
        if len(stems) == 1:
            words[stems[0]] = stem(value)
        else:
            over = frozenset(stem(v) for v in lexicon.SUPERSEDES.get(key, ()))
            idioms.append((stems, stem(value), over))
    return words, tuple(idioms)


#: where a question ends, for idioms that only mean something last ("checkout ok?")
END = "$"


def canonical(stems: list[str], *, asked: bool = False) -> list[str]:
    """``stems`` in the lexicon's words (see :attr:`Parsed.canon`); ``asked``: the request
    ends with "?", which an idiom may end with (``$``: "ok $" is "checkout ok?", not "sounds
    ok")."""
    words, idioms = _lexicon()
    out = [words.get(s, s) for s in stems]
    extra: list[str] = []
    present = set(out)
    ended = [*stems, END] if asked and len(stems) > 1 else stems
    cancelled: set[str] = set()
    for idiom, value, over in idioms:
        if value not in present and value not in extra and contains(ended, idiom):
            extra.append(value)
            cancelled |= over  # "turn it off and on again": a restart, not "turn * off"
    extra = [v for v in extra if v not in cancelled]
    if extra:
        return [*out, "|", *extra]
    return out if out != stems else stems


# -- argument extractors --------------------------------------------------------------------

_NS_PATTERNS = [
    re.compile(r"(?:^|\s)(?:-n|--namespace(?:=|\s))\s*([a-z0-9][a-z0-9-]*)", re.I),
    re.compile(r"\bnamespace[:=\s]+([a-z0-9][a-z0-9-]*)", re.I),
    re.compile(r"\bns[:=\s]+([a-z0-9][a-z0-9-]*)", re.I),
    re.compile(r"\b([a-z0-9][a-z0-9-]*)\s+(?:namespace|ns)\b", re.I),
    re.compile(r"\b(?:in|within|across)\s+([a-z0-9][a-z0-9-]*)\b", re.I),
    re.compile(r"\bfrom\s+([a-z0-9][a-z0-9-]*)\b", re.I),
    re.compile(r"\bon\s+([a-z0-9][a-z0-9-]*)\b", re.I),
    re.compile(r"^\s*([a-z0-9][a-z0-9-]*)\s*:\s+\S", re.I),  # "shop: bounce payments"
    re.compile(r"\(\s*([a-z0-9][a-z0-9-]*)\s*\)", re.I),  # "restart checkout (shop)"
]
#: words that open a request with a colon without naming a namespace ("fyi: ...", "q: ...")
_NOT_A_PREFIX = frozenset(
    {
        "query", "promql", "logql", "help", "fyi", "note", "alert", "alarm", "urgent",
        "question", "q", "re", "ps", "btw", "update", "context", "ask", "eval", "graph",
        "plot", "chart", "reason", "comment", "why", "error", "errors", "logs", "todo", "ok",
        "incident", "page", "edit",
    }
)  # fmt: skip
#: words before "namespace" that name none ("the namespace", "which namespace")
_NOT_NAMESPACES = frozenset(
    {
        "the", "this", "that", "which", "what", "a", "an", "any", "each", "every", "my",
        "our", "your", "their", "its", "same", "whole", "entire", "all", "one", "other",
        "another", "that's", "in", "of", "for", "from", "by", "per", "no", "new", "old", "given",
        "current", "right", "wrong", "k8s", "kubernetes",
    }
)  # fmt: skip
#: what "on X" names when no inventory says otherwise: an environment ("restart cart on
#: staging"); any other word is a service ("latency spike on search", "alerts on payments")
ENVIRONMENTS = frozenset(
    {
        "prod", "production", "staging", "stage", "stg", "dev", "development", "qa", "test",
        "testing", "uat", "preprod", "sandbox", "default", "kube-system", "monitoring", "live",
        "canary",
    }
)  # fmt: skip


def extract_namespace(
    parsed: Parsed, known: set[str] | None = None, *, guess: bool = True
) -> str | None:
    """``-n shop``, ``namespace shop``, ``shop namespace``, or ``in shop`` (not "in the last").
    With known namespaces, a bare word that is one of them also counts. ``guess=False``:
    only the forms that say it is a namespace (not "in shop", "on prod")."""
    option = parsed.flags.get("namespace", "").lower()
    if re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", option):
        return option
    text = parsed.rest
    for i, pattern in enumerate(_NS_PATTERNS if guess else _NS_PATTERNS[:4]):
        for m in pattern.finditer(text):
            value = m.group(1).lower()
            if re.fullmatch(r"\d+\w*", value) or (
                stem(value) in STOPWORDS and (i != 3 or value in _NOT_NAMESPACES)
            ):
                continue  # ("the migration namespace" names one; "the namespace" does not)
            if i >= 4 and known and value not in known:
                continue
            if i == 6 and not known and value not in ENVIRONMENTS:
                continue
            if i == 7 and value in _NOT_A_PREFIX:
                continue
            if i >= 4 and any(d.start <= m.start(1) < d.end for d in parsed.durations):
                continue
            return value
    if known and guess:
        for token in parsed.tokens:
            if token.lower() in known:
                return token.lower()
    if guess and not known:  # "cart pods staging": an environment's name said bare
        for token in parsed.tokens:
            if token.lower() in ENVIRONMENTS and token.lower() not in ("default", "live"):
                return token.lower()
    return None


def extract_kind(parsed: Parsed) -> str | None:
    for token in parsed.tokens:
        kind = KIND_ALIASES.get(token.lower())
        if kind:
            return kind
    return None


def extract_number(parsed: Parsed, patterns: list[str]) -> int | None:
    for pattern in patterns:
        m = re.search(pattern, parsed.rest, re.I)
        if m:
            return int(m.group(1))
    return None


def extract_since(parsed: Parsed) -> str | None:
    """The duration introduced by last/past/since/over (else the only duration there is)."""
    for d in parsed.durations:
        if d.context in _CONTEXT_SINCE:
            return d.value
    if len(parsed.durations) == 1 and parsed.durations[0].context != "for":
        return parsed.durations[0].value
    return None


def extract_for_duration(parsed: Parsed) -> str | None:
    """The duration introduced by "for" (a silence's length), else the first one."""
    for d in parsed.durations:
        if d.context == "for":
            return d.value
    return parsed.durations[0].value if parsed.durations else None


_MATCHER = re.compile(r'\b([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"?([^",\s}]+)"?')
_LABEL_NATURAL = re.compile(rf"\b({'|'.join(LABEL_WORDS)})\s+([A-Za-z0-9][\w.-]*)", re.I)
ALERTNAME = re.compile(r"\b([A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+)\b")


def extract_matchers(parsed: Parsed, alertnames: set[str] | None = None) -> dict[str, str]:
    """Equality matchers from ``label=value``, "service checkout", severity words and
    CamelCase alert names (``HighErrorRate`` -> ``alertname``)."""
    out: dict[str, str] = {}
    text = parsed.rest
    for m in _MATCHER.finditer(text):
        out[m.group(1)] = m.group(3)
    for m in _LABEL_NATURAL.finditer(text):
        label, value = m.group(1).lower(), m.group(2)
        if label == "environment":
            label = "env"
        if stem(value) in STOPWORDS or value.lower() in ("alerts", "alert", "for"):
            continue
        out.setdefault(label, value)
    for token in parsed.tokens:
        if token.lower() in SEVERITIES and "severity" not in out:
            out["severity"] = SEVERITIES[token.lower()]
    if "alertname" not in out:
        camel = ALERTNAME.search(text)
        if camel:
            out["alertname"] = camel.group(1)
        elif alertnames:
            lowered = {a.lower(): a for a in alertnames}
            for token in parsed.tokens:
                if token.lower() in lowered:
                    out["alertname"] = lowered[token.lower()]
                    break
    return out


def extract_comment(parsed: Parsed) -> str | None:
    m = re.search(r"(?:,|;| - |\bbecause\b|\breason:?|\bcomment:?)\s*(.+)$", parsed.rest, re.I)
    if not m:
        return None
    comment = m.group(1).strip().rstrip(".")
    for d in parsed.durations:  # "..., for 2h" is not a comment
        if comment.lower().endswith(parsed.rest[d.start : d.end].lower()) and len(comment) < 12:
            return None
    return comment or None


@lru_cache(maxsize=4096)
def _typo(word: str, pool: frozenset[str]) -> str | None:
    return lexicon.typo_of(word, pool, stem)


def candidate_names(
    parsed: Parsed, vocabulary: AbstractSet[str], skip: AbstractSet[str]
) -> list[str]:
    """Words that could name a workload/service: not stop words, not skill vocabulary, not
    numbers, durations, kinds, or anything in ``skip`` (the namespace, label values...)."""
    out = []
    spans = [(d.start, d.end) for d in parsed.durations]
    pool = vocabulary if isinstance(vocabulary, frozenset) else frozenset(vocabulary)
    named = placed_names(parsed.rest, skip)
    for m in WORD.finditer(parsed.rest):
        token = m.group(0)
        low = token.lower()
        if any(s <= m.start() < e for s, e in spans):
            continue
        if low in skip or low in STOPWORDS or low in vocabulary:
            continue
        if low in named and shortened(low):
            pass  # "describe deployment hist in shop": a short form placed as a name is one
        elif stem(low) in STOPWORDS or stem(low) in vocabulary:
            continue
        elif _typo(stem(low), pool):
            continue  # "restrat orders": a misspelt skill word, not a name
        if low in KIND_ALIASES or low in SEVERITIES or low in lexicon.NUMBERS:
            continue
        if re.fullmatch(r"[\d.]+|\w|\d{1,2}(?::\d\d)?(?:am|pm)|\d{1,2}:\d\d", low):
            continue  # a number, a letter, a time of day ("since the deploy at 2pm")
        if "=" in token or (":" in token and not re.match(r"^[a-z]+:[\w.-]+$", low)):
            continue
        before = parsed.rest[max(0, m.start() - 40) : m.start()].rstrip()
        if before.endswith(("-n", "--namespace", "namespace", "ns")):
            continue
        place = _place(before)
        if _opens_as_verb(parsed.rest, m):
            place = -1  # "figure out why ...", "stream the checkout logs": a verb opens it
        elif re.search(r"\bto$", before, re.I) and _TO_VERB.match(parsed.rest[m.end() :]):
            place = -1  # "sorry to bother you", "i'd like to know which ...": a verb
        token = token.rstrip(".,")
        if token.istitle() or token.isupper():
            token = token.lower()  # "Restart Checkout In Shop": names are lower case
        out.append((token, place))
    # "my app, it's called pdf-renderer", "a service named ledger": said to be its name
    called = {
        m.group(1).lower()
        for m in re.finditer(r"\b(?:called|named)\s+([\w.-]+)", parsed.rest, re.I)
    }
    ranked = sorted(
        out,
        key=lambda found: (
            found[0].lower() not in called,
            found[0].lower() not in named,
            -found[1],
        ),
    )
    return [name for name, _ in ranked]


def shortened(word: str) -> bool:
    """Whether ``word`` is a short form of a skill word: an abbreviation ("hist", "reps") or a
    word with its vowels dropped ("strt", "rstrt"), which a name may just as well be."""
    low = word.lower()
    vowels = any(c in "aeiou" for c in low[1:])
    return low in lexicon.ABBREVIATIONS or (len(low) >= lexicon.SKELETON_MIN and not vowels)


def placed_names(rest: str, skip: AbstractSet[str] = frozenset()) -> set[str]:
    """The words ``rest`` places as names: right before a kind ("the checkout pods",
    "payments deployment") or after one ("the deployment quote-engine"), or placed in a
    namespace of ``skip`` ("scale pixel-tracker in the growth namespace", "session-broker in
    identity")."""
    kinds = "|".join(re.escape(k) for k in KIND_ALIASES)
    named = {
        m.group(1).lower()
        for m in re.finditer(rf"\b([\w.-]+)\s+(?:{kinds})\b{_NO_KIND_AFTER}", rest, re.I)
    }
    named |= {
        m.group(1).lower()
        for m in re.finditer(rf"\b(?:{kinds})\s+([\w.-]+)", rest, re.I)
        if m.group(1).lower() not in KIND_ALIASES
    }
    if places := [re.escape(w) for w in skip if re.fullmatch(r"[a-z0-9][a-z0-9-]*", w)]:
        homes = "|".join(places)
        named |= {
            m.group(1).lower()
            for m in re.finditer(rf"\b([\w.-]+)\s+(?:in|on)\s+(?:the\s+)?(?:{homes})\b", rest, re.I)
        }
    return named


#: a kind's word in a compound noun names no kind ("the datadog service check for cart", "the
#: service account of x", "node pool"): the word before it names no workload
_NO_KIND_AFTER = (
    r"(?!\s+(?:checks?|accounts?|mesh|level|maps?|catalog(?:ue)?|owners?|desk|pools?|"
    r"security|monitors?)\b)"
)


_SLOT_BEFORE = re.compile(
    r"(?:\b(?:of|for|from|on|about|with|to)|\b(?:why|how|what)\s+(?:is|are|does|do|did|was|has)"
    r"|\bwhat's|\bhow's|^\s*(?:is|are))\s+(?:the\s+|our\s+|my\s+)?$",
    re.I,
)
_SLOT_KIND = re.compile(
    rf"^\s+(?:{'|'.join(re.escape(k) for k in KIND_ALIASES)}|logs?|service|app)\b", re.I
)
_SLOT_SUBJECT = re.compile(r"^\s+(?:is|are|was|has|keeps?|seems?)\s", re.I)


def slot_names(parsed: Parsed, skip: set[str], exclude: set[str]) -> list[str]:
    """Skill words that stand where a name does, for when no other word names anything:
    before a kind or "logs" ("the search pods", "search logs"), after of/for/from ("logs for
    search") or after a word of ``exclude`` (the skill's own words: "scale search to 0"), or
    as the subject that opens the request ("search is throwing 500s"). Words of ``exclude``
    and of ``skip`` never are names."""
    out = []
    spans = [(d.start, d.end) for d in parsed.durations]
    for m in WORD.finditer(parsed.rest):
        token, low = m.group(0), m.group(0).lower()
        if any(s <= m.start() < e for s, e in spans) or low in skip:
            continue
        root = stem(low)
        if root in STOPWORDS or root in exclude or low in KIND_ALIASES:
            continue
        if low in SEVERITIES or low in lexicon.NUMBERS or not re.fullmatch(r"[a-z][a-z0-9-]+", low):
            continue
        before = parsed.rest[max(0, m.start() - 40) : m.start()]
        after = parsed.rest[m.end() : m.end() + 40]
        opens = not before.strip() or before.strip().lower() == "the"
        previous = before.split()[-2:]
        if previous and previous[-1].lower() == "the":
            previous = previous[:-1]
        if (
            (previous and stem(previous[-1]) in exclude)  # "scale search to 0"
            or _SLOT_BEFORE.search(before)
            or _SLOT_KIND.match(after)
            or (opens and _SLOT_SUBJECT.match(after))
        ):
            out.append(token)
    return out


def _opens_as_verb(text: str, m: re.Match[str]) -> bool:
    return not _LEAD_IN.sub("", text[: m.start()]) and bool(_VERB_NEXT.match(text[m.end() :]))


def opening_verb(parsed: Parsed) -> str | None:
    """The word that opens the request as its verb ("add more replicas to search": "add"),
    which names nothing."""
    lead = _LEAD_IN.match(parsed.rest)  # "could you summarise the ...": "summarise"
    m = WORD.search(parsed.rest, lead.end() if lead else 0)
    return m.group(0).lower() if m and _opens_as_verb(parsed.rest, m) else None


#: what may stand before the first word of a request ("@opsbot", "please", "can you")
_LEAD_IN = re.compile(
    r"^\s*(?:(?:@?opsbot|hey|hi|ok|okay|please|pls|plz|can you|could you|would you|just)"
    r"[\s,:]+)*",
    re.I,
)
#: words that follow a verb, not a name ("figure out", "stream the logs", "pull up")
_VERB_NEXT = re.compile(
    r"\s+(?:the|a|an|out|up|me|us|all|my|our|its|their|this|that|these|those|some|any|"
    r"every|through|over|into|more|less|another|extra)\b",
    re.I,
)
#: what follows a verb after "to" ("to bother you", "to know which"), not a name
_TO_VERB = re.compile(
    r"\s+(?:you|me|us|them|him|her|it|which|what|why|how|whether|if|this|that|these|those|"
    r"our|my|your|their|the|a|an)\b",
    re.I,
)
_OBJECT = re.compile(r"\b(?:of|for|from|on|about|to|with|at)(?:\s+(?:the|a|an|our|my|all))?$", re.I)
_SUBJECT = re.compile(r"\b(?:i|we|you|they|pls|please)$", re.I)


def _place(before: str) -> int:
    """How much the words before a candidate make it a name: 1 after a preposition ("logs
    for payments"), -1 right after a subject, where a verb stands ("can you grab ...", "i
    think ..."), else 0."""
    if _OBJECT.search(before):
        return 1
    if _SUBJECT.search(before):
        return -1
    return 0
