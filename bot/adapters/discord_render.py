"""Engine messages as Discord messages: embeds, attachments and buttons, within Discord's
limits (https://discord.com/developers/docs/resources/message): 2000 characters of content,
10 embeds per message, 4096 characters per embed description, 25 fields of 1024 characters,
6000 characters per message's embeds. What does not fit is attached as ``output.txt``.

Text is converted from the neutral markup by :func:`markdown` (Discord's markdown is mostly
the same; literal markdown characters are backslash-escaped). An approval card becomes its
lines in the description; its buttons, and those of suggested actions, are the adapter's
(``Rendered.card`` and ``Rendered.actions`` say which).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import discord

from opsbot.adapters.markup import Dialect, card_votes, convert, mention
from opsbot.model import ActionButton, ApprovalCard, Code, Image, Message, Step, Table, Text

MAX_EMBEDS = 10
MAX_DESCRIPTION = 4096
MAX_FIELDS = 25
MAX_FIELD_VALUE = 1024
MAX_TOTAL = 6000
COLOURS = {
    Step.RESULT: 0x2ECC71,
    Step.ERROR: 0xE74C3C,
    Step.APPROVAL: 0xF1C40F,
    Step.POLICY: 0x9B59B6,
    Step.PLAN: 0x95A5A6,
    Step.ANSWER: 0x3498DB,
}
PREFIX = "discord"
_SPECIAL = re.compile(r"[\\*_~|`]|(?:(?<=\n)|^)[>#-]")


@dataclass
class Rendered:
    embeds: list[discord.Embed] = field(default_factory=list)
    files: list[discord.File] = field(default_factory=list)
    #: the approval card shown (its buttons are added while it is open)
    card: ApprovalCard | None = None
    #: suggested actions to show as buttons
    actions: list[ActionButton] = field(default_factory=list)


def escape(text: str) -> str:
    """Plain text that Discord shows as written (markdown characters backslash-escaped)."""
    return _SPECIAL.sub(lambda m: "\\" + m[0], text)


DISCORD = Dialect(
    literal=escape,
    bold=lambda inner: f"**{inner}**",
    italic=lambda inner: f"_{inner}_",
    code=lambda code: f"`{code}`",
    link=lambda label, url: f"[{label}]({url})",
)


def markdown(text: str) -> str:
    """Neutral markup -> Discord markdown: ``**b**``, ``_i_``, `` `c` `` and ``[l](u)`` are
    Discord's own; a literal ``*`` (or ``_``, ``~``, ``|``, `` ` ``) is escaped, so it shows."""
    return convert(text, DISCORD)


def _table_text(table: Table) -> str:
    lines = table.aligned(32)
    return (
        "```\n"
        + lines.replace("```", "'''")
        + "\n```"
        + (f"\n*{escape(table.note)}*" if table.note else "")
    )


def _code(code: str) -> str:
    return "```\n" + code.replace("```", "'''") + "\n```"


def card_text(card: ApprovalCard) -> str:
    """The approval card's lines (head, preview, status, votes) as Discord markdown."""
    parts = [markdown(card.head())]
    if card.preview:
        parts.append(_code(card.preview))
    if card.status:
        parts.append(markdown(card.status))
    votes = card_votes(card, mention(PREFIX))
    if votes:
        parts.append(markdown(votes))
    return "\n".join(parts)


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def render(message: Message) -> Rendered:
    out = Rendered()
    parts: list[str] = []
    fields: list[tuple[str, str]] = []
    for block in message.blocks:
        if isinstance(block, Text):
            parts.append(markdown(block.text))
        elif isinstance(block, Code):
            parts.append(_code(block.code))
        elif isinstance(block, Table):
            if len(block.columns) == 2 and len(block.rows) <= MAX_FIELDS and not block.note:
                fields.extend(
                    (escape(str(r[0]))[:256] or "-", escape(str(r[1]))[:MAX_FIELD_VALUE] or "-")
                    for r in block.rows
                )
            else:
                parts.append(_table_text(block))
        elif isinstance(block, Image):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", block.title)[:60] + ".png"
            out.files.append(discord.File(io.BytesIO(block.data), filename=name))
            embed = discord.Embed(title=block.title[:256], colour=COLOURS.get(message.step))
            embed.set_image(url=f"attachment://{name}")
            out.embeds.append(embed)
        elif isinstance(block, ApprovalCard):
            out.card = block
            parts.append(card_text(block))
        elif isinstance(block, ActionButton) and block.id not in {a.id for a in out.actions}:
            out.actions.append(block)
    text = "\n".join(parts)
    budget = MAX_TOTAL - sum(len(e.title or "") for e in out.embeds)
    if len(text) > min(budget, MAX_DESCRIPTION * (MAX_EMBEDS - len(out.embeds))):
        out.files.append(discord.File(io.BytesIO(text.encode()), filename="output.txt"))
        text = text[: MAX_DESCRIPTION - 80] + "\n… (the rest is attached as output.txt)"
    chunks = _chunks(text, MAX_DESCRIPTION) if text else []
    embeds = [
        discord.Embed(description=chunk, colour=COLOURS.get(message.step)) for chunk in chunks
    ]
    if fields:
        if not embeds:
            embeds.append(discord.Embed(colour=COLOURS.get(message.step)))
        for name, value in fields[:MAX_FIELDS]:
            embeds[-1].add_field(name=name, value=value, inline=True)
    if embeds:
        who = f" · {message.actor}" if message.actor else ""
        embeds[-1].set_footer(text=f"{message.step.value}{who}")
        embeds[-1].timestamp = message.at
    out.embeds = [*embeds, *out.embeds][:MAX_EMBEDS]
    return out
