"""Engine messages as Slack Block Kit (https://api.slack.com/reference/block-kit/blocks).

Text -> ``section`` in mrkdwn (converted from the neutral markup by :func:`mrkdwn`); Code -> a
code block (PromQL/LogQL stay verbatim); Table -> ``section`` fields when small, else an
aligned code block, with its note as ``context``; an approval card -> its lines, the preview
as a code block, and Approve / Deny buttons (``value``: the approval id) only while it is
open; an action button -> an ``actions`` block with one button (``action_id``
``opsbot_action``, ``value``: the action's id). Images are uploaded separately
(``files_upload_v2``) and only named here. Slack's limits are respected
(https://docs.slack.dev/reference/block-kit/blocks): 50 blocks, 3,000 characters of section
text, 10 fields of 2,000 characters, 75 characters per button label. Nothing is cut silently:
long text is split over several sections; output that does not fit (a long table, long logs,
more than 50 blocks) is shown in part and attached whole as ``output.txt``; logs and other
code keep their newest (last) lines, a table its first rows.

Slack's rules for text (https://docs.slack.dev/messaging/formatting-message-text#escaping):
``&``, ``<`` and ``>`` are written as entities (mentions ``<@U…>`` that the adapter itself
writes are kept), and since mrkdwn has no escape character, a literal ``*``, ``_`` or ``~`` that
could open formatting gets a zero-width space before it. Text *from* Slack (events, slash
commands) arrives the same way: :func:`unescape` turns it back into what the person typed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from opsbot.adapters.markup import Dialect, card_votes, convert, mention
from opsbot.model import (
    ActionButton,
    ApprovalCard,
    ButtonStyle,
    Code,
    Image,
    Message,
    Step,
    Table,
    Text,
)

MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD = 2000
MAX_LABEL = 75
OUTPUT = "output.txt"
APPROVE, DENY, ACTION = "opsbot_approve", "opsbot_deny", "opsbot_action"
DENY_MODAL = "opsbot_deny_reason"
STEP_LABEL = {
    Step.PLAN: "plan",
    Step.POLICY: "policy",
    Step.APPROVAL: "approval",
    Step.RESULT: "result",
    Step.ERROR: "error",
    Step.ANSWER: "opsbot",
    Step.RECEIVED: "received",
}
PREFIX = "slack"
_SPECIAL = re.compile(r"(<@[UW][A-Z0-9]+>)|([&<>])")
_OPENER = re.compile(r"(?<![A-Za-z0-9])(?=[*_~]\S)")
_ENTITY = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MARKUP = re.compile(r"<([^<>\n]*)>")
_UNENTITY = re.compile(r"&(amp|lt|gt);")


@dataclass(frozen=True)
class Upload:
    """A file to upload into the thread with the message (a chart, or the whole output)."""

    filename: str
    title: str
    data: bytes


def _unwrap(match: re.Match[str]) -> str:
    inner = match[1]
    target, _, label = inner.partition("|")
    if target.startswith("@"):  # <@U123> or <@U123|name>
        return f"@{label or target[1:]}"
    if target.startswith("#"):  # <#C123|ops>
        return f"#{label or target[1:]}"
    if target.startswith("!"):  # <!here>, <!subteam^S1|@oncall>, <!date^...|fallback>
        if label:
            return label
        return "@" + target[1:].split("^", 1)[0]
    return label or target  # <https://x|x> -> what was typed; <https://x> -> the address


def unescape(text: str) -> str:
    """Text as Slack sends it (events, slash commands) -> as the person typed it: links,
    channels and mentions unwrapped (``<https://x|x>`` -> ``x``, ``<#C1|ops>`` -> ``#ops``,
    ``<@U1>`` -> ``@U1``), then ``&lt;`` ``&gt;`` ``&amp;`` decoded (last, so ``&amp;lt;``
    stays ``&lt;``). Strip the bot's own mention before calling this."""
    return _UNENTITY.sub(
        lambda m: {"amp": "&", "lt": "<", "gt": ">"}[m[1]], _MARKUP.sub(_unwrap, text)
    )


def escape(text: str) -> str:
    """``&``, ``<``, ``>`` as Slack's entities; the adapter's own ``<@U…>`` mentions kept."""
    return _SPECIAL.sub(lambda m: m[1] or _ENTITY[m[2]], text)


def _literal(text: str) -> str:
    return _OPENER.sub("\u200b", escape(text))


