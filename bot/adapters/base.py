"""What every chat adapter is and shares.

:class:`Adapter` is the protocol ``opsbot serve`` runs an adapter through: its ``name`` (the
platform, also the prefix of the thread keys it owns), ``owns`` (whether a thread key is its),
``start`` / ``stop``, ``post`` (a message into its thread), ``update`` (edit the message
showing an approval card) and ``routes`` (HTTP routes to mount on serve's server, e.g. Slack's
Events API). :data:`ADAPTERS` is the registry: which adapters there are, each with what it
needs of the settings (checked without importing the platform's library) and the class to
build; installed packages add theirs under the ``opsbot.adapters`` entry-point group. Which
ones serve tries is ``OPSBOT_ADAPTERS`` (default ``slack,discord``); each runs when its
settings are there, and says why not otherwise. :class:`Adapters` routes a message to the
adapter that owns its thread (approval expiries, incidents).

A new platform (Mattermost, Teams) is one class with these methods, an entry in the
registry, and a ``Platform`` in tests/test_conversation.py that passes the shared
conversation suite.

Also here: where approval cards are shown (:class:`CardRefs`, kept across restarts and
replicas), and how a request the work queue has no room for is answered (:func:`tell_busy`).
A click whose handling raised is reported by the engine (:meth:`Engine.decide`), the same on
every platform.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import structlog
from sqlalchemy import select

from opsbot import wording
from opsbot.audit import AuditEvent
from opsbot.config import Settings
from opsbot.engine import Engine, Reply
from opsbot.model import Message, Step, Text
from opsbot.store import SeenRow, Store, first_time

log = structlog.get_logger(__name__)
ENTRY_POINT_GROUP = "opsbot.adapters"
DEFAULT_ADAPTERS = "slack,discord"
Handler = Callable[[Any], Awaitable[Any]]


@runtime_checkable
class Adapter(Protocol):
    """A chat platform as ``opsbot serve`` runs it."""

    #: the platform: also the prefix of the thread keys it owns (``slack:C1:171.2``)
    name: str

    def owns(self, thread: str) -> bool:
        """Whether ``thread`` (a thread key) is one of this adapter's."""
        ...

    async def start(self) -> None:
        """Check the credentials (one log line naming what is missing) and connect; returns
        once the adapter runs in the background."""
        ...

    async def stop(self) -> None: ...

    async def post(self, message: Message) -> None:
        """Post ``message`` into its thread (an approval card known to be shown somewhere
        replaces that message)."""
        ...

    async def update(self, message: Message) -> bool:
        """Edit the message showing ``message``'s approval card (False: none is known)."""
        ...

    def routes(self) -> list[tuple[str, str, Handler]]:
        """HTTP routes (method, path, aiohttp handler) to mount on serve's server."""
        ...


@dataclass(frozen=True)
class AdapterKind:
    """An adapter the registry knows: its name, the class to build (``module:Class``, built
    with ``(engine, settings)``), and why it cannot run with given settings (None: it can),
    answered without importing the platform's library."""

    name: str
    target: str
    off_reason: Callable[[Settings], str | None]

    def load(self) -> Callable[[Engine, Settings], Adapter]:
        module, _, attr = self.target.partition(":")
        built: Callable[[Engine, Settings], Adapter] = getattr(
            importlib.import_module(module), attr
        )
        return built


def slack_off(settings: Settings) -> str | None:
    """Why the Slack adapter cannot run with these settings (None: it can)."""
    if not settings.slack_bot_token:
        return "SLACK_BOT_TOKEN is not set"
    if not settings.slack_app_token and not settings.slack_signing_secret:
        return "set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP events)"
    return None


def discord_off(settings: Settings) -> str | None:
    """Why the Discord adapter cannot run with these settings (None: it can)."""
    return None if settings.discord_token else "DISCORD_TOKEN is not set"


ADAPTERS: dict[str, AdapterKind] = {
    "slack": AdapterKind("slack", "opsbot.adapters.slack:SlackAdapter", slack_off),
    "discord": AdapterKind("discord", "opsbot.adapters.discord:DiscordAdapter", discord_off),
}


def _installed() -> dict[str, AdapterKind]:
    """Adapters of installed packages (entry points ``opsbot.adapters``: ``name =
    "module:Class"``; the class answers ``off_reason(settings)`` itself, if it has needs)."""
    kinds: dict[str, AdapterKind] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in ADAPTERS:
            continue

        def off(settings: Settings, target: str = ep.value) -> str | None:
            cls = AdapterKind("", target, lambda s: None).load()
            reason = getattr(cls, "off_reason", None)
            return reason(settings) if callable(reason) else None

        kinds[ep.name] = AdapterKind(ep.name, ep.value, off)
    return kinds


def registry() -> dict[str, AdapterKind]:
    """Every adapter known: opsbot's own, then those of installed packages."""
    return {**ADAPTERS, **_installed()}


def chosen(settings: Settings) -> list[str]:
    """The adapters serve tries (``OPSBOT_ADAPTERS``, comma-separated, in order)."""
    names = str(getattr(settings, "adapters", None) or DEFAULT_ADAPTERS)
    return list(dict.fromkeys(n.strip().lower() for n in names.split(",") if n.strip()))


