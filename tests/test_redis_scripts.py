"""The Redis log's scripts after Redis forgot them (a restart, ``SCRIPT FLUSH``, a failover).

Real redis-server processes (one, and a three-node cluster); the log called directly.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
import redis.asyncio as aioredis

from asgi_resume.log import AppendRequest, Entry, StreamKey
from asgi_resume.log.base import LATE, SessionAppend
from asgi_resume.log.redis import RedisLog
from asgi_resume.log.redis_scripts import RedisScripts
from tests.support.redis_server import RedisCluster, RedisServer

pytestmark = pytest.mark.anyio
_prefixes = itertools.count()


def _append(log: RedisLog, key: StreamKey, text: str) -> AppendRequest:
    frame = ['42["events",{', f'"message_id":"{key.stream}","t":"{text}"}}]']
    return AppendRequest(key, [Entry(f"d-{text}", frame, False, log.now_ms())], None, 0, log.now_ms(), False, "c")


async def test_scripts_forgotten_by_redis_are_loaded_again_and_each_call_runs_once(redis_server: RedisServer) -> None:
    log = RedisLog.from_url(redis_server.url, prefix=f"ns{next(_prefixes)}")
    keys = [StreamKey("alice", "/", "", f"m{i}") for i in range(2)]
    try:
        await log.prepare()
        assert [r.seqs for r in await log.append([_append(log, k, "a") for k in keys])] == [[1], [1]]
        await log.client.script_flush()
        results = await log.append([_append(log, k, "b") for k in keys])
        assert [(r.failed, r.seqs) for r in results] == [(None, [2]), (None, [2])]
        await log.client.script_flush()  # (a call alone, not in a pipeline, loads them again too)
        replay = await log.replay(keys[0], 0, None, "c")
        assert [seq for seq, _ in replay.frames] == [1, 2]
    finally:
        await log.aclose()


async def test_on_a_cluster_only_the_calls_that_got_noscript_run_again(redis_cluster: RedisCluster) -> None:
    """One node forgot the scripts: the call to it runs again; the call to another node, which
    ran, must not (a recovery session's append is not idempotent: it would be logged twice)."""
    log = RedisLog.from_url(redis_cluster.url, prefix=f"ns{next(_prefixes)}", cluster=True)
    client = log.client
    assert isinstance(client, aioredis.RedisCluster)
    try:
        await log.prepare()
        # two recovery sessions whose slots are on different nodes
        pids: list[str] = []
        nodes: list[str] = []
        for i in range(100):
            pid = f"pid-{i:016d}"
            node = client.get_node_from_key(log.session_keys(pid)[0]).name
            if node not in nodes:
                pids.append(pid)
                nodes.append(node)
            if len(pids) == 2:
                break
        assert len(pids) == 2

        def append(text: str) -> list[SessionAppend]:
            now = log.now_ms()
            frames: list[tuple[int, list[str | bytes]]] = [(now, [f'42["e","{text}"]'])]
            return [SessionAppend(pid, "g1", "c1", "alice", "/", frames, now, starts=True) for pid in pids]

        assert [(r.status, r.numbers) for r in await log.session_append(append("a"))] == [("ok", [1]), ("ok", [1])]
        node = client.get_node_from_key(log.session_keys(pids[0])[0])
        await client.execute_command("SCRIPT", "FLUSH", target_nodes=node)
        results = await log.session_append(append("b"))
        assert [(r.status, r.numbers) for r in results] == [("ok", [2]), ("ok", [2])]
    finally:
        await log.aclose()


def test_a_command_a_script_ran_fails_alone_unless_its_code_tells_the_servers_state() -> None:
    """Found by review: an XADD refused inside a script ("The ID specified ... on @user_script:71")
    was taken for the server failing, and one session's broken key switched the log off for all."""
    from redis.exceptions import ResponseError

    from asgi_resume.log.redis_scripts import _own_fault

    assert _own_fault(
        ResponseError(
            "The ID specified in XADD is equal or smaller than the target stream top item "
            "script: 1f2e, on @user_script:71."
        )
    )
    assert _own_fault(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert not _own_fault(
        ResponseError("OOM command not allowed when used memory > 'maxmemory'. script: 1f2e, on @user_script:71.")
    )
    assert not _own_fault(ResponseError("READONLY You can't write against a read only replica."))


async def test_an_append_redis_would_run_after_its_caller_gave_up_writes_nothing(redis_server: RedisServer) -> None:
    """Found by attack runs: appends that timed out while Redis was paused ran when it woke and
    started the new epoch with stale frames, out of order and with holes a resume did not tell. An
    append names how long its caller waits; Redis refuses to run it later (here the host reckons
    Redis's clock 10 s slow, so every call looks late), and the first such answer makes the host
    read the clock again."""
    log = RedisLog.from_url(redis_server.url, prefix=f"ns{next(_prefixes)}")
    key = StreamKey("alice", "/", "", "m")
    try:
        await log.prepare()
        log.scripts._clock_ms -= 10_000  # (as if the reading were 10 s off)

        def request(text: str) -> AppendRequest:
            made = _append(log, key, text)
            made.within_ms = 250
            return made

        (first,) = await log.append([request("a")])
        assert first.failed == LATE
        assert (await log.replay(key, 0, None, "c")).status == "not_found"  # it wrote nothing
        (second,) = await log.append([request("b")])
        assert (second.failed, second.seqs) == (None, [1])
    finally:
        await log.aclose()


async def test_a_slow_reading_of_redis_clock_is_not_taken_over_a_closer_one() -> None:
    """Found by an attack run: the clock was read inside whatever call was due (a replay waits 5 s),
    and a reading taken across a 4 s pause put the host's reckoning 2 s off for a minute."""

    class SlowClock:
        delay, seconds = 0.0, 1_000

        async def time(self) -> tuple[int, int]:
            await asyncio.sleep(self.delay)  # (the round trip the reading takes)
            return self.seconds, 0  # (what the reading says Redis's clock is)

    client = SlowClock()
    scripts = RedisScripts(client)  # type: ignore[arg-type]
    await scripts._sync_clock()
    assert abs(scripts.now_ms() - 1_000_000) < 50
    client.delay, client.seconds = 0.1, 5_000  # a reading across a slow round trip, and far off
    await scripts._sync_clock()
    assert abs(scripts.now_ms() - 1_000_000) < 1_000  # the closer one stands
    assert scripts.clock_error_ms <= 20
