"""Socket.IO v5 packets as Engine.IO message frames carry them: parse, peek, encode.

Owns: the packet types, the JSON codec (orjson when installed), parsing a text frame into a
:class:`Packet` and encoding one, and the cheap tests on a frame's head that the pipeline makes
before parsing anything. Must not touch: I/O. Total: garbage in gives ``None``, never an
exception.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from asgi_resume.protocol.engineio import EIO_CLOSE, EIO_MESSAGE

# Socket.IO packet types.
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)

# A frame's head (``4`` and the packet type) tells what it is before anything is parsed.
CONNECT_HEAD, DISCONNECT_HEAD = "40", "41"
EVENT_HEADS = ("42", "45")  # an EVENT or a BINARY_EVENT
PLAIN_EVENT_HEAD = "42["  # an EVENT in "/" without ack id: most frames, and nothing to note
CLIENT_HEADS = ("40", "41", "42", "43", "45", "46")  # what a client sends that may concern us

try:  # how python-socketio decodes a client's packet (what it waits for after a binary head)
    from socketio.packet import Packet as _SocketIOPacket
except ImportError:  # pragma: no cover - another server
    _SocketIOPacket = None

try:  # a dependency: 4x faster parsing, same results; the stdlib stays as a fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

#: Which JSON parser is in use (the start-up line and the benchmarks print it).
JSON_PATH = "orjson" if _orjson is not None else "stdlib json (slow path: pip install orjson)"


_LONG_NUMBER = re.compile(r"\d{19}")  # orjson turns integers beyond 64 bits into floats
#: Past this, the stdlib parses: the scan for long numbers costs more than either parser (190 ms
#: for a frame of 16 MB, the parse 15-22 ms), and for long strings the stdlib is the faster one
ORJSON_MAX_CHARS = 64 * 1024


def loads(text: str) -> Any:
    """``json.loads``, with orjson when it is installed (and the stdlib for what orjson would change)."""
    if _orjson is not None and len(text) <= ORJSON_MAX_CHARS and _LONG_NUMBER.search(text) is None:
        try:
            return _orjson.loads(text)
        except _orjson.JSONDecodeError:  # NaN, ints beyond 64 bits: what the stdlib accepts
            pass
    return json.loads(text)


_MAX_ACK_DIGITS = 15  # anything longer is not an id python-socketio would send
_MAX_ATTACHMENTS = 1000


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
        count = frame[i:dash]
        if dash <= i or not (count.isascii() and count.isdigit()):  # ("¹" is a digit to str.isdigit)
            return None
        attachments = int(count)
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


def concerns_connection(frame: str) -> bool:
    """May an outbound frame change what the middleware keeps of the connection? (A CONNECT reply, CONNECT_ERROR,
    DISCONNECT, or an event that may carry an ack id: not a plain EVENT in ``/``.)"""
    return frame[:3] != PLAIN_EVENT_HEAD and frame[:1] == EIO_MESSAGE and frame[1:2] in ("0", "1", "2", "4", "5")


def ends_connection(frame: str) -> bool:
    """Does the server end the connection (or a namespace of it) with this frame? (An Engine.IO
    CLOSE, or a Socket.IO DISCONNECT.)"""
    return frame == EIO_CLOSE or frame[:2] == DISCONNECT_HEAD


_NAMESPACE = re.compile(r"4[25](?:\d+-)?(/[^,]*),")


# an EVENT's head up to its arguments, as python-socketio reads it: type, attachment count (at
# most 10 digits), namespace, ack id (at most 100 digits), "["; bounded, so that a frame of
# digits cannot make the match crawl back over megabytes
_EVENT_HEAD = re.compile(r"4[25](?:(\d{1,10})-)?(?:/[^,]{0,1024},)?\d{0,100}\[")
_HEAD_MAX = 1200
_ATTACHMENT_COUNT = re.compile(r"(\d{1,10})-")  # (\d: python-socketio reads it with int(), which takes any digit)
_JSON_SPACE = re.compile(r"[ \t\r\n]*")
_JSON = json.JSONDecoder()


def names_event(frame: str, event: str) -> bool:
    """Does an EVENT frame, even one :func:`parse` refuses, name ``event``? As python-socketio reads
    it: a name written with JSON escapes (``"resume\\u002dstream"``) is that name too."""
    head = _EVENT_HEAD.match(frame, 0, _HEAD_MAX)
    if head is None:
        return False
    spaces = _JSON_SPACE.match(frame, head.end())
    start = spaces.end() if spaces is not None else head.end()
    if frame.startswith(_quoted(event), start):
        return True
    window = frame[start : start + len(event) * 6 + 2]  # the longest the name can be written
    if window[:1] != '"' or "\\" not in window:
        return False  # (no escape where the name is: it is another name)
    try:
        name, _ = _JSON.raw_decode(window)
    except ValueError:
        return False
    return bool(name == event)


def event_head_read(frame: str) -> bool:
    """Can :func:`names_event` read this EVENT frame's head? (Not one with a namespace over 1,024
    characters or an ack id over 100 digits, which python-socketio reads all the same.)"""
    return _EVENT_HEAD.match(frame, 0, _HEAD_MAX) is not None


@functools.lru_cache(maxsize=4)
def _quoted(event: str) -> str:
    return json.dumps(event)


def declared_attachments(frame: str) -> int:
    """How many binary attachments a BINARY_EVENT's or BINARY_ACK's head says follow it, even one
    :func:`parse` refuses (0: it says none, or nothing readable)."""
    if frame[:2] not in ("45", "46"):
        return 0  # (python-socketio reads a count on an EVENT too, and hands the EVENT on at once)
    count = _ATTACHMENT_COUNT.match(frame, 2)
    return int(count.group(1)) if count is not None else 0


def attachments_awaited(frame: str) -> int | None:
    """How many attachments python-socketio waits for after this client message, as it decodes it:
    a BINARY_EVENT or BINARY_ACK head it reads (0: it then takes every later message for one, and
    refuses each). ``None``: it waits for none (it drops a head it cannot decode). Another server
    than python-socketio: the count the head says."""
    if frame[:2] not in ("45", "46"):
        return None
    if _SocketIOPacket is None:  # pragma: no cover - another server
        return declared_attachments(frame)
    try:
        packet = _SocketIOPacket(encoded_packet=frame[1:])
    except Exception:  # noqa: BLE001 - whatever its decode raises, it drops the message
        return None
    count = packet.attachment_count
    return count if isinstance(count, int) else None


def namespace_of(frame: str) -> str:
    """The namespace an EVENT frame names in its head, even one :func:`parse` refuses."""
    found = _NAMESPACE.match(frame[:512])
    return found.group(1) if found else "/"
