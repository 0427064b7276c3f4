"""Replays to clients that never read (issue 13, finding 5).

50 connections that never read each asked 20 times for a 2,000-frame stream: all 20 replays were
built in one batch per connection and stayed in memory behind the blocked socket (RSS 51 -> 604
MiB while the sockets stayed open), and building them stalled another user's live stream 4-5 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import itertools
import json
import logging
import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from asgi_resume import protocol
from asgi_resume.config import Settings
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.outbound import Outbound
from asgi_resume.pipeline.polling_replays import PER_PRINCIPAL_BYTES, PER_PROCESS_BYTES
from asgi_resume.pipeline.replay import REPLAY_FIRST_PAGE, REPLAY_PAGE, REPLAY_PAGE_BYTES, RESPONSE_REPLAY_BYTES
from asgi_resume.pipeline.replays_in_flight import PER_PRINCIPAL, ReplaysInFlight
from asgi_resume.pipeline.resume import ResumeRequest
from asgi_resume.pipeline.runtime import Runtime, Turns
from asgi_resume.transport.polling import PollResponse
from tests.support.app import chat_event, emit_tokens, make_app, make_sio, room_of
from tests.support.polling import PollingClient, is_event
from tests.support.raw import RawClient, masked_frame
from tests.support.server import serve
from tests.support.waits import until

pytestmark = pytest.mark.anyio

NON_READERS, REQUESTS, FRAMES = 50, 20, 2000
PACE_S = 0.01  # the bystander's stream: a token every 10 ms
# Bounds, with a wide margin on a loaded 2-core machine. Measured before the fix: +550 MiB and a
# 4-5 s stall; after it: see docs/security.md (Slow readers).
MAX_RSS_GROWTH_MIB = 100
MAX_LIVE_GAP_S = 1.0


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class NonReader:
    """A websocket client spoken over a bare socket: it reads its CONNECT answer, then never reads again."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.token = parts.hostname or "127.0.0.1", parts.port or 80, token
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self._buffer = b""

    async def connect(self) -> NonReader:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, (self.host, self.port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            self.sock,
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {self.host}:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += await self._recv()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert (await self._frame()).startswith("0")  # Engine.IO OPEN
        await self.send("40" + json.dumps({"token": self.token}))
        while not (await self._frame()).startswith("40{"):
            pass
        return self

    async def _recv(self) -> bytes:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if not data:
            raise ConnectionError("closed")
        return data

    async def _frame(self) -> str:
        while True:
            if len(self._buffer) >= 2:
                length, offset = self._buffer[1] & 0x7F, 2
                if length == 126 and len(self._buffer) >= 4:
                    length, offset = struct.unpack("!H", self._buffer[2:4])[0], 4
                elif length == 127 and len(self._buffer) >= 10:
                    length, offset = struct.unpack("!Q", self._buffer[2:10])[0], 10
                if length < 126 and len(self._buffer) >= offset + length:
                    payload = self._buffer[offset : offset + length]
                    self._buffer = self._buffer[offset + length :]
                    return payload.decode()
            self._buffer += await self._recv()

    async def send(self, text: str) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, masked_frame(text))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Bystander:
    """Another user's reading tab: when each frame of its live stream arrived (looked at every 5 ms)."""

    def __init__(self, client: RawClient, message_id: str) -> None:
        self.client, self.marker = client, f'"message_id":"{message_id}"'
        self.arrivals: list[float] = []

    async def watch(self) -> None:
        seen = 0
        while True:
            await asyncio.sleep(0.005)
            frames, now = self.client.frames, time.monotonic()
            for frame in frames[seen:]:
                if isinstance(frame, str) and self.marker in frame:
                    self.arrivals.append(now)
            seen = len(frames)

    def longest_gap(self) -> float:
        """The longest time without a live frame, up to now."""
        times = [*self.arrivals, time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(times))


