"""The outbound pipeline alone, without a server: what one batch of frames becomes.

Drives :class:`~asgi_resume.pipeline.outbound.Outbound` as the transports do (``feed``, then ``flush``),
on the memory log. Fast: a change to the pipeline is checked here in a second, before the
end-to-end suites.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import tracemalloc
from typing import Any

import pytest

from asgi_resume import protocol
from asgi_resume.config import Settings
from asgi_resume.log import StreamKey
from asgi_resume.log.memory import MemoryLog
from asgi_resume.pipeline.classify import STAMPING_CACHE_CHARS
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.inbound import UNREAD, inspect
from asgi_resume.pipeline.outbound import Outbound
from asgi_resume.pipeline.resume import ResumeRequest
from asgi_resume.pipeline.runtime import Runtime

pytestmark = pytest.mark.anyio
ALICE = "alice-principal-hash"


def runtime(**settings: Any) -> Runtime:
    return Runtime(Settings.load({}, **settings))


def tab(rt: Runtime, principal: str | None = ALICE, namespace: str = "/") -> Outbound:
    """A connection whose CONNECT in ``namespace`` the app accepted, as ``principal``."""
    outbound = Outbound(rt, Connection({"type": "websocket", "query_string": b""}, rt.log.now_ms()))
    outbound.conn.connecting(namespace, principal)
    outbound.feed("40" + ("" if namespace == "/" else namespace + ",") + '{"sid":"s"}')
    return outbound


def token(i: int, message_id: str = "m", **extra: Any) -> str:
    arg = {"chat_id": "c", "message_id": message_id, "data": {"type": "chat:completion", "data": {"content": f"t{i}"}}}
    return "42" + json.dumps(["events", {**arg, **extra}], separators=(",", ":"))


def done(message_id: str = "m") -> str:
    arg = {"chat_id": "c", "message_id": message_id, "data": {"type": "chat:completion", "data": {"done": True}}}
    return "42" + json.dumps(["events", arg], separators=(",", ":"))


async def send(outbound: Outbound, *frames: str | bytes) -> list[Any]:
    for frame in frames:
        outbound.feed(frame)
    return await outbound.flush()


def events(sent: list[Any]) -> list[Any]:
    """The first argument of each EVENT sent (binary attachments and other frames left out)."""
    found = []
    for frame in sent:
        packet = protocol.parse(frame) if isinstance(frame, str) else None
        if packet is not None and packet.type in (protocol.EVENT, protocol.BINARY_EVENT):
            found.append(packet.first_arg)
    return found


async def test_stream_frames_are_stamped_in_order_and_otherwise_unchanged() -> None:
    alice = tab(runtime())
    sent = await send(alice, token(1), token(2), done())
    stamped = events(sent[1:])  # (after the CONNECT reply)
    assert [e["seq"] for e in stamped] == [1, 2, 3]
    assert len({e["epoch"] for e in stamped}) == 1
    assert [e["data"]["data"] for e in stamped] == [{"content": "t1"}, {"content": "t2"}, {"done": True}]
    assert sent[0] == '40{"sid":"s"}'


async def test_the_tabs_of_one_principal_get_one_seq_per_emit() -> None:
    rt = runtime()
    one, two = tab(rt), tab(rt)
    for i in range(1, 4):
        first, second = events(await send(one, token(i))), events(await send(two, token(i)))
        assert first == second  # the copies, stamped alike
        assert first[0]["seq"] == i


async def test_principals_have_separate_streams_under_one_id() -> None:
    rt = runtime()
    alice, mallory = tab(rt), tab(rt, "mallory-principal-hash")
    await send(alice, token(1), token(2))
    assert [e["seq"] for e in events(await send(mallory, token(9)))] == [1]  # her own stream, from 1


async def test_a_connection_without_principal_gets_frames_as_the_app_sent_them() -> None:
    anonymous = tab(runtime(), None)
    assert await send(anonymous, token(1)) == ['40{"sid":"s"}', token(1)]


async def test_a_refused_connect_binds_nobody() -> None:
    rt = runtime()
    refused = Outbound(rt, Connection({"type": "websocket", "query_string": b""}, rt.log.now_ms()))
    refused.conn.connecting("/", ALICE)
    assert await send(refused, '44{"message":"revoked"}', token(1)) == ['44{"message":"revoked"}', token(1)]
    assert refused.conn.principals == {}


async def test_a_call_is_noted_and_not_logged() -> None:
    alice = tab(runtime())
    call = "421" + token(1)[2:]  # ack id 1: the app waits for this client's answer
    assert (await send(alice, call))[1:] == [call]
    assert alice.conn.calls == {("/", 1): None}


async def test_a_binary_event_is_stamped_and_keeps_its_attachments_behind_it() -> None:
    alice = tab(runtime())
    header = '451-["events",{"message_id":"m","blob":{"_placeholder":true,"num":0}}]'
    sent = await send(alice, header, protocol.EIO_PING, b"\x00\x01")  # a ping may come in between
    assert sent[1] == protocol.EIO_PING
    assert sent[3] == b"\x00\x01"
    assert events(sent)[0]["seq"] == 1


async def test_a_resume_request_between_a_binary_events_header_and_its_attachments_waits_for_them() -> None:
    """Found by attack: a client's request can be queued between the app's header and its
    attachment (the app's writer waits for room, the client's reader does not); the event was
    given up, sent in no log, and a resume from 0 said ``gap: false`` without it."""
    alice = tab(runtime())
    header = '451-["events",{"message_id":"m","blob":{"_placeholder":true,"num":0}}]'
    alice.feed(header)
    alice.feed(ResumeRequest("/", 7, "other", 0, None))
    alice.feed(b"\x00\x01")
    sent = await alice.flush()
    assert events(sent)[0]["seq"] == 1  # logged
    at = next(i for i, f in enumerate(sent) if isinstance(f, str) and f.startswith("451-"))
    assert sent[at + 1] == b"\x00\x01"  # its attachment right behind it
    answer = next(protocol.parse(f) for f in sent[at + 2 :] if isinstance(f, str) and f.startswith("437"))
    assert answer is not None  # answered after it
    assert answer.data[0]["error"] == "not_found"
    later = tab(alice.runtime)
    later.feed(ResumeRequest("/", 8, "m", 0, None))
    replay = await later.flush()
    assert [e["seq"] for e in events(replay)] == [1]


async def test_a_resume_in_a_batch_replays_then_sends_what_it_did_not_carry() -> None:
    alice = tab(runtime())
    await send(alice, token(1), token(2))
    epoch = alice.conn.cursors[next(iter(alice.conn.cursors))][0]
    later = tab(alice.runtime)  # a reloaded tab: live frames and its resume in one batch
    later.feed(token(3))
    later.feed(ResumeRequest("/", 7, "m", 1, epoch))
    later.feed(token(4))
    sent = await later.flush()
    await send(alice, token(3), token(4))
    seqs = [e["seq"] for e in events(sent) if "seq" in e]
    assert seqs == [2, 3, 4]  # each once, in order: the replay carried 3, then 4 went live
    answer = next(protocol.parse(f) for f in sent if isinstance(f, str) and f.startswith("437"))
    assert answer is not None
    assert answer.data[0]["last_seq"] >= 3


async def test_a_failure_in_the_pipeline_costs_the_stamps_never_the_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    alice = tab(runtime())
    await alice.flush()

    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(alice.streams, "append", broken)
    assert await send(alice, token(1), "2", token(2)) == [token(1), "2", token(2)]


class _RemoteMemoryLog(MemoryLog):
    """A log that could fail or wait, as Redis can: its calls go through the guard."""

    synchronous = False


async def test_a_log_that_just_failed_is_not_waited_for() -> None:
    rt = Runtime(Settings.load({}), _RemoteMemoryLog())
    alice = tab(rt)
    before = events(await send(alice, token(1)))[0]
    rt.guard.failed("gone")  # the breaker is open for a moment
    assert await send(alice, token(2)) == [token(2)]  # unstamped, at once
    rt.guard._down_until = 0.0  # (the retry delay passed)
    after = events(await send(alice, token(3)))[0]
    assert after["epoch"] != before["epoch"]  # the history with a hole is a new epoch


async def test_a_copy_of_an_entry_logged_here_is_stamped_without_a_log_call() -> None:
    rt = runtime(max_frame_bytes=2 * LARGE_FRAME_CHARS)  # (logged: the default would send it unstamped)
    tabs = [tab(rt) for _ in range(3)]
    for outbound in tabs:
        await outbound.flush()  # (the CONNECT replies)
    for i in range(1, 6):
        copies = [events(await send(outbound, token(i))) for outbound in tabs]
        assert copies[0] == copies[1] == copies[2]  # stamped alike
        assert copies[0][0]["seq"] == i
    # the first tab's five, and each other tab's first frame (the log finds where a tab starts);
    # the other copies were known here
    assert rt.stats.log_writes == 5 + 2
    assert rt.stats.frames_stamped_known == 2 * 4
    key = next(iter(tabs[0].conn.cursors))
    logged = await rt.log.replay(key, 0, None, "reader")
    assert [seq for seq, _ in logged.frames] == [1, 2, 3, 4, 5]  # one entry per emit, in the log


async def test_a_copy_after_an_entry_the_tab_missed_goes_to_the_log() -> None:
    rt = runtime()
    one, two = tab(rt), tab(rt)
    await send(one, token(1))
    await send(two, token(1))  # (its first frame: the log tells where it starts)
    await send(one, token(2), token(3))
    writes = rt.stats.log_writes
    stamped = events(await send(two, token(3)))  # it never got t2: the entry after its cursor is not t3
    assert stamped[0]["seq"] == 3  # the log found its copy further on
    assert rt.stats.log_writes == writes + 1
    assert rt.stats.frames_stamped_known == 0


async def test_copies_on_a_held_tab_go_to_the_log_and_teach_nothing() -> None:
    rt = runtime()
    held, live, other = tab(rt), tab(rt), tab(rt)
    held.held = True
    for i in (1, 2, 3):
        for outbound in (held, live, other):  # the held tab's copy comes first
            await send(outbound, token(i))
    # the held tab's appends touch nothing, so its results are not the live tabs' to reuse: the first
    # live tab logs each frame (taking the stream over), the second reuses that one's result (but
    # for its first frame, t1)
    assert rt.stats.frames_stamped_known == 2
    key = next(iter(held.conn.cursors))
    assert held.conn.others_ms.get(key, 0) > 0  # it saw the live tabs take the stream over
    await send(held, token(4))
    writes = rt.stats.log_writes
    assert events(await send(live, token(4)))[0]["seq"] == 4
    assert rt.stats.log_writes == writes + 1  # the held tab's t4 taught the live one nothing


async def test_a_batch_starting_with_known_copies_logs_only_the_rest() -> None:
    rt = runtime()
    one, two = tab(rt), tab(rt)
    await send(one, token(1))
    await send(two, token(1))
    await send(one, token(2), token(3))
    stamped = events(await send(two, token(2), token(3), token(4)))  # t4: the other tab has not got it yet
    assert [e["seq"] for e in stamped] == [2, 3, 4]
    assert rt.stats.frames_stamped_known == 2
    assert [e["seq"] for e in events(await send(one, token(4)))] == [4]  # t4 went to the log: one entry
    key = next(iter(one.conn.cursors))
    assert (await rt.log.replay(key, 0, None, "reader")).last_seq == 4


async def test_a_repair_tells_every_tab_that_missed_the_stream() -> None:
    """Two tabs miss the same frames; the repair used to clear the last tab's note only, and the
    other's stayed for the connection's life (one per stream that ended in an outage)."""
    rt = Runtime(Settings.load({}), _RemoteMemoryLog())
    one, two = tab(rt), tab(rt)
    t1 = events(await send(one, token(1)))[0]
    await send(two, token(1))
    rt.guard.failed("gone")
    for outbound in (one, two):
        await send(outbound, token(2), done())  # unstamped: the stream ends while the log is down
    rt.guard._down_until = 0.0
    await rt.repairs.repair()
    assert not one.conn.unlogged
    assert not two.conn.unlogged
    assert not rt.repairs.waiting
    after_t1 = await rt.log.replay(StreamKey(ALICE, "/", "", "m"), t1["seq"], t1["epoch"], "reader")
    assert after_t1.gap or after_t1.epoch != t1["epoch"]  # t2 and the done frame are missing


class _SlowAnswerLog(_RemoteMemoryLog):
    """A repair's reset lands at once; its answer comes back once ``answer`` is set (a round trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    async def append(self, requests: Any) -> Any:
        results = await super().append(requests)
        if all(not request.entries for request in requests):  # (a repair)
            await self.answer.wait()
        return results


