"""Engine messages as Slack Block Kit (https://api.slack.com/reference/block-kit/blocks).

Text -> ``section`` (mrkdwn); Code -> a code block (PromQL/LogQL stay verbatim); Table ->
``section`` fields when small, else an aligned code block, with its note as ``context``;
Buttons -> an ``actions`` block whose buttons carry the approval id as ``value``; Images are
uploaded separately (``files_upload_v2``) and only named here. Limits respected: 50 blocks,
3000 characters per text, 10 fields per section.
"""

from __future__ import annotations

from typing import Any

from opsbot.approvals import Approval, State
from opsbot.model import Buttons, Code, Image, Message, Step, Table, Text

MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_FIELDS = 10
APPROVE, DENY = "opsbot_approve", "opsbot_deny"
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


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _code(text: str) -> str:
    return "```" + _clip(text.replace("```", "`\u200b``"), MAX_TEXT - 6) + "```"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text)}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, 2000)}]}


def table_blocks(table: Table) -> list[dict[str, Any]]:
    cells = len(table.columns) * len(table.rows)
    if len(table.columns) == 2 and 0 < cells <= MAX_FIELDS:
        fields = [
            {"type": "mrkdwn", "text": _clip(f"*{row[0]}*\n{row[1]}", 2000)} for row in table.rows
        ]
        blocks: list[dict[str, Any]] = [{"type": "section", "fields": fields}]
    else:
        blocks = [section(_code(table.aligned(40)))]
    if table.note:
        blocks.append(context(table.note))
    return blocks


def approval_actions(approval_id: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": f"approval:{approval_id}",
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE,
                "style": "primary",
                "value": approval_id,
                "text": {"type": "plain_text", "text": "Approve"},
            },
            {
                "type": "button",
                "action_id": DENY,
                "style": "danger",
                "value": approval_id,
                "text": {"type": "plain_text", "text": "Deny"},
            },
        ],
    }


def render(message: Message) -> tuple[list[dict[str, Any]], str, list[Image]]:
    """(blocks, fallback text, images to upload) for one engine message."""
    blocks: list[dict[str, Any]] = []
    images: list[Image] = []
    for block in message.blocks:
        if isinstance(block, Text):
            blocks.append(section(block.text))
        elif isinstance(block, Code):
            blocks.append(section(_code(block.code)))
        elif isinstance(block, Table):
            blocks.extend(table_blocks(block))
        elif isinstance(block, Image):
            images.append(block)
            blocks.append(context(f"chart: {block.title} (attached)"))
        elif isinstance(block, Buttons):
            for approval_id in dict.fromkeys(b.value for b in block.buttons):
                blocks.append(approval_actions(approval_id))
    who = f" · {message.actor}" if message.actor else ""
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
    return blocks, _clip(message.plain, MAX_TEXT), images


def decided_blocks(
    approval: Approval, original: list[dict[str, Any]], decided_by: str
) -> list[dict[str, Any]]:
    """The approval message after a decision: buttons removed, who decided, when, result."""
    kept = [b for b in original if b.get("type") != "actions"]
    if approval.state is State.PENDING:  # more approvals needed: keep the buttons
        voters = ", ".join(
            f"<@{v.approver.split(':', 1)[-1]}>" for v in approval.votes if v.verdict == "approve"
        )
        return [
            *kept[:-1],
            context(f"approvals {approval.approvals}/{approval.min_approvals}: {voters}"),
            approval_actions(approval.id),
        ]
    when = (approval.votes[-1].at if approval.votes else approval.expires_at).strftime(
        "%H:%M:%S UTC"
    )
    line = f"*{approval.outcome}* by {decided_by} at {when}"
    if approval.result:
        line += f"\n{_clip(approval.result, 1000)}"
    return [*kept, section(line)]
