"""What the Redis log holds, and what happens when Redis goes away.

Talks to real redis-server processes that the tests start on free loopback ports.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from asgi_resume.log import AppendRequest, LogUnavailable, StreamKey
from asgi_resume.log.base import Entry, LogLimits
from asgi_resume.log.redis import RedisLog
from tests.support.app import chat_event, emit_tokens, make_app, make_sio, room_of
from tests.support.keys import redis_keys
from tests.support.raw import RawClient
from tests.support.redis_server import RedisServer
from tests.support.server import serve
from tests.support.waits import until

pytestmark = pytest.mark.anyio
_prefixes = itertools.count()


@pytest.fixture
def prefix() -> str:
    return f"rl{next(_prefixes)}"


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_entries_are_msgpack_with_one_key_per_stream(
    redis_server: RedisServer, redis: aioredis.Redis, prefix: str
) -> None:
    sio = make_sio()
    app = make_app(sio, redis_url=redis_server.url, key_prefix=prefix)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice-token"}).connect()
        await emit_tokens(sio, "alice-token", "msg-1", 1, 5)
        await client.wait_seqs("msg-1", 5)
        await client.close()

    log_key, meta_key = await redis_keys(redis, prefix, "alice-token", "msg-1")
    keys = sorted(k.decode() for k in await redis.keys(f"{prefix}:*") if not k.startswith(f"{prefix}:beat:".encode()))
    assert keys == sorted([log_key, meta_key])  # (and the process's heartbeat)
    assert "msg-1" not in log_key  # the key names the principal's view, hashed: never a raw id
    slots = {key_slot(k.encode()) for k in keys if "{" in k}
    assert len(slots) == 1  # one hash tag: the scripts also run on Redis Cluster
    assert await redis.type(log_key) == b"stream"
    entries = await redis.xrange(log_key)
    assert [entry_id for entry_id, _ in entries] == [f"{i}-0".encode() for i in range(1, 6)]
    head, tail = msgpack.unpackb(entries[0][1][b"f"])
    assert head + '"seq":1,"epoch":"x"' + tail == '42["events",{"seq":1,"epoch":"x",' + (
        '"chat_id":"chat-1","message_id":"msg-1","data":{"type":"chat:completion","data":{"content":"tok1 "}}}]'
    )
    meta = await redis.hgetall(meta_key)
    assert meta[b"seq"] == b"5"
    assert meta[b"done"] == b"0"
    assert len(meta[b"epoch"]) == 8


async def test_principals_are_stored_hashed(redis_server: RedisServer, redis: aioredis.Redis, prefix: str) -> None:
    sio = make_sio()
    app = make_app(sio, redis_url=redis_server.url, key_prefix=prefix)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "raw-credential-123"}).connect()
        await emit_tokens(sio, "raw-credential-123", "m", 1, 2)
        await client.wait_seqs("m", 2)
        await client.close()
    log_key, _ = await redis_keys(redis, prefix, "raw-credential-123", "m")
    assert await redis.xlen(log_key) == 2
    for key in await redis.keys(f"{prefix}:*"):
        dump = await redis.dump(key)
        assert b"raw-credential-123" not in dump, key


async def test_maxlen_and_ttls(redis_server: RedisServer, redis: aioredis.Redis, prefix: str) -> None:
    sio = make_sio()
    app = make_app(sio, redis_url=redis_server.url, key_prefix=prefix, maxlen=100, ttl=600, done_ttl=20)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        await emit_tokens(sio, "alice", "long", 1, 1000)
        await client.wait_seqs("long", 1000)
        keys = await redis_keys(redis, prefix, "alice", "long")
        assert 100 <= await redis.xlen(keys[0]) < 300  # MAXLEN ~ trims whole nodes
        for key in keys:
            assert 590_000 < await redis.pttl(key) <= 600_000
        await sio.emit("events", chat_event("long", 1001, done=True), room=room_of("alice"))
        await client.wait_seqs("long", 1001)
        for key in keys:
            assert 0 < await redis.pttl(key) <= 20_000
        # frames after done (a title, a follow-up) are still logged, within the same grace
        await sio.emit(
            "events", {"message_id": "long", "data": {"type": "chat:title", "data": "t"}}, room=room_of("alice")
        )
        await client.wait_seqs("long", 1002)
        assert (await redis.xrevrange(keys[0], count=1))[0][0] == b"1002-0"
        for key in keys:
            assert 0 < await redis.pttl(key) <= 20_000
        await client.close()


async def test_two_processes_share_one_seq_per_stream(redis_server: RedisServer, prefix: str) -> None:
    """Two middleware instances (as two workers would) take turns logging one stream: one sequence."""
    sio_a, sio_b = make_sio(), make_sio()
    app_a = make_app(sio_a, redis_url=redis_server.url, key_prefix=prefix)
    app_b = make_app(sio_b, redis_url=redis_server.url, key_prefix=prefix)
    async with serve(app_a) as url_a, serve(app_b) as url_b:
        on_a = await RawClient(url_a, auth={"token": "alice"}).connect()
        on_b = await RawClient(url_b, auth={"token": "alice"}).connect()
        for block in range(4):  # each instance sends its own frames: the other never sees them
            sio, client = (sio_a, on_a) if block % 2 == 0 else (sio_b, on_b)
            await emit_tokens(sio, "alice", "shared", block * 10 + 1, block * 10 + 10)
            await client.wait_seqs("shared", (block // 2 + 1) * 10)
        assert on_a.seqs("shared") == [*range(1, 11), *range(21, 31)]
        assert on_b.seqs("shared") == [*range(11, 21), *range(31, 41)]
        # and either worker replays the whole stream
        answer = await on_b.request("resume-stream", {"message_id": "shared", "last_seq": 0}, ack_id=1)
        assert answer["replayed"] == 40
        assert [e["data"]["data"]["content"] for e in on_b.events()[20:]] == [f"tok{i} " for i in range(1, 41)]
        await on_a.close()
        await on_b.close()


async def test_redis_outage_never_stops_live_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, prefix: str
) -> None:
    server = RedisServer(tmp_path / "flaky").start()
    sio = make_sio()
    app = make_app(sio, redis_url=server.url, key_prefix=prefix, write_timeout=0.2)
    try:
        async with serve(app) as url:
            client = await RawClient(url, auth={"token": "alice"}).connect()
            await emit_tokens(sio, "alice", "m", 1, 5)
            assert await client.wait_seqs("m", 5) == [1, 2, 3, 4, 5]
            epoch = client.events()[0]["epoch"]

            server.kill()
            with caplog.at_level(logging.WARNING, logger="asgi_resume"):
                await emit_tokens(sio, "alice", "m", 6, 10)
                seqs = await client.wait_seqs("m", 10)
            assert seqs[5:] == [None] * 5  # delivered, unstamped
            assert [e["data"]["data"]["content"] for e in client.events()[5:]] == [f"tok{i} " for i in range(6, 11)]
            assert any("stream log unavailable" in r.getMessage() for r in caplog.records)
            answer = await client.request("resume-stream", {"message_id": "m", "last_seq": 5}, ack_id=1)
            assert answer == {
                "message_id": "m",
                "ok": False,
                "error": "unavailable",
                "detail": "the stream log is not reachable; try again",
            }
            assert app.runtime.stats.log_failures >= 1

            server.start()  # an empty Redis on the same port: the old history is gone
            i = 10
            async with asyncio.timeout(15):  # until the middleware tries the log again and it answers
                while client.seqs("m")[-1] is None:
                    i += 1
                    await emit_tokens(sio, "alice", "m", i, i)
                    await client.wait_seqs("m", i)
            await emit_tokens(sio, "alice", "m", i + 1, i + 1)
            seqs = await client.wait_seqs("m", i + 1)
            new_epoch = client.events()[-1]["epoch"]
            assert seqs[-2:] == [1, 2]
            assert new_epoch != epoch
            # the lost stretch is a gap, not a silent partial replay
            gap = await client.request("resume-stream", {"message_id": "m", "last_seq": 5, "epoch": epoch}, ack_id=2)
            assert gap["ok"] is True
            assert gap["gap"] is True
            assert gap["epoch"] == new_epoch
            await client.close()
    finally:
        server.stop()
        await app.runtime.aclose()


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
async def test_a_closed_log_refuses_work_instead_of_reconnecting(
    request: pytest.FixtureRequest, cluster: bool, prefix: str
) -> None:
    """A connection ending after shutdown (it releases its streams) must not reopen the client.

    A reopened client would be left with open sockets, reported as unclosed when collected.
    """
    server = request.getfixturevalue("redis_cluster" if cluster else "redis_server")
    log = RedisLog.from_url(server.url, prefix=prefix, cluster=cluster)
    await log.prepare()
    key = StreamKey("p", "/", "", "m")
    await log.orphan([key], "conn")  # works while open
    await log.aclose()
    with pytest.raises(LogUnavailable, match="closed"):
        await log.orphan([key], "conn")
    with pytest.raises(LogUnavailable, match="closed"):
        await log.append([AppendRequest(key, [])])
    if cluster:
        assert log.client._initialize  # type: ignore[union-attr]  # still closed: nothing reconnected it


async def test_the_lifespan_shutdown_closes_the_log(redis_server: RedisServer, prefix: str) -> None:
    """Under uvicorn's default lifespan, the app's shutdown closes the middleware's Redis client."""
    app = make_app(make_sio(), redis_url=redis_server.url, key_prefix=prefix)
    await app.runtime.log.orphan([StreamKey("p", "/", "", "m")], "conn")  # the client is connected
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        inbox.put_nowait(message)
    sent: list[str] = []

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    async with asyncio.timeout(10):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)  # type: ignore[arg-type]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    with pytest.raises(LogUnavailable, match="closed"):
        await app.runtime.log.orphan([StreamKey("p", "/", "", "m")], "conn")


