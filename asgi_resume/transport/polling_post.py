"""A long-polling POST: what the client sends, read before the app reads it.

Owns: reading a POST body within python-engineio's limits, taking resume requests out of it (each
replaced by an Engine.IO UPGRADE packet, which python-engineio answers with a NOOP on the pending
GET, whose response then carries the replay and the answer), a CONNECT's recovery fields, and what
the POST's response says of the session (a CLOSE it carried, a refused sid). Must not touch: the
GET's response, frames' meaning.
"""

from __future__ import annotations

import urllib.parse

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from asgi_resume import protocol
from asgi_resume.pipeline.inbound import UNREAD
from asgi_resume.transport.engineio import REFUSED, EngineIOSession

try:  # python-engineio's own limit on the packets of one POST (it refuses a body with more)
    from engineio.payload import Payload as _Payload

    MAX_POST_PACKETS: int = int(_Payload.max_decode_packets)
except (ImportError, AttributeError, TypeError, ValueError):  # pragma: no cover - another server
    MAX_POST_PACKETS = 16


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
    rewritten = await _rewrite_post(eio, bytes(body)) if len(body) <= limit else None

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


_JSONP = "d="  # python-engineio reads a body that starts with it as a form: its field d is the payload


async def _rewrite_post(eio: EngineIOSession, body: bytes) -> bytes | None:
    """The body with resume requests (and frames the app must not get) replaced by UPGRADE
    packets; ``None`` when unchanged. A form body (``d=...``, JSONP) is read as python-engineio
    reads it, and the app gets the payload we read, not the form."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    changed = text.startswith(_JSONP)
    if changed:
        try:  # (what python-engineio does: engineio.payload.Payload.decode)
            text = urllib.parse.parse_qs(text)["d"][0]
        except (KeyError, IndexError, ValueError):
            return None  # python-engineio cannot read it either
        if text.startswith(_JSONP):
            return None  # it reads a form once: given the payload, it would read it again
    if text.count(protocol.RECORD_SEPARATOR) >= MAX_POST_PACKETS:
        return None  # python-engineio refuses a body of more packets than this: so do we
    packets = protocol.split_payload(text)
    kept: list[str | bytes] = []
    for packet in packets:
        if isinstance(packet, bytes) and eio.client_binary():
            changed = True
            continue
        if isinstance(packet, str):
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
