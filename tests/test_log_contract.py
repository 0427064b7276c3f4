"""The stream log's contract, run directly against every backend: memory, Redis and Redis Cluster.

No server, no socket.io: the rules the pipeline relies on, one call at a time.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator

import pytest

from asgi_resume.log import AppendRequest, Entry, LogUnavailable, StreamKey, StreamLog
from asgi_resume.log.base import CLAIM_SLACK_MS, LogLimits, SessionAppend
from asgi_resume.log.memory import MemoryLog
from asgi_resume.log.redis import RedisLog

pytestmark = pytest.mark.anyio
_prefixes = itertools.count()
ALICE, MALLORY = "alice-hash", "mallory-hash"


@pytest.fixture(params=["memory", "redis", "cluster"])
async def log(request: pytest.FixtureRequest) -> AsyncIterator[StreamLog]:
    limits = LogLimits(maxlen=500, ttl_ms=60_000, done_ttl_ms=5_000)
    if request.param == "memory":
        made: StreamLog = MemoryLog(limits)
    else:
        server = request.getfixturevalue("redis_cluster" if request.param == "cluster" else "redis_server")
        made = RedisLog.from_url(
            server.url, prefix=f"contract{next(_prefixes)}", limits=limits, cluster=request.param == "cluster"
        )
    yield made
    await made.aclose()


def entry(log: StreamLog, text: str, *, done: bool = False, at: int | None = None) -> Entry:
    received = log.now_ms() if at is None else at
    return Entry(f"d-{text}", ['42["events",{', f'"message_id":"m","t":"{text}"}}]'], done, received)


class Connection:
    """One connection's side of the contract: its cursor and what it passed over (as a Connection keeps)."""

    def __init__(
        self, log: StreamLog, key: StreamKey, name: str, *, since: int | None = None, lookback_ms: int = 0
    ) -> None:
        self.log, self.key, self.name = log, key, name
        self.since = log.now_ms() if since is None else since
        self.lookback_ms = lookback_ms
        self.epoch: str | None = None
        self.cursor = 0
        self.skipped: list[int] = []
        self.others_ms = 0

    async def send(self, *entries: Entry, reset: bool = False, rejoining: bool = False) -> list[int]:
        request = AppendRequest(
            self.key,
            list(entries),
            self.epoch,
            self.cursor,
            self.since,
            reset=reset,
            connection=self.name,
            skipped=list(self.skipped),
            lookback_ms=self.lookback_ms,
            rejoining=rejoining,
        )
        (result,) = await self.log.append([request])
        if result.epoch != self.epoch:
            self.cursor, self.skipped = 0, []
        self.epoch, self.others_ms = result.epoch, result.others_ms
        previous = self.cursor or None
        for seq in result.seqs:
            if seq <= 0:
                if seq:
                    self.skipped.remove(-seq)
                continue
            if previous is not None and seq > previous + 1:
                self.skipped.extend(range(previous + 1, seq))
            previous = self.cursor = seq
        if not self.cursor:  # (none of its frames got a seq: it still has no cursor)
            self.epoch = None
        return result.seqs


def key(principal: str = ALICE, stream: str = "m", variant: str = "") -> StreamKey:
    return StreamKey(principal, "/", variant, stream)


async def test_copies_of_one_emit_make_one_entry(log: StreamLog) -> None:
    tabs = [Connection(log, key(), f"tab{i}") for i in range(3)]
    for seq, text in enumerate(["a", "a", "b", "a"], 1):  # identical frames in a row are separate emits
        for tab in tabs:
            assert await tab.send(entry(log, text)) == [seq]
    replay = await log.replay(key(), 0, None, "tab0")
    assert [seq for seq, _ in replay.frames] == [1, 2, 3, 4]


async def test_a_late_copy_matches_by_position(log: StreamLog) -> None:
    first, late = Connection(log, key(), "first"), Connection(log, key(), "late")
    assert await first.send(entry(log, "a"), entry(log, "b"), entry(log, "a")) == [1, 2, 3]
    assert await late.send(entry(log, "a")) == [1]
    assert await late.send(entry(log, "b"), entry(log, "a")) == [2, 3]
    assert (await log.replay(key(), 0, None, "late")).last_seq == 3


async def test_a_frame_only_one_tab_got_is_appended_at_once(log: StreamLog) -> None:
    one, other = Connection(log, key(), "one"), Connection(log, key(), "other")
    assert await one.send(entry(log, "shared-1")) == [1]
    assert await other.send(entry(log, "shared-1")) == [1]
    assert await one.send(entry(log, "only-one")) == [2]  # no waiting for the other tab
    assert await other.send(entry(log, "shared-2")) == [3]
    assert await one.send(entry(log, "shared-2")) == [3]
    assert other.skipped == [2]


async def test_a_copy_that_comes_out_of_order_is_not_logged_twice(log: StreamLog) -> None:
    """``one`` gets y after its own x; ``other`` logged y before x: ``one``'s y goes out unstamped."""
    one, other = Connection(log, key(), "one"), Connection(log, key(), "other")
    assert await one.send(entry(log, "start")) == [1]
    assert await other.send(entry(log, "start")) == [1]
    assert await other.send(entry(log, "y")) == [2]
    assert await one.send(entry(log, "x")) == [3]
    assert one.skipped == [2]
    assert await one.send(entry(log, "y")) == [-2]
    assert one.skipped == []
    replay = await log.replay(key(), 0, None, "one")
    assert [payload[1] for _, payload in replay.frames] == [entry(log, t).payload[1] for t in ("start", "y", "x")]


