"""The app one uvicorn worker process runs in the multi-worker tests.

An ordinary python-socketio app: fan-out through ``AsyncRedisManager``, the middleware
configured by environment variables only (``ASGI_RESUME_REDIS_URL`` and friends).
Control events let a test make this worker the emitter.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import socketio

from asgi_resume import ResumeMiddleware

sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=socketio.AsyncRedisManager(os.environ["TEST_REDIS_URL"], channel=os.environ["TEST_SIO_CHANNEL"]),
    logger=False,
    engineio_logger=False,
)


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    token = auth.get("token") if isinstance(auth, dict) else None
    if token:
        await sio.enter_room(sid, f"user:{token}")


@sio.on("emit")
async def emit(sid: str, request: dict[str, Any]) -> int:
    """Emit events to a user's room, from this worker; answers once they are sent."""
    for event in request["events"]:
        await sio.emit("events", event, room=f"user:{request['token']}")
    return len(request["events"])


@sio.on("stream")
async def stream(sid: str, request: dict[str, Any]) -> None:
    """Stream ``total`` tokens then a done frame, at a model's pace, in the background."""

    async def run() -> None:
        message_id, total = request["message_id"], request["total"]
        for i in range(1, total + 2):
            data = {"content": f"tok{i} "} if i <= total else {"done": True, "content": ""}
            event = {"chat_id": "c", "message_id": message_id, "data": {"type": "chat:completion", "data": data}}
            await sio.emit("events", event, room=f"user:{request['token']}")
            await asyncio.sleep(request.get("pace", 0.004))

    sio.start_background_task(run)


app = ResumeMiddleware(socketio.ASGIApp(sio))
