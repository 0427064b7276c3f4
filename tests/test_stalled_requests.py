"""A client's requests that come while a send to it waits: where they go, and what they hold.

Found by an attack run on the change that feeds such a request into the batch at once (so that
the app's frames after it keep being fed; see ``test_feed_order``), and fixed before it landed.
"""

from __future__ import annotations

import gc

import pytest
import socketio

from asgi_resume import ResumeMiddleware
from asgi_resume.transport.outbox import OUTBOX_SIZE
from asgi_resume.transport.websocket import WebSocketConnection
from tests.support.app import chat_event, make_app, make_sio, room_of
from tests.support.raw import DeafClient, RawClient
from tests.support.server import serve
from tests.support.stalls import another_tab_then_a_resume_from_zero
from tests.support.waits import until

pytestmark = pytest.mark.anyio

REQUEST = '42["resume-stream",{"message_id":"%s","last_seq":0}]'


async def _log_a_long_stream(sio: socketio.AsyncServer, url: str) -> None:
    """40 frames of 200 KB in alice's stream ``big``: a replay of it stalls on a client that does not read."""
    reader = await RawClient(url, auth={"token": "alice"}).connect()
    for i in range(1, 41):
        await sio.emit("events", chat_event("big", i, content="x" * 200_000), room=room_of("alice"))
    await reader.wait_seqs("big", 40, timeout=30)
    await reader.close()


def _connection(app: ResumeMiddleware, *, besides: WebSocketConnection | None = None) -> WebSocketConnection:
    """The one live websocket connection of ``app`` (other than ``besides``)."""
    gc.collect()
    (conn,) = [
        o
        for o in gc.get_objects()
        if type(o) is WebSocketConnection and o.runtime is app.runtime and not o.client_gone and o is not besides
    ]
    return conn


async def _stall(sio: socketio.AsyncServer, conn: WebSocketConnection, **to: str) -> None:
    """Fill the socket's buffers of a client that does not read, until a send to it waits."""
    await sio.emit("blob", {"x": "y" * 8_000_000}, **to)
    await sio.emit("blob", {"x": "z"}, **to)
    await until(lambda: conn._draining and conn._stall.sending, 10)


async def test_requests_read_while_a_binary_event_waits_for_its_attachments_stay_bounded() -> None:
    """A client that does not read keeps its writer's drain waiting, and floods requests. While the
    batch held a binary event's header whose attachments the app had not handed over yet, each
    request fed went behind it, uncounted by the bound on what is fed at once: 5,120 held, and the
    reader never waited. Now everything the batch holds counts (``Batch.held``); past the bound
    requests queue, and past ``OUTBOX_SIZE`` queued the reader waits, as before."""
    sio = make_sio()
    seen: list[str] = []

    @sio.on("sentinel")
    async def sentinel(sid: str, *args: object) -> None:
        seen.append(sid)

    app = make_app(sio)
    async with serve(app) as url:
        # a long stream in the log, for a replay that will stall on the deaf client
        await _log_a_long_stream(sio, url)

        stalled = await DeafClient(url, {"token": "alice"}).connect()
        conn = _connection(app)
        await _stall(sio, conn, room=room_of("alice"))

        # a burst: the first asks for the long stream (its replay stalls next), the rest are refused
        stalled.send(REQUEST % "big")
        for _ in range(OUTBOX_SIZE - 1):
            stalled.send(REQUEST % "other")
        await until(lambda: conn._batch.pending() + conn._outbox.requests >= OUTBOX_SIZE, 20)

        # the app emits a binary event to the user: with the change its header is fed and the
        # app's writer waits for the lock (the batch is full) before handing the attachment
        await sio.emit("events", {**chat_event("bin", 1), "blob": b"\x01\x02"}, room=room_of("alice"))
        await until(lambda: conn._batch._pending is not None or conn._outbox._waiting > 0, 10)

        # the client reads the blob, then stops: the writer takes the requests, the replay stalls
        await stalled.read_until(lambda f: '"z"' in f)
        await until(lambda: conn._batch.pending() == 0 and conn._draining and conn._stall.sending, 20)

        # a flood of requests (all refused "flooded": unanswered), then an event the app reads
        flood = 5 * OUTBOX_SIZE
        for _ in range(flood):
            stalled.send(REQUEST % "other")
        stalled.send('42["sentinel"]')
        await until(lambda: bool(seen) or conn._outbox.requests >= OUTBOX_SIZE, 30)

        held = len(conn._batch._behind) + conn._batch.pending() + conn._outbox.requests
        assert held <= 2 * OUTBOX_SIZE, (
            f"{held} of the client's requests held by a connection whose client does not read "
            f"(behind={len(conn._batch._behind)}, outbox={conn._outbox.requests}, sentinel read={bool(seen)})"
        )
        stalled.kill()


async def test_a_request_fed_during_an_inline_send_leaves_the_log_in_order() -> None:
    """Tab A's frame went out from python-engineio's own call (the socket took it at once), and
    that call waited a moment for tab B's copy of it to be logged (B's downlink stalled). A request
    of A's client that came meanwhile was fed, and answered in that call: its replay, to a client
    that does not read, waited there, A's later frames waited unfed in python-engineio, tab C
    logged the frames after them, and once A read again the log had ``[1, 11..21, 2..10]`` with
    ``gap: false``. A request is now fed at once only while the writer task sends."""
    sio = make_sio()
    app = make_app(sio)
    async with serve(app) as url:
        await _log_a_long_stream(sio, url)

        tab_b = await DeafClient(url, {"token": "alice"}).connect()
        conn_b = _connection(app)
        (b_sid,) = [sid for sid, _ in sio.manager.get_participants("/", room_of("alice"))]
        await _stall(sio, conn_b, to=b_sid)  # B's downlink stalls

        tab_a = await DeafClient(url, {"token": "alice"}).connect()
        conn_a = _connection(app, besides=conn_b)
        await sio.emit("events", chat_event("m", 1), room=room_of("alice"))
        await until(lambda: conn_a._draining, 5)
        tab_a.send(REQUEST % "big")
        await until(lambda: conn_a._draining and conn_a._stall.sending, 10)  # the replay waits for A's client

        # the app's next frame for A is fed (taken from python-engineio) while that send waits
        await sio.emit("events", chat_event("m", 2), room=room_of("alice"))
        await until(lambda: conn_a._batch.pending() >= 1 or not conn_a._outbox.empty(), 5)
        for i in range(3, 11):  # A and B are sent these; C is not open yet
            await sio.emit("events", chat_event("m", i), room=room_of("alice"))
        await another_tab_then_a_resume_from_zero(sio, url, tab_a)
        tab_a.kill()
        tab_b.kill()
