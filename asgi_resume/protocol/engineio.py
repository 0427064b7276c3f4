"""Engine.IO v4: packet types, and the long-polling payloads that carry several packets.

Owns: what the first character of a frame says, the handshake an OPEN packet carries, and
splitting and joining long-polling bodies (packets joined by ``\\x1e``, binary ones as
``b<base64>``). Must not touch: I/O. Total: garbage in gives the input back (or ``None``), never
an exception.
"""

from __future__ import annotations

import base64
import binascii
import json

# Engine.IO packet types, as the first character of a text frame (a PING, PONG, UPGRADE or NOOP is
# that character alone).
EIO_OPEN, EIO_CLOSE, EIO_PING, EIO_PONG, EIO_MESSAGE, EIO_UPGRADE, EIO_NOOP = "0123456"

RECORD_SEPARATOR = "\x1e"  # joins Engine.IO packets in a long-polling body
EIO_PROBE_ANSWER = EIO_PONG + "probe"  # the server's answer to an upgrade's probe (a PING "probe")


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


def packet_type(frame: str) -> int | None:
    """The packet type python-engineio reads in a text frame: its first character read with
    ``int()``, which takes any Unicode digit ("\uff15" is an UPGRADE to it); ``None`` if it reads none."""
    try:
        return int(frame[:1])
    except ValueError:
        return None


def handshake(frame: str) -> dict[str, object] | None:
    """The handshake an Engine.IO OPEN packet carries (``sid``, ``pingInterval``, ...), if it is one."""
    if frame[:1] != EIO_OPEN:
        return None
    try:
        found = json.loads(frame[1:])
    except (ValueError, RecursionError):
        return None
    return found if isinstance(found, dict) else None
