"""What a connection remembers per stream stays bounded, however many streams it is sent.

A long-lived tab sent one short stream per chat message used to keep a cursor (and the time another
tab last used it) for every stream id it ever saw: 40,000 streams, +29 MiB for two tabs.
"""

from __future__ import annotations

from asgi_resume.log import StreamKey
from asgi_resume.pipeline.connection import STREAMS_KEPT, Connection


def key(i: int) -> StreamKey:
    return StreamKey("alice", "/", "", f"m{i}")


def test_streams_no_longer_in_flight_are_forgotten_oldest_first() -> None:
    conn = Connection({}, 0)
    live = key(-1)
    conn.saw(live, done=False)
    conn.followed(live, "e", [1], 5)
    for i in range(10 * STREAMS_KEPT):
        conn.saw(key(i), done=False)
        conn.followed(key(i), "e", [1, 2], 5)
        conn.saw(key(i), done=True)
    assert len(conn.cursors) <= STREAMS_KEPT
    assert len(conn.others_ms) <= STREAMS_KEPT
    assert conn.cursors[live] == ("e", 1)  # in flight: kept
    assert key(10 * STREAMS_KEPT - 1) in conn.cursors  # the newest: kept
    assert key(0) not in conn.cursors


def test_streams_that_never_say_done_are_bounded_too() -> None:
    conn = Connection({}, 0)
    for i in range(10 * STREAMS_KEPT):
        conn.saw(key(i), done=False)
        conn.followed(key(i), "e", [1], 0)
    assert len(conn.in_flight) <= STREAMS_KEPT
    assert len(conn.cursors) <= STREAMS_KEPT
    assert key(10 * STREAMS_KEPT - 1) in conn.in_flight


def test_replayed_streams_are_bounded_and_the_latest_replay_kept() -> None:
    conn = Connection({}, 0)
    conn.replayed_to(key(-1), "e", 1)
    for i in range(10 * STREAMS_KEPT):
        conn.replayed_to(key(i), "e", 3)
        if i % 100 == 0:
            conn.replayed_to(key(-1), "e", 2)  # replayed again: it counts as recent
    assert len(conn.replayed) <= STREAMS_KEPT
    assert conn.was_replayed(key(-1), "e", 2)
    assert not conn.was_replayed(key(0), "e", 1)  # forgotten: the oldest replay


def test_a_namespace_left_is_forgotten_whole_and_only_it() -> None:
    """Found by review: a done stream (no longer in flight) kept its cursor and its replay mark, so
    a tab that joined again went on in it as its follower, or dropped live frames as replayed."""
    conn = Connection({}, 0)
    conn.principals = {"/": "alice", "/b": "alice"}
    live, done, other = key(1), key(2), StreamKey("alice", "/b", "", "m1")
    for stream in (live, done, other):
        conn.saw(stream, done=stream == done)
        conn.followed(stream, "e", [1, 3], 5)  # (2 passed over)
        conn.replayed_to(stream, "e", 1)
    assert conn.disconnected("/", idle_s=60.0) == {live: "e"}  # to be flagged: the one in flight
    for places in (conn.in_flight, conn.cursors, conn.skipped, conn.others_ms, conn.replayed):
        assert not [stream for stream in places if stream.namespace == "/"]
    assert other in conn.cursors
    assert other in conn.replayed
