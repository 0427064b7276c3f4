"""Serve an ASGI app with uvicorn on a loopback port, inside the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import uvicorn
from starlette.types import ASGIApp

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
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            server.force_exit = True
    sock.close()
