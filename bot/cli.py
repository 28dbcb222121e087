"""The ``opsbot`` command line (typer), as in DESIGN.md's "Command line" contract.

Errors are turned into messages in one place, :class:`Cli` (the command group): a problem the
user can fix (:class:`~opsbot.errors.OpsbotError`: a bad setting, database URL or policy; a
bad command line; a port in use; a missing file) prints one or two lines naming it and the
fix, and exits 1 (64 for a bad command line); ``--debug`` or ``OPSBOT_LOG_LEVEL=debug`` shows
the traceback instead. ``opsbot ask`` exits with the request's outcome (:data:`ASK_EXIT`).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import io
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table as RichTable
from typer.core import TyperGroup

from opsbot.config import Settings, load_settings
from opsbot.durations import parse_duration
from opsbot.errors import ConfigError, OpsbotError
from opsbot.model import Actor, Outcome
from opsbot.policy import Allow, Deny, Policy, PolicyError, closest
from opsbot.telemetry import configure_logging

if TYPE_CHECKING:
    from opsbot.adapters.shell import ShellRenderer
    from opsbot.model import ApprovalCard, Message
    from opsbot.services import Services

T = TypeVar("T")
#: the click that typer runs on (recent typers vendor their own copy, ``typer._click``)
_click: Any = sys.modules[typer.BadParameter.__module__]

#: exit code of a bad command line (sysexits' EX_USAGE): not 2, which ``ask`` uses for "denied"
USAGE = 64
#: ``opsbot ask``'s exit code by outcome (README, "Exit codes"); 4: the backend it needs is
#: not configured (a failure or error whose skill's backend misses settings)
ASK_EXIT = {
    Outcome.OK: 0,
    Outcome.APPROVAL: 0,
    Outcome.FAILED: 1,
    Outcome.ERROR: 1,
    Outcome.DENIED: 2,
    Outcome.CLARIFY: 3,
    Outcome.UNMATCHED: 3,
}
NOT_CONFIGURED = 4


class _Debug:
    """Whether errors show their traceback: ``--debug`` or ``OPSBOT_LOG_LEVEL=debug``."""

    on = False


def _log_level(default: str) -> str:
    level = os.environ.get("OPSBOT_LOG_LEVEL", "").upper()
    if _Debug.on:
        return "DEBUG"
    return level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else default


def _say(line: str) -> None:
    typer.echo(line, err=True)


def explain_error(exc: BaseException) -> int:
    """Print what went wrong and how to fix it (one or two lines), return the exit code."""
    if isinstance(exc, _click.UsageError):
        command = exc.ctx.command_path if exc.ctx else "opsbot"
        _say(f"error: {exc.format_message()}")
        _say(f"  see `{command} --help`")
        return USAGE
    if isinstance(exc, _click.ClickException):
        _say(f"error: {exc.format_message()}")
        return int(exc.exit_code)
    if isinstance(exc, typer.Abort):
        _say("aborted")
        return 1
    if isinstance(exc, OpsbotError):
        for line in exc.message.splitlines():
            _say(f"{exc.label}: {line}")
        if exc.hint:
            _say(f"  {exc.hint}")
        return 1
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        _say(f"error: cannot listen: {exc.strerror or exc}")
        _say("  another process listens there: stop it, or set OPSBOT_HTTP_PORT (OPSBOT_HTTP_HOST)")
        return 1
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        _say(f"error: {exc.strerror or exc}{where}")
        return 1
    _say(f"error: unexpected {type(exc).__name__}: {exc}")
    _say("  this is a bug in opsbot; run again with --debug to see where")
    return 1


class Cli(TyperGroup):
    """opsbot's command group: the one place where errors become messages and exit codes."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        _Debug.on = os.environ.get("OPSBOT_LOG_LEVEL", "").lower() == "debug"
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Exit as exc:
            code = exc.exit_code
        except Exception as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # ``opsbot``: the help is printed
                code = USAGE
            elif _Debug.on and not isinstance(exc, _click.ClickException):
                raise
            else:
                code = explain_error(exc)
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=Cli,
    name="opsbot",
    no_args_is_help=True,
    add_completion=False,
    help="opsbot: ChatOps with approvals and an audit log.",
)
audit_app = typer.Typer(no_args_is_help=True, help="Review the tamper-evident audit log.")
policy_app = typer.Typer(no_args_is_help=True, help="Validate and explain policies.")
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")


def _identity(value: str | None) -> str | None:
    if value is not None and (":" not in value or value.startswith(":") or value.endswith(":")):
        raise typer.BadParameter(f"takes platform:user (e.g. shell:alice), not {value!r}")
    return value


