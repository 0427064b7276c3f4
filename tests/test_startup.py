"""What a newcomer sees first: the start-up line, the package's names, the middleware's parameters."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import asgi_resume
from asgi_resume import ResumeMiddleware
from asgi_resume.config import OPTIONS
from tests.support.processes import stop

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_lists_what_it_offers() -> None:
    assert {"ResumeMiddleware", "Settings", "ConfigError"} <= set(dir(asgi_resume))


def test_every_setting_is_a_typed_keyword_parameter() -> None:
    parameters = inspect.signature(ResumeMiddleware.__init__).parameters
    settings = {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"log"}
    assert settings == {option.name for option in OPTIONS}
    assert all(parameters[name].annotation != inspect.Parameter.empty for name in settings)


@pytest.mark.parametrize("redis", [False, True])
def test_the_start_up_line_shows_under_plain_uvicorn(redis: bool) -> None:
    """``uvicorn app:app`` with uvicorn's default logging shows which path, log and JSON parser are used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASGI_RESUME_")}
    if redis:  # any reachable-looking URL: the line is printed before the first connection
        env["ASGI_RESUME_REDIS_URL"] = "redis://:hunter2@127.0.0.1:1/0"
    command = [sys.executable, "-m", "uvicorn", "tests.support.plain_app:app", "--port", "0"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        assert process.stderr is not None
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line or "Uvicorn running" in line:
                break
            lines.append(line)
    finally:
        stop(process)
    found = [line for line in lines if "asgi_resume: watching /socket.io/" in line]
    assert found, "".join(lines)
    assert "JSON: orjson" in found[0]
    if redis:
        assert "log: redis redis://:***@127.0.0.1:1/0 (replies: hiredis)" in found[0]
        assert "hunter2" not in "".join(lines)
    else:
        assert "log: memory" in found[0]