async def test_a_first_frame_takes_the_copy_another_process_logged_just_before_it_joined(log: StreamLog) -> None:
    """Where processes share the log, one may log an emit a few ms before a connection joined (by
    the other's clock) and still deliver it there after: that connection's first frame takes the
    latest copy in the look-back (found by a two-worker test: a tab's first frame after it moved
    to the other worker was logged twice). One logged since it joined comes first."""
    other = Connection(log, key(), "other")
    now = log.now_ms()
    sent = [entry(log, "a", at=now - 40), entry(log, "b", at=now - 30), entry(log, "a", at=now - 20)]
    assert await other.send(*sent) == [1, 2, 3]
    assert await Connection(log, key(), "joined", since=now, lookback_ms=100).send(entry(log, "a")) == [3]
    assert await Connection(log, key(), "since", since=now - 35, lookback_ms=100).send(entry(log, "a")) == [3]
    assert await Connection(log, key(), "early", since=now - 25, lookback_ms=100).send(entry(log, "b")) == [2]
    assert await Connection(log, key(), "short", since=now, lookback_ms=10).send(entry(log, "b")) == [4]
    assert await Connection(log, key(), "none", since=now + 1, lookback_ms=0).send(entry(log, "a")) == [5]


async def test_the_same_bytes_long_after_are_another_emit(log: StreamLog) -> None:
    one, other = Connection(log, key(), "one"), Connection(log, key(), "other")
    now = log.now_ms()
    assert await one.send(entry(log, "start", at=now)) == [1]
    assert await other.send(entry(log, "start", at=now)) == [1]
    assert await other.send(entry(log, "y", at=now)) == [2]
    assert await one.send(entry(log, "x", at=now)) == [3]
    assert await one.send(entry(log, "y", at=now + 5000)) == [4]  # not a copy of seq 2: logged


async def test_principals_never_share_a_log(log: StreamLog) -> None:
    """The same stream id, chosen by a hostile user: two logs, neither reads nor writes the other."""
    victim, mallory = Connection(log, key(ALICE), "victim"), Connection(log, key(MALLORY), "mallory")
    assert await victim.send(entry(log, "secret-1"), entry(log, "secret-2")) == [1, 2]
    assert await mallory.send(entry(log, "mine")) == [1]
    assert (await log.replay(key(MALLORY), 0, None, "mallory")).last_seq == 1
    replay = await log.replay(key(ALICE), 0, None, "victim")
    assert [payload[1] for _, payload in replay.frames] == [entry(log, t).payload[1] for t in ("secret-1", "secret-2")]
    assert (await log.replay(key(MALLORY, "never"), 0, None, "mallory")).status == "not_found"


async def test_variants_are_separate_logs(log: StreamLog) -> None:
    tab = Connection(log, key(variant=""), "tab")
    shared = Connection(log, key(variant="true"), "tab")
    assert await tab.send(entry(log, "delta-1"), entry(log, "delta-2")) == [1, 2]
    assert await shared.send(entry(log, "view-1")) == [1]
    assert (await log.replay(key(variant="true"), 0, None, "x")).last_seq == 1


async def test_a_newcomer_to_a_stream_left_in_flight_starts_a_new_epoch(log: StreamLog) -> None:
    gone, stays = Connection(log, key(), "gone"), Connection(log, key(), "stays")
    await gone.send(entry(log, "a"))
    await stays.send(entry(log, "a"))
    epoch = gone.epoch
    await log.orphan([key()], "gone")
    assert await stays.send(entry(log, "b")) == [2]  # it followed the stream: nothing was lost
    assert stays.epoch == epoch
    await log.orphan([key()], "stays")
    newcomer = Connection(log, key(), "newcomer")
    assert await newcomer.send(entry(log, "d")) == [1]  # frames may have been lost: a new history
    assert newcomer.epoch != epoch


async def test_others_are_seen(log: StreamLog) -> None:
    held, reloaded = Connection(log, key(), "held"), Connection(log, key(), "reloaded")
    await held.send(entry(log, "a"))
    assert held.others_ms == 0
    before = log.now_ms()
    await log.replay(key(), 0, None, "reloaded")  # the reloaded tab resumes: it takes the stream over
    await held.send(entry(log, "b"))
    assert held.others_ms >= before - 1000  # (the Redis clock and ours agree within a round trip: 82 ms seen loaded)
    await reloaded.send(entry(log, "b"))
    assert reloaded.others_ms > 0


async def test_done_shortens_the_life_of_the_log(log: StreamLog) -> None:
    tab = Connection(log, key(), "tab")
    await tab.send(entry(log, "a"), entry(log, "end", done=True))
    replay = await log.replay(key(), 0, None, "tab")
    assert replay.done is True
    assert replay.last_seq == 2


async def test_a_page_of_large_entries_stops_at_max_bytes(log: StreamLog) -> None:
    """``max_bytes`` stops a page once its payloads reach it (the entry that reaches it included,
    and always one entry): pages of large frames are a few of them, whatever ``limit`` allows."""
    tab = Connection(log, key(), "tab")
    await tab.send(*(entry(log, f"{i}" + "x" * 10_000) for i in range(1, 11)))
    page = await log.replay(key(), 0, None, "reader", limit=10, max_bytes=25_000)
    assert [seq for seq, _ in page.frames] == [1, 2, 3]  # 3 x ~10 KB reach 25 KB
    assert page.last_seq == 10
    page = await log.replay(key(), 3, page.epoch, "reader", limit=10, max_bytes=1)
    assert [seq for seq, _ in page.frames] == [4]  # one entry at least
    page = await log.replay(key(), 4, page.epoch, "reader", limit=3, max_bytes=1 << 20)
    assert [seq for seq, _ in page.frames] == [5, 6, 7]  # the limit, when it comes first
    assert page.frames[0][1] == entry(log, "5" + "x" * 10_000).payload


async def test_a_replay_reads_a_page_at_a_time(log: StreamLog) -> None:
    """``limit`` entries after ``after_seq``; the next page starts after the last one read, and a
    page whose first entries were trimmed meanwhile says so (gap)."""
    tab = Connection(log, key(), "tab")
    await tab.send(*(entry(log, f"t{i}") for i in range(1, 251)))
    first = await log.replay(key(), 0, None, "reader", limit=100)
    assert [seq for seq, _ in first.frames] == list(range(1, 101))
    assert (first.last_seq, first.gap) == (250, False)
    following = await log.replay(key(), 100, first.epoch, "reader", limit=100)
    assert [seq for seq, _ in following.frames] == list(range(101, 201))
    assert following.gap is False
    last = await log.replay(key(), 200, first.epoch, "reader", limit=100)
    assert [seq for seq, _ in last.frames] == list(range(201, 251))
    assert [seq for seq, _ in (await log.replay(key(), 250, first.epoch, "reader", limit=100)).frames] == []
    await tab.send(*(entry(log, f"u{i}") for i in range(1, 601)))  # past maxlen (500): the oldest go
    trimmed = await log.replay(key(), 100, first.epoch, "reader", limit=100)
    assert trimmed.gap is True
    assert trimmed.frames[0][0] == trimmed.oldest_seq > 101
    assert len(trimmed.frames) == 100


