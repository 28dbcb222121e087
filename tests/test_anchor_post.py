"""``OPSBOT_AUDIT_ANCHOR_CHANNEL``: ``opsbot serve``'s leader posts each new anchor (the
audit chain's head: record number and hash) in that channel, through the adapter of its
platform (here Slack, against the fake Web API); a replica that does not lead posts nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from opsbot.adapters.base import Adapters
from opsbot.adapters.http import _anchor_poster, serve
from opsbot.anchors import AnchorFile
from opsbot.audit import AuditEvent
from opsbot.config import Settings
from opsbot.demo import free_port
from opsbot.model import Message
from opsbot.policy import Policy
from opsbot.services import build_services
from tests.conftest import make_settings
from tests.fakes.slack_api import FakeSlack

ANCHORS = "C0ANCHORS"


def anchor_posts(slack: FakeSlack) -> list[dict[str, Any]]:
    return [p for p in slack.of("chat.postMessage") if p["channel"] == ANCHORS]


async def until(check: Any, within: float = 10.0) -> None:
    for _ in range(int(within / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within the time")


async def test_the_leader_posts_each_new_anchor_in_the_anchor_channel(
    tmp_path: Path, policy: Policy
) -> None:
    async with FakeSlack() as slack:
        settings = make_settings(
            f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
            tmp_path,
            http_host="127.0.0.1",
            http_port=free_port(),
            slack_bot_token="xoxb-test",
            slack_signing_secret="secret",
            slack_api_url=slack.base_url,
            discord_token=None,
            audit_anchor_path=tmp_path / "anchors.jsonl",
            audit_anchor_interval=0.1,
            audit_anchor_channel=f"slack:{ANCHORS}",
        )
        services = await build_services(settings, policy=policy)
        audit = services.audit
        await audit.append(AuditEvent.REQUEST, actor="shell:alice", detail="first")
        task = asyncio.create_task(serve(services))
        try:
            await until(lambda: len(anchor_posts(slack)) == 1)
            seq, digest = await audit.head()
            [first] = anchor_posts(slack)
            assert f"audit anchor: record {seq} hash {digest}" in first["text"]
            assert not first.get("thread_ts")  # in the channel, not in a thread
            await asyncio.sleep(0.4)  # the head did not move: no new anchor, nothing posted
            assert len(anchor_posts(slack)) == 1
            await audit.append(AuditEvent.REQUEST, actor="shell:alice", detail="second")
            await until(lambda: len(anchor_posts(slack)) == 2)
            seq2, digest2 = await audit.head()
            assert seq2 > seq
            assert f"audit anchor: record {seq2} hash {digest2}" in anchor_posts(slack)[1]["text"]
            written = AnchorFile(tmp_path / "anchors.jsonl").read().anchors
            assert [(a.seq, a.hash) for a in written][-2:] == [(seq, digest), (seq2, digest2)]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await services.close()


class Recorder:
    name = "discord"

    def __init__(self) -> None:
        self.posted: list[Message] = []

    def owns(self, thread: str) -> bool:
        return thread.startswith("discord:")

    async def post(self, message: Message) -> None:
        self.posted.append(message)


@pytest.mark.parametrize("leading", [True, False])
async def test_only_the_leader_posts(tmp_path: Path, leading: bool) -> None:
    """On Discord a channel is a thread key itself: the anchor is posted into it."""
    settings = Settings(
        database_url="sqlite+aiosqlite://",
        audit_anchor_path=tmp_path / "anchors.jsonl",
        audit_anchor_channel="discord:123",
    )
    discord = Recorder()
    post = _anchor_poster(
        settings,
        Adapters([discord]),  # type: ignore[list-item]
        SimpleNamespace(leading=leading),  # type: ignore[arg-type]
    )
    assert post is not None
    await post("audit anchor: record 7 hash abc")
    if leading:
        [message] = discord.posted
        assert message.thread == "discord:123" and "record 7 hash abc" in message.plain
    else:
        assert discord.posted == []


def test_an_anchor_channel_without_its_adapter_or_anchors_posts_nothing(tmp_path: Path) -> None:
    leader: Any = SimpleNamespace(leading=True)
    nowhere = Settings(
        database_url="sqlite+aiosqlite://",
        audit_anchor_path=tmp_path / "anchors.jsonl",
        audit_anchor_channel="slack:C1",
    )
    assert _anchor_poster(nowhere, Adapters([Recorder()]), leader) is None  # type: ignore[list-item]
    no_file = Settings(database_url="sqlite+aiosqlite://", audit_anchor_channel="discord:1")
    assert _anchor_poster(no_file, Adapters([Recorder()]), leader) is None  # type: ignore[list-item]
