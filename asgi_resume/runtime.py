"""What every connection of one middleware shares.

Owns: the settings, the stream log and its health (when to stop waiting for it and
when to try again), the principal resolver and its hashing key, this process's
Engine.IO sessions by sid, and the counters.
Must not touch: any one connection's state.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from asgi_resume.config import Settings
from asgi_resume.log import AppendRequest, LogUnavailable, StreamKey, StreamLog
from asgi_resume.log.base import GroupCommit, LogLimits
from asgi_resume.log.memory import MemoryLog
from asgi_resume.order import FeedOrder
from asgi_resume.principal import JwtKey, PrincipalResolver, default_principal_key
from asgi_resume.rules import StreamRules
from asgi_resume.session import Registry, Session

if TYPE_CHECKING:
    from asgi_resume.outbound import Outbound

logger = logging.getLogger("asgi_resume")

DEFAULT_MAX_POST_BODY = 1_000_000  # python-engineio's default max_http_buffer_size
_RETRY_AFTER_S = 1.0  # after a log failure, frames skip the log this long before it is tried again
PREPARE_TIMEOUT_S = 2.0  # longest the first CONNECT waits for the log to connect and load its scripts
MAX_REPAIRS = 10_000  # streams waiting for their new epoch after a failure; past it, their next frame starts it
_WARN_EVERY_S = 10.0


TIMING_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class Timing:
    """How long something takes: count, sum and worst, in seconds (and buckets for a histogram)."""

    count: int = 0
    total: float = 0.0
    worst: float = 0.0
    buckets: dict[float, int] = field(default_factory=lambda: dict.fromkeys(TIMING_BUCKETS, 0))

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.worst = max(self.worst, seconds)
        for bound in TIMING_BUCKETS:
            if seconds <= bound:
                self.buckets[bound] += 1


@dataclass(slots=True)
class Stats:
    """Counters, in-process (also exported as Prometheus metrics when enabled)."""

    frames_stamped: int = 0
    log_writes: int = 0  # append calls: one per batch of frames, whatever its size
    order_waits_timed_out: int = 0  # batches logged before frames fed earlier on another connection
    frames_unmatched: int = 0  # sent unstamped: their copy was logged before frames this connection got earlier
    frames_unstamped: int = 0  # stream frames sent without seq because the log failed
    log_failures: int = 0
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


class LogHealth:
    """Stops frames from waiting on a log that just failed; warns at a bounded rate."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self._down_until = 0.0
        self._last_warning = -_WARN_EVERY_S
        self._failures_since_warning = 0
        self.down = False

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self, reason: str) -> None:
        now = time.monotonic()
        self.stats.log_failures += 1
        self._down_until = now + _RETRY_AFTER_S
        self.down = True
        self._failures_since_warning += 1
        if now - self._last_warning >= _WARN_EVERY_S:  # one line per 10 s at most, with the count since
            logger.warning(
                "stream log unavailable (%s); frames go out unstamped and unlogged until it answers (%d failures)",
                reason,
                self._failures_since_warning,
                extra=fault("log_unavailable", reason=reason, failures=self._failures_since_warning),
            )
            self._last_warning = now
            self._failures_since_warning = 0

    def succeeded(self) -> None:
        if self.down:
            self.down = False
            logger.warning(
                "stream log reachable again; logging resumed (streams that lost frames get a new epoch)",
                extra=fault("log_recovered"),
            )


