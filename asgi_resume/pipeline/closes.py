"""Recovery sessions to close in the log, from one task, again while the log does not answer.

Owns: the sessions a client left on purpose (a DISCONNECT from their namespace) whose closing
the log has not heard yet, with their bounds: at most ``PER_PRINCIPAL`` per principal (past it
that principal's oldest is given up, so one user's join/leave flood costs nobody else) and
``MAX_PENDING`` per process (past it the oldest is given up), each counted in ``closes_dropped``,
and claims that may be of a session given up refused for the window (:meth:`Closes.refuses`);
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
SHUTDOWN_IN_FLIGHT = 32  # at shutdown, nothing else is calling

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
        #: a close was given up: claims are refused until then, the principal's (or anyone's) —
        #: a session that stayed open is claimable, with what was sent after the leave in no log
        self._gave_up: dict[str, float] = {}
        self._gave_up_any = 0.0
        self.closing = False
        self._task: asyncio.Task[None] | None = None

    def add(self, pid: str, gen: str, owner: str, principal: str) -> None:
        """Close ``pid``'s session (generation ``gen``, owned by ``owner``, of ``principal``) in the log."""
        key = (pid, gen)
        self._forget(key)
        mine = self._by_principal.setdefault(principal, {})
        if len(mine) >= PER_PRINCIPAL:
            self._give_up(next(iter(mine)))
        elif len(self.pending) >= MAX_PENDING:
            self._give_up(next(iter(self.pending)))
        self._put(key, _Close(owner, principal, time.monotonic() + self.window_s))
        if not self.closing and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        guard = self.guard
        while self.pending and not self.closing:
            if not guard.available() or not await self._round():
                await asyncio.sleep(RETRY_AFTER_S)

    def refuses(self, pid: str, gen: str, principal: str) -> bool:
        """Must a claim of ``pid`` (from generation ``gen``) by ``principal`` get a normal connect?
        Yes while its session is being closed, and for the window after a close was given up
        that may be its session's (one of the principal's, or anyone's past ``MAX_PENDING``)."""
        if (pid, gen) in self.pending:
            return True
        now = time.monotonic()
        return now < self._gave_up_any or now < self._gave_up.get(principal, 0.0)

    async def _round(self, in_flight: int = IN_FLIGHT) -> bool:
        """Try the oldest ``in_flight`` at once. False: the log did not answer (they wait again)."""
        chosen = [(key, self.pending[key]) for key in list(self.pending)[:in_flight]]
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
                    self._put(key, close)
                return False
        if self.pending.get(key) is close:  # (not asked again meanwhile)
            self._forget(key)
        return True

    def _put(self, key: Key, close: _Close) -> None:
        """``key`` waits last, in the process's queue and in its principal's."""
        self.pending[key] = close
        self._by_principal.setdefault(close.principal, {})[key] = None

    def _forget(self, key: Key) -> None:
        close = self.pending.pop(key, None)
        if close is not None:
            mine = self._by_principal[close.principal]
            del mine[key]
            if not mine:
                del self._by_principal[close.principal]

    def _give_up(self, key: Key) -> None:
        """Give ``key`` up: its session stays claimable for the window, so this process refuses
        claims that may be of it meanwhile (of its principal's, or of anyone's past ``MAX_PENDING``)."""
        close = self.pending[key]
        self._forget(key)
        self.stats.closes_dropped += 1
        if len(self.pending) + 1 >= MAX_PENDING:
            self._gave_up_any = close.until
            return
        gave_up = self._gave_up
        if close.principal not in gave_up and len(gave_up) >= MAX_PENDING // PER_PRINCIPAL:
            for principal in [p for p, until in gave_up.items() if until <= time.monotonic()]:
                del gave_up[principal]
            if len(gave_up) >= MAX_PENDING // PER_PRINCIPAL:  # (that many flooding at once: anyone's)
                self._gave_up_any = close.until
                return
        gave_up[close.principal] = close.until

    async def aclose(self) -> None:
        """Stop, trying what still waits once more within a recovery deadline (a session left
        open stays claimable for the window, and the next process may answer a claim of it)."""
        self.closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # (its failure must not keep the log from closing)
                logger.exception("the task closing recovery sessions failed")
        left = len(self.pending)
        if not left:
            return
        seconds = self.guard.deadlines.recovery.seconds
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self.pending and await self._round(SHUTDOWN_IN_FLIGHT):
                    pass
        if self.pending:
            self.stats.closes_dropped += len(self.pending)
            logger.warning(
                "%d of %d recovery sessions left open in the log at shutdown (not closed within %.1f s); "
                "each stays claimable for the recovery window",
                len(self.pending),
                left,
                seconds,
                extra=fault("closes_left_open", sessions=len(self.pending)),
            )
