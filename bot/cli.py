"""The ``opsbot`` command line (typer), as in DESIGN.md's "Command line" contract."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from opsbot.config import Settings, load_settings
from opsbot.durations import parse_duration
from opsbot.model import Actor
from opsbot.policy import Allow, Deny, Policy, PolicyError
from opsbot.telemetry import configure_logging

if TYPE_CHECKING:
    from opsbot.services import Services

T = TypeVar("T")
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="opsbot: ChatOps with approvals and an audit log.",
)
audit_app = typer.Typer(no_args_is_help=True, help="Review the tamper-evident audit log.")
policy_app = typer.Typer(no_args_is_help=True, help="Validate and explain policies.")
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")

AsOption = Annotated[str, typer.Option("--as", help="identity, e.g. shell:alice")]


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

    settings = settings or load_settings()
    try:
        return await build_services(settings, backends=backends)
    except PolicyError as exc:
        typer.echo(f"policy error: {exc}", err=True)
        raise typer.Exit(2) from None


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
    if ":" not in identity:
        typer.echo(f"--as takes platform:user (e.g. shell:alice), not {identity!r}", err=True)
        raise typer.Exit(2)
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
) -> None:
    pass


def main() -> None:
    configure_logging("WARNING")
    app()


# -- chat ----------------------------------------------------------------------------------


@app.command()
def shell(as_: AsOption = "shell:alice") -> None:
    """Chat with the bot in the terminal (the embedded default)."""
    actor = _actor(as_)
    _with_services(lambda services: _chat(services, actor))


@app.command()
def demo(as_: AsOption = "shell:alice") -> None:
    """The terminal chat against a local real Prometheus + Alertmanager with live data
    (started here and stopped on exit), unless PROMETHEUS_URL/ALERTMANAGER_URL are set."""
    from opsbot.demo import LocalStack

    actor = _actor(as_)
    stack = None
    backends: dict[str, dict[str, Any]] = {}
    if not (os.environ.get("PROMETHEUS_URL") or os.environ.get("ALERTMANAGER_URL")):
        try:
            stack = LocalStack().start()
        except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
            typer.echo(f"cannot start the local stack: {exc}", err=True)
            raise typer.Exit(1) from None
        backends = {
            "prometheus": {"url": stack.prometheus_url},
            "alertmanager": {"url": stack.alertmanager_url},
        }
        typer.echo(
            f"local Prometheus {stack.prometheus_url}, Alertmanager {stack.alertmanager_url} "
            "(HighErrorRate fires within seconds)",
            err=True,
        )

    try:
        _with_services(lambda services: _chat(services, actor), backends=backends)
    finally:
        if stack:
            stack.stop()


@app.command()
def ask(text: str, as_: AsOption = "shell:alice", channel: str = "shell") -> None:
    """Send one request; print the bot's messages (and any approval id)."""
    from opsbot.adapters.shell import ShellRenderer
    from opsbot.engine import Engine
    from opsbot.model import Request

    actor = _actor(as_)

    async def go(services: Services) -> None:
        renderer = ShellRenderer(Console(), services.settings.chart_dir)
        await Engine(services).handle(Request(actor=actor, channel=channel, text=text), renderer)

    _with_services(go)


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


@app.command()
def approve(approval_id: str, as_: AsOption, reason: str = "") -> None:
    """Approve a pending request as an approver; runs it once enough approvals are in."""
    _decide(approval_id, as_, "approve", reason)


@app.command()
def deny(approval_id: str, as_: AsOption, reason: str = "") -> None:
    """Deny a pending request."""
    _decide(approval_id, as_, "deny", reason)


@app.command()
def serve() -> None:
    """Run the configured adapters and the HTTP server (health, metrics, audit, webhooks)."""
    from opsbot.adapters.http import serve as serve_http

    configure_logging("INFO")
    _with_services(serve_http)


@app.command()
def skills() -> None:
    """List installed skills with their risk, and their backend's health (configured?
    reachable? version)."""
    from opsbot.model import Table
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
        rows.append([skill.name, skill.risk.value, backend.name, skill.summary, state])
    _print_table(Table(columns=["skill", "risk", "backend", "summary", "status"], rows=rows))


def _print_table(table: Any) -> None:
    from opsbot.adapters.shell import ShellRenderer
    from opsbot.model import Message, Step

    ShellRenderer(Console(), Path(".")).render(
        Message(thread="-", step=Step.RESULT, blocks=[table])
    )


# -- eval ----------------------------------------------------------------------------------


@app.command("eval")
def eval_(
    dataset: Path,
    planner: Annotated[str, typer.Option(help="offline | llm")] = "offline",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
) -> None:
    """Measure routing accuracy on a dataset; one line per miss, then the accuracy.

    ``--planner llm`` asks the configured model (OPENAI_BASE_URL, OPSBOT_LLM_MODEL) to route each
    case (its first tool call is the plan; nothing is executed) and reports tokens and latency.
    """
    from opsbot.evaluation import load_cases

    if planner not in ("offline", "llm"):
        typer.echo(f"unknown planner {planner!r}: use offline or llm", err=True)
        raise typer.Exit(2)
    cases = load_cases(dataset)
    report, sizes = _run(lambda: _evaluate(cases, planner))
    if as_json:
        print(
            json.dumps(
                {**report.as_dict(), "planner": planner, "catalog_prompt_tokens": sizes}, indent=2
            )
        )
        return
    for r in report.results:
        if not r.ok:
            print(f"MISS {r.case.text!r}: {r.reason}")
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


