"""Observability: Prometheus metrics served by the middleware, read from its counters."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asgi_resume import ConfigError, ResumeMiddleware
from tests.support.app import emit_tokens, make_app, make_sio
from tests.support.raw import RawClient
from tests.support.server import serve

pytestmark = pytest.mark.anyio


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_count_what_happened(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, metrics="/metrics", **backend)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        await emit_tokens(sio, "alice", "m", 1, 10)
        await client.wait_seqs("m", 10)
        await client.request("resume-stream", {"message_id": "m", "last_seq": 4}, ack_id=1)
        await client.request("resume-stream", {"message_id": "nope", "last_seq": 0}, ack_id=2)
        await client.request("resume-stream", {"message_id": "m"}, ack_id=3)
        async with httpx.AsyncClient() as http:
            response = await http.get(url + "/metrics")
        await client.close()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    assert values[("asgi_resume_frames_stamped_total", ())] == 10
    assert values[("asgi_resume_frames_replayed_total", ())] == 6
    assert values[("asgi_resume_resume_requests_total", (("outcome", "ok"),))] == 1
    assert values[("asgi_resume_resume_requests_total", (("outcome", "not_found"),))] == 1
    assert values[("asgi_resume_resume_requests_total", (("outcome", "bad_request"),))] == 1
    assert values[("asgi_resume_replay_seconds_count", ())] == 1
    assert values[("asgi_resume_holds_active", ())] == 0
    assert ("asgi_resume_log_failures_total", ()) in values


async def test_no_metrics_unless_asked() -> None:
    sio = make_sio()
    app = make_app(sio)
    async with serve(app) as url, httpx.AsyncClient() as http:
        response = await http.get(url + "/metrics")
    assert response.status_code == 404  # the app's own answer


def test_metrics_need_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import asgi_resume.metrics as metrics

    monkeypatch.setattr(metrics, "CollectorRegistry", None)
    with pytest.raises(ConfigError, match="ASGI_RESUME_METRICS"):
        ResumeMiddleware(make_app(make_sio()).app, metrics="/metrics")
