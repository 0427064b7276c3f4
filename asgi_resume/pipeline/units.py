"""What flows through the outbound pipeline: the closed set of its units, and their stamps.

Owns: the units of a batch (:data:`Unit`): Engine.IO packets passed on as they are, an event on
its way to the client (:class:`EventUnit`: a frame with its binary attachments), the app's
CONNECT reply in a namespace with recovery (:class:`ConnectReply`), a resume request answered
in its place (:class:`~asgi_resume.pipeline.resume.ResumeRequest`) and any other ASGI message
(:class:`Passthrough`); how an event is stamped (``seq``/``epoch`` in the first argument, a
recovery offset as the last argument), what the stream log keeps of it and how a logged entry
turns back into frames. Must not touch: I/O, connections.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import assert_never

from starlette.types import Message

from asgi_resume import protocol
from asgi_resume.log import Entry, StreamKey
from asgi_resume.log.base import Payload
from asgi_resume.pipeline.resume import ResumeRequest
from asgi_resume.protocol.stamping import EPOCH_FIELD, SEQ_FIELD, stamp_fields

RESERVED = (SEQ_FIELD, EPOCH_FIELD)


@dataclass(frozen=True, slots=True)
class Passthrough:
    """An ASGI message that is not a frame (a websocket close), kept in its place among them."""

    message: Message


@dataclass(frozen=True, slots=True)
class ConnectReply:
    """The app's CONNECT reply in a namespace with recovery: it carries the pid, after the replay."""

    frame: str
    packet: protocol.Packet


def render(payload: Payload, seq: int, epoch: str) -> list[str | bytes] | None:
    """A stream log entry as the frames to send; ``None`` if the entry is malformed."""
    if len(payload) < 2 or not isinstance(payload[0], str) or not isinstance(payload[1], str):
        return None
    attachments = payload[2:]
    if not all(isinstance(a, bytes) for a in attachments):
        return None
    return [payload[0] + stamp_fields(seq, epoch) + payload[1], *attachments]


def _hash(template: protocol.StampTemplate) -> hashlib.blake2b:
    found = hashlib.blake2b(template.head.encode(), digest_size=12)
    found.update(b"\x00")
    found.update(template.tail.encode())  # (no copy of head and tail together: a frame may be megabytes)
    return found


def template_digest(template: protocol.StampTemplate) -> str:
    """The digest of a text frame's content as the log keeps it (without stamps or ack id)."""
    return _hash(template).hexdigest()


def text_over(text: str, limit: int) -> bool:
    """Is ``text`` more than ``limit`` bytes in UTF-8? (Encoded only when its characters may be:
    up to 4 bytes each.)"""
    chars = len(text)
    if chars > limit:
        return True
    return chars * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


#: how much of each end of a frame too large to be logged its digest reads
SAMPLED_CHARS = 4096


def sampled_digest(template: protocol.StampTemplate) -> str:
    """The digest of a text frame too large to be logged (``ASGI_RESUME_MAX_FRAME_BYTES``): of its
    head, its length and the ends of its tail. No log compares it; it tells an emit's copies apart
    from other frames here (the feed order), without hashing megabytes once more (17 ms in 16 MB)."""
    tail = template.tail
    found = hashlib.blake2b(template.head.encode(), digest_size=12)
    found.update(f"\x00{len(tail)}\x00{tail[:SAMPLED_CHARS]}\x00{tail[-SAMPLED_CHARS:]}".encode())
    return found.hexdigest()


@dataclass(eq=False, slots=True)
class EventUnit:
    """An outbound EVENT/BINARY_EVENT and its attachments, before and after the logs."""

    raw: str
    namespace: str
    expected_attachments: int
    received_ms: int
    stream: StreamKey | None = None  # set when it belongs to a stream (then template is set too)
    done: bool = False
    template: protocol.StampTemplate | None = None
    recover: bool = False  # gets a recovery offset
    base_digest: str = ""  # the text frame's digest (template_digest), shared by the copies of an emit
    copy: bool = False  # another connection of its principal here was sent it first: maybe a copy of its entry
    attachments: list[bytes] = field(default_factory=list)
    seq: int = 0
    epoch: str = ""
    offset: str = ""
    order: int = -1  # its number in the order this process was fed its stream's frames
    emitted: str | None = None  # the app's frame object, when its copies are that same object (websockets)
    _digest: str = ""

    def over(self, limit: int) -> bool:
        """Is it more than ``limit`` bytes: its frame's UTF-8 and its attachments'?"""
        return text_over(self.raw, limit - sum(len(attachment) for attachment in self.attachments))

    @property
    def complete(self) -> bool:
        return len(self.attachments) >= self.expected_attachments

    def content_digest(self) -> str:
        """Identifies the content the log keeps (copies of one emit share it): computed once."""
        if not self.attachments and self.base_digest:
            return self.base_digest  # the frame's own, shared by its copies
        if not self._digest:
            template = self.template
            assert template is not None
            digest = _hash(template)
            for attachment in self.attachments:
                digest.update(b"\x00")
                digest.update(attachment)
            self._digest = digest.hexdigest()
        return self._digest

    def entry(self) -> Entry:
        """What the stream log keeps: the frame without ack id, cut where the stamp goes."""
        template = self.template
        assert template is not None
        payload: list[str | bytes] = [template.head, template.tail, *self.attachments]
        return Entry(self.content_digest(), payload, self.done, self.received_ms)

    def live(self) -> str:
        """The text frame as this connection gets it, without its recovery offset."""
        if self.seq and self.template is not None:
            return self.template.live(stamp_fields(self.seq, self.epoch))
        return self.raw

    def frames(self) -> list[str | bytes]:
        text = self.live()
        if self.offset:
            text = protocol.with_last_arg(text, self.offset)
        return [text, *self.attachments]

    def digest(self, *, as_sent: bool = True) -> str:
        """Identifies a copy of this event (for events with no stream seq to tell them apart);
        ``as_sent=False``: as the app sent it, without its stamp."""
        digest = hashlib.blake2b((self.live() if as_sent else self.raw).encode(), digest_size=12)
        for attachment in self.attachments:
            digest.update(attachment)
        return digest.hexdigest()


def by_content(units: Iterable[EventUnit]) -> dict[str, list[str | None]]:
    """Content digest -> the frame objects of ``units`` with that content (see :attr:`EventUnit.emitted`)."""
    found: dict[str, list[str | None]] = {}
    for unit in units:
        found.setdefault(unit.content_digest(), []).append(unit.emitted)
    return found


#: What the pipeline sends: Engine.IO packets (text or binary), and ASGI messages in their place.
Outgoing = str | bytes | Passthrough
#: What a transport feeds the pipeline: what it sends, and resume requests to answer in order.
Incoming = str | bytes | Passthrough | ResumeRequest
#: The units of a batch, between feeding and sending (a closed set: dispatched with ``match``).
Unit = str | bytes | Passthrough | ResumeRequest | EventUnit | ConnectReply


def unprocessed(unit: Unit) -> list[Outgoing]:
    """What to send for a unit when processing the batch failed: its original bytes."""
    match unit:
        case EventUnit():
            return [unit.raw, *unit.attachments]
        case ConnectReply():
            return [unit.frame]
        case ResumeRequest():
            return []
        case str() | bytes() | Passthrough():
            return [unit]
        case _:
            assert_never(unit)
