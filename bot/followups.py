"""Follow-ups of writes (a rollout after a restart), kept in the database so that the leader
runs them and a new leader resumes the ones its predecessor was running.

A follow-up only *reads* (it watches what the write started), so resuming one never repeats
the write. Each is claimed by a compare-and-set on its row: ``pending`` (or ``running`` whose
runner's heartbeat is older than ``stale_after``: that replica stopped) ``-> running`` by one
runner; the runner heartbeats while it watches and ends it ``done``, or ``interrupted`` when
its time ran out before anyone could follow it (the thread is told either way). A runner that
stops leading hands its follow-ups back (``pending``), so the next leader picks them up at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from opsbot.model import Actor
from opsbot.store import FollowUpRow, Store, now


class FollowUpState:
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class FollowUp:
    id: str
    skill: str
    args: dict[str, Any]
    actor: Actor
    channel: str
    thread: str
    request_id: str
    approval_id: str
    state: str
    runner: str
    attempts: int
    created_at: datetime
    deadline: datetime

    @property
    def resumed(self) -> bool:
        """Whether another runner had it before (it stopped while following it)."""
        return self.attempts > 1


class FollowUps:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(
        self,
        *,
        skill: str,
        args: dict[str, Any],
        actor: Actor,
        channel: str,
        thread: str,
        request_id: str,
        within: float,
        approval_id: str = "",
    ) -> FollowUp:
        """Keep a follow-up to run within ``within`` seconds from now."""
        at = now()
        row = FollowUpRow(
            id=uuid.uuid4().hex,
            skill=skill,
            args=args,
            actor={"id": actor.id, "roles": list(actor.roles), "display_name": actor.display_name},
            channel=channel,
            thread=thread,
            request_id=request_id,
            approval_id=approval_id,
            state=FollowUpState.PENDING,
            runner="",
            attempts=0,
            created_at=at,
            deadline=at + timedelta(seconds=within),
            heartbeat_at=None,
            result="",
        )
        async with self.store.sessions() as session:
            session.add(row)
            await session.commit()
        return _to_follow_up(row)

    async def claim(self, runner: str, *, stale_after: float, limit: int = 20) -> list[FollowUp]:
        """Take up to ``limit`` follow-ups nobody runs: pending ones, and running ones whose
        runner has not heartbeated for ``stale_after`` seconds. Each is taken by one runner
        only (compare-and-set on its state and heartbeat)."""
        stale = now() - timedelta(seconds=stale_after)
        async with self.store.sessions() as session:
            rows = (
                await session.execute(
                    select(FollowUpRow.id, FollowUpRow.state, FollowUpRow.heartbeat_at)
                    .where(
                        or_(
                            FollowUpRow.state == FollowUpState.PENDING,
                            and_(
                                FollowUpRow.state == FollowUpState.RUNNING,
                                FollowUpRow.heartbeat_at <= stale,
                            ),
                        )
                    )
                    .order_by(FollowUpRow.created_at)
                    .limit(limit)
                )
            ).all()
        taken: list[FollowUp] = []
        for follow_up_id, state, heartbeat in rows:
            same = [FollowUpRow.id == follow_up_id, FollowUpRow.state == state]
            same.append(
                FollowUpRow.heartbeat_at.is_(None)
                if heartbeat is None
                else FollowUpRow.heartbeat_at == heartbeat
            )
            async with self.store.sessions() as session:
                result = await session.execute(
                    update(FollowUpRow)
                    .where(*same)
                    .values(
                        state=FollowUpState.RUNNING,
                        runner=runner[:200],
                        heartbeat_at=now(),
                        attempts=FollowUpRow.attempts + 1,
                    )
                )
                await session.commit()
                if getattr(result, "rowcount", 0) != 1:
                    continue
                row = await session.get(FollowUpRow, follow_up_id, populate_existing=True)
            if row is not None:
                taken.append(_to_follow_up(row))
        return taken

    async def _set(self, follow_up_id: str, owner: str, **values: Any) -> bool:
        async with self.store.sessions() as session:
            result = await session.execute(
                update(FollowUpRow)
                .where(
                    FollowUpRow.id == follow_up_id,
                    FollowUpRow.runner == owner[:200],
                    FollowUpRow.state == FollowUpState.RUNNING,
                )
                .values(**values)
            )
            await session.commit()
        return bool(getattr(result, "rowcount", 0) == 1)

    async def beat(self, follow_up_id: str, runner: str) -> bool:
        """Say ``runner`` still follows it; False when it is no longer ``runner``'s."""
        return await self._set(follow_up_id, runner, heartbeat_at=now())

    async def end(self, follow_up_id: str, runner: str, *, state: str, result: str) -> bool:
        """``running -> done | interrupted`` by its runner."""
        return await self._set(follow_up_id, runner, state=state, result=result[:4000])

    async def hand_back(self, follow_up_id: str, runner: str) -> bool:
        """``running -> pending``: this runner stops (it no longer leads); the next takes it."""
        return await self._set(follow_up_id, runner, state=FollowUpState.PENDING, runner="")

    async def get(self, follow_up_id: str) -> FollowUp | None:
        async with self.store.sessions() as session:
            row = await session.get(FollowUpRow, follow_up_id)
        return _to_follow_up(row) if row is not None else None

    async def find(self, state: str | None = None) -> list[FollowUp]:
        query = select(FollowUpRow).order_by(FollowUpRow.created_at)
        if state is not None:
            query = query.where(FollowUpRow.state == state)
        async with self.store.sessions() as session:
            rows = (await session.scalars(query)).all()
        return [_to_follow_up(r) for r in rows]


def _to_follow_up(row: FollowUpRow) -> FollowUp:
    actor = dict(row.actor or {})
    return FollowUp(
        id=row.id,
        skill=row.skill,
        args=dict(row.args),
        actor=Actor(
            id=str(actor.get("id") or ""),
            roles=tuple(actor.get("roles") or ()),
            display_name=str(actor.get("display_name") or ""),
        ),
        channel=row.channel,
        thread=row.thread,
        request_id=row.request_id,
        approval_id=row.approval_id,
        state=row.state,
        runner=row.runner,
        attempts=row.attempts,
        created_at=row.created_at,
        deadline=row.deadline,
    )
