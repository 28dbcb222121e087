"""The command line of DESIGN.md, run through typer's runner with the real engine."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from rich.text import Text as RichText
from typer.testing import CliRunner

from opsbot.adapters.shell import ShellRenderer, interactive, run_command, to_rich
from opsbot.cli import app
from opsbot.demo import LocalStack
from opsbot.engine import Engine
from opsbot.model import (
    ActionButton,
    Actor,
    ApprovalCard,
    Invocation,
    Message,
    Request,
    Step,
    Text,
)
from opsbot.policy import NeedsApproval
from opsbot.services import Services

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "cli.db"
    monkeypatch.setenv("OPSBOT_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.setenv("OPSBOT_POLICY_PATH", str(ROOT / "policies"))
    monkeypatch.setenv("OPSBOT_CHART_DIR", str(tmp_path / "charts"))
    for var in ("PROMETHEUS_URL", "ALERTMANAGER_URL", "LOKI_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return db


def test_eval_prints_misses_and_accuracy(env: Path) -> None:
    result = runner.invoke(app, ["eval", str(ROOT / "eval" / "routing-dev.yaml")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    from opsbot.evaluation import load_cases

    cases = len(load_cases(ROOT / "eval" / "routing-dev.yaml"))
    assert re.fullmatch(rf"accuracy: [01]\.\d{{3}} \(\d+/{cases}\)", lines[-1])
    installed = re.search(r"accuracy over installed skills: (\d\.\d{3})", result.output)
    assert installed and float(installed.group(1)) >= 0.95
    # a case whose skill is not installed is a miss that says so (the dev set has none now)
    missing = env.parent / "missing.yaml"
    missing.write_text("- text: 'frobnicate the cache'\n  expect: {skill: cache.frobnicate}\n")
    result = runner.invoke(app, ["eval", str(missing)])
    assert "MISS 'frobnicate the cache': skill cache.frobnicate is not installed" in result.output
    assert result.output.strip().splitlines()[-1] == "accuracy: 0.000 (0/1)"
    as_json = runner.invoke(app, ["eval", str(ROOT / "eval" / "routing-extra.yaml"), "--json"])
    assert '"installed_accuracy"' in as_json.output


def test_policy_check_and_explain(env: Path, tmp_path: Path) -> None:
    ok = runner.invoke(app, ["policy", "check"])
    assert ok.exit_code == 0 and ok.output.startswith("ok: 4 rules, 2 groups")
    explain = runner.invoke(
        app, ["policy", "explain", "k8s.scale", "--as", "shell:alice", "--namespace", "shop"]
    )
    assert (
        "approve — rule 'sre restarts and scales with one on-call approval': 1 of group:oncall"
        in explain.output
    )
    denied = runner.invoke(
        app, ["policy", "explain", "k8s.scale", "--as", "shell:eve", "--namespace", "shop"]
    )
    assert (
        "deny — no policy rule allows shell:eve to call k8s.scale in namespace shop"
        in denied.output
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n  - name: x\n    subjects: ['*']\n    skills: [help]\n    effect: perhaps\n"
    )
    failed = runner.invoke(app, ["policy", "check", str(bad)])
    assert failed.exit_code == 1 and f"{bad}:5: rules.0.effect" in failed.output


def test_policy_check_reports_every_error_and_warns(env: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n"
        "  - name: a\n    subjects: ['*']\n    skills: [help]\n    effect: perhaps\n"
        "  - name: b\n    subjects: ['*']\n    skills: [help]\n    effect: allow\n"
        "    ttl: soon\n    colour: red\n"
    )
    failed = runner.invoke(app, ["policy", "check", str(bad)])
    assert failed.exit_code == 1
    assert failed.output.splitlines() == [
        f"policy error: {bad}:11: rules.1.colour: unknown key 'colour'",
        f"policy error: {bad}:5: rules.0.effect: Input should be 'allow', 'deny' or 'approve'",
        f"policy error: {bad}:10: rules.1.ttl: not a duration: 'soon' (use e.g. 30s, 15m, "
        "1h30m, 2d)",
        "policy invalid: 3 problem(s)",
    ]
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        "rules:\n  - name: mute\n    subjects: ['*']\n    skills: [help, alerts.silenc, 'foo.*']\n"
        "    effect: allow\n"
    )
    warned = runner.invoke(app, ["policy", "check", str(typo)])
    assert warned.exit_code == 0, warned.output
    assert warned.output.splitlines()[1:] == [
        f"warning: {typo}:4: rule 'mute': 'alerts.silenc' matches no installed skill "
        "(did you mean alerts.silence?)",
        f"warning: {typo}:4: rule 'mute': 'foo.*' matches no installed skill",
    ]
    assert runner.invoke(app, ["policy", "check", "--strict", str(typo)]).exit_code == 1
    empty = tmp_path / "empty.yaml"
    empty.write_text("groups: {sre: [shell:alice]}\n")
    deny_all = runner.invoke(app, ["policy", "check", str(empty)])
    assert deny_all.output.splitlines()[1] == (
        f"warning: {empty}: no rules, so every request is denied (deny by default); add rules "
        "(see the bundled policies/default.yaml)"
    )


def test_policy_explain_warns_about_an_unknown_skill(env: Path) -> None:
    explained = runner.invoke(
        app, ["policy", "explain", "k8s.scal", "--as", "shell:alice", "--namespace", "shop"]
    )
    assert explained.exit_code == 0
    assert (
        "warning: no installed skill is named 'k8s.scal' (did you mean k8s.scale?); explaining "
        "the name as given" in explained.stderr
    )
    assert "deny — no policy rule allows shell:alice to call k8s.scal" in explained.stdout


def test_malformed_policy_is_refused_at_start(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [oops]\n")
    monkeypatch.setenv("OPSBOT_POLICY_PATH", str(bad))
    result = runner.invoke(app, ["ask", "help"])
    assert result.exit_code == 1 and result.output.splitlines() == [
        f"policy error: {bad}:1: groups: Input should be a valid dictionary",
        "  fix it, then check it with `opsbot policy check`",
    ]


def test_ask_then_audit_list_show_verify_export(env: Path) -> None:
    asked = runner.invoke(app, ["ask", "--as", "shell:eve", "help"])
    assert asked.exit_code == 0 and "Skills you (shell:eve) may use here" in asked.output
    # eve may not silence (nor unsilence), so help does not offer it; she may list silences
    assert "alerts.silence |" not in asked.output and "alerts.unsilence" not in asked.output
    assert "alerts.silences |" in asked.output
    listed = runner.invoke(app, ["audit", "list", "--actor", "eve"])
    assert "request.received" in listed.output and "skill.result" in listed.output
    shown = runner.invoke(app, ["audit", "show", "1"])
    assert '"event": "request.received"' in shown.output
    verified = runner.invoke(app, ["audit", "verify"])
    assert verified.exit_code == 0 and verified.output.startswith("ok: 4 records")
    exported = runner.invoke(app, ["audit", "export"])
    assert len(exported.output.strip().splitlines()) == 4

    with sqlite3.connect(env) as conn:  # someone edits the log behind the bot's back
        conn.execute("UPDATE audit_events SET detail = 'nothing to see' WHERE seq = 2")
    tampered = runner.invoke(app, ["audit", "verify"])
    assert tampered.exit_code == 1
    assert "FAIL record 2: content does not match its hash (edited)" in tampered.output


def test_silence_through_the_cli_needs_another_identity(
    env: Path, stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTMANAGER_URL", stack.alertmanager_url)
    monkeypatch.setenv("PROMETHEUS_URL", stack.prometheus_url)
    asked = runner.invoke(
        app, ["ask", "--as", "shell:alice", "silence HighErrorRate for 1h, cli test"]
    )
    assert asked.exit_code == 0, asked.output  # an approval was opened
    match = re.search(r"to approve: opsbot approve ([a-z0-9]{6}) --as shell:bob", asked.output)
    assert match, asked.output
    approval_id = match.group(1)
    assert f"to deny:    opsbot deny {approval_id} --as shell:bob --reason WHY" in asked.output
    assert "type `approve" not in asked.output  # the shell's syntax is not this command line's
    self_approved = runner.invoke(app, ["approve", approval_id, "--as", "shell:alice"])
    assert self_approved.exit_code == 1 and "someone else must approve" in self_approved.output
    approved = runner.invoke(app, ["approve", approval_id, "--as", "shell:bob"])
    assert approved.exit_code == 0, approved.output
    assert "silence " in approved.output and "created for" in approved.output
    silences = httpx.get(f"{stack.alertmanager_url}/api/v2/silences").json()
    [created] = [s for s in silences if s["comment"] == "cli test"]
    again = runner.invoke(app, ["approve", approval_id, "--as", "shell:carol"])
    assert again.exit_code == 1 and "already executed" in again.output
    httpx.delete(f"{stack.alertmanager_url}/api/v2/silence/{created['id']}")


def test_skills_lists_catalog(env: Path) -> None:
    result = runner.invoke(app, ["skills"])
    assert "prometheus.range" in result.output and "set PROMETHEUS_URL" in result.output
    header = next(line for line in result.output.splitlines() if "skill" in line and "┃" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == [
        "skill",
        "risk",
        "backend",
        "status",
        "summary",
    ]
    listed = json.loads(runner.invoke(app, ["skills", "--json"]).output)
    assert {"skill": "help", "risk": "read", "backend": "meta", "status": "ok"}.items() <= next(
        row for row in listed if row["skill"] == "help"
    ).items()


def test_audit_list_is_a_table_that_says_when_it_is_truncated(env: Path) -> None:
    for _ in range(3):
        assert runner.invoke(app, ["ask", "--as", "shell:eve", "help"]).exit_code == 0
    newest = runner.invoke(app, ["audit", "list", "--limit", "4"])
    assert newest.exit_code == 0, newest.output
    lines = [line.rstrip() for line in newest.output.splitlines()]
    assert lines[0] == "4 audit records (seq 9-12)" and "┃ seq" in newest.output
    assert lines[-1] == (
        "older records are not shown: see them with --offset 4 (--limit 4), or narrow with "
        "--since/--actor/--skill"
    )
    older = runner.invoke(app, ["audit", "list", "--limit", "4", "--offset", "9"])
    assert older.output.splitlines()[0].rstrip() == "3 audit records (seq 1-3)"
    assert "older records are not shown" not in older.output
    beyond = runner.invoke(app, ["audit", "list", "--offset", "40"])
    assert beyond.output.splitlines()[0].rstrip() == "0 audit records (none)"
    everything = runner.invoke(app, ["audit", "list", "--json", "--limit", "12"])
    assert [r["seq"] for r in json.loads(everything.stdout)] == list(range(1, 13))
    assert everything.stderr == ""


def test_every_option_and_argument_says_what_it_is_for() -> None:
    import typer.main

    def commands(command: Any) -> Any:
        yield command
        for sub in getattr(command, "commands", {}).values():
            yield from commands(sub)

    undocumented = [
        f"{command.name} {param.name}"
        for command in commands(typer.main.get_command(app))
        for param in command.params
        if not getattr(param, "help", None)
    ]
    assert undocumented == []


def test_each_demo_stack_has_its_own_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Approvals left pending by an earlier demo run do not act on a new stack."""
    import opsbot.cli
    import opsbot.demo

    for var in ("OPSBOT_DATABASE_URL", "PROMETHEUS_URL", "ALERTMANAGER_URL", "OPSBOT_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPSBOT_POLICY_PATH", str(ROOT / "policies"))
    monkeypatch.chdir(tmp_path)
    runs: list[Path] = []

    class Stack(LocalStack):  # the stack's folders and URLs, without its servers
        def start(self) -> LocalStack:
            self.workdir = tmp_path / f"stack-{len(runs)}"
            self.workdir.mkdir()
            runs.append(self.workdir)
            self.prometheus_url = self.alertmanager_url = "http://127.0.0.1:9"
            return self

        def stop(self) -> None:
            pass

    opened: list[str] = []

    async def chat(services: Services, actor: Actor) -> None:
        left = [a.id for a in await services.approvals.find()]
        opened.append(",".join(left))
        request = Request(actor=actor, channel="shell", text="silence X")
        decision = NeedsApproval(
            rule="r", approvers=("group:oncall",), min_approvals=1, ttl=timedelta(hours=1)
        )
        await services.approvals.open(request, Invocation(skill="alerts.silence"), decision)

    monkeypatch.setattr(opsbot.demo, "LocalStack", Stack)
    monkeypatch.setattr(opsbot.cli, "_chat", chat)
    for _ in range(2):
        result = runner.invoke(app, ["demo"])
        assert result.exit_code == 0, result.output
        assert f"this demo's own database: sqlite+aiosqlite:///{runs[-1]}/opsbot.db" in (
            result.output
        )
    assert opened == ["", ""]  # the second stack does not see the first one's approval
    assert [(run / "opsbot.db").exists() for run in runs] == [True, True]
    monkeypatch.setenv("OPSBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'mine.db'}")
    assert runner.invoke(app, ["demo"]).exit_code == 0  # a configured database is used
    assert opened[-1] == "" and (tmp_path / "mine.db").exists()