class Runtime:
    def __init__(self, settings: Settings, log: StreamLog | None = None) -> None:
        self.settings = settings
        self.rules = StreamRules(
            settings.events,
            settings.stream_id,
            settings.done,
            variant=settings.variant,
            exclude=settings.exclude,
            log_calls=settings.log_calls,
        )
        self.stats = Stats()
        self.health = LogHealth(self.stats)
        self.throttle = Throttle()
        limits = LogLimits(
            settings.maxlen, int(settings.ttl * 1000), int(settings.done_ttl * 1000), settings.max_streams
        )
        self.log: StreamLog = log if log is not None else self._make_log(settings, limits)
        self.appends = GroupCommit(self.log)  # a room's copies share one round trip
        self.order = FeedOrder()  # each stream's frames go to the log in the order they were fed here
        self._jwt = JwtKey(settings.jwt_secret, settings.jwt_algorithms) if settings.jwt_secret else None
        self.resolver = PrincipalResolver(settings.principal, self._principal_key(settings), self._jwt)
        self._ready = False
        self.sessions: Registry[Outbound] = Registry()  # Engine.IO sid -> its outbound pipeline
        self.holds: set[Callable[[str], None]] = set()  # how to end each hold in progress
        self._background: set[asyncio.Task[Any]] = set()  # tasks of in_background(), until they end
        self.held_by: dict[str, int] = {}  # principal -> its connections held now
        self.stamping_cache: dict[str, Any] = {}  # frame -> how to stamp it (see Outbound._stamping)
        self.shutting_down = False
        self._repairs: dict[StreamKey, Session] = {}  # streams whose frames the log missed, not yet repaired
        self._repairing: asyncio.Task[None] | None = None
        self._hinted_no_principal = False
        #: the longest polling POST body the app reads (python-engineio's max_http_buffer_size)
        self.max_post_body = DEFAULT_MAX_POST_BODY

    @staticmethod
    def _make_log(settings: Settings, limits: LogLimits) -> StreamLog:
        if settings.redis_url is None:
            return MemoryLog(limits)
        from asgi_resume.log.redis import RedisLog

        return RedisLog.from_url(
            settings.redis_url, prefix=settings.key_prefix, limits=limits, cluster=settings.redis_cluster
        )

    @property
    def stream_key(self) -> str:
        """The field a resume request names its stream by: the stream id path's last part."""
        return self.settings.stream_id[-1]

    def hint_no_principal(self) -> None:
        """Once per process: say why resumes of connections without a principal find nothing."""
        if self._hinted_no_principal:
            return
        self._hinted_no_principal = True
        sources = ",".join(str(source) for source in self.settings.principal)
        logger.warning(
            "a connection without a principal asked to resume: it gets not_found. A principal comes from "
            "ASGI_RESUME_PRINCIPAL=%s, read when the app accepts the CONNECT (e.g. the client's auth "
            "{token: ...}); frames sent to connections without one are not logged. (Said once.)",
            sources,
        )

    def _principal_key(self, settings: Settings) -> bytes:
        """The key principals are hashed with: the same on every worker, or the log would not match."""
        if settings.secret is not None:  # a key of its own, even when the secret also signs tokens
            return hmac.new(settings.secret.encode(), b"asgi_resume principals", hashlib.sha256).digest()
        if isinstance(self.log, MemoryLog):  # one process: any key will do
            return secrets.token_bytes(32)
        logger.warning(
            "ASGI_RESUME_SECRET is not set: principals are hashed with a key derived from the key prefix, "
            "the same on every worker; set a secret so that what Redis holds reveals no credential",
            extra=fault("no_secret"),
        )
        return default_principal_key(settings.key_prefix)

    def in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` on its own (a polling session let go, a note to the log), keeping its task."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def missed(self, session: Session, keys: Iterable[StreamKey]) -> None:
        """The log missed frames of ``keys`` (or may have: an append that timed out).

        Until a new epoch starts for them, a resume would read a history with a silent hole (or
        a duplicate of what went out unstamped): they are repaired (a new, empty epoch) as soon
        as the log answers again, even if no frame of them ever comes again.
        """
        for key in keys:
            if len(self._repairs) < MAX_REPAIRS:
                self._repairs[key] = session
        if self._repairs and (self._repairing is None or self._repairing.done()):
            self._repairing = asyncio.get_running_loop().create_task(self._repair_soon())

    def repairs_due(self) -> bool:
        return bool(self._repairs)

    async def repair(self) -> None:
        """Start a new epoch for every stream the log missed frames of, in one call."""
        if not self._repairs or not self.health.available():
            return
        # a stream whose own connection started its new epoch meanwhile needs nothing more
        repairs = {key: session for key, session in self._repairs.items() if key in session.unlogged}
        self._repairs = {}
        if not repairs:
            return
        requests = [
            AppendRequest(key, [], reset=True, reset_epoch=session.unlogged[key], connection=session.id)
            for key, session in repairs.items()
        ]
        try:
            with anyio.fail_after(self.settings.write_timeout):
                results = await self.log.append(requests)
        except (LogUnavailable, TimeoutError) as exc:
            self.health.failed(str(exc) or "timed out")
            for key, session in repairs.items():
                self._repairs.setdefault(key, session)
            return
        for (key, session), result in zip(repairs.items(), results, strict=True):
            if result.failed is not None:
                continue  # this stream alone: its next frame starts the new epoch
            session.unlogged.pop(key, None)  # done on its behalf: its next frame joins the new epoch
            session.cursors.pop(key, None)
            session.skipped.pop(key, None)

    async def _repair_soon(self) -> None:
        while self._repairs and not self.shutting_down:
            await asyncio.sleep(_RETRY_AFTER_S)  # (the log failed a moment ago)
            await self.repair()

    async def ready(self) -> None:
        """Before the first connection's frames: connect the log, learn its clock, load its scripts.

        Best effort, once (again after a failure, once the log may be back): a log that does not
        answer now costs this connection's first frames their stamps, never the connection.
        """
        if self._ready or not self.health.available():
            return
        try:
            with anyio.fail_after(PREPARE_TIMEOUT_S):
                await self.log.prepare()
        except (LogUnavailable, TimeoutError) as exc:
            self.health.failed(str(exc) or "timed out")
            return
        self._ready = True

    def shut_down_holds(self) -> None:
        """The server is going down: end every hold, and start no new one."""
        if not self.shutting_down:
            self.shutting_down = True
            logger.info("server shutting down: ending %d held connections", len(self.holds))
        for end in list(self.holds):
            end("the server is shutting down")

    async def aclose(self) -> None:
        self.shut_down_holds()
        if self._repairing is not None:
            self._repairing.cancel()
        await self.log.aclose()
