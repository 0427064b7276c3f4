"""Recovery sessions to close in the log, from one task, again while the log does not answer.

Owns: the sessions a client left on purpose (a DISCONNECT from their namespace) whose closing
the log has not heard yet, with their bounds: at most ``PER_PRINCIPAL`` per principal (past it
that principal's oldest is given up, so one user's join/leave flood costs nobody else) and
``MAX_PENDING`` per process (past it the oldest is given up), each counted in ``closes_dropped``;
each is kept for the recovery window after it was asked (a claim expires then anyway). One
background task tries them ``IN_FLIGHT`` calls at a time, and only while the guard lets calls
through, so an outage costs one waiting entry per leave, not a task or a call. At shutdown
what still waits is tried once more within a recovery deadline. Must not touch: a connection's
state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from asgi_resume.guard import RETRY_AFTER_S, LogGuard
from asgi_resume.log import LogRefused, LogUnavailable
from asgi_resume.stats import Stats, fault

logger = logging.getLogger("asgi_resume")

MAX_PENDING = 10_000  # sessions waiting to be closed in one process (~250 bytes each)
PER_PRINCIPAL = 256  # of them, one principal's (a client joins and leaves a namespace over and over)
IN_FLIGHT = 8  # close calls out at once (a Redis pool has 64 connections; replays take up to 8)

Key = tuple[str, str]  # (pid, generation)


@dataclass(slots=True)
class _Close:
    owner: str  # the connection that owned the session
    principal: str
    until: float  # monotonic time to give up: the recovery window is over, nobody can claim it


class Closes:
    def __init__(self, guard: LogGuard, stats: Stats, window_s: float) -> None:
        self.guard = guard
        self.stats = stats
        self.window_s = window_s
        self.pending: dict[Key, _Close] = {}  # oldest first
        self._by_principal: dict[str, dict[Key, None]] = {}  # each principal's, oldest first
        self.closing = False
        self._task: asyncio.Task[None] | None = None

    def add(self, pid: str, gen: str, owner: str, principal: str) -> None:
        """Close ``pid``'s session (generation ``gen``, owned by ``owner``, of ``principal``) in the log."""
        key = (pid, gen)
        self._forget(key)
        mine = self._by_principal.setdefault(principal, {})
        if len(mine) >= PER_PRINCIPAL:
            self._drop(next(iter(mine)))
        elif len(self.pending) >= MAX_PENDING:
            self._drop(next(iter(self.pending)))
        self.pending[key] = _Close(owner, principal, time.monotonic() + self.window_s)
        self._by_principal.setdefault(principal, {})[key] = None
        if not self.closing and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        guard = self.guard
        while self.pending and not self.closing:
            if not guard.available() or not await self._round():
                await asyncio.sleep(RETRY_AFTER_S)

    async def _round(self) -> bool:
        """Try the oldest ``IN_FLIGHT`` at once. False: the log did not answer (they wait again)."""
        chosen = [(key, self.pending[key]) for key in list(self.pending)[:IN_FLIGHT]]
        answered = await asyncio.gather(*(self._one(key, close) for key, close in chosen))
        return all(answered)

    async def _one(self, key: Key, close: _Close) -> bool:
        if time.monotonic() < close.until:
            guard = self.guard
            try:
                await guard.call(
                    guard.deadlines.recovery, guard.log.session_note, key[0], "closed", key[1], close.owner
                )
            except LogRefused:  # its keys alone (the log answers others): not retried
                self.stats.closes_dropped += 1
            except LogUnavailable:
                if self.pending.get(key) is close:  # the others' turn first
                    self._forget(key)
                    self.pending[key] = close
                    self._by_principal.setdefault(close.principal, {})[key] = None
                return False
        if self.pending.get(key) is close:  # (not asked again meanwhile)
            self._forget(key)
        return True

    def _forget(self, key: Key) -> None:
        close = self.pending.pop(key, None)
        if close is not None:
            mine = self._by_principal[close.principal]
            del mine[key]
            if not mine:
                del self._by_principal[close.principal]

    def _drop(self, key: Key) -> None:
        """Give ``key`` up: its session stays claimable (by its own principal) for the window."""
        self._forget(key)
        self.stats.closes_dropped += 1

    async def aclose(self) -> None:
        """Stop, trying what still waits once more within a recovery deadline (a session left
        open stays claimable for the window, and the next process may answer a claim of it)."""
        self.closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        left = len(self.pending)
        if not left:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.guard.deadlines.recovery.seconds):
                while self.pending and await self._round():
                    pass
        if self.pending:
            self.stats.closes_dropped += len(self.pending)
            logger.warning(
                "%d of %d recovery sessions left open in the log at shutdown (the log did not answer)",
                len(self.pending),
                left,
                extra=fault("closes_left_open", sessions=len(self.pending)),
            )
