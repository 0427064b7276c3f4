"""Epochs: a log that is lost and re-created gets a new epoch, and a resume naming the old one is a gap."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from asgi_resume.log.base import LogLimits
from asgi_resume.log.memory import MemoryLog
from asgi_resume.log.names import new_epoch
from tests.conftest import Stack
from tests.support.app import PacedStream, chat_event, emit_tokens, make_app, make_sio, room_of
from tests.support.polling import PollingClient, event_args
from tests.support.raw import RawClient
from tests.support.redis_server import RedisServer
from tests.support.server import serve

pytestmark = pytest.mark.anyio


async def check_new_epoch_after_loss(url: str, sio: object, lose: object, newcomer_first: bool = False) -> None:
    client = await RawClient(url, auth={"token": "alice"}).connect()
    await emit_tokens(sio, "alice", "m", 1, 5)  # type: ignore[arg-type]
    assert await client.wait_seqs("m", 5) == [1, 2, 3, 4, 5]
    old_epoch = client.events()[0]["epoch"]

    await lose()  # type: ignore[operator]
    if newcomer_first:
        await check_a_newcomer_first_is_told_the_start_is_gone(url, sio, client)
        await client.close()
        return
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


async def check_a_newcomer_first_is_told_the_start_is_gone(url: str, sio: object, client: RawClient) -> None:
    """Found by attack: after the loss, a new tab logged the stream's next frame first (the app
    sent it to that tab alone), so the epoch it made did not know the stream began before it;
    the older tab's copy then came with an epoch that is gone. A fresh tab's resume "from the
    start" was told ``gap: false`` without the first five frames."""
    newcomer = await RawClient(url, auth={"token": "alice"}).connect()
    reply = next(f for f in newcomer.frames if isinstance(f, str) and f.startswith("40{"))
    await sio.emit("events", chat_event("m", 6), to=json.loads(reply[2:])["sid"])  # type: ignore[attr-defined]
    await newcomer.wait_seqs("m", 1)
    await client.wait_seqs("m", 5)
    await emit_tokens(sio, "alice", "m", 7, 7)  # type: ignore[arg-type]
    await client.wait_seqs("m", 6)  # the older tab logged its copy of 7 (its epoch: the lost one)
    await newcomer.wait_seqs("m", 2)
    fresh = await RawClient(url, auth={"token": "alice"}).connect()
    answer = await fresh.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
    assert (answer["ok"], answer["gap"]) == (True, True)  # frames 1-5 are not in this history
    await newcomer.close()
    await fresh.close()


@pytest.mark.parametrize("newcomer_first", [False, True], ids=["older-tab-first", "newcomer-first"])
async def test_flushall_mid_stream(tmp_path: Path, newcomer_first: bool) -> None:
    server = RedisServer(tmp_path / "flush").start()
    sio = make_sio()
    app = make_app(sio, redis_url=server.url)
    redis = aioredis.Redis.from_url(server.url)

    async def flush() -> None:
        await redis.flushall()

    try:
        async with serve(app) as url:
            await check_new_epoch_after_loss(url, sio, flush, newcomer_first)
    finally:
        await redis.aclose()
        await app.runtime.aclose()
        server.stop()


@pytest.mark.parametrize("newcomer_first", [False, True], ids=["older-tab-first", "newcomer-first"])
async def test_expiry_on_redis(tmp_path: Path, newcomer_first: bool) -> None:
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
            await check_new_epoch_after_loss(url, sio, expire, newcomer_first)
    finally:
        await events.aclose()
        await redis.aclose()
        await app.runtime.aclose()
        server.stop()


@pytest.mark.parametrize("newcomer_first", [False, True], ids=["older-tab-first", "newcomer-first"])
async def test_expiry_in_memory(newcomer_first: bool) -> None:
    now = [1_000_000.0]
    log = MemoryLog(LogLimits(ttl_ms=60_000), clock=lambda: now[0])
    sio = make_sio()
    app = make_app(sio, log=log)

    async def expire() -> None:
        now[0] += 61  # the log's clock moves past the stream's TTL

    async with serve(app) as url:
        await check_new_epoch_after_loss(url, sio, expire, newcomer_first)


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


async def _leave_mid_stream(stack: Stack, tab: RawClient, by_app: bool = False) -> str:
    """Ten tokens reach ``tab``; it leaves the namespace (socket.io-client's ``socket.disconnect()``
    on a manager it shares: the Engine.IO connection stays), or the app disconnects it from there
    (``by_app``), and ten more reach nobody."""
    await emit_tokens(stack.sio, "alice", "m", 1, 10)
    await tab.wait_seqs("m", 10)
    epoch: str = tab.events()[-1]["epoch"]
    if by_app:
        since = len(tab.frames)
        for sid, _ in list(stack.sio.manager.get_participants("/", room_of("alice"))):
            await stack.sio.disconnect(sid)
        await tab.wait_for(lambda f: f == "41", since=since)
    else:
        await tab.send("41")
    await stack.sio.disconnects.wait_count(1)  # type: ignore[attr-defined]
    await emit_tokens(stack.sio, "alice", "m", 11, 20)  # in no log
    return epoch


