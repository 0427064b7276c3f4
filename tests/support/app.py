"""The app under test: an ordinary python-socketio server, wrapped by the middleware."""

from __future__ import annotations

from typing import Any

import socketio

from asgi_resume import ResumeMiddleware

NAMESPACES = ("/", "/admin")


def room_of(token: str) -> str:
    return f"user:{token}"


def make_sio(**options: Any) -> socketio.AsyncServer:
    """A server that puts every connection in its user's room (by its auth token), in each namespace."""
    sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False, **options)

    for ns in NAMESPACES:

        async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None, ns: str = ns) -> None:
            token = auth.get("token") if isinstance(auth, dict) else None
            if token:
                await sio.enter_room(sid, room_of(token), namespace=ns)

        sio.on("connect", on_connect, namespace=ns)
    return sio


def make_app(sio: socketio.AsyncServer, **settings: Any) -> ResumeMiddleware:
    return ResumeMiddleware(socketio.ASGIApp(sio), **settings)


def chat_event(message_id: str, i: int, *, done: bool = False, chat_id: str = "chat-1") -> dict[str, Any]:
    """An open-webui shaped envelope: a token delta, or the final done frame."""
    data: dict[str, Any] = {"content": f"tok{i} "}
    if done:
        data = {"done": True, "content": ""}
    return {"chat_id": chat_id, "message_id": message_id, "data": {"type": "chat:completion", "data": data}}


async def emit_tokens(
    sio: socketio.AsyncServer, token: str, message_id: str, first: int, last: int, *, namespace: str = "/"
) -> None:
    for i in range(first, last + 1):
        await sio.emit("events", chat_event(message_id, i), room=room_of(token), namespace=namespace)