async def test_a_repair_answered_late_keeps_a_miss_that_came_meanwhile() -> None:
    log = _SlowAnswerLog()
    rt = Runtime(Settings.load({}), log)
    alice = tab(rt)
    await send(alice, token(1))
    rt.guard.failed("gone")
    await send(alice, token(2))  # unstamped
    rt.guard._down_until = 0.0
    repair = asyncio.create_task(rt.repairs.repair())
    await asyncio.sleep(0)  # (the reset landed: a new epoch; its answer is on its way)
    t3 = events(await send(alice, token(3)))[0]
    rt.guard.failed("gone again")
    await send(alice, token(4))  # unstamped: a new miss, in t3's epoch
    rt.guard._down_until = 0.0
    log.answer.set()
    await repair  # its answer is older than that miss: it must not clear it
    await send(alice, token(5))
    key = next(iter(alice.conn.cursors))
    after_t3 = await rt.log.replay(key, t3["seq"], t3["epoch"], "reader")
    assert after_t3.gap or after_t3.epoch != t3["epoch"]  # t4 is missing: never a silent hole


async def test_frames_fed_before_a_tab_left_their_namespace_do_not_take_the_stream_back() -> None:
    """Found by an attack run: frames classified before the client's DISCONNECT were logged after
    it, which set the tab's cursor back; rejoining, it went on in the old epoch across what nobody
    logged (a silent hole on Redis, where the log call is out while the DISCONNECT is read)."""
    rt = runtime()
    alice = tab(rt)
    t1 = events(await send(alice, token(1)))[0]
    alice.feed(token(2))  # on its way to the log...
    await inspect(rt, alice.conn, "41")  # ...when the client leaves "/"
    assert events(await alice.flush()) == [json.loads(token(2)[2:])[1]]  # sent as it was, in no log
    assert not alice.conn.cursors
    alice.conn.connecting("/", ALICE)  # it joins again; what was emitted meanwhile reached nobody
    await send(alice, '40{"sid":"s2"}')
    again = events(await send(alice, token(9)))[0]
    assert again["epoch"] != t1["epoch"]


