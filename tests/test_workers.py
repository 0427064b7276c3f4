"""Two uvicorn worker processes sharing Redis: python-socketio's AsyncRedisManager for fan-out,
the middleware's Redis log for seq. Every tab, wherever it is and wherever it moves, ends with
exactly the emitted sequence, and the log holds one entry per emit.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.app import chat_event, content_by_seq
from tests.support.keys import redis_keys
from tests.support.raw import RawClient
from tests.support.redis_server import RedisServer
from tests.support.waits import until
from tests.support.workers import Worker, fan_out_ready, workers

pytestmark = pytest.mark.anyio
_ids = itertools.count()
PREFIX = "wk"


@pytest.fixture(scope="module")
def pair(redis_server: RedisServer) -> Iterator[list[Worker]]:
    env = {
        "TEST_REDIS_URL": redis_server.url,
        "TEST_SIO_CHANNEL": "socketio-workers",
        "ASGI_RESUME_REDIS_URL": redis_server.url,
        "ASGI_RESUME_KEY_PREFIX": PREFIX,
        "ASGI_RESUME_HOLD_GRACE": "0.3",
        # an append past its deadline goes out unstamped and starts a new epoch, by design (tested
        # in test_epochs); the schedules test placement, which a loaded machine must not turn into
        # that (a run beside two callgrind runs sent one frame unstamped past the default 0.25 s)
        "ASGI_RESUME_WRITE_TIMEOUT": "2",
    }
    with workers(2, env) as started:
        asyncio.run(fan_out_ready(started))
        yield started


async def log_length(redis_server: RedisServer, token: str, message_id: str) -> int:
    """Entries in ``token``'s log of ``message_id``: its key comes from the principal the workers share."""
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        log_key, _ = await redis_keys(client, PREFIX, token, message_id)
        return int(await client.xlen(log_key))
    finally:
        await client.aclose()


def done_seen(client: RawClient, message_id: str) -> bool:
    return any(e.get("message_id") == message_id and e["data"]["data"].get("done") for e in client.events())


async def wait_done(client: RawClient, message_id: str) -> None:
    await client.wait_for(
        lambda f: isinstance(f, str) and f'"message_id":"{message_id}"' in f and '"done":true' in f, 30
    )


async def test_a_tab_on_each_worker_sees_the_same_sequence(pair: list[Worker], redis_server: RedisServer) -> None:
    n = next(_ids)
    token, message_id = f"u{n}", f"both-{n}"
    tabs = [await RawClient(worker.url, auth={"token": token}).connect() for worker in pair]
    await tabs[0].request("stream", {"token": token, "message_id": message_id, "total": 150, "pace": 0.002}, ack_id=1)
    for tab in tabs:
        await wait_done(tab, message_id)
    views = [content_by_seq(tab.events()) for tab in tabs]
    expected = [f"tok{i} " for i in range(1, 151)] + [""]
    for tab, view in zip(tabs, views, strict=True):
        assert tab.seqs(message_id) == list(range(1, 152))  # live, in order, once each
        assert [view[s] for s in sorted(view)] == expected
    assert await log_length(redis_server, token, message_id) == 151
    for tab in tabs:
        await tab.close()


async def test_a_tab_moves_to_the_other_worker_mid_stream(pair: list[Worker], redis_server: RedisServer) -> None:
    """The only tab, on the emitting worker, reloads onto the other worker while the stream goes on."""
    n = next(_ids)
    token, message_id = f"u{n}", f"move-{n}"
    tab = await RawClient(pair[1].url, auth={"token": token}).connect()
    await tab.request("stream", {"token": token, "message_id": message_id, "total": 200, "pace": 0.003}, ack_id=1)
    await tab.wait_seqs(message_id, 40)
    await tab.kill()
    seen = content_by_seq(tab.events())
    moved = await RawClient(pair[0].url, auth={"token": token}).connect()
    answer = await moved.request(
        "resume-stream",
        {"message_id": message_id, "last_seq": max(seen), "epoch": tab.events()[-1]["epoch"]},
        ack_id=1,
    )
    assert answer["ok"] is True
    assert answer["gap"] is False
    await wait_done(moved, message_id)
    view = seen | content_by_seq(moved.events())
    assert [view[s] for s in sorted(view)] == [f"tok{i} " for i in range(1, 201)] + [""]
    assert await log_length(redis_server, token, message_id) == 201
    await moved.close()


