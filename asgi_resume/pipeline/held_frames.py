"""The frame objects held connections logged in their recovery sessions, in this process.

Owns: for each session generation a held connection logs in, the objects the app handed it, by
their number in the session log (the last ``KEPT`` of them), until a claim takes them or the
connection ends. python-socketio encodes an emit once and hands each recipient's websocket that
same string, so a claim here tells the new connection's live copies of replayed events (the
emits after it joined its rooms) from new events with the same content exactly, where content
and time cannot (a typing indicator repeated while the app accepts the reconnect). Must not
touch: the log, I/O.
"""

from __future__ import annotations

KEPT = 1024  # objects kept per session generation (a claim needs those of the last moments)


class HeldFrames:
    def __init__(self) -> None:
        self._by_session: dict[tuple[str, str], dict[int, str]] = {}

    def logged(self, pid: str, gen: str, numbered: list[tuple[int, str]]) -> None:
        """A held connection logged these frames (number, the app's object) in ``pid``'s ``gen``."""
        kept = self._by_session.setdefault((pid, gen), {})
        for n, frame in numbered:
            kept[n] = frame
        while len(kept) > KEPT:
            del kept[next(iter(kept))]

    def take(self, pid: str, gen: str) -> dict[int, str]:
        """What a claim of ``pid`` from ``gen`` replays, by number (gone from here)."""
        return self._by_session.pop((pid, gen), {})

    def ended(self, pid: str, gen: str) -> None:
        """The connection that logged in ``gen`` is over."""
        self._by_session.pop((pid, gen), None)
