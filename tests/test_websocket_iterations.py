"""How many loop iterations a live frame waits in the websocket transport before the client's send.

While the loop runs other work (an app encoding a 16 MB event, python-engineio's writer for
another tab), each iteration a frame waits for may hold tens of milliseconds of it: the
``bigframes`` flood of ``benchmarks.floods`` measures what that costs another user's stream.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from asgi_resume import ResumeMiddleware
from asgi_resume.log.memory import MemoryLog
from asgi_resume.log.redis import RedisLog
from asgi_resume.transport.linger import LINGER_BELOW_S
from tests.support.app import engineio_handshake
from tests.support.loop import KeptUpTransport, counting_iterations
from tests.support.redis_server import RedisServer
from tests.support.waits import until

pytestmark = pytest.mark.anyio

_SCOPE = {"type": "websocket", "path": "/socket.io/", "query_string": b"EIO=4&transport=websocket", "headers": []}


def _token(i: int) -> str:
    data = {"type": "chat:completion", "data": {"content": f"tok{i}"}}
    return "42" + json.dumps(["events", {"chat_id": "c", "message_id": "m", "data": data}])


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_frame_that_comes_alone_waits_only_for_its_log_call(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """A frame that comes alone (a token stream's pace) on the in-process log is logged and sent
    from the app's own ``send`` call, in the iteration it came in. On Redis it waits for the
    append's four iterations (``test_an_append_on_redis_waits_for_four_loop_iterations_only``) and
    one more, the connection's writer task's: the app's ``send`` must not wait for the round trip
    (see ``WebSocketConnection._forward``)."""
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        log: MemoryLog | RedisLog = RedisLog.from_url(server.url, prefix="iterations-ws")
    else:
        log = MemoryLog()
    emits: asyncio.Queue[str] = asyncio.Queue()
    client: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    sent: list[tuple[str, int]] = []  # (frame, the iteration it reached the client in)
    emitted: list[int] = []  # the iteration each frame was handed to the middleware in
    arrived = asyncio.Event()  # (not a poll: its timer's iterations would be counted)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # python-engineio's shape
        await engineio_handshake(receive, send)
        while True:
            text = await emits.get()
            emitted.append(iterations.count)
            await send({"type": "websocket.send", "text": text})

    class Server:  # uvicorn's protocol object: its ``send`` is a bound method, next to its transport
        transport = KeptUpTransport()

        async def send(self, message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                sent.append((message["text"], iterations.count))
                arrived.set()

    middleware = ResumeMiddleware(app, log=log)
    client.put_nowait({"type": "websocket.connect"})
    client.put_nowait({"type": "websocket.receive", "text": '40{"token":"alice"}'})
    with counting_iterations() as iterations:  # (the app and the server's send read it as they run)
        connection = loop.create_task(middleware(_SCOPE, client.get, Server().send))
        try:
            await until(lambda: any(text.startswith("40") for text, _ in sent), 10)
            for i in range(6):  # the first one connects to Redis and loads its scripts
                arrived.clear()
                emits.put_nowait(_token(i))
                await asyncio.wait_for(arrived.wait(), 10)
                await asyncio.sleep(LINGER_BELOW_S * 10)  # a token stream's pace (not a wait for anything)
            frames = [(text, at) for text, at in sent if text.startswith("42")]
            assert [json.loads(text[2:])[1]["seq"] for text, _ in frames] == [1, 2, 3, 4, 5, 6]
            waited = [at - emitted[i] for i, (_, at) in enumerate(frames)][1:]
        finally:
            connection.cancel()
            await asyncio.gather(connection, return_exceptions=True)
            await middleware.runtime.aclose()
    assert max(waited) <= (0 if backend == "memory" else 5), waited
