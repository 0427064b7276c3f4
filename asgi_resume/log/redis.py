"""Redis Streams log: one Redis stream per :class:`~asgi_resume.log.StreamKey` (a principal's view
of a stream), shared by every worker and host.

Keys of one stream key share a ``{hash tag}`` so the scripts, which touch all of them at
once, also run on Redis Cluster. Entries hold msgpack payloads. Each call is one
pipelined round trip of ``EVALSHA`` (scripts are loaded once, again after a
``NOSCRIPT``), however many frames and streams it carries.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import msgpack
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.utils import HIREDIS_AVAILABLE

from asgi_resume.log.base import (
    CLAIM_SLACK_MS,
    COPY_WINDOW_MS,
    NOT_FOUND,
    AppendRequest,
    AppendResult,
    Claim,
    LogLimits,
    LogRefused,
    LogUnavailable,
    LogUnsupported,
    Note,
    ReplayResult,
    SessionAppend,
    SessionAppendResult,
    SessionReplay,
    StreamKey,
    new_epoch,
)

_SCRIPTS = ("append", "replay", "release", "session_append", "session_claim", "session_read", "session_note")
_CLOCK_REFRESH_S = 60.0
MAX_CONNECTIONS = 64
REPLAY_READS = 8
MIN_VERSION = (7, 0)  # the scripts use PEXPIRE ... NX (Redis 7.0; Valkey reports a 7.x redis_version)
#: what parses Redis's replies: hiredis (C) when installed, as the dependency asks, else redis-py's Python
REPLY_PARSER = "hiredis" if HIREDIS_AVAILABLE else "python"


def _script(name: str) -> tuple[str, str]:
    """A Lua script's source and its SHA1 (what EVALSHA names it by)."""
    source = files("asgi_resume.log").joinpath(f"lua/{name}.lua").read_text("utf-8")
    return source, hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()


