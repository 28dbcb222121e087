"""The offline router's lexicon: how SREs say things, mapped to the words skills list.

A skill's ``keywords`` name the words of its own domain ("restart", "rollback", "health");
people say "bounce the pods", "kick cart", "take checkout down to zero", "is payments ok?",
"RED metrics for cart". :data:`SYNONYMS` maps such words and idioms (compared by stem; ``*``
stands for up to three words) to the word a skill's keywords use, so a request that says
"bounce" scores as one that says "restart": a word is replaced in place ("lift the mute"
reads as "lift the silence"), an idiom adds its word. Whether a write is asked for is still
decided by :mod:`opsbot.intent.speech` alone, so a synonym of a write is always one of its
write words (a word that is not, such as "previous version", is no synonym of "rollback").

:data:`NUMBERS` reads counts written as words ("down to zero", "three replicas");
:data:`RANKING` and :data:`CHART` are the words of a ranking ("top 5", "which ... most") and
of a chart, which PromQL recipes answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache

from rapidfuzz import process
from rapidfuzz.distance import OSA

#: everyday word or idiom -> the word skills' keywords use (see module doc)
SYNONYMS: dict[str, str] = {
    # k8s.restart
    "bounce": "restart",
    "kick": "restart",
    "cycle": "restart",
    "recycle": "restart",
    "reboot": "restart",
    "redeploy": "restart",
    "kill * pod": "restart",  # "kill the checkout pods so they come back": they are recreated
    "nudge": "restart",
    "rollout restart": "restart",
    "rolling restart": "restart",
    "force * new deployment": "restart",  # ECS's "force new deployment": new tasks, same spec
    "off and on": "restart",  # "turn it off and on again" (not "switch * off": see SUPERSEDES)
    # k8s.scale
    "take * down": "scale",
    "switch * off": "scale",  # "switch off the legacy-importer": to zero replicas
    "copy": "replica",  # "run 10 copies of signup-api"
    "spin * down": "scale",
    "bring * up to": "scale",  # "bring checkout back up to 3" (not "bring up the logs")
    "bring * down to": "scale",
    "reduce * to": "scale",  # "reduce checkout to 2 pods"
    "increase * to": "scale",
    "shrink * to": "scale",
    "grow * to": "scale",
    "shut * down": "scale",  # to zero replicas (opsbot.intent.arguments reads the count)
    "shut * off": "scale",
    "scale * out": "scale",
    "scale * in": "scale",
    "downscale": "scale",
    "upscale": "scale",
    "resize": "scale",
    "bump": "scale",  # "bump checkout to 4"
    "desired count": "replica",  # ECS: "set desired count for billing-worker to 6"
    "task count": "replica",  # ECS/Nomad: tasks are what pods are
    # k8s.rollback
    "rollout undo": "rollback",
    "roll * back": "rollback",
    "revert": "rollback",
    "put * back": "rollback",  # "put cart back to how it was"
    "set * back": "rollback",
    # "go back to the previous revision of orders" (not "go back to the logs")
    "go back to * previous": "rollback",
    "go back to * last good": "rollback",
    "go back to * old": "rollback",
    "go back to * earlier": "rollback",
    "go back * version": "rollback",
    "go back * revision": "rollback",
    "go back * release": "rollback",
    # service.health
    "ok $": "health",  # "checkout ok?" ("$": a question ends there)
    "okay $": "health",
    "healthy $": "health",
    "be * up $": "health",  # "is payments up?"
    "be * ok": "health",
    "be * okay": "health",
    "be * fine": "health",
    "be * alright": "health",
    "be * all right": "health",
    "look * good": "health",  # not "be * good": "is it a good idea to bounce it?"
    "be * alive": "health",
    "red metric": "health",
    "red signal": "health",
    "golden signal": "health",
    "red dashboard": "health",
    "red stat": "health",
    "how be * look": "health",
    "how be * do": "health",
    "how be * hold": "health",
    # incident.triage: how a service is said to misbehave
    "be * down": "broken",  # "is checkout down?", "payments is down!!"
    "go down": "broken",  # "payments went down"
    "be dead": "broken",
    "on fire": "broken",
    "look * bad": "broken",  # "payments latency looks bad, why"
    "look * weird": "broken",
    "look * awful": "broken",
    "leak": "broken",  # "cart is leaking memory"
    "weird": "broken",  # "anything weird in prod?"
    "flaky": "broken",
    "through the roof": "broken",  # "orders p99 is through the roof"
    "overload": "broken",  # "is search overloaded?"
    "broke": "broken",  # "what broke payments?"
    "root-cause": "triage",
    "rca": "triage",
    "strange": "broken",
    "fall over": "broken",
    "fell over": "broken",
    "flapping": "broken",
    "degraded": "broken",
    "unreachable": "broken",
    "misbehaving": "broken",
    # k8s.rollout.status
    "go out": "rollout",  # "did my new version finish going out?": a rollout, said plainly
    "go through": "finished",  # "did the orders rollout go through?"
    "fully roll out": "finished",  # "is the checkout deployment fully rolled out?"
    "roll out $": "finished",
    # k8s.rollout.history
    "previous version": "history",  # "what was the previous version of checkout?" (asked)
    "be release": "history",  # "which versions have been released?", "what was released"
    # k8s.events
    "what * be happen": "event",  # "what has been happening in sandbox?"
    # alerts
    "go off": "firing",  # "are there any alerts going off?"
    # Datadog's monitors are alerts; one that fires is "triggered" or "in alert"
    "monitor * trigger": "firing",
    "trigger * monitor": "firing",
    "monitor * in alert": "firing",
    "alarm": "alert",
    "pager": "alert",
    "paging": "alert",
    "page": "alert",
    # alerts.silence
    "mute": "silence",
    "snooze": "silence",
    "shush": "silence",
    "quiet": "silence",  # "quiet the checkout alerts for an hour"
    "hush": "silence",
    "ack": "silence",  # acknowledge an alert: Alertmanager's way is a silence
    "acknowledge": "silence",
    "turn off * alert": "silence",  # "turn off the checkout alerts for 1h"
    "turn * alert * off": "silence",
    # logs
    "stdout": "log",
    "stderr": "log",
    "logging": "log",
    "print": "log",  # "what is my app printing (out)?", "what did cart print"
    # errors
    "exception": "error",
    "stack trace": "error",
    "traceback": "error",
    "stacktrace": "error",
    "panic": "error",
    # logs.query: a line filter
    "find * in * log": "grep",  # 'find "NullPointerException" in the payments logs'
    "search * in * log": "grep",
    "look for * in * log": "grep",
    # prometheus.range: a chart as other tools call it (Grafana's panels, Datadog's timeseries)
    "timeseries": "graph",
    "time series": "graph",
    "panel of": "graph",
    # audit.search: what the bot did ("which rollbacks went through the bot", "done via opsbot")
    "through * bot": "audit",
    "go through * bot": "audit",  # not a rollout that went through (see SUPERSEDES)
    "via * bot": "audit",
    "through opsbot": "audit",
    "go through opsbot": "audit",
    "via opsbot": "audit",
    # approvals.pending
    "sign-off": "approval",  # "any requests pending sign-off from me?"
    "sign off": "approval",
    "signoff": "approval",
    # help: what the bot does with a topic ("what can you do with silences?")
    "what can you do with": "help",
    "what can i do with": "help",
    # describe
    "settings": "describe",  # "all the settings of the deployment badge-service"
    "configuration": "describe",
    "detail": "describe",
    "inspect": "describe",
    "spec": "describe",
    "get * yaml": "describe",
}

#: the words of :data:`SYNONYMS` that name a write (a write skill's keyword): every idiom
#: mapped to one is a write word of :mod:`opsbot.intent.speech` too (``WRITE_IDIOMS``), so
#: "off and on again for cart?" is a question about a restart, not a request with no verb
WRITE_WORDS = frozenset({"restart", "scale", "replica", "rollback", "silence", "unsilence"})

#: how on-call chat shortens words: the short form reads as the word ("rollout hist",
#: "prev version", "top errs", "mem of cart"), wherever words are compared (by stem)
ABBREVIATIONS: dict[str, str] = {
    "prev": "previous",
    "hist": "history",
    "err": "error",
    "errs": "errors",
    "evt": "event",
    "evts": "events",
    "msg": "message",
    "msgs": "messages",
    "reps": "replicas",
    "cfg": "config",
    "conn": "connection",
    "conns": "connections",
    "req": "request",
    "reqs": "requests",
    "resp": "response",
    "perf": "performance",
    "util": "utilization",
}

#: an idiom that, when said, cancels what a shorter one inside it adds ("turn it off and on
#: again" restarts; it does not switch it off)
SUPERSEDES: dict[str, tuple[str, ...]] = {
    "off and on": ("scale",),
    # "which rollbacks went through the bot": what the bot did, not a rollout that finished
    "go through * bot": ("finished",),
    "go through opsbot": ("finished",),
}

#: counts written as words
NUMBERS = {
    "zero": 0,
    "none": 0,
    "nothing": 0,
    "one": 1,
    "a single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "forty-five": 45,
    "fifty": 50,
    "sixty": 60,
    "ninety": 90,
    "hundred": 100,
    "a hundred": 100,
    "one hundred": 100,
    "two hundred": 200,
    "five hundred": 500,
    "a thousand": 1000,
    "a couple of": 2,
    "a couple": 2,
    "couple of": 2,
    "a few": 3,
}
NUMBER = r"(\d+|" + "|".join(sorted(NUMBERS, key=len, reverse=True)) + ")"


def number(word: str) -> int:
    """``"3"`` or ``"three"`` -> 3."""
    word = word.lower()
    return int(word) if word.isdigit() else NUMBERS[word]


#: words that rank ("top 5 pods by CPU", "which pods restart most", "highest memory")
RANKING = (
    "top", "most", "highest", "biggest", "largest", "heaviest", "hungriest", "worst",
    "slowest", "busiest",
)  # fmt: skip
#: words that rank from the bottom
LOWEST = ("lowest", "least", "smallest", "bottom")
#: words that ask for a chart
CHART = ("graph", "plot", "chart", "draw", "trend", "visualize", "visualise", "over time")


#: the shortest word read as a typo of a longer one ("restrat" for "restart")
TYPO_MIN = 5
#: the shortest word read as a typo at all: two letters swapped ("pdos", "lgos")
SWAP_MIN = 3
#: real words one letter away from a word skills use: never read as its typo
NOT_TYPOS = frozenset(
    {
        "stale", "remote", "listed", "drawn", "bounded", "empire", "scaly", "sealing",
        "mated", "mused", "trained", "gifted", "slush", "media", "broker", "stock", "chance",
        "charge", "clean", "least", "race", "start", "strong", "though", "trial",
    }
)  # fmt: skip


#: the shortest word read as one with its vowels dropped ("evnt" for "event")
SKELETON_MIN = 4


def _skeleton(word: str) -> str:
    """``word`` without the vowels after its first letter ("event" -> "evnt")."""
    return word[0] + "".join(c for c in word[1:] if c not in "aeiou")


@lru_cache(maxsize=64)
def _by_initial(words: frozenset[str]) -> dict[str, tuple[str, ...]]:
    index: dict[str, list[str]] = {}
    for w in words:
        if len(w) >= SWAP_MIN:
            index.setdefault(w[0], []).append(w)
    return {k: tuple(sorted(v)) for k, v in index.items()}


def typo_of(
    word: str, words: Iterable[str], stem: Callable[[str], str] | None = None
) -> str | None:
    """The word of ``words`` that ``word`` misspells, or None: one letter dropped, added,
    changed or two swapped ("restrat", "rollbak", "silense"), the first letter right, the
    word at least :data:`TYPO_MIN` long; a shorter one only with two letters swapped ("pdos",
    not "cart" for "chart"); or with the vowels after its first letter dropped ("evnt" for
    "event", "rstrt" for "restart"), when only one word fits. Another form of the same word
    is no typo ("scales", "cycles"), nor a longer word that starts with it ("scaler" is a
    name, not "scale")."""
    word = word.lower()
    if len(word) < SWAP_MIN or word in NOT_TYPOS:
        return None
    if stem is not None and any(stem(w) == word for w in NOT_TYPOS):
        return None  # a real word, given as its stem
    pool = words if isinstance(words, frozenset) else frozenset(words)
    if word in pool:
        return None
    near = _by_initial(pool).get(word[0], ())
    found = [str(m[0]) for m in process.extract(word, near, scorer=OSA.distance, score_cutoff=1)]
    if len(word) >= SKELETON_MIN and word == _skeleton(word):  # "evnts": vowels dropped
        bare = [m for m in near if len(m) > len(word) and _skeleton(m) == word]
        if len(bare) == 1:
            return bare[0]
    if len(word) < TYPO_MIN:
        found = [m for m in found if sorted(m) == sorted(word)]  # swapped letters only
    if not found or any(
        word.startswith(m) or (stem is not None and stem(word) == stem(m)) for m in found
    ):
        return None
    return found[0]
