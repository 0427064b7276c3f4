"""Long-polling: bodies of several packets, binary as base64, compressed bodies, resume over POST, upgrade.

Both logs; a hand-written polling client (exact packets and headers) and the official Node client.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
import socketio
import websockets
from starlette.middleware.base import BaseHTTPMiddleware

from asgi_resume import ResumeMiddleware
from asgi_resume.pipeline.connection import Connection
from asgi_resume.transport import polling
from tests.conftest import Stack
from tests.support.app import PacedStream, chat_event, emit_tokens, faults, make_app, make_sio, room_of
from tests.support.node import NodeClient
from tests.support.polling import PollingClient, PollingTab, event_args, is_event
from tests.support.raw import RawClient
from tests.support.redis_server import RedisServer
from tests.support.server import serve
from tests.support.waits import until

pytestmark = pytest.mark.anyio


async def test_polling_frames_are_stamped_and_logged(stack: Stack) -> None:
    client = await PollingClient(stack.url).open({"token": "alice"})
    await emit_tokens(stack.sio, "alice", "p", 1, 30)
    packets = await client.collect(is_event, 30)
    assert [e["seq"] for e in event_args(packets)] == list(range(1, 31))
    answer_seqs = await resume_over_polling(client, {"message_id": "p", "last_seq": 28})
    assert answer_seqs == (
        [29, 30],
        {
            "message_id": "p",
            "ok": True,
            "replayed": 2,
            "last_seq": 30,
            "oldest_seq": 1,
            "epoch": event_args(packets)[0]["epoch"],
            "done": False,
            "gap": False,
        },
    )
    await client.aclose()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_polling_bodies(stack: Stack, encoding: str) -> None:
    client = await PollingClient(stack.url, accept_encoding=encoding).open({"token": "alice"})
    for i in range(1, 41):  # about 4 KB: python-engineio compresses bodies of 1 KB and more
        event = chat_event("z", i)
        event["data"]["data"]["content"] = f"tok{i} " + "x" * 80
        await stack.sio.emit("events", event, room=room_of("alice"))
    packets = await client.collect(is_event, 40)
    assert encoding in client.encodings
    assert [e["seq"] for e in event_args(packets)] == list(range(1, 41))
    assert [e["data"]["data"]["content"] for e in event_args(packets)] == [f"tok{i} " + "x" * 80 for i in range(1, 41)]
    await client.aclose()


async def test_a_large_response_is_compressed_a_part_per_loop_iteration(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by attack: a long-polling response that carries a replay was joined, encoded and
    compressed whole, in one go: a replay of 2,000 frames of 4 KB to a client that accepts gzip
    held the event loop 55 ms, and one principal's sessions asking ten at a time stalled another
    user's live stream 140-270 ms (bare: 15 ms). It is built ``RESPONSE_PART`` at a time now, one
    part per loop iteration."""
    ticks = 0
    parts: list[tuple[int, int]] = []  # (the loop iteration it was compressed in, its size)

    class Recording:
        def __init__(self) -> None:
            self.compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

        def compress(self, data: bytes) -> bytes:
            parts.append((ticks, len(data)))
            return self.compressor.compress(data)

        def flush(self) -> bytes:
            return self.compressor.flush()

    monkeypatch.setitem(polling._CODECS, "gzip", (gzip.decompress, gzip.compress, Recording))
    client = await PollingClient(stack.url, accept_encoding="gzip").open({"token": "alice"})
    content = "x" * 4000
    for i in range(1, 301):  # 1.2 MB
        await stack.sio.emit("events", chat_event("big", i, content=f"tok{i} {content}"), room=room_of("alice"))
    await client.collect(is_event, 300)
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    counting = asyncio.create_task(ticker())
    parts.clear()
    # a 2 KB frame waits for the next GET, so python-engineio compresses its response (past 1 KB)
    await stack.sio.emit("events", chat_event("pad", 1, content="y" * 2048), room=room_of("alice"))
    await client.post("427" + json.dumps(["resume-stream", {"message_id": "big", "last_seq": 0}]))
    packets = await client.collect(lambda p: isinstance(p, str) and p.startswith("437["), 1)
    stop.set()
    await counting
    assert client.encodings[-1] == "gzip"
    assert [e["seq"] for e in event_args(packets) if e["message_id"] == "big"] == list(range(1, 301))
    assert [e["data"]["data"]["content"] for e in event_args(packets) if e["message_id"] == "big"][-1] == (
        f"tok300 {content}"
    )
    assert len(parts) >= 1_200_000 // polling.RESPONSE_PART
    assert max(size for _, size in parts) <= polling.RESPONSE_PART
    # a part per loop iteration (the ticker goes round once per iteration, before or after a part)
    assert parts[-1][0] - parts[0][0] >= len(parts) - 2
    await client.aclose()


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_a_large_response_the_middleware_leaves_as_it_was_goes_out_as_it_was(stack: Stack, encoding: str) -> None:
    client = await PollingClient(stack.url, accept_encoding=encoding).open({"token": "alice"})
    blobs = [f"{i} " + "z" * 50_000 for i in range(4)]  # no stream's frames: nothing to stamp
    for blob in blobs:
        await stack.sio.emit("other", blob, room=room_of("alice"))
    packets = await client.collect(lambda p: isinstance(p, str) and p.startswith('42["other"'), 4)
    assert event_args(packets, "other") == blobs
    assert client.encodings[-1] == ("gzip" if encoding == "gzip" else "")
    await client.aclose()