def _duration(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_duration(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


AsOption = Annotated[
    str,
    typer.Option("--as", help="Who you are: platform:user, e.g. shell:alice.", callback=_identity),
]
SinceOption = Annotated[
    str | None,
    typer.Option(help="Only records newer than this, e.g. 30m, 2h, 1d.", callback=_duration),
]
ActorFilter = Annotated[
    str | None, typer.Option("--actor", help="Only records whose actor contains this.")
]
SkillFilter = Annotated[str | None, typer.Option("--skill", help="Only records of this skill.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(fn())  # type: ignore[arg-type]


def _with_services(
    fn: Callable[[Services], Awaitable[T]],
    settings: Settings | None = None,
    backends: dict[str, dict[str, Any]] | None = None,
) -> T:
    """Open the services (policy, store, backends), run ``fn`` with them, close them.
    ``backends[name]`` are settings of that backend that win over the environment."""

    async def go() -> T:
        services = await _services(settings, backends)
        try:
            return await fn(services)
        finally:
            await services.close()

    return _run(go)


async def _chat(services: Services, actor: Actor) -> None:
    from opsbot.adapters.shell import interactive

    await interactive(await _engine(services), Console(), actor, services.settings.chart_dir)


async def _services(
    settings: Settings | None = None, backends: dict[str, dict[str, Any]] | None = None
) -> Services:
    from opsbot.services import build_services

    return await build_services(settings or load_settings(), backends=backends)


async def _engine(services: Services) -> Any:
    """The engine, after saying at start when a configured model cannot be used."""
    from opsbot.engine import Engine

    engine = Engine(services)
    check = getattr(engine.planner, "check", None)
    if check is not None:
        problem = await check()
        if problem:
            typer.echo(
                f"warning: {problem}; the offline router answers until it is reachable", err=True
            )
    elif services.settings.llm_configured:
        typer.echo(
            "warning: a model is configured but the LLM planner could not be built; "
            "the offline router answers (see the log)",
            err=True,
        )
    return engine


def _actor(identity: str) -> Actor:
    return Actor(id=identity)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"opsbot {version('opsbot')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Show the traceback of an error, and debug logs (also: OPSBOT_LOG_LEVEL=debug).",
        ),
    ] = False,
) -> None:
    if debug:
        _Debug.on = True
        configure_logging("DEBUG")


def main() -> None:
    # A command's imports make a few hundred thousand objects that live as long as the
    # process: the cyclic collector stays off while they load (it would walk them again and
    # again), and at exit they are frozen, so the collection at shutdown skips them too
    # (a quarter of a second of `opsbot ask`). Commands that keep running turn it back on
    # (:func:`_long_running`).
    gc.disable()
    try:
        configure_logging(_log_level("WARNING"))
        app()
    finally:
        gc.freeze()


def _long_running() -> None:
    """What is loaded so far stays (frozen, never collected); the collector is on again."""
    gc.freeze()
    gc.enable()


# -- chat ----------------------------------------------------------------------------------


@app.command()
def shell(as_: AsOption = "shell:alice") -> None:
    """Chat with the bot in the terminal (the embedded default)."""
    _long_running()
    actor = _actor(as_)
    _with_services(lambda services: _chat(services, actor))


@app.command()
def demo(as_: AsOption = "shell:alice") -> None:
    """Chat in the terminal against a local demo stack with live data.

    Starts a real Prometheus + Alertmanager and an emulated Kubernetes API (stopped on exit),
    unless PROMETHEUS_URL or ALERTMANAGER_URL are set. Approvals and audit go to a database of
    this stack's own, unless OPSBOT_DATABASE_URL (or database_url in opsbot.yaml) names one.
    """
    from opsbot.demo import LocalStack

    _long_running()
    actor = _actor(as_)
    settings = load_settings()
    stack = None
    backends: dict[str, dict[str, Any]] = {}
    if not (os.environ.get("PROMETHEUS_URL") or os.environ.get("ALERTMANAGER_URL")):
        try:
            stack = LocalStack().start()
        except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
            raise ConfigError(f"cannot start the local stack: {exc}") from None
        backends = {
            "prometheus": {"url": stack.prometheus_url},
            "alertmanager": {"url": stack.alertmanager_url},
        }
        typer.echo(
            f"local Prometheus {stack.prometheus_url}, Alertmanager {stack.alertmanager_url} "
            "(HighErrorRate fires within seconds)",
            err=True,
        )
        if "database_url" not in settings.model_fields_set:
            settings = load_settings(database_url=stack.database_url)
            typer.echo(
                f"this demo's own database: {stack.database_url} (approve from another "
                f"terminal with OPSBOT_DATABASE_URL={stack.database_url} opsbot approve ID "
                "--as shell:bob)",
                err=True,
            )

    try:
        _with_services(lambda services: _chat(services, actor), settings, backends=backends)
    finally:
        if stack:
            stack.stop()


def _ask_renderer(console: Console, services: Services) -> ShellRenderer:
    """The shell's renderer, except that an open approval card says how to decide it with
    this command line (``opsbot approve ID --as ...``), naming who may."""
    from opsbot.adapters.markup import card_votes
    from opsbot.adapters.shell import ShellRenderer, to_rich

    class AskRenderer(ShellRenderer):
        def _card(self, card: ApprovalCard, prefix: str, style: str, plain: bool) -> None:
            first = card.approval_id not in self._cards
            self._cards.add(card.approval_id)
            self._say(prefix, to_rich(card.head()), style)
            if first and card.preview:
                self._code(card.preview, prefix, plain)
            if first and card.status:
                self._say(prefix, to_rich(card.status), style)
            if votes := card_votes(card, str):
                self._say(prefix, to_rich(votes), style)
            if card.open:
                who = _approvers(services.policy, card.approvers, card.requester)
                example = who[0] if who else "APPROVER"
                self._literal(
                    f"{prefix}to approve: opsbot approve {card.approval_id} --as {example}"
                    + (f"  (any of {', '.join(who)})" if len(who) > 1 else "")
                )
                self._literal(
                    f"{prefix}to deny:    opsbot deny {card.approval_id} --as {example} "
                    "--reason WHY"
                )

    return AskRenderer(console, services.settings.chart_dir)


def _approvers(policy: Policy, approvers: list[str], requester: str) -> list[str]:
    """The identities the policy's groups name among ``approvers`` (not the requester)."""
    found: list[str] = []
    for subject in approvers:
        members = policy.doc.groups.get(subject[6:], []) if subject.startswith("group:") else []
        for member in members or [subject]:
            if member != requester and "*" not in member and member not in found:
                found.append(member)
    return found


@app.command()
def ask(
    text: Annotated[str, typer.Argument(help="The request, in your own words.")],
    as_: AsOption = "shell:alice",
    channel: Annotated[
        str, typer.Option(help="Channel the request counts as made in (policies may scope to it).")
    ] = "shell",
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the outcome and the thread's messages as JSON."),
    ] = False,
) -> None:
    """Send one request; print the bot's messages (and how to approve it, if it needs that).

    Exits 0 when done or when an approval was opened, 1 when it failed, 2 when policy denied
    it, 3 when the bot needs more input (it asked a question or did not understand), 4 when the
    backend it needs is not configured.
    """
    from opsbot.engine import Engine
    from opsbot.model import Request

    actor = _actor(as_)
    request = Request(actor=actor, channel=channel, text=text)

    async def go(services: Services) -> tuple[Outcome, int, list[Message]]:
        console = Console(file=io.StringIO()) if as_json else Console()
        renderer = _ask_renderer(console, services)
        outcome = await Engine(services).handle(request, renderer)
        code = ASK_EXIT.get(outcome, 1)
        if code == 1 and await _backend_missing(services, request.id):
            code = NOT_CONFIGURED
        return outcome, code, renderer.messages

    outcome, code, messages = _with_services(go)
    if as_json:
        dumped = [
            m.model_dump(mode="json", exclude={"blocks": {"__all__": {"data"}}}) for m in messages
        ]
        print(
            json.dumps(
                {
                    "outcome": outcome.value,
                    "exit_code": code,
                    "request_id": request.id,
                    "messages": dumped,
                },
                indent=2,
            )
        )
    raise typer.Exit(code)


