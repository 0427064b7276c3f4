"""In-process stream log: the default when no Redis is configured.

Same rules as the Redis log (see ``lua/append.lua``), kept in dicts and deques; its recovery
sessions are :mod:`~asgi_resume.log.memory_sessions`'. It serves one process only: workers of a
multi-process server each have their own.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asgi_resume.log.base import (
    BEAT_KEPT_MS,
    COPY_WINDOW_MS,
    NOT_FOUND,
    SCAN_AHEAD,
    AppendRequest,
    AppendResult,
    Claim,
    LogLimits,
    LogUnavailable,
    Note,
    Payload,
    ReplayResult,
    SessionAppend,
    SessionAppendResult,
    SessionReplay,
    StreamKey,
    payload_size,
)
from asgi_resume.log.memory_sessions import MemorySessions
from asgi_resume.log.names import new_epoch

_SWEEP_EVERY_MS = 1000
_VICTIM_SCAN = 64  # streams looked at, the least lately appended to first, for one to evict
_CLOSED = "the log is closed"


@dataclass(slots=True)
class _Record:
    seq: int
    digest: str
    ts: int
    payload: Payload


@dataclass(slots=True)
class _Stream:
    epoch: str
    maxlen: int
    last: int = 0
    done: bool = False
    expires_at: int = 0
    orphaned: bool = False
    after_break: bool = False  # this epoch replaced one whose history broke: the stream began before it
    by: str = ""  # the connection that touched it last (appended, matched, replayed), and when
    at: int = 0
    by2: str = ""  # the one before that was another connection, and when
    at2: int = 0
    records: deque[_Record] = field(init=False)

    def __post_init__(self) -> None:
        self.records = deque(maxlen=self.maxlen)

    def at_seq(self, seq: int) -> _Record | None:
        if not self.records:
            return None
        index = seq - self.records[0].seq
        return self.records[index] if 0 <= index < len(self.records) else None

    def find_after(self, seq: int, digest: str) -> int | None:
        for candidate in range(seq + 1, min(seq + 1 + SCAN_AHEAD, self.last + 1)):
            record = self.at_seq(candidate)
            if record is not None and record.digest == digest:
                return candidate
        return None

    def find_since(self, since_ms: int, lookback_ms: int, digest: str) -> int | None:
        """The earliest entry with ``digest`` since ``since_ms``; else the latest in the ``lookback_ms`` before."""
        found = before = None
        for record in reversed(self.records):
            if record.digest == digest:
                if record.ts >= since_ms:
                    found = record.seq
                elif record.ts >= since_ms - lookback_ms:
                    before = before or record.seq
            if record.ts < since_ms - lookback_ms:
                break
        return found or before

    def begun_after(self, received_ms: int) -> bool:
        """Did this epoch's first entry kept come no earlier than a frame received at ``received_ms``?"""
        return bool(self.records) and received_ms <= self.records[0].ts

    def find_among(self, seqs: set[int], digest: str, received_ms: int) -> int | None:
        """The first of ``seqs`` holding a copy of this frame: same digest, received about when it was."""
        for seq in sorted(seqs):
            record = self.at_seq(seq)
            if record is not None and record.digest == digest and abs(record.ts - received_ms) <= COPY_WINDOW_MS:
                return seq
        return None

    def touch(self, connection: str, now: int, *, held: bool = False) -> int:
        """``connection`` used this key now (unless it is held); when another one last did (0: never)."""
        if held:  # it takes nothing over: only report the last other connection
            if not self.by:
                return 0
            if self.by != connection:
                return self.at
            return self.at2 if self.by2 else 0
        if self.by != connection:
            self.by2, self.at2 = self.by, self.at
        self.by, self.at = connection, now
        return self.at2 if self.by2 else 0


