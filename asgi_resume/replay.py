"""Answering a resume request: authorize, read the stream log, render the replay and the answer.

Owns: turning a :class:`ResumeRequest` into the frames sent back to that one connection. Must not
touch: transports, the outbound pipeline's ordering (``outbound`` decides where the frames go).
"""

from __future__ import annotations

import time
from typing import Any

from asgi_resume import resume
from asgi_resume.frames import Item, render
from asgi_resume.log import LogUnavailable
from asgi_resume.resume import ResumeRequest
from asgi_resume.runtime import Runtime
from asgi_resume.session import Session


def no_principal_detail(runtime: Runtime) -> str:
    sources = ", ".join(str(source) for source in runtime.settings.principal)
    return (
        f"this connection has no principal, so it may replay nothing: none of {sources} "
        "named a user when the app accepted its CONNECT (ASGI_RESUME_PRINCIPAL)"
    )


async def answer(runtime: Runtime, session: Session, request: ResumeRequest) -> list[Item]:
    """The replayed frames, in seq order, then the answer (an ack, or the result event)."""
    stats, settings = runtime.stats, runtime.settings

    def reply(body: dict[str, Any]) -> str:
        return resume.answer(request, body, settings.resume_event, runtime.stream_key)

    if request.error == resume.DROPPED:
        stats.resumes_rate_limited += 1
        return []
    if request.error == resume.RATE_LIMITED:
        stats.resumes_rate_limited += 1
        return [reply(resume.error("rate_limited", request.error))]
    if request.error is not None:
        stats.resumes_bad_request += 1
        return [reply(resume.error("bad_request", request.error))]
    key = session.key_of(request)
    if key is None:
        stats.resumes_not_found += 1
        runtime.hint_no_principal()
        return [reply(resume.error("not_found", no_principal_detail(runtime)))]
    guard = runtime.guard
    if not guard.available():  # it failed a moment ago: answer now, do not wait on it
        stats.resumes_unavailable += 1
        return [reply(resume.error("unavailable", "the stream log is not reachable; try again"))]
    await runtime.repair()  # a stream the log missed frames of must answer gap, not a silent hole
    started = time.perf_counter()
    try:
        # not on the live path: a replay may wait its turn (a reconnect storm), and its slowness is
        # no outage (live frames keep the log)
        result = await guard.call(
            guard.deadlines.replay, runtime.log.replay, key, request.last_seq, request.epoch, session.id
        )
    except LogUnavailable:
        stats.resumes_unavailable += 1
        return [reply(resume.error("unavailable", "the stream log is not reachable; try again"))]
    if result.status == "not_found":
        stats.resumes_not_found += 1
        return [reply(resume.error("not_found"))]
    out: list[Item] = []
    replayed = 0
    for seq, payload in result.frames:
        frames = render(payload, seq, result.epoch)
        if frames is not None:
            out += frames
            replayed += 1
    session.replayed[key] = (result.epoch, result.last_seq)
    stats.frames_replayed += replayed
    stats.replay_seconds.observe(time.perf_counter() - started)
    if result.gap:
        stats.resumes_gap += 1
    else:
        stats.resumes_ok += 1
    body = {
        "ok": True,
        "replayed": replayed,
        "last_seq": result.last_seq,
        "oldest_seq": result.oldest_seq,
        "epoch": result.epoch,
        "done": result.done,
        "gap": result.gap,
    }
    out.append(reply(body))
    return out