SLACK = Dialect(
    literal=_literal,
    bold=lambda inner: f"*{inner}*",
    italic=lambda inner: f"_{inner}_",
    code=lambda code: f"`{escape(code)}`",
    link=lambda label, url: f"<{escape(url).replace('|', '%7C')}|{label}>",
)


def mrkdwn(text: str) -> str:
    """Neutral markup -> Slack mrkdwn: ``**b**`` -> ``*b*``, ``_i_`` and `` `c` `` stay,
    ``[l](u)`` -> ``<u|l>``; everything else shows as written."""
    return convert(text, SLACK)


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` (mrkdwn) cut to ``limit`` with an ellipsis; never inside an entity."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&", len(cut) - 5)
    if amp >= 0 and ";" not in cut[amp:]:  # never cut an entity in half
        cut = cut[:amp]
    return cut + "…"


def _pieces(text: str, limit: int = MAX_TEXT) -> list[str]:
    """``text`` (mrkdwn) in pieces of at most ``limit`` characters, split between lines where
    it can be (a line that is longer on its own is split, never inside an entity)."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            cut = line[:limit]
            amp = cut.rfind("&", len(cut) - 5)
            if amp > 0 and ";" not in cut[amp:]:
                cut = cut[:amp]
            if current:
                pieces.append(current)
                current = ""
            pieces.append(cut)
            line = line[len(cut) :]
        joined = f"{current}\n{line}" if current else line
        if len(joined) > limit:
            pieces.append(current)
            current = line
        else:
            current = joined
    pieces.append(current)
    return [p for p in pieces if p.strip()] or [text[:limit] or " "]


def _fence(code: str) -> str:
    return escape(code.replace("```", "`\u200b``"))


def _fit(code: str, limit: int, *, tail: bool) -> tuple[str, int]:
    """The whole lines of ``code`` whose escaped, fenced text fits in ``limit``: the last
    ones (``tail``: logs, where the newest lines are last) or the first; and how many lines
    were left out."""
    lines = code.split("\n")
    kept: list[str] = []
    size = 6  # the fences
    for line in reversed(lines) if tail else lines:
        grown = size + len(_fence(line)) + (1 if kept else 0)
        if grown > limit:
            break
        kept.append(line)
        size = grown
    if not kept:  # one line longer than the limit on its own: its end (or start)
        line = lines[-1] if tail else lines[0]
        n = limit - 6
        while len(_fence(line[-n:] if tail else line[:n])) > limit - 6:
            n -= 1
        piece = line[-n:] if tail else line[:n]
        return "```" + _fence(piece) + "```", max(1, len(lines) - 1)
    if tail:
        kept.reverse()
    return "```" + _fence("\n".join(kept)) + "```", len(lines) - len(kept)


def _code(text: str, *, tail: bool = False) -> str:
    """``text`` as a code block of at most one section (cut to what fits)."""
    return _fit(text, MAX_TEXT, tail=tail)[0]


def section(text: str) -> dict[str, Any]:
    """A section of mrkdwn (already converted)."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text)}}


def context(text: str) -> dict[str, Any]:
    """A context line of mrkdwn (already converted)."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text)}]}


def _left_out(count: int, what: str) -> dict[str, Any]:
    return context(f"{count} {what} not shown here: the whole output is attached ({OUTPUT})")


def code_blocks(code: Code) -> tuple[list[dict[str, Any]], bool]:
    """A code block; when it does not fit, its last lines (the newest, for logs) and a note.
    Returns (blocks, whether something was left out)."""
    shown, left_out = _fit(code.code, MAX_TEXT, tail=True)
    if not left_out:
        return [section(shown)], False
    return [_left_out(left_out, "earlier lines"), section(shown)], True


def table_blocks(table: Table) -> list[dict[str, Any]]:
    """A table: two columns of at most 10 rows as section fields, else aligned text (its
    first rows when it does not fit; see :func:`table_parts`)."""
    return table_parts(table)[0]


def table_parts(table: Table) -> tuple[list[dict[str, Any]], bool]:
    cells = len(table.columns) * len(table.rows)
    fields = [
        {"type": "mrkdwn", "text": f"*{_literal(row[0])}*\n{_literal(row[1])}"}
        for row in table.rows
        if len(row) >= 2
    ]
    cut = False
    if (
        len(table.columns) == 2
        and 0 < cells <= MAX_FIELDS * 2
        and len(fields) == len(table.rows) <= MAX_FIELDS
        and all(len(f["text"]) <= MAX_FIELD for f in fields)
    ):
        blocks: list[dict[str, Any]] = [{"type": "section", "fields": fields}]
    else:
        shown, left_out = _fit(table.aligned(40), MAX_TEXT, tail=False)
        blocks = [section(shown)]
        if left_out:
            blocks.append(_left_out(left_out, "more rows"))
            cut = True
    if table.note:
        blocks.append(context(_literal(table.note)))
    return blocks, cut


def _button(
    action_id: str, label: str, value: str, style: ButtonStyle = ButtonStyle.DEFAULT
) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "value": value[:2000],
        "text": {
            "type": "plain_text",
            "text": label[: MAX_LABEL - 1] + "…" if len(label) > MAX_LABEL else label or " ",
        },
    }
    if style is not ButtonStyle.DEFAULT:
        button["style"] = style.value
    return button


def approval_actions(approval_id: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": f"approval:{approval_id}",
        "elements": [
            _button(APPROVE, "Approve", approval_id, ButtonStyle.PRIMARY),
            _button(DENY, "Deny", approval_id, ButtonStyle.DANGER),
        ],
    }


def card_blocks(card: ApprovalCard) -> list[dict[str, Any]]:
    """The approval card: its lines, the preview, the votes; buttons only while it is open."""
    blocks = [section(mrkdwn(card.head()))]
    if card.preview:
        blocks.append(section(_code(card.preview)))
    if card.status:
        blocks.append(section(mrkdwn(card.status)))
    votes = card_votes(card, mention(PREFIX))
    if votes:
        blocks.append(context(mrkdwn(votes)))
    if card.open:
        blocks.append(approval_actions(card.approval_id))
    return blocks


def action_block(action: ActionButton) -> dict[str, Any]:
    """A suggested action: one button in its own ``actions`` block (Slack wants ``action_id``
    unique within a block, and every suggested action uses ``opsbot_action``)."""
    return {
        "type": "actions",
        "block_id": f"action:{action.id}"[:255],
        "elements": [_button(ACTION, action.label, action.id, action.style)],
    }


def fallback(message: Message) -> str:
    """The message's ``text`` (notifications, clients without blocks), in mrkdwn."""
    parts: list[str] = []
    for block in message.blocks:
        if isinstance(block, Text):
            parts.append(mrkdwn(block.text))
        elif isinstance(block, ApprovalCard):
            parts.append(mrkdwn(block.head()))
            parts.extend(line for line in (escape(block.preview), mrkdwn(block.status)) if line)
        elif isinstance(block, ActionButton):
            parts.append(f"[{escape(block.label)}]")
        else:
            parts.append(escape(Message(thread="", step=message.step, blocks=[block]).plain))
    return _clip("\n".join(parts))


def footer(message: Message) -> dict[str, Any]:
    """The step line every message ends with: step, who, time."""
    who = f" · {escape(message.actor)}" if message.actor else ""
    return context(
        f"{STEP_LABEL.get(message.step, message.step.value)}{who} · {message.at:%H:%M:%S} UTC"
    )


def image_name(image: Image) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", image.title)[:60].strip("-") + ".png"


def render(message: Message) -> tuple[list[dict[str, Any]], str, list[Upload]]:
    """(blocks, fallback text, files to upload) for one engine message. Charts are uploaded;
    when part of the output does not fit, the whole of it is attached as ``output.txt``."""
    blocks: list[dict[str, Any]] = []
    uploads: list[Upload] = []
    actions: set[str] = set()
    cut = False
    for block in message.blocks:
        if isinstance(block, Text):
            blocks.extend(section(piece) for piece in _pieces(mrkdwn(block.text)))
        elif isinstance(block, Code):
            shown, left_out = code_blocks(block)
            blocks.extend(shown)
            cut = cut or left_out
        elif isinstance(block, Table):
            shown, left_out = table_parts(block)
            blocks.extend(shown)
            cut = cut or left_out
        elif isinstance(block, Image):
            uploads.append(Upload(image_name(block), block.title, block.data))
            blocks.append(context(f"chart: {_literal(block.title)} (attached)"))
        elif isinstance(block, ApprovalCard):
            blocks.extend(card_blocks(block))
        elif isinstance(block, ActionButton) and block.id not in actions:
            actions.add(block.id)  # block ids must be unique within a message
            blocks.append(action_block(block))
    if len(blocks) > MAX_BLOCKS - 1:
        hidden = len(blocks) - (MAX_BLOCKS - 2)
        blocks = [*blocks[: MAX_BLOCKS - 2], _left_out(hidden, "more blocks")]
        cut = True
    blocks.append(footer(message))
    if cut:
        uploads.append(Upload(OUTPUT, "the whole output", message.plain.encode()))
    return blocks, fallback(message), uploads
