"""``python3 -m asgi_resume.demo`` as a newcomer runs it: from a checkout, again and again.

The checkout is a copy in a temporary directory with a ``.venv`` beside it, as the first run (or
``./scripts/test``) leaves it. The demo is started with an interpreter that lacks its dependencies,
the way the system's ``python3`` does, so it has to find and use that ``.venv``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

from tests.support.processes import stop

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0  # seconds; the demo normally answers within two


def _venv(path: Path) -> Path:
    """A venv without pip (quick to make); its python."""
    base = getattr(sys, "_base_executable", sys.executable)  # the interpreter the running venv was made from
    subprocess.run([base, "-m", "venv", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout whose ``.venv`` has the demo's dependencies (this suite's, by a .pth)."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT / "asgi_resume", root / "asgi_resume", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, root / name)
    python = _venv(root / ".venv")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "demo-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return root


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An interpreter without the demo's dependencies, like a fresh machine's ``python3``."""
    python = _venv(tmp_path_factory.mktemp("bare") / "venv")
    probe = subprocess.run([str(python), "-c", "import socketio"], capture_output=True)
    assert probe.returncode != 0, "the bare interpreter must lack python-socketio"
    return python


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_and_wait(python: Path, checkout: Path) -> str:
    """Start the demo, wait until its page answers, stop it; what it printed."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ASGI_RESUME_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    process = subprocess.Popen(
        [str(python), "-m", "asgi_resume.demo", "--port", str(port)],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    if response.status == 200 and "asgi_resume demo" in response.read().decode():
                        return _output_of(process)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)  # polling interval while the server is not up yet, not a synchronisation
    finally:
        if process.poll() is None:
            stop(process)
    output = _output_of(process)
    pytest.fail(f"the demo did not come up on port {port} (exit code {process.returncode}):\n{output}")


def _output_of(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        stop(process)
    assert process.stdout is not None
    return process.stdout.read()


def test_the_demo_starts_twice_in_a_row(checkout: Path, bare_python: Path) -> None:
    """The second start used to fail: a venv's python resolves to the interpreter that made it."""
    for run in ("first", "second"):
        output = _start_and_wait(bare_python, checkout)
        assert "asgi_resume demo on http://127.0.0.1:" in output, f"{run} run printed: {output}"
        assert "failed" not in output, f"{run} run printed: {output}"


def test_the_demo_starts_from_its_venv_directly(checkout: Path) -> None:
    """``.venv/bin/python -m asgi_resume.demo`` (what ./scripts/test users have) needs no bootstrap."""
    output = _start_and_wait(checkout / ".venv" / "bin" / "python", checkout)
    assert "Installing" not in output
    assert "asgi_resume demo on http://127.0.0.1:" in output


@pytest.mark.anyio
async def test_the_demo_page_has_an_icon_and_a_placeholder_for_resumes() -> None:
    """No /favicon.ico 404 in the browser's console; the empty resume log says what will appear."""
    from asgi_resume.demo.app import create_app

    transport = httpx.ASGITransport(app=create_app(tokens=3, pace=0.01))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        page = (await client.get("/")).text
        assert 'rel="icon"' in page
        assert (await client.get("/favicon.ico")).status_code < 400
    assert "#log:empty::before" in page
