"""An in-memory opsbot for tests, as Errbot's ``testbot``: a pytest plugin shipped with opsbot.

Installing opsbot registers this module as a pytest plugin (entry point ``pytest11``), so any
test can take the fixture :func:`opsbot_bot`: a whole bot (engine, policy, approvals, audit)
on a SQLite file in ``tmp_path``, with no adapter and no network::

    async def test_my_skill(opsbot_bot):
        opsbot_bot.add_backend(MyBackend, url="http://127.0.0.1:9999")
        opsbot_bot.use_policy(POLICY_YAML)        # default: opsbot's bundled policy
        reply = await opsbot_bot.ask("restart web in shop", as_="shell:alice")
        assert "Needs approval by 1 of group:oncall" in reply.text
        [approval] = opsbot_bot.approvals
        refused = await opsbot_bot.click(approval, as_="shell:alice")   # the requester
        assert "someone else must approve" in refused.text
        await opsbot_bot.click(approval, as_="shell:bob")               # an approver: it runs

``ask`` and ``click`` return the messages the bot posted (:class:`Messages`, a
``list[Message]`` with ``.text``). The same can be set per test with a marker,
``@pytest.mark.opsbot(policy=..., skills=[...], backends=[...], installed=True)``.

The fixture is a plain (synchronous) one, so it works under pytest-asyncio in either mode,
under anyio, and without any async plugin: there, use ``ask_sync``/``click_sync``. The bot
starts on the first call, in that call's event loop, and is closed after the test. Outside
pytest, ``async with TestBot(path) as bot:`` does the same.

By default the bot has opsbot's own skills (``help``, ``approvals.pending``,
``audit.search``) plus what the test adds; ``installed=True`` loads every installed backend
as ``opsbot serve`` would (configured from the environment, as there). No model is used:
requests are routed by the offline router unless a ``planner`` is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Coroutine, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pytest

if TYPE_CHECKING:
    from opsbot.approvals import VoteOutcome
    from opsbot.engine import Engine
    from opsbot.intent.base import Planner
    from opsbot.model import ActionButton, Actor, ApprovalCard, Message
    from opsbot.policy import Policy
    from opsbot.services import Services
    from opsbot.skills.base import Backend, Skill

__all__ = ["Messages", "TestBot", "Thread", "opsbot_bot"]

T = TypeVar("T")
Verdict = Literal["approve", "deny"]


class Messages(list["Message"]):
    """Messages the bot posted, in order, with helpers for assertions."""

    #: for a click on an approval: what the vote did (``outcome.status``)
    outcome: VoteOutcome | None = None

    @property
    def text(self) -> str:
        """Every message as plain text (``Message.plain``), one after another."""
        return "\n".join(m.plain for m in self)

    @property
    def approvals(self) -> list[str]:
        """Ids of the approval cards among these messages, first seen first."""
        return list(dict.fromkeys(card.approval_id for card in self.cards))

    @property
    def cards(self) -> list[ApprovalCard]:
        """Every approval card block, as posted (a card is re-posted when its state moves)."""
        from opsbot.model import ApprovalCard

        return [b for m in self for b in m.blocks if isinstance(b, ApprovalCard)]

    def card(self, approval_id: str) -> ApprovalCard:
        """The latest card of ``approval_id`` among these messages."""
        cards = [c for c in self.cards if c.approval_id == approval_id]
        if not cards:
            raise LookupError(f"no approval card {approval_id!r} in these messages")
        return cards[-1]

    @property
    def actions(self) -> list[ActionButton]:
        """The suggested-action buttons among these messages."""
        from opsbot.model import ActionButton

        return [b for m in self for b in m.blocks if isinstance(b, ActionButton)]


class Thread:
    """A reply callable that collects what the engine posts, as an adapter would."""

    def __init__(self) -> None:
        self.messages = Messages()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def text(self) -> str:
        return self.messages.text

    @property
    def approval_ids(self) -> list[str]:
        """``approval_id`` of every approval-step message (repeats included)."""
        return [
            m.approval_id for m in self.messages if m.approval_id and m.step.value == "approval"
        ]


def _actor(identity: str | Actor) -> Actor:
    from opsbot.model import Actor

    if isinstance(identity, Actor):
        return identity
    if ":" not in identity:
        raise ValueError(f"an identity is platform:user (e.g. shell:alice), not {identity!r}")
    return Actor(id=identity)


class TestBot:
    """A whole opsbot without adapters, for tests (see the module docstring).

    ``policy``: YAML text (``str``), a policy file or folder (``Path``), or a loaded
    :class:`~opsbot.policy.Policy`; default opsbot's bundled ``policies/default.yaml``.
    ``skills``: Skill instances (each on a backend of its own); ``backends``: Backend
    instances, or Backend classes built with this bot's settings (``backend_settings[name]``
    win over the environment). ``installed``: also load every installed backend.
    ``settings``: opsbot settings to override (e.g. ``max_rows``).
    """

    __test__ = False  # not a test class, whatever module imports it

    def __init__(
        self,
        path: Path,
        *,
        policy: str | Path | Policy | None = None,
        skills: Iterable[Skill[Any, Any]] = (),
        backends: Iterable[Backend[Any] | type[Backend[Any]]] = (),
        backend_settings: dict[str, dict[str, Any]] | None = None,
        installed: bool = False,
        planner: Planner | None = None,
        channel: str = "shell",
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.channel = channel
        self.installed = installed
        self._policy: str | Path | Policy | None = policy
        self._skills: list[Skill[Any, Any]] = list(skills)
        self._backends: list[Backend[Any] | type[Backend[Any]]] = list(backends)
        self._backend_settings = dict(backend_settings or {})
        self._planner = planner
        self._settings = dict(settings or {})
        self._services: Services | None = None
        self._engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._guard: AsyncGenerator[None, None] | None = None
        #: every message posted so far, by thread
        self.threads: dict[str, Messages] = {}
        self._last_thread = ""

    # -- set up ---------------------------------------------------------------------------

    def add_skill(self, skill: Skill[Any, Any]) -> None:
        """Add a skill (on a backend of its own); its name must be new."""
        if self._services is not None:
            self._check_new([skill.name])
            self._services.registry.add(skill)
        else:
            self._skills.append(skill)

    def add_backend(self, backend: Backend[Any] | type[Backend[Any]], **config: Any) -> None:
        """Add a backend and its skills: an instance, or a class built from this bot's
        settings with ``config`` as its settings (winning over the environment)."""
        if config:
            if not isinstance(backend, type):
                raise TypeError("settings go with a Backend class, not an instance")
            self._backend_settings[backend.name] = {
                **self._backend_settings.get(backend.name, {}),
                **config,
            }
        if self._services is not None:
            self._add_backend(backend)
        else:
            self._backends.append(backend)

    def use_policy(self, policy: str | Path | Policy) -> None:
        """Replace the policy (YAML text, a file or folder, or a Policy); takes effect for
        the next request, also once the bot runs."""
        self._policy = policy
        if self._services is not None:
            self._services.policy = self._load_policy()

    def use_planner(self, planner: Planner) -> None:
        """Route requests with ``planner`` instead of the offline router."""
        self._planner = planner
        if self._engine is not None:
            self._engine.planner = planner

    # -- running --------------------------------------------------------------------------

    @property
    def services(self) -> Services:
        """The running bot's services (store, audit, approvals, policy, registry)."""
        if self._services is None:
            raise RuntimeError("the bot has not started: await bot.start() or bot.ask(...)")
        return self._services

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the bot has not started: await bot.start() or bot.ask(...)")
        return self._engine

    async def start(self) -> Services:
        """Open the store (SQLite in ``path``), load the policy and the skills; idempotent."""
        loop = asyncio.get_running_loop()
        if self._services is not None:
            if loop is not self._loop:
                raise RuntimeError("this bot runs in another event loop (one bot per loop)")
            return self._services
        from opsbot.engine import Engine
        from opsbot.services import build_services
        from opsbot.skills.base import SkillRegistry, load_registry
        from opsbot.skills.meta import Meta

        self.path.mkdir(parents=True, exist_ok=True)
        settings = self._make_settings()
        policy = self._load_policy()
        if self.installed:
            registry = load_registry(settings)
        else:
            registry = SkillRegistry([Meta.from_settings(settings)])
        services = await build_services(settings, registry=registry, policy=policy)
        self._services, self._loop = services, loop
        self._guard = self._close_with_loop()
        await anext(self._guard)
        try:
            for backend in self._backends:
                self._add_backend(backend)
            self._check_new([s.name for s in self._skills])
            for skill in self._skills:
                registry.add(skill)
        except BaseException:
            await self.aclose()
            raise
        self._engine = Engine(services, self._planner)
        return services

    async def _close_with_loop(self) -> AsyncGenerator[None, None]:
        """Suspended for as long as the bot runs. An event loop that ends the way
        ``asyncio.run``, ``asyncio.Runner``, pytest-asyncio and anyio end theirs (shutting
        down its async generators) resumes it, so the bot's clients and store are closed in
        the loop they were opened in, even when the fixture's teardown comes after the
        loop's (as with pytest-asyncio's per-test loops)."""
        try:
            yield
        finally:
            services, self._services, self._engine = self._services, None, None
            if services is not None:
                await services.close()

    async def aclose(self) -> None:
        """Close the backends' clients and the store."""
        guard, self._guard = self._guard, None
        if guard is not None:
            await guard.aclose()

    def close(self) -> None:
        """Close from synchronous code (the fixture's teardown): in the loop the bot started
        in while that loop is open (otherwise its shutdown has closed the bot already)."""
        try:
            if self._guard is not None:
                loop = self._loop
                if loop is not None and not loop.is_closed() and not loop.is_running():
                    loop.run_until_complete(self.aclose())
                else:  # a loop that ended without closing its async generators
                    asyncio.run(self.aclose())
        finally:
            if self._own_loop is not None:
                self._own_loop.close()
                self._own_loop = None

    async def __aenter__(self) -> TestBot:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- talking to it --------------------------------------------------------------------

    async def ask(
        self,
        text: str,
        *,
        as_: str | Actor = "shell:alice",
        channel: str | None = None,
        thread: str = "",
    ) -> Messages:
        """Send ``text`` as ``as_`` and return the messages of that request's thread.
        ``thread``: continue an earlier thread (its key, ``reply[0].thread``)."""
        from opsbot.model import Request

        await self.start()
        request = Request(
            actor=_actor(as_), channel=channel or self.channel, text=text, thread=thread
        )
        posted = Messages()
        await self.engine.handle(request, self._collect(posted))
        self._last_thread = request.thread_key
        return posted

    async def click(
        self,
        target: str | ApprovalCard | ActionButton,
        *,
        as_: str | Actor = "shell:bob",
        verdict: Verdict = "approve",
        reason: str = "",
        channel: str | None = None,
    ) -> Messages:
        """Press a button as ``as_``: Approve (``verdict="approve"``) or Deny on an approval
        card (:meth:`Engine.decide`), or a suggested-action button (:meth:`Engine.click`,
        run as the clicker's own request). ``target`` is an approval id, an action id, or
        the block itself; an id that is neither is sent to ``decide`` (which refuses it).
        Returns the messages posted, including those only the clicker sees."""
        from opsbot.model import ActionButton, ApprovalCard

        await self.start()
        clicker = _actor(as_)
        posted = Messages()
        post = self._collect(posted)
        if isinstance(target, ApprovalCard):
            target_id, is_action = target.approval_id, False
        elif isinstance(target, ActionButton):
            target_id, is_action = target.id, True
        else:
            target_id = target
            is_action = (
                await self.services.approvals.get(target) is None
                and await self.engine.actions.get(target) is not None
            )
        if is_action:
            if verdict != "approve":
                raise ValueError("a suggested-action button is pressed, not denied")
            await self.engine.click(target_id, clicker, post, channel=channel or self.channel)
        else:
            posted.outcome = await self.engine.decide(
                target_id, clicker, verdict, post, reason=reason, channel=channel or ""
            )
        if posted:
            self._last_thread = posted[-1].thread
        return posted

    async def sweep(self) -> Messages:
        """Expire the approvals past their ttl (as ``opsbot serve`` does periodically)."""
        await self.start()
        posted = Messages()
        await self.engine.sweep_expired(self._collect(posted))
        return posted

    @property
    def thread(self) -> Messages:
        """Every message of the last thread asked or clicked in, so far."""
        return self.threads.get(self._last_thread, Messages())

    @property
    def approvals(self) -> list[str]:
        """Ids of the approval cards in the last thread, first seen first."""
        return self.thread.approvals

    @property
    def actions(self) -> list[ActionButton]:
        """The suggested-action buttons offered in the last thread."""
        return self.thread.actions

    # -- the same without an event loop of one's own ---------------------------------------

    def ask_sync(self, text: str, **kwargs: Any) -> Messages:
        """:meth:`ask` for tests that are not ``async`` (e.g. without pytest-asyncio)."""
        return self._sync(self.ask(text, **kwargs))

    def click_sync(self, target: str | ApprovalCard | ActionButton, **kwargs: Any) -> Messages:
        """:meth:`click` for tests that are not ``async``."""
        return self._sync(self.click(target, **kwargs))

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._own_loop is None:
            self._own_loop = asyncio.new_event_loop()
        return self._own_loop.run_until_complete(coro)

    # -- internals ------------------------------------------------------------------------

    def _collect(self, posted: Messages) -> Thread:
        bot = self

        class _Collect(Thread):
            async def __call__(self, message: Message) -> None:
                posted.append(message)
                bot.threads.setdefault(message.thread, Messages()).append(message)

        return _Collect()

    def _make_settings(self) -> Any:
        from opsbot.config import Settings

        values: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{self.path / 'opsbot.db'}",
            "chart_dir": self.path / "charts",
            "backend_timeout": 3.0,
            # no model, no chat platform: whatever the environment says
            "openai_api_key": None,
            "openai_base_url": None,
            "llm_model": None,
            "slack_bot_token": None,
            "slack_app_token": None,
            "discord_token": None,
            "backends": self._backend_settings,
        }
        return Settings(**{**values, **self._settings})

    def _load_policy(self) -> Policy:
        from opsbot.policy import BUNDLED_POLICIES, Policy

        policy = self._policy
        if policy is None:
            return Policy.load(BUNDLED_POLICIES / "default.yaml")
        if isinstance(policy, Policy):
            return policy
        if isinstance(policy, str):
            self.path.mkdir(parents=True, exist_ok=True)
            file = self.path / "policy.yaml"
            file.write_text(policy)
            return Policy.load(file)
        return Policy.load(policy)

    def _add_backend(self, backend: Backend[Any] | type[Backend[Any]]) -> None:
        services = self.services
        if isinstance(backend, type):
            backend = backend.from_settings(
                services.settings, **self._backend_settings.get(backend.name, {})
            )
        self._check_new([cls.name for cls in type(backend).skills])
        services.registry.add_backend(backend)

    def _check_new(self, names: list[str]) -> None:
        taken = [n for n in names if n in self.services.registry]
        if taken:
            raise ValueError(f"skills already loaded: {', '.join(taken)}")


# -- the pytest plugin -------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "opsbot(policy=None, skills=(), backends=(), backend_settings=None, installed=False, "
        "planner=None, channel='shell', settings=None): how the opsbot_bot fixture is built "
        "(keyword arguments of opsbot.testing.TestBot)",
    )


@pytest.fixture
def opsbot_bot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestBot]:
    """An in-memory opsbot (:class:`TestBot`) on SQLite in ``tmp_path``, closed after the
    test. Configure it with ``@pytest.mark.opsbot(...)`` or its ``add_skill``,
    ``add_backend``, ``use_policy`` methods."""
    marker = request.node.get_closest_marker("opsbot")
    bot = TestBot(tmp_path / "opsbot", **(marker.kwargs if marker else {}))
    try:
        yield bot
    finally:
        bot.close()
