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
for frames that may not come, nor for frames fed longer ago than that bound: their writer is
stuck (its client does not read, so the transport waits for it), not on its way to the log.

Frames are told apart by content digest: a frame whose content repeats one logged a moment ago
(the same token twice) counts as a copy, so at worst it reaches the log after a frame emitted
after it. Must not touch: the log, frames' content, I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from asgi_resume.log import StreamKey

RECENT_KEPT = 64  # digests of logged frames remembered per stream key (copies come within a few frames)
KEYS_KEPT = 4096  # stream keys whose logged digests are remembered (the oldest forgotten first)


class FeedOrder:
    """``clock`` (ms) and ``stale_ms``: a frame fed ``stale_ms`` ago or more and still unlogged is
    waited for no more (without a clock, it always is)."""

    def __init__(self, clock: Callable[[], int] | None = None, stale_ms: int = 0) -> None:
        self._clock, self._stale_ms = clock, stale_ms
        self._next = 0
        #: key -> number fed, not logged -> (digest, when it was fed, in the clock's ms)
        self._unlogged: dict[StreamKey, dict[int, tuple[str, int]]] = {}
        self._recent: dict[StreamKey, dict[str, None]] = {}  # key -> digests logged lately, oldest first
        self._changed = asyncio.Event()
        self._waiters = 0

    def fed(self, key: StreamKey, digest: str, at_ms: int = 0) -> int:
        """A frame of ``key`` with content ``digest`` was fed at ``at_ms`` (the clock's): its
        number (numbers only grow)."""
        number = self._next = self._next + 1
        numbers = self._unlogged.get(key)
        if numbers is None:
            self._unlogged[key] = {number: (digest, at_ms)}
        else:
            numbers[number] = (digest, at_ms)
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
        stuck_before = self._clock() - self._stale_ms if self._clock is not None else None
        for fed, (digest, at_ms) in self._unlogged.get(key, {}).items():  # in number order
            if fed >= number:
                return False
            if stuck_before is not None and at_ms <= stuck_before:
                continue  # fed long ago and not logged yet: its writer waits for a slow client
            if digest not in mine and digest not in recent:
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
