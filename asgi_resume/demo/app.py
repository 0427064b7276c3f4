"""The demo: a Starlette + python-socketio chat whose answers survive a reload.

The app is written the way an ordinary python-socketio app is: it streams a (fake, deterministic)
LLM answer as open-webui-shaped ``events`` to the user's room and only stores the finished text.
The one line that makes it resumable is the last one of :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import socketio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from asgi_resume import ResumeMiddleware

STATIC = files("asgi_resume.demo").joinpath("static")
_WORDS = (
    "stream", "socket", "frame", "replay", "resume", "middleware", "token", "answer", "browser",
    "reload", "network", "worker", "redis", "sequence", "epoch", "log", "history", "client",
    "server", "message", "event", "python", "async", "chunk", "tab", "device", "window", "moment",
    "second", "order", "exactly", "once", "gap", "hold", "latency", "batch", "pipeline", "cluster",
)  # fmt: skip


def fake_answer(prompt: str, tokens: int) -> list[str]:
    """A deterministic "LLM answer": the same prompt always streams the same tokens."""
    rng = random.Random(prompt)
    out: list[str] = []
    for i in range(tokens):
        word = rng.choice(_WORDS)
        if i == 0 or out[-1].endswith(". "):
            word = word.capitalize()
        end = ". " if rng.random() < 0.08 else " "
        out.append(word + end)
    if out:
        out[-1] = out[-1].rstrip(" ").rstrip(".") + "."
    return out


def completion(message_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """An open-webui ``events`` envelope."""
    return {"chat_id": "demo", "message_id": message_id, "data": {"type": "chat:completion", "data": data}}


@dataclass
class Message:
    id: str
    prompt: str
    status: str = "streaming"  # then "done"
    text: str = ""  # stored once done, like an app that saves the finished message

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "status": self.status, "text": self.text}


@dataclass
class Database:
    """The app's own store: per user, their messages; in-progress text is not saved."""

    messages: dict[str, list[Message]] = field(default_factory=dict)

    def add(self, user: str, prompt: str) -> Message:
        message = Message(uuid.uuid4().hex, prompt)
        self.messages.setdefault(user, []).append(message)
        return message


def create_app(*, tokens: int = 400, pace: float = 0.06, **middleware: Any) -> ASGIApp:
    """The demo app; ``tokens`` per answer, one every ``pace`` seconds (400 x 60 ms = 24 s)."""
    sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)
    db = Database()

    def user_of(auth: Any) -> str | None:
        token = auth.get("token") if isinstance(auth, dict) else None
        return token if isinstance(token, str) and 0 < len(token) <= 100 else None

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        user = user_of(auth)
        if user is None:
            return False
        await sio.save_session(sid, {"user": user})
        await sio.enter_room(sid, f"user:{user}")
        return True

    async def chat(sid: str, request: Any) -> dict[str, Any]:
        user = (await sio.get_session(sid))["user"]
        prompt = str(request.get("prompt", "")) if isinstance(request, dict) else ""
        message = db.add(user, prompt[:500] or "Tell me about resumable streams")
        sio.start_background_task(stream_answer, user, message)
        return {"message_id": message.id}

    sio.on("connect", connect)
    sio.on("chat", chat)

    async def stream_answer(user: str, message: Message) -> None:
        room = f"user:{user}"
        for token in fake_answer(message.prompt, tokens):
            await sio.emit("events", completion(message.id, {"content": token}), room=room)
            await asyncio.sleep(pace)
        message.text = "".join(fake_answer(message.prompt, tokens))
        message.status = "done"
        await sio.emit("events", completion(message.id, {"done": True}), room=room)

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(STATIC.joinpath("index.html").read_text("utf-8"))

    async def static(request: Request) -> FileResponse:
        name = request.path_params["name"]
        if name not in ("app.js", "socket.io.esm.min.js"):
            return FileResponse(str(STATIC.joinpath("index.html")), status_code=404)
        return FileResponse(str(STATIC.joinpath(name)), media_type="text/javascript")

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)  # the page has an inline icon; this is for clients that ask anyway

    async def messages(request: Request) -> JSONResponse:
        user = request.query_params.get("user", "")
        return JSONResponse([m.public() for m in db.messages.get(user, [])])

    web = Starlette(
        routes=[
            Route("/", index),
            Route("/favicon.ico", favicon),
            Route("/static/{name}", static),
            Route("/api/messages", messages),
        ]
    )
    return ResumeMiddleware(socketio.ASGIApp(sio, other_asgi_app=web), **middleware)