async def test_binary_attachments_over_polling(stack: Stack) -> None:
    client = await PollingClient(stack.url).open({"token": "alice"})
    blob = bytes(range(256)) * 3
    await stack.sio.emit("events", {"message_id": "bin", "blob": blob}, room=room_of("alice"))
    await stack.sio.emit("events", {"message_id": "bin", "n": 2}, room=room_of("alice"))
    packets = await client.collect(is_event, 2)
    header_at = next(i for i, p in enumerate(packets) if isinstance(p, str) and p.startswith("451-"))
    assert packets[header_at + 1] == blob
    assert json.loads(str(packets[header_at])[4:])[1]["seq"] == 1
    assert event_args(packets)[-1]["seq"] == 2
    await client.aclose()


async def resume_over_polling(client: PollingClient, request: dict[str, Any]) -> tuple[list[int], Any]:
    """Send a resume in a POST while a GET waits: the GET must come back with the replay and the answer.

    Nothing else is sent meanwhile and the ping interval is 25 s, so only the middleware can end that GET.
    """
    pending = asyncio.create_task(client.collect(lambda p: isinstance(p, str) and p.startswith("437["), 1))
    await client.post("427" + json.dumps(["resume-stream", request]))
    packets = await asyncio.wait_for(pending, 5)
    answer = json.loads(str(next(p for p in packets if isinstance(p, str) and p.startswith("437[")))[3:])[0]
    return [e["seq"] for e in event_args(packets)], answer


async def test_resume_over_polling_when_the_stream_is_done(stack: Stack) -> None:
    replays = stack.app.runtime.polling_replays
    client = await PollingClient(stack.url).open({"token": "alice"})
    await emit_tokens(stack.sio, "alice", "finished", 1, 5)
    await stack.sio.emit("events", chat_event("finished", 6, done=True), room=room_of("alice"))
    await client.collect(is_event, 6)
    seqs, answer = await resume_over_polling(client, {"message_id": "finished", "last_seq": 2})
    assert seqs == [3, 4, 5, 6]
    assert answer["done"] is True
    await until(lambda: replays.total() == 0, 5)  # the response with the replay counted until its client read it
    bad_seqs, bad = await resume_over_polling(client, {"message_id": "finished"})
    assert bad_seqs == []
    assert bad["error"] == "bad_request"
    await client.aclose()