async def _evaluate(cases: list[Any], planner_name: str) -> tuple[Any, dict[str, int]]:
    import tempfile

    from opsbot.evaluation import evaluate
    from opsbot.intent import tokens
    from opsbot.intent.llm import LLMPlanner, LLMUnavailable, tool_definitions
    from opsbot.intent.offline import OfflineRouter
    from opsbot.services import build_services

    with tempfile.TemporaryDirectory(prefix="opsbot-eval-") as tmp:
        settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp}/eval.db")
        services = await build_services(settings)
        try:
            registry, policy = services.registry, services.policy
            planner: Any = OfflineRouter()
            if planner_name == "llm":
                if not settings.llm_configured:
                    typer.echo(
                        "--planner llm needs OPENAI_BASE_URL or OPENAI_API_KEY, and OPSBOT_LLM_MODEL",
                        err=True,
                    )
                    raise typer.Exit(2)
                try:
                    planner = LLMPlanner(services, fallback=OfflineRouter())
                except LLMUnavailable as exc:
                    typer.echo(f"LLM planner unavailable: {exc}", err=True)
                    raise typer.Exit(2) from None
                problem = await planner.check()
                if problem:
                    typer.echo(f"LLM planner unavailable: {problem}", err=True)
                    raise typer.Exit(2)
            report = await evaluate(cases, planner, registry, policy)
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
            return report, sizes
        finally:
            await services.close()


# -- policy --------------------------------------------------------------------------------


def _load_policy(path: Path | None) -> Policy:
    from opsbot.services import policy_path

    target = path or policy_path(load_settings())
    try:
        return Policy.load(target)
    except PolicyError as exc:
        typer.echo(f"policy error: {exc}", err=True)
        raise typer.Exit(1) from None


@policy_app.command("check")
def policy_check(
    path: Annotated[Path | None, typer.Argument(help="file or folder")] = None,
) -> None:
    """Validate a policy file or folder (file:line: reason on error)."""
    policy = _load_policy(path)
    print(
        f"ok: {len(policy.doc.rules)} rules, {len(policy.doc.groups)} groups in {', '.join(policy.sources)}"
    )


@policy_app.command("explain")
def policy_explain(
    skill: str,
    as_: AsOption,
    namespace: str | None = None,
    channel: str = "",
    path: Annotated[Path | None, typer.Option(help="policy file or folder")] = None,
) -> None:
    """Show which rule decides a call and what it says."""
    from opsbot.skills.base import load_registry

    policy = _load_policy(path)
    actor = _actor(as_)
    known = load_registry().get(skill)
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


# -- audit ---------------------------------------------------------------------------------


def _since(since: str | None) -> datetime | None:
    return datetime.now(UTC) - parse_duration(since) if since else None


@audit_app.command("list")
def audit_list(
    since: str | None = None,
    actor: str | None = None,
    skill: str | None = None,
    limit: int = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recent audit records, oldest first."""
    from opsbot.model import Table

    records = _with_services(
        lambda s: s.audit.search(since=_since(since), actor=actor, skill=skill, limit=limit)
    )
    if as_json:
        print(json.dumps([r.as_dict() for r in records], indent=2))
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
        for r in records
    ]
    _print_table(
        Table(
            columns=["seq", "at (UTC)", "event", "actor", "skill", "outcome", "detail"], rows=rows
        )
    )


@audit_app.command("show")
def audit_show(seq: int) -> None:
    """One record in full (JSON)."""

    record = _with_services(lambda s: s.audit.get(seq))
    if record is None:
        typer.echo(f"no audit record {seq}", err=True)
        raise typer.Exit(1)
    print(json.dumps(record.as_dict(), indent=2))


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the hash chain; exit 1 and name the records if any was edited or deleted."""

    report = _with_services(lambda s: s.audit.verify())
    if report.ok:
        print(f"ok: {report.checked} records, chain intact; head {report.head}")
        return
    for problem in report.problems:
        print(f"FAIL {problem}")
    print(f"audit chain broken: {len(report.problems)} problem(s) in {report.checked} records")
    raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    since: str | None = None, actor: str | None = None, skill: str | None = None
) -> None:
    """Every matching record as JSON lines on stdout (with hashes, for external anchoring)."""

    records = _with_services(
        lambda s: s.audit.search(since=_since(since), actor=actor, skill=skill, limit=10_000_000)
    )
    for record in records:
        sys.stdout.write(json.dumps(record.as_dict()) + "\n")


if __name__ == "__main__":
    main()
