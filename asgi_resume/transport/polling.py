"""The long-polling transport: Engine.IO packets in HTTP bodies.

Owns: rewriting a polling GET response (packets joined by ``\\x1e``, binary as
``b<base64>``, maybe gzip- or deflate-compressed) through the session's outbound
pipeline, and reading a polling POST for CONNECT auth and resume requests. A resume
request is taken out of the POST and replaced by an Engine.IO UPGRADE packet, which
python-engineio answers with a NOOP on the pending GET: that GET's response then
carries the replay and the answer at once. And noticing that a session's client is gone,
which no connection close tells here: its client left while its GET waited, stopped
polling for Engine.IO's ping timeout, had its sid refused, or a CLOSE ended the session;
the session is then released as a closed websocket's is. Must not touch: frames' meaning,
storage.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
import zlib
from collections.abc import Callable

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_resume import protocol
from asgi_resume.pipeline.outbound import Outbound
from asgi_resume.runtime import Runtime
from asgi_resume.transport.engineio import EngineIOSessions, client_frame, handshake, new_session, query_param

logger = logging.getLogger("asgi_resume")

MAX_BODY = 16 * 1024 * 1024  # larger responses pass through untouched
try:  # python-engineio's own limit on the packets of one POST (it refuses a body with more)
    from engineio.payload import Payload as _Payload

    MAX_POST_PACKETS: int = int(_Payload.max_decode_packets)
except (ImportError, AttributeError, TypeError, ValueError):  # pragma: no cover - another server
    MAX_POST_PACKETS = 16
_Codec = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]
_CODECS: dict[str, _Codec] = {
    "gzip": (gzip.decompress, gzip.compress),
    "deflate": (zlib.decompress, zlib.compress),
}
_REFUSED = 400  # python-engineio's answer to a request for a session it does not have (any more)


async def handle_polling(
    app: ASGIApp, runtime: Runtime, sessions: EngineIOSessions, scope: Scope, receive: Receive, send: Send
) -> None:
    sid = query_param(scope, "sid")
    outbound = sessions.get(sid) if sid else None
    method = scope.get("method")
    if method == "GET" and (outbound is not None or sid is None):
        if outbound is None:  # the handshake: a new session
            outbound = new_session(runtime, scope, polling=True)
        response = PollResponse(runtime, sessions, outbound, sid, send)
        with _Request(runtime, outbound):
            await _watching_client(app, scope, receive, response)
    elif method == "POST" and outbound is not None and not outbound.session.upgraded:
        with _Request(runtime, outbound):
            scope, receive = await read_post(runtime, outbound, scope, receive)
            await app(scope, receive, PostResponse(runtime, sessions, outbound, sid, send))
    else:  # a session this process does not know, one python-engineio would refuse: not ours to touch
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


class _Request:
    """One request of the session's client, while the app serves it: the client is there."""

    def __init__(self, runtime: Runtime, outbound: Outbound) -> None:
        self.runtime, self.outbound = runtime, outbound

    def __enter__(self) -> None:
        polling = self.outbound.session.polling
        if polling is not None:
            polling.requests += 1
            if polling.timer is not None:
                polling.timer.cancel()
                polling.timer = None

    def __exit__(self, *exc: object) -> None:
        session = self.outbound.session
        polling = session.polling
        if polling is None:
            return
        polling.requests -= 1
        polling.seen_at = time.monotonic()
        if polling.requests or polling.over or polling.released or session.upgraded or not polling.silence_s:
            return
        polling.timer = asyncio.get_running_loop().call_later(polling.silence_s, self._silent)

    def _silent(self) -> None:
        """No request for Engine.IO's ping interval + timeout: python-engineio has given up on it too."""
        polling = self.outbound.session.polling
        assert polling is not None
        polling.timer = None
        if polling.requests or self.runtime.closing:
            return
        self.runtime.in_background(let_go(self.runtime, self.outbound, "it stopped polling"))


