"""Epochs: a log that is lost and re-created gets a new epoch, and a resume naming the old one is a gap."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from asgi_resume.log.base import LogLimits, new_epoch
from asgi_resume.log.memory import MemoryLog
from tests.support.app import emit_tokens, make_app, make_sio
from tests.support.raw import RawClient
from tests.support.redis_server import RedisServer
from tests.support.server import serve

pytestmark = pytest.mark.anyio


async def check_new_epoch_after_loss(url: str, sio: object, lose: object) -> None:
    client = await RawClient(url, auth={"token": "alice"}).connect()
    await emit_tokens(sio, "alice", "m", 1, 5)  # type: ignore[arg-type]
    assert await client.wait_seqs("m", 5) == [1, 2, 3, 4, 5]
    old_epoch = client.events()[0]["epoch"]

    await lose()  # type: ignore[operator]
    await emit_tokens(sio, "alice", "m", 6, 8)  # type: ignore[arg-type]
    assert (await client.wait_seqs("m", 8))[5:] == [1, 2, 3]
    new_epoch = client.events()[-1]["epoch"]
    assert new_epoch != old_epoch

    answer = await client.request("resume-stream", {"message_id": "m", "last_seq": 5, "epoch": old_epoch}, ack_id=1)
    assert answer["ok"] is True
    assert answer["gap"] is True  # not a silent replay of another history
    assert answer["epoch"] == new_epoch
    assert answer["replayed"] == 3
    current = await client.request("resume-stream", {"message_id": "m", "last_seq": 2, "epoch": new_epoch}, ack_id=2)
    assert current["gap"] is False
    assert current["replayed"] == 1
    await client.close()


async def test_flushall_mid_stream(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "flush").start()
    sio = make_sio()
    app = make_app(sio, redis_url=server.url)
    redis = aioredis.Redis.from_url(server.url)

    async def flush() -> None:
        await redis.flushall()

    try:
        async with serve(app) as url:
            await check_new_epoch_after_loss(url, sio, flush)
    finally:
        await redis.aclose()
        await app.runtime.aclose()
        server.stop()


async def test_expiry_on_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "expiry").start()
    sio = make_sio()
    app = make_app(sio, redis_url=server.url, ttl=0.5)
    redis = aioredis.Redis.from_url(server.url)
    await redis.config_set("notify-keyspace-events", "Ex")
    events = redis.pubsub()
    await events.subscribe("__keyevent@0__:expired")

    async def expire() -> None:
        expired: set[bytes] = set()
        async with asyncio.timeout(10):
            while not any(key.endswith(b":meta") for key in expired):  # Redis tells us when it expires it
                message = await events.get_message(ignore_subscribe_messages=True, timeout=5)
                if message is not None:
                    expired.add(message["data"])

    try:
        async with serve(app) as url:
            await check_new_epoch_after_loss(url, sio, expire)
    finally:
        await events.aclose()
        await redis.aclose()
        await app.runtime.aclose()
        server.stop()


async def test_expiry_in_memory() -> None:
    now = [1_000_000.0]
    log = MemoryLog(LogLimits(ttl_ms=60_000), clock=lambda: now[0])
    sio = make_sio()
    app = make_app(sio, log=log)

    async def expire() -> None:
        now[0] += 61  # the log's clock moves past the stream's TTL

    async with serve(app) as url:
        await check_new_epoch_after_loss(url, sio, expire)


def test_a_forked_worker_draws_other_epochs_than_its_parent() -> None:
    """Epochs come from a generator of the process's own (no system call each): a worker forked
    from the process that imported the middleware must not draw the same ones (two workers would
    then start the same epoch for one stream's two histories)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next epochs, then out (no pytest teardown in the child)
        os.write(write, "".join(new_epoch() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    mine = "".join(new_epoch() for _ in range(4))
    with os.fdopen(read) as pipe:
        theirs = pipe.read()
    os.waitpid(pid, 0)
    assert len(theirs) == len(mine) == 32
    assert theirs != mine