class MemoryLog:
    """A :class:`~asgi_resume.log.StreamLog` in this process's memory."""

    synchronous = True
    shared = False  # one process's: its connections alone see it

    def __init__(self, limits: LogLimits | None = None, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits or LogLimits()
        self.clock = clock  # seconds since the epoch
        self._closed = False  # (calls fail once it is closed, as the Redis log's do)
        self._streams: OrderedDict[StreamKey, _Stream] = OrderedDict()  # least lately appended to first
        self._by_principal: dict[str, OrderedDict[StreamKey, None]] = {}  # the same, per principal
        #: how many streams a principal has -> the principals with that many (the most: ``_most``)
        self._principals_with: dict[int, dict[str, None]] = {}
        self._most = 0
        self._sessions = MemorySessions(self.limits, self.now_ms)  # recovery sessions
        self._beats: dict[str, int] = {}  # process -> its last beat (only this one's, in one process)
        self._next_sweep = 0

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _get(self, key: StreamKey, now: int) -> _Stream | None:
        state = self._streams.get(key)
        if state is not None and state.expires_at <= now:
            self._drop(key)
            return None
        return state

    def _add(self, key: StreamKey, state: _Stream) -> None:
        """Keep a new stream key: bounded per process and per principal, whatever ids the app is made
        to send. Past a bound, the stream appended to least lately goes, of the principal itself,
        then of a principal with the most streams: many principals' many ids evict their own
        streams, not those of a user with a few (found by attack: ten principals' 1,000 ids each
        evicted another user's live stream, the oldest of all)."""
        if key in self._streams:
            self._drop(key)
        own = self._by_principal.get(key.principal)
        if own is None:
            own = self._by_principal[key.principal] = OrderedDict()
        while len(own) >= max(1, self.limits.max_streams // 10):
            self._drop(next(iter(own)))
        while len(self._streams) >= self.limits.max_streams:
            self._drop(self._victim())
        self._streams[key] = state
        own[key] = None
        self._counted(key.principal, len(own) - 1, len(own))

    def _victim(self) -> StreamKey:
        """The stream to evict: of the least lately appended to, the first of a principal with the
        most streams (one of them looked at, at worst, past the first ``_VICTIM_SCAN``)."""
        most, by_principal = self._most, self._by_principal
        for key in itertools.islice(self._streams, _VICTIM_SCAN):
            if len(by_principal[key.principal]) == most:
                return key
        return next(iter(by_principal[next(iter(self._principals_with[most]))]))

    def _counted(self, principal: str, was: int, now: int) -> None:
        """``principal`` had ``was`` streams and has ``now`` (one more or one less)."""
        with_was = self._principals_with.get(was)
        if with_was is not None:
            del with_was[principal]
            if not with_was:
                del self._principals_with[was]
                if self._most == was and now < was:
                    self._most = now
        if now:
            self._principals_with.setdefault(now, {})[principal] = None
            self._most = max(self._most, now)

    def _touched(self, key: StreamKey) -> None:
        """``key`` was appended to: the last to evict, of its principal's and of all."""
        self._streams.move_to_end(key)
        self._by_principal[key.principal].move_to_end(key)

    def _drop(self, key: StreamKey) -> None:
        if self._streams.pop(key, None) is None:
            return
        own = self._by_principal[key.principal]
        del own[key]
        self._counted(key.principal, len(own) + 1, len(own))
        if not own:
            del self._by_principal[key.principal]

    def _sweep(self, now: int) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_MS
        for name in [name for name, state in self._streams.items() if state.expires_at <= now]:
            self._drop(name)
        self._sessions.sweep(now)

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        if self._closed:
            raise LogUnavailable(_CLOSED)
        now = self.now_ms()
        self._sweep(now)
        return [self._append(request, now) for request in requests]

    def _append(self, request: AppendRequest, now: int) -> AppendResult:
        limits = self.limits
        state = self._get(request.key, now)
        continuous = state is not None and request.cursor_epoch == state.epoch
        named = request.reset_epoch
        broken = request.reset and (not named or state is None or state.epoch in named.split(","))
        if state is None or broken or (state.orphaned and not continuous):
            # the stream began before this epoch if one is replaced, or if the caller knew an
            # epoch of it that is gone (evicted, expired)
            # (a reset, whatever epoch it names: the log missed frames of the stream, its first ones maybe)
            after_break = state is not None or bool(request.cursor_epoch or request.reset)
            state = _Stream(request.fresh_epoch or new_epoch(), limits.maxlen, after_break=after_break)
            self._add(request.key, state)
        elif request.cursor_epoch and request.cursor_epoch != state.epoch:
            # it followed an epoch of this stream that is gone (evicted, expired) while another
            # made this one first: the stream began before it here too
            state.after_break = True
        state.orphaned = False
        was_done = state.done
        cursor = request.cursor_seq if request.cursor_epoch == state.epoch else None
        # its history broke, or its cursor is in an epoch before this one (a tab behind): what it
        # still has from before this epoch is no part of it
        behind = request.rejoining or (cursor is None and bool(request.cursor_epoch))
        skipped = set(request.skipped) if cursor is not None and request.skipped else set()
        seqs = []
        for entry in request.entries:
            seq = None
            if cursor is None:
                seq = state.find_since(request.since_ms, request.lookback_ms, entry.digest)
            elif cursor < state.last:
                record = state.at_seq(cursor + 1)
                if record is not None and record.digest == entry.digest:
                    seq = cursor + 1
                else:
                    seq = state.find_after(cursor + 1, entry.digest)
            if seq is None and skipped:
                out_of_order = state.find_among(skipped, entry.digest, entry.received_ms)
                if out_of_order is not None:
                    skipped.discard(out_of_order)
                    seqs.append(-out_of_order)
                    continue
            if seq is None and cursor is None and behind and state.begun_after(entry.received_ms):
                seqs.append(0)  # from before the epoch began: no part of it (AppendRequest.rejoining)
                continue
            if seq is None:
                state.last += 1
                seq = state.last
                state.records.append(_Record(seq, entry.digest, entry.received_ms, entry.payload))
            if cursor is not None and seq > cursor + 1:  # what it steps over is passed over for its next frames too
                skipped.update(range(max(cursor + 1, seq - SCAN_AHEAD), seq))
            cursor = seq
            state.done = state.done or entry.done
            seqs.append(seq)
        if request.entries:
            self._touched(request.key)
        # (when the app sent its last frame, not now: what a hold compares with when it began)
        entries = request.entries
        others = state.touch(request.connection, entries[-1].received_ms if entries else now, held=request.held)
        if state.done and not was_done:
            state.expires_at = now + limits.done_ttl_ms
        elif not state.done:
            state.expires_at = now + limits.ttl_ms
        return AppendResult(state.epoch, seqs, others)

    async def orphan(self, keys: Sequence[StreamKey], connection: str) -> None:
        self._open()
        now = self.now_ms()
        for key in keys:
            state = self._get(key, now)
            if state is not None and not state.done:
                state.orphaned = True

    async def replay(
        self,
        key: StreamKey,
        after_seq: int,
        epoch: str | None,
        connection: str,
        limit: int | None = None,
        max_bytes: int | None = None,
    ) -> ReplayResult:
        self._open()
        now = self.now_ms()
        state = self._get(key, now)
        if state is None:
            return NOT_FOUND
        state.touch(connection, now)
        gap = False
        if (epoch and epoch != state.epoch) or after_seq > state.last:
            after_seq, gap = 0, True  # the client's history is not this log's
        oldest = state.records[0].seq if state.records else state.last + 1
        if after_seq + 1 < oldest and after_seq < state.last:
            gap = True
        if state.orphaned and not state.done:  # left in flight and logged by nobody since: its tail may be missing
            gap = True
        if state.after_break and not epoch and after_seq == 0:  # "from the start": its start is not here
            gap = True
        start = max(0, after_seq + 1 - oldest)  # seqs are contiguous in the deque
        stop = None if limit is None else start + limit
        records = itertools.islice(state.records, start, stop)
        if max_bytes is None:
            frames = [(r.seq, r.payload) for r in records]
        else:
            frames, size = [], 0
            for record in records:
                frames.append((record.seq, record.payload))
                size += payload_size(record.payload)
                if size >= max_bytes:
                    break
        return ReplayResult("ok", state.epoch, state.last, oldest, state.done, gap, frames)

    # -- recovery sessions (memory_sessions.py; lua/session_*.lua for the same rules on Redis) ---

    async def session_append(self, requests: Sequence[SessionAppend]) -> list[SessionAppendResult]:
        self._open()
        now = self.now_ms()
        self._sweep(now)
        return self._sessions.append(requests, now)

    async def session_claim(
        self, pid: str, principal: str, namespace: str, gen: str, claimer: str, new_gen: str, window_ms: int
    ) -> Claim:
        self._open()
        return self._sessions.claim(pid, principal, namespace, gen, claimer, new_gen, window_ms)

    async def session_read(
        self, pid: str, gen: str, after: int, force: bool, limit: int = 0, max_bytes: int = 0, until: int = 0
    ) -> SessionReplay:
        self._open()
        return self._sessions.read(pid, gen, after, force, limit, max_bytes, until)

    async def session_note(self, pid: str, action: Note, gen: str, owner: str) -> tuple[str, str]:
        self._open()
        return self._sessions.note(pid, action, gen, owner)

    async def beat(self, process: str) -> None:
        self._open()
        self._beats[process] = self.now_ms()

    async def last_beat(self, process: str) -> int | None:
        self._open()
        at = self._beats.get(process)
        return at if at is not None and self.now_ms() - at < BEAT_KEPT_MS else None

    async def prepare(self) -> None:
        self._open()

    def _open(self) -> None:
        if self._closed:
            raise LogUnavailable(_CLOSED)

    async def aclose(self) -> None:
        self._closed = True
        self._streams.clear()
        self._by_principal.clear()
        self._principals_with.clear()
        self._most = 0
        self._sessions.clear()
