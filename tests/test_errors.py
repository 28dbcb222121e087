"""Errors a person can read, exit codes a script can trust (issue 10, item 3).

Bad input prints one or two lines naming the problem and the fix, never a traceback (unless
``--debug`` or ``OPSBOT_LOG_LEVEL=debug``); ``opsbot ask`` exits with the request's outcome.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from opsbot.cli import app
from opsbot.config import load_settings
from opsbot.engine import Engine
from opsbot.errors import ConfigError, DatabaseError
from opsbot.intent.base import Planner
from opsbot.model import Actor, Answer, Clarify, Invocation, Outcome, Plan, Request, Run
from opsbot.services import Services
from opsbot.skills.base import load_registry
from opsbot.store import open_store
from tests.conftest import Thread

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    db = tmp_path / "errors.db"
    monkeypatch.setenv("OPSBOT_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.setenv("OPSBOT_POLICY_PATH", str(ROOT / "policies"))
    monkeypatch.setenv("OPSBOT_CHART_DIR", str(tmp_path / "charts"))
    for var in (
        "PROMETHEUS_URL",
        "ALERTMANAGER_URL",
        "LOKI_URL",
        "OPSBOT_CONFIG",
        "OPSBOT_LOG_LEVEL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    logging = structlog.get_config()
    yield db
    structlog.configure(**logging)  # `serve` and --debug configure logging to the runner's stderr


def fails(args: list[str], code: int = 1, **env: str) -> list[str]:
    """Run ``opsbot args``; check it exits ``code`` without a traceback; return its lines."""
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == code, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    assert "Traceback" not in result.output and "╭" not in result.output, result.output
    return result.output.strip().splitlines()


def test_bad_duration_names_the_option_and_the_form() -> None:
    lines = fails(["audit", "list", "--since", "2x"], code=64)
    assert lines == [
        "error: Invalid value for '--since': not a duration: '2x' (use e.g. 30s, 15m, 1h30m, 2d)",
        "  see `opsbot audit list --help`",
    ]
    assert fails(["audit", "export", "--since", "soon"], code=64)[0].startswith(
        "error: Invalid value for '--since'"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (
            "postgresql://opsbot:s3cret@127.0.0.1:1/opsbot",
            "cannot open the database postgresql+asyncpg://opsbot:***@127.0.0.1:1/opsbot: ",
        ),
        (
            "mysql://opsbot:s3cret@127.0.0.1/opsbot",
            "unsupported database URL mysql://opsbot:***@127.0.0.1/opsbot: the supported drivers "
            "are sqlite+aiosqlite (sqlite://) and postgresql+asyncpg (postgresql://, postgres://)",
        ),
        ("not a url", "OPSBOT_DATABASE_URL 'not a url' is not a database URL"),
        (
            "sqlite+aiosqlite:////no/such/folder/opsbot.db",
            "cannot open the SQLite database /no/such/folder/opsbot.db: the folder "
            "/no/such/folder does not exist",
        ),
    ],
)
def test_a_database_that_cannot_be_used_is_named_without_its_password(url: str, says: str) -> None:
    lines = fails(["audit", "list"], OPSBOT_DATABASE_URL=url)
    assert len(lines) == 2 and lines[0].startswith(f"error: {says}"), lines
    assert "OPSBOT_DATABASE_URL" in lines[1]
    assert "s3cret" not in "\n".join(lines)


def test_a_bad_setting_names_its_variable_and_what_it_is_for() -> None:
    lines = fails(["ask", "help"], OPSBOT_BACKEND_TIMEOUT="abc")
    assert lines == [
        "error: OPSBOT_BACKEND_TIMEOUT='abc': Input should be a valid number, unable to parse "
        "string as a number",
        "  fix or unset OPSBOT_BACKEND_TIMEOUT (seconds before a Prometheus/Alertmanager/Loki "
        "call is abandoned; default 10.0)",
    ]


def test_a_bad_backend_setting_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSBOT_K8S_MAX_REPLICAS", "x")
    with pytest.raises(ConfigError, match="OPSBOT_K8S_MAX_REPLICAS='x' \\(kubernetes backend\\)"):
        load_registry()
    for command in (["skills"], ["ask", "help"]):
        lines = fails(command)
        assert lines[0].startswith("error: OPSBOT_K8S_MAX_REPLICAS='x' (kubernetes backend): ")
        assert lines[1].startswith("  fix or unset OPSBOT_K8S_MAX_REPLICAS (k8s.scale refuses")


def test_a_broken_settings_file_and_a_missing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "opsbot.yaml").write_text("database_url: [\n")
    lines = fails(["skills"])
    assert lines[0] == (
        "error: opsbot.yaml:2: not valid YAML: expected the node content, but found '<stream end>'"
    )
    (tmp_path / "opsbot.yaml").write_text("backend_timeout: soon\n")
    assert fails(["skills"])[0].startswith("error: backend_timeout='soon' in opsbot.yaml: ")
    missing = tmp_path / "nowhere.yaml"
    assert fails(["skills"], OPSBOT_CONFIG=str(missing)) == [
        f"error: OPSBOT_CONFIG names {missing}, which is not a file",
        "  fix the path, or unset OPSBOT_CONFIG to read ./opsbot.yaml when present",
    ]
    monkeypatch.setenv("OPSBOT_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="OPSBOT_CONFIG names"):
        load_settings()


def test_eval_on_a_missing_or_broken_file(tmp_path: Path) -> None:
    lines = fails(["eval", str(tmp_path / "nope.yaml")], code=64)
    assert (
        lines[0]
        == f"error: Invalid value for 'dataset': file '{tmp_path / 'nope.yaml'}' does not exist."
    )
    (tmp_path / "cases.yaml").write_text("text: not a list\n")
    lines = fails(["eval", str(tmp_path / "cases.yaml")])
    assert lines[0].startswith(f"error: {tmp_path / 'cases.yaml'} is not an eval dataset: ")


def test_serve_on_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines = fails(["serve"], OPSBOT_HTTP_HOST="127.0.0.1", OPSBOT_HTTP_PORT=str(port))
    errors = [line for line in lines if not line.startswith("{")]  # the rest: JSON log lines
    assert errors == [
        f"error: cannot listen: error while attempting to bind on address ('127.0.0.1', {port}): "
        "address already in use",
        "  another process listens there: stop it, or set OPSBOT_HTTP_PORT (OPSBOT_HTTP_HOST)",
    ]


def test_a_bad_identity_and_unknown_commands_are_usage_errors() -> None:
    assert fails(["ask", "--as", "bob", "help"], code=64) == [
        "error: Invalid value for '--as': takes platform:user (e.g. shell:alice), not 'bob'",
        "  see `opsbot ask --help`",
    ]
    assert fails(["restart"], code=64)[0] == "error: No such command 'restart'."


def test_debug_shows_the_traceback() -> None:
    quiet = runner.invoke(app, ["audit", "list"], env={"OPSBOT_DATABASE_URL": "nope"})
    assert quiet.exit_code == 1 and isinstance(quiet.exception, SystemExit)
    for args, env in (
        (["--debug", "audit", "list"], {}),
        (["audit", "list"], {"OPSBOT_LOG_LEVEL": "debug"}),
    ):
        loud = runner.invoke(app, args, env={"OPSBOT_DATABASE_URL": "nope", **env})
        assert isinstance(loud.exception, DatabaseError), loud.output


async def test_open_store_errors_name_the_url_without_password(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as err:
        await open_store("postgresql://me:pw@127.0.0.1:1/db")
    assert "postgresql+asyncpg://me:***@127.0.0.1:1/db" in str(err.value)
    assert "pw" not in str(err.value).replace("postgresql", "")
    store = await open_store(f"sqlite:///{tmp_path / 'fine.db'}")  # the plain URL still works
    assert store.dialect == "sqlite"
    await store.close()


# -- exit codes of `opsbot ask` ----------------------------------------------------------------


def ask(*args: str, code: int, **env: str) -> str:
    result = runner.invoke(app, ["ask", *args], env=env)
    assert result.exit_code == code, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.output


def test_ask_exit_codes(unused_tcp_port: int) -> None:
    ask("--as", "shell:eve", "help", code=0)
    denied = ask("--as", "shell:eve", "restart checkout in shop", code=2)
    assert "Denied" in denied
    ask("--as", "shell:alice", "make me a sandwich", code=3)  # nothing fits: say it otherwise
    not_configured = ask("--as", "shell:alice", "show firing alerts", code=4)
    assert "Alertmanager is not configured: set ALERTMANAGER_URL" in not_configured
    failed = ask(
        "--as",
        "shell:alice",
        "show firing alerts",
        code=1,
        ALERTMANAGER_URL=f"http://127.0.0.1:{unused_tcp_port}",
    )
    assert "alerts.list` failed" in failed


def test_ask_json_prints_the_outcome_and_the_thread() -> None:
    out = ask("--as", "shell:eve", "--json", "restart checkout in shop", code=2)
    report = json.loads(out)
    assert report["outcome"] == "denied" and report["exit_code"] == 2
    [message] = report["messages"]
    assert message["step"] == "policy" and message["thread"] == report["request_id"]
    assert "no policy rule allows shell:eve" in message["blocks"][0]["text"]


class Scripted(Planner):
    name = "scripted"

    def __init__(self, plan: Plan) -> None:
        self.scripted = plan

    async def plan(self, request: Request, catalog: Any, tools: Any = None) -> Plan:
        return self.scripted

    async def explain(self, request: Request, withheld: Any) -> str | None:
        return None


@pytest.mark.parametrize(
    ("plan", "outcome"),
    [
        (Answer(text="hello"), Outcome.OK),
        (Answer(text="no idea", unmatched=True), Outcome.UNMATCHED),
        (Clarify(question="which namespace?"), Outcome.CLARIFY),
        (Run(invocations=[Invocation(skill="help")]), Outcome.OK),
        (Run(invocations=[Invocation(skill="no.such")]), Outcome.DENIED),
        (Run(invocations=[Invocation(skill="alerts.list")]), Outcome.FAILED),
        (Run(invocations=[Invocation(skill="help", args={"topic": 3.5j})]), Outcome.ERROR),
        (  # the first that did not succeed is the request's outcome
            Run(invocations=[Invocation(skill="alerts.list"), Invocation(skill="help")]),
            Outcome.FAILED,
        ),
    ],
)
async def test_engine_handle_says_how_a_request_ended(
    sqlite_services: Services, thread: Thread, plan: Plan, outcome: Outcome
) -> None:
    engine = Engine(sqlite_services, planner=Scripted(plan))
    request = Request(actor=Actor(id="shell:alice"), channel="shell", text="x")
    assert await engine.handle(request, thread) is outcome


def test_unknown_outcome_names_count_as_errors() -> None:
    assert Outcome.of("approval") is Outcome.APPROVAL
    assert Outcome.of("something new") is Outcome.ERROR
