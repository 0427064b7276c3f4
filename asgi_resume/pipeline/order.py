"""The order this process was fed each stream's frames in, across its connections.

Owns: a number for every stream frame a connection of this process is fed, per stream key, and
the rule that a connection logs frames only after the frames of that key that another
connection here was fed before them, and that it does not have itself, were logged. A tab that
joins mid-stream, or that is not sent every frame of the stream, may get a frame while another
tab's writer still holds frames emitted before it: logging it first would put the log out of
emit order. Copies it has too never make it wait (the tabs of a room get the same frames), nor
copies of frames already logged: a tab whose writer is busy (claiming a recovered session, say)
is fed copies of frames the other tabs logged already, and a tab that waited for those would
wait for a writer that may be waiting for it. The wait is for frames already fed here, on their
way to the log: a loop turn or a log round trip, bounded by ``ASGI_RESUME_WRITE_TIMEOUT``; never
for frames that may not come, nor for frames of a connection whose writer has been handing a
batch to its transport for longer than that bound: it is stuck behind a client that does not
read, not on its way to the log. (How long ago a frame was fed says nothing of the kind: on a
loaded machine a frame on its way to the log may take that long, and a tab that skipped it put
the log out of emit order.)

Frames are told apart by content digest: a frame whose content repeats one logged a moment ago
(the same token twice) counts as a copy, so at worst it reaches the log after a frame emitted
after it. Must not touch: the log, frames' content, I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from asgi_resume.log import StreamKey

RECENT_KEPT = 64  # digests of logged frames remembered per stream key (copies come within a few frames)
KEYS_KEPT = 4096  # stream keys whose logged digests are remembered (the oldest forgotten first)


class Feeder:
    """One connection's side of the feed order: since when (``clock`` seconds) its writer has been
    handing a batch to its transport, 0.0 while it is not."""

    __slots__ = ("sending_since",)

    def __init__(self) -> None:
        self.sending_since = 0.0


class FeedOrder:
    """``stuck_s``: a frame whose connection's writer has been sending for that long (on ``clock``,
    seconds) is waited for no more; 0: always waited for (to the caller's bound)."""

    def __init__(self, stuck_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._stuck_s, self._clock = stuck_s, clock
        self._next = 0
        #: key -> number fed, not logged -> (digest, the connection it was fed to)
        self._unlogged: dict[StreamKey, dict[int, tuple[str, Feeder | None]]] = {}
        self._recent: dict[StreamKey, dict[str, None]] = {}  # key -> digests logged lately, oldest first
        self._changed = asyncio.Event()
        self._waiters = 0

    def fed(self, key: StreamKey, digest: str, to: Feeder | None = None) -> int:
        """A frame of ``key`` with content ``digest`` was fed to connection ``to``: its number
        (numbers only grow)."""
        number = self._next = self._next + 1
        numbers = self._unlogged.get(key)
        if numbers is None:
            self._unlogged[key] = {number: (digest, to)}
        else:
            numbers[number] = (digest, to)
        return number

    @property
    def fed_count(self) -> int:
        """How many frames were fed so far: every frame fed from now on gets a higher number."""
        return self._next

    def logged(self, key: StreamKey, number: int) -> None:
        """The frame numbered ``number`` was logged, or will never be (idempotent)."""
        numbers = self._unlogged.get(key)
        if numbers is None:
            return
        fed = numbers.pop(number, None)
        if fed is None:
            return
        digest = fed[0]
        if not numbers:
            del self._unlogged[key]
        recent = self._recent.get(key)
        if recent is None:
            if len(self._recent) >= KEYS_KEPT:
                del self._recent[next(iter(self._recent))]
            recent = self._recent[key] = {}
        recent[digest] = None
        if len(recent) > RECENT_KEPT:
            del recent[next(iter(recent))]
        if self._waiters:
            self._changed.set()
            self._changed = asyncio.Event()

    def before(self, key: StreamKey, number: int) -> bool:
        """Are frames of ``key`` fed before ``number`` still unlogged? (Cheap: the first one tells.)"""
        numbers = self._unlogged.get(key)
        return numbers is not None and next(iter(numbers)) < number

    def ahead(self, key: StreamKey, number: int, mine: set[str]) -> bool:
        """Are frames of ``key`` fed before ``number`` still unlogged, other than copies of ``mine``,
        copies of frames logged already, and frames whose writer is stuck?"""
        recent = self._recent.get(key, {})
        stuck_before = self._clock() - self._stuck_s if self._stuck_s else 0.0
        for fed, (digest, to) in self._unlogged.get(key, {}).items():  # in number order
            if fed >= number:
                return False
            if digest in mine or digest in recent:
                continue
            if to is not None and 0.0 < to.sending_since <= stuck_before:
                continue  # its writer has been waiting for a client that does not read
            return True
        return False

    async def turn(self, key: StreamKey, number: int, mine: set[str], at_most: float) -> bool:
        """Wait until ``ahead`` is false: False if ``at_most`` passed first."""
        if not self.ahead(key, number, mine):
            return True
        self._waiters += 1
        try:
            async with asyncio.timeout(at_most):
                while self.ahead(key, number, mine):
                    await self._changed.wait()
        except TimeoutError:
            return False
        finally:
            self._waiters -= 1
        return True