async def test_frames_fed_before_a_tab_left_cost_the_tab_that_stayed_nothing() -> None:
    """Found by an attack run: the leaving tab's late frames reached the log after its release, as a
    newcomer's, and started a new epoch under the tab that stayed."""
    rt = runtime()
    leaving, staying = tab(rt), tab(rt)
    first = [events(await send(outbound, token(1)))[0] for outbound in (leaving, staying)]
    leaving.feed(token(2))
    await inspect(rt, leaving.conn, "41")
    await leaving.flush()
    later = [events(await send(staying, token(i)))[0] for i in (2, 3)]
    assert {event["epoch"] for event in [*first, *later]} == {first[0]["epoch"]}
    assert [event["seq"] for event in later] == [2, 3]


class _Clock:
    """The memory log's clock, moved by hand: entries logged before a rejoin are older than it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_tab_that_joins_again_is_not_matched_to_entries_it_got_before_it_left() -> None:
    """Found by review: with another namespace open, a rejoin kept the connection's start time, so
    its first frame was matched to the earliest entry with that content it had got before leaving."""
    clock = _Clock()
    rt = Runtime(Settings.load({}), MemoryLog(clock=clock))
    alice = rt.resolver.resolve({"type": "websocket", "query_string": b""}, {"token": "alice"})
    leaving, staying = tab(rt, alice), tab(rt, alice)
    leaving.conn.connecting("/b", alice)
    await send(leaving, '40/b,{"sid":"x"}')  # it stays in "/b" throughout
    for i in (1, 2, 3):
        for outbound in (leaving, staying):
            await send(outbound, token(i))
    await inspect(rt, leaving.conn, "41")
    for i in (4, 5):
        await send(staying, token(i))
    clock.now += 1.0
    assert await inspect(rt, leaving.conn, '40{"token":"alice"}') is None  # it joins "/" again
    await send(leaving, '40{"sid":"s2"}')
    repeated = [events(await send(outbound, token(1)))[0] for outbound in (leaving, staying)]  # t1's content again
    assert [event["seq"] for event in repeated] == [6, 6]


async def _loop_turns_until(predicate: Any, turns: int = 1000) -> None:
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)  # (a loop turn, not a timed wait)
    raise AssertionError("the condition never held")


class _GatedLog(_RemoteMemoryLog):
    """A log whose appends of frames land once ``gate`` is set (a call out while a tab leaves)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None

    async def append(self, requests: Any) -> Any:
        if self.gate is not None and any(request.entries for request in requests):
            await self.gate.wait()
        return await super().append(requests)