async def test_one_request_that_cannot_be_stored_costs_no_other(log: StreamLog) -> None:
    """A lone surrogate (legal JSON) in one stream's frame fails that request alone."""
    good = Connection(log, key(stream="bystander"), "good")
    bad_entry = Entry("d-bad", ['42["events",{', '"message_id":"\ud800"}]'], False, log.now_ms())
    requests = [
        AppendRequest(key(stream="\ud800"), [bad_entry], connection="bad"),
        AppendRequest(good.key, [entry(log, "a")], since_ms=good.since, connection="good"),
    ]
    bad_result, good_result = await log.append(requests)
    assert good_result.seqs == [1]
    assert good_result.failed is None
    assert bad_result.failed is not None or bad_result.seqs == [1]  # the memory log can keep it


async def test_the_memory_log_keeps_a_bounded_number_of_streams() -> None:
    log = MemoryLog(LogLimits(max_streams=100))
    for i in range(150):
        await Connection(log, key(f"p{i % 15}", f"s{i}"), "c").send(entry(log, "a"))
    assert (await log.replay(key("p0", "s0"), 0, None, "c")).status == "not_found"  # the oldest went
    assert (await log.replay(key("p14", "s149"), 0, None, "c")).last_seq == 1
    assert len(log._streams) == 100


async def test_one_principal_cannot_evict_the_others_streams_from_the_memory_log() -> None:
    log = MemoryLog(LogLimits(max_streams=100))  # a tenth each at most
    await Connection(log, key(ALICE, "live"), "alice").send(entry(log, "a"))
    for i in range(60):
        await Connection(log, key(MALLORY, f"s{i}"), "mallory").send(entry(log, "x"))
    assert (await log.replay(key(ALICE, "live"), 0, None, "alice")).last_seq == 1
    assert (await log.replay(key(MALLORY, "s59"), 0, None, "mallory")).last_seq == 1
    assert (await log.replay(key(MALLORY, "s0"), 0, None, "mallory")).status == "not_found"


async def test_many_principals_many_ids_evict_their_own_streams_not_another_users() -> None:
    """Found by attack: ten principals' 1,000 ids each (10,000 streams, the bound) evicted bob's
    finished stream and then his live one, the oldest of all. Past the bound, the stream appended
    to least lately of a principal with the most streams goes."""
    log = MemoryLog(LogLimits(max_streams=100))
    bob_done, bob_live = Connection(log, key(ALICE, "done"), "bob"), Connection(log, key(ALICE, "live"), "bob")
    await bob_done.send(entry(log, "d", done=True))
    await bob_live.send(entry(log, "a"))
    for i in range(1000):
        await Connection(log, key(f"attacker{i % 10}", f"s{i}"), "mallory").send(entry(log, "x"))
        if i % 100 == 0:
            await bob_live.send(entry(log, f"b{i}"))
    assert (await log.replay(key(ALICE, "done"), 0, None, "bob")).status == "ok"
    live = await log.replay(key(ALICE, "live"), 0, None, "bob")
    assert (live.last_seq, live.gap) == (11, False)
    assert len(log._streams) == 100
    assert (await log.replay(key("attacker9", "s999"), 0, None, "mallory")).last_seq == 1  # their newest stay


async def test_an_idle_stream_goes_before_one_appended_to_lately() -> None:
    log = MemoryLog(LogLimits(max_streams=100))
    old = Connection(log, key("p0", "old"), "c")
    await old.send(entry(log, "a"))
    for i in range(1, 99):
        await Connection(log, key(f"p{i}", "s"), "c").send(entry(log, "a"))
    await old.send(entry(log, "b"))  # the oldest stream is appended to again
    await Connection(log, key("p99", "s"), "c").send(entry(log, "a"))
    await Connection(log, key("p100", "s"), "c").send(entry(log, "a"))  # past the bound: one goes
    assert (await log.replay(key("p0", "old"), 0, None, "c")).last_seq == 2
    assert (await log.replay(key("p1", "s"), 0, None, "c")).status == "not_found"


async def test_the_memory_logs_count_of_streams_per_principal_stays_true() -> None:
    """What eviction reads (who has the most streams) after adds, evictions, ends and expiries."""
    now = [1000.0]
    log = MemoryLog(LogLimits(max_streams=30, ttl_ms=5000, done_ttl_ms=1000), clock=lambda: now[0])
    rng = random.Random(7)
    for i in range(600):
        principal, stream = f"p{rng.randrange(8)}", f"s{rng.randrange(40)}"
        await Connection(log, key(principal, stream), "c").send(entry(log, str(i), done=rng.random() < 0.2))
        now[0] += rng.choice([0.0, 0.01, 0.5])
        counts = {p: len(own) for p, own in log._by_principal.items()}
        assert sum(counts.values()) == len(log._streams) <= 30
        assert log._most == max(counts.values(), default=0)
        assert {n: set(ps) for n, ps in log._principals_with.items()} == {
            n: {p for p, c in counts.items() if c == n} for n in set(counts.values())
        }


async def test_a_copy_out_of_order_within_one_call_is_not_logged_twice(log: StreamLog) -> None:
    one, other = Connection(log, key(), "one"), Connection(log, key(), "other")
    assert await one.send(entry(log, "start")) == [1]
    assert await other.send(entry(log, "start")) == [1]
    assert await other.send(entry(log, "y")) == [2]
    assert await one.send(entry(log, "x"), entry(log, "y")) == [3, -2]  # x steps over y, then y comes


