"""In-process stream log: the default when no Redis is configured.

Same rules as the Redis log (see ``lua/append.lua``), kept in dicts and deques. It
serves one process only: workers of a multi-process server each have their own.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asgi_resume.log.base import (
    CLAIM_SLACK_MS,
    COPY_WINDOW_MS,
    NOT_FOUND,
    AppendRequest,
    AppendResult,
    Claim,
    LogLimits,
    Note,
    Payload,
    ReplayResult,
    SessionAppend,
    SessionAppendResult,
    SessionReplay,
    StreamKey,
    new_epoch,
)

_SCAN_AHEAD = 64  # how far past a mismatch a connection looks for its frame
_SWEEP_EVERY_MS = 1000


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
        for candidate in range(seq + 1, min(seq + 1 + _SCAN_AHEAD, self.last + 1)):
            record = self.at_seq(candidate)
            if record is not None and record.digest == digest:
                return candidate
        return None

    def find_since(self, since_ms: int, digest: str) -> int | None:
        found = None
        for record in reversed(self.records):
            if record.ts < since_ms:
                break
            if record.digest == digest:
                found = record.seq
        return found

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


@dataclass(slots=True)
class _Session:
    """A recovery session: who owns it, and its frames per generation."""

    gen: str
    owner: str
    principal: str
    expires_at: int = 0
    cutoff: int = 0
    flushed: int = 0
    last_at: int = 0
    left_at: int | None = None
    closed: bool = False
    fetched: bool = False  # the owner's frames reach the log when its client fetches them
    broken: bool = False  # an event of the current generation is in no log
    prev_gen: str = ""
    prev_owner: str = ""
    prev_flushed: int = 0
    prev_closed: bool = False
    prev_fetched: bool = False
    prev_broken: bool = False
    logs: dict[str, deque[tuple[int, int, Payload]]] = field(default_factory=dict)  # gen -> (n, at, payload)
    counters: dict[str, int] = field(default_factory=dict)


class MemoryLog:
    """A :class:`~asgi_resume.log.StreamLog` in this process's memory."""

    synchronous = True

    def __init__(self, limits: LogLimits | None = None, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits or LogLimits()
        self.clock = clock  # seconds since the epoch
        self._streams: OrderedDict[StreamKey, _Stream] = OrderedDict()  # oldest first
        self._by_principal: dict[str, OrderedDict[StreamKey, None]] = {}  # the same, per principal
        self._sessions: dict[str, _Session] = {}
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
        to send (one user's many ids evict that user's own oldest streams first)."""
        if key in self._streams:
            self._drop(key)
        own = self._by_principal.setdefault(key.principal, OrderedDict())
        while len(own) >= max(1, self.limits.max_streams // 10):
            self._drop(next(iter(own)))
        while len(self._streams) >= self.limits.max_streams:
            self._drop(next(iter(self._streams)))
        self._streams[key] = state
        own[key] = None

    def _drop(self, key: StreamKey) -> None:
        self._streams.pop(key, None)
        own = self._by_principal.get(key.principal)
        if own is not None:
            own.pop(key, None)
            if not own:
                del self._by_principal[key.principal]

    def _sweep(self, now: int) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_MS
        for name in [name for name, state in self._streams.items() if state.expires_at <= now]:
            self._drop(name)
        for pid in [pid for pid, session in self._sessions.items() if session.expires_at <= now]:
            del self._sessions[pid]

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        now = self.now_ms()
        self._sweep(now)
        return [self._append(request, now) for request in requests]

    def _append(self, request: AppendRequest, now: int) -> AppendResult:
        limits = self.limits
        state = self._get(request.key, now)
        continuous = state is not None and request.cursor_epoch == state.epoch
        broken = request.reset and (not request.reset_epoch or state is None or state.epoch == request.reset_epoch)
        if state is None or broken or (state.orphaned and not continuous):
            state = _Stream(new_epoch(), limits.maxlen)
            self._add(request.key, state)
        state.orphaned = False
        was_done = state.done
        cursor = request.cursor_seq if request.cursor_epoch == state.epoch else None
        skipped = set(request.skipped) if cursor is not None else set()
        seqs = []
        for entry in request.entries:
            seq = None
            if cursor is None:
                seq = state.find_since(request.since_ms, entry.digest)
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
            if seq is None:
                state.last += 1
                seq = state.last
                state.records.append(_Record(seq, entry.digest, entry.received_ms, entry.payload))
            if cursor is not None:  # what it steps over now is passed over for its next frames too
                skipped.update(range(max(cursor + 1, seq - _SCAN_AHEAD), seq))
            cursor = seq
            state.done = state.done or entry.done
            seqs.append(seq)
        others = state.touch(request.connection, now, held=request.held)
        if state.done and not was_done:
            state.expires_at = now + limits.done_ttl_ms
        elif not state.done:
            state.expires_at = now + limits.ttl_ms
        return AppendResult(state.epoch, seqs, others)

    async def release(self, keys: Sequence[StreamKey], connection: str) -> None:
        now = self.now_ms()
        for key in keys:
            state = self._get(key, now)
            if state is not None and not state.done:
                state.orphaned = True

    async def replay(
        self, key: StreamKey, after_seq: int, epoch: str | None, connection: str, limit: int | None = None
    ) -> ReplayResult:
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
        start = max(0, after_seq + 1 - oldest)  # seqs are contiguous in the deque
        stop = None if limit is None else start + limit
        frames = [(r.seq, r.payload) for r in itertools.islice(state.records, start, stop)]
        return ReplayResult("ok", state.epoch, state.last, oldest, state.done, gap, frames)

    # -- recovery sessions (see lua/session_*.lua for the same rules on Redis) --------------------

    def _session(self, pid: str) -> _Session | None:
        session = self._sessions.get(pid)
        if session is not None and session.expires_at <= self.now_ms():
            del self._sessions[pid]
            return None
        return session

    async def session_append(self, requests: Sequence[SessionAppend]) -> list[SessionAppendResult]:
        now = self.now_ms()
        self._sweep(now)
        return [self._session_append(request, now) for request in requests]

    def _session_append(self, request: SessionAppend, now: int) -> SessionAppendResult:
        session = self._session(request.pid)
        status: str = "ok"
        if session is None:
            session = _Session(request.gen, request.owner, request.principal)
            self._sessions[request.pid] = session
        elif (session.gen, session.owner) != (request.gen, request.owner):
            if (session.prev_gen, session.prev_owner) != (request.gen, request.owner):
                return SessionAppendResult("gone", [])
            status = "taken"
        log = session.logs.setdefault(request.gen, deque(maxlen=self.limits.maxlen))
        numbers = []
        for received_ms, payload in request.frames:
            n = session.counters.get(request.gen, 0) + 1
            session.counters[request.gen] = n
            log.append((n, received_ms, payload))
            numbers.append(n)
        if status == "ok":
            session.flushed = session.last_at = request.flushed_ms
            session.fetched = request.fetched
        else:
            session.prev_flushed = request.flushed_ms
        session.expires_at = now + self.limits.ttl_ms
        return SessionAppendResult("ok" if status == "ok" else "taken", numbers)

    async def session_claim(
        self, pid: str, principal: str, gen: str, claimer: str, new_gen: str, window_ms: int
    ) -> Claim:
        session = self._session(pid)
        now = self.now_ms()
        if session is None:
            return Claim("unknown")
        if session.principal != principal:
            return Claim("refused")
        if session.gen != gen:
            return Claim("stale")
        left = session.left_at if session.left_at is not None else session.last_at
        if now - left > window_ms:
            return Claim("expired")
        if session.closed:  # closed before anyone claimed it: what the app sent since is in no log
            return Claim("expired")
        if session.broken:
            return Claim("incomplete")
        session.prev_gen, session.prev_owner = session.gen, session.owner
        session.prev_closed, session.prev_flushed = session.closed, session.flushed
        session.prev_fetched, session.fetched = session.fetched, False
        session.gen, session.owner, session.cutoff = new_gen, claimer, now
        session.prev_broken = False  # (it refused a broken one above)
        session.closed, session.flushed, session.last_at, session.left_at = False, now, now, None
        session.expires_at = now + self.limits.ttl_ms
        return Claim("ok")

    async def session_read(self, pid: str, gen: str, after: int, force: bool) -> SessionReplay:
        session = self._session(pid)
        if session is None or session.prev_gen != gen:
            return SessionReplay("lost")
        if session.prev_broken:
            return SessionReplay("incomplete")
        # well after the claim: a frame emitted before it may still be on its way (CLAIM_SLACK_MS)
        if session.prev_flushed <= session.cutoff + CLAIM_SLACK_MS:
            if session.prev_fetched:  # (its silence proves nothing: see StreamLog.session_read)
                return SessionReplay("incomplete" if force else "wait")
            if not force and not session.prev_closed:
                return SessionReplay("wait")
        log = session.logs.get(gen, deque())
        last = session.counters.get(gen, 0)
        if after > last or (after < last and (not log or log[0][0] > after + 1)):
            return SessionReplay("lost")
        return SessionReplay("ok", [entry for entry in log if entry[0] > after])

    async def session_note(self, pid: str, action: Note, gen: str, owner: str) -> tuple[str, str]:
        session = self._session(pid)
        if session is None:
            return "", ""
        current = (session.gen, session.owner)
        if action == "left" and current == (gen, owner):
            session.left_at = self.now_ms()
        elif action == "upgraded" and current == (gen, owner):
            session.fetched = False
        elif action == "broken":
            if current == (gen, owner):
                session.broken = True
            elif (session.prev_gen, session.prev_owner) == (gen, owner):
                session.prev_broken = True
        elif action == "closed":
            if current == (gen, owner):
                session.closed = True
                if session.left_at is None:
                    session.left_at = self.now_ms()
            elif (session.prev_gen, session.prev_owner) == (gen, owner):
                session.prev_closed = True
        return current

    async def prepare(self) -> None:
        pass

    async def aclose(self) -> None:
        self._streams.clear()
        self._by_principal.clear()
        self._sessions.clear()
