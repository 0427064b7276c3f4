"""A long-polling POST: what the client sends, read when the app reads it.

Owns: reading a POST body within python-engineio's limits, and, once the app reads it (python-
engineio refuses some POSTs unread: a bad JSONP index, an origin it does not accept), taking
resume requests out of its packets (each replaced by an Engine.IO UPGRADE packet, which python-
engineio answers with a NOOP on the pending GET, whose response then carries the replay and the
answer), a CONNECT's recovery fields, and what the POST's response says of the session (a CLOSE it
carried, a refused sid). Only packets python-engineio reads are acted on: none of a payload it
cannot decode, none after one it stops at. Must not touch: the GET's response, frames' meaning.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from asgi_resume import protocol
from asgi_resume.pipeline.inbound import UNREAD
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
    """Wraps ``send`` for one polling POST: a CLOSE it carried, or a refusal, ends the session here."""

    def __init__(self, eio: EngineIOSession, send: Send) -> None:
        self.eio, self.send = eio, send

    async def __call__(self, message: Message) -> None:
        eio = self.eio
        polling = eio.polling
        if message["type"] == "http.response.start" and polling is not None:
            status = message.get("status")
            if status == 200 and polling.goodbye:
                eio.ended()
                await eio.let_go("its client said goodbye", over=True)
            elif status == 200 and not polling.over:
                polling.let_go = False
            elif status == REFUSED:
                await eio.let_go("python-engineio refused its sid")
        await self.send(message)


async def read_post(eio: EngineIOSession, scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
    """Read a POST body; take resume requests out of it. Returns the scope and receive the app gets.

    Only a body python-engineio would read is read: one with a Content-Length within the app's
    ``max_http_buffer_size`` (python-engineio refuses a longer one, and so never acts on it).
    """
    limit = eio.runtime.max_post_body
    declared = Headers(scope=scope).get("content-length", "")
    if not (declared.isascii() and declared.isdigit()) or int(declared) > limit:
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
    if len(body) > limit or messages[-1]["type"] != "http.request":
        return scope, _replaying(iter(messages), receive)  # refused, or the client left: nothing to act on
    # python-engineio's ASGI driver takes the first message when the request comes, and reads what
    # follows only once it has accepted the POST: the body is read here then, and what it says acted on
    # (a rewritten body is never longer than the one the client declared: python-engineio reads
    # what comes, up to Content-Length)
    given = 0

    async def reading_receive() -> Message:
        nonlocal given
        given += 1
        if given == 1:
            return {"type": "http.request", "body": b"", "more_body": True}
        if given == 2:
            rewritten = await _rewrite_post(eio, bytes(body))
            return {"type": "http.request", "body": bytes(body) if rewritten is None else rewritten}
        return await receive()

    return scope, reading_receive


def _replaying(messages: Iterator[Message], receive: Receive) -> Receive:
    async def replaying_receive() -> Message:
        for message in messages:
            return message
        return await receive()

    return replaying_receive


_JSONP = "d="  # python-engineio reads a body that starts with it as a form: its field d is the payload


async def _rewrite_post(eio: EngineIOSession, body: bytes) -> bytes | None:
    """The body with resume requests (and frames the app must not get) replaced by UPGRADE
    packets; ``None`` when unchanged. A form body (``d=...``, JSONP) is read as python-engineio
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
        if int(packet[:1]) not in _READ_TYPES:  # (read with int(), as python-engineio does)
            kept += packets[at:]  # python-engineio stops at it: what follows is never read
            break
        found = await eio.client_text(packet)
        if isinstance(found, str):
            packet = found  # a CONNECT without its recovery fields
            changed = True
        elif found is UNREAD:
            packet = protocol.EIO_UPGRADE  # (python-engineio answers it with a NOOP)
            changed = True
        elif found is not None:
            eio.outbound.batch.defer(found)
            packet = protocol.EIO_UPGRADE  # python-engineio answers it with a NOOP: the GET returns
            changed = True
        kept.append(packet)
    return protocol.join_payload(kept).encode("utf-8") if changed else None


def _decodes(text: str) -> bool:
    """Would python-engineio decode this POST body into packets (and so read them)?"""
    if _Payload is None:  # pragma: no cover - another server: its packets are read as they come
        return True
    try:
        _Payload(encoded_payload=text)
    except (ValueError, LookupError, TypeError):  # (its POST handler then reads no packet)
        return False
    return True