def build_adapters(engine: Engine, settings: Settings) -> list[Adapter]:
    """The adapters ``OPSBOT_ADAPTERS`` chooses whose settings are there; one log line for
    each that is off (and why), or unknown."""
    known = registry()
    built: list[Adapter] = []
    for name in chosen(settings):
        kind = known.get(name)
        if kind is None:
            log.error(
                "adapter.unknown", adapter=name, known=sorted(known), setting="OPSBOT_ADAPTERS"
            )
            continue
        if reason := kind.off_reason(settings):
            log.info("adapter.off", adapter=name, reason=reason)
            continue
        built.append(kind.load()(engine, settings))
    return built


class Adapters:
    """The running adapters: each message goes to the one that owns its thread."""

    def __init__(self, adapters: list[Adapter]) -> None:
        self.adapters = list(adapters)

    def __iter__(self) -> Iterator[Adapter]:
        return iter(self.adapters)

    def __len__(self) -> int:
        return len(self.adapters)

    def owner(self, thread: str) -> Adapter | None:
        return next((a for a in self.adapters if a.owns(thread)), None)

    async def post(self, message: Message) -> None:
        """Post ``message`` through the adapter owning its thread (logged when none does)."""
        adapter = self.owner(message.thread)
        if adapter is None:
            log.warning("adapter.no_owner", thread=message.thread[:80])
            return
        await adapter.post(message)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [route for adapter in self.adapters for route in adapter.routes()]

    def channel_poster(self, where: str) -> Callable[[str], Awaitable[None]] | None:
        """A function posting a line of text in the channel ``where`` (``slack:C123``,
        ``discord:123``: the platform, then its channel), through the adapter of that
        platform, not in a thread; None (and a log line) when no running adapter has it.
        Slack's thread keys need a message's ts, so there the line opens a thread of its own
        (a message at the channel's root); on Discord a channel is a thread key itself."""
        platform, _, channel = where.partition(":")
        adapter = next((a for a in self.adapters if a.name == platform), None)
        if adapter is None or not channel:
            log.warning(
                "adapter.no_channel",
                channel=where,
                running=[a.name for a in self.adapters],
                effect="nothing is posted there",
            )
            return None
        opener = getattr(adapter, "open_thread", None) if platform == "slack" else None

        async def post(text: str) -> None:
            message = Message(thread=where, step=Step.RESULT, blocks=[Text(text=text)])
            if opener is not None:
                await opener(channel, message, text[:80])
            else:
                await adapter.post(message)

        return post

    async def start(self) -> None:
        """Start each adapter; one that fails to is logged and left out (the others run)."""
        for adapter in list(self.adapters):
            try:
                await adapter.start()
            except Exception as exc:
                log.exception("adapter.start_failed", adapter=adapter.name, error=str(exc)[:200])
                self.adapters.remove(adapter)

    async def stop(self) -> None:
        for adapter in reversed(self.adapters):
            try:
                await adapter.stop()
            except Exception:
                log.exception("adapter.stop_failed", adapter=adapter.name)


MAX_REMEMBERED = 2000  # card references each adapter also keeps in memory (oldest forgotten)


class CardRefs:
    """Where each approval card is shown on one platform (``channel:ts``, ``channel:message``),
    so every later state of the card is edited into that message: after a restart, and by
    whichever replica sweeps the expiry, too.

    Kept in memory and in the database's seen-events table under
    ``<platform>:card:<approval id>:<reference>`` (the newest reference wins)."""

    def __init__(self, store: Store, platform: str) -> None:
        self.store = store
        self.platform = platform
        self._memory: OrderedDict[str, str] = OrderedDict()

    def _key(self, approval_id: str) -> str:
        return f"{self.platform}:card:{approval_id}:"

    async def remember(self, approval_id: str, ref: str) -> None:
        if not approval_id or not ref or self._memory.get(approval_id) == ref:
            return
        self._memory[approval_id] = ref
        self._memory.move_to_end(approval_id)
        while len(self._memory) > MAX_REMEMBERED:
            self._memory.popitem(last=False)
        await first_time(self.store, self._key(approval_id) + ref)

    async def recall(self, approval_id: str) -> str | None:
        if approval_id in self._memory:
            return self._memory[approval_id]
        prefix = self._key(approval_id)
        async with self.store.sessions() as session:
            key = await session.scalar(
                select(SeenRow.key)
                .where(SeenRow.key.startswith(prefix, autoescape=True))
                .order_by(SeenRow.at.desc())
                .limit(1)
            )
        if key is None:
            return None
        ref = key[len(prefix) :]
        self._memory[approval_id] = ref
        return ref


async def tell_busy(
    engine: Engine,
    post: Reply,
    thread: str,
    actor: str,
    channel: str,
    text: str,
    waiting: int,
) -> None:
    """A request the queue had no room for: say so in its thread at once, and keep a record
    of it (queued, not waited for: the answer must not wait on the database)."""
    engine.services.audit.enqueue(
        AuditEvent.REQUEST,
        actor=actor,
        channel=channel,
        thread=thread,
        outcome="busy",
        detail=text[:2000],
    )
    await post(
        Message(
            thread=thread, step=Step.ERROR, blocks=[Text(text=wording.busy(waiting))], actor=actor
        )
    )