@pytest.mark.parametrize("by_app", [False, True], ids=["client-left", "app-disconnected-it"])
async def test_a_stream_left_mid_way_by_leaving_its_namespace_resumes_with_a_gap_in_a_new_tab(
    stack: Stack, by_app: bool
) -> None:
    """Found by an attack run: the stream was not flagged, so the new tab went on in its epoch
    (tok21 stamped 11) and a resume across tok11..tok20 said ``gap: false``."""
    first = await RawClient(stack.url, auth={"token": "alice"}).connect()
    epoch = await _leave_mid_stream(stack, first, by_app)
    second = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m", 21, 30)
    await second.wait_seqs("m", 10)
    answer = await second.request("resume-stream", {"message_id": "m", "last_seq": 10, "epoch": epoch}, ack_id=1)
    assert answer["gap"] is True
    assert answer["epoch"] != epoch


async def test_a_tab_that_rejoins_its_namespace_does_not_go_on_across_what_it_missed(stack: Stack) -> None:
    tab = await RawClient(stack.url, auth={"token": "alice"}).connect()
    epoch = await _leave_mid_stream(stack, tab)
    since = len(tab.frames)
    await tab.send('40{"token":"alice"}')
    await tab.wait_for(lambda f: isinstance(f, str) and f.startswith("40"), since=since)
    await emit_tokens(stack.sio, "alice", "m", 21, 30)
    await tab.wait_seqs("m", 20)
    assert tab.events()[10]["epoch"] != epoch  # tok21 starts a new history
    answer = await tab.request("resume-stream", {"message_id": "m", "last_seq": 10, "epoch": epoch}, ack_id=1)
    assert answer["gap"] is True


async def test_another_tab_that_stayed_keeps_the_stream_whole(stack: Stack) -> None:
    """One tab leaving the namespace costs nothing to the tab that got every frame."""
    leaving = await RawClient(stack.url, auth={"token": "alice"}).connect()
    staying = await RawClient(stack.url, auth={"token": "alice"}).connect()
    epoch = await _leave_mid_stream(stack, leaving)
    await emit_tokens(stack.sio, "alice", "m", 21, 30)
    assert await staying.wait_seqs("m", 30) == list(range(1, 31))
    assert {event["epoch"] for event in staying.events()} == {epoch}
    answer = await staying.request("resume-stream", {"message_id": "m", "last_seq": 0, "epoch": epoch}, ack_id=1)
    assert (answer["gap"], answer["replayed"]) == (False, 30)


async def test_a_tab_that_leaves_while_its_frames_are_on_their_way_to_the_log_does_not_go_on(stack: Stack) -> None:
    """Found by an attack run (Redis, Cluster): an append built before the DISCONNECT landed after
    the release, cleared the flag as the stream's follower would, and the tab that joined again went
    on in the old epoch across what nobody logged."""
    tab = await RawClient(stack.url, auth={"token": "alice"}).connect()
    stream = PacedStream(stack.sio, "alice", "m", 100_000, pace=0.004)
    task = asyncio.create_task(stream.run())
    await stream.wait_sent(30)
    await tab.send("41")  # while tokens keep coming
    await stack.sio.disconnects.wait_count(1)  # type: ignore[attr-defined]
    await stream.wait_sent(stream.sent + 20)  # these reach nobody
    task.cancel()
    last = [event for event in tab.events() if event.get("seq")][-1]
    since = len(tab.frames)
    await tab.send('40{"token":"alice"}')
    await tab.wait_for(lambda f: isinstance(f, str) and f.startswith("40"), since=since)
    await emit_tokens(stack.sio, "alice", "m", 900_001, 900_003)
    await tab.wait_for(lambda f: "tok900003" in str(f), since=since)
    answer = await tab.request(
        "resume-stream", {"message_id": "m", "last_seq": last["seq"], "epoch": last["epoch"]}, ack_id=1
    )
    assert answer["gap"] is True


async def test_a_polling_client_that_leaves_its_namespace_leaves_a_gap_not_a_hole(stack: Stack) -> None:
    """The same as a websocket's: its DISCONNECT comes in a POST."""
    client = await PollingClient(stack.url).open({"token": "alice"})
    await emit_tokens(stack.sio, "alice", "m", 1, 10)
    got = event_args(await client.collect(lambda p: isinstance(p, str) and p.startswith("42"), 10))
    epoch = got[-1]["epoch"]
    await client.post("41")
    await stack.sio.disconnects.wait_count(1)  # type: ignore[attr-defined]
    await emit_tokens(stack.sio, "alice", "m", 11, 20)  # in no log
    tab = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m", 21, 30)
    await tab.wait_seqs("m", 10)
    answer = await tab.request("resume-stream", {"message_id": "m", "last_seq": 10, "epoch": epoch}, ack_id=1)
    assert answer["gap"] is True
    await client.aclose()
