from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import socketio

from asgi_resume import ResumeMiddleware
from tests.support.app import make_app, make_sio
from tests.support.redis_server import RedisCluster, RedisServer
from tests.support.server import serve

_prefixes = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Middleware settings for each log backend; the behaviour suite runs on all of them."""
    if request.param == "memory":
        return {}
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return {"redis_url": cluster.url, "redis_cluster": True, "key_prefix": f"t{next(_prefixes)}"}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"redis_url": server.url, "key_prefix": f"t{next(_prefixes)}"}


@dataclass
class Stack:
    sio: socketio.AsyncServer
    app: ResumeMiddleware
    url: str


@pytest.fixture
async def stack(backend: dict[str, Any]) -> AsyncIterator[Stack]:
    """A python-socketio app wrapped by the middleware, served by uvicorn on loopback."""
    sio = make_sio()
    app = make_app(sio, **backend)
    async with serve(app) as url:
        yield Stack(sio, app, url)
