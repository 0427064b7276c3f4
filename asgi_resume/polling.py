"""The long-polling transport: Engine.IO packets in HTTP bodies.

Owns: rewriting a polling GET response (packets joined by ``\\x1e``, binary as
``b<base64>``, maybe gzip- or deflate-compressed) through the session's outbound
pipeline, and reading a polling POST for CONNECT auth and resume requests. A resume
request is taken out of the POST and replaced by an Engine.IO UPGRADE packet, which
python-engineio answers with a NOOP on the pending GET: that GET's response then
carries the replay and the answer at once. Must not touch: frames' meaning, storage.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_resume import protocol
from asgi_resume.inbound import inspect
from asgi_resume.outbound import Outbound
from asgi_resume.runtime import Runtime
from asgi_resume.session import Session
from asgi_resume.websocket import query_param

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


async def handle_polling(app: ASGIApp, runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    sid = query_param(scope, "sid")
    outbound = runtime.sessions.get(sid) if sid else None
    method = scope.get("method")
    if method == "GET" and (outbound is not None or sid is None):
        if outbound is None:  # the handshake: a new session
            outbound = Outbound(runtime, Session(scope, runtime.log.now_ms()))
        await app(scope, receive, PollResponse(runtime, outbound, sid, send))
    elif method == "POST" and outbound is not None and not outbound.session.upgraded:
        scope, receive = await read_post(runtime, outbound, scope, receive)
        await app(scope, receive, send)
    else:  # a session this process does not know, one python-engineio would refuse: not ours to touch
        await app(scope, receive, send)


class PollResponse:
    """Wraps ``send`` for one polling GET: the body goes through the session's outbound pipeline."""

    def __init__(self, runtime: Runtime, outbound: Outbound, sid: str | None, send: Send) -> None:
        self.runtime = runtime
        self.outbound = outbound
        self.sid = sid
        self.send = send
        self.start: Message | None = None
        self.body = bytearray()
        self.taken_ms = 0  # when python-engineio took the packets of this response from its queue

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message.get("status") == 200:
            # python-engineio took the packets off its queue just now (it answers a poll at once)
            self.taken_ms = self.runtime.log.now_ms()
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body") and len(self.body) <= MAX_BODY:
            return
        start, self.start = self.start, None
        # python-engineio's header names are not lower case: normalise before looking them up
        headers = MutableHeaders(raw=[(k.lower(), v) for k, v in start.get("headers", [])])
        body = await self.rewrite(headers.get("content-encoding", "").lower(), bytes(self.body))
        if "content-length" in headers or body != bytes(self.body):
            headers["content-length"] = str(len(body))
        await self.send({**start, "headers": headers.raw})
        await self.send({"type": "http.response.body", "body": body, "more_body": bool(message.get("more_body"))})

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
        """Register the session at its OPEN packet; forget it at CLOSE."""
        sessions = self.runtime.sessions
        if packet[:1] == protocol.EIO_OPEN and self.sid is None:
            try:
                sid = json.loads(packet[1:]).get("sid")
            except (ValueError, AttributeError):
                return
            if isinstance(sid, str):
                self.sid = sid
                sessions.add(sid, self.outbound)
        elif packet == protocol.EIO_CLOSE and self.sid:
            sessions.remove(self.sid, self.outbound)


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
        if isinstance(packet, str) and packet[:1] == protocol.EIO_MESSAGE:
            found = await inspect(runtime, session, packet)
            if isinstance(found, str):
                packet = found  # a CONNECT without its recovery fields
                changed = True
            elif found is not None:
                outbound.defer(found)
                packet = protocol.UPGRADE_FRAME  # python-engineio answers it with a NOOP: the GET returns
                changed = True
        elif packet == protocol.EIO_CLOSE:
            for state in session.recovery.values():
                state.left_cleanly = True
        kept.append(packet)
    return protocol.join_payload(kept).encode("utf-8") if changed else None