async def _backend_missing(services: Services, request_id: str) -> bool:
    """Whether a skill this request planned belongs to a backend that is not configured."""
    records = await services.audit.search(request_id=request_id, limit=1000)
    for name in {r.skill for r in records if r.skill}:
        if services.registry.get(name) and services.registry.backend_of(name).missing():
            return True
    return False


def _decide(approval_id: str, identity: str, verdict: str, reason: str) -> None:
    from opsbot.adapters.shell import ShellRenderer
    from opsbot.approvals import VoteStatus
    from opsbot.engine import Engine

    actor = _actor(identity)

    async def go(services: Services) -> VoteStatus:
        renderer = ShellRenderer(Console(), services.settings.chart_dir)
        outcome = await Engine(services).decide(
            approval_id, actor, verdict, renderer, reason=reason, channel="cli"
        )
        return outcome.status

    status = _with_services(go)
    if status not in (VoteStatus.APPROVED, VoteStatus.RECORDED, VoteStatus.DENIED):
        raise typer.Exit(1)


ApprovalId = Annotated[str, typer.Argument(help="The approval's id, as `opsbot ask` printed it.")]


@app.command()
def approve(
    approval_id: ApprovalId,
    as_: AsOption,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
) -> None:
    """Approve a pending request as an approver; runs it once enough approvals are in."""
    _decide(approval_id, as_, "approve", reason)


