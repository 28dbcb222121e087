"""Engine messages as Discord messages: embeds, attachments and buttons, within Discord's
limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits):
10 embeds per message; an embed's title 256 characters, description 4,096, 25 fields of a
256-character name and a 1,024-character value, footer 2,048, author 256; and all of that, over
all of a message's embeds, at most 6,000 characters (:func:`embed_size` counts it as Discord
does). What does not fit is attached whole as ``output.txt`` and the message shows its start.

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
MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
MAX_FOOTER = 2048
MAX_TOTAL = 6000
MAX_CONTENT = 2000
OUTPUT = "output.txt"
REST = "\n… (the rest is attached as output.txt)"
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


def embed_size(embed: discord.Embed) -> int:
    """The characters of ``embed`` that count towards Discord's 6,000 per message: title,
    description, field names and values, footer text, author name."""
    return (
        len(embed.title or "")
        + len(embed.description or "")
        + sum(len(f.name or "") + len(f.value or "") for f in embed.fields)
        + len(embed.footer.text or "")
        + len(embed.author.name or "")
    )


def _cut(text: str, size: int) -> str:
    """The start of ``text`` in ``size`` characters, a code block left open closed again."""
    if len(text) <= size:
        return text
    cut = text[: max(0, size - 4)]
    return cut + "\n```" if cut.count("```") % 2 else cut


def _file(name: str, text: str) -> discord.File:
    return discord.File(io.BytesIO(text.encode()), filename=name)


def render(message: Message) -> Rendered:
    out = Rendered()
    parts: list[str] = []
    fields: list[tuple[str, str]] = []
    as_text: list[str] = []  # the tables shown as fields, as text (when fields do not fit)
    images: list[discord.Embed] = []
    colour = COLOURS.get(message.step)
    for block in message.blocks:
        if isinstance(block, Text):
            parts.append(markdown(block.text))
        elif isinstance(block, Code):
            parts.append(_code(block.code))
        elif isinstance(block, Table):
            shown = [(escape(str(r[0])), escape(str(r[1]))) for r in block.rows if len(r) >= 2]
            if (
                len(block.columns) == 2
                and 0 < len(block.rows) <= MAX_FIELDS
                and not block.note
                and len(shown) == len(block.rows)
                and all(
                    0 < len(n) <= MAX_FIELD_NAME and 0 < len(v) <= MAX_FIELD_VALUE for n, v in shown
                )
            ):
                fields.extend(shown)
                as_text.append(_table_text(block))
            else:
                parts.append(_table_text(block))
        elif isinstance(block, Image):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", block.title)[:60] + ".png"
            out.files.append(discord.File(io.BytesIO(block.data), filename=name))
            embed = discord.Embed(title=block.title[:MAX_TITLE], colour=colour)
            embed.set_image(url=f"attachment://{name}")
            images.append(embed)
        elif isinstance(block, ApprovalCard):
            out.card = block
            parts.append(card_text(block))
        elif isinstance(block, ActionButton) and block.id not in {a.id for a in out.actions}:
            out.actions.append(block)
    who = f" · {message.actor}" if message.actor else ""
    footer = f"{message.step.value}{who}"[:MAX_FOOTER]
    text = "\n".join(parts)
    fixed = sum(embed_size(e) for e in images[: MAX_EMBEDS - 1]) + len(footer)
    slots = MAX_EMBEDS - min(len(images), MAX_EMBEDS - 1)
    needed = len(text) + sum(len(n) + len(v) for n, v in fields)
    if (
        len(images) >= MAX_EMBEDS
        or fixed + needed > MAX_TOTAL
        or len(text) > MAX_DESCRIPTION * slots
        or len(fields) > MAX_FIELDS
    ):  # show the start, attach all of it
        out.files.append(_file(OUTPUT, message.plain))
        text = "\n".join([*parts, *as_text]) if fields else text
        fields = []
        text = _cut(text, min(MAX_DESCRIPTION, MAX_TOTAL - fixed) - len(REST)) + REST
    chunks = _chunks(text, MAX_DESCRIPTION) if text else []
    embeds = [discord.Embed(description=chunk, colour=colour) for chunk in chunks]
    if fields:
        if not embeds:
            embeds.append(discord.Embed(colour=colour))
        for name, value in fields:
            embeds[-1].add_field(name=name, value=value, inline=True)
    if embeds:
        embeds[-1].set_footer(text=footer)
        embeds[-1].timestamp = message.at
    out.embeds = [*embeds, *images][:MAX_EMBEDS]
    return out
