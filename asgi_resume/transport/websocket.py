"""The websocket transport: one ASGI websocket connection to the Engine.IO endpoint.

Owns: wrapping the app's ``send`` (frames go through a queue to a writer task that logs and
stamps them a batch at a time; the app waits on a full one unless the connection keeps recovery
sessions) and ``receive`` (resume requests are answered here and never
reach the app; CONNECT auth names the principal), and, while a connection is held
(:mod:`asgi_resume.transport.holds`) after its client left, answering the app's pings and telling the app
at the end. Must not touch: what a frame means (``outbound``), storage (``log``), when a hold
ends (``holds``), when an upgrade's probe becomes the transport (``upgrade``), how long a batch
waits for more frames (``linger``), the queue to the writer (``outbox``), whether a send
stalled (``stall``).
"""

from __future__ import annotations

import asyncio
import time
from typing import assert_never

import anyio
from anyio.abc import TaskGroup
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_resume import protocol
from asgi_resume.pipeline.inbound import UNREAD
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.pipeline.units import Incoming, Outgoing, Passthrough
from asgi_resume.transport.engineio import EngineIOSession, EngineIOSessions, query_param
from asgi_resume.transport.holds import Hold, Holds, HoldState, ends_connection
from asgi_resume.transport.linger import LINGER_BELOW_S, linger
from asgi_resume.transport.outbox import END, NUDGE, OUTBOX_SIZE, Outbox, Signal
from asgi_resume.transport.stall import StallWatch
from asgi_resume.transport.tcp import disable_nagle, transport_of, writes_at_once
from asgi_resume.transport.upgrade import UpgradeProbe

SERVER_GOING_AWAY = 1012  # uvicorn closes websockets with it on shutdown
_PONG: Message = {"type": "websocket.receive", "text": protocol.EIO_PONG}


