"""Fixtures of the open-webui compatibility suite: run with ./scripts/compat (its own venv)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compat.support import FakeModel, OpenWebUI, RedisServer, tail

BACKENDS = ["memory", "redis"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeModel]:
    fake = FakeModel(tmp_path_factory.mktemp("model")).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, model: FakeModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenWebUI]:
    """open-webui wrapped by the middleware (ASGI_RESUME_PRESET=open-webui), on each log backend."""
    extra: dict[str, str] = {}
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        extra["ASGI_RESUME_REDIS_URL"] = redis.url
    webui = OpenWebUI(f"wrapped-{request.param}", tmp_path_factory.mktemp(f"webui-{request.param}"), model, True, extra)
    webui.backend = request.param  # type: ignore[attr-defined]
    try:
        webui.start()
    except Exception:
        webui.stop()
        raise
    yield webui
    webui.stop()


@pytest.fixture(scope="session")
def bare(model: FakeModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenWebUI]:
    """open-webui with no middleware at all, for the comparison numbers."""
    webui = OpenWebUI("bare", tmp_path_factory.mktemp("webui-bare"), model, False)
    try:
        webui.start()
    except Exception:
        webui.stop()
        raise
    yield webui
    webui.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, OpenWebUI) and isinstance(value.log, Path):
                report.sections.append((f"{value.name} log tail ({value.log})", tail(value.log, 30)))