async def test_a_tab_leaving_while_its_call_is_out_is_flagged_after_the_call_lands() -> None:
    """An append that followed the stream and landed after the flag would clear it."""
    log = _GatedLog()
    rt = Runtime(Settings.load({}), log)
    alice = tab(rt)
    await send(alice, token(1))
    log.gate = asyncio.Event()
    alice.feed(token(2))
    flush = asyncio.create_task(alice.flush())
    await _loop_turns_until(lambda: alice.conn.calling)
    leaving = asyncio.create_task(inspect(rt, alice.conn, "41"))
    await _loop_turns_until(lambda: alice.conn.call_answered is not None)  # it waits for the call
    assert not leaving.done()
    log.gate.set()
    await flush
    await leaving
    newcomer = events(await send(tab(rt), token(9)))[0]  # what was emitted meanwhile reached nobody
    assert newcomer["seq"] == 1  # a new epoch


async def test_a_tab_that_leaves_its_namespace_while_the_log_is_down_gets_its_streams_repaired() -> None:
    """The release cannot be logged: what is emitted meanwhile reaches nobody, so the streams get a
    new epoch once the log answers, or a newcomer would go on across it."""
    rt = Runtime(Settings.load({}), _RemoteMemoryLog())
    alice = tab(rt)
    t1 = events(await send(alice, token(1)))[0]
    rt.guard.failed("gone")
    await inspect(rt, alice.conn, "41")  # its release fails at once
    rt.guard._down_until = 0.0
    await rt.repairs.repair()
    newcomer = events(await send(tab(rt), token(9)))[0]
    assert newcomer["epoch"] != t1["epoch"]


