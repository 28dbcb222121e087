"""Discord adapter on discord.py.

A mention of the bot, or the ``/ops`` application command, starts a request; its steps go
into a thread created from the message (embeds, chart attachments, via
:mod:`opsbot.adapters.discord_render`). An open approval card carries Approve / Deny buttons
whose ``custom_id`` is ``opsbot:<approve|deny>:<approval id>``; a suggested action is a button
``opsbot:action:<action id>`` whose click runs its invocation through ``Engine.click`` as the
clicker's own request. Both are registered as dynamic items, so they keep working after a
restart or a reconnect. The clicker is the user of the interaction Discord sends
(``discord:<user id>``, roles as ``discord-role:<role id>``); what is for the clicker alone
(a refusal) is an ephemeral follow-up. Every later state of an approval card is edited into
the message that shows it (known from posting it, or from the click on it); once the card is
decided its buttons are gone.

Thread keys are ``discord:<channel or thread id>``. ``DISCORD_API_URL`` and
``DISCORD_GATEWAY_URL`` (optional) point the client at a proxy.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import discord
import structlog
import yarl
from discord import app_commands

from opsbot.adapters.discord_render import Rendered, render
from opsbot.config import Settings
from opsbot.engine import Engine, Reply
from opsbot.model import ActionButton, Actor, Audience, ButtonStyle, Message, Request
from opsbot.store import first_time

log = structlog.get_logger(__name__)

PREFIX = "discord"
CUSTOM_ID = r"opsbot:(?P<verdict>approve|deny):(?P<approval_id>[a-z0-9]{4,16})"
ACTION_PREFIX = "opsbot:action:"
ACTION_ID = ACTION_PREFIX + r"(?P<action_id>.{1,86})"  # a custom_id holds 100 characters
MAX_CARDS = 2000  # approval cards whose message this process remembers (oldest forgotten)
STYLES = {
    ButtonStyle.PRIMARY: discord.ButtonStyle.primary,
    ButtonStyle.DANGER: discord.ButtonStyle.danger,
    ButtonStyle.DEFAULT: discord.ButtonStyle.secondary,
}


def off_reason(settings: Settings) -> str | None:
    return None if settings.discord_token else "DISCORD_TOKEN is not set"


def thread_key(channel_id: int) -> str:
    return f"{PREFIX}:{channel_id}"


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


class ApprovalButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID):
    """An Approve/Deny button that is recognised by its ``custom_id`` after any restart."""

    adapter: DiscordAdapter | None = None

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
        if ApprovalButton.adapter is not None:
            await ApprovalButton.adapter.on_click(interaction, self.verdict, self.approval_id)


class ActionClick(discord.ui.DynamicItem[discord.ui.Button[Any]], template=ACTION_ID):
    """A suggested-action button (``opsbot:action:<id>``), recognised after any restart."""

    adapter: DiscordAdapter | None = None

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
        if ActionClick.adapter is not None:
            await ActionClick.adapter.on_action(interaction, self.action_id)


class DiscordAdapter:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        if settings.discord_api_url:  # discord.py keeps these as class attributes
            discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
        if settings.discord_gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
                settings.discord_gateway_url
            )
        intents = (
            discord.Intents.default()
        )  # mentions carry their content without the privileged intent
        self.client = discord.Client(intents=intents)
        self.tree = app_commands.CommandTree(self.client)
        self.client.setup_hook = self._setup_hook  # type: ignore[method-assign]
        self.client.event(self.on_message)
        self.client.event(self.on_ready)
        ApprovalButton.adapter = self
        ActionClick.adapter = self
        #: approval id -> (channel id, message id) of the message showing its card
        self._cards: OrderedDict[str, tuple[int, int]] = OrderedDict()

        @self.tree.command(name="ops", description="Ask opsbot (metrics, alerts, logs, Kubernetes)")
        @app_commands.describe(request="what you need, e.g. 'restart checkout in shop'")
        async def ops(interaction: discord.Interaction[Any], request: str) -> None:
            await self.on_command(interaction, request)

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
        """Connect and serve until cancelled; reconnects are discord.py's (buttons survive them)."""
        assert self.settings.discord_token
        async with self.client:
            await self.client.start(self.settings.discord_token)

    async def on_ready(self) -> None:
        log.info("discord.ready", user=str(self.client.user), guilds=len(self.client.guilds))

    # -- posting -------------------------------------------------------------------------

    def _remember(self, approval_id: str, channel_id: int, message_id: int) -> None:
        self._cards[approval_id] = (channel_id, message_id)
        self._cards.move_to_end(approval_id)
        while len(self._cards) > MAX_CARDS:
            self._cards.popitem(last=False)

    async def post(self, message: Message) -> None:
        """Post one engine message into its thread. A message with an approval card whose
        message is known replaces that message (and its buttons)."""
        channel_id = int(message.thread.split(":", 1)[1])
        rendered = render(message)
        view = view_of(rendered)
        card = rendered.card
        where = self._cards.get(card.approval_id) if card is not None else None
        try:
            if where is not None:
                try:
                    partial = self.client.get_partial_messageable(where[0])
                    await partial.get_partial_message(where[1]).edit(
                        embeds=rendered.embeds, attachments=rendered.files, view=view
                    )
                    return
                except discord.HTTPException as exc:  # e.g. deleted: post the card anew
                    log.warning("discord.edit_failed", status=exc.status, error=str(exc)[:200])
            channel = self.client.get_partial_messageable(channel_id)  # thread or channel
            sent = await channel.send(
                embeds=rendered.embeds,
                files=rendered.files,
                view=view if view is not None else discord.utils.MISSING,
            )
            if card is not None:
                self._remember(card.approval_id, channel_id, sent.id)
        except discord.HTTPException as exc:
            log.error(
                "discord.post_failed", channel=channel_id, status=exc.status, error=str(exc)[:200]
            )

    # -- requests ------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user
        if message.author.bot or me is None or me not in message.mentions:
            return
        if not await first_time(self.engine.services.store, f"discord:message:{message.id}"):
            return
        text = re.sub(rf"<@!?{me.id}>", "", message.content).strip()
        if isinstance(message.channel, discord.Thread):
            thread_id = message.channel.id
        else:
            try:
                thread = await message.create_thread(name=(text or "opsbot")[:90])
                thread_id = thread.id
            except discord.HTTPException as exc:  # no permission to create threads: answer in place
                log.warning(
                    "discord.thread_failed", status=exc.status, hint="grant Create Public Threads"
                )
                thread_id = message.channel.id
        await self.engine.handle(
            Request(
                actor=actor_of(message.author),
                channel=str(message.channel.id),
                text=text,
                thread=thread_key(thread_id),
            ),
            self.post,
        )

    async def _mine(self, interaction: discord.Interaction[Any]) -> bool:
        """Every replica's gateway session receives each interaction; one answers it."""
        return await first_time(self.engine.services.store, f"discord:interaction:{interaction.id}")

    async def on_command(self, interaction: discord.Interaction[Any], text: str) -> None:
        if not await self._mine(interaction):
            return
        await interaction.response.send_message(f"{interaction.user.mention} asked: {text}"[:2000])
        original = await interaction.original_response()
        try:
            thread = await original.create_thread(name=text[:90] or "opsbot")
            thread_id = thread.id
        except discord.HTTPException:
            thread_id = original.channel.id
        await self.engine.handle(
            Request(
                actor=actor_of(interaction.user),
                channel=str(interaction.channel_id),
                text=text,
                thread=thread_key(thread_id),
            ),
            self.post,
        )

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
            await interaction.followup.send("\n".join(for_clicker)[:2000], ephemeral=True)

    async def on_click(
        self, interaction: discord.Interaction[Any], verdict: str, approval_id: str
    ) -> None:
        """Approve / Deny on an approval card."""
        if not await self._mine(interaction):
            return
        if interaction.message is not None:  # the card is the clicked message
            self._remember(approval_id, interaction.message.channel.id, interaction.message.id)
        reply, for_clicker = await self._clicked(interaction)
        await self.engine.decide(
            approval_id,
            actor_of(interaction.user),
            verdict,
            reply,
            channel=str(interaction.channel_id),
        )
        await self._answer_clicker(interaction, for_clicker)

    async def on_action(self, interaction: discord.Interaction[Any], action_id: str) -> None:
        """A suggested action: its invocation runs as the clicker's own request."""
        if not await self._mine(interaction):
            return
        reply, for_clicker = await self._clicked(interaction)
        await self.engine.click(
            action_id, actor_of(interaction.user), reply, channel=str(interaction.channel_id)
        )
        await self._answer_clicker(interaction, for_clicker)