async def test_a_history_with_a_hole_gets_one_new_epoch_whoever_starts_it(log: StreamLog) -> None:
    """The connection that missed frames and the repair on its behalf race: only the first resets."""
    tab = Connection(log, key(), "tab")
    await tab.send(entry(log, "a"))
    broken = tab.epoch
    assert broken is not None
    repair = AppendRequest(key(), [], reset=True, reset_epoch=broken, connection="tab")
    (first,) = await log.append([repair])
    assert first.epoch != broken
    (second,) = await log.append([repair])  # the same reset again: the stream left that epoch already
    assert second.epoch == first.epoch


async def test_a_tab_whose_history_broke_logs_nothing_from_before_the_epoch_another_began(log: StreamLog) -> None:
    """Two tabs' appends failed and a repair began a new epoch; the tab ahead logged its next frames
    first. The tab behind still has frames from before them: they are no part of the new epoch
    (seq 0: sent unstamped), and its copies of the epoch's entries match them rather than follow
    its older frames into the log a second time (found by attack: CLIENT KILL during appends)."""
    t = log.now_ms()
    ahead, behind = Connection(log, key(), "ahead", since=t), Connection(log, key(), "behind", since=t)
    frames = {i: entry(log, f"f{i}", at=t + i) for i in range(1, 11)}
    assert await ahead.send(frames[1], frames[2], frames[3]) == [1, 2, 3]
    assert await behind.send(frames[1], frames[2], frames[3]) == [1, 2, 3]
    broken = ahead.epoch
    assert broken is not None
    (repair,) = await log.append([AppendRequest(key(), [], reset=True, reset_epoch=broken, connection="ahead")])
    ahead.epoch = behind.epoch = None  # (both forgot their cursors: the log missed their frames 4-7)
    ahead.cursor = behind.cursor = 0
    assert await ahead.send(frames[8], frames[9], rejoining=True) == [1, 2]
    assert await behind.send(frames[5], frames[6], rejoining=True) == [0, 0]
    assert await behind.send(frames[7], frames[8], frames[9], frames[10], rejoining=True) == [0, 1, 2, 3]
    assert await ahead.send(frames[10]) == [3]
    replay = await log.replay(key(), 0, repair.epoch, "reader")
    assert [payload for _, payload in replay.frames] == [frames[i].payload for i in (8, 9, 10)]
    # the same frame from a tab that is not rejoining is appended, as a frame only it got is
    newcomer = Connection(log, key(), "newcomer", since=t)
    assert await newcomer.send(frames[4]) == [4]


async def test_a_tab_behind_logs_nothing_from_before_the_epoch_another_began(log: StreamLog) -> None:
    """As above, for a tab that is only behind (its writer busy with a replay, say): its cursor is
    in the epoch before the repair, and the frames it still has from before the new epoch are no
    part of it (found by review: the epoch held frames 8, 9, 3, 4, ..., 8, 9, 10, and a resume
    from seq 2 of it said gap: false)."""
    t = log.now_ms()
    ahead, behind = Connection(log, key(), "ahead", since=t), Connection(log, key(), "behind", since=t)
    frames = {i: entry(log, f"f{i}", at=t + i) for i in range(1, 11)}
    assert await ahead.send(frames[1], frames[2], frames[3]) == [1, 2, 3]
    assert await behind.send(frames[1], frames[2]) == [1, 2]  # its frames 3-10 are still on their way
    broken = ahead.epoch
    assert broken is not None
    (repair,) = await log.append([AppendRequest(key(), [], reset=True, reset_epoch=broken, connection="ahead")])
    ahead.epoch, ahead.cursor = None, 0  # (the log missed ahead's frames 4-7)
    assert await ahead.send(frames[8], frames[9], rejoining=True) == [1, 2]
    assert await behind.send(*(frames[i] for i in range(3, 11))) == [0, 0, 0, 0, 0, 1, 2, 3]
    replay = await log.replay(key(), 0, repair.epoch, "reader")
    assert [payload for _, payload in replay.frames] == [frames[i].payload for i in (8, 9, 10)]


async def test_a_tab_that_followed_a_lost_epoch_marks_the_one_a_newcomer_made(log: StreamLog) -> None:
    """The stream's keys were lost (Redis emptied, expired); a newcomer logged its next frame first,
    then a tab that had followed the lost epoch logged its copy: the stream began before this
    epoch, and a replay "from the start" says so."""
    newcomer, older = Connection(log, key(), "newcomer"), Connection(log, key(), "older")
    older.epoch, older.cursor = "a-lost-epoch", 5
    assert await newcomer.send(entry(log, "f6")) == [1]
    assert (await log.replay(key(), 0, None, "fresh")).gap is False  # (nothing says otherwise yet)
    assert await older.send(entry(log, "f6")) == [1]
    assert (await log.replay(key(), 0, None, "fresh")).gap is True
    assert (await log.replay(key(), 1, newcomer.epoch, "fresh")).gap is False  # (within the epoch: whole)


async def test_entries_whose_meta_was_evicted_alone_start_an_epoch_after_a_break(log: StreamLog) -> None:
    """Found by attack: Redis under ``maxmemory`` with ``allkeys-lru`` evicts one key of a pair;
    the meta (its epoch, its flag that the stream was left in flight) gone, a newcomer started the
    stream over, and a replay from the start said ``gap: false`` without its beginning. Its
    entries, still there, say it began before."""
    if not isinstance(log, RedisLog):
        pytest.skip("the memory log keeps a stream's entries and meta in one object")
    first = Connection(log, key(), "first")
    assert await first.send(entry(log, "a"), entry(log, "b")) == [1, 2]
    meta = log.keys(key())[1]
    await log.client.delete(meta)
    newcomer = Connection(log, key(), "newcomer")
    assert await newcomer.send(entry(log, "c")) == [1]
    assert newcomer.epoch != first.epoch
    assert (await log.replay(key(), 0, None, "fresh")).gap is True


# -- recovery sessions (connection state recovery) ---------------------------------------------


