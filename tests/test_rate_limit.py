"""The resume rate limit's token bucket, on a clock the test moves."""

from __future__ import annotations

import pytest

from asgi_resume.pipeline import rate_limit
from asgi_resume.pipeline.rate_limit import ResumeBucket


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1_000.0]
    monkeypatch.setattr(rate_limit.time, "monotonic", lambda: now[0])
    return now


def test_full_then_refused_then_dropped_unanswered(clock: list[float]) -> None:
    bucket = ResumeBucket()
    assert [bucket.take(3) for _ in range(3)] == [None, None, None]
    # as many rate_limited answers as the limit, then silence: a flood gets no answer per request
    assert [bucket.take(3) for _ in range(5)] == ["rate_limited", "rate_limited", "rate_limited", "flooded", "flooded"]


def test_refills_at_limit_per_window(clock: list[float]) -> None:
    bucket = ResumeBucket()
    for _ in range(10):
        assert bucket.take(10, per_s=10.0) is None
    assert bucket.take(10, per_s=10.0) == "rate_limited"
    clock[0] += 1.0  # one token back (10 per 10 s)
    assert bucket.take(10, per_s=10.0) is None
    assert bucket.take(10, per_s=10.0) == "rate_limited"
    clock[0] += 100.0  # never more than full
    assert [bucket.take(10, per_s=10.0) for _ in range(11)][-2:] == [None, "rate_limited"]


def test_refusals_refill_too(clock: list[float]) -> None:
    bucket = ResumeBucket()
    assert bucket.take(1) is None
    assert bucket.take(1) == "rate_limited"
    assert bucket.take(1) == "flooded"
    clock[0] += 10.0  # a token and a refusal back
    assert bucket.take(1) is None
    assert bucket.take(1) == "rate_limited"
