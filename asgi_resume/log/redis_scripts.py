"""How the Redis log talks to Redis: its Lua scripts, run by SHA in pipelined round trips.

Owns: the scripts (loaded once, again for the calls that got ``NOSCRIPT``), the bounded number
of calls and replay reads in flight, Redis's clock as seen from this host, the server version
check at start-up, and sorting failures into :class:`~asgi_resume.log.LogUnavailable` (the server
or the connection) and :class:`~asgi_resume.log.LogRefused` (a call's own keys). Must not touch:
what the scripts' arguments and replies mean (:mod:`~asgi_resume.log.redis`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, RedisError, ResponseError

from asgi_resume.log.base import LogRefused, LogUnavailable, LogUnsupported

SCRIPTS = ("append", "replay", "orphan", "session_append", "session_claim", "session_read", "session_note")
MAX_CONNECTIONS = 64
REPLAY_READS = 8
MIN_VERSION = (7, 0)  # the scripts use PEXPIRE ... NX (Redis 7.0; Valkey reports a 7.x redis_version)
_CLOCK_REFRESH_S = 60.0
#: a reading of Redis's clock is off by up to half its round trip: one that took longer than this
#: (Redis or the event loop slow) is not taken while an earlier one stands, and is tried again soon
_CLOCK_RTT_MAX_MS = 20.0
_CLOCK_RETRY_S = 1.0

#: one script call: its keys and its arguments
Call = tuple[list[str], list[Any]]


def _script(name: str) -> tuple[str, str]:
    """A Lua script's source and its SHA1 (what EVALSHA names it by)."""
    source = files("asgi_resume.log").joinpath(f"lua/{name}.lua").read_text("utf-8")
    return source, hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()


