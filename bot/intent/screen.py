"""Input the offline router cannot read as a request, answered briefly instead of routed.

:func:`screen` looks at the raw text before anything else: empty, binary-looking (control
characters, the replacement character, a long unbroken blob of base64 or hex), without a
single letter or digit (emoji, punctuation), or in a non-Latin script. :func:`foreign` tells
Latin-script text in another language (Spanish, French, German, Portuguese, Italian, Dutch)
by its function words; the router asks it only when nothing matched. Nothing here raises.
"""

from __future__ import annotations

import re
import unicodedata

from opsbot import wording

#: a request longer than this is not read whole (its start is, and the answer says so)
MAX_CHARS = 4000
#: how much of a long request is read
READ_CHARS = 2000

BINARY = (
    "That looks like binary or encoded data, not a request, so I did nothing with it. "
    "Say what you need in words, or type `help`."
)
NO_WORDS = "I read requests written in words; say what you need, or type `help`."
FOREIGN = (
    "I understand requests in English only. Try e.g. `show pods in shop` or "
    "`how is checkout doing?`, or type `help`."
)
TOO_LONG = (
    "That message is {n:,} characters long and I found no request in its first {read:,}. "
    "Send the request on its own (up to {max:,} characters); paste logs or alerts after it "
    "in the thread."
)
LONG_NOTE = "Your message is {n:,} characters long; I read only its first {read:,}."

_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{120,}")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FUNCTION_WORDS = _words(
    """
    el la los las un una unos unas del al que qué por para con sin está están es son pero
    como cómo cuál dónde por_qué muy también le les se mi
    le la les un une des du de est sont pas avec pour dans sur qui que quoi comment pourquoi
    où je tu il nous vous ils mon ma mes ce cette
    der die das den dem ein eine einen ist sind nicht mit für auf warum wie was wer wo ich
    du er wir ihr und oder aber zu im
    o os um uma não com para está estão por que porque como
    il lo gli una non con per perché come dove sono è che
    het een niet met voor waarom hoe wat waar ik jij zijn
    """
)
_ENGLISH = _words(
    """
    the a an is are was were be to of in on for with what why how which who where can could
    show list get tell me my our it this that and or not pods pod logs alerts service
    """
)


def screen(text: str) -> str | None:
    """A brief answer when ``text`` cannot be a request (see module doc), else None."""
    if not text.strip():
        return wording.EMPTY
    sample = text[:READ_CHARS]
    if _binary(sample):
        return BINARY
    letters = [c for c in sample if c.isalpha()]
    latin = sum(1 for c in letters if _latin(c))
    if len(letters) - latin >= 3 and latin / len(letters) < 0.5:
        return FOREIGN
    if latin < 2 and not any(c.isdigit() for c in sample):
        return NO_WORDS  # emoji, punctuation, a kaomoji
    return None


def unreadable(text: str) -> str | None:
    """The part of :func:`screen` that holds for every planner, a model included: empty or
    binary-looking text is answered without asking one (a model reads other languages, and
    a one-letter "y" in its conversation, so those stay the offline router's call)."""
    if not text.strip():
        return wording.EMPTY
    return BINARY if _binary(text[:READ_CHARS]) else None


def _binary(text: str) -> bool:
    if "\x00" in text or "\ufffd" in text:
        return True
    controls = sum(1 for c in text if unicodedata.category(c) == "Cc" and c not in "\n\r\t")
    if controls and controls / max(1, len(text)) > 0.02:
        return True
    blob = _BLOB.search(text)
    return blob is not None and len(blob.group(0)) > 0.5 * len(text.strip())


def _latin(char: str) -> bool:
    if char.isascii():
        return True
    try:
        return "LATIN" in unicodedata.name(char)
    except ValueError:
        return False


def foreign(text: str) -> bool:
    """Whether Latin-script ``text`` reads as another language than English."""
    words = [w.lower() for w in re.findall(r"[^\W\d_]+", text[:READ_CHARS])]
    theirs = sum(1 for w in words if w in _FUNCTION_WORDS and w not in _ENGLISH)
    ours = sum(1 for w in words if w in _ENGLISH)
    accented = any(not c.isascii() for c in text[:READ_CHARS] if c.isalpha())
    return (theirs >= 2 and theirs > ours) or (accented and theirs >= 1 and ours == 0)
