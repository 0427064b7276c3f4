"""The order frames of a stream reach the log in, across the connections of one process."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_resume.log import StreamKey
from asgi_resume.pipeline.order import KEYS_KEPT, OBJECT_BYTES_KEPT, RECENT_KEPT, Feeder, FeedOrder
from asgi_resume.transport.websocket import WebSocketConnection
from tests.support.app import chat_event, make_app, make_sio, room_of
from tests.support.raw import DeafClient, RawClient
from tests.support.redis_server import RedisServer
from tests.support.server import serve
from tests.support.stalls import another_tab_then_a_resume_from_zero
from tests.support.waits import until

pytestmark = pytest.mark.anyio

KEY = StreamKey("alice", "/", "events", "m1")


async def test_a_tab_waits_for_a_frame_it_lacks_that_another_tab_was_fed_first() -> None:
    order = FeedOrder()
    earlier = order.fed(KEY, "x")  # only the other tab got it (this one joined after)
    mine = order.fed(KEY, "y")
    assert order.ahead(KEY, mine, {"y": [None]})
    assert not await order.turn(KEY, mine, {"y": [None]}, 0.01)  # bounded
    order.logged(KEY, earlier)
    assert not order.ahead(KEY, mine, {"y": [None]})


async def test_copies_of_frames_already_logged_hold_nobody_up() -> None:
    """The deadlock behind a flaky recovery test: tab A logged x; tab B, busy claiming a recovered
    session (which waits for A to log), is fed its copy of x after that; A's next frame must not
    wait for B's copy, or A and B wait for each other until the write timeout."""
    order = FeedOrder()
    a_x = order.fed(KEY, "x")
    order.logged(KEY, a_x, "e", 1)
    order.fed(KEY, "x")  # B's copy, fed later and not logged yet
    a_y = order.fed(KEY, "y")
    assert not order.ahead(KEY, a_y, {"y": [None]})
    assert await order.turn(KEY, a_y, {"y": [None]}, 0.01)


@pytest.mark.parametrize("objects", [True, False], ids=["websocket copies", "rebuilt copies"])
def test_a_copy_of_a_frame_the_log_missed_is_waited_for(objects: bool) -> None:
    """Found by attack (CLIENT KILL during appends): tab A's copy of x went out unstamped, the log
    having failed, while tab B, behind, still had its copy on its way. A's next frame took x for
    logged and went first: once the log answered again, B logged x after it, out of emit order.
    (A copy logged after all still lets it go.)"""
    x, y = '42["x"]', '42["y"]'
    order = FeedOrder()
    a_x = order.fed(KEY, "x", frame=x if objects else None)
    b_x = order.fed(KEY, "x", frame=x if objects else None)
    order.logged(KEY, a_x)  # not numbered: the log missed it
    a_y = order.fed(KEY, "y", frame=y if objects else None)
    mine = {"y": [y if objects else None]}
    assert order.ahead(KEY, a_y, mine)
    order.logged(KEY, b_x, "e", 1)
    assert not order.ahead(KEY, a_y, mine)
    order.logged(KEY, a_y, "e", 2)
    assert not order._unlogged
    # a copy the log missed after another was logged takes nothing from that one
    a_z, b_z = order.fed(KEY, "z", frame=x if objects else None), order.fed(KEY, "z", frame=x if objects else None)
    order.logged(KEY, a_z, "e", 3)
    order.fed(KEY, "z", frame=x if objects else None)  # tab C's copy, on its way
    order.logged(KEY, b_z)
    a_w = order.fed(KEY, "w")
    assert not order.ahead(KEY, a_w, {"w": [None]})  # (C's copy of z is a copy of one logged)


