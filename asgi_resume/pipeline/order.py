"""The order this process was fed each stream's frames in, across its connections.

Owns: a number for every stream frame a connection of this process is fed, per stream key, and
the rule that a connection logs frames only after the frames of that key that another
connection here was fed before them, and that it does not have itself, were logged. A tab that
joins mid-stream, or that is not sent every frame of the stream, may get a frame while another
tab's writer still has frames emitted before it: logging it first would put the log out of
emit order. Copies it has too never make it wait (the tabs of a room get the same frames), nor
copies of frames already logged: a tab whose writer is busy (claiming a recovered session, say)
is fed copies of frames the other tabs logged already, and a tab that waited for those would
wait for a writer that may be waiting for it. (A copy the log missed is not logged: the others
are waited for, so that the epoch begun after the miss starts with the oldest of them, in emit
order.) The wait is for frames already fed here, on their
way to the log: a loop turn or a log round trip, bounded by ``ASGI_RESUME_WRITE_TIMEOUT``; never
for frames that may not come, nor for frames of a connection whose writer has been handing a
batch to its transport for longer than that bound: it is stuck behind a client that does not
read, not on its way to the log. (How long ago a frame was fed says nothing of the kind: on a
loaded machine a frame on its way to the log may take that long, and a tab that skipped it put
the log out of emit order.) Frames a connection went on without (its bound passed, or their
writer stuck) are marked passed over: logged after its frames, they would follow frames emitted
after them in one epoch, and a client that applies frames by seq would drop what it gets next;
their own writer sends them unstamped instead, and the stream starts anew.

Copies are told apart from repeats by the frame object where there is one: python-socketio
encodes an emit to a room once, and its websocket writers hand each recipient that same string,
so on websockets two frames are copies of one emit exactly when they are the same object (a
token repeated a frame later is another object). A copy fed before its frame was logged is told
by its object, however much was logged since. Where the transport rebuilt the frame (long-
polling payloads), or for a copy fed after its frame was logged whose object is no longer kept
(``OBJECT_BYTES_KEPT``), content digests decide: a frame whose content repeats one logged a
moment ago (the same token twice) then counts as a copy, so at worst it reaches the log after a
frame emitted after it.

It also says which seq a connection's copy of a frame logged lately got (``placed``), so that
a tab's first frame of a stream is placed in the log at its own emit rather than at an earlier
frame with the same content. Must not touch: the log, frames' content, I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from asgi_resume.log import StreamKey

RECENT_KEPT = 64  # digests of logged frames remembered per stream key (copies come within a few frames)
KEYS_KEPT = 4096  # stream keys whose logged digests are remembered (the oldest forgotten first)
OBJECT_BYTES_KEPT = 4 << 20  # logged frame objects kept to tell copies from repeats, in characters

#: a batch's frames of one stream key: content digest -> their objects (None: not comparable)
Mine = Mapping[str, Sequence[str | None]]


class Numbered(Protocol):
    """A frame with the number ``fed`` gave it."""

    @property
    def order(self) -> int: ...


class _Logged:
    """A frame of a stream logged lately: its object (None: not comparable or not kept), and what
    the log numbered it (seq 0: not numbered)."""

    __slots__ = ("epoch", "frame", "seq")

    def __init__(self, frame: str | None, epoch: str, seq: int) -> None:
        self.frame, self.epoch, self.seq = frame, epoch, seq


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
        #: key -> number fed, not logged -> (digest, the connection it was fed to, its object or None)
        self._unlogged: dict[StreamKey, dict[int, tuple[str, Feeder | None, str | None]]] = {}
        #: key -> id of a frame object none of whose copies was logged since it was last fed ->
        #: the number of its first copy then (still unlogged: it keeps the object, and so the id,
        #: alive), in number order. ``ahead`` reads a batch's wait off it rather than off every
        #: copy: a room's tabs each have a batch of the same emits.
        self._emits: dict[StreamKey, dict[int, int]] = {}
        #: key -> how many of ``_unlogged[key]`` were fed without their object (long-polling)
        self._anonymous: dict[StreamKey, int] = {}
        #: key -> digest -> the last frame with that content logged lately (oldest first)
        self._recent: dict[StreamKey, dict[str, _Logged]] = {}
        self._object_chars = 0  # the length of the frame objects ``_recent`` keeps
        #: key -> numbers of frames ``ahead`` let others go before because their writer was stuck
        self._passed: dict[StreamKey, set[int]] = {}
        self._changed = asyncio.Event()
        self._waiters = 0

    def fed(self, key: StreamKey, digest: str, to: Feeder | None = None, frame: str | None = None) -> int:
        """A frame of ``key`` with content ``digest`` was fed to connection ``to``: its number
        (numbers only grow). ``frame``: the object the app handed over, when its copies are that
        same object (websockets); None when the transport rebuilt it."""
        number = self._next = self._next + 1
        numbers = self._unlogged.get(key)
        if numbers is None:
            numbers = self._unlogged[key] = {}
            emits = self._emits[key] = {}
        else:
            emits = self._emits[key]
        numbers[number] = (digest, to, frame)
        if frame is None:
            self._anonymous[key] = self._anonymous.get(key, 0) + 1
        elif id(frame) not in emits:
            emits[id(frame)] = number
        return number

    @property
    def fed_count(self) -> int:
        """How many frames were fed so far: every frame fed from now on gets a higher number."""
        return self._next

    def logged(self, key: StreamKey, number: int, epoch: str = "", seq: int = 0) -> None:
        """The frame numbered ``number`` was logged as ``seq`` of ``epoch`` (0: not numbered), or
        will never be (idempotent)."""
        numbers = self._unlogged.get(key)
        if numbers is None:
            return
        fed = numbers.pop(number, None)
        if fed is None:
            return
        if self._passed:
            self._let_through(key, number)
        digest, _, frame = fed
        if not numbers:
            del self._unlogged[key], self._emits[key]
            self._anonymous.pop(key, None)
        elif frame is not None:
            if seq > 0:  # its other copies are copies of a frame logged
                self._emits[key].pop(id(frame), None)
            # (one the log missed leaves its entry: the others are on their way. The number it
            # keeps may be that of a copy logged since, and the id that of an object gone once all
            # were: either only makes ``ahead`` look at the copies themselves, until no frame of
            # the key is left unlogged)
        else:
            left = self._anonymous[key] - 1
            if left:
                self._anonymous[key] = left
            else:
                del self._anonymous[key]
        self._remember(key, digest, frame, epoch, seq)
        if self._waiters:
            self._changed.set()
            self._changed = asyncio.Event()

    def _remember(self, key: StreamKey, digest: str, frame: str | None, epoch: str, seq: int) -> None:
        """Keep the frame logged lately with this content (what ``ahead`` and ``placed`` read)."""
        recent = self._recent.get(key)
        if recent is None:
            if len(self._recent) >= KEYS_KEPT:
                self._drop(self._recent.pop(next(iter(self._recent))).values())
            recent = self._recent[key] = {}
        else:
            kept = recent.get(digest)
            if kept is not None:
                if kept.frame is frame and frame is not None and kept.seq == seq and kept.epoch == epoch:
                    return  # another copy of it, logged alike (a room's tabs): nothing new
                if not seq and kept.seq and (kept.frame is None or kept.frame is frame):
                    return  # a copy the log missed does not hide that another copy of it was logged
        if frame is not None:
            if self._object_chars + len(frame) > OBJECT_BYTES_KEPT:
                frame = None  # (copies of it are told by content, as on long-polling)
            else:
                self._object_chars += len(frame)
        replaced = recent.pop(digest, None)
        if replaced is not None and replaced.frame is not None:
            self._object_chars -= len(replaced.frame)
        recent[digest] = _Logged(frame, epoch, seq)
        if len(recent) > RECENT_KEPT:
            oldest = recent.pop(next(iter(recent)))
            if oldest.frame is not None:
                self._object_chars -= len(oldest.frame)

    def _drop(self, forgotten: Iterable[_Logged]) -> None:
        for logged in forgotten:
            if logged.frame is not None:
                self._object_chars -= len(logged.frame)

    def before(self, key: StreamKey, number: int) -> bool:
        """Are frames of ``key`` fed before ``number`` still unlogged? (Cheap: the first one tells.)"""
        numbers = self._unlogged.get(key)
        return numbers is not None and next(iter(numbers)) < number

    def ahead(self, key: StreamKey, number: int, mine: Mine) -> bool:
        """Are frames of ``key`` fed before ``number`` still unlogged, other than copies of ``mine``,
        copies of frames logged already, and frames whose writer is stuck?"""
        numbers = self._unlogged.get(key)
        if numbers is None:
            return False
        if key not in self._anonymous and not self._others_before(self._emits[key], number, mine):
            return False  # (each frame before is one of mine or a copy of one logged: the usual case)
        return next(self._holding(key, number, mine), None) is not None

    def _holding(self, key: StreamKey, number: int, mine: Mine) -> Iterator[int]:
        """The numbers of the frames ``ahead`` waits for, in order."""
        numbers, emits = self._unlogged[key], self._emits[key]
        recent = self._recent.get(key, {})
        stuck_before = self._clock() - self._stuck_s if self._stuck_s else 0.0
        for fed, (digest, to, frame) in numbers.items():  # in number order
            if fed >= number:
                return
            if frame is not None and emits.get(id(frame), fed + 1) > fed:
                continue  # a copy of a frame logged since this one was fed
            same = mine.get(digest)
            if same is not None and (frame is None or any(m is None or m is frame for m in same)):
                continue  # a copy of one of mine (or, not comparable, the same content)
            logged = recent.get(digest)
            if logged is not None and logged.seq and (frame is None or logged.frame is None or logged.frame is frame):
                continue  # a copy of a frame logged already (not one the log missed: this copy may be logged)
            if to is not None and 0.0 < to.sending_since <= stuck_before:
                self._passed.setdefault(key, set()).add(fed)  # (see passed_over)
                continue  # its writer has been waiting for a client that does not read
            yield fed

    def passed_over(self, key: StreamKey, frames: Iterable[Numbered]) -> bool:
        """Did a connection stop waiting for one of ``frames`` (of ``key``) to be logged, and log
        frames fed after it, its writer stuck or its wait over? Logged now, it would follow them."""
        passed = self._passed.get(key) if self._passed else None
        return passed is not None and any(frame.order in passed for frame in frames)

    def _let_through(self, key: StreamKey, number: int) -> None:
        passed = self._passed.get(key)
        if passed is not None:
            passed.discard(number)
            if not passed:
                del self._passed[key]

    @staticmethod
    def _others_before(emits: dict[int, int], number: int, mine: Mine) -> bool:
        """Was an emit none of whose copies is logged fed before ``number``, other than ``mine``'s?"""
        ids = {id(m) for same in mine.values() for m in same}
        return any(emits[ident] < number for ident in emits.keys() - ids)

    async def turn(self, key: StreamKey, number: int, mine: Mine, at_most: float) -> bool:
        """Wait until ``ahead`` is false. False if ``at_most`` passed first: the frames waited for
        are then passed over (see :meth:`passed_over`)."""
        if await self._until(lambda: not self.ahead(key, number, mine), at_most):
            return True
        if key in self._unlogged:
            self._passed.setdefault(key, set()).update(self._holding(key, number, mine))
        return False

    def copy_on_its_way(self, key: StreamKey, frame: str, number: int) -> int | None:
        """The number of a copy of ``frame`` (the same object) fed here before the one numbered
        ``number`` and not logged yet, if there is one. (Only earlier ones: two tabs that each
        waited for the other's copy would both wait out their bound.)"""
        for fed, (_, _, other) in self._unlogged.get(key, {}).items():
            if fed >= number:
                return None
            if other is frame:
                return fed
        return None

    async def until_logged(self, key: StreamKey, number: int, at_most: float) -> bool:
        """Wait until the frame numbered ``number`` is logged: False if ``at_most`` passed first."""
        return await self._until(lambda: number not in self._unlogged.get(key, {}), at_most)

    def placed(self, key: StreamKey, digest: str, frame: str) -> tuple[str, int] | None:
        """The epoch and seq that a copy of ``frame`` (the same object) was logged with lately."""
        logged = self._recent.get(key, {}).get(digest)
        if logged is None or logged.frame is not frame or logged.seq <= 0:
            return None
        return logged.epoch, logged.seq

    async def _until(self, done: Callable[[], bool], at_most: float) -> bool:
        if done():
            return True
        self._waiters += 1
        try:
            async with asyncio.timeout(at_most):
                while not done():
                    await self._changed.wait()
        except TimeoutError:
            return False
        finally:
            self._waiters -= 1
        return True