async def test_workers_without_a_secret_hash_principals_alike_even_after_a_flush(
    redis_server: RedisServer, redis: aioredis.Redis, prefix: str
) -> None:
    """With ASGI_RESUME_SECRET unset, every worker derives the same key: no key in Redis to lose."""
    sio_a, sio_b = make_sio(), make_sio()
    app_a = make_app(sio_a, redis_url=redis_server.url, key_prefix=prefix)
    async with serve(app_a) as url_a:
        first = await RawClient(url_a, auth={"token": "alice"}).connect()
        await emit_tokens(sio_a, "alice", "before", 1, 3)
        await first.wait_seqs("before", 3)
        await redis.flushall()  # an operator's mistake, or a Redis that lost its data
        app_b = make_app(sio_b, redis_url=redis_server.url, key_prefix=prefix)  # a worker started after it
        async with serve(app_b) as url_b:
            await emit_tokens(sio_a, "alice", "after", 1, 5)
            await first.wait_seqs("after", 5)
            on_b = await RawClient(url_b, auth={"token": "alice"}).connect()
            answer = await on_b.request("resume-stream", {"message_id": "after", "last_seq": 0}, ack_id=1)
            assert answer["replayed"] == 5
            await on_b.close()
        await first.close()


class _OldRedis:
    """A server that speaks enough RESP to say it is Redis 6.2 (Debian ships no Redis 6 to test with).

    Answers INFO with its version and refuses every other command, as a Redis 6 refuses the
    scripts' ``PEXPIRE ... NX``.
    """

    def __init__(self) -> None:
        self.commands: list[str] = []

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:  # (a client that leaves, or the server closing, ends it)
            while header := await reader.readline():
                words = []
                for _ in range(int(header[1:])):  # an array of bulk strings
                    length = int((await reader.readline())[1:])
                    words.append((await reader.readexactly(length + 2))[:-2].decode())
                self.commands.append(words[0].upper())
                if words[0].upper() == "INFO":
                    body = b"# Server\r\nredis_version:6.2.14\r\n"
                    writer.write(b"$%d\r\n%s\r\n" % (len(body), body))
                else:
                    writer.write(b"-ERR unknown command\r\n")
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def test_a_redis_too_old_is_refused_at_start_up_and_frames_still_flow(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis < 7.0: one clear ERROR at start-up; the log stays off; the app's frames go out unstamped."""
    too_old = (
        "Redis 6.2.14 is too old: asgi_resume needs Redis 7.0 or later (or Valkey); "
        "the log stays off and frames go out unstamped"
    )

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    old = _OldRedis()
    async with old as url:
        # the lifespan start-up says it, before any connection
        app = make_app(make_sio(), redis_url=url, key_prefix=prefix)
        inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        sent: list[str] = []

        async def send(message: dict[str, str]) -> None:
            sent.append(message["type"])
            if message["type"] == "lifespan.startup.complete":
                assert errors() == [too_old]
                inbox.put_nowait({"type": "lifespan.shutdown"})

        inbox.put_nowait({"type": "lifespan.startup"})
        with caplog.at_level(logging.INFO, logger="asgi_resume"):
            async with asyncio.timeout(10):
                await app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)  # type: ignore[arg-type]
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

        # without a lifespan, the first CONNECT says it; the app works, its frames unstamped
        caplog.clear()
        sio = make_sio()
        app = make_app(sio, redis_url=url, key_prefix=prefix)
        with caplog.at_level(logging.INFO, logger="asgi_resume"):
            async with serve(app) as server_url:
                client = await RawClient(server_url, auth={"token": "alice"}).connect()
                await emit_tokens(sio, "alice", "m1", 1, 3)
                assert await client.wait_seqs("m1", 3) == [None, None, None]
                answer = await client.request("resume-stream", {"message_id": "m1", "last_seq": 0}, ack_id=7)
                assert answer["error"] == "unavailable"
                await client.close()
                with pytest.raises(LogUnavailable, match="too old"):
                    await app.runtime.log.append([AppendRequest(StreamKey("p", "/", "", "m"), [])])
        assert errors() == [too_old]  # once, however many calls were refused
    assert "EVALSHA" not in old.commands
    assert "SCRIPT" not in old.commands