async def session(log: StreamLog, pid: str, gen: str, owner: str, *frames: str, principal: str = ALICE) -> list[int]:
    """``owner`` logs ``frames`` in generation ``gen`` of session ``pid``; their numbers."""
    now = log.now_ms()
    payloads: list[tuple[int, list[str | bytes]]] = [(now, [f'42["e","{text}"]']) for text in frames]
    (result,) = await log.session_append([SessionAppend(pid, gen, owner, principal, "/", payloads, now, starts=True)])
    assert result.status == "ok"
    return result.numbers


async def test_a_claimed_session_replays_what_its_generation_held_after_the_offset(log: StreamLog) -> None:
    pid = f"pid{next(_prefixes)}"
    assert await session(log, pid, "g1", "c1", "a", "b", "c") == [1, 2, 3]
    assert (await log.session_claim(pid, ALICE, "/", "g1", "c2", "g2", 60_000)).status == "ok"
    read = await log.session_read(pid, "g1", 1, force=True)
    assert read.status == "ok"
    assert [(n, payload) for n, _, payload in read.frames] == [(2, ['42["e","b"]']), (3, ['42["e","c"]'])]


async def test_a_claimed_session_is_read_a_page_at_a_time_bounded_in_entries_and_bytes(log: StreamLog) -> None:
    """A claim reads a large session in pages (found by attack: 60 events of 1 MiB read in one call
    made another user's appends time out behind it on Redis). A page holds ``limit`` entries at most
    and about ``max_bytes`` (at least one entry); the following pages end where the first read did,
    and check only that the generation is still the one claimed and its entries still kept."""
    pid = f"pid{next(_prefixes)}"
    texts = [chr(97 + i) * 1000 for i in range(7)]  # payloads of about 1 KB each
    assert await session(log, pid, "g1", "c1", *texts) == list(range(1, 8))
    assert (await log.session_claim(pid, ALICE, "/", "g1", "c2", "g2", 60_000)).status == "ok"
    first = await log.session_read(pid, "g1", 1, True, 10, 2500)
    assert (first.status, first.last, [n for n, _, _ in first.frames]) == ("ok", 7, [2, 3])
    assert [payload for _, _, payload in first.frames] == [[f'42["e","{texts[1]}"]'], [f'42["e","{texts[2]}"]']]
    # the previous owner logs one more after that read: it reaches the claimer live, not in this read
    now = log.now_ms()
    late = SessionAppend(pid, "g1", "c1", ALICE, "/", [(now, ['42["e","late"]'])], now)
    assert (await log.session_append([late]))[0].status == "taken"
    pages, after = [], 3
    while after < first.last:
        page = await log.session_read(pid, "g1", after, True, 1, 0, first.last)
        assert (page.status, page.last) == ("ok", 7)
        pages.append([n for n, _, _ in page.frames])
        after = page.frames[-1][0]
    assert pages == [[4], [5], [6], [7]]  # (limit 1)
    whole = await log.session_read(pid, "g1", 3, True, 0, 100, first.last)  # fewer bytes than one entry
    assert [n for n, _, _ in whole.frames] == [4]
    rest = await log.session_read(pid, "g1", 3, True, 0, 0, first.last)
    assert [n for n, _, _ in rest.frames] == [4, 5, 6, 7]
    # the session claimed again meanwhile: its following pages are lost
    assert (await log.session_claim(pid, ALICE, "/", "g2", "c3", "g3", 60_000)).status == "ok"
    assert (await log.session_read(pid, "g1", 3, True, 10, 2500, first.last)).status == "lost"


async def test_a_claim_is_refused_to_another_principal_another_namespace_and_a_stale_offset(log: StreamLog) -> None:
    pid = f"pid{next(_prefixes)}"
    await session(log, pid, "g1", "c1", "a")
    assert (await log.session_claim(f"{pid}-unknown", ALICE, "/", "g1", "c2", "g2", 60_000)).status == "unknown"
    assert (await log.session_claim(pid, MALLORY, "/", "g1", "c2", "g2", 60_000)).status == "refused"
    assert (await log.session_claim(pid, ALICE, "/admin", "g1", "c2", "g2", 60_000)).status == "refused"
    assert (await log.session_claim(pid, ALICE, "/", "g0", "c2", "g2", 60_000)).status == "stale"
    await log.session_note(pid, "closed", "g1", "c1")  # closed before anyone claimed it: gone at once
    assert (await log.session_claim(pid, ALICE, "/", "g1", "c2", "g2", 60_000)).status == "unknown"


async def test_a_read_of_any_generation_but_the_one_claimed_from_is_lost(log: StreamLog) -> None:
    """What the memory log and the script both answer (the script used to read the other generation)."""
    pid = f"pid{next(_prefixes)}"
    await session(log, pid, "g1", "c1", "a", "b")
    assert (await log.session_read(pid, "g1", 0, force=True)).status == "lost"  # not claimed yet
    assert (await log.session_claim(pid, ALICE, "/", "g1", "c2", "g2", 60_000)).status == "ok"
    await session(log, pid, "g2", "c2", "x")
    assert (await log.session_read(pid, "g2", 0, force=True)).status == "lost"  # the current one
    assert (await log.session_read(pid, "g9", 0, force=True)).status == "lost"
    assert (await log.session_read(pid, "g1", 0, force=True)).status == "ok"


async def stored_generations(log: StreamLog, pid: str, *gens: str) -> list[str]:
    """Which of ``gens`` the log still keeps frames of (its storage, looked at directly)."""
    if isinstance(log, MemoryLog):
        session = log._sessions._by_pid[pid]
        return [gen for gen in gens if gen in session.logs]
    assert isinstance(log, RedisLog)
    return [gen for gen in gens if await log.client.exists(log.session_keys(pid, gen)[1])]


