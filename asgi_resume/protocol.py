"""Engine.IO v4 / Socket.IO v5 codec: frames in, packets out, no I/O.

Owns: parsing and encoding websocket frames and long-polling payloads, and the
surgical rewrite that stamps fields into an event's first argument.
Must not touch: sockets, asyncio, Redis, configuration. Every function here is
total: garbage in gives ``None`` (or the input back), never an exception.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

# Engine.IO packet types, as the first character of a text frame (a PING, PONG, UPGRADE or NOOP is
# that character alone).
EIO_OPEN, EIO_CLOSE, EIO_PING, EIO_PONG, EIO_MESSAGE, EIO_UPGRADE, EIO_NOOP = "0123456"

# Socket.IO packet types.
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)

try:  # a dependency: 4x faster parsing, same results; the stdlib stays as a fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

#: Which JSON parser is in use (the start-up line and the benchmarks print it).
JSON_PATH = "orjson" if _orjson is not None else "stdlib json (slow path: pip install orjson)"


_LONG_NUMBER = re.compile(r"\d{19}")  # orjson turns integers beyond 64 bits into floats


def loads(text: str) -> Any:
    """``json.loads``, with orjson when it is installed (and the stdlib for what orjson would change)."""
    if _orjson is not None and _LONG_NUMBER.search(text) is None:
        try:
            return _orjson.loads(text)
        except _orjson.JSONDecodeError:  # NaN, ints beyond 64 bits: what the stdlib accepts
            pass
    return json.loads(text)


RECORD_SEPARATOR = "\x1e"  # joins Engine.IO packets in a long-polling body
_MAX_ACK_DIGITS = 15  # anything longer is not an id python-socketio would send
_MAX_ATTACHMENTS = 1000
_WHITESPACE = " \t\n\r"
_decoder = json.JSONDecoder()
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Packet:
    """One Socket.IO packet, as carried by an Engine.IO message frame."""

    type: int
    namespace: str = "/"
    ack_id: int | None = None
    data: Any = None
    attachments: int = 0
    #: Where the JSON payload starts in the frame it was parsed from (0: built, not parsed).
    data_offset: int = field(default=0, compare=False)

    @property
    def is_event(self) -> bool:
        return self.type in (EVENT, BINARY_EVENT)

    @property
    def event_name(self) -> str | None:
        """The event name of an EVENT/BINARY_EVENT, else ``None``."""
        if self.is_event and isinstance(self.data, list) and self.data and isinstance(self.data[0], str):
            return self.data[0]
        return None

    @property
    def first_arg(self) -> Any:
        """The first argument after the event name (``None`` when there is none)."""
        if self.event_name is not None and len(self.data) > 1:
            return self.data[1]
        return None


def peek(frame: str) -> Packet | None:
    """Like :func:`parse` without decoding the JSON payload (``data`` stays ``None``): cheap."""
    return parse(frame, decode=False)


def parse(frame: str, *, decode: bool = True) -> Packet | None:
    """Parse a websocket text frame holding a Socket.IO packet (``4`` + packet).

    Returns ``None`` for any other Engine.IO packet and for anything malformed.
    """
    if not isinstance(frame, str) or len(frame) < 2 or frame[0] != EIO_MESSAGE:
        return None
    if frame[1:3] == "2[" and decode:  # the hot path: an EVENT in "/", no ack id
        try:
            data = loads(frame[2:])
        except (ValueError, RecursionError):
            return None
        if not (isinstance(data, list) and data and isinstance(data[0], str)):
            return None
        return Packet(EVENT, "/", None, data, 0, 2)
    kind = frame[1]
    if not "0" <= kind <= "6":
        return None
    ptype = ord(kind) - 48
    i = 2
    n = len(frame)
    attachments = 0
    if ptype in (BINARY_EVENT, BINARY_ACK):
        dash = frame.find("-", i, i + 8)
        if dash <= i or not frame[i:dash].isdigit():
            return None
        attachments = int(frame[i:dash])
        if attachments > _MAX_ATTACHMENTS:
            return None
        i = dash + 1
    namespace = "/"
    if i < n and frame[i] == "/":
        comma = frame.find(",", i)
        end = n if comma == -1 else comma
        namespace = frame[i:end].split("?", 1)[0]
        i = end if comma == -1 else comma + 1
    ack_id = None
    j = i
    while j < n and "0" <= frame[j] <= "9":
        j += 1
    if j > i:
        if j - i > _MAX_ACK_DIGITS:
            return None
        ack_id = int(frame[i:j])
        i = j
    data = None
    if i < n and decode:
        try:
            data = loads(frame[i:])
        except (ValueError, RecursionError):
            return None
    packet = Packet(ptype, namespace, ack_id, data, attachments, i)
    if decode and packet.is_event and packet.event_name is None:
        return None
    return packet


def encode(packet: Packet) -> str:
    """Encode a packet as a websocket text frame (the inverse of :func:`parse`)."""
    parts = [EIO_MESSAGE, str(packet.type)]
    if packet.type in (BINARY_EVENT, BINARY_ACK):
        parts.append(f"{packet.attachments}-")
    if packet.namespace != "/":
        parts.append(packet.namespace + ",")
    if packet.ack_id is not None:
        parts.append(str(packet.ack_id))
    if packet.data is not None:
        parts.append(json.dumps(packet.data, separators=(",", ":")))
    return "".join(parts)


def event(name: str, *args: Any, namespace: str = "/", ack_id: int | None = None) -> str:
    """Encode an EVENT frame."""
    return encode(Packet(EVENT, namespace, ack_id, [name, *args]))


def ack(ack_id: int, *args: Any, namespace: str = "/") -> str:
    """Encode an ACK frame answering ``ack_id``."""
    return encode(Packet(ACK, namespace, ack_id, list(args)))


@dataclass(frozen=True, slots=True)
class StampTemplate:
    """An event frame cut open where stamped fields go into its first argument.

    ``head + fields + tail`` is the frame without its ack id (what the log keeps and a replay
    sends: :func:`asgi_resume.frames.render`); ``live(fields)`` puts the ack id back, for the
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
    body = frame[offset:]
    if reserved and (reserved[0] in obj or (len(reserved) > 1 and any(key in obj for key in reserved[1:]))):
        obj = {k: v for k, v in obj.items() if k not in reserved}
        body = json.dumps([packet.data[0], obj, *packet.data[2:]], separators=(",", ":"))
    compact = _event_prefix(packet.data[0])
    start = len(compact) - 1 if body.startswith(compact) else _first_arg_start(body, 0)
    if start is None:
        return None
    tail = body[start + 1 :]
    if obj:
        tail = "," + tail
    return StampTemplate(prefix + body[: start + 1], tail, ack_digits, ack_at)


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


def lookup(obj: Any, path: tuple[str, ...]) -> Any:
    """Follow a dotted path (already split) through nested objects; ``_MISSING`` if absent."""
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def is_missing(value: Any) -> bool:
    return value is _MISSING


# -- long-polling payloads ---------------------------------------------------------------


def split_payload(body: str) -> list[str | bytes]:
    """Split a long-polling body into Engine.IO packets, decoding ``b<base64>`` binaries.

    A binary packet whose base64 does not decode is kept as its text, so that
    re-joining the payload gives the original body back.
    """
    packets: list[str | bytes] = []
    if not body:
        return packets
    for part in body.split(RECORD_SEPARATOR):
        if part[:1] == "b":
            try:
                packets.append(base64.b64decode(part[1:], validate=True))
                continue
            except (binascii.Error, ValueError):
                pass
        packets.append(part)
    return packets


def join_payload(packets: list[str | bytes]) -> str:
    """Join Engine.IO packets into a long-polling body (inverse of :func:`split_payload`)."""
    return RECORD_SEPARATOR.join(
        "b" + base64.b64encode(p).decode("ascii") if isinstance(p, bytes) else p for p in packets
    )
