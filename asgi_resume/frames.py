"""One outbound event on its way to the client: its parts and its stamps.

Owns: the unit the outbound pipeline works on (an event frame with its binary attachments), how
it is stamped (``seq``/``epoch`` in the first argument, a recovery offset as the last argument),
what the stream log keeps of it and how a logged entry turns back into frames. Must not touch:
I/O, sessions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from asgi_resume import protocol
from asgi_resume.log import Entry, StreamKey

SEQ_FIELD, EPOCH_FIELD = "seq", "epoch"
RESERVED = (SEQ_FIELD, EPOCH_FIELD)

#: What flows through the pipeline: text and binary Engine.IO packets, resume requests, and any
#: other object (e.g. an ASGI close message), which passes through in its place.
Item = Any


def stamp_fields(seq: int, epoch: str) -> str:
    return f'"{SEQ_FIELD}":{seq},"{EPOCH_FIELD}":"{epoch}"'


def render(payload: list[Any], seq: int, epoch: str) -> list[str | bytes] | None:
    """A stream log entry as the frames to send; ``None`` if the entry is malformed."""
    if len(payload) < 2 or not isinstance(payload[0], str) or not isinstance(payload[1], str):
        return None
    attachments = payload[2:]
    if not all(isinstance(a, bytes) for a in attachments):
        return None
    return [payload[0] + stamp_fields(seq, epoch) + payload[1], *attachments]


def _hash(template: protocol.StampTemplate) -> hashlib.blake2b:
    return hashlib.blake2b((template.head + "\x00" + template.tail).encode(), digest_size=12)


def template_digest(template: protocol.StampTemplate) -> str:
    """The digest of a text frame's content as the log keeps it (without stamps or ack id)."""
    return _hash(template).hexdigest()


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
    attachments: list[bytes] = field(default_factory=list)
    seq: int = 0
    epoch: str = ""
    offset: str = ""
    order: int = -1  # its number in the order this process was fed its stream's frames
    _digest: str = ""

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

    def frames(self) -> list[Item]:
        text = self.live()
        if self.offset:
            text = protocol.with_last_arg(text, self.offset)
        return [text, *self.attachments]

    def digest(self) -> str:
        """Identifies a copy of this event (for events with no stream seq to tell them apart)."""
        digest = hashlib.blake2b(self.live().encode(), digest_size=12)
        for attachment in self.attachments:
            digest.update(attachment)
        return digest.hexdigest()