async def test_a_connect_naming_a_namespace_with_a_record_separator_is_not_the_apps() -> None:
    """Found by attack: python-socketio echoes a namespace in its reply as it is, and the long-polling
    reader splits a response at a record separator: the app's refusal ``44/x\\x1e40,"..."`` read as
    a refusal in "/x" and an accepted CONNECT in "/", which bound a CONNECT noted there before."""
    rt = runtime()
    mallory = Outbound(rt, Connection({"type": "websocket", "query_string": b""}, rt.log.now_ms()))
    assert await inspect(rt, mallory.conn, '40/x\x1e40,{"token":"mallory"}') is UNREAD
    assert await inspect(rt, mallory.conn, "41/x\x1e40,") is UNREAD
    mallory.conn.connecting("/", ALICE)  # (a CONNECT in "/" still waiting for its reply)
    await send(mallory, '40,"Unable to connect"')  # no reply the app sends
    assert mallory.conn.principals == {}
    await send(mallory, '40{"sid":"s"}')  # (and none binds after it)
    assert mallory.conn.principals == {}


async def test_the_stamping_cache_keeps_a_few_mib_of_frames_whatever_their_size() -> None:
    """Found by attack: the cache of how to stamp recent stream frames (for the copies of an emit)
    kept the last 256 whatever their size: 300 events of 256 KB held +197 MiB against +7 MiB bare
    until newer frames pushed them out. It keeps ``STAMPING_CACHE_CHARS`` of frames at most, and
    copies of a frame it kept are still stamped alike."""
    rt = runtime(max_frame_bytes=STAMPING_CACHE_CHARS * 2)
    alice, other_tab = tab(rt), tab(rt)
    big = "x" * (256 << 10)
    for i in range(1, 41):
        sent = events(await send(alice, token(i, content=big)))
        assert sent[0]["seq"] == i
        assert events(await send(other_tab, token(i, content=big)))[0]["seq"] == i  # a copy
    assert 0 < rt.stamping_cache_chars == sum(map(len, rt.stamping_cache)) <= STAMPING_CACHE_CHARS
    assert len(rt.stamping_cache) < 40
    huge = token(41, content="y" * (STAMPING_CACHE_CHARS + 1))
    assert events(await send(alice, huge))[0]["seq"] == 41
    assert huge not in rt.stamping_cache  # larger than the whole cache: classified per copy


#: what one stream frame of 16 MB to three tabs of a user may cost the event loop, in CPU time of
#: its thread: 1.5 s before (per copy: a regex scan for long numbers and each done rule's needles
#: over the whole text, found by attack as +280-470 ms for other users' live frames), 60-75 ms now
#: (parsed, cut open and hashed once, a few passes over the text; the copies are compared to it)
LARGE_FRAME_CHARS, MAX_LARGE_FRAME_CPU_S = 16_000_000, 0.3


