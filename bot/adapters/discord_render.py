"""Engine messages as Discord messages: embeds, attachments and buttons, within Discord's
limits (https://discord.com/developers/docs/resources/message): 2000 characters of content,
10 embeds per message, 4096 characters per embed description, 25 fields of 1024 characters,
6000 characters per message's embeds. What does not fit is attached as ``output.txt``.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import discord
from opsbot.model import Buttons, Code, Image, Message, Step, Table, Text

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


@dataclass
class Rendered:
    embeds: list[discord.Embed] = field(default_factory=list)
    files: list[discord.File] = field(default_factory=list)
    approval_ids: list[str] = field(default_factory=list)


def _table_text(table: Table) -> str:
    lines = table.aligned(32)
    return (
        "```\n"
        + lines.replace("```", "'''")
        + "\n```"
        + (f"\n*{table.note}*" if table.note else "")
    )


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def render(message: Message) -> Rendered:
    out = Rendered()
    parts: list[str] = []
    fields: list[tuple[str, str]] = []
    for block in message.blocks:
        if isinstance(block, Text):
            parts.append(block.text)
        elif isinstance(block, Code):
            parts.append("```\n" + block.code.replace("```", "'''") + "\n```")
        elif isinstance(block, Table):
            if len(block.columns) == 2 and len(block.rows) <= MAX_FIELDS and not block.note:
                fields.extend(
                    (str(r[0])[:256] or "-", str(r[1])[:MAX_FIELD_VALUE] or "-") for r in block.rows
                )
            else:
                parts.append(_table_text(block))
        elif isinstance(block, Image):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", block.title)[:60] + ".png"
            out.files.append(discord.File(io.BytesIO(block.data), filename=name))
            embed = discord.Embed(title=block.title[:256], colour=COLOURS.get(message.step))
            embed.set_image(url=f"attachment://{name}")
            out.embeds.append(embed)
        elif isinstance(block, Buttons):
            out.approval_ids.extend(dict.fromkeys(b.value for b in block.buttons))
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
