"""Prometheus metrics, read from the runtime's counters when scraped (nothing on the hot path).

Owns: turning :class:`~asgi_resume.stats.Stats` into metric families, and answering the scrape
at ``ASGI_RESUME_METRICS``. Needs the ``metrics`` extra (``prometheus-client``). Must not touch:
anything but reading the counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from asgi_resume.config import ConfigError
from asgi_resume.pipeline.runtime import Runtime

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
except ImportError:  # pragma: no cover - the extra is not installed
    CollectorRegistry = None  # type: ignore[assignment,misc]


class StatsCollector:
    """A Prometheus collector over one middleware's counters."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        stats = self.runtime.stats

        def counter(name: str, documentation: str, value: float) -> Any:
            family = CounterMetricFamily(f"asgi_resume_{name}", documentation)
            family.add_metric([], value)
            return family

        yield counter("frames_stamped", "Stream frames stamped with seq and logged", stats.frames_stamped)
        known = stats.frames_stamped_known
        yield counter("frames_stamped_known", "Copies stamped from entries this process knew, no log call", known)
        yield counter("frames_unstamped", "Stream frames sent unstamped because the log failed", stats.frames_unstamped)
        large = stats.frames_too_large
        yield counter("frames_too_large", "Frames not logged: over max_frame_bytes, or batched with one", large)
        yield counter("frames_unmatched", "Frames sent unstamped: logged out of order", stats.frames_unmatched)
        passed = stats.frames_passed_over
        yield counter("frames_passed_over", "Frames sent unstamped: another tab logged newer ones first", passed)
        yield counter("log_writes", "Append calls to the stream log (one per batch)", stats.log_writes)
        yield counter("log_failures", "Stream log calls that failed or timed out", stats.log_failures)
        dropped = stats.repairs_dropped
        yield counter("repairs_dropped", "Streams the log missed frames of left unrepaired (too many at once)", dropped)
        closes = stats.closes_dropped
        yield counter("closes_dropped", "Recovery sessions left open in the log (too many closes waiting)", closes)
        yield counter("frames_replayed", "Frames sent by resume replays", stats.frames_replayed)
        yield counter("frames_recovered", "Frames sent by connection state recoveries", stats.frames_recovered)
        yield counter("holds", "Connections held after their client left", stats.holds_started)
        yield counter("holds_refused", "Departed clients not held (ASGI_RESUME_MAX_HOLDS)", stats.holds_refused)
        holds = GaugeMetricFamily("asgi_resume_holds_active", "Connections held right now")
        holds.add_metric([], stats.holds_active)
        yield holds
        requests = CounterMetricFamily("asgi_resume_resume_requests", "Resume requests, by outcome", labels=["outcome"])
        for outcome, count in stats.resumes_by_outcome().items():
            requests.add_metric([outcome], count)
        yield requests
        recoveries = CounterMetricFamily(
            "asgi_resume_recoveries", "Connection state recoveries, by outcome", labels=["outcome"]
        )
        recoveries.add_metric(["recovered"], stats.recoveries_ok)
        recoveries.add_metric(["refused"], stats.recoveries_refused)
        yield recoveries
        timing = stats.replay_seconds
        replay = HistogramMetricFamily("asgi_resume_replay_seconds", "Time to read the log and render a replay")
        buckets = [(str(bound), count) for bound, count in timing.buckets.items()]
        replay.add_metric([], [*buckets, ("+Inf", timing.count)], sum_value=timing.total)
        yield replay


class Metrics:
    """Serves one middleware's metrics (in a registry of its own) at the configured path."""

    def __init__(self, runtime: Runtime) -> None:
        if CollectorRegistry is None:
            raise ConfigError(
                "ASGI_RESUME_METRICS is set but prometheus-client is not installed: pip install 'asgi-resume[metrics]'"
            )
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StatsCollector(runtime))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            await PlainTextResponse("Method Not Allowed", status_code=405)(scope, receive, send)
            return
        body = generate_latest(self.registry)
        await Response(body, media_type=CONTENT_TYPE_LATEST)(scope, receive, send)
