"""Streams the log missed frames of get a new epoch once it answers: the repairs, without a server.

Drives the pipeline as tests/test_pipeline.py does, on a memory log whose calls go through the
guard as Redis's do (so it can be "down"), and records the reset requests the repairs send.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from asgi_resume.config import Settings
from asgi_resume.log import AppendRequest, StreamKey
from asgi_resume.log.base import ReplayResult
from asgi_resume.log.memory import MemoryLog
from asgi_resume.pipeline import repairs as repairs_module
from asgi_resume.pipeline.runtime import Runtime
from tests.test_pipeline import ALICE, events, send, tab, token

pytestmark = pytest.mark.anyio
KEY = StreamKey(ALICE, "/", "", "m")


class _RecordingLog(MemoryLog):
    """A log whose calls go through the guard (it may be "down"), keeping every reset it is sent."""

    synchronous = False

    def __init__(self) -> None:
        super().__init__()
        self.resets: list[AppendRequest] = []

    async def append(self, requests: Any) -> Any:
        self.resets += [request for request in requests if request.reset and not request.entries]
        return await super().append(requests)


def contents(replay: ReplayResult) -> list[str]:
    """The token of each frame a replay holds, in seq order."""
    return [re.findall(r'"content":"(t\d+)"', "".join(map(str, payload)))[0] for _, payload in replay.frames]


def down(rt: Runtime) -> None:
    rt.guard.failed("gone")


def up(rt: Runtime) -> None:
    rt.guard._down_until = 0.0  # (the retry delay passed)


async def test_a_tab_that_closes_before_its_stream_is_repaired_is_let_go_and_the_stream_repaired() -> None:
    rt = Runtime(Settings.load({}), _RecordingLog())
    alice = tab(rt)
    t1 = events(await send(alice, token(1)))[0]
    down(rt)
    assert await send(alice, token(2)) == [token(2)]  # unstamped
    await alice.release()  # the tab closes while the log is down
    assert all(alice.conn not in waiting.tabs for waiting in rt.repairs.waiting.values())  # not kept alive
    up(rt)
    assert await rt.repairs.repair()
    assert not rt.repairs.waiting
    t3 = events(await send(tab(rt), token(3)))[0]  # a newcomer
    assert t3["epoch"] != t1["epoch"]
    after_t1 = await rt.log.replay(KEY, t1["seq"], t1["epoch"], "reader")
    assert after_t1.gap or after_t1.epoch != t1["epoch"]  # t2 is missing: never a silent hole


async def test_a_tab_that_missed_its_first_frames_is_told_and_does_not_start_a_second_epoch() -> None:
    """A tab with no cursor names no epoch: its reset starts one whatever the stream's is. Once the
    repair did that on its behalf its own next frame must not do it again (a tab that logged into
    the new epoch meanwhile would see its entries go)."""
    log = _RecordingLog()
    rt = Runtime(Settings.load({}), log)
    alice, bob = tab(rt), tab(rt)
    down(rt)
    await send(alice, token(1))  # its first frame of the stream: missed
    assert alice.conn.unlogged == {KEY: ""}
    up(rt)
    assert await rt.repairs.repair()
    assert not alice.conn.unlogged  # told
    t2 = events(await send(bob, token(2)))[0]
    assert events(await send(alice, token(2)))[0] == t2  # one entry, one epoch, for both tabs
    assert len(log.resets) == 1


async def test_one_reset_per_stream_when_tabs_that_closed_missed_it_in_several_epochs() -> None:
    """Two tabs that closed missed frames of one stream, one with no cursor, one in the stream's
    epoch: the reset that names the epoch goes (the first tab's used to be the only one kept, and
    a stale epoch kept that way repaired nothing); the one naming none would start a second."""
    log = _RecordingLog()
    rt = Runtime(Settings.load({}), log)
    bob, alice = tab(rt), tab(rt)
    t1 = events(await send(bob, token(1)))[0]
    down(rt)
    await send(alice, token(2))  # alice: no cursor
    await send(bob, token(2))  # bob: in t1's epoch
    await alice.release()
    await bob.release()
    up(rt)
    assert await rt.repairs.repair()
    assert [(r.key, r.reset_epoch) for r in log.resets] == [(KEY, t1["epoch"])]
    after_t1 = await rt.log.replay(KEY, t1["seq"], t1["epoch"], "reader")
    assert after_t1.gap or after_t1.epoch != t1["epoch"]


async def test_repairs_go_a_chunk_per_call_and_a_batch_repairs_only_its_own_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long outage leaves many streams to repair: one call for all of them could not fit a write
    deadline (10,000 resets took 0.42 s on Redis), and a live batch waited for all of them."""
    monkeypatch.setattr(repairs_module, "CHUNK", 2)
    log = _RecordingLog()
    rt = Runtime(Settings.load({}), log)
    alice = tab(rt)
    down(rt)
    await send(alice, *(token(1, f"m{i}") for i in range(5)))
    assert len(rt.repairs.waiting) == 5
    up(rt)
    await send(alice, token(2, "m4"))  # a batch of one of them repairs that one first
    assert [r.key.stream for r in log.resets] == ["m4"]
    assert await rt.repairs.repair()
    assert len(log.resets) == 3
    assert len(rt.repairs.waiting) == 2


