"""What the middleware tells operators: its counters and its fault lines.

Owns: the in-process counters (:class:`Stats`, exported as Prometheus metrics when enabled), a
duration's histogram (:class:`Timing`), the structured fields of a fault's log line and the
throttle that keeps each kind of fault to one line every few seconds. Must not touch: anything
it counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

_WARN_EVERY_S = 10.0


TIMING_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class Timing:
    """How long something takes: count and sum, in seconds, and buckets for a histogram."""

    count: int = 0
    total: float = 0.0
    buckets: dict[float, int] = field(default_factory=lambda: dict.fromkeys(TIMING_BUCKETS, 0))

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        for bound in TIMING_BUCKETS:
            if seconds <= bound:
                self.buckets[bound] += 1


@dataclass(slots=True)
class Stats:
    """Counters, in-process (also exported as Prometheus metrics when enabled)."""

    frames_stamped: int = 0
    frames_stamped_known: int = 0  # of those: copies stamped from what this process knew, without a log call
    log_writes: int = 0  # append calls: one per batch of frames, whatever its size
    order_waits_timed_out: int = 0  # batches logged before frames fed earlier on another connection
    frames_unmatched: int = 0  # sent unstamped: their copy was logged before frames this connection got earlier
    frames_unstamped: int = 0  # stream frames sent without seq because the log failed
    frames_too_large: int = 0  # frames not logged for a frame over max_frame_bytes (see streams, recovery)
    #: of those: another tab here logged newer frames without them (its wait for them ended)
    frames_passed_over: int = 0
    log_failures: int = 0
    #: streams the log missed frames of that no repair will start a new epoch for (past both bounds
    #: of waiting repairs): a resume of one may not say ``gap`` until its own tab logs it again
    repairs_dropped: int = 0
    closes_dropped: int = 0  # recovery sessions left open in the log: too many closes waiting
    resumes_ok: int = 0
    resumes_gap: int = 0
    resumes_not_found: int = 0
    resumes_bad_request: int = 0
    resumes_unavailable: int = 0
    resumes_rate_limited: int = 0
    frames_replayed: int = 0
    replay_seconds: Timing = field(default_factory=Timing)  # reading the log and rendering a replay
    holds_active: int = 0
    holds_started: int = 0
    holds_refused: int = 0  # clients let go because max_holds was reached
    recoveries_ok: int = 0
    recoveries_refused: int = 0  # unknown, expired or stolen pid, or frames gone: a normal connect
    frames_recovered: int = 0

    def resumes_by_outcome(self) -> dict[str, int]:
        """Resume requests by how they were answered (the metric's ``outcome`` label)."""
        return {
            "ok": self.resumes_ok,
            "gap": self.resumes_gap,
            "not_found": self.resumes_not_found,
            "bad_request": self.resumes_bad_request,
            "rate_limited": self.resumes_rate_limited,
            "unavailable": self.resumes_unavailable,
        }


def fault(event: str, **fields: Any) -> dict[str, Any]:
    """Structured fields for a fault's log line: ``record.asgi_resume`` (for JSON log formatters)."""
    return {"asgi_resume": {"event": event, **fields}}


class Throttle:
    """At most one log line per ``every_s`` for each kind of fault; says how many were skipped."""

    def __init__(self, every_s: float = _WARN_EVERY_S) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def allow(self, kind: str) -> int | None:
        """``None``: stay quiet; else log now, mentioning the returned number of skipped lines."""
        now = time.monotonic()
        if now - self._last.get(kind, -self.every_s) < self.every_s:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._skipped.pop(kind, 0)
