"""What Socket.IO connection state recovery keeps for one namespace of one connection.

Owns: the state's fields (the claim its CONNECT made, the session log it writes to, the frames
waiting for the app's CONNECT reply, the replayed events the new connection may repeat).
Must not touch: I/O (:mod:`~asgi_resume.pipeline.recovery` acts on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asgi_resume.pipeline.units import EventUnit
from asgi_resume.protocol.recovery import ClaimRequest


@dataclass(eq=False, slots=True)
class RecoveryState:
    """Recovery in one namespace of one connection."""

    namespace: str
    connect_ms: int  # when the client's CONNECT came in, on the log's clock
    claim: ClaimRequest | None = None
    awaiting_reply: bool = True  # until the app's CONNECT reply: frames wait, to follow the replay
    before_reply: list[EventUnit] = field(default_factory=list)  # frames waiting for the CONNECT reply
    principal: str = ""  # (hashed) whose session it is, once the app accepted the CONNECT
    pid: str = ""
    gen: str = ""
    logging: bool = False  # the session log takes this connection's events
    starting: bool = False  # its next log call starts its generation (and may make the session)
    left_cleanly: bool = False  # the client said goodbye (DISCONNECT or CLOSE): nothing to recover
    loss_untold: bool = False  # an event it sent is in no log (a write failed), and the log was not told yet
    #: replayed events the new connection may repeat: digest -> when each such copy was received,
    #: and the app's object where the connection that logged it was held here
    duplicates: dict[str, list[tuple[int, str | None]]] = field(default_factory=dict)
    duplicates_until: float = 0.0

    @property
    def recoverable(self) -> bool:
        return self.logging and not self.left_cleanly