async def test_past_the_bound_a_stream_waits_for_its_own_tab_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repairs_module, "MAX_REPAIRS", 0)
    rt = Runtime(Settings.load({}), _RecordingLog())
    alice = tab(rt)
    await send(alice, token(1))
    down(rt)
    await send(alice, token(2))
    assert rt.stats.repairs_dropped == 1
    assert alice.conn.unlogged  # its own next frame still starts the new epoch


class _LandsThenAnswersLate(_RecordingLog):
    """While ``slow`` is set, a call lands at once and its answer comes after its caller gave up."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = False
        self.sent: list[AppendRequest] = []

    async def append(self, requests: Any) -> Any:
        self.sent += requests
        results = await super().append(requests)
        if self.slow:
            await asyncio.Event().wait()  # (never answered: the guard's deadline ends the wait)
        return results


async def test_an_epoch_a_call_that_timed_out_started_after_all_is_repaired_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by an attack run: a reset whose answer came after its caller gave up had landed and
    started an epoch; what came next named only the epoch the tab knew, so the frames the log missed
    after it were a silent hole in the epoch that call started (a resume of it said gap: false).
    (No repair waits here, past its bound: the tab's own next frame is what resets the stream.)"""
    monkeypatch.setattr(repairs_module, "MAX_REPAIRS", 0)
    log = _LandsThenAnswersLate()
    rt = Runtime(Settings.load({}, write_timeout=0.05), log)
    alice = tab(rt)
    t1 = events(await send(alice, token(1)))[0]
    down(rt)
    await send(alice, token(2))  # missed: the next append resets t1's epoch
    up(rt)
    log.slow = True
    assert await send(alice, token(3)) == [token(3)]  # its reset lands, its answer never comes
    started = log.sent[-1].fresh_epoch
    assert (await rt.log.replay(KEY, 0, started, "reader")).last_seq == 1  # (t3 is in the epoch it started)
    log.slow = False
    await send(alice, token(4))  # missed: the breaker is open after the timeout
    up(rt)
    t5 = events(await send(alice, token(5)))[0]
    assert t5["epoch"] not in (t1["epoch"], started)  # a new epoch after t4's hole, not t3's going on


async def test_what_one_connection_missed_is_bounded_and_the_rest_repaired_without_it() -> None:
    """A connection on many streams through an outage remembered each one it missed frames of,
    without bound: past ``UNLOGGED_KEPT`` its oldest are repaired without it, as a closed
    connection's are, so each still starts a new epoch once the log answers."""
    log = _RecordingLog()
    rt = Runtime(Settings.load({}), log)
    alice = tab(rt)
    extra = 10
    ids = [f"m{n}" for n in range(repairs_module.UNLOGGED_KEPT + extra)]
    firsts = {m: events(await send(alice, token(0, m)))[0] for m in ids}  # logged: each has an epoch
    down(rt)
    for m in ids:
        await send(alice, token(1, m))  # missed
    assert len(alice.conn.unlogged) == repairs_module.UNLOGGED_KEPT
    let_go = [StreamKey(ALICE, "/", "", m) for m in ids[:extra]]
    assert all(key not in alice.conn.unlogged for key in let_go)
    for key in let_go:  # (the epoch it knew, or "" where it no longer remembered one: STREAMS_KEPT)
        assert list(rt.repairs.waiting[key].gone.values()) == [alice.conn.id]
        assert alice.conn not in rt.repairs.waiting[key].tabs
    assert len(rt.repairs.waiting) == len(ids)
    up(rt)
    while rt.repairs.waiting:
        assert await rt.repairs.repair()
    assert {request.key.stream for request in log.resets} == set(ids)  # each one repaired, once
    assert len(log.resets) == len(ids)
    assert not alice.conn.unlogged
    for m in (ids[0], ids[-1]):  # let go, and kept: a resume across the missed frame is told
        after = await rt.log.replay(StreamKey(ALICE, "/", "", m), firsts[m]["seq"], firsts[m]["epoch"], "reader")
        assert after.gap or after.epoch != firsts[m]["epoch"]