def test_copies_the_log_missed_are_let_go_without_a_look_at_the_others() -> None:
    """Found by review: each first copy logged unnumbered looked through every frame of the key
    still unlogged for the next copy: 3.8-5.7 s for 20 tabs' batches of 1,024 when the log failed
    (the event loop blocked the moment Redis did). The bound is a wide one: it takes milliseconds."""
    order = FeedOrder()
    emits = [f'42["t{i}"]' for i in range(1024)]
    numbers = [order.fed(KEY, f"d{i}", frame=frame) for _ in range(40) for i, frame in enumerate(emits)]
    started = time.process_time()
    for number in numbers:
        order.logged(KEY, number)
    assert time.process_time() - started < 1.0
    assert not order._unlogged


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
    assert order.ahead(KEY, mine, {"y": [None]})  # sending for 100 ms: on its way, as far as anyone can tell
    now[0] += 0.15
    assert not order.ahead(KEY, mine, {"y": [None]})  # sending for 250 ms: stuck
    assert await order.turn(KEY, mine, {"y": [None]}, 0.01)
    deaf.sending_since = 0.0  # the client read: the writer is back, and logs it as usual
    assert order.ahead(KEY, mine, {"y": [None]})
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
    assert order.ahead(KEY, mine, {"y": [None]})
    order.logged(KEY, earlier)
    assert not order.ahead(KEY, mine, {"y": [None]})


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


def frame_of(content: str) -> str:
    """A new frame object with ``content`` (python-socketio encodes each emit once: its recipients
    on websockets get that one object)."""
    return "".join(["42", f'["events",{{"c":"{content}"}}]'])


async def test_a_repeat_of_my_content_that_another_tab_got_first_is_waited_for() -> None:
    """Same content, another emit (the same token twice): not a copy of mine. Its copy, the same
    object, is. A CI failure with the payloads a/b/ab came from treating the repeat as a copy."""
    order = FeedOrder()
    earlier, mine = frame_of("b"), frame_of("b")
    other = order.fed(KEY, "b", Feeder(), earlier)  # the other tab's b, emitted before mine
    copy = order.fed(KEY, "b", Feeder(), mine)  # the other tab's copy of mine
    me = order.fed(KEY, "b", Feeder(), mine)
    assert order.ahead(KEY, me, {"b": [mine]})
    order.logged(KEY, other, "e", 6)
    assert not order.ahead(KEY, me, {"b": [mine]})  # the copy of mine holds me up no more
    order.logged(KEY, copy, "e", 7)
    assert not order.ahead(KEY, me, {"b": [mine]})
    assert not order.ahead(KEY, me, {"b": [None]})  # not comparable (long-polling): content decides


def test_a_repeat_of_a_logged_frame_is_not_taken_for_its_copy() -> None:
    order = FeedOrder()
    logged, repeat = frame_of("a"), frame_of("a")
    order.logged(KEY, order.fed(KEY, "a", Feeder(), logged), "e", 4)
    order.fed(KEY, "a", Feeder(), logged)  # a late copy of the logged one (a busy tab's)
    mine = order.fed(KEY, "z", Feeder(), frame_of("z"))
    assert not order.ahead(KEY, mine, {"z": [None]})
    order.logged(KEY, mine, "e", 5)
    repeated = order.fed(KEY, "a", Feeder(), repeat)  # another emit with the same content, not logged yet
    later = order.fed(KEY, "y", Feeder(), frame_of("y"))
    assert order.ahead(KEY, later, {"y": [None]})
    order.logged(KEY, repeated, "e", 6)
    assert order.ahead(KEY, later, {"y": [None]})  # the late copy of the first a: only the last a is kept


async def test_a_first_frame_is_placed_at_its_own_emit() -> None:
    """The seq the other tab's copy (the same object) got; none for a repeat."""
    order = FeedOrder()
    twin, frame = frame_of("b"), frame_of("b")
    order.logged(KEY, order.fed(KEY, "b", Feeder(), twin), "e", 9)
    copy = order.fed(KEY, "b", Feeder(), frame)
    mine = order.fed(KEY, "b", Feeder(), frame)
    assert order.copy_on_its_way(KEY, frame, mine) == copy
    assert order.copy_on_its_way(KEY, frame, copy) is None  # the first copy waits for no later one
    assert order.placed(KEY, "b", frame) is None  # the twin is not its copy
    assert not await order.until_logged(KEY, copy, 0.01)  # bounded
    order.logged(KEY, copy, "e", 11)
    assert await order.until_logged(KEY, copy, 0.01)
    assert order.placed(KEY, "b", frame) == ("e", 11)
    assert order.placed(KEY, "b", twin) is None  # forgotten: the last logged b is the one kept