class WebSocketConnection:
    def __init__(
        self,
        app: ASGIApp,
        runtime: Runtime,
        sessions: EngineIOSessions,
        holds: Holds,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.scope = scope
        self.receive = receive
        self.send = send
        # an upgrade from long-polling continues that session: same cursors, same principal
        sid = query_param(scope, "sid")
        existing = sessions.get(sid) if sid else None
        self.eio = existing or EngineIOSession(runtime, sessions, scope, polling=False, sid=sid)
        self.outbound = self.eio.outbound
        self.conn = self.eio.conn
        self._batch = self.outbound.batch  # (hot: asked for every frame)
        # python-engineio takes any websocket that names a sid for an upgrade of that session
        self.probe = UpgradeProbe(sid is not None)
        if existing is None:
            self.conn.upgraded = True  # a websocket from the start, or one of a session we never saw
            if sid is not None:
                # its session's requests so far passed on unread (its handshake went to another server): a CONNECT
                # among them is answered uncounted, so no reply binds on this connection
                self.conn.overflowed = True
        self.accepted = False
        self.client_gone = False
        self._outbox = Outbox(runtime.log.now_ms)
        self._to_app, self._from_hold = anyio.create_memory_object_stream[Message](8)
        self.holds = holds
        self.hold = Hold(holds, self.conn, self.outbound.recovery)
        self._last_feed, self._gap = 0.0, 1.0  # when the last frame came, and the time before it
        self._draining = False  # this connection has the outbound lock and is sending
        self._writer_drains = False  # ... and the writer task is the one sending (not the app's call)
        #: whether frames wait unlogged for long (its client stopped reading, or its log is slow)
        self._stall = StallWatch(
            lambda: self._behind(True), lambda: self._batch.pending() > 0 or not self._outbox.empty()
        )
        self._tg: TaskGroup | None = None
        self._transport: asyncio.WriteTransport | None = None  # the server's, where it lets us reach it

    async def run(self) -> None:
        self.eio.websockets += 1
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._write)
                try:
                    await self.app(self.scope, self._receive, self._send)
                finally:
                    await self._outbox.put_waiting(END)  # the writer sends what is queued, then ends
                    self.hold.end("the app ended the connection")
        finally:
            self.eio.websockets -= 1
            if not self.probe.active:  # (a probe that never became the transport ends nothing: polling goes on)
                self.eio.ended()
                with anyio.CancelScope(shield=True):
                    await self.outbound.release(handed_over=self.hold.handed_over)

    # -- app -> client -------------------------------------------------------------------

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            if self.probe.active:
                self.probe.app_sent(text)
            item = text if text is not None else message.get("bytes")
            if isinstance(item, bytearray | memoryview):  # (ASGI says bytes; an app may hand either)
                item = bytes(item)
            if item is not None:
                await self._forward(item)
                return
        if not self.accepted:  # the handshake (accept or reject) goes straight out
            self.accepted = kind == "websocket.accept"
            await self.send(message)
            if self.accepted:
                self._transport = transport_of(self.send)
                if self._transport is not None and not self.runtime.log.synchronous:
                    disable_nagle(self._transport)
            return
        await self._forward(Passthrough(message))

    async def _forward(self, item: Incoming) -> None:
        """Take one item from the app, keeping the order of everything the client is sent.

        Frames are fed to the pipeline at once. Whoever has the lock sends what was fed: this
        call when nothing needs the log, else the writer task, which logs in one call all that was
        fed while its previous call was out (batches grow with the load). With the in-process log
        a frame that came alone (``LINGER_BELOW_S`` after the last) is logged here too: a room's
        copies cost no task switch each (about 2 µs per copy, ``benchmarks.transport``).

        This call sends only what the socket takes at once (``tcp.writes_at_once``): a send that
        waited for the client would keep the app's next frames unfed (above). Nor does it wait
        for a Redis round trip: tried, a held tab's frames then waited unfed behind its append,
        and a reloading tab logged later ones before them (``test_holds``, on Redis). It still
        waits where it must: for room in a full outbox, for a drain past ``OUTBOX_SIZE`` frames,
        and, with the memory log, for another tab here to log frames ahead of its own (the feed
        order's waits, bounded by the write timeout).
        """
        outbound = self.outbound
        if self._stall.sending and not self.conn.behind:  # (a frame while a send waits)
            self._behind(True)
        if (
            not self._outbox.empty()
            or (outbound.lock.locked() and not self._draining)
            or (self._draining and self.conn.recovery and self._batch.pending() >= OUTBOX_SIZE)
        ):
            # items queued ahead, or the polling transport is sending (before the upgrade), or a
            # full batch waits for a send: the writer takes it in turn (with recovery the app
            # never waits: see Outbox.put_late)
            if self.conn.recovery:
                self._outbox.put_late(item)
            else:
                await self._outbox.put_waiting(item)
            return
        self._feed(item)
        if self._draining:
            if self._batch.pending() < OUTBOX_SIZE or self.conn.recovery:
                return  # our drain sends it after what it is sending now
            async with outbound.lock:  # too much waiting: python-engineio's writer waits for it
                await self._drain()
            return
        if (
            self.conn.recovery
            or (
                self._batch.needs_log(answer_deferred=not self.probe.active)
                and (self._gap < LINGER_BELOW_S or not self.runtime.log.synchronous)
            )
            or not writes_at_once(self._transport, item)
        ):
            # the writer logs it, with whatever comes meanwhile (with recovery it sends everything:
            # the app's sends never wait on the socket, so the next one tells it stalled). A send
            # here must not wait for the client: the app's next frames would wait unfed in
            # python-engineio, where the feed order cannot see them, and a tab of the user that
            # logged them first would have them logged after its own later ones
            self._outbox.put_soon(NUDGE)
            return
        async with outbound.lock:
            await self._drain()

    def _feed(self, item: Incoming) -> None:
        if isinstance(item, str) and item[:1] == protocol.EIO_OPEN:
            self.eio.opened(item)  # (a direct websocket learns its sid from it)
        now = time.monotonic()
        self._gap, self._last_feed = now - self._last_feed, now
        self.outbound.feed(item, as_emitted=True)

    async def _drain(self) -> None:
        """Send everything fed so far (the caller has the lock), in order."""
        outbound = self.outbound
        self._draining = True
        try:
            answer_deferred = not self.probe.active
            while self._batch.pending(answer_deferred=answer_deferred):
                if self._batch.needs_log(answer_deferred=answer_deferred) and self._gap < LINGER_BELOW_S:
                    await linger(self._batch)
                # (what is still queued came before now: the batch has what was fed before it)
                taken_ms = self._outbox.oldest_ms
                watched = bool(self.conn.recovery)  # (a claim must learn when frames wait unlogged)
                if watched:
                    self._stall.start()
                try:
                    await outbound.send(self._deliver_all, answer_deferred=answer_deferred, taken_ms=taken_ms)
                finally:
                    if watched:
                        self._stall.stop()
        finally:
            self._draining = False
        if self.conn.behind and self._outbox.empty():
            self._behind(False)  # caught up: what it was sent is logged
        self.hold.wake()

    async def _write(self) -> None:
        outbox, outbound = self._outbox, self.outbound
        while True:
            batch = [await outbox.get()]  # (not a method of the outbox: a call less per batch)
            while not outbox.empty() and len(batch) < OUTBOX_SIZE:
                batch.append(outbox.get_nowait())
            outbox.taken(batch)
            if not outbox.empty() and self.conn.recovery and not self.conn.behind:
                # more than a batch waits unlogged (a log slower than the app, a held connection):
                # a claim must not take this connection's silence for a complete log
                self._behind(True)
            async with outbound.lock:
                for item in batch:  # nothing else feeds while the lock is held and not draining
                    if not isinstance(item, Signal):
                        self._feed(item)
                self._writer_drains = True
                try:
                    await self._drain()
                finally:
                    self._writer_drains = False
            if batch[-1] is END:
                return

    async def _deliver_all(self, items: list[Outgoing]) -> bool:
        """Send ``items`` in order; returns once the server took the last one (uvicorn waits while
        its buffer for a client that does not read is full: a replay's next page waits with it).
        False when the client is gone."""
        for item in items:
            await self._deliver(item)
        return not self.client_gone

    async def _deliver(self, item: Outgoing) -> None:
        if self.client_gone:
            if self.hold.state is HoldState.HELD:
                if item == protocol.EIO_PING:
                    await self._to_app.send(_PONG)  # the app's heartbeat, answered for the absent client
                elif ends_connection(item):  # what the absent client would have answered by leaving
                    self.hold.end("the app closed the connection")
            return
        message: Message
        match item:
            case str():
                message = {"type": "websocket.send", "text": item, "bytes": None}
            case bytes():
                message = {"type": "websocket.send", "text": None, "bytes": item}
            case Passthrough():
                message = item.message
            case _:
                assert_never(item)
        stall = self._stall
        stall.sending = True
        try:
            await self.send(message)
        except Exception:  # noqa: BLE001 - the client is gone; the app learns it from receive()
            self._client_left()
        finally:
            stall.sending = False

    def _behind(self, behind: bool) -> None:
        """Frames wait unlogged for it (its client stopped reading: a send stalled with frames
        behind it; or more than a batch is queued), or it caught up. Its recovery sessions are
        told: a claim must not take the silence of a connection that is behind for a complete log."""
        self.conn.behind = behind
        if self.outbound.recovery is not None:
            self.outbound.recovery.notes.tell_behind()

    # -- client -> app -------------------------------------------------------------------

    async def _receive(self) -> Message:
        if self.hold.state is not HoldState.NOT_HELD:
            return await self._from_hold.receive()
        while True:
            message = await self.receive()
            text = message.get("text")
            oversized = text is not None and len(text) > self.runtime.max_post_body
            if message["type"] == "websocket.receive" and (self.probe.active or oversized):
                # python-engineio reads nothing on a probe but the probe and the UPGRADE (anything
                # else ends the upgrade, unread), nor a frame over its max_http_buffer_size (it
                # closes the websocket): nor do we, or a CONNECT it never read would bind
                if oversized:
                    if not self.probe.active:
                        # were its limit not the one found, a CONNECT in it would be answered
                        # uncounted: no reply binds from now on
                        self.conn.overflowed = True
                elif text is not None:
                    upgrade = self.probe.reads(text)
                    if upgrade == "upgraded":
                        await self._upgraded()
                    elif upgrade == "failed":  # the session is on long-polling again: its POSTs are read
                        self.conn.upgraded = False
                        if self.eio.polling is not None:
                            self.eio.polling.upgraded(False)
            elif message["type"] == "websocket.receive":
                text = message.get("text")
                if text is None:
                    if self.eio.client_binary():
                        continue
                    return message
                found = await self.eio.client_text(text)
                if isinstance(found, str):
                    message = {**message, "text": found}
                elif found is UNREAD:
                    continue
                elif found is not None:
                    if self._writer_drains and self._outbox.empty() and self._batch.held() < OUTBOX_SIZE:
                        # the writer task is sending (perhaps waiting for this client to read): the
                        # request is fed in its place now, as the app's frames are, so that frames
                        # after it keep being fed too (queued behind it they would wait unfed, and a
                        # tab of the user that logged them first would have them logged after its own
                        # later ones). Not while the app's own call drains: it would answer it there
                        self._feed(found)
                    else:
                        await self._outbox.put_request(found)
                    # a client's burst of requests is read one per loop iteration, between other
                    # connections' work (answering them is paced by the replay turns)
                    await asyncio.sleep(0)
                    continue
            elif message["type"] == "websocket.disconnect":
                self._client_left()
                if self._start_hold(message):
                    return await self._from_hold.receive()
            return message

    async def _upgraded(self) -> None:
        """The client reads this websocket from now on: its events no longer wait for the client's
        GET, so a claim may trust this connection's silence (if the log does not hear it, a claim
        gets a normal connect)."""
        recovery = self.outbound.recovery
        if recovery is not None and recovery.states:
            await recovery.notes.tell("upgraded")
        # python-engineio refuses the session's POSTs from when it reads this UPGRADE, in the same
        # step: until then they are read here, as every POST is
        self.conn.upgraded = True
        if self.eio.polling is not None:
            self.eio.polling.upgraded(True)  # (what the app sends it reaches us at once now)
        if self._batch.has_deferred():
            self._outbox.put_soon(NUDGE)

    # -- the hold ------------------------------------------------------------------------

    def _client_left(self) -> None:
        """A send failed, or the client's disconnect came. From now on what python-engineio still
        has queued for it takes no stream over from another tab's hold, whether this connection is
        held or not: a refused tab's did, and ended the hold of the user's tab that was held (found
        by a run against open-webui). (An upgrade probe's session goes on by long-polling.)"""
        self.client_gone = True
        if not self.probe.active:
            self.outbound.held = True

    def _start_hold(self, disconnect: Message) -> bool:
        if disconnect.get("code") == SERVER_GOING_AWAY:
            # uvicorn closes open websockets with 1012 when it shuts down, and then waits for every
            # connection's task: held ones must end now, or shutdown would wait for them
            self.holds.shut_down()
            return False
        if self.probe.active:
            # an upgrade probe the client never switched to: its session goes on by long-polling
            # (holding it would keep python-engineio "upgrading", answering every GET with a NOOP)
            return False
        if self._tg is None or not self.accepted or not self.hold.start(self.runtime.log.now_ms(), self.eio.sid):
            return False
        self._tg.start_soon(self._held, disconnect)  # (it takes nothing over: see _client_left)
        return True

    async def _held(self, disconnect: Message) -> None:
        try:
            await self.hold.run()
        finally:
            # (it stays held: its client is gone, and what python-engineio still has queued for it
            # must not count as a live connection taking streams over from another tab's hold)
            await self._to_app.send(disconnect)  # the app learns now that its client left