async def test_a_response_too_large_to_read_starts_its_streams_anew(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an attack run: a long-polling response over ``MAX_BODY`` passed through unread,
    its stream frames in no log, and the stream went on in the same epoch, so a resume from before
    them replayed what came after with no gap. Every stream the connection follows now starts a
    new epoch: a resume across the unread frames says ``gap``."""
    monkeypatch.setattr(polling, "MAX_BODY", 8 * 1024)  # (the real bound is 16 MiB)
    client = await PollingClient(stack.url).open({"token": "alice"})
    await emit_tokens(stack.sio, "alice", "big", 1, 3)
    stamped = event_args(await client.collect(is_event, 3))
    assert [e["seq"] for e in stamped] == [1, 2, 3]
    for i in range(4, 41):  # the client is not polling: one body of 37 events, over the bound
        content = f"tok{i} " + "x" * 500
        await stack.sio.emit("events", chat_event("big", i, content=content), room=room_of("alice"))
    unread = event_args(await client.collect(is_event, 37))
    assert len(unread) == 37
    assert not any("seq" in e for e in unread)  # passed through as they were
    await emit_tokens(stack.sio, "alice", "big", 41, 41)
    (after,) = event_args(await client.collect(is_event, 1))
    assert after["epoch"] != stamped[0]["epoch"]
    seqs, answer = await resume_over_polling(client, {"message_id": "big", "last_seq": 3, "epoch": stamped[0]["epoch"]})
    assert answer["gap"] is True  # not a silent hole where the unread frames were
    assert answer["epoch"] == after["epoch"]
    assert seqs == [after["seq"]]
    await client.aclose()


async def test_node_client_upgrades_from_polling_mid_stream(stack: Stack) -> None:
    stream = PacedStream(stack.sio, "alice", "up", 200, pace=0.003)
    async with NodeClient("polling_upgrade.mjs", stack.url, "alice", "up", "60") as node:
        await node.expect("connected")
        emitter = asyncio.create_task(stream.run())
        resumed = await node.expect("resumed")
        upgraded = await node.expect("upgraded")
        finished = await node.expect("finished", timeout=30)
        await emitter
    assert resumed["transport"] == "polling"
    assert resumed["answer"]["ok"] is True
    assert resumed["answer"]["replayed"] == resumed["answer"]["last_seq"] - 5 >= 5
    assert upgraded["transport"] == "websocket"
    assert finished["seqs"] == list(range(1, 202))  # in order, once each, across the upgrade
    transports = finished["transports"]
    assert transports[0] == "polling"
    assert transports[-1] == "websocket"
    assert transports == sorted(transports)  # polling, then websocket: never back
    assert finished["contents"] == stream.expected


@pytest.mark.parametrize("probe", ["answered-then-closed", "not-a-probe", "upgrade-without-probe"])
async def test_a_failed_upgrade_leaves_the_polling_session_as_it_was(stack: Stack, probe: str) -> None:
    """The upgrade websocket dies (a proxy that breaks websockets) and the client goes on polling, as
    socket.io-client falls back to. The probe used to be held like a dropped tab (python-engineio then
    stayed "upgrading" and answered every GET with a NOOP for 20 s and more) and to end the session
    here: its frames went out unstamped and its resume requests reached the app."""
    alice = await PollingClient(stack.url).open({"token": "alice"})
    await emit_tokens(stack.sio, "alice", "s", 1, 3)
    before = event_args(await alice.collect(is_event, 3))
    url = stack.url.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&sid={alice.sid}"
    async with websockets.connect(url, ping_interval=None) as ws:
        if probe == "answered-then-closed":
            await ws.send("2probe")
            assert await ws.recv() == "3probe"
        elif probe == "upgrade-without-probe":  # an UPGRADE completes only an answered probe
            await ws.send("5")
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.recv()
        else:
            await ws.send("2notaprobe")  # python-engineio closes it: "failed websocket upgrade"
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.recv()
    await emit_tokens(stack.sio, "alice", "s", 4, 8)
    after = event_args(await asyncio.wait_for(alice.collect(is_event, 5), 10))
    assert [e["seq"] for e in before + after] == list(range(1, 9))
    assert {e["epoch"] for e in before + after} == {before[0]["epoch"]}
    seqs, answer = await asyncio.wait_for(resume_over_polling(alice, {"message_id": "s", "last_seq": 6}), 10)
    assert (seqs, answer["ok"], answer["gap"]) == ([7, 8], True, False)
    await alice.aclose()


async def test_a_resume_posted_while_the_upgrade_is_noted_is_answered_here(tmp_path: Path) -> None:
    """With recovery on, the websocket's UPGRADE is noted in the log before python-engineio reads it.
    A POST made meanwhile (python-engineio still takes POSTs) was passed on uninspected: its resume
    request reached the app (30 of 30 tries). A paused Redis holds the note open for the test."""
    server = RedisServer(tmp_path / "upgrade").start()
    sio = make_sio()
    reached: list[Any] = []
    sio.on("resume-stream", lambda sid, *args: reached.append(args))
    app = make_app(sio, recovery=True, redis_url=server.url, secret="s", write_timeout=2.0)
    try:
        async with serve(app) as url:
            alice = await PollingClient(url).open({"token": "alice"})
            ws_url = url.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&sid={alice.sid}"
            async with websockets.connect(ws_url, ping_interval=None) as ws:
                await ws.send("2probe")
                assert await ws.recv() == "3probe"
                await alice.get()  # the NOOP that ends the poll
                server.pause()  # the note of the upgrade waits (up to write_timeout)
                await ws.send("5")
                response = await alice.http.post(
                    alice.url,
                    params={"EIO": "4", "transport": "polling", "sid": alice.sid},
                    content='42["resume-stream",{"message_id":"m","last_seq":0}]',
                )
                server.resume()
                while True:  # answered here, on the websocket once it is the transport
                    frame = await asyncio.wait_for(ws.recv(), 10)
                    if isinstance(frame, str) and frame.startswith('42["resume-stream:result"'):
                        break
            assert response.status_code in (200, 400)
            assert reached == []
            await alice.aclose()
    finally:
        server.stop()


async def test_a_failure_noting_what_a_post_does_costs_nothing_else(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What a POST's packets do is done at python-engineio's answer, outside the reading of the
    frames: a bug there is logged, and the POST is still answered and the session goes on."""

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Connection, "answered", broken)
    client = await PollingClient(stack.url).open({"token": "alice"})
    try:
        await client.post('431["ok"]', '421["resume-stream",{"message_id":"m","last_seq":0}]')  # an ACK, then a resume
        got = await client.collect(lambda p: isinstance(p, str) and p.startswith("431"), 1)
        answer = json.loads(next(str(p) for p in got if str(p).startswith("431"))[3:])[0]
        assert answer["error"] == "not_found"  # answered here, after the failure
        assert "could not note what an inbound frame does" in caplog.text
    finally:
        await client.aclose()