class ScriptedConsole(Console):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(file=io.StringIO(), force_terminal=False, width=200)
        self.lines = lines

    def input(self, prompt: object = "", **_: object) -> str:  # type: ignore[override]
        if not self.lines:
            raise EOFError
        return self.lines.pop(0)


async def test_interactive_shell_switches_identity(
    sqlite_services: Services, tmp_path: Path
) -> None:
    console = ScriptedConsole(["help", "/as shell:bob", "approve zzzzzz", "/as nonsense", "/quit"])
    await interactive(Engine(sqlite_services), console, Actor(id="shell:alice"), tmp_path)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Skills you (shell:alice) may use here" in out
    assert "now acting as shell:bob" in out
    assert "no approval request with id zzzzzz" in out
    assert "usage: /as platform:user" in out


def test_shell_converts_the_neutral_markup(tmp_path: Path) -> None:
    styled = RichText.from_markup(to_rich("rule **sre restarts**, 2*3 [chart] _why_ `a*b`"))
    assert styled.plain == "rule sre restarts, 2*3 [chart] why `a*b`"
    assert [(styled.plain[s.start : s.end], str(s.style)) for s in styled.spans] == [
        ("sre restarts", "bold"),
        ("why", "italic"),
        ("`a*b`", "cyan"),
    ]
    console = ScriptedConsole([])
    ShellRenderer(console, tmp_path).render(
        Message(thread="t1", step=Step.POLICY, blocks=[Text(text="Allowed by rule **x**; 2*3.")])
    )
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert out == "[t1]   policy │ Allowed by rule x; 2*3.\n"  # no stray asterisks when piped


