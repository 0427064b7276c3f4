"""A long-polling POST: what the client sends, read before the app reads it, acted on once it has.

Owns: reading a POST body within python-engineio's limits, taking resume requests out of it (each
replaced by an Engine.IO UPGRADE packet, which python-engineio answers with a NOOP on the pending
GET, whose response then carries the replay and the answer) and a CONNECT's recovery fields, and
doing what its packets do to the session (a CONNECT's principal, a DISCONNECT, an ACK, a CLOSE, a
resume request to answer) only once python-engineio's answer says it read them: it refuses some
POSTs unread (an origin it does not accept; a JSONP one is refused before it), and answers 200 before its
handlers run. Only packets python-engineio reads are read: none of a payload it cannot decode,
none after one it stops at. Must not touch: the GET's response, frames' meaning.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from asgi_resume import protocol
from asgi_resume.pipeline.inbound import UNREAD, Effects
from asgi_resume.pipeline.resume import ResumeRequest
from asgi_resume.transport.engineio import REFUSED, EngineIOSession

try:  # how python-engineio decodes a POST body (it acts on none of its packets if that fails)
    from engineio.payload import Payload as _Payload
except ImportError:  # pragma: no cover - another server
    _Payload = None

#: Engine.IO packet types python-engineio reads from a client: CLOSE, PONG, MESSAGE, UPGRADE. At
#: any other (OPEN, PING, NOOP, or 7-9) it raises, and the packets after it in the payload are
#: never read.
_READ_TYPES = frozenset((1, 3, 4, 5))


class PostResponse:
    """Wraps ``send`` for one polling POST: once the app accepted it (it read its packets), what they
    do to the session is done; a CLOSE it carried, or a refusal, ends the session here."""

    def __init__(self, eio: EngineIOSession, send: Send, effects: Effects) -> None:
        self.eio, self.send, self.effects = eio, send, effects

    async def __call__(self, message: Message) -> None:
        eio = self.eio
        polling = eio.polling
        if message["type"] == "http.response.start" and polling is not None:
            status = message.get("status")
            if status == 200:  # python-engineio read them (it answers 200 once it has: its handlers run after)
                await self.effects.run(eio.conn)
            self.effects.settled(eio.conn)
            if status == 200 and polling.goodbye:
                eio.ended()
                await eio.let_go("its client said goodbye", over=True)
            elif status == 200 and not polling.over:
                polling.let_go = False
            elif status == REFUSED:
                await eio.let_go("python-engineio refused its sid")
        await self.send(message)


async def read_post(eio: EngineIOSession, scope: Scope, receive: Receive) -> tuple[Scope, Receive, Effects]:
    """Read a POST body; take resume requests out of it. Returns the scope and receive the app
    gets, and what its packets do to the session, for :class:`PostResponse` to do once the app has
    accepted the POST (python-engineio refuses some unread: an origin it does not accept, say; its
    answer tells).

    Only a body python-engineio would read is read: one with a Content-Length within the app's
    ``max_http_buffer_size`` (python-engineio refuses a longer one, and so never acts on it).
    """
    effects = Effects()
    limit = eio.runtime.max_post_body
    declared = Headers(scope=scope).get("content-length", "")
    if not (declared.isascii() and declared.isdigit()) or int(declared) > limit:
        return scope, receive, effects  # not ours to read: the app answers it as it would without us
    messages: list[Message] = []
    body = bytearray()
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break  # (the client left: python-engineio reads what came, and so do we)
        body += message.get("body", b"")
        if not message.get("more_body") or len(body) > limit:
            break
    rewritten = await _rewrite_post(eio, bytes(body), effects) if len(body) <= limit else None

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

    return scope, replaying_receive, effects


_JSONP = "d="  # python-engineio reads a body that starts with it as a form: its field d is the payload


async def _rewrite_post(eio: EngineIOSession, body: bytes, effects: Effects) -> bytes | None:
    """The body with resume requests (and frames the app must not get) replaced by UPGRADE
    packets; ``None`` when unchanged. What its packets do to the session is added to ``effects``
    (a resume request: to be answered). A form body (``d=...``, JSONP) is read as python-engineio
    reads it, and the app gets the payload we read, not the form."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not _decodes(text):
        return None  # python-engineio reads none of its packets (too many, an empty one, a bad type...)
    changed = text.startswith(_JSONP)
    if changed:
        try:  # (what python-engineio does: engineio.payload.Payload.decode)
            text = urllib.parse.parse_qs(text)["d"][0]
        except (KeyError, IndexError, ValueError):
            return None  # python-engineio cannot read it either
        if text.startswith(_JSONP):
            return None  # it reads a form once: given the payload, it would read it again
    packets = protocol.split_payload(text)
    kept: list[str | bytes] = []
    for at, packet in enumerate(packets):
        if isinstance(packet, bytes) or packet[:1] == "b":  # (base64 only python-engineio, lenient, decodes too)
            if eio.client_binary():
                changed = True  # an attachment of a request answered here
            else:
                kept.append(packet)
            continue
        if protocol.packet_type(packet) not in _READ_TYPES:
            kept += packets[at:]  # python-engineio stops at it: what follows is never read
            break
        found = await eio.client_text(packet, effects)
        if isinstance(found, str):
            packet = found  # a CONNECT without its recovery fields
            changed = True
        elif found is UNREAD:
            packet = protocol.EIO_UPGRADE  # (python-engineio answers it with a NOOP)
            changed = True
        elif found is not None:
            effects.add(_deferring(eio, found))
            packet = protocol.EIO_UPGRADE  # python-engineio answers it with a NOOP: the GET returns
            changed = True
        kept.append(packet)
    return protocol.join_payload(kept).encode("utf-8") if changed else None


def _deferring(eio: EngineIOSession, request: ResumeRequest) -> Callable[[], Awaitable[None]]:
    async def defer() -> None:
        eio.outbound.batch.defer(request)  # (answered on the GET python-engineio's NOOP ends)

    return defer


def _decodes(text: str) -> bool:
    """Would python-engineio decode this POST body into packets (and so read them)?"""
    if _Payload is None:  # pragma: no cover - another server: its packets are read as they come
        return True
    try:
        _Payload(encoded_payload=text)
    except (ValueError, LookupError, TypeError, RecursionError):  # (its POST handler then reads no packet)
        return False
    return True
