"""Stamping: the surgical rewrites of an event frame that keep the app's bytes.

Owns: cutting an event frame open where ``seq``/``epoch`` go into its first argument
(:class:`StampTemplate`), the stamp's text (and cutting it out again), appending a last argument
(a recovery offset) and setting a member of a CONNECT reply (its ``pid``). Must not touch: what
the fields mean, I/O. Total: a frame it cannot cut gives ``None`` or comes back unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from asgi_resume.protocol.socketio import Packet, encode

_WHITESPACE = " \t\n\r"
_decoder = json.JSONDecoder()

SEQ_FIELD, EPOCH_FIELD = "seq", "epoch"  # what a stamp adds to an event's first argument


def stamp_fields(seq: int, epoch: str) -> str:
    """A stamp's members, as they go into the first argument (:meth:`StampTemplate.live`)."""
    return f'"{SEQ_FIELD}":{seq},"{EPOCH_FIELD}":"{epoch}"'


def unstamped(text: str, seq: int, epoch: str) -> str | None:
    """A stamped event frame as the app sent it (the stamp cut out), or ``None`` if it has none."""
    fields = stamp_fields(seq, epoch)
    at = text.find(fields)
    if at < 0:
        return None
    rest = text[at + len(fields) :]
    return text[:at] + (rest[1:] if rest[:1] == "," else rest)


@dataclass(frozen=True, slots=True)
class StampTemplate:
    """An event frame cut open where stamped fields go into its first argument.

    ``head + fields + tail`` is the frame without its ack id (what the log keeps and a replay
    sends: :func:`asgi_resume.pipeline.units.render`); ``live(fields)`` puts the ack id back, for the
    connection it was sent to.
    """

    head: str  # frame up to and including the "{" of the first argument, minus the ack id
    tail: str  # the rest of the frame, starting with "," when the object had members
    ack_digits: str  # the ack id as sent, "" when none
    ack_at: int  # where the ack id sat in ``head``

    def live(self, fields_json: str) -> str:
        if not self.ack_digits:
            return self.head + fields_json + self.tail
        at = self.ack_at
        return self.head[:at] + self.ack_digits + self.head[at:] + fields_json + self.tail


def stamp_template(frame: str, packet: Packet, reserved: tuple[str, ...]) -> StampTemplate | None:
    """Cut ``frame`` open after the ``{`` of the event's first argument.

    The original bytes are kept, except when the object already holds one of the
    ``reserved`` keys: then those members are dropped and the payload re-encoded, so
    the stamped frame carries each field exactly once. ``None`` when the first
    argument is not an object.
    """
    data = packet.data
    obj = data[1] if isinstance(data, list) and len(data) > 1 and isinstance(data[0], str) else None
    if not isinstance(obj, dict) or not packet.data_offset:
        return None
    offset = packet.data_offset
    ack_digits = "" if packet.ack_id is None else str(packet.ack_id)
    ack_at = offset - len(ack_digits)
    if frame[ack_at:offset] != ack_digits:
        return None
    prefix = frame[:ack_at]
    body, at = frame, offset  # the payload is body[at:] (not copied: a frame may be megabytes)
    if reserved and (reserved[0] in obj or (len(reserved) > 1 and any(key in obj for key in reserved[1:]))):
        obj = {k: v for k, v in obj.items() if k not in reserved}
        body, at = json.dumps([packet.data[0], obj, *packet.data[2:]], separators=(",", ":")), 0
    compact = _event_prefix(packet.data[0])
    start = at + len(compact) - 1 if body.startswith(compact, at) else _first_arg_start(body, at)
    if start is None:
        return None
    tail = body[start + 1 :]
    if obj:
        tail = "," + tail
    return StampTemplate(prefix + body[at : start + 1], tail, ack_digits, ack_at)


def with_last_arg(frame: str, value: str) -> str:
    """An EVENT frame with ``value`` appended as its last argument (a recovery offset)."""
    end = len(frame.rstrip(_WHITESPACE)) - 1
    if end < 0 or frame[end] != "]":
        return frame
    return frame[:end] + "," + json.dumps(value) + frame[end:]


def with_member(frame: str, packet: Packet, key: str, value: str) -> str:
    """A frame whose payload is a JSON object, with ``key`` set first in it (a CONNECT reply's pid)."""
    offset = packet.data_offset
    if not isinstance(packet.data, dict) or not offset or frame[offset : offset + 1] != "{":
        return frame
    member = json.dumps(key) + ":" + json.dumps(value)
    if key in packet.data:
        rest = {k: v for k, v in packet.data.items() if k != key}  # ours wins over the app's member
        return encode(Packet(packet.type, packet.namespace, packet.ack_id, {key: value, **rest}))
    return frame[: offset + 1] + member + ("," if packet.data else "") + frame[offset + 1 :]


_PREFIXES: dict[str, str] = {}


def _event_prefix(name: str) -> str:
    """``["name",{`` as python-socketio encodes it: the first argument's ``{`` without a scan."""
    prefix = _PREFIXES.get(name)
    if prefix is None:
        prefix = "[" + json.dumps(name) + ",{"
        if len(_PREFIXES) < 1024:
            _PREFIXES[name] = prefix
    return prefix


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WHITESPACE:
        i += 1
    return i


def _first_arg_start(frame: str, offset: int) -> int | None:
    """Index of the ``{`` opening the first argument of ``["name", {...}, ...]``."""
    try:
        i = _skip_ws(frame, offset)
        if frame[i] != "[":
            return None
        i = _skip_ws(frame, i + 1)
        if frame[i] != '"':
            return None
        _, i = _decoder.raw_decode(frame, i)
        i = _skip_ws(frame, i)
        if frame[i] != ",":
            return None
        i = _skip_ws(frame, i + 1)
    except (IndexError, ValueError):
        return None
    return i if i < len(frame) and frame[i] == "{" else None