# -- random schedules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TabPlan:
    worker: int  # where it connects first
    join_at: int  # the step before which it connects (0: from the start; later: it resumes from 0)
    reload_at: int | None  # the step before which its socket dies (after it has seen a frame)
    away: int  # steps emitted while it is gone
    back_to: int  # the worker it comes back on


@dataclass(frozen=True)
class Schedule:
    steps: list[list[str]]  # payloads emitted per step, without waiting in between
    settle: list[bool]  # per step: wait until every tab got it (else the next step races it)
    emitter: int
    tabs: list[TabPlan]


@st.composite
def schedules(draw: Any) -> Schedule:
    steps = draw(st.lists(st.lists(st.sampled_from(["a", "b", "ab"]), min_size=1, max_size=4), min_size=3, max_size=10))
    tabs = []
    for i in range(draw(st.integers(1, 3))):
        join_at = 0 if i == 0 else draw(st.integers(0, len(steps) - 1))  # someone is there when it starts
        reload_at = draw(st.none() | st.integers(join_at + 1, len(steps)))
        tabs.append(
            TabPlan(draw(st.integers(0, 1)), join_at, reload_at, draw(st.integers(0, 3)), draw(st.integers(0, 1)))
        )
    settle = draw(st.lists(st.booleans(), min_size=len(steps), max_size=len(steps)))
    return Schedule(steps, settle, draw(st.integers(0, 1)), tabs)


class Tab:
    def __init__(self, plan: TabPlan, token: str, message_id: str) -> None:
        self.plan, self.token, self.message_id = plan, token, message_id
        self.connections: list[RawClient] = []
        self.current: RawClient | None = None
        self.back_at: int | None = None

    def view(self) -> dict[int, str]:
        mine = [e for c in self.connections for e in c.events() if e.get("message_id") == self.message_id]
        return content_by_seq(mine)

    async def heal(self) -> None:
        """What the client helper does when seq skips a number: ask again from the hole."""
        view = self.view()
        holes = [seq for seq in range(1, max(view, default=0) + 1) if seq not in view]
        if holes and self.current is not None:
            epochs = [e["epoch"] for c in self.connections for e in c.events() if "epoch" in e]
            request = {"message_id": self.message_id, "last_seq": holes[0] - 1, "epoch": epochs[-1]}
            answer = await self.current.request("resume-stream", request, ack_id=2)
            assert answer["ok"] is True, answer
            assert answer["gap"] is False, answer

    async def connect(self, url: str, resume: bool) -> None:
        self.current = await RawClient(url, auth={"token": self.token}).connect()
        if resume:
            view = self.view()
            last = max(view, default=0)
            epochs = [e["epoch"] for c in self.connections for e in c.events() if "epoch" in e]
            request: dict[str, Any] = {"message_id": self.message_id, "last_seq": last}
            if epochs:
                request["epoch"] = epochs[-1]
            self.connections.append(self.current)
            answer = await self.current.request("resume-stream", request, ack_id=1)
            assert answer["ok"] is True, answer
            assert answer["gap"] is False, answer
        else:
            self.connections.append(self.current)


async def run_schedule(schedule: Schedule, pair: list[Worker], redis_server: RedisServer) -> None:
    n = next(_ids)
    token, message_id = f"s{n}", f"sched-{n}"
    control = await RawClient(pair[schedule.emitter].url, auth={"token": f"ctl{n}"}).connect()
    tabs = [Tab(plan, token, message_id) for plan in schedule.tabs]
    barrier = 0

    async def emit(events: list[Any], settle: bool = True) -> None:
        nonlocal barrier
        barrier += 1
        mark = {"barrier": barrier}
        await control.request("emit", {"token": token, "events": [*events]}, ack_id=1)
        await control.request("emit", {"token": token, "events": [mark]}, ack_id=1)
        if not settle:
            return
        for tab in tabs:  # frames reach each connection in emit order: the barrier follows them
            if tab.current is not None:
                await tab.current.wait_for(lambda f, b=barrier: isinstance(f, str) and f'{{"barrier":{b}}}' in f)

    emitted: list[str] = []
    for step, payloads in enumerate(schedule.steps):
        for tab in tabs:
            plan = tab.plan
            if plan.join_at == step:
                await tab.connect(pair[plan.worker].url, resume=step > 0)
            elif plan.reload_at == step and tab.current is not None and tab.view():
                await tab.current.kill()
                tab.current, tab.back_at = None, step + plan.away
            if tab.current is None and tab.back_at is not None and tab.back_at <= step:
                await tab.connect(pair[plan.back_to].url, resume=True)
        events = []
        for payload in payloads:
            content = f"{payload}{len(emitted) + 1}"  # (each emit its own content: see the test's docstring)
            events.append({"message_id": message_id, "data": {"type": "chat:completion", "data": {"content": content}}})
            emitted.append(content)
        await emit(events, schedule.settle[step])
    await emit([chat_event(message_id, 0, done=True)])
    emitted.append("")
    for tab in tabs:
        if tab.current is None and tab.back_at is not None:
            await tab.connect(pair[tab.plan.back_to].url, resume=True)
        await tab.heal()

    for tab in tabs:
        view = tab.view()
        assert [view[s] for s in sorted(view)] == emitted, (tab.plan, view)
        assert sorted(view) == list(range(1, len(emitted) + 1))
    assert await log_length(redis_server, token, message_id) == len(emitted)  # one entry per emit
    for tab in tabs:
        if tab.current is not None:
            await tab.current.close()
    await control.close()