@pytest.mark.parametrize("always_connect", [True, False], ids=["always-connect", "connect-then-reply"])
async def test_a_connect_answered_before_its_posts_answer_binds_its_principal(always_connect: bool) -> None:
    """Found by a run against open-webui with websockets off: python-socketio with ``always_connect``
    replies to a CONNECT before its connect handler runs, inside the POST, and open-webui's awaits
    its database; the reply went out on the GET before python-engineio answered the POST, when the
    CONNECT is noted, so no principal was ever bound: every frame unstamped, every resume
    ``not_found``. The one CONNECT the app read there, with none noted owed a reply, is the one
    the reply answers: noted then."""
    sio = socketio.AsyncServer(async_mode="asgi", async_handlers=False, always_connect=always_connect)
    gate = asyncio.Event()

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.enter_room(sid, room_of(auth["token"]))
        if always_connect:
            await gate.wait()  # (a token looked up in a database, while the reply is out)

    sio.on("connect", connect)
    async with serve(make_app(sio)) as url:
        client = PollingClient(url)
        opening = await client.get()
        client.sid = json.loads(str(opening[0])[1:])["sid"]
        posted = asyncio.create_task(client.post('40{"token":"alice"}'))
        await client.collect(lambda p: isinstance(p, str) and p.startswith("40{"), 1)
        gate.set()
        await posted
        await emit_tokens(sio, "alice", "m", 1, 5)
        packets = await client.collect(is_event, 5)
        assert [e["seq"] for e in event_args(packets)] == [1, 2, 3, 4, 5]
        replayed, answer = await resume_over_polling(client, {"message_id": "m", "last_seq": 3})
        assert (replayed, answer["ok"]) == ([4, 5], True), answer
        await client.aclose()


def _stamped(frames: list[Any], message_id: str) -> list[tuple[int, str]]:
    """(seq, content) of each stamped frame of ``message_id``, in the order they came."""
    out = []
    for event in event_args([f for f in frames if isinstance(f, str)]):
        if isinstance(event, dict) and event.get("message_id") == message_id and event.get("seq") is not None:
            out.append((event["seq"], event["data"]["data"].get("content", "")))
    return out


