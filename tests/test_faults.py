"""Redis faults against a real redis-server the test starts, pauses (SIGSTOP) and kills: live frames go on,
the app sees no exception, and what the log missed comes back as a gap, never as a silent hole."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.support.app import PacedStream, chat_event, content_by_seq, emit_tokens, make_app, make_sio, room_of
from tests.support.raw import RawClient
from tests.support.redis_server import RedisServer
from tests.support.server import serve

pytestmark = pytest.mark.anyio
_prefixes = itertools.count()


async def emit_until_stamped(sio: object, client: RawClient, start: int) -> int:
    """Emit one frame at a time until one comes back stamped; returns the last index emitted."""
    i = start
    async with asyncio.timeout(20):
        while True:
            i += 1
            await emit_tokens(sio, "alice", "m", i, i)  # type: ignore[arg-type]
            seqs = await client.wait_seqs("m", i)
            if seqs[-1] is not None:
                return i


async def test_a_paused_redis_does_not_stop_or_break_the_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "paused").start()
    sio = make_sio()
    app = make_app(sio, redis_url=server.url, key_prefix=f"f{next(_prefixes)}", write_timeout=0.2, secret="s")
    try:
        with caplog.at_level(logging.WARNING):
            async with serve(app) as url:
                client = await RawClient(url, auth={"token": "alice"}).connect()
                await emit_tokens(sio, "alice", "m", 1, 5)
                assert await client.wait_seqs("m", 5) == [1, 2, 3, 4, 5]
                old_epoch = client.events()[0]["epoch"]

                server.pause()  # Redis hangs: its socket stays open, nothing answers
                await emit_tokens(sio, "alice", "m", 6, 30)
                seqs = await client.wait_seqs("m", 30)  # every frame arrives, in order
                assert seqs[5:] == [None] * 25  # unstamped: they did not wait for the log
                assert [e["data"]["data"]["content"] for e in client.events()] == [f"tok{i} " for i in range(1, 31)]

                server.resume()
                last = await emit_until_stamped(sio, client, 30)
                new_epoch = client.events()[-1]["epoch"]
                assert new_epoch != old_epoch  # the stretch the log missed is a new epoch...
                answer = await client.request(
                    "resume-stream", {"message_id": "m", "last_seq": 5, "epoch": old_epoch}, ack_id=1
                )
                assert answer["gap"] is True  # ...and a gap to whoever resumes across it
                assert last > 30
                await client.close()
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], [r.getMessage() for r in errors]  # nothing raised into the app or the server
        warnings = [r for r in caplog.records if getattr(r, "asgi_resume", None)]
        assert warnings[0].asgi_resume["event"] == "log_unavailable"  # type: ignore[attr-defined]
        assert app.runtime.stats.log_failures >= 1
    finally:
        server.resume() if server.process else None
        server.stop()
        await app.runtime.aclose()


async def test_redis_down_at_startup_then_up(tmp_path: Path) -> None:
    """The first connections come while Redis is not there yet: they work, and logging starts later."""
    server = RedisServer(tmp_path / "late")
    sio = make_sio()
    app = make_app(sio, redis_url=server.url, key_prefix=f"f{next(_prefixes)}", write_timeout=0.2, secret="s")
    try:
        async with serve(app) as url:
            client = await RawClient(url, auth={"token": "alice"}).connect()
            await emit_tokens(sio, "alice", "m", 1, 3)
            assert await client.wait_seqs("m", 3) == [None, None, None]
            server.start()
            await emit_until_stamped(sio, client, 3)
            await client.close()
    finally:
        server.stop()
        await app.runtime.aclose()


async def test_a_stream_that_ends_while_redis_hangs_is_a_gap_not_a_silent_hole(tmp_path: Path) -> None:
    """Its tail, done frame included, goes out unlogged; no frame of it ever comes again: a resume
    across it must still say gap (the stream is repaired once Redis answers), never gap: false."""
    server = RedisServer(tmp_path / "tail").start()
    sio = make_sio()
    app = make_app(sio, redis_url=server.url, key_prefix=f"f{next(_prefixes)}", write_timeout=0.2, secret="s")
    try:
        async with serve(app) as url:
            client = await RawClient(url, auth={"token": "alice"}).connect()
            await emit_tokens(sio, "alice", "m", 1, 5)
            assert await client.wait_seqs("m", 5) == [1, 2, 3, 4, 5]
            old_epoch = client.events()[0]["epoch"]
            server.pause()
            await emit_tokens(sio, "alice", "m", 6, 10)
            await sio.emit("events", chat_event("m", 11, done=True), room=room_of("alice"))
            assert (await client.wait_seqs("m", 11))[5:] == [None] * 6  # the tail and its end, unlogged
            server.resume()
            reloaded = await RawClient(url, auth={"token": "alice"}).connect()
            async with asyncio.timeout(10):  # the log answers again after its retry pause (1 s)
                while (
                    answer := await reloaded.request(
                        "resume-stream", {"message_id": "m", "last_seq": 5, "epoch": old_epoch}, ack_id=1
                    )
                )["ok"] is False:
                    assert answer["error"] == "unavailable"
                    await asyncio.sleep(0.1)  # a client's retry pace, not synchronisation
            assert answer["gap"] is True
            assert answer["epoch"] != old_epoch
            await client.close()
            await reloaded.close()
    finally:
        server.resume() if server.process else None
        server.stop()
        await app.runtime.aclose()


async def test_a_redis_hang_during_a_resume_storm_stalls_a_bystander_no_longer_than_the_write_deadline(
    tmp_path: Path,
) -> None:
    """Issue 13, finding 10: a bystander's live frames wait for the log at most one write deadline
    per batch (measured before: 525 ms against a 250 ms deadline), however many resumes wait on it."""
    write_timeout = 0.5
    server = RedisServer(tmp_path / "storm").start()
    sio = make_sio()
    app = make_app(sio, redis_url=server.url, key_prefix=f"f{next(_prefixes)}", write_timeout=write_timeout)
    try:
        async with serve(app) as url:
            bystander = await RawClient(url, auth={"token": "bystander"}).connect()
            storm = [await RawClient(url, auth={"token": f"user{i}"}).connect() for i in range(100)]
            for i in range(len(storm)):
                await emit_tokens(sio, f"user{i}", f"s{i}", 1, 3)
            stream = PacedStream(sio, "bystander", "live", 400, pace=0.005)
            running = asyncio.create_task(stream.run())
            await stream.wait_sent(20)
            server.pause()  # Redis hangs while every user asks to resume (more requests than connections)
            for round_ in range(3):
                for i, client in enumerate(storm):
                    await client.emit("resume-stream", {"message_id": f"s{i}", "last_seq": 0}, ack_id=10 + round_)
            await stream.wait_sent(stream.total // 2)
            server.resume()
            await running
            await bystander.wait_count(lambda f: isinstance(f, str) and '"live"' in f, stream.total + 1, timeout=30)
            assert [e["data"]["data"].get("content", "") for e in bystander.events()] == stream.expected
            arrived = [at for frame, at in zip(bystander.frames, bystander.arrived, strict=True) if '"live"' in frame]
            worst = max(b - a for a, b in itertools.pairwise(arrived))
            assert worst < write_timeout + 0.4, f"the bystander waited {worst:.3f} s for one frame"
            for client in [bystander, *storm]:
                await client.close()
    finally:
        server.resume() if server.process else None
        server.stop()
        await app.runtime.aclose()


@pytest.mark.parametrize("calls", ["resumes", "appends"])
async def test_one_broken_key_does_not_switch_the_log_off_for_others(tmp_path: Path, calls: str) -> None:
    """A string where alice's stream meta hash should be (a prefix clash, a corrupted store): her
    calls fail with WRONGTYPE. They used to open the breaker for everyone: a bystander got 76 of 100
    live frames unstamped and a new epoch while alice resumed twice a second."""
    server = RedisServer(tmp_path / "poisoned").start()
    sio = make_sio()
    prefix = f"f{next(_prefixes)}"
    app = make_app(sio, redis_url=server.url, key_prefix=prefix, secret="s")
    redis = aioredis.Redis.from_url(server.url)
    try:
        async with serve(app) as url:
            alice = await RawClient(url, auth={"token": "alice"}).connect()
            bob = await RawClient(url, auth={"token": "bob"}).connect()
            await emit_tokens(sio, "alice", "a", 1, 3)
            await alice.wait_seqs("a", 3)
            (meta,) = await redis.keys(f"{prefix}:*:meta")
            await redis.delete(meta)
            await redis.set(meta, "poison")
            for i in range(1, 61):
                await sio.emit("events", chat_event("b", i), room=room_of("bob"))
                await bob.wait_seqs("b", i)  # one at a time: each is logged after what alice did before
                if calls == "resumes" and i % 10 == 0:
                    answer = await alice.request("resume-stream", {"message_id": "a", "last_seq": 0}, ack_id=i)
                    assert (answer["ok"], answer["error"]) == (False, "unavailable")
                elif calls == "appends":
                    await sio.emit("events", chat_event("a", 3 + i), room=room_of("alice"))
            seqs = await bob.wait_seqs("b", 60)
            assert seqs == list(range(1, 61))  # every frame stamped, one epoch
            assert len({e["epoch"] for e in bob.events()}) == 1
            answer = await bob.request("resume-stream", {"message_id": "b", "last_seq": 0}, ack_id=1)
            assert (answer["ok"], answer["replayed"], answer["gap"]) == (True, 60, False)
            assert app.runtime.guard.available()
            assert app.runtime.stats.log_failures > 0  # (alice's calls did fail)
            await alice.close()
            await bob.close()
    finally:
        await redis.aclose()
        server.stop()


async def test_a_server_that_refuses_every_write_is_an_outage_not_one_keys_fault(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """NOREPLICAS (min-replicas-to-write unmet), READONLY, OOM: the server's state, not one call's keys.
    The breaker opens and it is said, as for a Redis that is down (not counted as a refusal alone)."""
    server = RedisServer(tmp_path / "noreplicas").start()
    sio = make_sio()
    app = make_app(sio, redis_url=server.url, key_prefix=f"f{next(_prefixes)}", secret="s")
    redis = aioredis.Redis.from_url(server.url)
    try:
        with caplog.at_level(logging.WARNING, logger="asgi_resume"):
            async with serve(app) as url:
                bob = await RawClient(url, auth={"token": "bob"}).connect()
                await emit_tokens(sio, "bob", "b", 1, 3)
                assert await bob.wait_seqs("b", 3) == [1, 2, 3]
                await redis.config_set("min-replicas-to-write", 1)
                await emit_tokens(sio, "bob", "b", 4, 4)
                assert (await bob.wait_seqs("b", 4))[-1] is None  # unstamped: the log refused it
                assert not app.runtime.guard.available()  # the breaker is open
                await bob.close()
        warnings = [r.getMessage() for r in caplog.records if r.name == "asgi_resume"]
        assert any("stream log unavailable (NOREPLICAS" in w for w in warnings), warnings
    finally:
        await redis.aclose()
        server.stop()


async def test_writes_redis_ran_after_their_callers_gave_up_never_enter_the_new_epoch(tmp_path: Path) -> None:
    """Found by an attack run: appends that timed out while Redis was paused stayed queued in it and
    ran when it woke: the first started the new epoch with a stale frame, the others appended theirs
    to it (seq 1 = tok453, seq 2 = tok327, then tok579...), and a resume of that epoch said
    ``gap: false`` over the holes. Three tabs of one user, Redis paused mid-stream."""
    server = RedisServer(tmp_path / "late").start()
    sio = make_sio()
    app = make_app(sio, redis_url=server.url, key_prefix=f"f{next(_prefixes)}", write_timeout=0.2, secret="s")
    stream = PacedStream(sio, "alice", "m", 300, pace=0.01)
    try:
        async with serve(app) as url:
            tabs = [await RawClient(url, auth={"token": "alice"}).connect() for _ in range(3)]
            running = asyncio.create_task(stream.run())
            await stream.wait_sent(60)
            server.pause()
            await stream.wait_sent(200)  # a second and more of frames while Redis sleeps
            server.resume()
            await running
            for tab in tabs:
                await tab.wait_for(lambda f: isinstance(f, str) and '"done":true' in f)
            epoch = tabs[0].events()[-1]["epoch"]
            assert epoch is not None  # (the stream ended stamped: the log answers again)
            reader = await RawClient(url, auth={"token": "alice"}).connect()
            answer = await reader.request("resume-stream", {"message_id": "m", "last_seq": 0, "epoch": epoch}, ack_id=1)
            assert answer["ok"] is True
            assert answer["gap"] is False  # the epoch named is whole from its seq 1...
            view = content_by_seq(reader.events())
            tokens = [int(view[seq][3:]) for seq in sorted(view) if view[seq]]
            assert tokens == list(range(tokens[0], tokens[0] + len(tokens)))  # ...so its tokens follow on
            assert tokens[-1] == 300
            assert app.runtime.stats.log_failures >= 1  # (the case this test is about did happen)
            for client in (*tabs, reader):
                await client.close()
    finally:
        server.resume() if server.process else None
        server.stop()
        await app.runtime.aclose()