def test_the_parts_of_a_stream_key_never_run_into_each_other() -> None:
    """A variant and a stream id that hold the separator of a plain join name two keys, not one."""
    assert StreamKey("p", "/", "v\x00x", "s").tag() != StreamKey("p", "/", "v", "x\x00s").tag()
    assert StreamKey("p", "/", "", "\ud800").tag() != StreamKey("p", "/", "", "\udc00").tag()


async def test_a_resume_reads_the_log_while_redis_refuses_writes(tmp_path: Path) -> None:
    """Found by attack: with Redis out of memory (maxmemory, noeviction) a resume answered
    ``unavailable`` though its frames were there to read: the replay script notes who read the
    stream (a write), and that failed the whole read. The note is skipped; the replay is served."""
    server = RedisServer(tmp_path / "oom").start()
    log = RedisLog.from_url(server.url, prefix="oom", limits=LogLimits())
    try:
        key = StreamKey("alice", "/", "", "m")
        entries = [
            Entry(f"d{i}", ['42["events",{', f'"message_id":"m","t":{i}}}]'], False, log.now_ms()) for i in (1, 2)
        ]
        (result,) = await log.append([AppendRequest(key, entries, since_ms=log.now_ms() - 1000, connection="tab")])
        assert result.seqs == [1, 2]
        admin = aioredis.Redis.from_url(server.url)
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", "1")
        try:
            replay = await log.replay(key, 0, result.epoch, "reload")
        finally:
            await admin.config_set("maxmemory", "0")
            await admin.aclose()
        assert (replay.status, replay.last_seq, [seq for seq, _ in replay.frames]) == ("ok", 2, [1, 2])
    finally:
        await log.aclose()
        server.stop()


async def test_closing_the_log_closes_its_connections(tmp_path: Path) -> None:
    """Found by attack: ``aclose()`` left the pooled connections open (a client given a pool does
    not close it), though the middleware says it closes them at the lifespan's shutdown."""
    server = RedisServer(tmp_path).start()
    log = RedisLog.from_url(server.url, prefix="closing")
    watcher = aioredis.Redis.from_url(server.url)
    try:
        await log.prepare()
        await asyncio.gather(*(log.last_beat(f"p{i}") for i in range(5)))  # (several connections at once)

        async def others() -> int:
            return len(await watcher.client_list()) - 1  # (the watcher's own is one)

        assert await others() >= 2
        await log.aclose()

        async def none_left() -> bool:
            return await others() == 0

        await until(none_left, 10)
    finally:
        await watcher.aclose()
        server.stop()