async def let_go(runtime: Runtime, outbound: Outbound, reason: str, *, over: bool = False) -> None:
    """The client of this polling session is gone: release it, as a closed websocket's connection is.

    Its streams in flight are flagged (a newcomer starts a new epoch: a resume says ``gap``), and its
    recovery sessions closed (a claim gets a normal connect). ``over``: a CLOSE ended the session.
    Done before the response that tells the client, so that nothing it does next comes first.
    """
    session, polling = outbound.session, outbound.session.polling
    if polling is None or session.upgraded:
        return  # on a websocket now: that transport says when it ends
    polling.over = polling.over or over
    if polling.released:
        return
    polling.released = True
    async with outbound.lock:  # after any response being rewritten: what it carries is logged first
        with anyio.CancelScope(shield=True):
            flagged = await outbound.release(last_seen=polling.seen_at or None)
    if flagged:  # (said when it matters, as a hold is)
        streams = [key.stream for key in flagged[:5]]
        logger.info(
            "client of polling session %s is gone (%s): streams in flight %s flagged", polling.sid, reason, streams
        )
    else:
        logger.debug("client of polling session %s is gone (%s)", polling.sid, reason)


class PollResponse:
    """Wraps ``send`` for one polling GET: the body goes through the session's outbound pipeline."""

    def __init__(
        self, runtime: Runtime, sessions: EngineIOSessions, outbound: Outbound, sid: str | None, send: Send
    ) -> None:
        self.runtime = runtime
        self.sessions = sessions
        self.outbound = outbound
        self.sid = sid
        self.send = send
        self.start: Message | None = None
        self.body = bytearray()
        self.taken_ms = 0  # when python-engineio took the packets of this response from its queue
        self.closed = False  # the response carries a CLOSE: the session is over
        self.complete = False  # the response is on its way to the client
        self.abandoned = False  # the client went away before it

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = message.get("status")
            polling = self.outbound.session.polling
            if status == 200:
                # python-engineio took the packets off its queue just now (it answers a poll at once)
                self.taken_ms = self.runtime.log.now_ms()
                if polling is not None and not polling.over:
                    polling.released = False  # the client is there: watch it again
                self.start = message
                return
            if status == _REFUSED and self.sid and polling is not None:
                await let_go(self.runtime, self.outbound, "python-engineio refused its sid")
        if message["type"] != "http.response.body" or self.start is None:
            await self._send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body") and len(self.body) <= MAX_BODY:
            return
        start, self.start = self.start, None
        # python-engineio's header names are not lower case: normalise before looking them up
        headers = MutableHeaders(raw=[(k.lower(), v) for k, v in start.get("headers", [])])
        body = await self.rewrite(headers.get("content-encoding", "").lower(), bytes(self.body))
        if self.closed:
            await let_go(self.runtime, self.outbound, "the session was closed", over=True)
        elif self.abandoned:
            await let_go(self.runtime, self.outbound, "its client left while its GET waited")
        if "content-length" in headers or body != bytes(self.body):
            headers["content-length"] = str(len(body))
        await self.send({**start, "headers": headers.raw})
        await self._send({"type": "http.response.body", "body": body, "more_body": bool(message.get("more_body"))})

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.complete = True
        await self.send(message)

    async def rewrite(self, encoding: str, body: bytes) -> bytes:
        codec = _CODECS.get(encoding)
        if (encoding and codec is None) or len(body) > MAX_BODY:
            return body
        try:
            text = (codec[0](body) if codec else body).decode("utf-8")
        except (OSError, EOFError, zlib.error, UnicodeDecodeError):
            return body
        packets = protocol.split_payload(text)
        async with self.outbound.lock:
            for packet in packets:
                if isinstance(packet, str):
                    self._note(packet)
                self.outbound.feed(packet)
            out = await self.outbound.flush(taken_ms=self.taken_ms or None)
        new_text = protocol.join_payload([item for item in out if isinstance(item, str | bytes)])
        if new_text == text:
            return body
        encoded = new_text.encode("utf-8")
        return codec[1](encoded) if codec else encoded

    def _note(self, packet: str) -> None:
        """Register the session at its OPEN packet (and learn its ping timeout); forget it at CLOSE."""
        sessions = self.sessions
        opening = handshake(packet) if self.sid is None else None
        if opening is not None:
            sid = opening.get("sid")
            if isinstance(sid, str):
                self.sid = sid
                sessions.add(sid, self.outbound)
                polling = self.outbound.session.polling
                if polling is not None:
                    polling.sid, polling.silence_s = sid, _silence_s(opening)
        elif packet == protocol.EIO_CLOSE and self.sid:
            sessions.remove(self.sid, self.outbound)
            self.closed = True


