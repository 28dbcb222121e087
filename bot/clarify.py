"""A question from the bot takes a short answer.

A :class:`~opsbot.model.Clarify` plan that names its skill, the arguments gathered so far and
the required ones still missing is kept as its thread's *pending request*, in the database (so
any replica, and the bot after a restart, can complete it). The requester's next message in
that thread completes it when it fills a missing argument: "shop", "in shop", "the last 2h",
"checkout". The answer is read by the offline router for the arguments not given yet (its
extractors: namespaces, durations, numbers, names grounded against the inventory), merged with
what was gathered, validated, and planned as one invocation that goes through policy and
approval like any other request of the requester.

Anything else drops the pending request and is handled as a new one: a message that asks for
another skill ("show firing alerts") or fills nothing, a click on a button in the thread. A
message from someone else in the thread leaves it for the requester. It expires after ``TTL``
(expired ones are deleted whenever a new question is kept).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import delete

from opsbot.intent import arguments
from opsbot.intent import extract as ex
from opsbot.intent.offline import AMBIGUITY_MARGIN, OfflineRouter
from opsbot.meaning import Grounded
from opsbot.model import Clarify, Plan, Request, Run
from opsbot.skills.base import Skill
from opsbot.store import ClarificationRow, Store, now

#: how long a question waits for its answer
TTL = timedelta(minutes=15)
#: why the completed invocation runs (shown with its plan step)
RATIONALE = "your answer completes the request asked about in this thread"


@dataclass(frozen=True)
class Pending:
    """A request waiting in ``thread`` for the answer to the bot's question."""

    id: str
    thread: str
    requester: str
    channel: str
    request_id: str
    skill: str
    args: dict[str, Any]
    missing: list[str]
    question: str
    expires_at: datetime

    @classmethod
    def of(cls, row: ClarificationRow) -> Pending:
        return cls(
            id=row.id,
            thread=row.thread,
            requester=row.requester,
            channel=row.channel,
            request_id=row.request_id,
            skill=row.skill,
            args=dict(row.args),
            missing=list(row.missing),
            question=row.question,
            expires_at=row.expires_at,
        )


