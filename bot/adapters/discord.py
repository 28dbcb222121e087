"""Discord adapter on discord.py.

A mention of the bot, or the ``/ops`` application command, starts a request; its steps go
into a thread created from the message (embeds, chart attachments, via
:mod:`opsbot.adapters.discord_render`). Approval requests carry Approve / Deny buttons whose
``custom_id`` is ``opsbot:<approve|deny>:<approval id>``, registered as a dynamic item, so
they keep working after a restart or a reconnect. The approver is the user of the
interaction Discord sends (``discord:<user id>``, roles as ``discord-role:<role id>``); a
click that may not decide gets an ephemeral answer and changes nothing; a decided request's
message is edited and its buttons disabled.

Thread keys are ``discord:<channel or thread id>``. ``DISCORD_API_URL`` and
``DISCORD_GATEWAY_URL`` (optional) point the client at a proxy.
"""

from __future__ import annotations

import re
from typing import Any

import discord
import structlog
import yarl
from discord import app_commands
from opsbot.adapters.discord_render import render
from opsbot.approvals import Approval, State, VoteStatus
from opsbot.config import Settings
from opsbot.engine import Engine
from opsbot.model import Actor, Message, Request, Step
from opsbot.store import first_time

log = structlog.get_logger(__name__)

PREFIX = "discord"
CUSTOM_ID = r"opsbot:(?P<verdict>approve|deny):(?P<approval_id>[a-z0-9]{4,16})"


def off_reason(settings: Settings) -> str | None:
    return None if settings.discord_token else "DISCORD_TOKEN is not set"


def thread_key(channel_id: int) -> str:
    return f"{PREFIX}:{channel_id}"


def actor_of(user: discord.abc.User) -> Actor:
    roles = tuple(f"discord-role:{r.id}" for r in getattr(user, "roles", []) if not r.is_default())
    return Actor(id=f"{PREFIX}:{user.id}", display_name=f"<@{user.id}>", roles=roles)


def button(verdict: str, approval_id: str, *, disabled: bool = False) -> discord.ui.Button[Any]:
    return discord.ui.Button(
        label="Approve" if verdict == "approve" else "Deny",
        style=discord.ButtonStyle.success if verdict == "approve" else discord.ButtonStyle.danger,
        custom_id=f"opsbot:{verdict}:{approval_id}",
        disabled=disabled,
    )


def approval_view(approval_id: str, *, disabled: bool = False) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for verdict in ("approve", "deny"):
        view.add_item(ApprovalButton(verdict, approval_id, disabled=disabled))
    return view


class ApprovalButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID):
    """An Approve/Deny button that is recognised by its ``custom_id`` after any restart."""

    adapter: DiscordAdapter | None = None

    def __init__(self, verdict: str, approval_id: str, *, disabled: bool = False) -> None:
        super().__init__(button(verdict, approval_id, disabled=disabled))
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

        @self.tree.command(name="ops", description="Ask opsbot (metrics, alerts, logs, Kubernetes)")
        @app_commands.describe(request="what you need, e.g. 'restart checkout in shop'")
        async def ops(interaction: discord.Interaction[Any], request: str) -> None:
            await self.on_command(interaction, request)

    async def _setup_hook(self) -> None:
        self.client.add_dynamic_items(ApprovalButton)
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

    async def post(self, message: Message) -> None:
        channel_id = int(message.thread.split(":", 1)[1])
        channel = self.client.get_partial_messageable(
            channel_id
        )  # a thread or a channel: REST only
        rendered = render(message)
        view = (
            approval_view(rendered.approval_ids[0])
            if rendered.approval_ids
            else discord.utils.MISSING
        )
        try:
            await channel.send(embeds=rendered.embeds, files=rendered.files, view=view)
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

    # -- approvals -----------------------------------------------------------------------

    async def on_click(
        self, interaction: discord.Interaction[Any], verdict: str, approval_id: str
    ) -> None:
        if not await self._mine(interaction):
            return
        # answer within Discord's 3 seconds; the decision may take longer
        await interaction.response.defer()
        refusals: list[str] = []

        async def reply(message: Message) -> None:
            if message.step is Step.ERROR:  # a refusal is for the clicker's eyes only
                refusals.append(message.plain)
            else:
                await self.post(message)

        outcome = await self.engine.decide(
            approval_id,
            actor_of(interaction.user),
            verdict,
            reply,
            channel=str(interaction.channel_id),
        )
        if refusals:
            await interaction.followup.send("\n".join(refusals)[:2000], ephemeral=True)
        if outcome.status in (VoteStatus.APPROVED, VoteStatus.RECORDED, VoteStatus.DENIED):
            approval = await self.engine.services.approvals.get(approval_id)
            if approval is not None:
                await interaction.edit_original_response(
                    content=decision_line(approval, interaction.user.mention),
                    view=approval_view(approval_id, disabled=approval.state is not State.PENDING),
                )


def decision_line(approval: Approval, by: str) -> str:
    if approval.state is State.PENDING:
        return f"Approval `{approval.id}`: {approval.approvals}/{approval.min_approvals} approvals (latest {by})"
    result = f" — {approval.result[:300]}" if approval.result else ""
    return f"Approval `{approval.id}` {approval.outcome} by {by}{result}"
