"""A thread's conversation with the planner: bounded history kept in the database, so
follow-ups ("and in staging?", "do it") work across replicas and restarts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from opsbot.store import Store, TurnRow, now

MAX_TURN_CHARS = 4000


@dataclass(frozen=True)
class Turn:
    role: str  # user | assistant | tool
    content: str


class Conversations:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def history(self, thread: str, limit: int) -> list[Turn]:
        """The last ``limit`` turns of ``thread``, oldest first."""
        async with self.store.sessions() as session:
            rows = (
                await session.scalars(
                    select(TurnRow)
                    .where(TurnRow.thread == thread)
                    .order_by(TurnRow.id.desc())
                    .limit(limit)
                )
            ).all()
        return [Turn(r.role, r.content) for r in reversed(rows)]

    async def add_turns(self, thread: str, turns: list[Turn]) -> None:
        """Several turns of ``thread`` in one transaction, in order."""
        async with self.store.sessions() as session:
            at = now()
            session.add_all(
                TurnRow(thread=thread, role=t.role, content=t.content[:MAX_TURN_CHARS], at=at)
                for t in turns
            )
            await session.commit()

    async def add(self, thread: str, role: str, content: str) -> None:
        async with self.store.sessions() as session:
            session.add(
                TurnRow(thread=thread, role=role, content=content[:MAX_TURN_CHARS], at=now())
            )
            await session.commit()