def _silence_s(opening: dict[str, object]) -> float:
    """After how long without a request python-engineio gives up on a client (0: it does not say)."""
    interval, timeout = opening.get("pingInterval"), opening.get("pingTimeout")
    if not isinstance(interval, int | float) or not isinstance(timeout, int | float) or interval < 0 or timeout < 0:
        return 0.0
    return (interval + timeout) / 1000


class PostResponse:
    """Wraps ``send`` for one polling POST: a CLOSE it carried, or a refusal, ends the session here."""

    def __init__(
        self, runtime: Runtime, sessions: EngineIOSessions, outbound: Outbound, sid: str | None, send: Send
    ) -> None:
        self.runtime, self.sessions, self.outbound, self.sid, self.send = runtime, sessions, outbound, sid, send

    async def __call__(self, message: Message) -> None:
        polling = self.outbound.session.polling
        if message["type"] == "http.response.start" and polling is not None:
            status = message.get("status")
            if status == 200 and polling.goodbye:
                self.sessions.remove(self.sid or "", self.outbound)
                await let_go(self.runtime, self.outbound, "its client said goodbye", over=True)
            elif status == 200 and not polling.over:
                polling.released = False
            elif status == _REFUSED:
                await let_go(self.runtime, self.outbound, "python-engineio refused its sid")
        await self.send(message)


async def read_post(runtime: Runtime, outbound: Outbound, scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
    """Read a POST body; take resume requests out of it. Returns the scope and receive the app gets.

    Only a body python-engineio would read is read: one with a Content-Length within the app's
    ``max_http_buffer_size`` (python-engineio refuses a longer one, and so never acts on it).
    """
    limit = runtime.max_post_body
    declared = Headers(scope=scope).get("content-length", "")
    if not declared.isdigit() or int(declared) > limit:
        return scope, receive  # not ours to read: the app answers it as it would without us
    messages: list[Message] = []
    body = bytearray()
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body") or len(body) > limit:
            break
    rewritten = await _rewrite_post(runtime, outbound, bytes(body)) if len(body) <= limit else None

    if rewritten is None:
        replay = iter(messages)
    else:
        headers = MutableHeaders(raw=[(k.lower(), v) for k, v in scope.get("headers", [])])
        headers["content-length"] = str(len(rewritten))
        scope = {**scope, "headers": headers.raw}
        replay = iter([{"type": "http.request", "body": rewritten, "more_body": False}])

    async def replaying_receive() -> Message:
        for message in replay:
            return message
        return await receive()

    return scope, replaying_receive


async def _rewrite_post(runtime: Runtime, outbound: Outbound, body: bytes) -> bytes | None:
    """The body with resume requests replaced by UPGRADE packets; ``None`` when unchanged."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.count(protocol.RECORD_SEPARATOR) >= MAX_POST_PACKETS:
        return None  # python-engineio refuses a body of more packets than this: so do we
    packets = protocol.split_payload(text)
    changed = False
    session = outbound.session
    kept: list[str | bytes] = []
    for packet in packets:
        if isinstance(packet, bytes) and session.drop_attachments > 0:
            session.drop_attachments -= 1  # an attachment of a request answered here
            changed = True
            continue
        if isinstance(packet, str):
            found = await client_frame(runtime, session, packet)
            if isinstance(found, str):
                packet = found  # a CONNECT without its recovery fields
                changed = True
            elif found is not None:
                outbound.defer(found)
                packet = protocol.EIO_UPGRADE  # python-engineio answers it with a NOOP: the GET returns
                changed = True
            elif packet == protocol.EIO_CLOSE and session.polling is not None:
                session.polling.goodbye = True
        kept.append(packet)
    return protocol.join_payload(kept).encode("utf-8") if changed else None