@app.command()
def deny(
    approval_id: ApprovalId,
    as_: AsOption,
    reason: Annotated[str, typer.Option(help="Why (shown in the thread and the audit log).")] = "",
) -> None:
    """Deny a pending request."""
    _decide(approval_id, as_, "deny", reason)


@app.command()
def serve() -> None:
    """Run the configured chat adapters and the HTTP server.

    The HTTP server (health, metrics, audit, webhooks) listens on OPSBOT_HTTP_HOST:
    OPSBOT_HTTP_PORT, by default 0.0.0.0:8080 (every interface, as a container needs).
    Replicas on one PostgreSQL elect a leader for the singleton work
    (OPSBOT_LEADER_ELECTION); SIGTERM finishes the work in flight within
    OPSBOT_SHUTDOWN_GRACE seconds and gives the leadership up.
    """
    from opsbot.adapters.http import run

    _long_running()
    configure_logging(_log_level("INFO"))
    settings = load_settings()  # a setting that cannot be used refuses to start, named
    _run(lambda: run(settings))


@app.command()
def skills(as_json: JsonOption = False) -> None:
    """List installed skills, their risk and their backend's health.

    Health: configured (else which settings to set), reachable, version.
    """
    from opsbot.skills.base import load_registry

    async def health() -> Any:
        registry = load_registry(load_settings())
        try:
            checks = await asyncio.gather(*(b.health() for b in registry.backends))
            return registry, {b.name: h for b, h in zip(registry.backends, checks, strict=True)}
        finally:
            await registry.aclose()

    registry, healths = _run(health)
    rows = []
    for skill in registry:
        backend = registry.backend_of(skill.name)
        h = healths[backend.name]
        if not h.configured:
            state = "set " + ", ".join(h.missing)
        elif h.reachable is False:
            state = f"unreachable: {h.detail[:80]}"
        else:
            state = "ok" + (f" ({h.version})" if h.version else "")
        rows.append([skill.name, skill.risk.value, backend.name, state, skill.summary])
    columns = ["skill", "risk", "backend", "status", "summary"]
    if as_json:
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2))
        return
    _print_table(columns, rows, title=f"{len(rows)} skills")


