"""The order frames of a stream reach the log in, across the connections of one process."""

from __future__ import annotations

import asyncio
import time

import pytest

from asgi_resume.log import StreamKey
from asgi_resume.pipeline.order import KEYS_KEPT, RECENT_KEPT, Feeder, FeedOrder
from tests.support.app import chat_event, make_app, make_sio, room_of
from tests.support.raw import DeafClient, RawClient
from tests.support.redis_server import RedisServer
from tests.support.server import serve

pytestmark = pytest.mark.anyio

KEY = StreamKey("alice", "/", "events", "m1")


async def test_a_tab_waits_for_a_frame_it_lacks_that_another_tab_was_fed_first() -> None:
    order = FeedOrder()
    earlier = order.fed(KEY, "x")  # only the other tab got it (this one joined after)
    mine = order.fed(KEY, "y")
    assert order.ahead(KEY, mine, {"y"})
    assert not await order.turn(KEY, mine, {"y"}, 0.01)  # bounded
    order.logged(KEY, earlier)
    assert not order.ahead(KEY, mine, {"y"})


async def test_copies_of_frames_already_logged_hold_nobody_up() -> None:
    """The deadlock behind a flaky recovery test: tab A logged x; tab B, busy claiming a recovered
    session (which waits for A to log), is fed its copy of x after that; A's next frame must not
    wait for B's copy, or A and B wait for each other until the write timeout."""
    order = FeedOrder()
    a_x = order.fed(KEY, "x")
    order.logged(KEY, a_x)
    order.fed(KEY, "x")  # B's copy, fed later and not logged yet
    a_y = order.fed(KEY, "y")
    assert not order.ahead(KEY, a_y, {"y"})
    assert await order.turn(KEY, a_y, {"y"}, 0.01)


def test_what_it_remembers_is_bounded() -> None:
    order = FeedOrder()
    for i in range(KEYS_KEPT + 10):
        key = StreamKey("alice", "/", "events", f"m{i}")
        for j in range(100):
            order.logged(key, order.fed(key, f"d{j}"))
    assert len(order._recent) == KEYS_KEPT
    assert all(len(digests) <= RECENT_KEPT for digests in order._recent.values())
    assert not order._unlogged


async def test_frames_whose_writer_is_stuck_hold_nobody_up() -> None:
    """A tab that stops reading: its writer waits for the transport while its frames keep being fed.
    The user's other tab waited the whole write timeout for them, batch after batch (tab B's p50
    latency 377 ms on Redis), once they had left what is remembered as logged."""
    now = [1000.0]
    order = FeedOrder(0.25, clock=lambda: now[0])
    deaf = Feeder()
    stuck = order.fed(KEY, "x", deaf)  # only the stuck tab holds it (its copy on B left `_recent`)
    mine = order.fed(KEY, "y", Feeder())
    deaf.sending_since = now[0]  # its writer hands its previous batch to a client that does not read
    now[0] += 0.1
    assert order.ahead(KEY, mine, {"y"})  # sending for 100 ms: on its way, as far as anyone can tell
    now[0] += 0.15
    assert not order.ahead(KEY, mine, {"y"})  # sending for 250 ms: stuck
    assert await order.turn(KEY, mine, {"y"}, 0.01)
    deaf.sending_since = 0.0  # the client read: the writer is back, and logs it as usual
    assert order.ahead(KEY, mine, {"y"})
    order.logged(KEY, stuck)
    assert not order._unlogged.get(KEY, {}).get(stuck)


def test_a_frame_fed_long_ago_is_waited_for_while_its_writer_is_not_stuck() -> None:
    """A CI failure (test_workers, 4 runs in 300 under CPU load): frames were skipped once fed a
    write timeout ago. On a loaded machine a frame on its way to the log takes that long; the tab
    that skipped it logged after it a frame emitted after it, and the log was out of emit order."""
    now = [1000.0]
    order = FeedOrder(0.25, clock=lambda: now[0])
    slow = Feeder()
    earlier = order.fed(KEY, "x", slow)  # its writer is logging (not sending): just slow
    now[0] += 5.0
    mine = order.fed(KEY, "y", Feeder())
    assert order.ahead(KEY, mine, {"y"})
    order.logged(KEY, earlier)
    assert not order.ahead(KEY, mine, {"y"})


async def test_a_tab_that_does_not_read_does_not_hold_up_the_users_other_tab(redis_server: RedisServer) -> None:
    """End to end, on Redis: tab A stops reading (its socket buffers fill, its writer waits for the
    transport while its frames keep being fed), tab B reads. B's frames used to wait the write
    timeout (0.25 s) in almost every batch once A's frames had left what is remembered as logged:
    p50 377 ms, 1,291 of 1,500 frames over 100 ms late. The bare app: under 1 ms."""
    sio = make_sio()
    app = make_app(sio, redis_url=redis_server.url, key_prefix="stuck", secret="s")
    pad = "x" * 20_000
    async with serve(app) as url:
        deaf = await DeafClient(url, {"token": "alice"}).connect()
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        emitted: list[float] = []
        for i in range(1, 1001):
            event = chat_event("m", i, content=f"tok{i} {pad}")
            emitted.append(time.monotonic())
            await sio.emit("events", event, room=room_of("alice"))
            await asyncio.sleep(0.005)  # a model's pace, not synchronisation
        assert await tab.wait_seqs("m", 1000, timeout=60) == list(range(1, 1001))
        arrived = [t for f, t in zip(tab.frames, tab.arrived, strict=True) if isinstance(f, str) and '"m"' in f]
        late = sorted(b - a for a, b in zip(emitted, arrived, strict=True))
        assert late[len(late) * 9 // 10] < 0.125, f"p90 latency {late[len(late) * 9 // 10] * 1000:.0f} ms"
        await tab.close()
        deaf.kill()
