"""Long-polling responses that carry replays, while the server's buffer holds them: bounded per user and process.

Owns: the bytes of such responses to each long-polling session that the server's buffer still
holds (its client has not taken them), per principal and in all, and whether another replay may
start in a response now. A long-polling response is built whole and handed to the server at once,
so unlike a websocket's paged replay it sits in the server's buffer until the client reads it: one
principal's many sessions, each asking for a replay and never reading, held 391-449 MB and
stalled another user's live stream 126-601 ms (found by attack). A client's next GET does not say
it read the last response: one sent on another TCP connection reset the count while the old
response sat unread (+193-273 MiB, found by attack); the transport says when the server's buffer
drained. What the kernel's socket buffers take of it (a few MB a connection, outside the
process's memory) counts as taken. A response on its way holds its session, which counts until
the response is; a session that is gone counts no more. Must not touch: responses, the log.
"""

from __future__ import annotations

import weakref
from typing import Protocol

PER_PRINCIPAL_BYTES = 16 << 20  # a principal's responses with replays its clients have not read
PER_PROCESS_BYTES = 128 << 20  # everyone's


class Session(Protocol):
    """A long-polling session as counted here."""

    unread_replays: int  # bytes of responses with replays sent to it that its client has not read
    unread_principal: str  # whom they count against


class PollingReplays:
    def __init__(self, per_principal: int = PER_PRINCIPAL_BYTES, per_process: int = PER_PROCESS_BYTES) -> None:
        self.per_principal, self.per_process = per_principal, per_process
        self._unread: dict[str, weakref.WeakSet[Session]] = {}  # principal -> its sessions with some

    def full(self, principal: str) -> bool:
        """May no further replay start in a long-polling response of ``principal`` now?"""
        if self.unread(principal) >= self.per_principal:
            return True
        return self.total() >= self.per_process

    def unread(self, principal: str) -> int:
        return sum(session.unread_replays for session in self._unread.get(principal, ()))

    def total(self) -> int:
        return sum(session.unread_replays for sessions in list(self._unread.values()) for session in sessions)

    def sent(self, session: Session, principal: str, size: int) -> None:
        """A replay of about ``size`` bytes starts in a response of ``session`` (see :meth:`built`)."""
        if session.unread_replays and session.unread_principal != principal:  # (its other namespace's)
            self._forget(session)
            session.unread_replays = 0
        session.unread_replays += size
        session.unread_principal = principal
        sessions = self._unread.get(principal)
        if sessions is None:
            sessions = self._unread[principal] = weakref.WeakSet()
        sessions.add(session)

    def built(self, session: Session, counted: int, size: int) -> None:
        """The response whose replays were counted ``counted`` bytes as they started is built: it
        holds ``size`` bytes (0: it failed), counted until :meth:`drained`."""
        session.unread_replays = max(0, session.unread_replays + size - counted)
        if not session.unread_replays:
            self._forget(session)

    def drained(self, session: Session, size: int) -> None:
        """The server's buffer no longer holds that response of ``size`` bytes: the connection took
        it (into the kernel's buffers, or its client read it), or it closed."""
        self.built(session, size, 0)

    def _forget(self, session: Session) -> None:
        sessions = self._unread.get(session.unread_principal)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._unread[session.unread_principal]