def _print_table(
    columns: list[str], rows: list[list[str]], *, title: str = "", note: str = ""
) -> None:
    """A rich table on stdout (wide enough not to wrap when piped), then ``note``."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 200))
    table = RichTable(*columns, title=title or None, title_justify="left", header_style="bold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if note:
        console.print(note, markup=False, highlight=False, soft_wrap=True)


# -- eval ----------------------------------------------------------------------------------


@app.command("eval")
def eval_(
    dataset: Annotated[
        Path,
        typer.Argument(
            help="YAML list of cases (text, expect: {skill, args}), e.g. eval/routing-dev.yaml.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    planner: Annotated[str, typer.Option(help="Which planner routes: offline | llm.")] = "offline",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    record: Annotated[
        Path | None,
        typer.Option(
            help="With --planner llm: keep every model response of every case in this JSON file.",
            dir_okay=False,
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            help="With --planner llm: answer from a --record file instead of a model (offline).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
) -> None:
    """Measure routing accuracy on a dataset; one line per miss, then the accuracy.

    Besides the misses: each skill's precision and recall, and the confusions (expected ->
    routed). ``--planner llm`` asks the configured model (OPENAI_BASE_URL, OPSBOT_LLM_MODEL)
    to route each case (its first tool call is the plan; nothing is executed) and reports
    model calls, tokens, cost and latency per case. ``--record FILE`` keeps the model's
    responses; ``--replay FILE`` re-scores them later with no model, through the planner's
    real parsing and validation.
    """
    import yaml
    from pydantic import ValidationError

    from opsbot.evaluation import load_cases

    if planner not in ("offline", "llm"):
        raise typer.BadParameter(f"unknown planner {planner!r}: use offline or llm")
    if (record or replay) and planner != "llm":
        raise typer.BadParameter("--record and --replay go with --planner llm")
    if record and replay:
        raise typer.BadParameter("use --record or --replay, not both")
    try:
        cases = load_cases(dataset)
    except (yaml.YAMLError, ValueError, ValidationError) as exc:
        reason = str(exc).splitlines()[0]
        raise OpsbotError(
            f"{dataset} is not an eval dataset: {reason}",
            hint="a YAML list of `- text: ...` / `expect: {skill: ..., args: {...}}` cases",
        ) from None
    report, sizes, notes = _run(lambda: _evaluate(cases, planner, dataset, record, replay))
    if as_json:
        print(
            json.dumps(
                {
                    **report.as_dict(),
                    "planner": planner,
                    "catalog_prompt_tokens": sizes,
                    "notes": notes,
                },
                indent=2,
            )
        )
        return
    for r in report.results:
        if not r.ok:
            print(f"MISS {r.case.text!r}: {r.reason}")
    if planner == "llm":
        print("per case (model calls, tokens, cost, latency):")
        for n, r in enumerate(report.results, 1):
            print(
                f"  {n:>3} {'ok  ' if r.ok else 'MISS'} {r.calls} call(s), {r.prompt_tokens} prompt + "
                f"{r.completion_tokens} completion tokens, ~${r.cost_usd:.4f}, "
                f"{1000 * r.seconds:.0f} ms: {r.case.text[:60]!r}"
            )
    print(
        "per skill (precision: right of those routed to it; recall: right of those expecting it):"
    )
    for line in report.skill_lines():
        print(f"  {line}")
    confusions = report.confusion_lines()
    print(f"confusions (expected -> routed): {'none' if not confusions else len(confusions)}")
    for line in confusions:
        print(f"  {line}")
    for note in notes:
        print(note)
    data = report.as_dict()
    print(
        f"planner: {planner}; mean latency {data['mean_latency_ms']} ms/request; tokens/request: "
        f"{data['mean_prompt_tokens']} prompt + {data['mean_completion_tokens']} completion"
    )
    print(
        f"catalog prompt tokens (tiktoken cl100k): full {sizes['full']} ({sizes['full_skills']} skills), "
        f"read-only actor {sizes['read_only']} ({sizes['read_only_skills']} skills)"
    )
    installed = report.installed
    print(
        f"accuracy over installed skills: {report.installed_accuracy:.3f} "
        f"({sum(r.ok for r in installed)}/{len(installed)})"
    )
    print(f"accuracy: {report.accuracy:.3f} ({report.passed}/{len(report.results)})")


async def _evaluate(
    cases: list[Any],
    planner_name: str,
    dataset: Path,
    record: Path | None = None,
    replay: Path | None = None,
) -> tuple[Any, dict[str, int], list[str]]:
    import tempfile

    from opsbot.evaluation import evaluate
    from opsbot.intent import tokens
    from opsbot.intent.llm import LLMPlanner, LLMUnavailable, tool_definitions
    from opsbot.intent.offline import OfflineRouter
    from opsbot.services import build_services

    recording: Any = None
    case_errors: tuple[type[Exception], ...] = ()
    overrides: dict[str, Any] = {}
    if replay is not None:
        from opsbot.intent.recording import Recording, ReplayMismatch

        try:
            recording = Recording.load(replay)
        except ValueError as exc:
            raise OpsbotError(
                str(exc), hint="a file written by opsbot eval --planner llm --record"
            ) from None
        case_errors = (ReplayMismatch,)
        meta = recording.meta
        overrides = {
            k: v
            for k, v in (("llm_model", meta.get("model")), ("llm_provider", meta.get("provider")))
            if v
        }
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="opsbot-eval-") as tmp:
        settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp}/eval.db", **overrides)
        services = await build_services(settings)
        try:
            registry, policy = services.registry, services.policy
            planner: Any = OfflineRouter()
            if replay is not None:
                from opsbot.intent.recording import ReplayModel, Taped

                llm = LLMPlanner(
                    services, fallback=OfflineRouter(), model=ReplayModel.of(recording)
                )
                planner = Taped(llm, recording)
                notes.append(
                    f"replay: {len(recording.cases)} recorded case(s) of {recording.meta.get('model')} "
                    f"({recording.meta.get('recorded_at', '?')}) from {replay}; no model asked"
                )
                notes.extend(f"replay: {n}" for n in recording.drift(llm.prompts.versions()))
            elif planner_name == "llm":
                if not settings.llm_configured:
                    raise ConfigError(
                        "--planner llm needs a model",
                        hint="set OPENAI_BASE_URL or OPENAI_API_KEY, and OPSBOT_LLM_MODEL",
                    )
                try:
                    llm = LLMPlanner(services, fallback=OfflineRouter())
                except LLMUnavailable as exc:
                    raise ConfigError(f"LLM planner unavailable: {exc}") from None
                problem = await llm.check()
                if problem:
                    raise ConfigError(f"LLM planner unavailable: {problem}")
                planner = llm
                if record is not None:
                    from opsbot.intent.recording import Recording, Taped

                    recording = Recording({"dataset": str(dataset)})
                    llm.observers.append(recording.observe)
                    planner = Taped(llm, recording)
            report = await evaluate(cases, planner, registry, policy, case_errors=case_errors)
            if recording is not None:
                recording.finish()
            if record is not None and recording is not None:
                recording.save(record)
                calls = sum(len(c["responses"]) for c in recording.cases)
                notes.append(
                    f"recorded: {len(recording.cases)} case(s), {calls} model response(s) to {record}"
                )
            if replay is not None and recording.short:
                notes.append(
                    f"replay: {len(recording.short)} case(s) used fewer responses than were "
                    f"recorded (the planner stopped sooner), e.g. {recording.short[0]!r}"
                )
            full = list(registry)
            reader = Actor(id="eval:read-only")
            read_only = [
                s for s in registry if policy.permitted(reader, s.name, namespaced=s.namespaced)
            ]
            sizes = {
                "full": tokens.count_tools(tool_definitions(full)),
                "full_skills": len(full),
                "read_only": tokens.count_tools(tool_definitions(read_only)),
                "read_only_skills": len(read_only),
            }
            return report, sizes, notes
        finally:
            await services.close()


# -- policy --------------------------------------------------------------------------------


def _load_policy(path: Path | None) -> Policy:
    from opsbot.services import policy_path

    return Policy.load(path or policy_path(load_settings()))


def _skill_names() -> list[str]:
    from opsbot.skills.base import load_registry

    return [skill.name for skill in load_registry()]


@policy_app.command("check")
def policy_check(
    path: Annotated[
        Path | None,
        typer.Argument(help="Policy file or folder (default: OPSBOT_POLICY_PATH, else bundled)."),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 on warnings too (for CI).")] = False,
) -> None:
    """Validate a policy file or folder.

    Prints every problem as file:line: reason, then warnings: skill patterns that match no
    installed skill, a policy without rules.
    """
    try:
        policy = _load_policy(path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(f"policy error: {problem}")
        print(f"policy invalid: {len(exc.problems)} problem(s)")
        raise typer.Exit(1) from None
    print(
        f"ok: {len(policy.doc.rules)} rules, {len(policy.doc.groups)} groups in {', '.join(policy.sources)}"
    )
    warnings = policy.warnings(_skill_names())
    for warning in warnings:
        print(f"warning: {warning}")
    if warnings and strict:
        raise typer.Exit(1)


@policy_app.command("explain")
def policy_explain(
    skill: Annotated[str, typer.Argument(help="Skill name, e.g. k8s.scale.")],
    as_: AsOption,
    namespace: Annotated[
        str | None, typer.Option(help="Namespace of the call, for namespaced skills.")
    ] = None,
    channel: Annotated[str, typer.Option(help="Channel the call is made in.")] = "",
    path: Annotated[
        Path | None,
        typer.Option(help="Policy file or folder (default: OPSBOT_POLICY_PATH, else bundled)."),
    ] = None,
) -> None:
    """Show which rule decides a call and what it says."""
    from opsbot.skills.base import load_registry

    policy = _load_policy(path)
    actor = _actor(as_)
    registry = load_registry()
    known = registry.get(skill)
    if known is None:
        close = closest(skill, [s.name for s in registry])
        typer.echo(
            f"warning: no installed skill is named {skill!r}"
            + (f" (did you mean {close}?)" if close else " (`opsbot skills` lists them)")
            + "; explaining the name as given",
            err=True,
        )
    namespaced = known.namespaced if known else namespace is not None
    decision = policy.decide(
        actor, skill, channel=channel, namespace=namespace, namespaced=namespaced
    )
    print(f"subjects of {actor.id}: {', '.join(sorted(policy.subjects_of(actor)))}")
    if isinstance(decision, Allow):
        print(f"allow — rule {decision.rule!r}")
    elif isinstance(decision, Deny):
        print(f"deny — {decision.reason}")
    else:
        print(
            f"approve — rule {decision.rule!r}: {decision.min_approvals} of {', '.join(decision.approvers)}, "
            f"ttl {decision.ttl}"
        )


# -- incidents -----------------------------------------------------------------------------

INCIDENT_STATES = ("firing", "acknowledged", "resolved")


def _incident_status(value: str | None) -> str | None:
    if value is not None and value not in INCIDENT_STATES:
        raise typer.BadParameter(f"is one of {', '.join(INCIDENT_STATES)}, not {value!r}")
    return value


@app.command("incidents")
def incidents(
    status: Annotated[
        str | None,
        typer.Option(
            help="Only incidents in this state: firing, acknowledged or resolved.",
            callback=_incident_status,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only incidents opened since, e.g. 30m, 24h, 7d.", callback=_duration),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many (the newest).")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Incidents opened by Alertmanager alerts, newest first.

    One per alert group: its state, channel and thread, who acknowledged it and when, and the
    actions suggested and taken in its thread. The audit log has each incident's records under
    its id (opsbot audit list shows them; audit.search request_id=<id>).
    """

    async def listed(services: Services) -> list[tuple[Any, list[str], list[str]]]:
        from opsbot.incidents import Incidents

        records = Incidents(services.store)
        found = await records.find(status=status, since=_since(since), limit=limit)
        return [(i, *(await records.actions(i))) for i in found]

    found = _with_services(listed)
    if as_json:
        print(
            json.dumps(
                [
                    {**i.as_dict(), "actions_proposed": proposed, "actions_taken": taken}
                    for i, proposed, taken in found
                ],
                indent=2,
            )
        )
        return

    def when(at: datetime | None) -> str:
        return f"{at:%Y-%m-%d %H:%M:%S}" if at else ""

    rows = [
        [
            i.id,
            i.status,
            i.title,
            i.channel or "(no route)",
            when(i.opened_at),
            f"{i.acked_by} {i.acked_at:%H:%M:%S}" if i.acked_by and i.acked_at else "",
            when(i.resolved_at),
            f"{len(i.firing)}/{len(i.alerts)}",
            f"{len(proposed)}/{len(taken)}",
        ]
        for i, proposed, taken in found
    ]
    scope = " ".join(part for part in (status or "", f"since {since}" if since else "") if part)
    _print_table(
        [
            "id",
            "status",
            "incident",
            "channel",
            "opened (UTC)",
            "acked by",
            "resolved (UTC)",
            "firing/alerts",
            "actions proposed/taken",
        ],
        rows,
        title=f"{len(rows)} incidents{f' ({scope})' if scope else ''}",
        note="" if len(rows) < limit else f"only the newest {limit} are shown (--limit)",
    )


