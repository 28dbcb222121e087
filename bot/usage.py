"""Model usage: tokens and estimated cost per call, and the budgets they count against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import case, func, select

from opsbot.store import Store, UsageRow, now


@dataclass
class Usage:
    """Accumulated usage of one request: tokens, USD estimate (price table), latency (s)."""

    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    calls: int = 0
    #: SHA-256 of the prompt templates the request's calls were built from (LLM planner)
    prompt_sha256: str = ""
    tools_sha256: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def describe(self) -> str:
        return (
            f"{self.calls} model call(s), {self.prompt_tokens} prompt + {self.completion_tokens} "
            f"completion tokens, ~${self.cost_usd:.4f}, {self.latency_s:.2f}s"
        )


def price(prices: dict[str, dict[str, float]], model: str, prompt: int, completion: int) -> float:
    """USD for ``prompt``/``completion`` tokens of ``model`` (prices per 1M tokens; 0 if unknown)."""
    table = prices.get(model) or next((v for k, v in prices.items() if model.startswith(k)), None)
    if not table:
        return 0.0
    return (prompt * table.get("input", 0.0) + completion * table.get("output", 0.0)) / 1_000_000


class UsageLedger:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(
        self, actor: str, request_id: str, model: str, prompt: int, completion: int, cost: float
    ) -> None:
        async with self.store.sessions() as session:
            session.add(
                UsageRow(
                    at=now(),
                    actor=actor,
                    request_id=request_id,
                    model=model,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    cost_usd=cost,
                )
            )
            await session.commit()

    async def record_all(self, rows: list[UsageRow]) -> None:
        """Several calls' usage in one transaction (the LLM planner's, once per request)."""
        if not rows:
            return
        async with self.store.sessions() as session:
            session.add_all(rows)
            await session.commit()

    async def totals(self, actor: str, window: timedelta = timedelta(days=1)) -> tuple[int, int]:
        """(everyone's, ``actor``'s) tokens in the last ``window``: one query for both
        budgets."""
        spent = UsageRow.prompt_tokens + UsageRow.completion_tokens
        query = select(
            func.coalesce(func.sum(spent), 0),
            func.coalesce(func.sum(case((UsageRow.actor == actor, spent), else_=0)), 0),
        ).where(UsageRow.at >= now() - window)
        async with self.store.sessions() as session:
            team, own = (await session.execute(query)).one()
        return int(team or 0), int(own or 0)

    async def tokens(
        self, *, actor: str | None = None, window: timedelta = timedelta(days=1)
    ) -> int:
        """Tokens spent in the last ``window`` by ``actor`` (everyone when None)."""
        query = select(
            func.coalesce(func.sum(UsageRow.prompt_tokens + UsageRow.completion_tokens), 0)
        ).where(UsageRow.at >= now() - window)
        if actor:
            query = query.where(UsageRow.actor == actor)
        async with self.store.sessions() as session:
            return int(await session.scalar(query) or 0)