@settings(
    max_examples=int(os.environ.get("ASGI_RESUME_SCHEDULES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(schedule=schedules())
def test_random_schedules_deliver_every_emit_once(
    pair: list[Worker], redis_server: RedisServer, schedule: Schedule
) -> None:
    """Tabs join, leave and reload at random frames, on either worker.

    Each emit has its own content: repeated content is where matching copies by content has
    known limits across workers (docs/guarantees.md, "Content that repeats within a few
    frames"); the rules for repeats are pinned by test_log_contract and, between the tabs of one
    worker, test_feed_order. Here the schedules test placement, reloads and moves between
    workers, which must hold exactly.
    """
    asyncio.run(run_schedule(schedule, pair, redis_server))


async def test_a_stream_whose_worker_was_killed_does_not_go_on_across_what_nobody_logged(
    redis_server: RedisServer,
) -> None:
    """Found by attack: alice's only tab was on the first worker, killed (SIGKILL: the OOM killer,
    a crash) while the second emitted her stream; tokens 6-10 reached nobody, and her new tab on
    the second worker logged 11-13 as seqs 6-8 of the same epoch: a resume from 0, or from the old
    tab's (epoch, 5), said gap: false without them (a worker shut down flags its streams; a killed
    one cannot). The epoch now ends there: the killed worker did not beat after the new tab's
    first append."""
    env = {
        "TEST_REDIS_URL": redis_server.url,
        "TEST_SIO_CHANNEL": "socketio-killed",
        "ASGI_RESUME_REDIS_URL": redis_server.url,
        "ASGI_RESUME_KEY_PREFIX": "killed",
    }
    with workers(2, env) as (first, second):
        await fan_out_ready([first, second])
        control = await RawClient(second.url, auth={"token": "ctl"}).connect()
        old_tab = await RawClient(first.url, auth={"token": "alice"}).connect()
        await control.request("emit", {"token": "alice", "events": [chat_event("m", i) for i in range(1, 6)]}, ack_id=1)
        await old_tab.wait_seqs("m", 5)
        old = old_tab.events()[-1]
        os.kill(first.pid, signal.SIGKILL)
        first.process.wait(10)
        await control.request(
            "emit", {"token": "alice", "events": [chat_event("m", i) for i in range(6, 11)]}, ack_id=2
        )
        # her old tab comes back on the second worker, as the browser helper does: it resumes
        # first (a replay also names the key's last user in the log, which hid the killed one)
        new_tab = await RawClient(second.url, auth={"token": "alice"}).connect()
        resume = {"message_id": "m", "last_seq": 5, "epoch": old["epoch"]}
        assert (await new_tab.request("resume-stream", resume, ack_id=7))["replayed"] == 0
        await control.request(
            "emit", {"token": "alice", "events": [chat_event("m", i) for i in range(11, 14)]}, ack_id=3
        )
        await new_tab.wait_seqs("m", 3)

        async def resumed(request: dict[str, Any]) -> dict[str, Any]:
            tab = await RawClient(second.url, auth={"token": "alice"}).connect()
            try:
                answer: dict[str, Any] = await tab.request("resume-stream", request, ack_id=1)
                return answer
            finally:
                await tab.close()

        async def told_gap() -> bool:
            return (await resumed({"message_id": "m", "last_seq": 0}))["gap"] is True

        await until(told_gap, timeout=10, every=0.2)  # (the worker's silence is known BEAT_LAPSE_MS after)
        answer = await resumed({"message_id": "m", "last_seq": old["seq"], "epoch": old["epoch"]})
        assert answer["gap"] is True
        await new_tab.close()
        await control.close()