# -- audit ---------------------------------------------------------------------------------


def _since(since: str | None) -> datetime | None:
    return datetime.now(UTC) - parse_duration(since) if since else None


@audit_app.command("list")
def audit_list(
    since: SinceOption = None,
    actor: ActorFilter = None,
    skill: SkillFilter = None,
    limit: Annotated[
        int, typer.Option(min=1, help="Show at most this many records (the newest).")
    ] = 50,
    offset: Annotated[
        int, typer.Option(min=0, help="Skip this many of the newest records (to page back).")
    ] = 0,
    as_json: JsonOption = False,
) -> None:
    """Recent audit records, oldest first.

    Shows the newest --limit records; says when older ones are left out and how to page back.
    """
    records = _with_services(
        lambda s: s.audit.search(
            since=_since(since), actor=actor, skill=skill, limit=limit + offset + 1
        )
    )
    page = records[: max(len(records) - offset, 0)]
    more = len(page) > limit
    page = page[-limit:]
    note = ""
    if more:
        note = (
            f"older records are not shown: see them with --offset {offset + limit}"
            f" (--limit {limit}), or narrow with --since/--actor/--skill"
        )
    if as_json:
        print(json.dumps([r.as_dict() for r in page], indent=2))
        if note:
            typer.echo(note, err=True)
        return
    rows = [
        [
            str(r.seq),
            f"{r.at:%Y-%m-%d %H:%M:%S}",
            r.event,
            r.actor,
            r.skill,
            r.outcome,
            r.detail[:60],
        ]
        for r in page
    ]
    shown = f"seq {page[0].seq}-{page[-1].seq}" if page else "none"
    _print_table(
        ["seq", "at (UTC)", "event", "actor", "skill", "outcome", "detail"],
        rows,
        title=f"{len(page)} audit records ({shown})",
        note=note,
    )


