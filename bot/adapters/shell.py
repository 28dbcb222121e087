"""Terminal adapter: renders engine messages with rich (plain text when piped) and runs the
interactive ``opsbot shell``.

In the shell, a line is a request by the current identity, except:
``/as shell:bob`` switches identity, ``approve ID`` / ``deny ID [reason]`` decide an approval
as the current identity, ``run ID`` clicks a suggested action shown in this shell (it runs as
the current identity's own request), ``/help`` lists these, ``/quit`` (or Ctrl-D) leaves.
The line after the bot asked the current identity a question goes into that question's
thread, so a short answer ("shop") completes the request.
Text is converted from the neutral markup to rich's by :func:`to_rich` (styles are dropped
when the output is not a terminal). An approval card is printed in full the first time and as
its state line on every later change. Charts are written under ``OPSBOT_CHART_DIR`` and their
paths printed.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from opsbot.adapters.markup import Dialect, card_votes, convert
from opsbot.engine import Engine
from opsbot.model import (
    ActionButton,
    Actor,
    ApprovalCard,
    Code,
    Image,
    Message,
    Request,
    Step,
    Table,
    Text,
)

STEP_STYLE = {
    Step.PLAN: "dim cyan",
    Step.POLICY: "dim magenta",
    Step.APPROVAL: "bold yellow",
    Step.RESULT: "green",
    Step.ERROR: "bold red",
    Step.ANSWER: "white",
    Step.RECEIVED: "dim",
}
SHELL_HELP = (
    "Type a request (e.g. 'show firing alerts', 'graph up over the last 30m').\n"
    "  /as shell:bob        act as another identity\n"
    "  approve ID           approve a pending request as the current identity\n"
    "  deny ID [reason]     deny it\n"
    "  run ID               run a suggested action shown above, as your own request\n"
    "  /quit                leave"
)


def _link(label: str, url: str) -> str:
    shown = f"[link={url}]{label}[/link]"
    return shown if label == escape(url) else f"{shown} ({escape(url)})"


RICH = Dialect(
    literal=escape,
    bold=lambda inner: f"[bold]{inner}[/bold]",
    italic=lambda inner: f"[italic]{inner}[/italic]",
    code=lambda code: f"[cyan]`{escape(code)}`[/cyan]",
    link=_link,
)


def to_rich(text: str) -> str:
    """Neutral markup -> rich markup: ``**b**`` bold, ``_i_`` italic, `` `c` `` kept in
    backticks (coloured), ``[l](u)`` a link followed by its address; a literal ``[`` escaped.
    The result goes inside a style tag (``[green]…[/green]``), as rich's ``escape`` expects."""
    return convert(text, RICH)


class ShellRenderer:
    """Prints messages to a console; saves images to ``chart_dir``."""

    def __init__(self, console: Console, chart_dir: Path) -> None:
        self.console = console
        self.chart_dir = chart_dir
        self._charts = 0
        self.messages: list[Message] = []
        #: suggested actions shown here, which ``run ID`` may click
        self.offered: set[str] = set()
        #: the thread whose question each identity was asked last: their next line goes there
        self.asked: dict[str, str] = {}
        self._cards: set[str] = set()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self.render(message)

    def save_image(self, image: Image, thread: str) -> str:
        self.chart_dir.mkdir(parents=True, exist_ok=True)
        self._charts += 1
        slug = re.sub(r"[^a-z0-9]+", "-", image.title.lower()).strip("-")[:40] or "chart"
        path = self.chart_dir / f"{thread}-{self._charts}-{slug}.png"
        path.write_bytes(image.data)
        return str(path.resolve())

    def _say(self, prefix: str, markup: str, style: str) -> None:
        """One line of rich markup after the prefix (styles show only on a terminal)."""
        self.console.print(
            f"[dim]{escape(prefix)}[/dim][{style}]{markup}[/{style}]", soft_wrap=True
        )

    def _literal(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _code(self, code: str, prefix: str, plain: bool) -> None:
        if plain:
            for line in code.splitlines():
                self._literal(prefix + "    " + line)
        else:
            from rich.syntax import Syntax  # pygments: loaded for the first code block

            self.console.print(Syntax(code, "text", word_wrap=True, padding=(0, 2)))

    def _card(self, card: ApprovalCard, prefix: str, style: str, plain: bool) -> None:
        """In full the first time; later (the terminal cannot edit what it printed) only the
        line with the new state and the votes: the change itself is a message of its own."""
        first = card.approval_id not in self._cards
        self._cards.add(card.approval_id)
        self._say(prefix, to_rich(card.head()), style)
        if first and card.preview:
            self._code(card.preview, prefix, plain)
        if first and card.status:
            self._say(prefix, to_rich(card.status), style)
        votes = card_votes(card, str)
        if votes:
            self._say(prefix, to_rich(votes), style)
        if card.open:
            self._literal(
                f"{prefix}buttons: [Approve] [Deny]  ->  type `approve {card.approval_id}` or "
                f"`deny {card.approval_id} REASON` as an approver (/as ...)"
            )

    def render(self, message: Message) -> None:
        style = STEP_STYLE.get(message.step, "default")
        prefix = f"[{message.thread}] {message.step.value:>8} │ "
        plain = not self.console.is_terminal
        for block in message.blocks:
            if isinstance(block, Text):
                self._say(prefix, to_rich(block.text), style)
            elif isinstance(block, Code):
                self._code(block.code, prefix, plain)
            elif isinstance(block, Table):
                self._table(block, prefix, plain)
            elif isinstance(block, Image):
                block.path = block.path or self.save_image(block, message.thread)
                self._literal(f"{prefix}chart: {block.path}")
            elif isinstance(block, ApprovalCard):
                self._card(block, prefix, style, plain)
            elif isinstance(block, ActionButton):
                self.offered.add(block.id)
                self._literal(f"{prefix}action: [{block.label}]  ->  type `run {block.id}`")

    def _table(self, table: Table, prefix: str, plain: bool) -> None:
        if plain:
            self.console.print(
                prefix + " | ".join(table.columns), markup=False, highlight=False, soft_wrap=True
            )
            for row in table.rows:
                self.console.print(
                    prefix + " | ".join(row), markup=False, highlight=False, soft_wrap=True
                )
        else:
            rich_table = RichTable(*table.columns, show_lines=False, header_style="bold")
            for row in table.rows:
                rich_table.add_row(*[escape(c) for c in row])
            self.console.print(rich_table)
        if table.note:
            self.console.print(
                f"{prefix}({table.note})", markup=False, highlight=False, soft_wrap=True
            )


async def run_command(
    engine: Engine, renderer: ShellRenderer, actor: Actor, line: str, channel: str = "shell"
) -> None:
    """One shell line by ``actor``: an approval command, a click on a suggested action shown
    in this shell (``run ID``), or a request. A request right after a question the bot asked
    ``actor`` goes into that question's thread, so a short answer ("shop") completes it."""
    words = (
        shlex.split(line) if line.count('"') % 2 == 0 and line.count("'") % 2 == 0 else line.split()
    )
    if (
        len(words) >= 2
        and words[0].lower() in ("approve", "deny")
        and re.fullmatch(r"#?[a-z0-9]{4,12}", words[1].lower())
    ):
        verdict = words[0].lower()
        await engine.decide(
            words[1], actor, verdict, renderer, reason=" ".join(words[2:]), channel=channel
        )
        return
    asked = renderer.asked.pop(actor.id, "")
    if len(words) == 2 and words[0].lower() == "run" and words[1] in renderer.offered:
        await engine.click(words[1], actor, renderer, channel=channel)
        return
    request = Request(actor=actor, channel=channel, text=line, thread=asked)
    await engine.handle(request, renderer)
    if await engine.awaits_answer(request.thread_key, actor):
        renderer.asked[actor.id] = request.thread_key


async def interactive(engine: Engine, console: Console, actor: Actor, chart_dir: Path) -> None:
    renderer = ShellRenderer(console, chart_dir)
    console.print(f"opsbot shell as {actor.id}. /help for commands, /quit to leave.", markup=False)
    while True:
        try:
            line = await asyncio.to_thread(console.input, f"{actor.user}> ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit", "quit", "exit"):
            return
        if line == "/help":
            console.print(SHELL_HELP, markup=False)
            continue
        if line.startswith("/as "):
            identity = line[4:].strip()
            if not re.fullmatch(r"[a-z-]+:[\w.@-]+", identity):
                console.print("usage: /as platform:user   e.g. /as shell:bob", markup=False)
                continue
            actor = Actor(id=identity)
            console.print(f"now acting as {actor.id}", markup=False)
            continue
        # every thread here is this terminal's, so the shell is where its expiries are told
        await engine.sweep_expired(renderer)
        await run_command(engine, renderer, actor, line)