class RedisScripts:
    """The scripts of one Redis (or Cluster) client."""

    def __init__(self, client: Redis | RedisCluster) -> None:
        self.client = client
        self._scripts = {name: _script(name) for name in SCRIPTS}
        # calls wait their turn for a bounded number of connections (the cluster client has no
        # blocking pool: a reconnect storm would exhaust it)
        self._turns = asyncio.Semaphore(MAX_CONNECTIONS)
        # replay reads (a page of up to 100 entries each) in flight at once: a storm of resumes
        # queues here, not in Redis ahead of the live frames' appends
        self.reads = asyncio.Semaphore(REPLAY_READS)
        # Redis's clock (the scripts stamp Redis time) read at a monotonic instant: now_ms() goes on
        # from there, so a step of this host's wall clock between two readings changes nothing
        self._clock_ms, self._clock_at = time.time() * 1000, time.monotonic()
        self._clock_checked = -_CLOCK_REFRESH_S
        self._clock_read = False  # (until the first reading, this host's clock stands in for Redis's)
        #: how far now_ms() may be off Redis's clock (half the round trip of the reading taken)
        self.clock_error_ms = int(_CLOCK_RTT_MAX_MS)
        self._closed = False
        self._unsupported: str | None = None  # why this server cannot run the scripts

    async def call(self, script: str, calls: list[Call], *, isolated: bool = False) -> list[Any]:
        """EVALSHA ``script`` for each call in one pipelined round trip; load it on NOSCRIPT.

        A call can fail on its own keys (:func:`_own_fault`: a key of another type, a script error
        on what a key holds) while the server serves the others: ``isolated``, that call gets its
        exception in its place; otherwise it raises :class:`LogRefused`. Any other failure (the
        connection, the server's state: READONLY, NOREPLICAS, OOM, BUSY...) fails every call with
        :class:`LogUnavailable`.
        """
        source, sha = self._scripts[script]
        self._check_open()
        if time.monotonic() - self._clock_checked > _CLOCK_REFRESH_S:
            try:
                await self._sync_clock()
            except RedisError as exc:
                raise LogUnavailable(str(exc)) from exc
        try:
            async with self._turns:
                replies = await self._pipeline(sha, calls)
                missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if missing:  # only the calls that got NOSCRIPT run again (the others ran)
                    await self.client.script_load(source)
                    again = await self._pipeline(sha, [calls[i] for i in missing])
                    for i, reply in zip(missing, again, strict=True):
                        replies[i] = reply
        except (RedisError, OSError) as exc:
            raise LogUnavailable(str(exc) or type(exc).__name__) from exc
        for reply in replies:
            if isinstance(reply, Exception):
                if not _own_fault(reply):
                    raise LogUnavailable(str(reply) or type(reply).__name__) from reply
                if not isolated:
                    raise LogRefused(str(reply)) from reply
        return replies

    async def _pipeline(self, sha: str, calls: list[Call]) -> list[Any]:
        if len(calls) == 1:
            keys, args = calls[0]
            try:
                return [await self.client.evalsha(sha, len(keys), *keys, *args)]
            except ResponseError as exc:  # the call's own answer, as a pipeline gives it in its place
                return [exc]
        if isinstance(self.client, RedisCluster):
            # redis-py's cluster pipeline refuses EVALSHA: send the calls side by side instead
            # (one round trip to each node that holds one of their slots)
            client = self.client
            return list(
                await asyncio.gather(
                    *(client.evalsha(sha, len(keys), *keys, *args) for keys, args in calls), return_exceptions=True
                )
            )
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    def now_ms(self) -> int:
        """Redis's clock, as this host reckons it (to within half a round trip of the last reading)."""
        return int(self._clock_ms + (time.monotonic() - self._clock_at) * 1000)

    async def resync(self) -> None:
        """Read Redis's clock again now (a call found this host's reckoning of it off), or before
        the next call if Redis does not answer."""
        self._clock_checked = -_CLOCK_REFRESH_S
        with contextlib.suppress(RedisError, OSError):
            await self._sync_clock()

    async def _sync_clock(self) -> None:
        """Read Redis's clock: it was that at the middle of the round trip, give or take half of it."""
        started = time.monotonic()
        seconds, micros = await self.client.time()
        ended = time.monotonic()
        rtt_ms = (ended - started) * 1000
        self._clock_checked = ended
        if rtt_ms > _CLOCK_RTT_MAX_MS:
            self._clock_checked -= _CLOCK_REFRESH_S - _CLOCK_RETRY_S  # (read again soon)
            if self._clock_read:
                return  # the reading it has is closer than this one
        self._clock_ms, self._clock_at = seconds * 1000 + micros / 1000, (started + ended) / 2
        self.clock_error_ms, self._clock_read = int(rtt_ms / 2) + 1, True

    async def prepare(self) -> None:
        """Connect, check the version, learn the clock and load the scripts now, so the first
        frames pay none of it."""
        self._check_open()
        try:
            await self._check_version()
            await self._sync_clock()
            for source, _ in self._scripts.values():
                await self.client.script_load(source)
        except (RedisError, OSError) as exc:
            raise LogUnavailable(str(exc) or type(exc).__name__) from exc

    async def _check_version(self) -> None:
        """Refuse, once and for good, a server older than :data:`MIN_VERSION`."""
        info = await self.client.info("server")
        # (a cluster client answers for each node: the oldest one counts)
        found = [info] if "redis_version" in info else [node for node in info.values() if isinstance(node, dict)]
        versions = [str(node.get("redis_version", "")) for node in found]
        oldest = min(versions, key=_version, default="")
        if oldest and _version(oldest) < MIN_VERSION:
            self._unsupported = (
                f"Redis {oldest} is too old: asgi_resume needs Redis {'.'.join(map(str, MIN_VERSION))} or later "
                "(or Valkey); the log stays off and frames go out unstamped"
            )
            raise LogUnsupported(self._unsupported)

    def _check_open(self) -> None:
        # a connection that ends after shutdown (its lease release, say) must not reconnect a
        # closed client: it would be left open, with its sockets, for the garbage collector
        if self._closed:
            raise LogUnavailable("the log is closed (the server is shutting down)")
        if self._unsupported is not None:
            raise LogUnsupported(self._unsupported)

    async def aclose(self) -> None:
        self._closed = True
        await self.client.aclose()


#: error codes that tell the server's state, not a call's keys, when a command in a script fails
_SERVER_STATES = frozenset(
    ("OOM", "READONLY", "NOREPLICAS", "BUSY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MISCONF", "NOSCRIPT")
)


def _own_fault(error: Exception) -> bool:
    """Did a call fail on its own keys (not for the server's state)? A key of another type
    (``WRONGTYPE``), a script's runtime error on what a key holds (``ERR user_script:...``:
    redis-py drops the ``ERR``), or a command in the script refused for what a key holds (``The ID
    specified in XADD ... on @user_script:71``), unless its code says the server's state (``OOM
    ... on @user_script``). Read from the error's text: redis-py before 6 has no attribute for the
    code, and gives these codes no class of their own."""
    if type(error) is not ResponseError:
        return False
    text = str(error)
    if text.startswith(("WRONGTYPE ", "user_script:")):
        return True
    return "@user_script" in text and text.split(" ", 1)[0] not in _SERVER_STATES


def _version(text: str) -> tuple[int, ...]:
    """``"7.0.15"`` -> ``(7, 0, 15)``; what is not a number counts as 0."""
    return tuple(int(part) if part.isascii() and part.isdigit() else 0 for part in text.split(".")[:3])