async def test_a_session_claimed_over_and_over_keeps_two_generations(log: StreamLog) -> None:
    """Found by an attack run: every claim kept the generations before it, for as long as the
    chain of claims went on (the memory log: 101 generations, 30,000 frames, +40 MiB, for a
    client that recovered 100 times). The one before the previous is nobody's to read."""
    pid = f"pid{next(_prefixes)}"
    await session(log, pid, "g1", "c1", "a", "b")
    assert (await log.session_claim(pid, ALICE, "/", "g1", "c2", "g2", 60_000)).status == "ok"
    await session(log, pid, "g2", "c2", "c")
    assert await stored_generations(log, pid, "g1", "g2") == ["g1", "g2"]
    assert (await log.session_claim(pid, ALICE, "/", "g2", "c3", "g3", 60_000)).status == "ok"
    await session(log, pid, "g3", "c3", "d")
    assert await stored_generations(log, pid, "g1", "g2", "g3") == ["g2", "g3"]
    read = await log.session_read(pid, "g2", 0, force=True)  # the claim just made still reads its own
    assert (read.status, [payload for _, _, payload in read.frames]) == ("ok", [['42["e","c"]']])
    assert (await log.session_read(pid, "g1", 0, force=True)).status == "lost"


async def test_a_read_waits_while_the_previous_owner_may_still_log(log: StreamLog) -> None:
    pid = f"pid{next(_prefixes)}"
    await session(log, pid, "g1", "c1", "a")
    assert (await log.session_claim(pid, ALICE, "/", "g1", "c2", "g2", 60_000)).status == "ok"
    assert (await log.session_read(pid, "g1", 0, force=False)).status == "wait"
    await log.session_note(pid, "closed", "g1", "c1")  # the previous owner is done
    read = await log.session_read(pid, "g1", 0, force=False)
    assert (read.status, [n for n, _, _ in read.frames]) == ("ok", [1])


async def test_a_claimer_that_closes_while_the_previous_owner_still_logs_keeps_the_session_for_it(
    log: StreamLog,
) -> None:
    """Found by review: the claimer's close deleted the session under the previous (held) owner,
    whose next append made it anew as its own; on Redis that append then failed against the log it
    had left, and the failure switched the stream log off for the whole process."""
    pid = f"pid{next(_prefixes)}"
    await session(log, pid, "g1", "c1", "a")
    assert (await log.session_claim(pid, ALICE, "/", "g1", "c2", "g2", 60_000)).status == "ok"
    await log.session_note(pid, "closed", "g2", "c2")  # the claimer leaves at once
    now = log.now_ms()
    frames: list[tuple[int, list[str | bytes]]] = [(now, ['42["e","b"]'])]
    (late,) = await log.session_append([SessionAppend(pid, "g1", "c1", ALICE, "/", frames, now)])
    assert (late.status, late.numbers) == ("taken", [2])  # logged for the reader, not made its own
    assert (await log.session_claim(pid, ALICE, "/", "g2", "c3", "g3", 60_000)).status == "expired"
    await log.session_note(pid, "closed", "g1", "c1")  # the previous owner is done too: nothing is left
    assert (await log.session_claim(pid, ALICE, "/", "g2", "c3", "g3", 60_000)).status == "unknown"


async def test_a_session_lost_since_its_first_call_is_never_made_again(log: StreamLog) -> None:
    """Only a connection's first call in a generation (at its CONNECT reply) makes the session: a
    later one that finds it gone (Redis emptied, its TTL passed) would start its numbering over
    under offsets its client holds, and a claim with one would be told recovered with events
    missing: it is ``lost`` (the connection starts a new generation)."""
    pid = f"pid{next(_prefixes)}"
    now = log.now_ms()
    frames: list[tuple[int, list[str | bytes]]] = [(now, ['42["e","k"]'])]
    (later,) = await log.session_append([SessionAppend(pid, "g1", "c1", ALICE, "/", frames, now)])
    assert (later.status, later.numbers) == ("lost", [])
    assert (await log.session_claim(pid, ALICE, "/", "g1", "c2", "g2", 60_000)).status == "unknown"


async def test_a_read_waits_for_a_batch_the_previous_owner_took_well_after_the_claim(log: StreamLog) -> None:
    """A frame the app emitted before the claim may reach the previous connection a moment after it
    (python-engineio's queue): a batch it took within ``CLAIM_SLACK_MS`` of the claim proves nothing;
    what it logs after the claim is kept and read all the same."""
    pid = f"pid{next(_prefixes)}"
    await session(log, pid, "g1", "c1", "a")
    assert (await log.session_claim(pid, ALICE, "/", "g1", "c2", "g2", 60_000)).status == "ok"
    claimed = log.now_ms()

    async def taken_at(ms: int, text: str) -> list[int]:
        frames: list[tuple[int, list[str | bytes]]] = [(ms, [f'42["e","{text}"]'])]
        (result,) = await log.session_append([SessionAppend(pid, "g1", "c1", ALICE, "/", frames, ms)])
        assert result.status == "taken"
        return result.numbers

    assert await taken_at(claimed, "b") == [2]
    assert (await log.session_read(pid, "g1", 0, force=False)).status == "wait"
    assert await taken_at(claimed + CLAIM_SLACK_MS + 1_000, "c") == [3]
    read = await log.session_read(pid, "g1", 0, force=False)
    assert (read.status, [n for n, _, _ in read.frames]) == ("ok", [1, 2, 3])


async def test_a_forced_read_names_the_owner_whose_silence_it_trusts(log: StreamLog) -> None:
    """Its process must have run since the claim (a heartbeat): one that was killed or stopped
    may have died with frames it never logged. An owner that logged or closed after the claim
    proved it ran."""
    for proof in ("logged", "closed"):
        pid = f"pid{next(_prefixes)}"
        await session(log, pid, "g1", "p1.c1", "a")
        assert (await log.session_claim(pid, ALICE, "/", "g1", "p2.c2", "g2", 60_000)).status == "ok"
        read = await log.session_read(pid, "g1", 0, force=True)
        assert (read.status, read.trusted) == ("ok", "p1.c1")
        if proof == "logged":
            later = log.now_ms() + CLAIM_SLACK_MS + 1_000
            frames: list[tuple[int, list[str | bytes]]] = [(later, ['42["e","b"]'])]
            (result,) = await log.session_append([SessionAppend(pid, "g1", "p1.c1", ALICE, "/", frames, later)])
            assert result.status == "taken"
        else:
            await log.session_note(pid, "closed", "g1", "p1.c1")
        read = await log.session_read(pid, "g1", 0, force=True)
        assert (read.status, read.trusted) == ("ok", "")