class Clarifications:
    """The pending requests of threads, kept in ``store``; answers are read by ``router``."""

    def __init__(self, store: Store, router: OfflineRouter, ttl: timedelta = TTL) -> None:
        self.store = store
        self.router = router
        self.ttl = ttl

    async def keep(self, plan: Clarify, request: Request) -> Pending | None:
        """Keep ``plan`` as the pending request of ``request``'s thread, replacing any earlier
        one. A question that names no skill or nothing missing keeps nothing (None)."""
        thread = request.thread_key
        if not plan.skill or not plan.missing:
            await self.drop(thread)
            return None
        at = now()
        row = ClarificationRow(
            thread=thread,
            id=uuid.uuid4().hex[:16],
            requester=request.actor.id,
            channel=request.channel,
            request_id=request.id,
            skill=plan.skill,
            args=to_jsonable_python(plan.args, fallback=str),
            missing=list(plan.missing),
            question=plan.question,
            asked_at=at,
            expires_at=at + self.ttl,
        )
        async with self.store.sessions() as session:
            await session.execute(  # this thread's earlier question, and any that expired
                delete(ClarificationRow).where(
                    (ClarificationRow.thread == thread) | (ClarificationRow.expires_at <= at)
                )
            )
            session.add(row)
            await session.commit()
        return Pending.of(row)

    async def pending(self, thread: str) -> Pending | None:
        """The request waiting in ``thread`` for an answer (None when there is none, or it
        has expired)."""
        found = await self._load(thread)
        return found if found is not None and found.expires_at > now() else None

    async def drop(self, thread: str) -> None:
        async with self.store.sessions() as session:
            await session.execute(delete(ClarificationRow).where(ClarificationRow.thread == thread))
            await session.commit()

    async def answer(self, request: Request, catalog: Sequence[Skill[Any, Any]]) -> Plan | None:
        """The plan that ``request`` completes when it answers the question pending in its
        thread (the pending request is then used up); None when it does not. ``catalog``: the
        skills the requester may call here.

        The plan is a :class:`Run` of the pending skill with the merged arguments, or a new
        :class:`Clarify` when the answer leaves something open ("checkout" may still exist in
        two namespaces). An expired question, or a message that is no answer to it, drops it;
        a message by someone other than the requester leaves it."""
        if not request.thread or request.new_thread:  # a thread it opens has nothing pending
            return None
        pending = await self._load(request.thread_key)
        if pending is None:
            return None
        if pending.expires_at <= now():
            await self._use(pending)
            return None
        if pending.requester != request.actor.id:
            return None
        plan = await self._complete(pending, request.text, catalog)
        if not await self._use(pending):  # another replica answered it first
            return None
        return plan

    # -- internals ------------------------------------------------------------------------

    async def _load(self, thread: str) -> Pending | None:
        async with self.store.sessions() as session:
            row = await session.get(ClarificationRow, thread)
        return Pending.of(row) if row is not None else None

    async def _use(self, pending: Pending) -> bool:
        """Remove ``pending`` (exactly this question, not a later one in its thread); False
        when it was gone already."""
        async with self.store.sessions() as session:
            done = await session.execute(
                delete(ClarificationRow).where(
                    ClarificationRow.thread == pending.thread, ClarificationRow.id == pending.id
                )
            )
            await session.commit()
        return bool(getattr(done, "rowcount", 0))

    async def _complete(
        self, pending: Pending, text: str, catalog: Sequence[Skill[Any, Any]]
    ) -> Plan | None:
        skill = next((s for s in catalog if s.name == pending.skill), None)
        parsed = ex.parse(text.strip()[:2000])
        if skill is None or not (parsed.tokens or parsed.expr):
            return None
        if self._asks_for_another(parsed, skill, catalog):
            return None
        vocabulary = self.router._vocabulary(catalog)
        plan = await self.router.build(skill, parsed, vocabulary, given=pending.args)
        if not _fills(plan, pending) and len(pending.missing) == 1:
            word = await self._one_word(parsed, pending, skill)
            if word is not None:  # taken only when it makes a valid request
                given = {**pending.args, pending.missing[0]: word}
                guess = await self.router.build(skill, parsed, vocabulary, given=given)
                plan = guess if isinstance(guess, Run) else plan
        if not _fills(plan, pending):
            return None
        if isinstance(plan, Run):
            return Run(
                invocations=[
                    i.model_copy(update={"rationale": RATIONALE}) for i in plan.invocations
                ],
                planner=self.router.name,
            )
        return plan

    def _asks_for_another(
        self, parsed: ex.Parsed, skill: Skill[Any, Any], catalog: Sequence[Skill[Any, Any]]
    ) -> bool:
        """Whether the message reads as a request for another skill ("show firing alerts")
        rather than an answer: some other skill clearly fits its words on their own (an
        expression in it is an answer, e.g. the PromQL query a graph was missing)."""
        words = ex.parse(parsed.rest) if parsed.expr else parsed
        ranked = self.router.rank(words, catalog)
        if not ranked or ranked[0].score < self.router.threshold:
            return False
        mine = next((r.score for r in ranked if r.skill.name == skill.name), 0.0)
        return ranked[0].skill.name != skill.name and ranked[0].score - mine >= AMBIGUITY_MARGIN

    async def _one_word(
        self, parsed: ex.Parsed, pending: Pending, skill: Skill[Any, Any]
    ) -> str | None:
        """A one-word answer ("shop", "3") taken as the one missing argument: grounded as the
        argument's declared meaning says when the inventory knows such names (None when it
        knows none close), as typed otherwise."""
        words = [t for t in parsed.tokens if ex.stem(t) not in ex.STOPWORDS]
        if len(words) != 1 or parsed.expr:
            return None
        word = words[0].rstrip(".,!")
        meaning = arguments.meanings(skill.Args).get(pending.missing[0])
        inventory = self.router.inventory
        if not isinstance(meaning, Grounded) or inventory is None:
            return word
        found = arguments.resolve(meaning, word, pending.args, await inventory.snapshot())
        return found.value if found.checked else word


def _fills(plan: Plan, pending: Pending) -> bool:
    """Whether ``plan`` moves ``pending`` on: it has a value for an argument that was missing,
    or it is a question of its own about the same skill (the answer named two close names)."""
    if isinstance(plan, Run):
        return any(name in plan.invocations[0].args for name in pending.missing)
    if isinstance(plan, Clarify) and plan.skill == pending.skill:
        filled = any(name in plan.args for name in pending.missing)
        return filled or plan.question != pending.question
    return False
