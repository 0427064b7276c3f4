"""The app every benchmark runs, bare or wrapped: an ordinary python-socketio server.

``BENCH_MODE`` picks what wraps it: ``bare`` (nothing), ``memory`` (the middleware, memory log) or
``redis`` (the middleware on ``BENCH_REDIS_URL``). Control events make it emit. With
``BENCH_MANAGER_URL`` set, python-socketio fans emits out to the other workers through that Redis
(``AsyncRedisManager``), as a deployment with several workers does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

import socketio

MODE = os.environ.get("BENCH_MODE", "bare")
MANAGER_URL = os.environ.get("BENCH_MANAGER_URL")
sio = socketio.AsyncServer(
    async_mode="asgi",
    logger=False,
    engineio_logger=False,
    client_manager=socketio.AsyncRedisManager(MANAGER_URL) if MANAGER_URL else None,
)


def frame(message_id: str, i: int, size: int) -> dict[str, Any]:
    """An open-webui shaped token frame; ``t`` is the emit time (CLOCK_MONOTONIC, shared by processes)."""
    content = f"tok{i} ".ljust(size, "x")
    data = {"type": "chat:completion", "data": {"content": content}}
    return {"chat_id": "bench", "message_id": message_id, "t": time.monotonic(), "data": data}


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    room = auth.get("room") if isinstance(auth, dict) else None
    if room:
        await sio.enter_room(sid, room)


@sio.on("blast")
async def blast(sid: str, request: dict[str, Any]) -> float:
    """Emit ``n`` frames to a room as fast as the app can; returns the seconds it took."""
    started = time.monotonic()
    for i in range(1, request["n"] + 1):
        await sio.emit("events", frame(request["message_id"], i, request.get("size", 16)), room=request["room"])
    return time.monotonic() - started


@sio.on("steady")
async def steady(sid: str, request: dict[str, Any]) -> None:
    """Emit at ``rate`` frames/s for ``n`` frames, in the background."""

    async def run() -> None:
        interval, start = 1.0 / request["rate"], time.monotonic()
        for i in range(1, request["n"] + 1):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await sio.emit("events", frame(request["message_id"], i, request.get("size", 16)), room=request["room"])

    sio.start_background_task(run)


@sio.on("stats")
async def stats(sid: str, request: Any = None) -> dict[str, Any]:
    """The middleware's counters (empty for the bare app)."""
    runtime = getattr(app, "runtime", None)
    return dataclasses.asdict(runtime.stats) if runtime is not None else {}


app: Any = socketio.ASGIApp(sio)
if MODE != "bare":
    from asgi_resume import ResumeMiddleware

    redis_url = os.environ["BENCH_REDIS_URL"] if MODE == "redis" else None
    app = ResumeMiddleware(
        app,
        redis_url=redis_url,
        principal="auth:room",
        key_prefix=os.environ.get("BENCH_KEY_PREFIX") or f"bench{os.getpid()}",
    )
