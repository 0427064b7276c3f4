"""Answering a resume request: authorize, read the stream log, render the replay and the answer.

Owns: turning a :class:`ResumeRequest` into the frames sent back to that one connection, a page of
the log at a time (so a replay to a client that does not read keeps one page, however long the
stream). Must not touch: transports, the outbound pipeline's ordering (``outbound`` decides where
the frames go).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, assert_never

from asgi_resume.log import LogUnavailable, ReplayResult, StreamKey
from asgi_resume.log.base import payload_size
from asgi_resume.pipeline import resume
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.resume import ResumeRequest
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.pipeline.units import Outgoing, render

REPLAY_PAGE = 100  # log entries read, rendered and handed to the transport at a time, at most...
#: ...and about this many bytes' worth: the log stops a page once its entries reach it (one entry
#: may be larger), and the next page's count is guessed from the sizes of the one before. Pages of
#: 10 entries of any size were 30 MB of 3 MB frames: one user's 16 resumes stalled another's live
#: stream 1.1-1.6 s (memory log), and on Redis his appends timed out behind such reads (found by attack)
REPLAY_PAGE_BYTES = 256 << 10
REPLAY_FIRST_PAGE = 10  # the first page, before any size is known (a client that never reads holds it)
#: a long-polling response is built whole: past this many bytes in it, no further replay starts
#: (the requests left are refused ``rate_limited``: one POST's 16 requests were 16 whole replays)
RESPONSE_REPLAY_BYTES = 4 << 20

#: Sends a list of items to the client, in order; returns once the transport took them, False
#: when the client is gone (what is left of a replay is not read).
Deliver = Callable[[list[Outgoing]], Awaitable[bool]]


def no_principal_detail(runtime: Runtime) -> str:
    sources = ", ".join(str(source) for source in runtime.settings.principal)
    return (
        f"this connection has no principal, so it may replay nothing: none of {sources} "
        "named a user when the app accepted its CONNECT (ASGI_RESUME_PRINCIPAL)"
    )


async def answer(
    runtime: Runtime, conn: Connection, request: ResumeRequest, deliver: Deliver, left: Callable[[], bool] | None = None
) -> None:
    """Hand ``deliver`` the replayed frames in seq order, a page at a time, then the answer.

    A page (``REPLAY_FIRST_PAGE`` entries, then as many as about ``REPLAY_PAGE_BYTES`` hold by the
    sizes of the page before, ``REPLAY_PAGE`` at most, and the log stops any page once it reaches
    ``REPLAY_PAGE_BYTES``) is read from the log and rendered only once the previous one was
    handed to the transport (``deliver`` returns when the transport took it, and waits while a
    client that does not read leaves the transport's buffer full), and the event loop runs other
    connections between pages: one replay keeps at most a page in memory and the loop for a page's
    work, however long the stream and however slow the client.

    The replay ends at the last entry the log had at its first read: entries appended meanwhile
    reach this client live. If later pages find entries gone (trimmed, expired, another epoch), the
    answer says ``gap: true``.
    """
    stats, settings = runtime.stats, runtime.settings

    def reply(body: dict[str, Any]) -> str:
        return resume.answer(request, body, settings.resume_event, runtime.stream_key)

    def unavailable() -> str:
        stats.resumes_unavailable += 1
        return reply(resume.error("unavailable", "the stream log is not reachable; try again"))

    if request.error is not None:
        match request.refusal:
            case "flooded":
                stats.resumes_rate_limited += 1
            case "rate_limited":
                stats.resumes_rate_limited += 1
                await deliver([reply(resume.error("rate_limited", request.error))])
            case "bad_request":
                stats.resumes_bad_request += 1
                await deliver([reply(resume.error("bad_request", request.error))])
            case _:
                assert_never(request.refusal)
        return
    key = conn.key_of(request)
    if key is None:
        stats.resumes_not_found += 1
        runtime.hint_no_principal()
        await deliver([reply(resume.error("not_found", no_principal_detail(runtime)))])
        return
    if not runtime.guard.available():  # it failed a moment ago: answer now, do not wait on it
        await deliver([unavailable()])
        return
    # a turn before the first read too: a storm's requests (thousands at once, most of them never
    # getting to a page) are read one per loop iteration, between other connections' live frames
    await runtime.replay_turns.take()
    await runtime.repairs.repair(keys=(key,))  # a stream the log missed frames of must answer gap, not a silent hole
    building = 0.0  # time spent reading and rendering (not waiting for the client)
    started = time.perf_counter()
    if left is not None and left():
        # its client left while the request waited its turn: nobody to answer, and a read on its
        # behalf would tell the log that it uses the stream (what ends another tab's hold: found by review)
        return
    limit = REPLAY_FIRST_PAGE
    first = await _read(runtime, key, request.last_seq, request.epoch, conn.id, limit)
    if first is None:
        await deliver([unavailable()])
        return
    if first.status == "not_found":
        stats.resumes_not_found += 1
        await deliver([reply(resume.error("not_found"))])
        return
    epoch, until, gap = first.epoch, first.last_seq, first.gap
    replayed, sent, page = 0, 0, first  # sent: the last seq handed over
    complete = failed = False
    while True:
        building += time.perf_counter() - started
        # one page per loop iteration, of all replays going on
        await runtime.replay_turns.take(page_turns(sum(payload_size(payload) for _, payload in page.frames)))
        started = time.perf_counter()
        out: list[Outgoing] = []
        size = 0
        for seq, payload in page.frames:
            if seq > until:  # appended after the first read: it reaches this client live
                complete = True
                break
            sent = seq
            frames = render(payload, seq, epoch)
            if frames is not None:
                out += frames
                replayed += 1
                for frame in frames:
                    size += len(frame)
        building += time.perf_counter() - started
        gone = bool(out) and not await deliver(out)
        del out
        if gone:
            conn.replayed_to(key, epoch, sent)
            stats.frames_replayed += replayed
            return  # nobody to send the rest to
        if complete or sent >= until or not page.frames:
            complete = True  # (an empty page: the log had nothing more)
            break
        started = time.perf_counter()
        limit = next_page(len(page.frames), size)
        following = await _read(runtime, key, sent, epoch, conn.id, limit)
        if following is None:
            failed = True
            break
        if following.status == "not_found" or following.epoch != epoch:
            gap = True  # it expired, or a new epoch began, while the replay was being sent
            break
        gap = gap or following.gap  # trimmed while the replay was being sent
        page = following
    last_seq = until if complete else sent
    conn.replayed_to(key, epoch, last_seq)
    stats.frames_replayed += replayed
    stats.replay_seconds.observe(building)
    if failed:
        await deliver([unavailable()])
        return
    if gap:
        stats.resumes_gap += 1
    else:
        stats.resumes_ok += 1
    body = {
        "ok": True,
        "replayed": replayed,
        "last_seq": last_seq,
        "oldest_seq": first.oldest_seq,
        "epoch": epoch,
        "done": first.done,
        "gap": gap,
    }
    await deliver([reply(body)])


def page_turns(size: int) -> int:
    """The turns a page of ``size`` bytes takes (replays and recovery claims alike): a page of large
    frames (one entry may be megabytes) counts as the pages its bytes would make."""
    return 1 + size // REPLAY_PAGE_BYTES


def next_page(count: int, size: int) -> int:
    """How many entries the next page asks the log for, after a page of ``count`` entries of ``size``
    bytes: as many as ``REPLAY_PAGE_BYTES`` hold at that size, ``REPLAY_PAGE`` at most, one at least
    (the log stops a page at the bytes, but Redis reads the entries it is asked for)."""
    return max(1, min(REPLAY_PAGE, REPLAY_PAGE_BYTES * count // max(1, size)))


async def _read(
    runtime: Runtime, key: StreamKey, after: int, epoch: str | None, connection: str, limit: int
) -> ReplayResult | None:
    """A page of ``key``'s log after ``after``, ``limit`` entries at most (``None``: the log failed
    or was too slow)."""
    guard = runtime.guard
    try:
        # not on the live path: a replay may wait its turn (a reconnect storm), and its slowness is
        # no outage (live frames keep the log)
        return await guard.call(
            guard.deadlines.replay, runtime.log.replay, key, after, epoch, connection, limit, REPLAY_PAGE_BYTES
        )
    except LogUnavailable:
        return None
