"""The neutral markup of :class:`opsbot.model.Text` (``**bold**``, ``_italic_``, `` `code` ``,
``[label](https://url)``; nothing else is special) and what every renderer shares about it.

Each platform converts with one small function (``slack_blocks.mrkdwn``,
``discord_render.markdown``, ``shell.to_rich``): a :class:`Dialect` says how that platform
writes each construct and how it keeps everything else literal; :func:`convert` walks the text.
The approval card's lines are here too, in the neutral markup, so every platform shows the
same card (each renderer only lays them out and adds its buttons).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from opsbot.model import ApprovalCard

NEUTRAL = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|\*\*(?P<bold>\S(?:[^\n]*?\S)?)\*\*"
    r"|(?<!\w)_(?P<italic>[^_\s](?:[^_\n]*?[^_\s])?)_(?!\w)"
    r"|\[(?P<label>[^\[\]\n]+)\]\((?P<url>https?://[^\s()<>\[\]]+)\)"
)


@dataclass(frozen=True)
class Dialect:
    """How one platform writes the neutral constructs. ``literal`` makes plain text show as
    itself there (escaping what that platform would otherwise treat as markup); ``bold``,
    ``italic`` and ``link`` get their inner text already converted; ``code`` gets it raw."""

    literal: Callable[[str], str]
    bold: Callable[[str], str]
    italic: Callable[[str], str]
    code: Callable[[str], str]
    link: Callable[[str, str], str]  # (converted label, url)


def convert(text: str, dialect: Dialect) -> str:
    """``text`` in the neutral markup, written in ``dialect``."""
    out: list[str] = []
    pos = 0
    for match in NEUTRAL.finditer(text):
        out.append(dialect.literal(text[pos : match.start()]))
        if match["code"] is not None:
            out.append(dialect.code(match["code"]))
        elif match["bold"] is not None:
            out.append(dialect.bold(convert(match["bold"], dialect)))
        elif match["italic"] is not None:
            out.append(dialect.italic(convert(match["italic"], dialect)))
        else:
            out.append(dialect.link(convert(match["label"], dialect), match["url"]))
        pos = match.end()
    out.append(dialect.literal(text[pos:]))
    return "".join(out)


def card_votes(card: ApprovalCard, who: Callable[[str], str]) -> str:
    """The votes so far as one line (empty without votes); ``who`` names a voter the way the
    platform mentions people (``slack:U1`` -> ``<@U1>``)."""
    approvers = [who(v.actor) for v in card.votes if v.verdict == "approve"]
    deniers = [who(v.actor) for v in card.votes if v.verdict == "deny"]
    parts = []
    if approvers:
        parts.append(f"approvals {len(approvers)}/{card.min_approvals}: {', '.join(approvers)}")
    if deniers:
        parts.append(f"denied by {', '.join(deniers)}")
    return "; ".join(parts)


def mention(prefix: str) -> Callable[[str], str]:
    """``who`` for :func:`card_votes`: ``<prefix>:<user>`` -> ``<@user>``, others unchanged."""

    def who(actor: str) -> str:
        platform, _, user = actor.partition(":")
        return f"<@{user}>" if platform == prefix and user else actor

    return who
