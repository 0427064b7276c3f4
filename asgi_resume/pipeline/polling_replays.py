"""Long-polling responses that carry replays, waiting for their clients: bounded per user and process.

Owns: the bytes of such responses not yet taken by the server (a client that does not read keeps
its response's send waiting), per principal and in all, and whether another replay may start in
a response now. A long-polling response is built whole, so unlike a websocket's paged replay its
size is held in memory until the client reads it: one principal's many sessions, each asking for
a replay and never reading, held 391-449 MB and stalled another user's live stream 126-601 ms
(found by attack). Must not touch: responses, the log.
"""

from __future__ import annotations

PER_PRINCIPAL_BYTES = 16 << 20  # a principal's responses with replays waiting for their clients
PER_PROCESS_BYTES = 128 << 20  # everyone's


class PollingReplays:
    def __init__(self, per_principal: int = PER_PRINCIPAL_BYTES, per_process: int = PER_PROCESS_BYTES) -> None:
        self.per_principal, self.per_process = per_principal, per_process
        self._held: dict[str, int] = {}
        self.total = 0

    def full(self, principal: str) -> bool:
        """May no further replay start in a long-polling response of ``principal`` now?"""
        return self.total >= self.per_process or self._held.get(principal, 0) >= self.per_principal

    def hold(self, principal: str, size: int) -> None:
        """A response of ``size`` bytes carrying a replay waits for its client (until :meth:`release`)."""
        self._held[principal] = self._held.get(principal, 0) + size
        self.total += size

    def release(self, principal: str, size: int) -> None:
        left = self._held.pop(principal, 0) - size
        if left > 0:
            self._held[principal] = left
        self.total -= size
