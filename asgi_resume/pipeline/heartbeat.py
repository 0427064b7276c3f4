"""This process's heartbeat in a shared log: other processes learn that it still runs.

Owns: saying every ``BEAT_EVERY_S`` that this process is running (while the log answers: a beat
the log does not take is simply the next one's to say), from start-up (the log's first
preparation) to shutdown: about ten calls a second per process.
A claim whose read trusts the silence of a connection here needs a beat after the claim: a
process that was killed, stopped or blocked since may have died with frames it never logged
(see :meth:`~asgi_resume.pipeline.recovery.Recovery._claim`); a newcomer that went on in a
stream's epoch needs a recent beat of the process whose connection logged it last, or the epoch
ends there (see :meth:`~asgi_resume.pipeline.streams.StreamWriter._after_the_dead`). Must not
touch: connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from asgi_resume.guard import LogGuard
from asgi_resume.log import LogUnavailable
from asgi_resume.log.base import BEAT_EVERY_S
from asgi_resume.log.names import process_name

logger = logging.getLogger("asgi_resume")


class Heartbeat:
    def __init__(self, guard: LogGuard) -> None:
        self.guard = guard
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self) -> None:
        """Beat from now on (once: later calls do nothing)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        guard, process = self.guard, process_name()
        while not self._stopped:  # (ends at aclose() even if a cancellation was swallowed below)
            try:
                await guard.call(guard.deadlines.recovery, guard.log.beat, process)
            except LogUnavailable:
                pass  # (the next beat says it)
            except Exception:  # a bug must not stop the beats: other processes would take this one for dead
                logger.exception("asgi_resume could not beat")
            await asyncio.sleep(BEAT_EVERY_S)

    async def aclose(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
