"""Terminal adapter: renders engine messages with rich (plain text when piped) and runs the
interactive ``opsbot shell``.

In the shell, a line is a request by the current identity, except:
``/as shell:bob`` switches identity, ``approve ID`` / ``deny ID [reason]`` decide an approval
as the current identity, ``/help`` lists these, ``/quit`` (or Ctrl-D) leaves.
Charts are written under ``OPSBOT_CHART_DIR`` and their paths printed.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path

from opsbot.engine import Engine
from opsbot.model import Actor, Buttons, Code, Image, Message, Request, Step, Table, Text
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table as RichTable

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
    "  /quit                leave"
)


class ShellRenderer:
    """Prints messages to a console; saves images to ``chart_dir``."""

    def __init__(self, console: Console, chart_dir: Path) -> None:
        self.console = console
        self.chart_dir = chart_dir
        self._charts = 0
        self.messages: list[Message] = []

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

    def render(self, message: Message) -> None:
        style = STEP_STYLE.get(message.step, "")
        prefix = f"[{message.thread}] {message.step.value:>8} │ "
        plain = not self.console.is_terminal
        for block in message.blocks:
            if isinstance(block, Text):
                if plain:
                    self.console.print(
                        prefix + block.text, markup=False, highlight=False, soft_wrap=True
                    )
                else:
                    self.console.print(
                        f"[dim]{escape(prefix)}[/dim][{style}]{escape(block.text)}[/{style}]",
                        soft_wrap=True,
                    )
            elif isinstance(block, Code):
                if plain:
                    for line in block.code.splitlines():
                        self.console.print(
                            prefix + "    " + line, markup=False, highlight=False, soft_wrap=True
                        )
                else:
                    self.console.print(Syntax(block.code, "text", word_wrap=True, padding=(0, 2)))
            elif isinstance(block, Table):
                self._table(block, prefix, plain)
            elif isinstance(block, Image):
                block.path = block.path or self.save_image(block, message.thread)
                self.console.print(
                    f"{prefix}chart: {block.path}", markup=False, highlight=False, soft_wrap=True
                )
            elif isinstance(block, Buttons):
                ids = {b.value for b in block.buttons}
                for approval_id in ids:
                    self.console.print(
                        f"{prefix}buttons: [Approve] [Deny]  ->  type `approve {approval_id}` or "
                        f"`deny {approval_id} REASON` as an approver (/as ...)",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )

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
    """One shell line by ``actor``: an approval command or a request."""
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
    await engine.handle(Request(actor=actor, channel=channel, text=line), renderer)


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
        await run_command(engine, renderer, actor, line)