async def test_a_tab_behind_when_the_log_failed_does_not_log_its_older_frames_into_the_new_epoch() -> None:
    """Both tabs' appends failed; once the log answers, the tab ahead logs its next frames in the
    new epoch first. The tab behind still has frames the app emitted before those: they go out
    unstamped, and its copies of the new epoch's entries get their seqs rather than follow them
    into the log a second time (found by attack: CLIENT KILL during appends, a resume then replayed
    one epoch's tokens twice, the second time after older ones)."""
    rt = Runtime(Settings.load({}), _RecordingLog())
    ahead, behind = tab(rt), tab(rt)
    frames = [token(i) for i in range(11)]  # (one object per emit, handed to every tab, as python-socketio does)
    for outbound in (ahead, behind):
        await send(outbound, *frames[1:4])
    down(rt)
    assert events(await send(ahead, *frames[4:8]))[0].get("seq") is None  # unstamped: missed
    assert events(await send(behind, frames[4]))[0].get("seq") is None
    for frame in frames[5:8]:
        behind.feed(frame)  # its writer is behind: these are on their way
    up(rt)
    assert await rt.repairs.repair()
    new = events(await send(ahead, frames[8], frames[9]))
    assert [e["seq"] for e in new] == [1, 2]
    late = events(await send(behind, frames[8], frames[9], frames[10]))
    assert [e.get("seq") for e in late] == [None, None, None, 1, 2, 3]
    assert {e["epoch"] for e in late[3:]} == {new[0]["epoch"]}
    assert events(await send(ahead, frames[10]))[0]["seq"] == 3
    replay = await rt.log.replay(KEY, 0, new[0]["epoch"], "reader")
    assert replay.last_seq == 3
    assert not behind.conn.rejoining
    assert not ahead.conn.rejoining


async def test_after_the_log_failed_a_new_epoch_keeps_emit_order_across_tabs() -> None:
    """As above, with the tab behind logging at once: the tab ahead waits for its copies of the
    frames the log missed (on their way), so the new epoch begins with them, in emit order, and
    both tabs get one seq per emit."""
    rt = Runtime(Settings.load({}), _RecordingLog())
    ahead, behind = tab(rt), tab(rt)
    frames = [token(i) for i in range(11)]
    for outbound in (ahead, behind):
        await send(outbound, *frames[1:4])
    down(rt)
    await send(ahead, *frames[4:8])  # unstamped: missed
    await send(behind, frames[4])
    for frame in frames[5:8]:
        behind.feed(frame)
    up(rt)
    assert await rt.repairs.repair()
    new, late = await asyncio.gather(send(ahead, frames[8], frames[9]), send(behind, frames[8], frames[9], frames[10]))
    assert [e["seq"] for e in events(late)] == [1, 2, 3, 4, 5, 6]  # 5, 6, 7, 8, 9, 10
    assert [e["seq"] for e in events(new)] == [4, 5]  # 8, 9
    assert {e["epoch"] for e in events(new) + events(late)} == {events(late)[0]["epoch"]}


async def test_a_frame_another_tab_stopped_waiting_for_is_not_logged_after_newer_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tab A is fed a frame only it gets, tab B then a frame emitted after it; A's writer does not
    get to the log within the write timeout (a loaded machine, a Redis call that hangs), so B logs
    its frame without it. A's older frame used to be logged after B's newer one: out of emit order
    in one epoch, and a client that applies frames by seq drops what follows a seq it has (found
    by attack: SIGSTOP of Redis). A's frame goes out unstamped and the stream starts anew."""
    rt = Runtime(Settings.load({}, write_timeout=0.05), MemoryLog())
    a, b = tab(rt), tab(rt)
    first = events(await send(a, token(1)))[0]
    await send(b, token(1))
    a.feed(token(2, to="a"))  # A's alone, on its way to the log
    newer = events(await send(b, token(3)))[0]
    assert newer["seq"] == first["seq"] + 1  # B waited its bound, then went on
    assert rt.stats.order_waits_timed_out == 1
    older = events(await a.flush())[0]
    assert older.get("seq") is None
    assert rt.stats.frames_passed_over == 1
    assert "another tab logged newer frames without them" in caplog.text  # (operators are told)
    assert contents(await rt.log.replay(KEY, 0, first["epoch"], "reader")) == ["t1", "t3"]
    assert events(await send(a, token(4)))[0]["epoch"] != first["epoch"]  # a resume across token 2 is told


async def test_frames_others_went_ahead_of_while_their_writer_was_stuck_go_out_unstamped() -> None:
    """The same when B went on because A's writer was stuck behind a client that does not read:
    once A's client reads again, A's older frame is not logged after B's newer one."""
    rt = Runtime(Settings.load({}, write_timeout=5.0), MemoryLog())
    a, b = tab(rt), tab(rt)
    first = events(await send(a, token(1)))[0]
    await send(b, token(1))
    a.feed(token(2, to="a"))
    a.feeder.sending_since = 1.0  # its writer has been handing a batch to its transport for ages
    newer = events(await send(b, token(3)))[0]
    assert newer["seq"] == first["seq"] + 1  # B did not wait for it
    a.feeder.sending_since = 0.0  # the client read
    older = events(await a.flush())[0]
    assert older.get("seq") is None
    assert contents(await rt.log.replay(KEY, 0, first["epoch"], "reader")) == ["t1", "t3"]