async def test_shell_runs_a_suggested_action_it_showed(
    sqlite_services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(sqlite_services)
    action = ActionButton(
        id="act-help-1", label="What can I do?", invocation=Invocation(skill="help")
    )
    await engine.actions.offer(action, thread="t-act", channel="shell")
    console = ScriptedConsole([])
    renderer = ShellRenderer(console, tmp_path)
    renderer.render(Message(thread="t-act", step=Step.RESULT, blocks=[action]))
    assert "[What can I do?]  ->  type `run act-help-1`" in console.file.getvalue()  # type: ignore[attr-defined]

    clicks: list[tuple[str, str, str]] = []
    click = engine.click

    async def spy(action_id: str, clicker: Actor, reply: Any, *, channel: str) -> None:
        clicks.append((action_id, clicker.id, channel))
        await click(action_id, clicker, reply, channel=channel)

    monkeypatch.setattr(engine, "click", spy)
    eve = Actor(id="shell:eve")
    await run_command(engine, renderer, eve, "run act-help-1")
    assert clicks == [("act-help-1", "shell:eve", "shell")]
    assert "Skills you (shell:eve) may use here" in console.file.getvalue()  # type: ignore[attr-defined]
    await run_command(engine, renderer, eve, "run diagnostics")  # not shown here: a request
    assert len(clicks) == 1


def test_shell_prints_a_card_once_then_its_new_state(tmp_path: Path) -> None:
    card = ApprovalCard(
        approval_id="abc234",
        summary="k8s.restart name=checkout namespace=shop",
        requester="shell:alice",
        approvers=["group:oncall"],
        min_approvals=1,
        expires_at=datetime(2026, 1, 1, 12, tzinfo=UTC),
        state="pending",
        preview="restart deployment shop/checkout",
    )
    console = ScriptedConsole([])
    renderer = ShellRenderer(console, tmp_path)
    renderer.render(Message(thread="t1", step=Step.APPROVAL, blocks=[card]))
    expired = card.model_copy(update={"state": "expired", "status": "expired, nothing ran"})
    renderer.render(Message(thread="t1", step=Step.APPROVAL, blocks=[expired]))
    first, later = console.file.getvalue().split("Approval `abc234` expired")  # type: ignore[attr-defined]
    assert "restart deployment shop/checkout" in first and "type `approve abc234`" in first
    assert "approve abc234" not in later and "restart deployment" not in later  # no buttons


async def test_shell_announces_approvals_that_expired(
    sqlite_services: Services, tmp_path: Path
) -> None:
    """The shell sweeps expiries before each line (the engine no longer does it per request)."""
    request = Request(actor=Actor(id="shell:alice"), channel="shell", text="silence X")
    decision = NeedsApproval(
        rule="r", approvers=("group:oncall",), min_approvals=1, ttl=timedelta(0)
    )
    approval = await sqlite_services.approvals.open(
        request, Invocation(skill="alerts.silence", args={"matchers": {"alertname": "X"}}), decision
    )
    console = ScriptedConsole(["help", "/quit"])
    await interactive(Engine(sqlite_services), console, Actor(id="shell:bob"), tmp_path)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"Approval `{approval.id}` expired without enough approvals; nothing was run." in out
    assert (await sqlite_services.approvals.get(approval.id)).state.value == "expired"  # type: ignore[union-attr]