async def test_a_process_beat_is_known_for_a_while(log: StreamLog) -> None:
    process = f"proc{next(_prefixes)}"
    assert await log.last_beat(process) is None
    before = log.now_ms()
    await log.beat(process)
    beat = await log.last_beat(process)
    assert beat is not None
    assert before <= beat <= log.now_ms()


async def test_a_previous_owner_whose_client_stopped_reading_is_not_taken_at_its_silence(log: StreamLog) -> None:
    """A connection whose sends wait on a client that stopped reading notes it is ``behind``: what
    the app sent it since waits unlogged, so a forced read of its generation is ``incomplete``
    (noted before the claim, or after it), until it logs a batch taken well after the claim."""
    before, after = f"pid{next(_prefixes)}", f"pid{next(_prefixes)}"
    for pid in (before, after):
        await session(log, pid, "g1", "c1", "a")
    assert await log.session_note(before, "behind", "g1", "c1") == ("g1", "c1")
    for pid in (before, after):
        assert (await log.session_claim(pid, ALICE, "/", "g1", "c2", "g2", 60_000)).status == "ok"
    assert await log.session_note(after, "behind", "g1", "c1") == ("g2", "c2")  # (it learns of the claim)
    for pid in (before, after):
        assert (await log.session_read(pid, "g1", 0, force=False)).status == "wait"
        assert (await log.session_read(pid, "g1", 0, force=True)).status == "incomplete"
    # it caught up (what waited is logged): its silence tells again
    assert await log.session_note(before, "caught_up", "g1", "c1") == ("g2", "c2")
    read = await log.session_read(before, "g1", 0, force=True)
    assert (read.status, [n for n, _, _ in read.frames]) == ("ok", [1])
    later = log.now_ms() + CLAIM_SLACK_MS + 1_000  # it caught up: a batch it took well after the claim
    frames: list[tuple[int, list[str | bytes]]] = [(later, ['42["e","b"]'])]
    (result,) = await log.session_append([SessionAppend(after, "g1", "c1", ALICE, "/", frames, later)])
    assert result.status == "taken"
    read = await log.session_read(after, "g1", 0, force=True)
    assert (read.status, [n for n, _, _ in read.frames]) == ("ok", [1, 2])


async def test_a_session_noted_broken_is_not_recovered(log: StreamLog) -> None:
    """Its owner sent an event the log missed: before a claim, the claim is refused; after one (the
    previous owner's write failed while the claimer waited), the read is."""
    pid = f"pid{next(_prefixes)}"
    await session(log, pid, "g1", "c1", "a")
    await log.session_note(pid, "broken", "g1", "c2")  # (not the owner's word: nothing)
    assert (await log.session_claim(pid, ALICE, "/", "g1", "c2", "g2", 60_000)).status == "ok"
    assert (await log.session_read(pid, "g1", 0, force=True)).status == "ok"
    await log.session_note(pid, "broken", "g1", "c1")
    assert (await log.session_read(pid, "g1", 0, force=True)).status == "incomplete"

    await session(log, pid, "g2", "c2", "b")
    await log.session_note(pid, "broken", "g2", "c2")
    assert (await log.session_claim(pid, ALICE, "/", "g2", "c3", "g3", 60_000)).status == "incomplete"


# -- replay: what a resume reads -------------------------------------------------------------------


async def test_a_replay_after_a_seq_of_the_same_epoch_has_no_gap(log: StreamLog) -> None:
    tab = Connection(log, key(), "tab")
    await tab.send(*(entry(log, t) for t in "abcd"))
    replay = await log.replay(key(), 2, tab.epoch, "reloaded")
    assert (replay.status, replay.epoch, replay.last_seq, replay.oldest_seq, replay.gap) == (
        "ok",
        tab.epoch,
        4,
        1,
        False,
    )
    assert [seq for seq, _ in replay.frames] == [3, 4]
    caught_up = await log.replay(key(), 4, tab.epoch, "reloaded")
    assert (caught_up.frames, caught_up.gap) == ([], False)


async def test_a_replay_from_another_epoch_or_beyond_the_end_starts_over_with_a_gap(log: StreamLog) -> None:
    tab = Connection(log, key(), "tab")
    await tab.send(entry(log, "a"), entry(log, "b"))
    for after, epoch in ((1, "another"), (9, tab.epoch)):
        replay = await log.replay(key(), after, epoch, "reloaded")
        assert replay.gap is True
        assert [seq for seq, _ in replay.frames] == [1, 2]  # the whole history the log has


async def test_a_replay_past_what_was_trimmed_says_gap_and_where_the_log_starts(log: StreamLog) -> None:
    small = LogLimits(maxlen=5, ttl_ms=60_000, done_ttl_ms=5_000)
    log.limits = small  # (both backends read their limits at each call)
    tab = Connection(log, key(), "tab")
    for i in range(250):  # (Redis trims with MAXLEN ~: whole nodes of 100 entries at a time)
        await tab.send(entry(log, f"t{i}"))
    replay = await log.replay(key(), 0, tab.epoch, "reloaded")
    assert replay.last_seq == 250
    assert replay.oldest_seq > 1
    assert replay.gap is True
    assert [seq for seq, _ in replay.frames] == list(range(replay.oldest_seq, 251))
    assert (await log.replay(key(), replay.oldest_seq - 1, tab.epoch, "reloaded")).gap is False  # nothing missing


async def test_a_replay_gives_the_entries_as_they_were_logged(log: StreamLog) -> None:
    tab = Connection(log, key(), "tab")
    binary = Entry(
        "d-bin", ['451-["events",{', '"message_id":"m"},{"_placeholder":true,"num":0}]', b"\x00\xff"], False, 0
    )
    await tab.send(entry(log, "text"), binary)
    replay = await log.replay(key(), 0, None, "reloaded")
    assert [payload for _, payload in replay.frames] == [entry(log, "text").payload, binary.payload]


