"""Recovery sessions kept in this process's memory: the in-process log's half for connection state recovery.

Same rules as ``lua/session_*.lua`` on Redis (the contract tests run both): a session per pid, its
frames per generation, who owns it and who owned it before the last claim. Must not touch: stream
entries (``memory``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice

from asgi_resume.log.base import (
    CLAIM_SLACK_MS,
    Claim,
    LogLimits,
    Note,
    Payload,
    SessionAppend,
    SessionAppendResult,
    SessionReplay,
    payload_size,
)


@dataclass(slots=True)
class _Session:
    """A recovery session: who owns it, and its frames per generation."""

    gen: str
    owner: str
    principal: str
    namespace: str
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


class MemorySessions:
    def __init__(self, limits: LogLimits, now_ms: Callable[[], int]) -> None:
        self.limits = limits
        self.now_ms = now_ms
        self._by_pid: dict[str, _Session] = {}

    def sweep(self, now: int) -> None:
        for pid in [pid for pid, session in self._by_pid.items() if session.expires_at <= now]:
            del self._by_pid[pid]

    def clear(self) -> None:
        self._by_pid.clear()

    def _session(self, pid: str) -> _Session | None:
        session = self._by_pid.get(pid)
        if session is not None and session.expires_at <= self.now_ms():
            del self._by_pid[pid]
            return None
        return session

    def append(self, requests: Sequence[SessionAppend], now: int) -> list[SessionAppendResult]:
        return [self._append(request, now) for request in requests]

    def _append(self, request: SessionAppend, now: int) -> SessionAppendResult:
        session = self._session(request.pid)
        status: str = "ok"
        if session is None:
            if not request.starts:  # lost since its first call (expired): never made again (see SessionAppend)
                return SessionAppendResult("lost", [])
            session = _Session(request.gen, request.owner, request.principal, request.namespace)
            self._by_pid[request.pid] = session
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

    def claim(
        self, pid: str, principal: str, namespace: str, gen: str, claimer: str, new_gen: str, window_ms: int
    ) -> Claim:
        session = self._session(pid)
        now = self.now_ms()
        if session is None:
            return Claim("unknown")
        if session.principal != principal or session.namespace != namespace:
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
        for old in [g for g in session.logs if g not in (session.gen, new_gen)]:  # nobody's to read any more
            del session.logs[old]
            session.counters.pop(old, None)
        session.prev_gen, session.prev_owner = session.gen, session.owner
        session.prev_closed, session.prev_flushed = False, session.flushed
        session.prev_fetched, session.fetched = session.fetched, False
        session.gen, session.owner, session.cutoff = new_gen, claimer, now
        session.prev_broken = False  # (it refused a broken one above)
        session.flushed, session.last_at, session.left_at = now, now, None
        session.expires_at = now + self.limits.ttl_ms
        return Claim("ok")

    def read(
        self, pid: str, gen: str, after: int, force: bool, limit: int = 0, max_bytes: int = 0, until: int = 0
    ) -> SessionReplay:
        session = self._session(pid)
        if session is None or session.prev_gen != gen:
            return SessionReplay("lost")
        trusted = ""
        if until:  # a following page of a read: what it checked holds for it
            last = until
        else:
            if session.prev_broken:
                return SessionReplay("incomplete")
            # well after the claim: a frame emitted before it may still be on its way (CLAIM_SLACK_MS)
            if session.prev_flushed <= session.cutoff + CLAIM_SLACK_MS:
                if session.prev_fetched:  # (its silence proves nothing: see StreamLog.session_read)
                    return SessionReplay("incomplete" if force else "wait")
                if not force and not session.prev_closed:
                    return SessionReplay("wait")
                if not session.prev_closed:
                    trusted = session.prev_owner  # (its silence is taken for complete)
            last = session.counters.get(gen, 0)
        log = session.logs.get(gen, deque())
        if after > last or (after < last and (not log or log[0][0] > after + 1)):
            return SessionReplay("lost")
        frames: list[tuple[int, int, Payload]] = []
        size = 0
        start = max(0, after + 1 - log[0][0]) if log else 0  # (numbers follow each other in the log)
        for entry in islice(log, start, None):
            if entry[0] > last or (limit and len(frames) >= limit):
                break
            if max_bytes:
                size += payload_size(entry[2])
                if frames and size > max_bytes:
                    break
            frames.append(entry)
        return SessionReplay("ok", frames, trusted, last)

    def note(self, pid: str, action: Note, gen: str, owner: str) -> tuple[str, str]:
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
        elif action in ("behind", "caught_up"):
            if current == (gen, owner):
                session.fetched = action == "behind"
            elif (session.prev_gen, session.prev_owner) == (gen, owner):
                session.prev_fetched = action == "behind"
        elif action == "closed":
            if current == (gen, owner):  # closed before anyone claimed it: nobody can recover it
                if not session.prev_gen or session.prev_closed:
                    del self._by_pid[pid]
                else:  # the previous owner may still log (the claimer reads it): kept until it is done too
                    session.closed = True
                    if session.left_at is None:
                        session.left_at = self.now_ms()
            elif (session.prev_gen, session.prev_owner) == (gen, owner):
                if session.closed:
                    del self._by_pid[pid]
                else:
                    session.prev_closed = True
        return current
