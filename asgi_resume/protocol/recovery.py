"""Socket.IO connection state recovery on the wire: what a reconnecting client presents and the
offsets it is given.

Owns: the ``pid`` and ``offset`` members of a CONNECT's auth (taken out before the app sees it),
making pids and offsets. Must not touch: sessions, the log, I/O. Total: a malformed claim is no
claim.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from asgi_resume.protocol.socketio import CONNECT, Packet, encode

PID_FIELD, OFFSET_FIELD = "pid", "offset"
UNLOGGED_OFFSET = "-"  # an offset no session has: a client holding it gets a normal connect
_OFFSET = re.compile(r"([A-Za-z0-9]{1,16})\.([0-9]{1,15})")
_PID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def new_pid() -> str:
    """A bearer secret: 144 random bits."""
    return secrets.token_urlsafe(18)


def offset(gen: str, n: int) -> str:
    return f"{gen}.{n}"


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What a reconnecting client presented: its session and the last offset it got."""

    pid: str
    gen: str
    after: int


def take_claim(auth: Any) -> tuple[ClaimRequest | None, Any, bool]:
    """Split a CONNECT auth into the recovery claim and what the app sees.

    Returns (claim or None, auth without pid and offset, whether the auth had them).
    """
    if not isinstance(auth, dict) or (PID_FIELD not in auth and OFFSET_FIELD not in auth):
        return None, auth, False
    pid, raw_offset = auth.get(PID_FIELD), auth.get(OFFSET_FIELD)
    rest = {k: v for k, v in auth.items() if k not in (PID_FIELD, OFFSET_FIELD)}
    if not (isinstance(pid, str) and _PID.fullmatch(pid) and isinstance(raw_offset, str)):
        return None, rest, True
    match = _OFFSET.fullmatch(raw_offset)
    if match is None:
        return None, rest, True
    return ClaimRequest(pid, match.group(1), int(match.group(2))), rest, True


def strip_connect(frame: str, packet: Packet) -> tuple[ClaimRequest | None, str | None, Any]:
    """For an inbound CONNECT: the claim, the frame the app should get instead (or None), the auth."""
    claim, auth, changed = take_claim(packet.data)
    if not changed:
        return None, None, packet.data
    replacement = encode(Packet(CONNECT, packet.namespace, None, auth))
    return claim, replacement, auth
