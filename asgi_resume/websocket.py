"""The websocket transport: one ASGI websocket connection to the Engine.IO endpoint.

Owns: wrapping the app's ``send`` (frames go through a bounded queue to a writer
task that logs and stamps them a batch at a time) and ``receive`` (resume requests
are answered here and never reach the app; CONNECT auth names the principal), and
the *hold*: when the client leaves while one of its streams is in flight, the app is
not told yet; the middleware answers its pings and keeps logging what it sends,
until another connection of the same principal takes the streams over (receives them
live or resumes them), the streams are done (plus grace) or go idle, ``hold_max``
passes, or the app closes. A client that owes the app an answer (an event with an ack
id) is not held, and a hold ends at once when the app asks the absent client something.
Must not touch: what a frame means (``outbound``), storage (``log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from typing import Any
from urllib.parse import parse_qs

import anyio
from anyio.abc import TaskGroup
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_resume import protocol
from asgi_resume.frames import Item
from asgi_resume.inbound import inspect
from asgi_resume.outbound import Outbound
from asgi_resume.runtime import Runtime, fault
from asgi_resume.session import Session

logger = logging.getLogger("asgi_resume")

OUTBOX_SIZE = 1024  # frames queued per connection before python-engineio's writer for it waits
SERVER_GOING_AWAY = 1012  # uvicorn closes websockets with it on shutdown
RECOVERY_POLL_S = 0.25  # how often a held connection asks whether its client recovered elsewhere
LINGER_S = 0.001  # longest a batch waits for more frames before its log call (only while they keep coming)
LINGER_IDLE_TURNS = 3  # loop turns without a new frame that end the wait
LINGER_BATCH = 256
LINGER_BELOW_S = 0.0002  # only frames closer together than this make a batch wait for more
_PONG: Message = {"type": "websocket.receive", "text": protocol.PONG_FRAME}
_END = object()  # queued after the app returns: the writer ends once it has sent what came before
_NUDGE = object()  # frames were fed that need the log: the writer sends them


def _ends_connection(item: Item) -> bool:
    """An Engine.IO CLOSE, a Socket.IO DISCONNECT, or the ASGI close."""
    if isinstance(item, str):
        return item == protocol.EIO_CLOSE or item[:2] == "41"
    return isinstance(item, dict) and item.get("type") == "websocket.close"


def disable_nagle(send: Send) -> None:
    """Ask the kernel to send each frame at once (TCP_NODELAY), when the server lets us reach its socket.

    With the Redis log, frames sent after the log round trip otherwise sit behind Nagle's
    algorithm until the client's delayed ACK: measured at +9.6 ms p50 on loopback with uvicorn,
    which leaves TCP_NODELAY off (benchmarks/latency.py). With the in-process log there is no such
    wait and Nagle's coalescing is worth +40% throughput, so it stays on. uvicorn's ``send`` is a
    method of its protocol object, which has the transport; any other server is left as it is.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    get_extra_info = getattr(transport, "get_extra_info", None)
    if get_extra_info is None:
        return
    try:  # (no family check: a socket uvicorn got with --fd reports AF_UNIX whatever it is)
        sock = get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError, TypeError):
        pass  # not TCP, or not a socket we may touch


def query_param(scope: Scope, name: str) -> str | None:
    raw = scope.get("query_string", b"")
    values = parse_qs(raw.decode("latin-1") if isinstance(raw, bytes) else raw).get(name)
    return values[0] if values else None