@pytest.mark.parametrize("reload", [True, False], ids=["reload", "new-tab"])
@pytest.mark.parametrize("other_leaves", [False, True], ids=["other-stays", "other-leaves"])
async def test_a_tab_joining_next_to_a_long_polling_tab_gets_each_frame_under_its_own_seq(
    backend: dict[str, Any], reload: bool, other_leaves: bool
) -> None:
    """Found by attack (21 of 40 runs, memory and Redis): alice has two long-polling tabs; one
    reloads as a websocket tab mid-stream and resumes (or a new tab resumes from 0). What the app
    had sent the other polling tab and python-engineio still held for its next GET was in no log:
    the replay ended before it, the new tab (which joined after it was emitted) logged its own live
    frames under its seqs (tok65 stamped 64, tok64 never received), and when the polling tab then
    went away it was lost from every view with gap: false. A replay, and a tab's first frames of a
    stream, now wait for the long-polling tabs of the user to log what they were sent before."""
    sio = make_sio()
    app = make_app(sio, write_timeout=2, **backend)
    async with serve(app) as url:
        stays = await PollingTab(url, "alice").start()
        leaves = await PollingTab(url, "alice").start()
        stream = PacedStream(sio, "alice", "m", 150, pace=0.006)
        emitter = asyncio.create_task(stream.run())
        await leaves.wait_count('"message_id":"m"', 50)
        await leaves.kill()
        seen = [e for e in event_args([p for p in leaves.packets if isinstance(p, str)]) if e.get("seq")]
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        request: dict[str, Any] = {"message_id": "m", "last_seq": 0}
        if reload:
            request = {"message_id": "m", "last_seq": seen[-1]["seq"], "epoch": seen[-1]["epoch"]}
        answer = await tab.request("resume-stream", request, ack_id=1)
        assert answer["ok"] is True
        assert answer["gap"] is False
        if other_leaves:  # after one more poll
            await stays.wait_count('"message_id":"m"', stays.count('"message_id":"m"') + 1)
            await stays.kill()
        await emitter
        await tab.wait_for(lambda f: isinstance(f, str) and '"done":true' in f, 30)
        got = _stamped(tab.frames, "m")
        wrong = [(seq, content) for seq, content in got if content != (f"tok{seq} " if seq <= 150 else "")]
        have = {content for _, content in got}
        if reload:
            have |= {content for _, content in _stamped(leaves.packets, "m")}
        missing = [token for token in stream.expected if token not in have]
        await tab.close()
        if not other_leaves:
            await stays.kill()
    assert wrong == [], (wrong, missing)  # each seq carries its own token
    assert missing == []  # and every token came, live or replayed


async def test_the_polling_registry_forgets_users_whose_sessions_ended() -> None:
    """Found by review: a user's entry in ``Runtime.polling_feeds`` went only when a tab of hers
    asked about her again; one who polled once and left kept it for the life of the process."""
    sio = make_sio()
    app = make_app(sio)
    async with serve(app) as url:
        for i in range(41):
            if i == 40:
                gc.collect()  # (the first 40 users' sessions are gone; the 41st comes)
            client = await PollingClient(url).open({"token": f"user{i}"})
            await sio.emit("events", chat_event("m", 1), room=room_of(f"user{i}"))
            await client.get()
            await client.post("1")  # goodbye: the session is over
            await client.aclose()
        kept = len(app.runtime.polling_feeds._by_principal)
    assert kept < 40, kept


async def test_a_tab_joining_while_a_long_polling_tabs_get_is_on_its_way_logs_after_what_it_was_sent(
    backend: dict[str, Any],
) -> None:
    """Found by review: a websocket tab's first frame of a stream waited for alice's long-polling
    tab, which held tok2 and tok3 unfed in python-engineio, only until that tab's next GET arrived;
    python-engineio answers it a few loop iterations later, and in those the new tab logged tok4
    as seq 2. The wait ends when that response is logged (or the GET is seen parked)."""
    sio = make_sio()
    await _a_tab_joins_while_a_polling_tabs_frames_wait_for_its_get(sio, make_app(sio, write_timeout=5, **backend))


