"""What every connection of one middleware shares.

Owns: the settings, the stream log and the guard every call to it goes through, the
principal resolver and its hashing key, the repairs of streams the log missed frames of
(:mod:`~asgi_resume.pipeline.repairs`), the recovery sessions to close
(:mod:`~asgi_resume.pipeline.closes`), the frame objects held connections logged for recovery
(:mod:`~asgi_resume.pipeline.held_frames`), this process's heartbeat
(:mod:`~asgi_resume.pipeline.heartbeat`), the order streams' frames reach the log in, the entries
its connections logged lately, and the counters.
Must not touch: any one connection's state.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Coroutine
from typing import Any

from asgi_resume.config import Settings
from asgi_resume.guard import Deadlines, LogGuard
from asgi_resume.log import LogUnavailable, LogUnsupported, StreamLog
from asgi_resume.log.base import LogLimits
from asgi_resume.log.group_commit import GroupCommit
from asgi_resume.log.memory import MemoryLog
from asgi_resume.log.recent import MAX_ENTRIES, RecentEntries
from asgi_resume.pipeline.closes import Closes
from asgi_resume.pipeline.heartbeat import Heartbeat
from asgi_resume.pipeline.held_frames import HeldFrames
from asgi_resume.pipeline.order import FeedOrder
from asgi_resume.pipeline.polling_feeds import PollingFeeds
from asgi_resume.pipeline.polling_replays import PollingReplays
from asgi_resume.pipeline.repairs import Repairs
from asgi_resume.pipeline.replays_in_flight import ReplaysInFlight
from asgi_resume.pipeline.rules import Stamping, StreamRules
from asgi_resume.pipeline.turns import Turns
from asgi_resume.principal import JwtKey, PrincipalResolver, default_principal_key
from asgi_resume.stats import Stats, Throttle, fault

logger = logging.getLogger("asgi_resume")

DEFAULT_MAX_POST_BODY = 1_000_000  # python-engineio's default max_http_buffer_size


class Runtime:
    """One middleware's shared state: ``settings``, ``rules`` (which events belong to which
    stream), ``log`` and ``guard``, ``appends`` (a loop turn's appends in one call), ``order``,
    ``recent``, ``replay_turns``, ``resolver`` (principals), ``repairs``, ``closes``, ``held_frames``,
    ``stamping_cache`` (how to stamp a frame, for the copies of an emit), ``polling_replays`` and
    ``replays_in_flight`` (replays waiting for their clients, bounded per user), ``stats``, and
    ``max_post_body`` (the app's own limit on a polling POST)."""

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
        limits = LogLimits(
            settings.maxlen, int(settings.ttl * 1000), int(settings.done_ttl * 1000), settings.max_streams
        )
        self.log: StreamLog = log if log is not None else self._make_log(settings, limits)
        self.appends = GroupCommit(self.log)  # a room's copies share one round trip
        #: every log call goes through it: deadlines, the circuit breaker, failures counted
        self.guard = LogGuard(self.log, Deadlines.from_write_timeout(settings.write_timeout), self.stats)
        #: each stream's frames go to the log in the order they were fed here (not waiting longer
        #: than a write for a connection whose writer is stuck on a client that does not read)
        self.order = FeedOrder(settings.write_timeout)
        self.warnings = Throttle()  # one line every few seconds per kind of event said by the pipeline
        self.polling_replays = PollingReplays()  # long-polling responses with replays, until sent
        self.replays_in_flight = ReplaysInFlight()  # websocket replays being sent, per user
        self.polling_feeds = PollingFeeds()  # long-polling sessions per user, and whether they are fed
        #: what the copy of a frame another tab here logged is numbered (kept well within the log's maxlen)
        self.recent = RecentEntries(max(1, min(settings.maxlen // 2, MAX_ENTRIES)))
        self.replay_turns = Turns()  # one replay page (or first read) per loop iteration, whoever asked
        self._jwt = JwtKey(settings.jwt_secret, settings.jwt_algorithms) if settings.jwt_secret else None
        self.resolver = PrincipalResolver(settings.principal, self._principal_key(settings), self._jwt)
        self._ready = False
        self._unsupported = False
        self._background: set[asyncio.Task[Any]] = set()  # tasks of in_background(), until they end
        #: frame -> how to stamp it (see Classifier._stamping): shared by the copies of an emit
        self.stamping_cache: dict[str, Stamping | None] = {}
        self.stamping_cache_chars = 0  # the length of the frames it keeps
        #: the last stream frame too large for it, and how to stamp it: the tabs of a user it is
        #: sent to do not each classify its megabytes (it stays alive until the next such frame)
        self.large_stamping: tuple[str, Stamping | None] | None = None
        self.closing = False  # the server is going down
        self.repairs = Repairs(self.guard, self.stats)  # streams the log missed frames of, until repaired
        self.closes = Closes(self.guard, self.stats, settings.recovery_window)  # sessions left on purpose
        self.held_frames = HeldFrames()  # what held connections here logged for recovery: the objects
        self.heartbeat = Heartbeat(self.guard)  # (a shared log: claims and newcomers elsewhere read it)
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
        if not self.log.shared:  # one process: any key will do
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

    async def ready(self) -> None:
        """Before the first connection's frames: connect the log, learn its clock, load its scripts.

        Best effort, once (again after a failure, once the log may be back): a log that does not
        answer now costs this connection's first frames their stamps, never the connection.
        """
        if self._ready or not self.guard.available():
            return
        try:
            await self.guard.call(self.guard.deadlines.prepare, self.log.prepare)
        except LogUnsupported as exc:
            if not self._unsupported:  # (said once: the log answers, and will not change its mind)
                self._unsupported = True
                logger.error("%s", exc, extra=fault("log_unsupported", reason=str(exc)))
            return
        except LogUnavailable:
            return
        self._ready = True
        if self.log.shared:
            self.heartbeat.start()

    async def aclose(self) -> None:
        self.closing = True
        await self.heartbeat.aclose()
        self.repairs.close()
        await self.closes.aclose()
        await self.log.aclose()