@audit_app.command("show")
def audit_show(seq: Annotated[int, typer.Argument(help="The record's sequence number.")]) -> None:
    """One record in full (JSON)."""

    record = _with_services(lambda s: s.audit.get(seq))
    if record is None:
        typer.echo(f"no audit record {seq}", err=True)
        raise typer.Exit(1)
    print(json.dumps(record.as_dict(), indent=2))


@audit_app.command("verify")
def audit_verify(
    since_checkpoint: Annotated[
        bool,
        typer.Option(
            "--since-checkpoint",
            help="Check only the records appended since the last verification that found "
            "the chain intact (its checkpoint), from that record on.",
        ),
    ] = False,
) -> None:
    """Check the hash chain; exit 1 and name the records if any was edited or deleted.

    With OPSBOT_AUDIT_ANCHOR_PATH set, the chain is also held against its anchors: a log
    that ends before the last anchor was truncated, one whose record differs from its
    anchor's was rewritten. A log trimmed by retention is checked from its checkpoint.
    A walk that finds the chain intact keeps its head as the verification checkpoint
    (in the database); --since-checkpoint starts from there (the console does too).
    """
    from opsbot.anchors import AnchorFile

    async def verify(s: Services) -> tuple[Any, list[str], int, tuple[int, str] | None]:
        path = s.settings.audit_anchor_path
        read = AnchorFile(path, s.settings.audit_anchor_key).read() if path else None
        points = [a.point(str(path)) for a in read.anchors] if read else []
        start = await s.audit.verified() if since_checkpoint else None
        status = await s.audit.verify_chain(start=start, anchors=points)
        if not (read and read.problems):
            await s.audit.keep_verified(status)
        return status, (read.problems if read else []), len(points), start

    status, anchor_problems, anchors, start = _with_services(verify)
    problems = [p.message for p in status.problems] + anchor_problems
    if not problems:
        against = f", checked against {anchors} anchors" if anchors else ""
        since = ""
        if since_checkpoint:
            since = (
                f" since the checkpoint at record {start[0]}"
                if start
                else " (no checkpoint yet: the whole chain)"
            )
        print(
            f"ok: {status.checked} records{since}, chain intact{against}; head {status.head_hash}"
        )
        return
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"audit chain broken: {len(problems)} problem(s) in {status.checked} records")
    raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor() -> None:
    """Append the chain's head to the anchor file (OPSBOT_AUDIT_ANCHOR_PATH) now.

    `opsbot serve` does this every OPSBOT_AUDIT_ANCHOR_INTERVAL seconds; this is for a cron
    job or a deployment without the server.
    """
    from opsbot.anchors import Anchorer, AnchorFile

    async def anchor(s: Services) -> Any:
        path = s.settings.audit_anchor_path
        if path is None:
            raise ConfigError(
                "no anchor file: OPSBOT_AUDIT_ANCHOR_PATH is not set",
                hint="set OPSBOT_AUDIT_ANCHOR_PATH to a file the database's users cannot rewrite",
            )
        file = AnchorFile(path, s.settings.audit_anchor_key)
        return await Anchorer(s.audit, file, interval=0).anchor_once() or file.latest()

    written = _with_services(anchor)
    if written is None:
        print("nothing to anchor: the audit log is empty")
        return
    print(f"anchored record {written.seq} hash {written.hash}")


