"""What this process learned from the log lately: the seqs its live connections' frames got.

Owns: per stream key, the entries (seq and content digest) that appends made by this process's
live connections logged or matched in the last ``COPY_WINDOW_MS``, in one epoch. A copy of one
of them sent to another tab of the principal here, which has followed the stream up to the entry
before it, gets the seq the log would give it (the entry after its cursor holds the same
content: the log's own match rule) without a log call. Must not touch: connections, the log's
storage.

Only the keys whose frames were seen reaching two connections of a principal here are learned
(one tab pays nothing for it), and only live connections' results are kept: a live connection's
append tells the log that the key was taken over (what ends another tab's hold), so a copy
stamped from it costs the holds nothing.
A key whose frames the log missed here is forgotten until the log numbers its frames again.
"""

from __future__ import annotations

from collections.abc import Iterable

from asgi_resume.log.base import COPY_WINDOW_MS, Entry, StreamKey

MAX_KEYS = 1024  # streams kept (the oldest added goes first)
MAX_ENTRIES = 32  # entries kept per stream (up to twice as many between trims)


class _Known:
    __slots__ = ("at_ms", "base", "digests", "epoch")

    def __init__(self, epoch: str, base: int, digests: list[str], at_ms: int) -> None:
        self.epoch = epoch
        self.base = base  # the seq of digests[0]: the entries kept are contiguous
        self.digests = digests
        self.at_ms = at_ms  # when the newest of them was logged, on the log's clock


class RecentEntries:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._keys: dict[StreamKey, _Known] = {}
        self._max_entries = max(1, max_entries)
        #: keys whose frames reach several live connections here (oldest first): only their entries are
        #: worth learning (read it, do not change it: :meth:`copied`)
        self.copies_seen: dict[StreamKey, None] = {}
        self._floors: dict[StreamKey, int] = {}  # key -> a tab was held then: learn only appends after it

    def copied(self, key: StreamKey) -> None:
        """A copy of a frame of ``key`` reached a second connection of its principal here."""
        seen = self.copies_seen
        if key not in seen:
            if len(seen) >= MAX_KEYS:
                del seen[next(iter(seen))]
            seen[key] = None

    def learned(self, key: StreamKey, epoch: str, seqs: list[int], entries: list[Entry], now_ms: int) -> None:
        """A live connection's append: its ``entries`` got ``seqs`` in ``epoch``."""
        floors = self._floors
        if floors and now_ms <= floors.get(key, -1):
            return  # its log call may have come before the hold began: it took nothing over from it
        first = seqs[0]
        if first <= 0 or seqs[-1] - first != len(seqs) - 1 or (len(seqs) > 2 and min(seqs) <= 0):
            return  # not contiguous (passed over, out of order): remember nothing rather than something wrong
        known = self._keys.get(key)
        if known is not None and known.epoch == epoch:
            end = known.base + len(known.digests)
            if first < end:
                return  # copies of entries kept already: nothing new
            if first == end:  # what follows the entries kept (the common case)
                known.digests += [entry.digest for entry in entries]
                known.at_ms = now_ms
                if len(known.digests) > 2 * self._max_entries:
                    drop = len(known.digests) - self._max_entries
                    del known.digests[:drop]
                    known.base += drop
                return
        if known is None and len(self._keys) >= MAX_KEYS:
            del self._keys[next(iter(self._keys))]  # (the oldest added: no reordering on the hot path)
        kept = self._max_entries
        digests = [entry.digest for entry in entries[-kept:]]
        self._keys[key] = _Known(epoch, first + max(0, len(entries) - kept), digests, now_ms)

    def after(self, key: StreamKey, epoch: str, seq: int) -> bool:
        """Are entries of ``epoch`` after ``seq`` known? (Cheap: no digest needed.)"""
        known = self._keys.get(key)
        return known is not None and known.epoch == epoch and known.base + len(known.digests) - 1 > seq

    def matched(self, key: StreamKey, epoch: str, after: int, digests: list[str], now_ms: int) -> int:
        """How many of ``digests`` are the entries right after seq ``after`` of ``epoch`` (a prefix),
        logged within the copy window?"""
        known = self._keys.get(key)
        if known is None or known.epoch != epoch or now_ms - known.at_ms > COPY_WINDOW_MS:
            return 0
        start = after + 1 - known.base
        if start < 0:
            return 0
        kept = known.digests[start : start + len(digests)]
        if kept == digests:
            return len(digests)
        count = 0
        for entry, digest in zip(kept, digests, strict=False):
            if entry != digest:
                break
            count += 1
        return count

    def hold_began(self, keys: Iterable[StreamKey], now_ms: int) -> None:
        """A connection with streams ``keys`` in flight was held: what was learned of them before
        is forgotten, and so is what appends made before ``now_ms`` bring. A hold ends when another
        connection uses its streams after it began; copies stamped from an earlier call would hide that.
        """
        floors = self._floors
        for key in keys:
            self._keys.pop(key, None)
            floors.pop(key, None)
            if len(floors) >= MAX_KEYS:
                del floors[next(iter(floors))]
            floors[key] = now_ms

    def forget(self, key: StreamKey) -> None:
        """The log missed frames of ``key`` here: its next frames go to the log."""
        self._keys.pop(key, None)
