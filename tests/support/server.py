"""Serve an ASGI app with uvicorn on a loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn
from starlette.types import ASGIApp

from asgi_resume import ResumeMiddleware
from tests.support.processes import listening_socket


@asynccontextmanager
async def serve(app: ASGIApp, *, ws: str = "websockets-sansio") -> AsyncIterator[str]:
    """Yield ``http://127.0.0.1:PORT`` while uvicorn serves ``app``.

    The socket listens before uvicorn starts, so a client can connect at once: the
    kernel queues it until the server accepts.
    """
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", ws=ws, ws_ping_interval=None)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True
                server.force_exit = True
    finally:
        sock.close()
        with anyio.CancelScope(shield=True):
            await _wind_down(server, app)


async def _wind_down(server: uvicorn.Server, app: object) -> None:
    """What a graceful shutdown does, without waiting for clients a test left connected.

    uvicorn's forced exit neither waits for connection tasks nor runs the lifespan shutdown: holds
    end, every connection is cut, its task ends (releasing its streams in the log; a long-polling
    request python-engineio still keeps waiting for its client is cancelled after a second), and then each
    ResumeMiddleware closes its log. A log left open (its Redis connections) would be reported as
    unclosed by whichever later test the garbage collector happens to run in.
    """
    found = list(_middlewares(app))
    for middleware in found:
        middleware.holds.shut_down()
    for connection in list(server.server_state.connections):
        transport = getattr(connection, "transport", None)
        if transport is not None:
            transport.abort()
    if server.server_state.tasks:
        _, left = await asyncio.wait(server.server_state.tasks, timeout=1)
        polls = {task for task in left if _polls(task)}
        for task in polls:  # requests python-engineio keeps waiting (it does not watch its clients)
            task.cancel()
        if left:  # (anything else is waited for, as before: a wait of the middleware's that hangs shows)
            await asyncio.wait(left, timeout=4)
    for middleware in found:
        await middleware.runtime.aclose()


def _polls(task: asyncio.Task[object]) -> bool:
    """Is ``task`` a request waiting in python-engineio for a client that will not come: a GET in
    its poll, or a POST's CLOSE waiting for a GET to take what is queued?"""
    awaiting: Any = task.get_coro()
    while awaiting is not None:  # (down the chain of awaits: Task.get_stack gives a suspended task's top only)
        frame = getattr(awaiting, "cr_frame", None)
        code = frame.f_code if frame is not None else None
        if code is not None and code.co_name in ("poll", "close") and code.co_filename.endswith("async_socket.py"):
            return True
        awaiting = getattr(awaiting, "cr_await", None)
    return False


def _middlewares(app: object) -> Iterator[ResumeMiddleware]:
    """Every ResumeMiddleware in ``app``'s stack (Starlette's built middleware stack included)."""
    seen: set[int] = set()
    while app is not None and id(app) not in seen:
        seen.add(id(app))
        if isinstance(app, ResumeMiddleware):
            yield app
        app = getattr(app, "middleware_stack", None) or getattr(app, "app", None)
