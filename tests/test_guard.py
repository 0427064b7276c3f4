"""The guard every log call goes through: deadlines, the circuit breaker, failures counted once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from asgi_resume.guard import Deadline, Deadlines, LogGuard
from asgi_resume.log import LogUnavailable
from asgi_resume.log.memory import MemoryLog
from asgi_resume.stats import Stats

pytestmark = pytest.mark.anyio


class _Remote(MemoryLog):
    """The guard only asks whether a log is synchronous: a remote log's calls get a timer."""

    synchronous = False


def guard(log: MemoryLog | None = None) -> LogGuard:
    return LogGuard(log or _Remote(), Deadlines.from_write_timeout(0.05), Stats())


async def answer(value: int) -> int:
    return value


async def never() -> int:
    await asyncio.Event().wait()
    return 0


async def refuse() -> int:
    raise LogUnavailable("connection refused")


async def test_a_call_that_answers_in_time_gives_its_result() -> None:
    g = guard()
    assert await g.call(g.deadlines.write, answer, 7) == 7
    assert g.stats.log_failures == 0


async def test_a_write_past_its_deadline_fails_and_opens_the_breaker() -> None:
    g = guard()
    with pytest.raises(LogUnavailable, match="timed out"):
        await g.call(g.deadlines.write, never)
    assert not g.available()
    assert g.stats.log_failures == 1
    with pytest.raises(LogUnavailable, match="a moment ago"):  # fails at once, without calling
        await g.call(g.deadlines.write, answer, 1)
    assert g.stats.log_failures == 1


async def test_a_recovery_claim_is_tried_while_the_breaker_is_open() -> None:
    g = guard()
    g.failed("gone")
    assert await g.call(g.deadlines.recovery, answer, 5) == 5  # the client cannot ask again
    assert g.down is False
    assert g.available()  # it answered: live frames use it again at once, as the log line says
    assert await g.call(g.deadlines.write, answer, 6) == 6


async def test_a_slow_replay_fails_alone() -> None:
    g = guard()
    with pytest.raises(LogUnavailable, match="timed out"):
        await g.call(Deadline(0.05, slow_is_outage=False), never)
    assert g.available()  # live frames keep the log
    assert g.stats.log_failures == 1


async def test_an_error_opens_the_breaker_and_one_line_says_so(caplog: pytest.LogCaptureFixture) -> None:
    g = guard()
    with caplog.at_level(logging.WARNING, logger="asgi_resume"):
        for _ in range(3):
            g._down_until = 0.0  # (as if the retry delay had passed)
            with pytest.raises(LogUnavailable, match="refused"):
                await g.call(g.deadlines.write, refuse)
        g._down_until = 0.0
        assert await g.call(g.deadlines.write, answer, 2) == 2
    assert g.stats.log_failures == 3
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # one warning for the three failures (throttled), one when it is back
    assert "unavailable (connection refused)" in lines[0]
    assert "reachable again" in lines[1]


async def test_the_in_process_log_runs_without_a_timer() -> None:
    g = guard(MemoryLog())
    assert await g.call(Deadline(0.0), answer, 3) == 3  # a zero deadline would fail any timed call


def test_deadlines_follow_the_write_timeout() -> None:
    deadlines = Deadlines.from_write_timeout(0.25)
    assert deadlines.write == Deadline(0.25)
    assert deadlines.recovery == Deadline(1.0, fails_fast=False)
    assert not deadlines.replay.slow_is_outage
    assert deadlines.recovery_append == Deadline(0.25, slow_is_outage=False)