async def test_a_large_stream_frame_costs_a_few_passes_over_its_text_whatever_its_copies() -> None:
    rt = runtime(max_frame_bytes=2 * LARGE_FRAME_CHARS)  # (logged: the default would send it unstamped)
    tabs = [tab(rt) for _ in range(3)]
    for t in tabs:
        await send(t, token(1))
    content = "x" * LARGE_FRAME_CHARS
    copies = [token(2, content=content) for _ in tabs]  # (as python-engineio sends them: a str each)
    started = time.thread_time()
    sent = [events(await send(t, copy)) for t, copy in zip(tabs, copies, strict=True)]
    spent = time.thread_time() - started
    assert [s[0]["seq"] for s in sent] == [2, 2, 2]
    assert all(s[0]["content"] == content for s in sent)
    assert spent < MAX_LARGE_FRAME_CPU_S, f"{spent * 1000:.0f} ms of CPU for one 16 MB frame to 3 tabs"


async def test_a_frame_over_max_frame_bytes_goes_out_unstamped_and_its_stream_starts_anew() -> None:
    """Found by attack: one stream event of 32 MB made one Redis append that outlasted the write
    timeout, which opened the breaker: every user's frames went out unstamped for a second. A frame
    over ASGI_RESUME_MAX_FRAME_BYTES is not logged; the frames of its stream in the same batch go
    out unstamped with it, and the stream goes on in a new epoch, so a resume from before it learns
    of the hole (gap: true) rather than missing it silently."""
    rt = Runtime(Settings.load({}, max_frame_bytes=1000))
    alice = tab(rt)
    first = events(await send(alice, token(1)))[0]
    big = token(3, content="x" * 1000)
    sent = events(await send(alice, token(2), big, token(4)))
    assert [e.get("seq") for e in sent] == [None, None, None]  # (the whole batch of that stream)
    assert sent[1]["content"] == "x" * 1000
    after = events(await send(alice, token(5)))[0]
    assert after["epoch"] != first["epoch"]
    assert (rt.stats.frames_too_large, rt.stats.frames_unstamped) == (3, 3)
    replay = await rt.log.replay(StreamKey(ALICE, "/", "", "m"), 1, first["epoch"], "other")
    assert replay.gap


async def test_max_frame_bytes_counts_a_frames_bytes_not_its_characters() -> None:
    """Found by review: the limit counted characters, so a frame of 3-byte characters (an app whose
    JSON does not escape them) was logged at three times the bytes ``ASGI_RESUME_MAX_FRAME_BYTES``
    says (what Redis is sent is UTF-8)."""

    def unescaped(i: int, content: str) -> str:
        return token(i, content="@").replace('"content":"@"', f'"content":"{content}"')

    rt = runtime(max_frame_bytes=1000)
    alice = tab(rt)
    assert events(await send(alice, unescaped(1, "\u20ac" * 250)))[0]["seq"] == 1  # about 850 bytes
    assert events(await send(alice, unescaped(2, "\u20ac" * 400)))[0].get("seq") is None  # 1,300 in 500 chars
    assert rt.stats.frames_too_large == 1


async def test_a_stream_whose_first_frame_is_over_max_frame_bytes_replays_from_the_start_with_a_gap() -> None:
    """Found by review: the stream's first frame is too large and in no log. The tab had no cursor,
    so its reset named no epoch, and the epoch it started was not marked as one after a break: a
    resume from the start (last_seq 0, no epoch) said gap: false without that first frame."""
    rt = runtime(max_frame_bytes=1000)
    alice = tab(rt)
    assert events(await send(alice, token(1, content="x" * 1000)))[0].get("seq") is None
    assert [e["seq"] for e in events(await send(alice, token(2), token(3)))] == [1, 2]
    replay = await rt.log.replay(StreamKey(ALICE, "/", "", "m"), 0, None, "other-tab")
    assert [seq for seq, _ in replay.frames] == [1, 2]
    assert replay.gap


async def test_the_large_frame_kept_for_its_copies_does_not_keep_its_parsed_payload() -> None:
    """Found by review: the last frame too large for the stamping cache is kept for its copies
    (``Runtime.large_stamping``), and with it its parsed JSON: a 23 MB frame left 112 MB held until
    the next such frame. The copies need its header and its text (compared), not its payload."""
    rt = runtime()
    alice = tab(rt)
    arg = {"message_id": "m", "data": {"content": "x" * (8 << 20), "parts": [{"k": i} for i in range(100_000)]}}
    big = "42" + json.dumps(["events", arg], separators=(",", ":"))
    size = len(big)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sent = await send(alice, big)
        assert events(sent)[0].get("seq") is None  # (over max_frame_bytes: not logged)
        del sent, big, arg
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1.5 * size, f"{kept / 1e6:.0f} MB kept after a frame of {size / 1e6:.0f} MB went out"
