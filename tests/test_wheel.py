"""The package a user installs: build the wheel, check what it holds, install it in a fresh
venv outside the checkout and run the CLI there with the bundled policy (issue 9, section 4).

Nothing is downloaded: the wheel is built without build isolation (setuptools from the dev
extra), installed with ``--no-deps --no-index``, and the fresh venv reaches opsbot's
dependencies through a ``.pth`` line naming this venv's site-packages (a path in a ``.pth``
file is only appended to ``sys.path``: the checkout's editable-install finder, itself started
by a ``.pth`` file there, does not run in the fresh venv).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.wheel


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{cmd} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (a stale ``build/`` in the checkout
    cannot leak into it, and the checkout gets no build output)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("bot", "skills", "policies"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, src / file)
    dist = tmp / "dist"
    _run(
        sys.executable,
        *("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"),
        *("--disable-pip-version-check", "-q", "-w", dist, src),
        cwd=tmp,
    )
    [built] = dist.glob("opsbot-*.whl")
    return built


def test_the_wheel_installs_one_package_named_opsbot(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/", 1)[0] for n in names} == {"opsbot", "opsbot-0.1.0.dist-info"}
    for required in ("opsbot/policies/default.yaml", "opsbot/py.typed", "opsbot/testing.py"):
        assert required in names
    assert "opsbot/migrations/script.py.mako" in names
    web = {n.removeprefix("opsbot/") for n in names if n.startswith("opsbot/web/")}
    assert web >= {
        f"web/{p.relative_to(ROOT / 'bot' / 'web')}"
        for p in (ROOT / "bot" / "web").rglob("*")
        if p.is_file()
    }  # the audit console's templates, CSS and htmx
    # the LLM planner's prompt templates are package data, byte for byte (their hash is their version)
    for prompt in (ROOT / "bot" / "intent" / "prompts").glob("*.j2"):
        shipped = f"opsbot/intent/prompts/{prompt.name}"
        assert shipped in names
        assert zipfile.ZipFile(wheel).read(shipped) == prompt.read_bytes()
    migrations = [n for n in names if n.startswith("opsbot/migrations/versions/")]
    assert {Path(n).name for n in migrations if n.endswith(".py")} >= {
        p.name for p in (ROOT / "bot" / "migrations" / "versions").glob("*.py")
    }
    # every module of the source tree is in it (a package missing from pyproject is not)
    sources = {f"opsbot/{p.relative_to(ROOT / 'bot')}" for p in (ROOT / "bot").rglob("*.py")} | {
        f"opsbot/skills/{p.relative_to(ROOT / 'skills')}" for p in (ROOT / "skills").rglob("*.py")
    }
    assert sorted(sources - set(names)) == []
    entry_points = zipfile.ZipFile(wheel).read("opsbot-0.1.0.dist-info/entry_points.txt").decode()
    for line in (
        "opsbot = opsbot.cli:main",
        "opsbot = opsbot.testing",
        "meta = opsbot.skills.meta",
    ):
        assert line in entry_points


def test_a_fresh_venv_outside_the_checkout_answers_help_with_the_bundled_policy(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        sys.executable,
        *("-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q"),
        *("--disable-pip-version-check", wheel),
        cwd=tmp_path,
    )
    site = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path
        ).strip()
    )
    (site / "opsbot_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"  # no opsbot.yaml, no policies/ folder here
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPSBOT_", "PYTHON", "VIRTUAL_ENV"))
        and k not in ("PROMETHEUS_URL", "ALERTMANAGER_URL", "KUBECONFIG", "OPENAI_API_KEY")
    }
    env |= {
        "OPSBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'opsbot.db'}",
        "OPSBOT_CHART_DIR": str(tmp_path / "charts"),
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
        "COLUMNS": "200",
    }
    where = json.loads(
        _run(
            python,
            "-c",
            "import importlib.util, json, opsbot, opsbot.skills, opsbot.policy as p; "
            "print(json.dumps([opsbot.__file__, opsbot.skills.__file__, str(p.BUNDLED_POLICIES),"
            " [m for m in ('bot', 'skills', 'policies') if importlib.util.find_spec(m)]]))",
            cwd=work,
            env=env,
        )
    )
    package, skills, policies, strays = where
    versions = json.loads(
        _run(
            python,
            "-c",
            "import json; from opsbot.intent.templates import Prompts; "
            "print(json.dumps(Prompts().versions()))",
            cwd=work,
            env=env,
        )
    )
    assert versions["system"]["template"] == "system.md.j2" and versions["system"]["sha256"]
    for path in (package, skills, policies):
        assert Path(path).is_relative_to(site), f"{path} is not the installed copy"
    assert strays == []

    listed = _run(venv / "bin" / "opsbot", "skills", cwd=work, env=env)
    for skill in ("help", "audit.search", "alerts.list", "prometheus.query", "k8s.pods"):
        assert skill in listed

    answer = _run(venv / "bin" / "opsbot", "ask", "--as", "shell:alice", "help", cwd=work, env=env)
    assert "Skills you (shell:alice) may use here" in answer
    for skill in ("help", "audit.search", "alerts.list", "k8s.restart"):
        assert skill in answer  # k8s.restart: the bundled policy lets sre (alice) ask for it
    assert "Refused" not in answer and "Internal error" not in answer
