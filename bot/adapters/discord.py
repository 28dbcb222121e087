"""Discord adapter on discord.py.

A mention of the bot (or of its own role, which Discord's mention picker offers for it), or
the ``/ops`` application command (``OPSBOT_SLASH_COMMAND``), starts a request; its steps go
into a thread created from the message (embeds, chart attachments, via
:mod:`opsbot.adapters.discord_render`; what does not fit in Discord's limits is attached as
``output.txt``). An open approval card carries Approve / Deny buttons whose ``custom_id`` is
``opsbot:<approve|deny>:<approval id>``; Deny asks for a reason in a modal
(``opsbot:deny-reason:<approval id>``). A suggested action is a button
``opsbot:action:<action id>`` whose click runs its invocation through ``Engine.click`` as the
clicker's own request. All of these are recognised by their ``custom_id``, so they keep working
after a restart or a reconnect. The clicker is the user of the interaction Discord sends
(``discord:<user id>``, roles as ``discord-role:<role id>``); what is for the clicker alone
(a refusal) is an ephemeral follow-up. Every interaction is acknowledged before the decision
(Discord wants an answer within 3 seconds). Every later state of an approval card is edited
into the message that shows it (known from posting it, or from the click on it, and kept in the
database, so a restart or another replica edits it too); once the card is decided its buttons
are gone. When handling a click raises, the thread is told and the card says the action failed.

The bot asks for no privileged intent (mentions carry their content without
MESSAGE_CONTENT); if Discord refuses the intents asked for (gateway close 4014), one log line
says which, and the adapter is off.

With several replicas (``opsbot serve`` sets :attr:`DiscordAdapter.leader_only`), only the
leader holds the gateway session (:meth:`DiscordAdapter.lead`, run while it leads); every
replica posts through the REST API (incidents, results of work it handles), and a new leader
connects within the lease's time.

Thread keys are ``discord:<channel or thread id>``. ``DISCORD_API_URL`` and
``DISCORD_GATEWAY_URL`` (optional) point the client at a proxy.
"""

from __future__ import annotations

import asyncio
import functools
import io
import re
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import discord
import structlog
import yarl
from discord import app_commands

from opsbot.adapters.base import CardRefs, Handler, discord_off, tell_busy
from opsbot.adapters.discord_render import MAX_CONTENT, OUTPUT, Rendered, render
from opsbot.adapters.work import Job, Work, queued
from opsbot.config import Settings
from opsbot.engine import Engine, Reply
from opsbot.model import ActionButton, Actor, Audience, ButtonStyle, Message, Request
from opsbot.store import first_time

log = structlog.get_logger(__name__)

PREFIX = "discord"
CUSTOM_ID = r"opsbot:(?P<verdict>approve|deny):(?P<approval_id>[a-z0-9]{4,16})"
ACTION_PREFIX = "opsbot:action:"
ACTION_ID = ACTION_PREFIX + r"(?P<action_id>.{1,86})"  # a custom_id holds 100 characters
REASON_PREFIX = "opsbot:deny-reason:"
STYLES = {
    ButtonStyle.PRIMARY: discord.ButtonStyle.primary,
    ButtonStyle.DANGER: discord.ButtonStyle.danger,
    ButtonStyle.DEFAULT: discord.ButtonStyle.secondary,
}
PRIVILEGED = ("members", "presences", "message_content")


off_reason = discord_off  # why the Discord adapter cannot run with given settings


P = ParamSpec("P")
R = TypeVar("R")