def _layered(app: Any, layers: str) -> Any:
    """``app`` inside seven Starlette ``BaseHTTPMiddleware`` layers, or one that looks something up
    (1 ms of I/O) before it or before passing its response on."""

    async def passthrough(request: Any, call_next: Any) -> Any:
        return await call_next(request)

    async def looks_up_first(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(0.001)  # (a session store, say)
        await app(scope, receive, send)

    async def looks_up_after(scope: Any, receive: Any, send: Any) -> None:
        async def later(message: Any) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(0.001)  # (a session committed, say)
            await send(message)

        await app(scope, receive, later if scope["type"] == "http" else send)

    if layers == "io-first":
        return looks_up_first
    if layers == "io-after":
        return looks_up_after
    for _ in range(7):
        app = BaseHTTPMiddleware(app, dispatch=passthrough)
    return app


@pytest.mark.parametrize("layers", ["base-http-7", "io-first", "io-after"])
async def test_a_tab_joining_next_to_a_long_polling_tab_behind_the_apps_layers_logs_after_what_it_was_sent(
    layers: str,
) -> None:
    """Found by review: a GET not answered within 32 loop iterations was taken for one
    python-engineio keeps waiting; layers between the middleware and python-engineio take more
    (a ``BaseHTTPMiddleware`` about 5 each, one that awaits I/O any number, up to its I/O's time):
    the joining tab logged tok4 as seq 2 again. A GET counts as waiting only 0.1 s after the app
    read it too (a layer slower than that still can: docs/guarantees.md)."""
    sio = make_sio()
    app = ResumeMiddleware(_layered(socketio.ASGIApp(sio), layers), write_timeout=5)
    await _a_tab_joins_while_a_polling_tabs_frames_wait_for_its_get(sio, app)


async def _a_tab_joins_while_a_polling_tabs_frames_wait_for_its_get(sio: Any, app: ResumeMiddleware) -> None:
    """The scenario below, the polling tab's GET sent once the new tab's tok4 waits for it."""
    feeds = app.runtime.polling_feeds
    waiting = asyncio.Event()
    fed = feeds.fed

    async def watched(principal: str, since_ms: int, seconds: float, mine: Any = None) -> bool:
        if feeds.behind(principal, since_ms, mine):
            waiting.set()
        return await fed(principal, since_ms, seconds, mine)

    feeds.fed = watched  # type: ignore[method-assign]  # (seen, not changed)
    async with serve(app) as url:
        polling = await PollingClient(url).open({"token": "alice"})
        await _a_tab_joins_while_frames_wait_for_a_polling_tab(sio, url, polling, lambda: waiting.wait())
        await polling.aclose()


async def _a_tab_joins_while_frames_wait_for_a_polling_tab(
    sio: Any, url: str, polling: PollingClient, before_get: Any, pace: float = 0.0
) -> None:
    """tok1 reaches alice's polling tab (``pace`` s after it was sent); tok2 and tok3 wait in
    python-engineio for its next GET; a websocket tab joins and tok4 comes; after
    ``before_get()`` the polling tab asks: each of them carries its own seq, in both tabs."""
    await sio.emit("events", chat_event("m", 1), room=room_of("alice"))
    await asyncio.sleep(pace)  # (the client's pace, not a synchronisation)
    assert [e["seq"] for e in event_args(await polling.collect(is_event, 1))] == [1]
    for i in (2, 3):  # queued in python-engineio for the polling tab's next GET
        await sio.emit("events", chat_event("m", i), room=room_of("alice"))
    tab = await RawClient(url, auth={"token": "alice"}).connect()
    await sio.emit("events", chat_event("m", 4), room=room_of("alice"))
    await asyncio.wait_for(before_get(), 10)
    got = await polling.collect(is_event, 3)
    assert [(e.get("seq"), e["data"]["data"]["content"]) for e in event_args(got)] == [
        (2, "tok2 "),
        (3, "tok3 "),
        (4, "tok4 "),
    ]
    assert await tab.wait_seqs("m", 1) == [4]
    await tab.close()


async def test_long_polling_tabs_that_begin_a_stream_together_wait_for_no_one_but_each_other(
    backend: dict[str, Any],
) -> None:
    """Two long-polling tabs of alice get each stream's first frame in responses taken at once:
    each response waits for the other's to be logged (its first frame of the stream), and the one
    taken later lets the other go first; they used to wait for each other until the deadline."""
    sio = make_sio()
    app = make_app(sio, write_timeout=10, **backend)
    async with serve(app) as url:
        tabs = [await PollingTab(url, "alice").start() for _ in range(2)]
        for n in range(10):
            for i in (1, 2):
                await sio.emit("events", chat_event(f"s{n}", i), room=room_of("alice"))
            for tab in tabs:
                await tab.wait_count(f'"message_id":"s{n}"', 2, timeout=5)
        stamped = [[(e.get("message_id"), e.get("seq")) for e in event_args(tab.packets)] for tab in tabs]
        for tab in tabs:
            await tab.kill()
    expected = [(f"s{n}", i) for n in range(10) for i in (1, 2)]
    assert stamped == [expected, expected]
    assert faults(app) == {}


async def test_a_tab_joining_next_to_a_slow_long_polling_tab_waits_as_long_as_that_tab_takes_to_ask(
    backend: dict[str, Any],
) -> None:
    """A long-polling client far away (0.4 s between a response and its next GET: a phone on a
    slow network) was not waited for past 0.25 s: a websocket tab of the same user that joined
    meanwhile logged its frame under the seq of one python-engineio still held for the slow tab.
    A session is waited for as long as it has been taking to ask again (1 s at most)."""
    sio = make_sio()
    app = make_app(sio, write_timeout=5, **backend)
    async with serve(app) as url:
        polling = await PollingClient(url).open({"token": "alice"})
        for i in (1, 2, 3):  # (the slow client, as it shows itself: each GET 0.4 s after a response)
            await sio.emit("events", chat_event("warm-up", i), room=room_of("alice"))
            await asyncio.sleep(0.4)  # (the client's pace, not a synchronisation)
            await polling.collect(is_event, 1)
        await _a_tab_joins_while_frames_wait_for_a_polling_tab(sio, url, polling, lambda: asyncio.sleep(0.4), 0.4)
        await polling.aclose()


async def test_a_polling_tabs_response_waiting_in_the_feed_order_is_not_waited_for_by_the_tab_it_waits_for(
    backend: dict[str, Any],
) -> None:
    """Found by review: alice's polling tabs A and B; the app sends S#2 and then T#1 to B only,
    then S#3 to A only. B's response waited for A's (T#1 is its first frame of T), while A's waited
    in the feed order for B's S#2: each for the other, until the deadline. A response waiting in
    the feed order is not waited for."""
    sio = make_sio()
    app = make_app(sio, write_timeout=10, **backend)
    async with serve(app) as url:
        a = await PollingClient(url).open({"token": "alice"})
        b = await PollingClient(url).open({"token": "alice"})
        sids = {eio: sid for sid, eio in sio.manager.rooms["/"][room_of("alice")].items()}
        await sio.emit("events", chat_event("S", 1), room=room_of("alice"))
        await asyncio.gather(a.collect(is_event, 1), b.collect(is_event, 1))  # (both logged a moment ago)
        feed_a = app.sessions.get(a.sid).polling  # type: ignore[union-attr]
        feed_a.asks_again_s = 0.6  # (a slow client: waited for up to 0.9 s from its last response)
        await sio.emit("events", chat_event("S", 2), to=sids[b.sid])
        await sio.emit("events", chat_event("T", 1), to=sids[b.sid])
        await sio.emit("events", chat_event("S", 3), to=sids[a.sid])
        feed_b = app.sessions.get(b.sid).polling  # type: ignore[union-attr]
        got_b = asyncio.create_task(b.get())
        await until(lambda: feed_b.waits > 0, 5, every=0.005)  # B's response waits for A's
        got_a = await asyncio.wait_for(a.get(), 8)
        got = event_args(await asyncio.wait_for(got_b, 8)) + event_args(got_a)
        await a.aclose()
        await b.aclose()
    assert sorted((e["message_id"], e["seq"]) for e in got) == [("S", 2), ("S", 3), ("T", 1)]
    assert app.runtime.stats.order_waits_timed_out == 0