class RedisLog:
    """A :class:`~asgi_resume.log.StreamLog` on Redis, Valkey or Redis Cluster."""

    synchronous = False

    def __init__(self, client: Redis | RedisCluster, prefix: str = "asgi_resume", limits: LogLimits | None = None):
        self.client = client
        self.prefix = prefix
        self.limits = limits or LogLimits()
        self._scripts = {name: _script(name) for name in _SCRIPTS}
        # calls wait their turn for a bounded number of connections (the cluster client has no
        # blocking pool: a reconnect storm would exhaust it)
        self._turns = asyncio.Semaphore(MAX_CONNECTIONS)
        # replay reads (a page of up to 100 entries each) in flight at once: a storm of resumes
        # queues here, not in Redis ahead of the live frames' appends
        self._reads = asyncio.Semaphore(REPLAY_READS)
        self._clock_offset_ms = 0
        self._clock_checked = -_CLOCK_REFRESH_S
        self._closed = False
        self._unsupported: str | None = None  # why this server cannot run the scripts

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "asgi_resume", limits: LogLimits | None = None, cluster: bool = False
    ) -> RedisLog:
        options: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
        client: Redis | RedisCluster
        if cluster:
            client = RedisCluster.from_url(url, max_connections=16 * MAX_CONNECTIONS, **options)
        else:
            # calls wait for one of a bounded set of connections (a reconnect storm of a thousand
            # replays must queue, not fail for want of connections)
            pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=5, **options)
            client = Redis(connection_pool=pool, health_check_interval=30)
        return cls(client, prefix, limits)

    def keys(self, key: StreamKey) -> list[str]:
        """The stream key's Redis keys; all carry the same hash tag, so one cluster slot holds them."""
        base = f"{self.prefix}:{{{key.tag()}}}"
        return [f"{base}:log", f"{base}:meta"]

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self._clock_offset_ms

    async def _sync_clock(self) -> None:
        """Learn how far this host's clock is from Redis's (the scripts stamp Redis time)."""
        started = time.time()
        seconds, micros = await self.client.time()
        rtt = time.time() - started
        self._clock_offset_ms = int((seconds + micros / 1e6 - (started + rtt / 2)) * 1000)
        self._clock_checked = time.monotonic()

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        calls = []
        refused: dict[int, str] = {}  # requests that cannot be sent: only they fail
        for i, request in enumerate(requests):
            try:
                calls.append((self.keys(request.key), self._append_args(request)))
            except (UnicodeError, ValueError, TypeError, OverflowError) as exc:
                refused[i] = f"cannot encode the request: {exc}"
        replies = iter(await self._call("append", calls, isolated=True) if calls else [])
        results = []
        for i in range(len(requests)):
            reply = refused.get(i) or next(replies)
            if isinstance(reply, str | Exception):
                results.append(AppendResult("", [], failed=str(reply) or type(reply).__name__))
            else:
                results.append(AppendResult(_text(reply[0]), [int(seq) for seq in reply[2:]], int(reply[1])))
        return results

    def _append_args(self, request: AppendRequest) -> list[Any]:
        limits = self.limits
        frames: list[Any] = []  # one argument for all: redis-py encodes each argument on its own
        for entry in request.entries:
            frames += [entry.digest, "1" if entry.done else "0", entry.received_ms, msgpack.packb(entry.payload)]
        return [
            request.since_ms,
            request.cursor_epoch or "",
            request.cursor_seq,
            limits.maxlen,
            limits.ttl_ms,
            limits.done_ttl_ms,
            new_epoch(),
            1 if request.reset else 0,
            request.connection,
            msgpack.packb(frames, use_bin_type=False),  # Redis's cmsgpack knows no bin type
            msgpack.packb(request.skipped),
            COPY_WINDOW_MS,
            1 if request.held else 0,
            request.reset_epoch,
        ]

    async def replay(
        self, key: StreamKey, after_seq: int, epoch: str | None, connection: str, limit: int | None = None
    ) -> ReplayResult:
        args = [after_seq, epoch or "", limit or 0, connection]
        async with self._reads:
            (reply,) = await self._call("replay", [(self.keys(key), args)])
        if reply[0] != b"ok":
            return NOT_FOUND
        _, epoch_b, last, oldest, done, gap, *rest = reply
        frames = [(int(rest[i]), msgpack.unpackb(rest[i + 1])) for i in range(0, len(rest), 2)]
        return ReplayResult("ok", _text(epoch_b), int(last), int(oldest), done == b"1", bool(gap), frames)

    async def release(self, keys: Sequence[StreamKey], connection: str) -> None:
        calls = [([self.keys(key)[1]], [connection]) for key in keys]
        if calls:
            await self._call("release", calls)

    # -- recovery sessions --------------------------------------------------------------------

    def session_keys(self, pid: str, gen: str | None = None) -> list[str]:
        """A session's meta and, given a generation, that generation's log: one hash tag."""
        base = f"{self.prefix}:{{{pid}}}"
        return [f"{base}:rmeta"] if gen is None else [f"{base}:rmeta", f"{base}:r:{gen}"]

    async def session_append(self, requests: Sequence[SessionAppend]) -> list[SessionAppendResult]:
        limits = self.limits
        calls = []
        for r in requests:
            args: list[Any] = [r.gen, r.owner, r.principal, r.namespace, limits.ttl_ms, limits.maxlen, r.flushed_ms]
            args.append(1 if r.fetched else 0)
            for received_ms, payload in r.frames:
                args += [received_ms, msgpack.packb(payload)]
            calls.append((self.session_keys(r.pid, r.gen), args))
        if not calls:
            return []
        replies = await self._call("session_append", calls)
        return [
            SessionAppendResult(_text(reply[0]), [int(n) for n in reply[1:]])  # type: ignore[arg-type]
            for reply in replies
        ]

    async def session_claim(
        self, pid: str, principal: str, gen: str, claimer: str, new_gen: str, window_ms: int
    ) -> Claim:
        args = [principal, gen, claimer, new_gen, self.now_ms(), window_ms, self.limits.ttl_ms]
        (reply,) = await self._call("session_claim", [(self.session_keys(pid), args)])
        return Claim(_text(reply[0]))  # type: ignore[arg-type]

    async def session_read(self, pid: str, gen: str, after: int, force: bool) -> SessionReplay:
        (reply,) = await self._call(
            "session_read", [(self.session_keys(pid, gen), [after, 1 if force else 0, gen, CLAIM_SLACK_MS])]
        )
        status = _text(reply[0])
        if status != "ok":
            return SessionReplay(status)  # type: ignore[arg-type]
        rest = reply[1:]
        frames = [(int(rest[i]), int(rest[i + 1]), msgpack.unpackb(rest[i + 2])) for i in range(0, len(rest), 3)]
        return SessionReplay("ok", frames)

    async def session_note(self, pid: str, action: Note, gen: str, owner: str) -> tuple[str, str]:
        (reply,) = await self._call("session_note", [(self.session_keys(pid), [action, gen, owner, self.now_ms()])])
        return _text(reply[0]), _text(reply[1])

    async def _call(
        self, script: str, calls: list[tuple[list[str], list[Any]]], *, isolated: bool = False
    ) -> list[Any]:
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

    async def _pipeline(self, sha: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
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

    async def prepare(self) -> None:
        """Connect, learn the clock and load the scripts now, so the first frames pay none of it."""
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


def _own_fault(error: Exception) -> bool:
    """Did a call fail on its own keys (not for the server's state)? A key of another type
    (``WRONGTYPE``), or a script's runtime error on what a key holds (``ERR user_script:...``:
    redis-py drops the ``ERR``). Read from the error's code, its message's first word: redis-py
    before 6 has no attribute for it, and gives these codes no class of their own."""
    return type(error) is ResponseError and str(error).startswith(("WRONGTYPE ", "user_script:"))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _version(text: str) -> tuple[int, ...]:
    """``"7.0.15"`` -> ``(7, 0, 15)``; what is not a number counts as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in text.split(".")[:3])