async def test_a_stream_left_in_flight_and_logged_by_nobody_since_answers_gap(log: StreamLog) -> None:
    """Its tail may have been emitted to nobody who logged it: a resume must not call it complete."""
    tab = Connection(log, key(), "gone")
    await tab.send(entry(log, "a"), entry(log, "b"))
    assert (await log.replay(key(), 0, tab.epoch, "reloaded")).gap is False
    await log.orphan([key()], "gone")  # the connection ended mid-stream, not held
    replay = await log.replay(key(), 2, tab.epoch, "reloaded")
    assert (replay.gap, replay.done) == (True, False)
    follower = Connection(log, key(), "newcomer")
    await follower.send(entry(log, "c"))  # a newcomer logs it again: a new epoch, whose history is whole
    assert follower.epoch != tab.epoch
    assert (await log.replay(key(), 0, follower.epoch, "reloaded")).gap is False


@pytest.mark.parametrize("how", ["repaired", "left-in-flight"])
async def test_a_replay_from_the_start_of_an_epoch_that_replaced_a_broken_one_says_gap(
    log: StreamLog, how: str
) -> None:
    """A fresh page asks "from the start" (no epoch): a stream whose history broke begins before
    what the log holds, though the new epoch's entries are all there. Found by an attack run: a
    repaired stream answered ``replayed: 0, gap: false``, as if the message were empty."""
    first = Connection(log, key(), "first")
    await first.send(entry(log, "a"))
    if how == "repaired":
        await log.append([AppendRequest(key(), [], reset=True, reset_epoch=first.epoch or "", connection="first")])
    else:
        await log.orphan([key()], "first")
        await Connection(log, key(), "newcomer").send(entry(log, "c"))
    from_start = await log.replay(key(), 0, None, "reader")
    assert from_start.epoch != first.epoch
    assert from_start.gap
    named = await log.replay(key(), 0, from_start.epoch, "reader")  # a tab that knows the new epoch
    assert not named.gap


async def test_a_replay_from_the_start_of_a_whole_stream_has_no_gap(log: StreamLog) -> None:
    tab = Connection(log, key(), "tab")
    await tab.send(entry(log, "a"), entry(log, "b"))
    from_start = await log.replay(key(), 0, None, "reader")
    assert (from_start.gap, [seq for seq, _ in from_start.frames]) == (False, [1, 2])


@pytest.mark.parametrize("knew", ["cursor", "reset"])
async def test_a_stream_whose_keys_are_gone_under_a_tab_that_knew_it_answers_gap_from_the_start(
    log: StreamLog, knew: str
) -> None:
    """Keys lost (a Redis that restarted empty, an expiry) under a tab that followed the stream, or
    under a repair naming its epoch: its start is not there. Found by an attack run: a resume from
    0 said ``gap: false`` and began at the 503rd token."""
    tab = Connection(log, key(), "tab")
    tab.epoch, tab.cursor = "lostEpoch", 502  # (what it followed before the keys went)
    if knew == "cursor":
        await tab.send(entry(log, "t503"))
    else:
        await log.append([AppendRequest(key(), [], reset=True, reset_epoch="lostEpoch", connection="tab")])
        await Connection(log, key(), "newcomer").send(entry(log, "t503"))
    assert (await log.replay(key(), 0, None, "reader")).gap
    fresh = Connection(log, key(stream="new"), "tab")  # a stream nobody knew before: whole from seq 1
    await fresh.send(entry(log, "a"))
    assert not (await log.replay(key(stream="new"), 0, None, "reader")).gap


async def test_a_reset_naming_several_epochs_starts_one_if_the_stream_is_in_any_of_them(log: StreamLog) -> None:
    """A call that timed out may have started an epoch after all: a repair names it besides the one
    the tab knew, and the stream is in one of them at most."""
    tab = Connection(log, key(), "tab")
    await tab.send(entry(log, "a"))
    current = tab.epoch
    assert current is not None
    (untouched,) = await log.append([AppendRequest(key(), [], reset=True, reset_epoch="other1,other2", connection="r")])
    assert untouched.epoch == current
    (repaired,) = await log.append(
        [AppendRequest(key(), [], reset=True, reset_epoch=f"other1,{current}", connection="r")]
    )
    assert repaired.epoch != current


async def test_prepare_is_harmless_twice_and_a_closed_log_fails_every_call(log: StreamLog) -> None:
    await log.prepare()
    await log.prepare()
    key = StreamKey(ALICE, "/", "", "m")
    (result,) = await log.append([AppendRequest(key, [entry(log, "a")], connection="c1")])
    assert result.seqs == [1]
    await log.aclose()
    calls = [
        log.append([AppendRequest(key, [entry(log, "b")], connection="c1")]),
        log.replay(key, 0, None, "c1"),
        log.orphan([key], "c1"),
        log.session_claim("p" * 24, ALICE, "/", "g1", "c2", "g2", 60_000),
        log.session_read("p" * 24, "g1", 0, False),
        log.session_note("p" * 24, "state", "g1", "c1"),
    ]
    for call in calls:
        with pytest.raises(LogUnavailable):
            await call


async def test_a_reset_naming_no_epoch_of_a_stream_the_log_never_had_starts_it_broken(log: StreamLog) -> None:
    """Found by review: a tab that missed its first frames of a stream (no cursor: its first frame was over
    ASGI_RESUME_MAX_FRAME_BYTES, or its first append failed) resets naming no epoch. The log has no
    entry of the stream yet, but the stream began before the epoch this starts: a replay from the
    start says gap."""
    await log.append([AppendRequest(key(), [], reset=True, reset_epoch="", connection="tab")])
    await Connection(log, key(), "tab").send(entry(log, "b"))
    from_start = await log.replay(key(), 0, None, "reader")
    assert [seq for seq, _ in from_start.frames] == [1]
    assert from_start.gap
