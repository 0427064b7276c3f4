"""The wire: Engine.IO v4 and Socket.IO v5, as text and binary frames; no I/O.

* :mod:`~asgi_resume.protocol.engineio`: packet types, long-polling payloads.
* :mod:`~asgi_resume.protocol.socketio`: Socket.IO packets (parse, peek, encode) and the cheap
  tests on a frame's head.
* :mod:`~asgi_resume.protocol.stamping`: the rewrites that stamp an event and keep the app's bytes.
* :mod:`~asgi_resume.protocol.recovery`: connection state recovery's fields (pid, offsets) and
  the claim a reconnecting client's CONNECT auth makes.

Every function is total: garbage in gives ``None`` (or the input back), never an exception.
Everything the rest of the package knows about frames comes from this package (``protocol.X``,
and ``protocol.recovery`` for recovery's fields).
"""

from asgi_resume.protocol.engineio import (
    EIO_CLOSE,
    EIO_MESSAGE,
    EIO_NOOP,
    EIO_OPEN,
    EIO_PING,
    EIO_PONG,
    EIO_PROBE_ANSWER,
    EIO_UPGRADE,
    RECORD_SEPARATOR,
    handshake,
    join_payload,
    packet_type,
    split_payload,
)
from asgi_resume.protocol.socketio import (
    ACK,
    BINARY_ACK,
    BINARY_EVENT,
    CLIENT_HEADS,
    CONNECT,
    CONNECT_ERROR,
    CONNECT_HEAD,
    DISCONNECT,
    EVENT,
    EVENT_HEADS,
    JSON_PATH,
    PLAIN_EVENT_HEAD,
    Packet,
    ack,
    attachments_awaited,
    concerns_connection,
    declared_attachments,
    ends_connection,
    event,
    event_head_read,
    names_event,
    namespace_of,
    parse,
    peek,
)
from asgi_resume.protocol.stamping import StampTemplate, stamp_template, with_last_arg, with_member

__all__ = [
    "ACK",
    "BINARY_ACK",
    "BINARY_EVENT",
    "CLIENT_HEADS",
    "CONNECT",
    "CONNECT_ERROR",
    "CONNECT_HEAD",
    "DISCONNECT",
    "EIO_CLOSE",
    "EIO_MESSAGE",
    "EIO_NOOP",
    "EIO_OPEN",
    "EIO_PING",
    "EIO_PONG",
    "EIO_PROBE_ANSWER",
    "EIO_UPGRADE",
    "EVENT",
    "EVENT_HEADS",
    "JSON_PATH",
    "PLAIN_EVENT_HEAD",
    "RECORD_SEPARATOR",
    "Packet",
    "StampTemplate",
    "ack",
    "attachments_awaited",
    "concerns_connection",
    "declared_attachments",
    "ends_connection",
    "event",
    "event_head_read",
    "handshake",
    "join_payload",
    "names_event",
    "namespace_of",
    "packet_type",
    "parse",
    "peek",
    "split_payload",
    "stamp_template",
    "with_last_arg",
    "with_member",
]
