"""Serve an ASGI app with uvicorn on a loopback port, inside the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
            await close_middlewares(app)


async def close_middlewares(app: object) -> None:
    """Close every ResumeMiddleware in ``app``'s stack, as a lifespan shutdown would.

    uvicorn skips the lifespan shutdown on a forced exit, and a log left open (its Redis
    connections) is reported as unclosed by whichever later test the garbage collector runs in.
    Closing twice is harmless.
    """
    seen: set[int] = set()
    while app is not None and id(app) not in seen:
        seen.add(id(app))
        if isinstance(app, ResumeMiddleware):
            await app.runtime.aclose()
        app = getattr(app, "middleware_stack", None) or getattr(app, "app", None)
