"""Recovery sessions to close in the log, from one task, again while the log does not answer.

Owns: the sessions a client left on purpose (a DISCONNECT from their namespace) whose closing
the log has not heard yet: at most ``MAX_PENDING`` per process (past it the oldest is given up,
``closes_dropped``), each for the recovery window after it was asked (a claim expires then
anyway); one background task tries them a call at a time, and only while the guard lets calls
through, so an outage costs one waiting entry per leave, not a task or a call. Must not touch:
a connection's state.
"""

from __future__ import annotations

import asyncio
import time

from asgi_resume.guard import RETRY_AFTER_S, Deadline, LogGuard
from asgi_resume.log import LogRefused, LogUnavailable
from asgi_resume.stats import Stats

MAX_PENDING = 10_000  # sessions waiting to be closed (~200 bytes each)


class Closes:
    def __init__(self, guard: LogGuard, stats: Stats, window_s: float) -> None:
        self.guard = guard
        self.stats = stats
        self.window_s = window_s
        #: (pid, generation) -> (the connection that owned it, monotonic time to give up)
        self.pending: dict[tuple[str, str], tuple[str, float]] = {}
        self.closing = False
        self._task: asyncio.Task[None] | None = None

    def add(self, pid: str, gen: str, owner: str) -> None:
        """Close ``pid``'s session (generation ``gen``, owned by ``owner``) in the log."""
        pending = self.pending
        pending[(pid, gen)] = (owner, time.monotonic() + self.window_s)
        if len(pending) > MAX_PENDING:
            del pending[next(iter(pending))]
            self.stats.closes_dropped += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        guard, pending = self.guard, self.pending
        deadline = Deadline(guard.deadlines.recovery.seconds)  # (fails at once while the breaker is open)
        while pending and not self.closing:
            if not guard.available():
                await asyncio.sleep(RETRY_AFTER_S)
                continue
            (pid, gen), (owner, until) = next(iter(pending.items()))
            if time.monotonic() < until:
                try:
                    await guard.call(deadline, guard.log.session_note, pid, "closed", gen, owner)
                except LogRefused:  # its keys alone (the log answers others): not retried
                    self.stats.closes_dropped += 1
                except LogUnavailable:
                    if pending.get((pid, gen)) is not None:  # the others' turn first
                        pending[(pid, gen)] = pending.pop((pid, gen))
                    await asyncio.sleep(RETRY_AFTER_S)
                    continue
            pending.pop((pid, gen), None)

    def close(self) -> None:
        self.closing = True
        if self._task is not None:
            self._task.cancel()