@audit_app.command("retain")
def audit_retain(
    days: Annotated[
        int | None,
        typer.Option(min=1, help="Keep this many days (default: OPSBOT_AUDIT_RETENTION_DAYS)."),
    ] = None,
    export_dir: Annotated[
        Path | None,
        typer.Option(help="Where the removed records go first (default: OPSBOT_AUDIT_EXPORT_DIR)."),
    ] = None,
) -> None:
    """Export the records older than the retention period, then remove them.

    They are written to a JSON-lines file first (its SHA-256 is kept); a checkpoint record
    carrying the hash they ended with keeps the chain verifiable. A prefix that does not
    verify is never removed.
    """

    async def retain(s: Services) -> Any:
        keep = days or s.settings.audit_retention_days
        if not keep:
            raise ConfigError(
                "no retention period: give --days or set OPSBOT_AUDIT_RETENTION_DAYS",
                hint="e.g. opsbot audit retain --days 365",
            )
        try:
            return await s.audit.retain(
                before=datetime.now(UTC) - timedelta(days=keep),
                export_dir=export_dir or s.settings.audit_export_dir,
            )
        except ValueError as exc:
            raise OpsbotError(str(exc), hint="see `opsbot audit verify`") from None

    done = _with_services(retain)
    if done is None:
        print("nothing to remove: no record is that old")
        return
    print(
        f"removed records {done.first_seq}..{done.through_seq} ({done.records}); exported to "
        f"{done.export} (sha256 {done.export_sha256}); checkpoint record {done.checkpoint.seq}"
    )


@audit_app.command("export")
def audit_export(
    since: SinceOption = None, actor: ActorFilter = None, skill: SkillFilter = None
) -> None:
    """Every matching record as JSON lines on stdout (with hashes, for external anchoring)."""

    records = _with_services(
        lambda s: s.audit.search(since=_since(since), actor=actor, skill=skill, limit=10_000_000)
    )
    for record in records:
        sys.stdout.write(json.dumps(record.as_dict()) + "\n")


if __name__ == "__main__":
    main()
