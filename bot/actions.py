"""Suggested actions offered as buttons: kept in the database under a short id, so a click on
any replica can run the invocation (a Discord ``custom_id`` holds 100 characters at most)."""

from __future__ import annotations

from dataclasses import dataclass

from opsbot.model import ActionButton, Invocation
from opsbot.store import ActionRow, Store, now


@dataclass(frozen=True)
class Offered:
    """A suggested action and where it was offered."""

    id: str
    label: str
    invocation: Invocation
    thread: str
    channel: str


class Actions:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def offer(self, button: ActionButton, *, thread: str, channel: str) -> None:
        """Keep ``button``'s invocation under its id (offering the same id again is a no-op)."""
        async with self.store.sessions() as session:
            if await session.get(ActionRow, button.id) is None:
                session.add(
                    ActionRow(
                        id=button.id,
                        label=button.label[:200],
                        skill=button.invocation.skill,
                        args=button.invocation.args,
                        thread=thread,
                        channel=channel,
                        at=now(),
                    )
                )
                await session.commit()

    async def get(self, action_id: str) -> Offered | None:
        async with self.store.sessions() as session:
            row = await session.get(ActionRow, action_id)
        if row is None:
            return None
        return Offered(
            id=row.id,
            label=row.label,
            invocation=Invocation(skill=row.skill, args=row.args),
            thread=row.thread,
            channel=row.channel,
        )
