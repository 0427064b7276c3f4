"""Which outbound events belong to a stream, which stream, and which ones finish it.

Owns: the event filter, the stream-id path, the variant path (which audience's view of a
stream an event is), the rules that exclude events from streams and the "done" rules (their
syntax is :mod:`asgi_resume.paths`'), and the record of how a frame is stamped, shared by an
emit's copies (:class:`Stamping`: :mod:`~asgi_resume.pipeline.classify` builds and caches it).
Must not touch: I/O, the log, connections.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from asgi_resume import protocol
from asgi_resume.paths import MISSING, DoneRule, lookup

MAX_STREAM_ID_LENGTH = 256
MAX_VARIANT_LENGTH = 64
#: Past this, rules are matched on the parsed payload alone, without first looking for their
#: needles in the frame's text (which costs more in a large frame than the walk)
NEEDLES_MAX_CHARS = 64 * 1024
MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's: the browser helper must write ids and views as we do


def stream_id_of(value: Any) -> str | None:
    """A usable stream id: a non-empty string or an integer, bounded in length."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            return None
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_STREAM_ID_LENGTH:
        return value
    return None


def variant_of(value: Any) -> str | None:
    """A view's name: ``""`` for the default view (no value, null, false), else the value as text
    (``true`` for true, as the JS helper writes it); ``None``: too long or not a plain value."""
    if value is None or value is False or value is MISSING:
        return ""
    if value is True:
        return "true"
    if isinstance(value, int) and abs(value) <= MAX_SAFE_INTEGER:
        return str(value)  # (as JavaScript writes it: no floats, no integers it cannot hold)
    return value if isinstance(value, str) and len(value) <= MAX_VARIANT_LENGTH else None


@dataclass(frozen=True, slots=True)
class StreamFrame:
    """An outbound event that belongs to a stream."""

    packet: protocol.Packet
    stream: str
    done: bool
    variant: str = ""


@dataclass(slots=True)
class Stamping:
    """How to stamp one frame's text, shared by the copies of an emit (a process-wide cache)."""

    frame: StreamFrame
    template: protocol.StampTemplate
    digest: str  # the content's, as the log keeps it
    first: str | None = None  # the principal of the first connection it was classified for


class StreamRules:
    """Classifies outbound frames. Cheap for frames that carry no stream id."""

    def __init__(
        self,
        events: frozenset[str] | None,
        stream_path: tuple[str, ...],
        done: tuple[DoneRule, ...],
        *,
        variant: tuple[str, ...] | None = None,
        exclude: tuple[DoneRule, ...] = (),
        log_calls: bool = False,
    ):
        self.events = events  # None: every event
        self.stream_path = stream_path
        self.done_rules = done
        self.variant_path = variant
        self.log_calls = log_calls  # events with an ack id (a call to one connection) belong to streams too
        # a frame without this text cannot hold a stream id: skip its JSON entirely
        self._needle = json.dumps(stream_path[-1])
        self._done_needles = [(rule, rule.needles) for rule in done]
        self._exclude_needles = [(rule, rule.needles) for rule in exclude]

    def classify(self, frame: str) -> StreamFrame | None:
        if frame[:2] not in protocol.EVENT_HEADS or self._needle not in frame:
            return None
        packet = protocol.parse(frame)
        if packet is None or packet.type not in (protocol.EVENT, protocol.BINARY_EVENT):
            return None
        if packet.ack_id is not None and not self.log_calls:
            return None
        if not frame.isascii() and not _encodable(frame):
            return None  # a lone surrogate in the frame's own text: nothing could store it
        data = packet.data  # parse() checked: a list starting with the event name
        if (self.events is not None and data[0] not in self.events) or len(data) < 2:
            return None
        obj = data[1]
        path = self.stream_path
        value = obj.get(path[0]) if len(path) == 1 and isinstance(obj, dict) else lookup(obj, path)
        stream = value if type(value) is str and 0 < len(value) <= MAX_STREAM_ID_LENGTH else stream_id_of(value)
        # a large frame's JSON walk costs less than looking for each needle in its text (6 needles:
        # 40 ms in a frame of 16 MB)
        needles = len(frame) <= NEEDLES_MAX_CHARS
        if stream is None or (self._exclude_needles and _any_matches(self._exclude_needles, frame, obj, needles)):
            return None
        variant = ""
        if self.variant_path is not None:
            found = variant_of(lookup(obj, self.variant_path))
            if found is None:
                return None  # not a view we can name: sent as it is
            variant = found
        done = False
        if not needles:
            done = _any_matches(self._done_needles, frame, obj, needles)
        else:
            for rule, rule_needles in self._done_needles:  # most frames lack a needle: no JSON walk (inlined: hot)
                for needle in rule_needles:
                    if needle not in frame:
                        break
                else:
                    if rule.matches(obj):
                        done = True
                        break
        return StreamFrame(packet, stream, done, variant)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _any_matches(rules: list[tuple[DoneRule, tuple[str, ...]]], frame: str, obj: Any, needles: bool) -> bool:
    """Does one of ``rules`` match ``obj``? ``needles``: look for each rule's needles in ``frame``
    first (most frames lack one: no JSON walk), which a large frame is not worth."""
    if not needles:
        return any(rule.matches(obj) for rule, _ in rules)
    for rule, found in rules:
        for needle in found:
            if needle not in frame:
                break
        else:
            if rule.matches(obj):
                return True
    return False