async def paced(sio: Any, token: str, message_id: str, stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        await sio.emit("events", chat_event(message_id, i), room=room_of(token))
        await asyncio.sleep(PACE_S)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("log", ["memory", "redis"])
async def test_replays_to_clients_that_never_read_pin_no_memory_and_stall_nobody(
    log: str, request: pytest.FixtureRequest
) -> None:
    settings: dict[str, Any] = {}
    if log == "redis":
        server = request.getfixturevalue("redis_server")
        settings = {"redis_url": server.url, "key_prefix": f"pressure{time.monotonic_ns()}"}
    sio = make_sio()
    # (a loaded machine can make one Redis write pass the default 0.25 s: the log is then skipped for
    # a second and every resume answered "unavailable" at once, and this test would measure nothing)
    app = make_app(sio, write_timeout=1.0, **settings)
    stats = app.runtime.stats
    async with serve(app) as url:
        owner = await RawClient(url, auth={"token": "mallory"}).connect()
        await emit_tokens(sio, "mallory", "long", 1, FRAMES)
        await owner.wait_seqs("long", FRAMES, timeout=60)
        await owner.close()
        alice = await RawClient(url, auth={"token": "alice"}).connect()
        bystander = Bystander(alice, "live")
        watcher = asyncio.create_task(bystander.watch())
        stop = asyncio.Event()
        stream = asyncio.create_task(paced(sio, "alice", "live", stop))
        attackers = await asyncio.gather(*(NonReader(url, "mallory").connect() for _ in range(NON_READERS)))
        await asyncio.sleep(0.5)
        gc.collect()
        before = rss_mib()
        resume = protocol.event("resume-stream", {"message_id": "long", "last_seq": 0})
        for attacker in attackers:
            for _ in range(REQUESTS):
                await attacker.send(resume)
        # until the server took every request in and sent what the sockets take: no frame replayed for
        # 1 s once the first was (on a loaded machine the first page can take longer than that to come)
        peak, replayed, still = before, 0, 0.0
        deadline = time.monotonic() + 120
        while still < 1.0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            peak = max(peak, rss_mib())
            still = still + 0.1 if 0 < replayed == stats.frames_replayed else 0.0
            replayed = stats.frames_replayed
        gc.collect()
        held = rss_mib()
        gap = bystander.longest_gap()
        stop.set()
        await stream
        watcher.cancel()
        measured = (
            f"{log} log: RSS {before:.0f} -> {peak:.0f} MiB at most, {held:.0f} MiB held; the bystander's "
            f"longest gap {gap * 1000:.0f} ms; {replayed} frames replayed; {stats.log_failures} log failures"
        )
        assert replayed >= NON_READERS * REPLAY_FIRST_PAGE, measured  # the flood did reach the replays
        assert peak - before < MAX_RSS_GROWTH_MIB, measured
        assert held - before < MAX_RSS_GROWTH_MIB, measured
        assert gap < MAX_LIVE_GAP_S, measured
        # and the bystander's stream kept its log: every frame stamped, in order
        seqs = alice.seqs("live")
        assert seqs == list(range(1, len(seqs) + 1)), measured
        assert (stats.frames_unstamped, stats.log_failures) == (0, 0), measured
        for attacker in attackers:
            attacker.close()
        await alice.close()


# -- the pipeline alone: pages, their order, and what a failure costs -------------------------------


class Pipeline:
    """Two connections of one principal on one runtime (memory log): ``tab`` gets the stream live,
    ``reader`` resumes it. ``reads`` counts the log reads; ``sent`` is what ``reader`` was handed,
    one list per hand-over."""

    def __init__(self, **settings: Any) -> None:
        self.runtime = Runtime(Settings.load({}, **settings))
        self.tab, self.reader = self._connection(), self._connection()
        self.reads = 0
        self.sent: list[list[Any]] = []
        self.reads_at: list[int] = []  # log reads done when each hand-over came
        self.on_page: Any = None
        self.client_gone_after = 0  # > 0: the client is gone after that many hand-overs
        read = self.runtime.log.replay

        async def counting(*args: Any, **kwargs: Any) -> Any:
            self.reads += 1
            return await read(*args, **kwargs)

        self.runtime.log.replay = counting  # type: ignore[method-assign]

    def _connection(self) -> Outbound:
        conn = Connection({"type": "websocket", "headers": []}, 0)
        conn.principals["/"] = "alice"
        return Outbound(self.runtime, conn)

    async def emit(self, first: int, last: int, to: Outbound | None = None, content: str | None = None) -> None:
        outbound = to or self.tab
        for i in range(first, last + 1):
            outbound.feed(protocol.event("events", chat_event("m", i, content=content)))
        if outbound is self.reader:
            await outbound.send(self.deliver)
        else:
            await outbound.flush()

    async def deliver(self, items: list[Any]) -> bool:
        self.sent.append(items)
        self.reads_at.append(self.reads)
        if self.on_page is not None:
            await self.on_page(len(self.sent))
        return not (self.client_gone_after and len(self.sent) >= self.client_gone_after)

    def frames(self) -> list[Any]:
        return [item for items in self.sent for item in items]

    def seqs(self) -> list[int]:
        return [
            json.loads(f[2:])[1].get("seq") for f in self.frames() if isinstance(f, str) and f.startswith('42["events"')
        ]

    def answers(self) -> list[Any]:
        return [json.loads(f[3:])[0] for f in self.frames() if isinstance(f, str) and f.startswith("43")]


def resume_request(ack_id: int, last_seq: int = 0) -> ResumeRequest:
    return ResumeRequest("/", ack_id, "m", last_seq)


async def test_a_replay_is_read_and_sent_a_page_at_a_time() -> None:
    """A page is read only once the one before was handed over; what is logged meanwhile comes live."""
    pipeline = Pipeline()
    await pipeline.emit(1, 1000)

    async def on_page(pages: int) -> None:
        if pages == 3:
            await pipeline.emit(1001, 1050)  # another tab logs more while the replay is being sent

    pipeline.on_page = on_page
    pipeline.reader.feed(resume_request(1))
    await pipeline.reader.send(pipeline.deliver)
    pages = pipeline.sent[:-1]
    assert [len(page) for page in pages] == [REPLAY_FIRST_PAGE, *[REPLAY_PAGE] * 9, 1000 - REPLAY_FIRST_PAGE - 900]
    assert pipeline.reads_at[:-1] == list(range(1, len(pages) + 1))  # never a page read ahead
    assert pipeline.seqs() == list(range(1, 1001))
    assert pipeline.answers() == [
        {"message_id": "m", "ok": True, "replayed": 1000, "last_seq": 1000, "oldest_seq": 1,
         "epoch": pipeline.answers()[0]["epoch"], "done": False, "gap": False}
    ]  # fmt: skip
    # the frames logged meanwhile reach the reader live, after the answer
    pipeline.sent.clear()
    await pipeline.emit(1001, 1050, to=pipeline.reader)
    assert pipeline.seqs() == list(range(1001, 1051))


async def test_frames_live_in_the_batch_of_a_replay_go_out_once_each_in_order() -> None:
    """The batch's frames are logged before the replay's first read: its pages carry them."""
    pipeline = Pipeline()
    await pipeline.emit(1, 250)
    await pipeline.emit(251, 252)  # the tab got them: logged
    # the reader gets them too, in the batch of its request, before and after it, and one more
    pipeline.reader.feed(protocol.event("events", chat_event("m", 251)))
    pipeline.reader.feed(resume_request(1))
    pipeline.reader.feed(protocol.event("events", chat_event("m", 252)))
    pipeline.reader.feed(protocol.event("events", chat_event("m", 253)))
    await pipeline.reader.send(pipeline.deliver)
    assert pipeline.seqs() == list(range(1, 254))
    assert pipeline.answers()[0]["last_seq"] == 253
    assert str(pipeline.frames()[-1]).startswith("431[")  # the answer comes last
    pipeline.sent.clear()
    await pipeline.emit(254, 254, to=pipeline.reader)
    assert pipeline.seqs() == [254]


async def test_entries_trimmed_while_a_replay_is_sent_make_it_a_gap() -> None:
    pipeline = Pipeline(maxlen=300)
    await pipeline.emit(1, 300)

    async def on_page(pages: int) -> None:
        if pages == 1:
            await pipeline.emit(301, 700)  # the log keeps 401..700 now

    pipeline.on_page = on_page
    pipeline.reader.feed(resume_request(1))
    await pipeline.reader.send(pipeline.deliver)
    assert pipeline.seqs() == list(range(1, REPLAY_FIRST_PAGE + 1))  # what was there; nothing past the first read's end
    (answer,) = pipeline.answers()
    assert (answer["gap"], answer["replayed"], answer["last_seq"]) == (True, REPLAY_FIRST_PAGE, 300)


async def test_a_replay_to_a_client_that_left_stops_reading() -> None:
    pipeline = Pipeline()
    await pipeline.emit(1, 1000)
    pipeline.client_gone_after = 1
    for ack_id in range(1, 4):
        pipeline.reader.feed(resume_request(ack_id))
    await pipeline.reader.send(pipeline.deliver)
    assert pipeline.reads == 3  # one page each, not ten
    assert pipeline.answers() == []


async def test_a_failure_in_the_middle_of_a_replay_sends_the_rest_of_the_batch_unchanged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = Pipeline()
    await pipeline.emit(1, 250)
    broken = pipeline.runtime.log.replay

    async def fails_on_the_second_page(*args: Any, **kwargs: Any) -> Any:
        if pipeline.reads == 1:
            raise RuntimeError("a bug")
        return await broken(*args, **kwargs)

    pipeline.runtime.log.replay = fails_on_the_second_page  # type: ignore[method-assign]
    before = protocol.event("events", chat_event("m", 251))
    after = protocol.event("events", chat_event("m", 252))
    pipeline.reader.feed("2")
    pipeline.reader.feed(before)  # held back for the replay
    pipeline.reader.feed(resume_request(1))
    pipeline.reader.feed(after)
    with caplog.at_level(logging.ERROR, logger="asgi_resume"):
        await pipeline.reader.send(pipeline.deliver)
    assert "failed to process a batch" in caplog.text
    frames = pipeline.frames()
    assert frames[0] == "2"
    assert pipeline.seqs()[:REPLAY_FIRST_PAGE] == list(range(1, REPLAY_FIRST_PAGE + 1))
    assert frames[1 + REPLAY_FIRST_PAGE :] == [before, after]  # unchanged, once each, in order


async def test_requests_queued_behind_a_replay_are_answered_after_it_in_order(backend: dict[str, Any]) -> None:
    """A second request while a replay is being sent waits for it; each gets its whole replay."""
    sio = make_sio()
    app = make_app(sio, **backend)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        await emit_tokens(sio, "alice", "m", 1, 250)
        await client.wait_seqs("m", 250)
        start = len(client.frames)
        for ack_id in (1, 2, 3):
            await client.emit("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=ack_id)
        await client.wait_for(lambda f: isinstance(f, str) and f.startswith("433["), since=start)
        sent = client.frames[start:]
        acks = [i for i, f in enumerate(sent) if isinstance(f, str) and f.startswith("43")]
        assert [sent[i][:3] for i in acks] == ["431", "432", "433"]
        for first, last in zip([-1, *acks], acks, strict=False):
            replay = [json.loads(f[2:])[1]["seq"] for f in sent[first + 1 : last]]
            assert replay == list(range(1, 251))
        await client.close()


async def turns_taken(weights: dict[str, int], rounds: int) -> list[tuple[str, int]]:
    """Each name takes ``rounds`` turns of its weight, all at once: who got each turn, in which
    event loop iteration."""
    turns, taken, ticks = Turns(), [], 0

    async def replay(name: str, weight: int) -> None:
        for _ in range(rounds):
            await turns.take(weight)
            taken.append((name, ticks))

    async def ticker() -> None:
        nonlocal ticks
        while len(taken) < rounds * len(weights):
            ticks += 1
            await asyncio.sleep(0)

    await asyncio.gather(*(replay(name, weight) for name, weight in weights.items()), ticker())
    return taken


async def test_replay_pages_take_turns_one_per_loop_iteration() -> None:
    taken = await turns_taken({"a": 1, "b": 1, "c": 1}, 3)
    assert [name for name, _ in taken] == ["a", "b", "c"] * 3  # first come, first served
    assert len({tick for _, tick in taken}) == 9  # never two in one iteration


async def test_a_turn_worth_several_pages_is_followed_by_as_many_iterations_without_one() -> None:
    """Found by attack: a page of one 3 MB frame took a turn like a page of small ones (rendering
    and compressing it is a dozen pages' work), and a user's 16 resumes of such a stream stalled
    another user's live stream +107-124 ms; weighted by their bytes, +15-27 ms."""
    taken = await turns_taken({"large": 3, "small": 1}, 2)
    assert [name for name, _ in taken] == ["large", "small", "large", "small"]
    at = [tick for _, tick in taken]
    assert [b - a for a, b in itertools.pairwise(at)] == [3, 1, 3]  # 2 iterations pass after a turn worth 3


async def test_a_page_of_large_frames_holds_about_as_many_bytes_as_one_of_small_ones() -> None:
    """Found by attack: pages were 100 entries whatever their size, so a client that asked for a
    replay of 32 KB frames and never read held 3.2 MB (50 such: +209 MB against +2 MB bare). The
    first page is small, and the next ones hold about ``REPLAY_PAGE_BYTES``."""
    pipeline = Pipeline()
    await pipeline.emit(1, 100, content="x" * (32 << 10))
    pipeline.reader.feed(resume_request(1))
    await pipeline.reader.send(pipeline.deliver)
    pages = pipeline.sent[:-1]
    assert pipeline.seqs() == list(range(1, 101))
    assert len(pages[0]) <= REPLAY_FIRST_PAGE
    assert all(sum(len(frame) for frame in page) <= REPLAY_PAGE_BYTES + (33 << 10) for page in pages)


async def test_the_first_page_of_large_frames_holds_about_a_pages_bytes_too() -> None:
    """Found by attack: the first page was 10 entries whatever their size (the log's reads too), so
    a user's 16 resumes of her stream of 3 MB frames rendered 30 MB per page, and another user's
    live stream stalled 1.1-1.6 s (on Redis, his appends timed out behind those reads). The log
    stops every page, the first too, once it reaches ``REPLAY_PAGE_BYTES``."""
    pipeline = Pipeline(max_frame_bytes=4 << 20)  # (frames over 1 MiB are not logged by default)
    await pipeline.emit(1, 10, content="x" * (1 << 20))
    pipeline.reader.feed(resume_request(1))
    await pipeline.reader.send(pipeline.deliver)
    pages = pipeline.sent[:-1]
    assert pipeline.seqs() == list(range(1, 11))
    assert [len(page) for page in pages] == [1] * 10
    assert pipeline.answers()[0]["gap"] is False


async def test_a_long_polling_response_starts_no_replay_once_it_holds_a_few_mib() -> None:
    """Found by attack: a long-polling response is built whole, and one POST's 16 resume requests
    of a 2,000-frame stream of 4 KB frames were 16 whole replays in one GET body (+176 MiB held
    while the client did not read it; 4 sessions: +822 MiB, another user's live stream stalled
    650 ms). Past ``RESPONSE_REPLAY_BYTES`` no further replay starts: the requests left are
    refused ``rate_limited``, and the client asks again once it has read the response."""
    pipeline = Pipeline()
    await pipeline.emit(1, 150, content="x" * (16 << 10))  # a 2.4 MB replay
    for ack_id in range(1, 17):
        pipeline.reader.feed(resume_request(ack_id))
    out = await pipeline.reader.flush()  # (the long-polling transport's: the response whole)
    answers = [json.loads(str(f).lstrip("0123456789"))[0] for f in out if str(f).startswith("43")]
    assert [a.get("replayed") for a in answers[:2]] == [150, 150]  # a replay starts under the bound
    assert [a.get("error") for a in answers[2:]] == ["rate_limited"] * 14
    assert sum(len(f) for f in out if isinstance(f, str)) < RESPONSE_REPLAY_BYTES + (150 * (17 << 10))
    assert pipeline.runtime.stats.resumes_rate_limited == 14


async def test_a_users_long_polling_responses_waiting_for_their_clients_bound_its_next_replays() -> None:
    """Found by attack: one principal's 40 polling sessions, each asking for a replay of its
    2,000-frame stream of 4 KB frames and never reading the GET, held 391-449 MB and stalled
    another user's live stream 126-601 ms. While a principal's responses with replays its clients
    have not read (the server's buffer holds them) hold ``PER_PRINCIPAL_BYTES`` (or everyone's
    ``PER_PROCESS_BYTES``), no further replay starts for it: ``rate_limited``."""
    pipeline = Pipeline()
    await pipeline.emit(1, 10)
    replays = pipeline.runtime.polling_replays

    class Session:
        unread_replays, unread_principal = 0, ""

    async def answer() -> Any:
        pipeline.reader.feed(resume_request(1))
        out = await pipeline.reader.flush()
        return json.loads(next(str(f) for f in out if str(f).startswith("431"))[3:])[0]

    alice, mallory = Session(), Session()
    replays.sent(alice, "alice", PER_PRINCIPAL_BYTES)
    assert (await answer())["error"] == "rate_limited"
    replays.drained(alice, PER_PRINCIPAL_BYTES)  # its client read it
    replays.sent(mallory, "mallory", PER_PROCESS_BYTES)
    assert (await answer())["error"] == "rate_limited"  # everyone's, past the process's bound
    del mallory  # a session that is gone counts no more
    gc.collect()
    assert (await answer())["replayed"] == 10
    assert replays.total() == 0


async def stuck_replays(pipeline: Pipeline, count: int) -> tuple[list[asyncio.Task[None]], asyncio.Event]:
    """``count`` of alice's connections each asked for a replay, and none reads its first page
    until the event returned is set (their tasks are returned)."""
    all_stuck, reading = asyncio.Event(), asyncio.Event()
    stuck = 0

    async def never_reads(items: list[Any]) -> bool:
        nonlocal stuck
        stuck += 1
        if stuck == count:
            all_stuck.set()
        await reading.wait()
        return True

    readers = []
    for _ in range(count):
        reader = pipeline._connection()
        reader.feed(resume_request(1))
        readers.append(asyncio.create_task(reader.send(never_reads)))
    async with asyncio.timeout(10):
        await all_stuck.wait()
    return readers, reading


async def test_a_users_websocket_replays_in_flight_are_bounded() -> None:
    """Found by attack: each connection has one replay in flight at most, holding a page while its
    client does not read, but one user's 400 connections that each asked once and never read held
    +133 MiB. Past ``PER_PRINCIPAL`` replays in flight a user's next replay waits, holding nothing,
    until one ends; another user's do not."""
    pipeline = Pipeline()
    await pipeline.emit(1, 50)
    readers, reading = await stuck_replays(pipeline, PER_PRINCIPAL)
    reads = pipeline.reads
    one_more = pipeline._connection()
    one_more.feed(resume_request(2))
    waiting = asyncio.create_task(one_more.send(pipeline.deliver))
    bob = Outbound(pipeline.runtime, Connection({"type": "websocket", "headers": []}, 0))
    bob.conn.principals["/"] = "bob"
    bob.feed(resume_request(3))
    await bob.send(pipeline.deliver)  # another user's replay does not wait
    assert [answer.get("error") for answer in pipeline.answers()] == ["not_found"]
    done, _ = await asyncio.wait({waiting}, timeout=1)  # (unbounded, it is answered in a few loop iterations)
    assert (pipeline.reads, done) == (reads + 1, set())  # alice's 65th read nothing yet
    assert pipeline.runtime.replays_in_flight.of("alice") == PER_PRINCIPAL + 1
    pipeline.sent.clear()
    reading.set()
    async with asyncio.timeout(10):
        await asyncio.gather(waiting, *readers)
    assert pipeline.answers()[0]["ok"] is True
    assert pipeline.seqs() == list(range(1, 51))
    assert pipeline.runtime.replays_in_flight.of("alice") == 0


async def test_everyones_websocket_replays_in_flight_are_bounded_per_process() -> None:
    """Past a user's own bound, many users' replays to connections that never read add up (a page
    each, found by attack: no per-process bound). Past the process's bound a replay waits, holding
    nothing, until one ends."""
    pipeline = Pipeline()
    pipeline.runtime.replays_in_flight = ReplaysInFlight(per_process=3)
    await pipeline.emit(1, 50)
    readers, reading = await stuck_replays(pipeline, 3)  # (alice's: within her own bound)
    reads = pipeline.reads
    bob = Outbound(pipeline.runtime, Connection({"type": "websocket", "headers": []}, 0))
    bob.conn.principals["/"] = "bob"
    bob.feed(resume_request(2))
    waiting = asyncio.create_task(bob.send(pipeline.deliver))
    done, _ = await asyncio.wait({waiting}, timeout=1)  # (unbounded, it is answered in a few loop iterations)
    assert (pipeline.reads, done) == (reads, set())  # bob's read nothing yet
    reading.set()
    async with asyncio.timeout(10):
        await asyncio.gather(waiting, *readers)
    assert [answer.get("error") for answer in pipeline.answers()] == ["not_found"]  # (bob has no stream m)


class UnreadGet:
    """A long-polling GET of a session on its own TCP connection, whose response is read only when asked."""

    def __init__(self, url: str, sid: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.sid = parts.hostname or "127.0.0.1", parts.port or 80, sid
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (the kernel takes little of it)
        self.sock.setblocking(False)

    async def send(self) -> UnreadGet:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, (self.host, self.port))
        request = f"GET /socket.io/?EIO=4&transport=polling&sid={self.sid} HTTP/1.1\r\nHost: {self.host}\r\n\r\n"
        await loop.sock_sendall(self.sock, request.encode())
        return self

    async def read(self) -> bytes:
        """The whole response (its Content-Length)."""
        loop, data = asyncio.get_running_loop(), b""
        while b"\r\n\r\n" not in data:
            data += await loop.sock_recv(self.sock, 65536)
        head, body = data.split(b"\r\n\r\n", 1)
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = int(fields[b"content-length"])
        while len(body) < length:
            body += await loop.sock_recv(self.sock, 65536)
        return body


async def test_a_long_polling_response_counts_until_its_client_read_it_whatever_connection_asks_next() -> None:
    """Found by attack: a long-polling response with a replay counted against its user's bound
    until the session's next GET; a client that sent that GET on a new TCP connection, leaving the
    old response unread in the server's buffer, reset the count each time (+193-273 MiB). It
    counts until the server's buffer drained now: the client read it, or its connection closed."""
    sio = make_sio()
    app = make_app(sio)
    replays = app.runtime.polling_replays
    replays.per_principal = 256 << 10  # (one response of this replay is past it)
    async with serve(app) as url:
        client = await PollingClient(url).open({"token": "mallory"})
        for i in range(1, FRAMES + 1):  # 8 MB: past what the kernel's buffers take of a reader that reads not
            await sio.emit("events", chat_event("long", i, content="x" * 4096), room=room_of("mallory"))
        await client.collect(is_event, FRAMES)
        resume = "421" + json.dumps(["resume-stream", {"message_id": "long", "last_seq": 0}])

        async def answer() -> Any:
            pending = asyncio.create_task(client.collect(lambda p: str(p).startswith("431"), 1))
            await client.post(resume)
            got = await asyncio.wait_for(pending, 10)
            return json.loads(next(str(p) for p in got if str(p).startswith("431"))[3:])[0]

        unread = await UnreadGet(url, client.sid).send()
        await client.post(resume)  # its replay goes to the GET nobody reads
        await until(lambda: replays.total() >= FRAMES * 4096, 10)
        # the next GET, on another connection (the client's own), says nothing of the first
        assert (await answer())["error"] == "rate_limited"
        assert replays.total() >= FRAMES * 4096
        body = await unread.read()  # read at last
        assert body.count(b'42["events"') == FRAMES
        await until(lambda: replays.total() == 0, 10)
        assert (await answer())["replayed"] == FRAMES
        unread.sock.close()
        await client.aclose()


async def test_a_replays_count_is_its_own_responses_whatever_the_sessions_other_gets_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by review: a response read the count of the replays it carried from its session's
    pipeline after it was built; a second GET of the session (python-engineio takes concurrent
    ones) flushed while the first was encoded by parts, out of the lock, and reset it: the first
    was never counted, and the 4 MiB its replay reserved at its start stuck for the session's
    life (four sessions: a user's polling replays refused for good)."""
    sio = make_sio()
    app = make_app(sio)
    replays = app.runtime.polling_replays
    encoding = asyncio.Event()
    by_parts = PollResponse._encode_by_parts

    async def seen(self: PollResponse, *args: Any) -> bytes:  # (seen, not changed)
        encoding.set()
        return await by_parts(self, *args)

    monkeypatch.setattr(PollResponse, "_encode_by_parts", seen)
    async with serve(app) as url:
        client = await PollingClient(url).open({"token": "mallory"})
        for i in range(1, 501):
            await sio.emit("events", chat_event("long", i, content="x" * 4096), room=room_of("mallory"))
        await client.collect(is_event, 500)
        polling = app.sessions.get(client.sid).polling
        asked = polling._gets
        first = asyncio.create_task(client.get())
        second = asyncio.create_task(client.get())  # the same session, at once (a hostile client)
        await until(lambda: polling._gets == asked + 2, 10)  # (both wait in python-engineio)
        await client.post("421" + json.dumps(["resume-stream", {"message_id": "long", "last_seq": 0}]))
        await asyncio.wait_for(encoding.wait(), 10)
        await sio.emit("events", chat_event("short", 1), room=room_of("mallory"))  # (for the other GET)
        got = await asyncio.wait_for(first, 10) + await asyncio.wait_for(second, 10)
        assert sum(1 for p in got if str(p).startswith('42["events"') and '"long"' in str(p)) == 500
        await until(lambda: replays.total() == 0, 10)
        await client.aclose()
