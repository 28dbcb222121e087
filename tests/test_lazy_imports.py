"""A command that touches no backend imports none of the backends', models' or chat
platforms' libraries (issue 9, section 1): they load when first used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: top-level import names that must stay unloaded (``langchain`` covers langchain_core, ...)
HEAVY = (
    "kubernetes",
    "matplotlib",
    "pandas",
    "prometheus_api_client",
    "langchain",
    "openai",
    "tiktoken",
    "slack_bolt",
    "slack_sdk",
    "discord",
    "aiohttp",
    "drain3",
)

PROBE = """
import json, sys
what, out, heavy = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(","))
if what == "registry":
    from opsbot.config import load_settings
    from opsbot.skills.base import load_registry
    assert len(load_registry(load_settings())) > 10
else:
    from opsbot.cli import main
    sys.argv = ["opsbot", *sys.argv[4:]]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code
loaded = sorted({m for m in sys.modules if m.split(".")[0].startswith(heavy)})
with open(out, "w") as f:
    json.dump(loaded, f)
"""


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["registry"], id="load_registry"),
        pytest.param(["cli", "skills"], id="opsbot skills"),
        pytest.param(["cli", "ask", "--as", "shell:alice", "help"], id="opsbot ask help"),
    ],
)
def test_no_backend_library_is_imported_until_used(tmp_path: Path, command: list[str]) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OPSBOT_")
        and k not in ("PROMETHEUS_URL", "ALERTMANAGER_URL", "KUBECONFIG", "OPENAI_API_KEY")
    }
    env["OPSBOT_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'opsbot.db'}"
    out = tmp_path / "modules.json"
    what, *args = command
    done = subprocess.run(
        [sys.executable, "-c", PROBE, what, str(out), ",".join(HEAVY), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == []


def test_alembic_runs_only_when_the_schema_is_behind(tmp_path: Path) -> None:
    """The first command migrates a new database; the next finds its revision current with
    one query and imports no Alembic at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSBOT_")}
    env["OPSBOT_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'opsbot.db'}"
    loaded = []
    for round_ in ("new", "current"):
        out = tmp_path / f"modules-{round_}.json"
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                PROBE,
                "cli",
                str(out),
                "alembic",
                "ask",
                "--as",
                "shell:a",
                "help",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        loaded.append(json.loads(out.read_text()))
    assert "alembic" in loaded[0]  # the new database was migrated
    assert loaded[1] == []  # the current one was not touched


def test_the_shipped_head_is_read_from_the_migration_files() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from opsbot.store import MIGRATIONS, shipped_heads

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert shipped_heads() == set(ScriptDirectory.from_config(config).get_heads())
