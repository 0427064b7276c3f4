"""Every call to the stream log goes through one guard.

Owns: the deadline of each kind of call (:class:`Deadlines`), the circuit breaker that stops
callers from waiting on a log that just failed (for ``RETRY_AFTER_S``, then it is tried again),
and the failures: counted in one place (``Stats.log_failures``) and reported as one throttled
warning line, and one line when the log answers again. A call that fails or passes its deadline
raises :class:`~asgi_resume.log.LogUnavailable`; callers decide what that costs (frames sent
unstamped, a resume answered ``unavailable``). A call the log refused on its own keys
(:class:`~asgi_resume.log.LogRefused`) is counted and said, and opens no breaker. Must not touch:
what the calls mean.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, TypeVarTuple

from asgi_resume.log import LogRefused, LogUnavailable, StreamLog
from asgi_resume.stats import Stats, Throttle, fault

logger = logging.getLogger("asgi_resume")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

RETRY_AFTER_S = 1.0  # after a failure, calls fail at once this long before the log is tried again


@dataclass(frozen=True, slots=True)
class Deadline:
    seconds: float
    #: does passing it open the breaker? (A replay waiting its turn in a reconnect storm is slow,
    #: not a sign of an outage: it fails that call alone.)
    slow_is_outage: bool = True
    #: does an open breaker fail the call at once? (A reconnecting client's recovery claim is
    #: tried anyway: it cannot ask again, and the log may be back before the breaker knows.)
    fails_fast: bool = True
    #: does the guard time the call? (False: the call keeps the deadline itself, and raises
    #: ``TimeoutError`` past it: the group commit, one timer for a round trip many callers share)
    timed_here: bool = True


@dataclass(frozen=True, slots=True)
class Deadlines:
    """How long each kind of call may take."""

    write: Deadline  # live frames wait for it: an append, a repair, a release (ASGI_RESUME_WRITE_TIMEOUT)
    recovery: Deadline  # a recovery session's claim, read or note: a reconnect waits for it, tried anyway
    #: a recovery session's append: a live batch waits for it as for a write, but its slowness alone
    #: does not stop the stream log (its events go out with no offset, and recovery is refused)
    recovery_append: Deadline
    #: a chunk of repairs in the background: nothing waits for it, and its slowness alone does not
    #: stop the stream log
    repair: Deadline
    replay: Deadline = Deadline(5.0, slow_is_outage=False)  # a resume: not on the live path
    prepare: Deadline = Deadline(2.0)  # connecting and loading the scripts, once at start-up

    @classmethod
    def from_write_timeout(cls, seconds: float) -> Deadlines:
        return cls(
            Deadline(seconds),
            Deadline(seconds * 4, fails_fast=False),
            Deadline(seconds, slow_is_outage=False),
            Deadline(seconds * 4, slow_is_outage=False),
        )


class LogGuard:
    def __init__(self, log: StreamLog, deadlines: Deadlines, stats: Stats) -> None:
        self.log = log
        self.deadlines = deadlines
        self.stats = stats
        self._throttle = Throttle()
        self._down_until = 0.0
        self.down = False  # the last call failed, and no call succeeded since

    def available(self) -> bool:
        """False for ``RETRY_AFTER_S`` after a failure: callers then skip the log instead of waiting."""
        return time.monotonic() >= self._down_until

    async def call(self, deadline: Deadline, call: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """``await call(*args)`` within ``deadline``, or :class:`LogUnavailable`.

        Fails at once while the breaker is open (unless ``deadline.fails_fast`` is false).
        """
        if deadline.fails_fast and self.down and not self.available():  # (down: no clock read when up)
            raise LogUnavailable("the log failed a moment ago")
        try:
            if self.log.synchronous or not deadline.timed_here:  # no timer here (the in-process log never waits)
                result = await call(*args)
            else:
                async with asyncio.timeout(deadline.seconds):
                    result = await call(*args)
        except TimeoutError:
            if deadline.slow_is_outage:
                self.failed("timed out")
            else:
                self.stats.log_failures += 1
            raise LogUnavailable("timed out") from None
        except LogRefused as exc:
            self.refused(str(exc))
            raise
        except LogUnavailable as exc:
            self.failed(str(exc) or type(exc).__name__)
            raise
        if self.down:
            self.down, self._down_until = False, 0.0  # it answers: callers may use it again now
            logger.warning(
                "stream log reachable again; logging resumed (streams that lost frames get a new epoch)",
                extra=fault("log_recovered"),
            )
        return result

    def failed(self, reason: str) -> None:
        """The log failed (or a call found it failing): open the breaker, count it, say so (throttled)."""
        self._down_until = time.monotonic() + RETRY_AFTER_S
        self.down = True
        self._count_and_say(
            "log_unavailable",
            "stream log unavailable (%s); frames go out unstamped and unlogged until it answers (%d failures)",
            reason,
        )

    def refused(self, reason: str) -> None:
        """One call failed on its own keys while the log answers: counted and said (throttled); the
        breaker stays closed, so one user's broken key does not switch the log off for the others."""
        self._count_and_say("log_refused", "stream log refused a call (%s); other calls go on (%d refusals)", reason)

    def _count_and_say(self, event: str, message: str, reason: str) -> None:
        """A failure: counted, and said at most once per kind per throttle period (with how many)."""
        self.stats.log_failures += 1
        skipped = self._throttle.allow(event)
        if skipped is not None:
            logger.warning(message, reason, skipped + 1, extra=fault(event, reason=reason, failures=skipped + 1))

    def failed_alone(self) -> None:
        """One request failed while the log answered the others: counted, nothing else."""
        self.stats.log_failures += 1
