"""Redis Streams log: one Redis stream per :class:`~asgi_resume.log.StreamKey` (a principal's view
of a stream), shared by every worker and host.

Keys of one stream key share a ``{hash tag}`` so the scripts, which touch all of them at
once, also run on Redis Cluster. Entries hold msgpack payloads. Owns: the keys, the scripts'
arguments and what their replies mean. Each call is one pipelined round trip of ``EVALSHA``
however many frames and streams it carries (:mod:`~asgi_resume.log.redis_scripts` runs them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.exceptions import RedisError
from redis.utils import HIREDIS_AVAILABLE

from asgi_resume.log.base import (
    BEAT_KEPT_MS,
    CLAIM_SLACK_MS,
    COPY_WINDOW_MS,
    LATE,
    NOT_FOUND,
    SCAN_AHEAD,
    AppendRequest,
    AppendResult,
    Claim,
    LogLimits,
    LogUnavailable,
    Note,
    ReplayResult,
    SessionAppend,
    SessionAppendResult,
    SessionReplay,
    StreamKey,
)
from asgi_resume.log.names import new_epoch
from asgi_resume.log.redis_scripts import MAX_CONNECTIONS, RedisScripts

#: what parses Redis's replies: hiredis (C) when installed, as the dependency asks, else redis-py's Python
REPLY_PARSER = "hiredis" if HIREDIS_AVAILABLE else "python"


class RedisLog:
    """A :class:`~asgi_resume.log.StreamLog` on Redis, Valkey or Redis Cluster."""

    synchronous = False
    shared = True

    def __init__(self, client: Redis | RedisCluster, prefix: str = "asgi_resume", limits: LogLimits | None = None):
        self.client = client
        self.prefix = prefix
        self.limits = limits or LogLimits()
        self.scripts = RedisScripts(client)
        self._call = self.scripts.call
        self.now_ms = self.scripts.now_ms  # Redis's clock as this process reckons it (hot: no wrapper)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "asgi_resume", limits: LogLimits | None = None, cluster: bool = False
    ) -> RedisLog:
        # no socket timeout: every call is timed by the guard (its deadlines, from
        # ASGI_RESUME_WRITE_TIMEOUT), and redis-py runs each write of a client with one under
        # ``asyncio.wait_for``, which on CPython 3.11 costs a task and three loop iterations per
        # round trip (five in all, two without): a frame waiting for its append then waits behind
        # whatever else the loop runs
        options: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": None}
        client: Redis | RedisCluster
        if cluster:
            client = RedisCluster.from_url(url, max_connections=16 * MAX_CONNECTIONS, **options)
        else:
            # calls wait for one of a bounded set of connections (a reconnect storm of a thousand
            # replays must queue, not fail for want of connections)
            pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=5, **options)
            client = Redis.from_pool(pool)  # (its own pool: closed with it, connections and all)
        return cls(client, prefix, limits)

    def keys(self, key: StreamKey) -> list[str]:
        """The stream key's Redis keys; all carry the same hash tag, so one cluster slot holds them."""
        base = f"{self.prefix}:{{{key.tag()}}}"
        return [f"{base}:log", f"{base}:meta"]

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        calls = []
        refused: dict[int, str] = {}  # requests that cannot be sent: only they fail
        now, error = self.now_ms(), self.scripts.clock_error_ms
        for i, request in enumerate(requests):
            # what Redis runs past this its caller has given up on: refused (the reckoning's error
            # taken off, so that a call that lands is answered in time)
            not_after = now + max(1, request.within_ms - error) if request.within_ms else 0
            try:
                calls.append((self.keys(request.key), self._append_args(request, not_after)))
            except (UnicodeError, ValueError, TypeError, OverflowError) as exc:
                refused[i] = f"cannot encode the request: {exc}"
        replies = iter(await self._call("append", calls, isolated=True) if calls else [])
        results, late = [], False
        for i in range(len(requests)):
            reply = refused.get(i) or next(replies)
            if isinstance(reply, str | Exception):
                results.append(AppendResult("", [], failed=str(reply) or type(reply).__name__))
            elif len(reply) == 1:  # {'late'}: it ran after its deadline, and wrote nothing
                results.append(AppendResult("", [], failed=LATE))
                late = True
            else:
                seqs = [int(seq) for seq in reply[3:]]
                results.append(AppendResult(_text(reply[0]), seqs, int(reply[1]), continued=_text(reply[2])))
        if late:  # its caller had not given up on it: this host's reckoning of Redis's clock is off
            await self.scripts.resync()
        return results

    def _append_args(self, request: AppendRequest, not_after: int) -> list[Any]:
        """The script's arguments, packed in one: redis-py encodes each argument on its own, which
        was most of an append's cost here for a room's tabs (a few frames each)."""
        limits = self.limits
        frames: list[Any] = []
        for entry in request.entries:
            frames += [entry.digest, "1" if entry.done else "0", entry.received_ms, msgpack.packb(entry.payload)]
        arguments = [
            request.since_ms,
            request.cursor_epoch or "",
            request.cursor_seq,
            str(limits.maxlen),
            str(limits.ttl_ms),
            str(limits.done_ttl_ms),
            request.fresh_epoch or new_epoch(),
            "1" if request.reset else "0",
            request.connection,
            frames,
            request.skipped,
            COPY_WINDOW_MS,
            "1" if request.held else "0",
            request.reset_epoch,
            not_after,
            request.lookback_ms,
            SCAN_AHEAD,
            "1" if request.rejoining else "0",
        ]
        return [msgpack.packb(arguments, use_bin_type=False)]  # (Redis's cmsgpack knows no bin type)

    async def replay(
        self,
        key: StreamKey,
        after_seq: int,
        epoch: str | None,
        connection: str,
        limit: int | None = None,
        max_bytes: int | None = None,
    ) -> ReplayResult:
        args = [after_seq, epoch or "", limit or 0, connection, max_bytes or 0]
        async with self.scripts.reads:
            (reply,) = await self._call("replay", [(self.keys(key), args)])
        if reply[0] != b"ok":
            return NOT_FOUND
        _, epoch_b, last, oldest, done, gap, *rest = reply
        frames = [(int(rest[i]), msgpack.unpackb(rest[i + 1])) for i in range(0, len(rest), 2)]
        return ReplayResult("ok", _text(epoch_b), int(last), int(oldest), done == b"1", bool(gap), frames)

    async def orphan(self, keys: Sequence[StreamKey], connection: str) -> None:
        calls = [([self.keys(key)[1]], [connection]) for key in keys]
        if calls:
            await self._call("orphan", calls)

    # -- recovery sessions --------------------------------------------------------------------

    def session_keys(self, pid: str, gen: str | None = None) -> list[str]:
        """A session's meta and, given a generation, that generation's log: one hash tag."""
        meta = f"{self.prefix}:{{{pid}}}:rmeta"
        return [meta] if gen is None else [meta, self._generations(pid) + gen]

    def _generations(self, pid: str) -> str:
        """What the names of a session's generation logs start with (a generation ends each)."""
        return f"{self.prefix}:{{{pid}}}:r:"

    async def session_append(self, requests: Sequence[SessionAppend]) -> list[SessionAppendResult]:
        limits = self.limits
        calls = []
        for r in requests:
            args: list[Any] = [r.gen, r.owner, r.principal, r.namespace, limits.ttl_ms, limits.maxlen, r.flushed_ms]
            args += [1 if r.fetched else 0, 1 if r.starts else 0]
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
        self, pid: str, principal: str, namespace: str, gen: str, claimer: str, new_gen: str, window_ms: int
    ) -> Claim:
        args = [principal, gen, claimer, new_gen, self.now_ms(), window_ms, self.limits.ttl_ms, namespace]
        args.append(self._generations(pid))  # (the log it drops is of a generation only Redis knows)
        (reply,) = await self._call("session_claim", [(self.session_keys(pid), args)])
        return Claim(_text(reply[0]))  # type: ignore[arg-type]

    async def session_read(
        self, pid: str, gen: str, after: int, force: bool, limit: int = 0, max_bytes: int = 0, until: int = 0
    ) -> SessionReplay:
        args = [after, 1 if force else 0, gen, CLAIM_SLACK_MS, limit, max_bytes, until]
        (reply,) = await self._call("session_read", [(self.session_keys(pid, gen), args)])
        status = _text(reply[0])
        if status != "ok":
            return SessionReplay(status)  # type: ignore[arg-type]
        rest = reply[3:]
        frames = [(int(rest[i]), int(rest[i + 1]), msgpack.unpackb(rest[i + 2])) for i in range(0, len(rest), 3)]
        return SessionReplay("ok", frames, _text(reply[1]), int(reply[2]))

    async def session_note(self, pid: str, action: Note, gen: str, owner: str) -> tuple[str, str]:
        (reply,) = await self._call(
            "session_note", [(self.session_keys(pid, gen), [action, gen, owner, self.now_ms()])]
        )
        return _text(reply[0]), _text(reply[1])

    async def beat(self, process: str) -> None:
        try:
            await self.client.set(f"{self.prefix}:beat:{process}", self.now_ms(), px=BEAT_KEPT_MS)
        except (RedisError, OSError) as exc:
            raise LogUnavailable(str(exc) or type(exc).__name__) from exc

    async def last_beat(self, process: str) -> int | None:
        try:
            found = await self.client.get(f"{self.prefix}:beat:{process}")
        except (RedisError, OSError) as exc:
            raise LogUnavailable(str(exc) or type(exc).__name__) from exc
        return int(found) if found is not None else None

    async def prepare(self) -> None:
        """Connect, check the version, learn the clock and load the scripts now, so the first
        frames pay none of it."""
        await self.scripts.prepare()

    async def aclose(self) -> None:
        await self.scripts.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
