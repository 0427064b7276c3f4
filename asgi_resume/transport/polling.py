"""The long-polling transport: Engine.IO packets in HTTP bodies.

Owns: routing a polling request (a GET to its session's pipeline, a POST to
:mod:`~asgi_resume.transport.polling_post`), and rewriting a GET's response (packets joined by
``\\x1e``, binary as ``b<base64>``, maybe gzip- or deflate-compressed) through the session's
outbound pipeline, noticing a client that left while its GET waited. Whether a session's client
is still there is :mod:`~asgi_resume.transport.polling_presence`'s. Must not touch: frames'
meaning, storage.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_resume import protocol
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.transport.engineio import REFUSED, EngineIOSession, EngineIOSessions, query_param
from asgi_resume.transport.polling_post import PostResponse, read_post
from asgi_resume.transport.polling_presence import silence_s

logger = logging.getLogger("asgi_resume")

MAX_BODY = 16 * 1024 * 1024  # larger responses pass through unread (their streams start new epochs)
#: a rewritten response larger than this is joined, encoded and compressed this much at a time, one
#: part per event loop iteration (taking turns with replay pages): one replay of 2,000 frames of
#: 4 KB in a gzip response held the loop 55 ms at once, and four together stalled another user's
#: live stream 140-270 ms (found by attack)
RESPONSE_PART = 64 << 10
_Codec = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes], Callable[[], "zlib._Compress"]]
_CODECS: dict[str, _Codec] = {  # (as python-engineio compresses: gzip.compress, zlib.compress)
    "gzip": (gzip.decompress, gzip.compress, lambda: zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)),
    "deflate": (zlib.decompress, zlib.compress, zlib.compressobj),
}


#: refused here: python-engineio serves JSONP long-polling (``j=N``), its responses wrapped in a
#: script call that is not read here, so a client could choose which frames the middleware never
#: saw (an app's DISCONNECT, a CONNECT reply, stream events: found by attack); no Socket.IO v4
#: client uses it
JSONP_REFUSED = "JSONP long-polling is not served (asgi_resume): use a Socket.IO v4 client"


async def handle_polling(
    app: ASGIApp, runtime: Runtime, sessions: EngineIOSessions, scope: Scope, receive: Receive, send: Send
) -> None:
    if query_param(scope, "j") is not None:  # (as python-engineio reads it: a blank j is not JSONP)
        await PlainTextResponse(JSONP_REFUSED, status_code=400)(scope, receive, send)
        return
    sid = query_param(scope, "sid")
    eio = sessions.get(sid) if sid else None
    method = scope.get("method")
    if method == "GET" and (eio is not None or sid is None):
        if eio is None:  # the handshake: a new session
            eio = EngineIOSession(runtime, sessions, scope, polling=True)
        response = PollResponse(eio, send)
        if eio.polling is not None:
            eio.polling.asks()
        with eio.client_request():
            await _watching_client(app, scope, receive, response)
    elif method == "POST" and eio is not None and not eio.conn.upgraded:
        with eio.client_request():
            scope, receive, effects = await read_post(eio, scope, receive)
            try:
                await app(scope, receive, PostResponse(eio, send, effects))
            finally:
                effects.settled(eio.conn)  # (an app that never answered: they never will be noted)
    else:  # a session this process does not know, or one on a websocket (python-engineio refuses
        # its POSTs unread: what they say is not ours to act on, nor to count), not ours to touch
        await app(scope, receive, send)


async def _watching_client(app: ASGIApp, scope: Scope, receive: Receive, response: PollResponse) -> None:
    """Serve a GET, noticing when its client goes away before the response (a reload, a closed tab).

    The GET goes on waiting in python-engineio: what it returns next is logged, and nobody reads it.
    """
    first = await receive()  # a GET's (empty) body: the app reads it first, and nothing more
    if first["type"] != "http.request" or first.get("more_body"):
        await app(scope, _replaying(first, receive), response)
        return
    request: list[Message] = [first]
    gone = asyncio.Event()

    async def app_receive() -> Message:
        if request:
            if response.eio.polling is not None:
                response.eio.polling.read_by_app()
            return request.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def watch() -> None:
        await receive()  # http.disconnect: the client left, or its response is complete
        if not response.complete:
            response.abandoned = True
        gone.set()

    watcher = asyncio.ensure_future(watch())  # (a task per poll: no task group to wrap the app's errors)
    try:
        await app(scope, app_receive, response)
    finally:
        watcher.cancel()


def _replaying(message: Message, receive: Receive) -> Receive:
    replay: list[Message] = [message]

    async def replaying_receive() -> Message:
        return replay.pop() if replay else await receive()

    return replaying_receive


class PollResponse:
    """Wraps ``send`` for one polling GET: the body goes through the session's outbound pipeline."""

    def __init__(self, eio: EngineIOSession, send: Send) -> None:
        self.runtime = eio.runtime
        self.eio = eio
        self.outbound = eio.outbound
        self.send = send
        self.start: Message | None = None
        self.body = bytearray()
        self.taken_ms = 0  # when python-engineio took the packets of this response from its queue
        self.closed = False  # the response carries a CLOSE: the session is over
        self.complete = False  # the response is on its way to the client
        self.abandoned = False  # the client went away before it
        self.counted = 0  # bytes counted for the replays its flush started (PollingReplays)

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = message.get("status")
            polling = self.eio.polling
            if status == 200:
                # python-engineio took the packets off its queue just now (it answers a poll at once)
                self.taken_ms = self.runtime.log.now_ms()
            if polling is not None:  # (what the app sends from now on waits for the next GET)
                polling.answers(self.taken_ms)
            if status == 200:
                if polling is not None and not polling.over:
                    polling.let_go = False  # the client is there: watch it again
                self.start = message
                return
            if status == REFUSED and self.eio.sid and polling is not None:
                await self.eio.let_go("python-engineio refused its sid")
        if message["type"] != "http.response.body" or self.start is None:
            await self._send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body") and len(self.body) <= MAX_BODY:
            return
        start, self.start = self.start, None
        # python-engineio's header names are not lower case: normalise before looking them up
        headers = MutableHeaders(raw=[(k.lower(), v) for k, v in start.get("headers", [])])
        polling = self.eio.polling
        try:
            body = await self.rewrite(headers.get("content-encoding", "").lower(), bytes(self.body))
        except BaseException:
            if polling is not None:
                polling.logged(0)  # (nobody waits for it any longer)
                self.runtime.polling_replays.built(polling, self.counted, 0)
            raise
        if self.closed:
            await self.eio.let_go("the session was closed", over=True)
        elif self.abandoned:
            await self.eio.let_go("its client left while its GET waited")
        if "content-length" in headers or body != bytes(self.body):
            headers["content-length"] = str(len(body))
        if polling is not None:  # what it took is logged: tabs of its user waiting for it go on
            polling.logged(self.taken_ms)
            for principal in set(self.outbound.conn.principals.values()):
                if principal:
                    self.runtime.polling_feeds.note(principal, polling)
        counted = self.counted
        unread = polling if counted else None  # its replays count until the server's buffer drained
        if unread is not None:
            self.runtime.polling_replays.built(unread, counted, len(body))
        more_body = bool(message.get("more_body"))
        try:
            await self.send({**start, "headers": headers.raw})
            await self._send({"type": "http.response.body", "body": body, "more_body": more_body or unread is not None})
            if unread is not None and not more_body:
                # the server takes this once its buffer drained (uvicorn and hypercorn wait for
                # it): the connection took the response then (the kernel's buffers hold what the
                # client has not read yet, outside the process), or it is gone
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if unread is not None:
                self.runtime.polling_replays.drained(unread, len(body))

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.complete = True
        await self.send(message)

    async def rewrite(self, encoding: str, body: bytes) -> bytes:
        codec = _CODECS.get(encoding)
        readable = codec is not None or encoding in ("", "identity")
        text = _read(codec, body) if readable else None
        if text is None:  # it goes out as it is, in no log
            async with self.outbound.lock:
                await self.outbound.passed_unread()
            return body
        packets = protocol.split_payload(text)
        async with self.outbound.lock:
            try:
                for packet in packets:
                    if isinstance(packet, str):
                        self._note(packet)
                    self.outbound.feed(packet)
                out = await self.outbound.flush(taken_ms=self.taken_ms or None)
            finally:
                # this response's (the session's next GET may flush while this one is encoded by
                # parts, out of the lock: found by review, the count was lost and stuck)
                self.counted, self.outbound.replays_in_response = self.outbound.replays_in_response, 0
        items = [item for item in out if isinstance(item, str | bytes)]
        del out  # (what it held is in items: _encode_by_parts lets it go as it goes)
        if sum(len(item) for item in items) > RESPONSE_PART:  # (a replay's: megabytes)
            return await self._encode_by_parts(items, codec, text, body)
        new_text = protocol.join_payload(items)
        if new_text == text:
            return body
        encoded = new_text.encode("utf-8")
        return codec[1](encoded) if codec else encoded

    async def _encode_by_parts(self, items: list[str | bytes], codec: _Codec | None, text: str, body: bytes) -> bytes:
        """The response body of ``items``, joined, encoded and compressed ``RESPONSE_PART`` at a
        time, taking a turn (``runtime.replay_turns``) before each part: building a response of
        megabytes holds the event loop for a part's work at a time, not for the whole of it.
        ``body`` when they are the ``text`` python-engineio sent (nothing is compressed then)."""
        turns = self.runtime.replay_turns
        compressor = codec[2]() if codec else None
        parts: list[bytes] = []
        waiting: list[bytes] = []  # encoded, not yet compressed: while the new text is the old one so far
        fresh = False  # a turn was just taken: a part may be compressed in it

        async def compress() -> None:
            nonlocal fresh
            for encoded in waiting:
                if compressor is None:
                    parts.append(encoded)
                    continue
                for offset in range(0, len(encoded), RESPONSE_PART):  # (one frame may be megabytes)
                    if not fresh:
                        await turns.take()
                    fresh = False
                    parts.append(compressor.compress(encoded[offset : offset + RESPONSE_PART]))
            waiting.clear()

        same, at, start = True, 0, 0  # at: characters of the new text so far
        while start < len(items):
            await turns.take()
            fresh = True
            stop, size = start, 0
            while stop < len(items) and (stop == start or size + len(items[stop]) <= RESPONSE_PART):
                size += len(items[stop])
                stop += 1
            piece = protocol.join_payload(items[start:stop])
            items[start:stop] = [""] * (stop - start)  # held in piece now (a replay's megabytes: once)
            if start:
                piece = protocol.RECORD_SEPARATOR + piece
            start = stop
            if same:
                same = text.startswith(piece, at)
                at += len(piece)
            waiting.append(piece.encode("utf-8"))
            if not same:
                await compress()
        if same and at == len(text):
            return body
        await compress()
        if compressor is not None:
            parts.append(compressor.flush())
        return b"".join(parts)

    def _note(self, packet: str) -> None:
        """Register the session at its OPEN packet (and learn its ping timeout); end it at CLOSE."""
        eio = self.eio
        opening = eio.opened(packet)
        if opening is not None:
            polling = eio.polling
            if polling is not None:
                polling.silence_s = silence_s(opening)
        elif packet == protocol.EIO_CLOSE and eio.sid:
            eio.ended()
            self.closed = True


def _read(codec: _Codec | None, body: bytes) -> str | None:
    """A response body's payload text, or ``None`` when it is not read: too large, or not
    readable as its encoding says."""
    if len(body) > MAX_BODY:
        return None
    try:
        return (codec[0](body) if codec else body).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError):
        return None
