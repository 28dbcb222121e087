"""Engine messages as Slack Block Kit (https://api.slack.com/reference/block-kit/blocks).

Text -> ``section`` in mrkdwn (converted from the neutral markup by :func:`mrkdwn`); Code -> a
code block (PromQL/LogQL stay verbatim); Table -> ``section`` fields when small, else an
aligned code block, with its note as ``context``; an approval card -> its lines, the preview
as a code block, and Approve / Deny buttons (``value``: the approval id) only while it is
open; an action button -> an ``actions`` block with one button (``action_id``
``opsbot_action``, ``value``: the action's id). Images are uploaded separately
(``files_upload_v2``) and only named here. Limits respected: 50 blocks, 3000 characters per
text, 10 fields per section, 75 characters per button label.

Slack's rules for text (https://api.slack.com/reference/surfaces/formatting#escaping): ``&``,
``<`` and ``>`` are written as entities (mentions ``<@U…>`` that the adapter itself writes are
kept), and since mrkdwn has no escape character, a literal ``*``, ``_`` or ``~`` that could open
formatting gets a zero-width space before it.
"""

from __future__ import annotations

import re
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
MAX_LABEL = 75
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
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&", len(cut) - 5)
    if amp >= 0 and ";" not in cut[amp:]:  # never cut an entity in half
        cut = cut[:amp]
    return cut + "…"


def _code(text: str) -> str:
    return "```" + _clip(escape(text.replace("```", "`\u200b``")), MAX_TEXT - 6) + "```"


def section(text: str) -> dict[str, Any]:
    """A section of mrkdwn (already converted)."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text)}}


def context(text: str) -> dict[str, Any]:
    """A context line of mrkdwn (already converted)."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, 2000)}]}


def table_blocks(table: Table) -> list[dict[str, Any]]:
    cells = len(table.columns) * len(table.rows)
    if len(table.columns) == 2 and 0 < cells <= MAX_FIELDS:
        fields = [
            {"type": "mrkdwn", "text": _clip(f"*{_literal(row[0])}*\n{_literal(row[1])}", 2000)}
            for row in table.rows
        ]
        blocks: list[dict[str, Any]] = [{"type": "section", "fields": fields}]
    else:
        blocks = [section(_code(table.aligned(40)))]
    if table.note:
        blocks.append(context(_literal(table.note)))
    return blocks


def _button(
    action_id: str, label: str, value: str, style: ButtonStyle = ButtonStyle.DEFAULT
) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "value": value[:2000],
        "text": {"type": "plain_text", "text": _clip(label, MAX_LABEL)},
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


def render(message: Message) -> tuple[list[dict[str, Any]], str, list[Image]]:
    """(blocks, fallback text, images to upload) for one engine message."""
    blocks: list[dict[str, Any]] = []
    images: list[Image] = []
    actions: set[str] = set()
    for block in message.blocks:
        if isinstance(block, Text):
            blocks.append(section(mrkdwn(block.text)))
        elif isinstance(block, Code):
            blocks.append(section(_code(block.code)))
        elif isinstance(block, Table):
            blocks.extend(table_blocks(block))
        elif isinstance(block, Image):
            images.append(block)
            blocks.append(context(f"chart: {_literal(block.title)} (attached)"))
        elif isinstance(block, ApprovalCard):
            blocks.extend(card_blocks(block))
        elif isinstance(block, ActionButton) and block.id not in actions:
            actions.add(block.id)  # block ids must be unique within a message
            blocks.append(action_block(block))
    who = f" · {escape(message.actor)}" if message.actor else ""
    blocks.append(
        context(
            f"{STEP_LABEL.get(message.step, message.step.value)}{who} · {message.at:%H:%M:%S} UTC"
        )
    )
    if len(blocks) > MAX_BLOCKS:
        blocks = [
            *blocks[: MAX_BLOCKS - 1],
            context(f"{len(blocks) - MAX_BLOCKS + 1} more blocks not shown"),
        ]
    return blocks, fallback(message), images