def test_the_frame_objects_it_keeps_are_bounded() -> None:
    order = FeedOrder()
    big = "x" * (OBJECT_BYTES_KEPT // 3)
    for i in range(5):
        key = StreamKey("alice", "/", "events", f"m{i}")
        order.logged(key, order.fed(key, "d", Feeder(), big + str(i)), "e", 1)
    assert 0 < order._object_chars <= OBJECT_BYTES_KEPT
    kept = [logged.frame for digests in order._recent.values() for logged in digests.values()]
    assert sum(len(f) for f in kept if f is not None) == order._object_chars
    assert kept.count(None) == 3  # beyond the budget: told by content, like long-polling frames


def test_a_copy_of_a_logged_frame_holds_nobody_up_however_much_was_logged_since() -> None:
    """A busy tab's copy of an emit another tab logged, then RECENT_KEPT more frames logged: still
    a copy of a logged frame (the object tells), not a frame the log lacks."""
    order = FeedOrder()
    emitted = frame_of("a")
    first = order.fed(KEY, "a", Feeder(), emitted)
    late = order.fed(KEY, "a", Feeder(), emitted)  # the busy tab's copy
    order.logged(KEY, first, "e", 1)
    for i in range(RECENT_KEPT + 1):
        order.logged(KEY, order.fed(KEY, f"t{i}", Feeder(), frame_of(f"t{i}")), "e", i + 2)
    mine = frame_of("z")
    assert not order.ahead(KEY, order.fed(KEY, "z", Feeder(), mine), {"z": [mine]})
    assert order.before(KEY, late + 1)  # (it is still there, unlogged)


#: a schedule: feed emit i (0-5) to a tab, with its object or without (long-polling); log the
#: n-th oldest unlogged frame; ask whether a tab's batch of emits must wait
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("feed"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("log"), st.integers(0, 9), st.booleans()),
        st.tuples(
            st.just("ask"), st.tuples(st.frozensets(st.integers(0, 5), max_size=3), st.integers(0, 40)), st.booleans()
        ),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(_steps)
def test_ahead_answers_as_if_it_looked_at_every_frame(steps: list[tuple[str, object, bool]]) -> None:
    """``ahead`` skips its look at each unlogged frame when what it keeps of the emits already
    tells that none of them is to be waited for: it must never answer otherwise than the look."""
    emits = [frame_of(f"t{i % 3}") for i in range(6)]  # emits 0 and 3 (1 and 4...) repeat a content
    order, looked = FeedOrder(), FeedOrder()
    looked._others_before = lambda *_: True  # type: ignore[method-assign]  # (always look)
    fed: list[int] = []
    for step, arg, with_object in steps:
        if step == "feed":
            assert isinstance(arg, int)
            frame = emits[arg] if with_object else None
            number = order.fed(KEY, f"t{arg % 3}", Feeder(), frame)
            assert looked.fed(KEY, f"t{arg % 3}", Feeder(), frame) == number
            fed.append(number)
        elif step == "log" and fed:
            assert isinstance(arg, int)
            number = fed.pop(arg % len(fed))
            order.logged(KEY, number, "e", number)
            looked.logged(KEY, number, "e", number)
        elif step == "ask":
            assert isinstance(arg, tuple)
            ids, at = arg
            mine: dict[str, list[str | None]] = {}
            for i in sorted(ids):
                mine.setdefault(f"t{i % 3}", []).append(emits[i] if with_object else None)
            number = 1 + at % (order.fed_count + 1)  # (a batch fed at any point so far)
            assert order.ahead(KEY, number, mine) == looked.ahead(KEY, number, mine)


class _Unlooked(dict[int, tuple[str, Feeder | None, str | None]]):
    def items(self) -> Any:
        raise AssertionError("ahead looked at every unlogged copy")


def test_a_rooms_batch_is_answered_without_looking_at_every_copy() -> None:
    """50 tabs each fed the same 3 emits, and one fed a 4th since: the last tab's batch waits for
    nothing, and ``ahead`` tells it from its index of emits (a look at each copy cost a room of 50
    tabs 8% of the server's CPU)."""
    order = FeedOrder()
    emits = [frame_of(f"t{i}") for i in range(3)]
    heads = []
    for _ in range(50):
        numbers = [order.fed(KEY, f"t{i}", Feeder(), frame) for i, frame in enumerate(emits)]
        heads.append(numbers[0])
    order.fed(KEY, "t3", Feeder(), frame_of("t3"))  # emitted after: fed to one tab so far
    order._unlogged[KEY] = _Unlooked(order._unlogged[KEY])
    assert not order.ahead(KEY, heads[-1], {f"t{i}": [frame] for i, frame in enumerate(emits)})


async def test_a_tab_that_stopped_reading_logs_nothing_out_of_order_when_it_catches_up(backend: dict[str, Any]) -> None:
    """Tab A's network stalls (its client stops reading, then reads again), tab B of the same user
    opens meanwhile, and a third tab resumes from the start. Found with the memory log: A's send
    waited for its client inside the app's own ``send`` call, so the app's next frames waited
    unfed in python-engineio, out of the feed order's sight; B logged the later ones first, and
    once A caught up, its backlog was logged after them, after the done frame too: a resume from 0
    replayed tokens 1-144, 151-300, done, 145-237, and said ``gap: false``. On Redis too when the
    send that waits is of a frame that needs no log (another event, a ping), as here. A send from
    the app's call is now one the socket takes at once; A's frames keep being fed, and those B
    went on without go out unstamped (a new epoch)."""
    await _stall_one_tab_while_another_opens(backend, request_while_stalled=False)


async def test_a_request_from_a_tab_whose_send_stalled_leaves_no_frame_unfed(backend: dict[str, Any]) -> None:
    """As above, and A's uplink still works: its client sends a request while the send to it
    waits. Found by a review: the request waited in the connection's queue behind the send, and
    the app's frames after it were queued behind the request, unfed: a resume from 0 replayed
    tokens 11-20, done, 1-10, 11-20, done again, and said ``gap: false`` (every backend). A request
    that comes while the writer sends is now fed in its place, as the app's frames are, and those
    keep being fed after it."""
    await _stall_one_tab_while_another_opens(backend, request_while_stalled=True)


async def _stall_one_tab_while_another_opens(backend: dict[str, Any], *, request_while_stalled: bool) -> None:
    """A's sends wait for its client; tokens 1-10 go to A alone, then B opens and gets 11-20 and
    done; A reads again up to the end; a third tab's resume from 0 must be in emit order, and
    whole unless it says ``gap``."""
    sio = make_sio()
    app = make_app(sio, **backend)
    async with serve(app) as url:
        stalled = await DeafClient(url, {"token": "alice"}).connect()
        gc.collect()
        (conn,) = [o for o in gc.get_objects() if type(o) is WebSocketConnection and o.runtime is app.runtime]
        await sio.emit("blob", {"x": "y" * 8_000_000}, room=room_of("alice"))  # fills its socket's buffers
        await sio.emit("blob", {"x": "z"}, room=room_of("alice"))  # this send waits for its client
        await until(lambda: conn._stall.sending, 10)
        if request_while_stalled:
            stalled.send('421["resume-stream",{"message_id":"m","last_seq":0}]')
            await until(lambda: conn._outbox.requests == 1 or conn._batch.pending() == 1, 10)  # (queued, or fed)
        for i in range(1, 11):  # only A is sent these
            await sio.emit("events", chat_event("m", i), room=room_of("alice"))
        await another_tab_then_a_resume_from_zero(sio, url, stalled)
        stalled.kill()
