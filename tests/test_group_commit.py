"""The group commit: one log call for the appends of many connections in one loop turn."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Sequence

import pytest

from asgi_resume.log.base import AppendRequest, AppendResult, Entry, LogUnavailable, StreamKey
from asgi_resume.log.group_commit import GroupCommit
from asgi_resume.log.redis import RedisLog
from tests.support.loop import counting_iterations

pytestmark = pytest.mark.anyio


class CountingLog:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail
        self.release = asyncio.Event()

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        self.calls.append(len(requests))
        await self.release.wait()
        if self.fail:
            raise LogUnavailable("down")
        return [AppendResult("e", [i]) for i, _ in enumerate(requests)]


def request(stream: str) -> AppendRequest:
    return AppendRequest(StreamKey("p", "/", "", stream), [])


async def test_requests_of_one_turn_share_one_call() -> None:
    log = CountingLog()
    group = GroupCommit(log)  # type: ignore[arg-type]
    waiting = [asyncio.create_task(group.append([request(f"s{i}"), request("x")])) for i in range(3)]
    await asyncio.sleep(0)  # let the three callers ask (one loop turn), not synchronisation with the log
    log.release.set()
    results = await asyncio.gather(*waiting)
    assert log.calls == [6]
    assert [[r.seqs for r in rs] for rs in results] == [[[0], [1]], [[2], [3]], [[4], [5]]]


async def test_a_caller_that_gives_up_leaves_no_unread_failure(caplog: pytest.LogCaptureFixture) -> None:
    log = CountingLog(fail=True)
    group = GroupCommit(log)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await group.append([request("s")])
        log.release.set()
        for _ in range(5):  # the shared call finishes and fails with nobody waiting for it
            await asyncio.sleep(0)
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_a_round_trip_is_given_up_at_its_soonest_callers_deadline() -> None:
    """One timer per merged call (not one per caller): past the soonest deadline of its callers,
    every caller gets ``TimeoutError`` (the guard's own timer is not set for these calls)."""
    log = CountingLog()  # never answers
    group = GroupCommit(log)  # type: ignore[arg-type]
    soon = asyncio.create_task(group.append([request("a")], within=0.05))
    late = asyncio.create_task(group.append([request("b")], within=30.0))
    async with asyncio.timeout(10):  # (a bound far above 0.05 s)
        for caller in (soon, late):
            with pytest.raises(TimeoutError):
                await caller
    assert log.calls == [2]


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
async def test_an_append_on_redis_waits_for_four_loop_iterations_only(
    request: pytest.FixtureRequest, cluster: bool
) -> None:
    """A live frame waits for its append; while the loop runs other work (an app encoding a
    megabyte event takes tens of milliseconds a step), each iteration the append needs costs that
    much more (issue 13's ``bigframes`` flood). An append is four on an idle loop: the call's task
    starts, Redis's reply is read, the task reads it, the caller wakes. (redis-py's ``socket_timeout``
    runs every write under ``asyncio.wait_for``: three more; a callback that made the task: one more.)
    """
    server = request.getfixturevalue("redis_cluster" if cluster else "redis_server")
    log = RedisLog.from_url(server.url, prefix=f"iterations{cluster}", cluster=cluster)
    group = GroupCommit(log)

    def append(i: int) -> AppendRequest:
        return AppendRequest(
            StreamKey("p", "/", "", "s"), [Entry(f"d{i}", [f'42["events",{{"i":{i}}}]'], False, log.now_ms())]
        )

    try:
        await group.append([append(0)])  # connected, scripts loaded, clock read
        counts = []
        with counting_iterations() as iterations:
            for i in range(1, 6):
                before = iterations.count
                (result,) = await group.append([append(i)])
                assert result.seqs == [i + 1]
                counts.append(iterations.count - before)
    finally:
        await log.aclose()
    assert max(counts) <= 4, counts
