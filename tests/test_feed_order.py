"""The order frames of a stream reach the log in, across the connections of one process."""

from __future__ import annotations

import pytest

from asgi_resume.log import StreamKey
from asgi_resume.pipeline.order import KEYS_KEPT, RECENT_KEPT, FeedOrder

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
