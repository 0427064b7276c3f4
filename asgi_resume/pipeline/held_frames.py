"""The frame objects held connections logged in their recovery sessions, in this process.

Owns: for each session generation a held connection logs in, the objects the app handed it, by
their number in the session log (the last ``KEPT`` of them, within ``CHARS_KEPT``), until a claim takes them or the
connection ends. python-socketio encodes an emit once and hands each recipient's websocket that
same string, so a claim here tells the new connection's live copies of replayed events (the
emits after it joined its rooms) from new events with the same content exactly, where content
and time cannot (a typing indicator repeated while the app accepts the reconnect). Must not
touch: the log, I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KEPT = 1024  # objects kept per session generation (a claim needs those of the last moments)
CHARS_KEPT = 256 << 10  # and at most this many characters of them (large frames: fewer, the newest)


@dataclass(slots=True)
class _Generation:
    """What one held connection logged in one session generation."""

    frames: dict[int, str] = field(default_factory=dict)  # number -> the app's object, oldest first
    chars: int = 0  # their characters


class HeldFrames:
    def __init__(self) -> None:
        self._by_session: dict[tuple[str, str], _Generation] = {}  # (pid, generation) -> its objects

    def logged(self, pid: str, gen: str, numbered: list[tuple[int, str]]) -> None:
        """A held connection logged these frames (number, the app's object) in ``pid``'s ``gen``."""
        kept = self._by_session.get((pid, gen))
        if kept is None:
            kept = self._by_session[(pid, gen)] = _Generation()
        frames = kept.frames
        for n, frame in numbered:
            frames[n] = frame
            kept.chars += len(frame)
        while frames and (len(frames) > KEPT or kept.chars > CHARS_KEPT):
            kept.chars -= len(frames.pop(next(iter(frames))))

    def take(self, pid: str, gen: str) -> dict[int, str]:
        """What a claim of ``pid`` from ``gen`` replays, by number (gone from here)."""
        found = self._by_session.pop((pid, gen), None)
        return found.frames if found is not None else {}

    def ended(self, pid: str, gen: str) -> None:
        """The connection that logged in ``gen`` is over."""
        self._by_session.pop((pid, gen), None)
