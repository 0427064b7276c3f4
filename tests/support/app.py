"""The app under test: an ordinary python-socketio server, wrapped by the middleware."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from asgi_resume import ResumeMiddleware

NAMESPACES = ("/", "/admin")


def room_of(token: str) -> str:
    return f"user:{token}"


class Disconnects:
    """When the app learned that each of its connections ended."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._changed = asyncio.Condition()

    async def record(self, sid: str, reason: Any = None) -> None:
        async with self._changed:
            self.at[sid] = asyncio.get_running_loop().time()
            self._changed.notify_all()

    async def wait(self, sid: str, timeout: float = 15.0) -> float:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: sid in self.at)
        return self.at[sid]

    async def wait_count(self, count: int, timeout: float = 15.0) -> None:
        """Until the app has seen ``count`` connections end (in any namespace)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.at) >= count)


def make_sio(**options: Any) -> socketio.AsyncServer:
    """A server that puts every connection in its user's room (by its auth token), in each namespace.

    ``sio.disconnects`` records when the app saw each connection end.
    """
    sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False, **options)
    disconnects = sio.disconnects = Disconnects()

    for ns in NAMESPACES:

        async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None, ns: str = ns) -> bool:
            if isinstance(auth, dict) and auth.get("refuse"):  # a revoked token, say: the app says no
                return False
            token = auth.get("token") if isinstance(auth, dict) else None
            if token:
                await sio.enter_room(sid, room_of(token), namespace=ns)
            return True

        sio.on("connect", on_connect, namespace=ns)
    sio.on("disconnect", disconnects.record)
    return sio


async def engineio_handshake(receive: Any, send: Any) -> None:
    """An app of python-engineio's shape, driven by hand: its websocket accepted, Engine.IO's OPEN
    (sid ``e1``), the client's CONNECT read and answered (sid ``s1``)."""
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": '0{"sid":"e1","pingInterval":25000,"pingTimeout":20000}'})
    await receive()  # the client's CONNECT
    await send({"type": "websocket.send", "text": '40{"sid":"s1"}'})


def make_app(sio: socketio.AsyncServer, **settings: Any) -> ResumeMiddleware:
    return ResumeMiddleware(socketio.ASGIApp(sio), **settings)


#: counters that say the middleware met a fault or a bound (what a failing test should show)
FAULT_COUNTERS = (
    "log_failures",
    "frames_unstamped",
    "frames_unmatched",
    "frames_passed_over",
    "order_waits_timed_out",
    "repairs_dropped",
    "holds_started",
    "holds_refused",
    "resumes_gap",
)


def faults(app: ResumeMiddleware) -> dict[str, int]:
    """The middleware's fault counters that are not zero: for a failing assertion's message."""
    stats = app.runtime.stats
    return {name: value for name in FAULT_COUNTERS if (value := getattr(stats, name))}


def chat_event(
    message_id: str, i: int, *, done: bool = False, chat_id: str = "chat-1", content: str | None = None
) -> dict[str, Any]:
    """An open-webui shaped envelope: a token delta (``tok{i}``, or ``content``), or the final done frame."""
    data: dict[str, Any] = {"content": f"tok{i} " if content is None else content}
    if done:
        data = {"done": True, "content": ""}
    return {"chat_id": chat_id, "message_id": message_id, "data": {"type": "chat:completion", "data": data}}


async def emit_tokens(
    sio: socketio.AsyncServer, token: str, message_id: str, first: int, last: int, *, namespace: str = "/"
) -> None:
    for i in range(first, last + 1):
        await sio.emit("events", chat_event(message_id, i), room=room_of(token), namespace=namespace)


class PacedStream:
    """Emits a stream like a model does: one token every ``pace`` seconds, then a done frame.

    Tests wait on its progress (``wait_sent``) instead of sleeping.
    """

    def __init__(
        self, sio: socketio.AsyncServer, token: str, message_id: str, total: int, *, pace: float = 0.004
    ) -> None:
        self.sio, self.token, self.message_id, self.total, self.pace = sio, token, message_id, total, pace
        self.sent = 0
        self.done_at: float | None = None  # loop time the done frame was emitted
        self._progress = asyncio.Condition()
        self._paused = False  # pause(): the next token waits for resume()

    @property
    def expected(self) -> list[str]:
        return [f"tok{i} " for i in range(1, self.total + 1)] + [""]

    async def run(self) -> None:
        for i in range(1, self.total + 2):
            event = chat_event(self.message_id, i, done=i > self.total)
            async with self._progress:  # (an emit and its count together: pause() sees both or neither)
                await self._progress.wait_for(lambda: not self._paused)
                await self.sio.emit("events", event, room=room_of(self.token))
                if i > self.total:
                    self.done_at = asyncio.get_running_loop().time()
                self.sent = i
                self._progress.notify_all()
            await asyncio.sleep(self.pace)  # a model's pace, not synchronisation

    async def pause(self) -> int:
        """Emit nothing more until :meth:`resume`; returns how many frames were emitted."""
        async with self._progress:  # (not in the middle of an emit)
            self._paused = True
            return self.sent

    async def resume(self) -> None:
        async with self._progress:
            self._paused = False
            self._progress.notify_all()

    async def wait_sent(self, count: int, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: self.sent >= count)


def content_by_seq(events: list[Any]) -> dict[int, str]:
    """A client's view of a stream: one content per seq (asserting copies agree)."""
    view: dict[int, str] = {}
    for event in events:
        seq = event.get("seq")
        content = event["data"]["data"].get("content", "")
        assert view.setdefault(seq, content) == content, f"seq {seq} carried two contents"
    return view
