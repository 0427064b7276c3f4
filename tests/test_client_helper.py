"""The browser helper's own unit tests, under Node's test runner, and how the middleware serves it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack

NODE_DIR = Path(__file__).resolve().parent / "node"
HELPER = Path(__file__).resolve().parent.parent / "asgi_resume" / "static" / "asgi-resume.js"


def test_helper_unit_tests_pass_under_node() -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed; ./scripts/test installs it"
    result = subprocess.run(
        [node, "--test", "helper.test.mjs"], cwd=NODE_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout


@pytest.mark.anyio
async def test_the_middleware_serves_the_helper(stack: Stack) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(stack.url + "/socket.io/asgi-resume.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.content == HELPER.read_bytes()