def tracked(
    method: Callable[Concatenate[DiscordAdapter, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[DiscordAdapter, P], Coroutine[Any, Any, R]]:
    """A handler counted as work in flight from its first line (a shutdown waits for it)."""

    async def run(adapter: DiscordAdapter, /, *args: P.args, **kwargs: P.kwargs) -> R:
        async with adapter.engine.inflight():
            return await method(adapter, *args, **kwargs)

    return functools.update_wrapper(run, method)


def thread_key(channel_id: int) -> str:
    return f"{PREFIX}:{channel_id}"


def command_name(settings: Settings) -> str:
    """The application command's name (``OPSBOT_SLASH_COMMAND`` without its slash)."""
    name = str(getattr(settings, "slash_command", "") or "/ops").strip().lstrip("/")
    return name.lower() or "ops"


def actor_of(user: discord.abc.User) -> Actor:
    roles = tuple(f"discord-role:{r.id}" for r in getattr(user, "roles", []) if not r.is_default())
    return Actor(id=f"{PREFIX}:{user.id}", display_name=f"<@{user.id}>", roles=roles)


def button(verdict: str, approval_id: str) -> discord.ui.Button[Any]:
    return discord.ui.Button(
        label="Approve" if verdict == "approve" else "Deny",
        style=discord.ButtonStyle.success if verdict == "approve" else discord.ButtonStyle.danger,
        custom_id=f"opsbot:{verdict}:{approval_id}",
    )


def view_of(rendered: Rendered) -> discord.ui.View | None:
    """The message's buttons: Approve / Deny while its card is open, then its suggested
    actions (at most 25 buttons in all); None when it has none."""
    items: list[discord.ui.Item[Any]] = []
    if rendered.card is not None and rendered.card.open:
        items += [ApprovalButton(v, rendered.card.approval_id) for v in ("approve", "deny")]
    for action in rendered.actions:
        if len(ACTION_PREFIX + action.id) > 100:
            log.warning("discord.action_id_too_long", action_id=action.id[:40])
            continue
        items.append(ActionClick.of(action))
    if not items:
        return None
    view = discord.ui.View(timeout=None)
    for item in items[:25]:
        view.add_item(item)
    return view


def _adapter(interaction: discord.Interaction[Any]) -> DiscordAdapter | None:
    client = interaction.client
    return client.adapter if isinstance(client, OpsbotClient) else None


class ApprovalButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID):
    """An Approve/Deny button that is recognised by its ``custom_id`` after any restart."""

    def __init__(self, verdict: str, approval_id: str) -> None:
        super().__init__(button(verdict, approval_id))
        self.verdict, self.approval_id = verdict, approval_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ApprovalButton:
        return cls(match["verdict"], match["approval_id"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        adapter = _adapter(interaction)
        if adapter is not None:
            await adapter.on_click(interaction, self.verdict, self.approval_id)


class ActionClick(discord.ui.DynamicItem[discord.ui.Button[Any]], template=ACTION_ID):
    """A suggested-action button (``opsbot:action:<id>``), recognised after any restart."""

    def __init__(
        self, action_id: str, label: str = "", style: ButtonStyle = ButtonStyle.DEFAULT
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=(label or action_id)[:80],
                style=STYLES[style],
                custom_id=ACTION_PREFIX + action_id,
            )
        )
        self.action_id = action_id

    @classmethod
    def of(cls, action: ActionButton) -> ActionClick:
        return cls(action.id, action.label, action.style)

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ActionClick:
        return cls(match["action_id"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        adapter = _adapter(interaction)
        if adapter is not None:
            await adapter.on_action(interaction, self.action_id)


class DenyReason(discord.ui.Modal):
    """The reason asked for on Deny. Its submission is handled by ``custom_id`` in
    ``on_interaction`` (so it works after a restart too); ``on_submit`` does nothing."""

    def __init__(self, approval_id: str) -> None:
        super().__init__(
            title=f"Deny request {approval_id}"[:45],
            custom_id=f"{REASON_PREFIX}{approval_id}",
            timeout=900,  # an interaction token's lifetime
        )
        self.add_item(
            discord.ui.TextInput(
                label="Why deny it? (optional)",
                custom_id="reason",
                style=discord.TextStyle.paragraph,
                required=False,
                max_length=1000,
            )
        )


def _submitted(components: Any, custom_id: str) -> str:
    """The value of the input ``custom_id`` in a modal submission's components."""
    for component in components or []:
        if not isinstance(component, dict):
            continue
        if component.get("custom_id") == custom_id and "value" in component:
            return str(component.get("value") or "")
        nested = component.get("components") or (
            [component["component"]] if "component" in component else []
        )
        found = _submitted(nested, custom_id)
        if found:
            return found
    return ""


class OpsbotClient(discord.Client):
    """The discord.py client of one adapter (its buttons find the adapter through it)."""

    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        super().__init__(**options)
        self.adapter = adapter


class DiscordAdapter:
    name = PREFIX

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        if settings.discord_api_url:  # discord.py keeps these as class attributes
            discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
        if settings.discord_gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
                settings.discord_gateway_url
            )
        # no privileged intent: mentions (of the bot or its role) carry their content anyway
        self.client = OpsbotClient(self, intents=discord.Intents.default())
        self.tree = app_commands.CommandTree(self.client)
        self.client.setup_hook = self._setup_hook  # type: ignore[method-assign]
        self.client.event(self.on_message)
        self.client.event(self.on_ready)
        self.client.event(self.on_interaction)
        self.cards = CardRefs(engine.services.store, PREFIX)
        #: requests from events wait here for a worker (OPSBOT_WORKERS, OPSBOT_QUEUE_LIMIT)
        self.work = Work(PREFIX, settings.workers, settings.queue_limit)
        self.command = command_name(settings)
        self._task: asyncio.Task[None] | None = None
        #: True: :meth:`start` only logs in (REST); the gateway connects in :meth:`lead`,
        #: which ``opsbot serve`` runs on the leader of the replicas
        self.leader_only = False
        self._logged_in = False

        @self.tree.command(
            name=self.command, description="Ask opsbot (metrics, alerts, logs, Kubernetes)"
        )
        @app_commands.describe(request="what you need, e.g. 'restart checkout in shop'")
        async def ops(interaction: discord.Interaction[Any], request: str) -> None:
            await self.on_command(interaction, request)

    def owns(self, thread: str) -> bool:
        return thread.startswith(f"{PREFIX}:")

    async def _setup_hook(self) -> None:
        self.client.add_dynamic_items(ApprovalButton, ActionClick)
        try:
            await self.tree.sync()
        except discord.HTTPException as exc:
            log.error(
                "discord.command_sync_failed",
                status=exc.status,
                error=str(exc)[:200],
                hint="the bot needs the applications.commands scope",
            )

    async def run(self) -> None:
        """Connect and serve until cancelled; reconnects are discord.py's (buttons survive
        them). Intents Discord refuses, or a token it does not know, end it with one line."""
        assert self.settings.discord_token
        try:
            async with self.client:
                await self.client.start(self.settings.discord_token)
        except discord.PrivilegedIntentsRequired:
            asked = [name for name in PRIVILEGED if getattr(self.client.intents, name)]
            log.error(
                "discord.intents_refused",
                missing=asked,
                effect="the Discord adapter is off",
                hint="enable them for the bot in the Developer Portal, or do not ask for them",
            )
        except discord.LoginFailure as exc:
            log.error("discord.login_failed", error=str(exc), effect="the Discord adapter is off")

    def routes(self) -> list[tuple[str, str, Handler]]:
        return []  # everything comes through the gateway

    async def start(self) -> None:
        """Connect in the background (:meth:`run`); a refused token or intents end it with
        one log line. With :attr:`leader_only`, log in for the REST API only (a token Discord
        refuses raises, with one log line): :meth:`lead` connects the gateway."""
        if self.leader_only:
            await self._login()
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="discord")

    async def _login(self) -> None:
        if self._logged_in:
            return
        assert self.settings.discord_token
        try:
            await self.client.login(self.settings.discord_token)
        except discord.LoginFailure as exc:
            log.error("discord.login_failed", error=str(exc), effect="the Discord adapter is off")
            raise
        self._logged_in = True

    async def lead(self) -> None:
        """Hold the gateway session until cancelled (the leader's singleton work): events and
        clicks come to this replica only. Cancelled (leadership lost, shutdown), it closes the
        session and keeps the REST client for the messages still to post."""
        await self._login()
        log.info("discord.gateway_connecting", reason="this replica leads")
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            asked = [name for name in PRIVILEGED if getattr(self.client.intents, name)]
            log.error(
                "discord.intents_refused",
                missing=asked,
                effect="the Discord gateway is off",
                hint="enable them for the bot in the Developer Portal, or do not ask for them",
            )
        finally:
            ws = self.client.ws
            if ws is not None and ws.open:
                await asyncio.shield(ws.close(code=1000))
            log.info("discord.gateway_closed")

    async def stop(self) -> None:
        await self.client.close()
        await self.work.stop()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def on_ready(self) -> None:
        log.info("discord.ready", user=str(self.client.user), guilds=len(self.client.guilds))

    # -- posting -------------------------------------------------------------------------

    async def update(self, message: Message) -> bool:
        """Edit the message showing ``message``'s approval card (False: none is known, or
        Discord refused the edit)."""
        rendered = render(message)
        if rendered.card is None:
            return False
        return await self._edit(rendered)

    async def _edit(self, rendered: Rendered) -> bool:
        assert rendered.card is not None
        where = await self.cards.recall(rendered.card.approval_id)
        if where is None:
            return False
        channel_id, _, message_id = where.partition(":")
        try:
            partial = self.client.get_partial_messageable(int(channel_id))
            await partial.get_partial_message(int(message_id)).edit(
                embeds=rendered.embeds, attachments=rendered.files, view=view_of(rendered)
            )
        except discord.HTTPException as exc:  # e.g. deleted: post the card anew
            log.warning("discord.edit_failed", status=exc.status, error=str(exc)[:200])
            return False
        return True

    async def post(self, message: Message) -> None:
        """Post one engine message into its thread. A message with an approval card whose
        message is known replaces that message (and its buttons)."""
        channel_id = int(message.thread.split(":", 1)[1])
        rendered = render(message)
        if rendered.card is not None and await self._edit(rendered):
            return
        view = view_of(rendered)
        channel = self.client.get_partial_messageable(channel_id)  # thread or channel
        try:
            try:
                sent = await channel.send(
                    embeds=rendered.embeds,
                    files=rendered.files,
                    view=view if view is not None else discord.utils.MISSING,
                )
            except discord.HTTPException as exc:
                if exc.code != 50035:  # Invalid Form Body: post it as a file instead
                    raise
                log.warning(
                    "discord.message_refused",
                    status=exc.status,
                    error=str(exc)[:300],
                    effect=f"posted as {OUTPUT}",
                )
                sent = await channel.send(
                    content=f"(this message did not fit Discord's limits: it is attached as "
                    f"{OUTPUT})",
                    file=discord.File(io.BytesIO(message.plain.encode()), filename=OUTPUT),
                    view=view if view is not None else discord.utils.MISSING,
                )
            if rendered.card is not None:
                await self.cards.remember(rendered.card.approval_id, f"{channel_id}:{sent.id}")
        except discord.HTTPException as exc:
            log.error(
                "discord.post_failed", channel=channel_id, status=exc.status, error=str(exc)[:200]
            )

    async def open_thread(self, channel: str, message: Message, title: str = "") -> tuple[str, str]:
        """Post ``message`` in the channel ``channel`` (an id) and create a thread from it,
        e.g. an incident's first message: (the thread's key, the message's reference
        ``channel:message`` for :meth:`edit_root`). Without permission to create threads the
        channel itself is the thread. Raises ``discord.HTTPException`` when Discord refuses
        the message, ``ValueError`` when ``channel`` is not a channel messages can go to."""
        channel_id = int(channel)
        found = self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)
        if not isinstance(found, discord.abc.Messageable):
            raise ValueError(f"channel {channel} takes no messages")
        rendered = render(message)
        view = view_of(rendered)
        sent = await found.send(
            embeds=rendered.embeds,
            files=rendered.files,
            view=view if view is not None else discord.utils.MISSING,
        )
        try:
            thread = await sent.create_thread(name=(title or "opsbot")[:90])
            thread_id = thread.id
        except (discord.HTTPException, ValueError) as exc:
            log.warning(
                "discord.thread_failed", error=str(exc)[:200], hint="grant Create Public Threads"
            )
            thread_id = channel_id
        return thread_key(thread_id), f"{channel_id}:{sent.id}"

    async def edit_root(self, root: str, message: Message) -> bool:
        """Replace the message at ``root`` (``channel:message``) with ``message``, its buttons
        too (False: Discord refused), e.g. an incident's first message once acknowledged."""
        channel_id, _, message_id = root.partition(":")
        rendered = render(message)
        try:
            partial = self.client.get_partial_messageable(int(channel_id))
            await partial.get_partial_message(int(message_id)).edit(
                embeds=rendered.embeds, attachments=rendered.files, view=view_of(rendered)
            )
        except discord.HTTPException as exc:
            log.warning("discord.edit_failed", status=exc.status, error=str(exc)[:200])
            return False
        return True

    # -- requests ------------------------------------------------------------------------

    def _addressed(self, message: discord.Message) -> bool:
        """Whether ``message`` mentions the bot, or the bot's own role."""
        me = self.client.user
        if me is None:
            return False
        if me in message.mentions:
            return True
        guild = message.guild
        own = guild.self_role if guild is not None else None
        return own is not None and own in message.role_mentions

    @tracked
    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user
        if message.author.bot or me is None or not self._addressed(message):
            return
        if not await first_time(self.engine.services.store, f"discord:message:{message.id}"):
            return
        text = re.sub(rf"<@!?{me.id}>", "", message.content)
        guild = message.guild
        own = guild.self_role if guild is not None else None
        if own is not None:
            text = text.replace(f"<@&{own.id}>", "")
        text = text.strip()
        opened = False
        if isinstance(message.channel, discord.Thread):
            thread_id = message.channel.id
        else:
            try:
                thread = await message.create_thread(name=(text or "opsbot")[:90])
                thread_id, opened = thread.id, True
            except discord.HTTPException as exc:  # no permission to create threads: answer in place
                log.warning(
                    "discord.thread_failed", status=exc.status, hint="grant Create Public Threads"
                )
                thread_id = message.channel.id
        request = Request(
            actor=actor_of(message.author),
            channel=str(message.channel.id),
            text=text,
            thread=thread_key(thread_id),
            new_thread=opened,
        )
        await self._queue(request, functools.partial(self.engine.handle, request, self.post))

    async def _queue(self, request: Request, job: Job) -> None:
        """Run ``job`` through the worker pool, in order with its thread's other requests; a
        full queue is told in the thread at once (and audited), and nothing runs."""
        await queued(
            self.work,
            request.thread_key,
            job,
            lambda waiting: tell_busy(
                self.engine,
                self.post,
                request.thread_key,
                request.actor.id,
                request.channel,
                request.text,
                waiting,
            ),
        )

    async def _mine(self, interaction: discord.Interaction[Any]) -> bool:
        """Every replica's gateway session receives each interaction; one answers it."""
        return await first_time(self.engine.services.store, f"discord:interaction:{interaction.id}")

    @tracked
    async def on_command(self, interaction: discord.Interaction[Any], text: str) -> None:
        if not await self._mine(interaction):
            return
        await interaction.response.send_message(
            f"{interaction.user.mention} asked: {text}"[:MAX_CONTENT]
        )
        original = await interaction.original_response()
        opened = False
        try:
            thread = await original.create_thread(name=text[:90] or "opsbot")
            thread_id, opened = thread.id, True
        except discord.HTTPException:
            thread_id = original.channel.id
        request = Request(
            actor=actor_of(interaction.user),
            channel=str(interaction.channel_id),
            text=text,
            thread=thread_key(thread_id),
            new_thread=opened,
        )
        await self._queue(request, functools.partial(self.engine.handle, request, self.post))

    # -- clicks --------------------------------------------------------------------------

    async def _clicked(self, interaction: discord.Interaction[Any]) -> tuple[Reply, list[str]]:
        """Acknowledge a click at once (the work may take longer than Discord's 3 seconds);
        the reply posts into the thread, keeping what is for the clicker alone aside."""
        await interaction.response.defer()
        for_clicker: list[str] = []

        async def reply(message: Message) -> None:
            if message.audience is Audience.CLICKER:
                for_clicker.append("\n".join(e.description or "" for e in render(message).embeds))
            else:
                await self.post(message)

        return reply, for_clicker

    async def _answer_clicker(
        self, interaction: discord.Interaction[Any], for_clicker: list[str]
    ) -> None:
        if for_clicker:
            await interaction.followup.send("\n".join(for_clicker)[:MAX_CONTENT], ephemeral=True)

    async def _remember_clicked(
        self, interaction: discord.Interaction[Any], approval_id: str
    ) -> None:
        if interaction.message is not None:  # the card is the clicked message
            await self.cards.remember(
                approval_id, f"{interaction.message.channel.id}:{interaction.message.id}"
            )

    @tracked
    async def on_click(
        self, interaction: discord.Interaction[Any], verdict: str, approval_id: str
    ) -> None:
        """Approve / Deny on an approval card (Deny first asks for a reason)."""
        if not await self._mine(interaction):
            return
        await self._remember_clicked(interaction, approval_id)
        if verdict == "deny":
            await interaction.response.send_modal(DenyReason(approval_id))
            return
        await self._decide(interaction, approval_id, verdict, "")

    @tracked
    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """A submitted Deny reason (``opsbot:deny-reason:<approval id>``)."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id") or "")
        if not custom_id.startswith(REASON_PREFIX) or not await self._mine(interaction):
            return
        approval_id = custom_id.removeprefix(REASON_PREFIX)
        await self._remember_clicked(interaction, approval_id)
        reason = _submitted(data.get("components"), "reason").strip()
        await self._decide(interaction, approval_id, "deny", reason)

    async def _decide(
        self, interaction: discord.Interaction[Any], approval_id: str, verdict: str, reason: str
    ) -> None:
        reply, for_clicker = await self._clicked(interaction)
        await self.engine.decide(  # a failure is reported by the engine, through the reply
            approval_id,
            actor_of(interaction.user),
            verdict,
            reply,
            reason=reason,
            channel=str(interaction.channel_id),
            thread=thread_key(interaction.channel_id) if interaction.channel_id else "",
        )
        await self._answer_clicker(interaction, for_clicker)

    @tracked
    async def on_action(self, interaction: discord.Interaction[Any], action_id: str) -> None:
        """A suggested action: its invocation runs as the clicker's own request."""
        if not await self._mine(interaction):
            return
        reply, for_clicker = await self._clicked(interaction)
        clicker, channel = actor_of(interaction.user), str(interaction.channel_id)

        async def click() -> None:
            await self.engine.click(action_id, clicker, reply, channel=channel)
            await self._answer_clicker(interaction, for_clicker)

        request = Request(
            actor=clicker,
            channel=channel,
            text=f"(clicked {action_id})",
            thread=thread_key(interaction.channel_id) if interaction.channel_id else action_id,
        )
        await self._queue(request, click)