class WebSocketConnection:
    def __init__(self, app: ASGIApp, runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
        self.app = app
        self.runtime = runtime
        self.scope = scope
        self.receive = receive
        self.send = send
        # an upgrade from long-polling continues that session: same cursors, same principal
        self.sid = query_param(scope, "sid")
        existing = runtime.sessions.get(self.sid) if self.sid else None
        self.outbound = existing or Outbound(runtime, Session(scope, runtime.log.now_ms()))
        self.session = self.outbound.session
        # An upgrade probe: until the client sends UPGRADE it ignores what this websocket carries
        # (python-engineio only sends the probe's PONG here meanwhile), so requests that came by
        # long-polling are answered there, or here once the upgrade is done.
        self._probing = existing is not None
        if existing is None:
            self.session.upgraded = True  # a websocket from the start
        self.accepted = False
        self.client_gone = False
        # asyncio's queue, not an anyio stream: it costs no checkpoint per frame on the hot path
        self._outbox: asyncio.Queue[Item] = asyncio.Queue(OUTBOX_SIZE)
        self._to_app, self._from_hold = anyio.create_memory_object_stream[Message](8)
        self._holding = False
        self._owner = ""  # the principal a hold is counted against
        self._hold_end = anyio.Event()
        self._hold_wake = anyio.Event()
        self._hold_reason = ""
        self._handed_over = False
        self._last_feed, self._gap = 0.0, 1.0  # when the last frame came, and the time before it
        self._draining = False  # this connection holds the outbound lock and is sending
        self._tg: TaskGroup | None = None

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._write)
                try:
                    await self.app(self.scope, self._receive, self._send)
                finally:
                    await self._enqueue(_END)  # the writer sends what is queued, then ends
                    self._end_hold("the app ended the connection")
        finally:
            if self.sid:
                self.runtime.sessions.remove(self.sid, self.outbound)
            with anyio.CancelScope(shield=True):
                await self.outbound.release(handed_over=self._handed_over)

    # -- app -> client -------------------------------------------------------------------

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            item = text if text is not None else message.get("bytes")
            if item is not None:
                await self._forward(item)
                return
        if not self.accepted:  # the handshake (accept or reject) goes straight out
            self.accepted = kind == "websocket.accept"
            await self.send(message)
            if self.accepted and not self.runtime.log.synchronous:
                disable_nagle(self.send)
            return
        await self._forward(message)

    async def _forward(self, item: Item) -> None:
        """Take one item from the app, keeping the order of everything the client is sent.

        Frames are fed to the outbound pipeline right away (it is synchronous). Whoever holds the
        lock sends what was fed, in order: this call when nothing needs the log (no task switch),
        else the writer task, which logs in one call everything fed while its previous call was
        in flight: under load batches grow by themselves, and one log call serves many frames.
        """
        outbound = self.outbound
        if not self._outbox.empty() or (outbound.lock.locked() and not self._draining):
            # items queued ahead, or another transport of this session (long-polling, before the
            # upgrade) is sending: the writer takes it in turn
            await self._enqueue(item)
            return
        self._feed(item)
        if self._draining:
            if outbound.pending() < OUTBOX_SIZE:
                return  # our drain sends it after what it is sending now
            async with outbound.lock:  # too much waiting: python-engineio's writer waits for it
                await self._drain()
            return
        if outbound.needs_log(answer_deferred=not self._probing):
            self._enqueue_nowait(_NUDGE)  # the writer logs it, with whatever comes meanwhile
            return
        async with outbound.lock:
            await self._drain()

    def _feed(self, item: Item) -> None:
        if isinstance(item, str) and item[:1] == protocol.EIO_OPEN:
            self._register(item)
        now = time.monotonic()
        self._gap, self._last_feed = now - self._last_feed, now
        self.outbound.feed(item)

    async def _drain(self) -> None:
        """Send everything fed so far (the caller holds the lock), in order."""
        outbound = self.outbound
        self._draining = True
        try:
            answer_deferred = not self._probing
            while outbound.pending(answer_deferred=answer_deferred):
                if outbound.needs_log(answer_deferred=answer_deferred) and self._gap < LINGER_BELOW_S:
                    await self._linger()
                for item in await outbound.flush(answer_deferred=answer_deferred):
                    await self._deliver(item)
        finally:
            self._draining = False
        if self._holding:
            self._hold_wake.set()

    async def _linger(self) -> None:
        """Before a log call, let frames that are on their way join it, while they keep coming.

        Each log call costs the event loop CPU time: when frames come fast, waiting a few loop
        turns (never more than ``LINGER_S``) makes one call carry many frames. At a trickle (a
        frame every ``LINGER_BELOW_S`` or slower) the call goes at once.
        """
        outbound = self.outbound
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_S
        seen, idle = outbound.pending(), 0
        while idle < LINGER_IDLE_TURNS and seen < LINGER_BATCH and loop.time() < deadline:
            await asyncio.sleep(0)
            now = outbound.pending()
            idle = idle + 1 if now == seen else 0
            seen = now

    async def _enqueue(self, item: Item) -> None:
        try:
            self._outbox.put_nowait(item)
        except asyncio.QueueFull:
            await self._outbox.put(item)

    def _enqueue_nowait(self, item: Item) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes the writer anyway
            self._outbox.put_nowait(item)

    async def _write(self) -> None:
        outbox, outbound = self._outbox, self.outbound
        while True:
            batch = [await outbox.get()]
            while not outbox.empty():
                batch.append(outbox.get_nowait())
            async with outbound.lock:
                for item in batch:  # nothing else feeds while the lock is held and not draining
                    if item is not _NUDGE and item is not _END:
                        self._feed(item)
                await self._drain()
            if batch[-1] is _END:
                return

    def _register(self, opening: str) -> None:
        """A direct websocket learns its Engine.IO sid from the OPEN packet."""
        try:
            sid = json.loads(opening[1:]).get("sid")
        except (ValueError, AttributeError):
            return
        if isinstance(sid, str) and not self.sid:
            self.sid = sid
            self.runtime.sessions.add(sid, self.outbound)

    async def _deliver(self, item: Item) -> None:
        if self.client_gone:
            if self._holding:
                if item == protocol.PING_FRAME:
                    await self._to_app.send(_PONG)  # the app's heartbeat, answered for the absent client
                elif _ends_connection(item):  # what the absent client would have answered by leaving
                    self._end_hold("the app closed the connection")
            return
        message: Any
        if isinstance(item, str):
            message = {"type": "websocket.send", "text": item, "bytes": None}
        elif isinstance(item, bytes):
            message = {"type": "websocket.send", "text": None, "bytes": item}
        else:
            message = item
        try:
            await self.send(message)
        except Exception:  # noqa: BLE001 - the client is gone; the app learns it from receive()
            self.client_gone = True

    # -- client -> app -------------------------------------------------------------------

    async def _receive(self) -> Message:
        if self._holding:
            return await self._from_hold.receive()
        while True:
            message = await self.receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is None and self.session.drop_attachments > 0:
                    self.session.drop_attachments -= 1  # an attachment of a request answered here
                    continue
                if text is not None and text[:1] == protocol.EIO_MESSAGE:
                    found = await inspect(self.runtime, self.session, text)
                    if isinstance(found, str):
                        message = {**message, "text": found}
                    elif found is not None:
                        await self._enqueue(found)
                        continue
                elif text == protocol.EIO_CLOSE:
                    for state in self.session.recovery.values():
                        state.left_cleanly = True
                elif text == protocol.EIO_UPGRADE and self._probing:
                    self._probing = False  # the client reads this websocket from now on
                    self.session.upgraded = True
                    await self._upgraded()
                    if self.outbound.has_deferred():
                        await self._enqueue(_NUDGE)
            elif message["type"] == "websocket.disconnect":
                self.client_gone = True
                if self._start_hold(message):
                    return await self._from_hold.receive()
            return message

    async def _upgraded(self) -> None:
        """Its events no longer wait for the client's GET: a claim may trust this connection's silence.

        Said before python-engineio learns of the upgrade, and waits at most ``write_timeout`` (if the
        log does not hear it, a claim of the session gets a normal connect, never a hole).
        """
        recovery = self.outbound.recovery
        if recovery is None or not recovery.states or not self.runtime.health.available():
            return
        with anyio.move_on_after(self.runtime.settings.write_timeout):
            await recovery.note("upgraded")

    # -- the hold ------------------------------------------------------------------------

    def _start_hold(self, disconnect: Message) -> bool:
        settings, stats = self.runtime.settings, self.runtime.stats
        if disconnect.get("code") == SERVER_GOING_AWAY:
            # uvicorn closes open websockets with 1012 when it shuts down, and then waits for every
            # connection's task: held ones must end now, or shutdown would wait for them
            self.runtime.shut_down_holds()
            return False
        if self.runtime.shutting_down:
            return False
        streams = self.session.active_streams(settings.hold_idle)
        recovery = self.outbound.recovery
        recoverable = recovery is not None and recovery.recoverable
        if not (streams or recoverable) or self._tg is None or not self.accepted:
            return False
        owner = next((principal for principal in self.session.principals.values() if principal), None)
        if owner is None:  # nothing of its own is logged: a hold would keep nothing
            return False
        if self.session.calls:  # the app waits for this client's answer: it must learn it left
            logger.info("not holding %s: its client left owing the app an answer", self.sid)
            return False
        held_by_owner = self.runtime.held_by.get(owner, 0)
        if stats.holds_active >= settings.max_holds or held_by_owner >= settings.max_holds_per_principal:
            stats.holds_refused += 1
            skipped = self.runtime.throttle.allow("hold_refused")
            if skipped is not None:
                logger.warning(
                    "not holding %s: %d connections already held, %d of them this user's "
                    "(ASGI_RESUME_MAX_HOLDS, ASGI_RESUME_MAX_HOLDS_PER_PRINCIPAL; %d more not logged)",
                    self.sid,
                    stats.holds_active,
                    held_by_owner,
                    skipped,
                    extra=fault("hold_refused", held=stats.holds_active, skipped=skipped),
                )
            return False
        self._holding = True
        self.outbound.held = True
        self._owner = owner
        self.runtime.held_by[owner] = held_by_owner + 1
        stats.holds_active += 1
        stats.holds_started += 1
        what = f"streams in flight {[key.stream for key in streams[:5]]}" if streams else "a recoverable session"
        logger.info("client of %s left with %s: holding the connection", self.sid, what)
        self.runtime.holds.add(self._end_hold)
        self._tg.start_soon(self._hold, disconnect, recoverable)
        return True

    async def _hold(self, disconnect: Message, recoverable: bool) -> None:
        settings, session, recovery = self.runtime.settings, self.session, self.outbound.recovery
        started = time.monotonic()
        started_ms = self.runtime.log.now_ms()
        reason = ""
        # a recoverable session is held for the recovery window, so it keeps getting (and logging)
        # what the app sends its rooms, as the Node server keeps a session's packets
        recover_until = started + settings.recovery_window if recoverable else 0.0
        next_poll = started + RECOVERY_POLL_S
        with anyio.move_on_after(settings.hold_max):
            if recovery is not None and recoverable:
                await recovery.note("left")
            while not self._hold_end.is_set():
                if session.calls:
                    reason = "the app asked its absent client something"
                    break
                if session.taken_over(started_ms, settings.hold_idle):
                    reason = "another connection took its streams over"
                    self._handed_over = True
                    break
                now = time.monotonic()
                active = [at + settings.hold_idle for at in session.in_flight.values() if now < at + settings.hold_idle]
                # streams still flowing: look again when they could have gone idle; else end after the grace
                until = max(max(active) if active else session.last_frame_at + settings.hold_grace, recover_until)
                if until <= now:
                    reason = "streams went idle" if session.in_flight else "streams done"
                    break
                if recovery is not None and now < recover_until:
                    if now >= next_poll:
                        next_poll = now + RECOVERY_POLL_S
                        if await recovery.note("state"):
                            reason = "its client recovered the session on another connection"
                            self._handed_over = True
                            break
                    until = min(until, next_poll)
                self._hold_wake = anyio.Event()
                with anyio.move_on_after(until - now):
                    await self._hold_wake.wait()  # the writer wakes us when frames came
        reason = reason or self._hold_reason or f"held for hold_max ({settings.hold_max:g}s)"
        self.runtime.holds.discard(self._end_hold)
        self.runtime.stats.holds_active -= 1
        held = self.runtime.held_by.pop(self._owner, 1) - 1
        if held:
            self.runtime.held_by[self._owner] = held
        logger.info("hold of %s ended after %.1fs: %s", self.sid, time.monotonic() - started, reason)
        self._holding = False
        self.outbound.held = False
        await self._to_app.send(disconnect)

    def _end_hold(self, reason: str) -> None:
        self._hold_reason = reason
        self._hold_end.set()
        self._hold_wake.set()
