"""A long-polling client that vanishes: no silent hole in a stream, no recovery that misses events.

A polling client's frames reach the middleware only when the client fetches them: what the app
emits while it is away waits in python-engineio's queue for a GET that never comes, and is in no
log. The middleware must learn that the session ended (the client left mid-poll, its stale sid was
refused, it stopped polling, it said goodbye) and treat it as the websocket transport treats a
closed connection; and a recovery claim of such a session must not say ``recovered`` unless every
event since the offset was fetched. A real python-socketio app under uvicorn, hand-written polling
clients (exact packets), a websocket client as the user's next tab; the memory log and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import socketio
import websockets
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_resume import ResumeMiddleware
from asgi_resume.log import StreamLog
from asgi_resume.log.base import CLAIM_SLACK_MS, LogLimits, SessionAppend
from asgi_resume.log.memory import MemoryLog
from asgi_resume.log.names import new_generation
from asgi_resume.log.redis import RedisLog
from asgi_resume.transport.engineio import query_param
from tests.support.app import chat_event, emit_tokens, make_sio, room_of
from tests.support.logs import watch_logs
from tests.support.polling import PollingClient, event_args, is_event
from tests.support.raw import RawClient
from tests.support.redis_server import RedisServer
from tests.support.server import serve
from tests.test_polling import resume_over_polling

pytestmark = pytest.mark.anyio
_prefixes = itertools.count()
FAST_PINGS = {"ping_interval": 0.5, "ping_timeout": 1.0}  # python-engineio gives up on a silent client in ~1.5 s


@pytest.fixture(params=["memory", "redis"])
def log_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"redis_url": server.url, "key_prefix": f"vanish{next(_prefixes)}"}


class AppRequests:
    """Between the middleware and the app: the polling GETs the app is serving, per Engine.IO sid.

    Tells when the app has a client's GET (its poll waits in python-engineio), when the server
    saw that GET's client go away before its response, and when the app has answered it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app  # (the middleware finds python-engineio's settings through .app)
        self.serving: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.left: Counter[str] = Counter()
        self._changed = asyncio.Condition()

    async def wait(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(condition)

    async def _count(self, counter: Counter[str], sid: str, by: int = 1) -> None:
        async with self._changed:
            counter[sid] += by
            self._changed.notify_all()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sid = query_param(scope, "sid") if scope["type"] == "http" else None
        if sid is None or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        read = asyncio.Event()
        complete = False

        async def app_receive() -> Message:
            message = await receive()
            if not message.get("more_body"):
                read.set()
            return message

        async def app_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        async def watch() -> None:
            await read.wait()
            await receive()  # http.disconnect: the client left, or the response is complete
            if not complete:
                await self._count(self.left, sid)

        watcher = asyncio.create_task(watch())
        await self._count(self.serving, sid)
        try:
            await self.app(scope, app_receive, app_send)
        finally:
            watcher.cancel()
            await self._count(self.serving, sid, -1)
            await self._count(self.answered, sid)


@dataclass
class Served:
    sio: socketio.AsyncServer
    app: ResumeMiddleware
    requests: AppRequests
    url: str


@pytest.fixture
async def served(request: pytest.FixtureRequest, log_settings: dict[str, Any]) -> AsyncIterator[Served]:
    """The app with the middleware (``indirect`` parameters: python-socketio's and the middleware's options)."""
    options: dict[str, Any] = getattr(request, "param", {})
    sio = make_sio(**options.get("sio", {}))
    requests = AppRequests(socketio.ASGIApp(sio))
    app = ResumeMiddleware(requests, **log_settings, **options.get("middleware", {}))
    async with serve(app) as url:
        yield Served(sio, app, requests, url)


class Poller(PollingClient):
    """A polling client that answers python-engineio's pings, as real clients do, and keeps its CONNECT reply."""

    connect_reply: str = ""
    events: list[Any]

    async def open(self, auth: dict[str, Any] | None = None) -> Poller:
        self.events = []
        opening = await PollingClient.get(self)
        assert isinstance(opening[0], str), opening
        assert opening[0].startswith("0"), opening
        self.sid = json.loads(opening[0][1:])["sid"]
        await self.post("40" + json.dumps(auth))
        while not self.connect_reply:
            for packet in await self.get():
                if isinstance(packet, str) and packet.startswith("40{") and '"sid"' in packet:
                    self.connect_reply = packet
        return self

    async def get(self) -> list[str | bytes]:
        packets = await PollingClient.get(self)
        if "2" in packets:
            await self.post("3")
        self.events += [p for p in packets if is_event(p)]
        return packets

    @property
    def pid(self) -> str:
        return str(json.loads(self.connect_reply[2:])["pid"])


def sid_of(sio: socketio.AsyncServer, token: str) -> str:
    (sid,) = [sid for sid, _ in sio.manager.get_participants("/", room_of(token))]
    return str(sid)


async def leave_mid_poll(served: Served, client: PollingClient) -> None:
    """The client goes away while its GET waits in python-engineio (a reload, a closed tab)."""
    poll = asyncio.create_task(client.get())
    await served.requests.wait(lambda: served.requests.serving[client.sid] == 1)
    poll.cancel()
    await client.aclose()
    await served.requests.wait(lambda: served.requests.left[client.sid] == 1)  # the server saw it go


# -- recovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("served", "engineio_gave_up"),
    [({"middleware": {"recovery": True}}, False), ({"sio": FAST_PINGS, "middleware": {"recovery": True}}, True)],
    indirect=["served"],
    ids=["back-at-once", "back-after-the-ping-timeout"],
)
async def test_a_polling_client_that_vanished_is_not_told_it_recovered(served: Served, engineio_gave_up: bool) -> None:
    """Issue 13 (3): it used to get ``recovered`` and none of the 10 events emitted meanwhile."""
    sio = served.sio
    alice = await Poller(served.url).open({"token": "alice"})
    sid = sid_of(sio, "alice")
    await sio.emit("events", chat_event("r", 1), room=room_of("alice"))
    await alice.collect(is_event, 1)
    offset = json.loads(str(alice.events[-1])[2:])[-1]
    # alice stops polling: her network is gone
    for i in range(2, 12):
        await sio.emit("events", chat_event("r", i), room=room_of("alice"))
    if engineio_gave_up:
        await sio.disconnects.wait(sid)
    back = await Poller(served.url).open({"token": "alice", "pid": alice.pid, "offset": offset})
    replayed = [e["data"]["data"]["content"] for e in event_args(back.events)]
    if back.pid == alice.pid:  # recovered: then with every event since the offset
        assert replayed == [f"tok{i} " for i in range(2, 12)]
    assert back.pid != alice.pid  # none of them was fetched: nothing can prove them delivered
    assert served.app.runtime.stats.recoveries_ok == 0
    await back.aclose()
    await alice.aclose()


@pytest.mark.parametrize("served", [{"middleware": {"recovery": True}}], indirect=True)
async def test_a_client_that_upgraded_from_polling_still_recovers(served: Served) -> None:
    """socket.io-client starts on polling and upgrades: its session, born on polling, is a websocket
    connection's from then on, whose silence means there was nothing to send."""
    sio = served.sio
    alice = await Poller(served.url).open({"token": "alice"})
    await sio.emit("events", chat_event("u", 1), room=room_of("alice"))
    await alice.collect(is_event, 1)
    offset = json.loads(str(alice.events[-1])[2:])[-1]
    url = served.url.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&sid={alice.sid}"
    async with websockets.connect(url, ping_interval=None) as ws:
        await ws.send("2probe")
        assert await ws.recv() == "3probe"
        await ws.send("5")  # upgraded
        assert await ws.recv() == "6"  # python-engineio's writer runs on the websocket now
        ws.transport.abort()  # the network drops: no event since the upgrade
    back = await RawClient(served.url, auth={"token": "alice", "pid": alice.pid, "offset": offset}).connect()
    reply = next(f for f in back.frames if isinstance(f, str) and f.startswith("40{"))
    assert json.loads(reply[2:])["pid"] == alice.pid  # recovered: nothing was missed
    assert served.app.runtime.stats.recoveries_ok == 1
    await back.close()
    await alice.aclose()


# -- streams ----------------------------------------------------------------------------------


async def follow(served: Served, token: str, stream: str, count: int) -> tuple[Poller, dict[str, Any]]:
    """A polling client that got the first ``count`` frames of ``stream``; its last frame."""
    client = await Poller(served.url).open({"token": token})
    await emit_tokens(served.sio, token, stream, 1, count)
    await client.collect(is_event, count)
    last = event_args(client.events)[-1]
    assert last["seq"] == count
    return client, last


async def resumed_by_a_new_tab(served: Served, stream: str, last: dict[str, Any], first: int) -> dict[str, Any]:
    """The user's next tab gets two more frames live, then resumes from what the polling client had."""
    tab = await RawClient(served.url, auth={"token": "alice"}).connect()
    await emit_tokens(served.sio, "alice", stream, first, first + 1)
    await tab.wait_seqs(stream, 2)
    answer: dict[str, Any] = await tab.request(
        "resume-stream", {"message_id": stream, "last_seq": last["seq"], "epoch": last["epoch"]}, ack_id=1
    )
    await tab.close()
    return answer


async def test_a_stream_whose_polling_client_left_mid_poll_resumes_with_a_gap(served: Served) -> None:
    """The client leaves while its GET waits (a reload): the frames emitted after the one that GET
    carried are in no log, so the next tab's resume must say ``gap``, not replay a history without them."""
    alice, last = await follow(served, "alice", "s", 3)
    await leave_mid_poll(served, alice)
    answered = served.requests.answered[alice.sid]
    await emit_tokens(served.sio, "alice", "s", 4, 4)  # the waiting GET returns it: logged, never read
    await served.requests.wait(lambda: served.requests.answered[alice.sid] > answered)
    await emit_tokens(served.sio, "alice", "s", 5, 8)  # wait in python-engineio for a GET that never comes
    answer = await resumed_by_a_new_tab(served, "s", last, 9)
    assert answer["ok"] is True
    assert answer["gap"] is True  # it used to say false: seq 4 was tok4, seq 5 tok9, tok5-8 missing
    assert answer["epoch"] != last["epoch"]


@pytest.mark.parametrize("served", [{"sio": FAST_PINGS}], indirect=True)
async def test_a_polling_client_back_after_its_session_timed_out_resumes_with_a_gap(served: Served) -> None:
    """Its network died mid-stream: python-engineio gave up on it; back online, its stale sid is
    refused and it connects again (as socket.io-client does): the frames meanwhile are in no log."""
    alice, last = await follow(served, "alice", "s", 3)
    sid = sid_of(served.sio, "alice")
    await emit_tokens(served.sio, "alice", "s", 4, 8)  # queued for alice, who polls no more
    await served.sio.disconnects.wait(sid)
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await alice.get()
    assert refused.value.response.status_code == 400
    await alice.aclose()
    back = await Poller(served.url).open({"token": "alice"})
    await emit_tokens(served.sio, "alice", "s", 9, 10)
    await back.collect(is_event, 2)
    _, answer = await resume_over_polling(back, {"message_id": "s", "last_seq": 3, "epoch": last["epoch"]})
    assert answer["ok"] is True
    assert answer["gap"] is True  # it used to say false, and replay tok9 and tok10 as seq 4 and 5
    assert answer["epoch"] != last["epoch"]
    await back.aclose()


@pytest.mark.parametrize("served", [{"sio": FAST_PINGS}], indirect=True)
async def test_a_stream_whose_polling_client_stopped_polling_resumes_with_a_gap(served: Served) -> None:
    """Its network died and it never comes back: the user's other tab, after python-engineio gave up
    on it, picks the stream up: the frames emitted in between are in no log."""
    alice, last = await follow(served, "alice", "s", 3)
    sid = sid_of(served.sio, "alice")
    with watch_logs() as logs:
        await emit_tokens(served.sio, "alice", "s", 4, 8)
        await served.sio.disconnects.wait(sid)
        with contextlib.suppress(TimeoutError):  # (the middleware did not use to notice at all)
            await logs.wait_for("it stopped polling", timeout=5)
    answer = await resumed_by_a_new_tab(served, "s", last, 9)
    assert answer["ok"] is True
    assert answer["gap"] is True
    assert answer["epoch"] != last["epoch"]
    await alice.aclose()


async def test_a_stream_whose_polling_client_went_silent_resumes_with_a_gap_before_the_ping_timeout(
    served: Served,
) -> None:
    """Its network dropped without a close; the user's other tab resumes long before python-engineio's
    ping timeout (45 s here) ends the session: the frames queued for the silent client are in no log.
    It used to answer ``gap: false`` and a history without them until that timeout."""
    alice, last = await follow(served, "alice", "s", 3)
    sid = sid_of(served.sio, "alice")
    with watch_logs() as logs:
        await emit_tokens(served.sio, "alice", "s", 4, 8)  # queued for alice, who polls no more
        await logs.wait_for("sent no request for", timeout=10)
    assert sid_of(served.sio, "alice") == sid  # python-engineio still waits for her
    answer = await resumed_by_a_new_tab(served, "s", last, 9)
    assert answer["ok"] is True
    assert answer["gap"] is True
    assert answer["epoch"] != last["epoch"]
    await alice.aclose()


async def test_a_silent_polling_client_that_comes_back_continues_its_stream(served: Served) -> None:
    """Silent long enough to be flagged, then back (a slow network): nothing was lost, and its own
    next GET logs what waited for it in the same epoch, so a resume afterwards has no gap."""
    alice, last = await follow(served, "alice", "s", 3)
    with watch_logs() as logs:
        await emit_tokens(served.sio, "alice", "s", 4, 8)
        await logs.wait_for("sent no request for", timeout=10)
    await alice.collect(is_event, 5)
    frames = event_args(alice.events)
    assert [f["seq"] for f in frames] == list(range(1, 9))
    assert {f["epoch"] for f in frames} == {last["epoch"]}
    answer = await resumed_by_a_new_tab(served, "s", last, 9)
    assert answer["ok"] is True
    assert answer["gap"] is False
    assert answer["epoch"] == last["epoch"]
    assert (answer["replayed"], answer["last_seq"]) == (7, 10)  # tok4-8 as alice got them, then tok9 and tok10
    await alice.aclose()


async def test_a_stream_whose_polling_client_said_goodbye_mid_stream_resumes_with_a_gap(served: Served) -> None:
    """socket.disconnect() mid-stream (a closed tab): the app forgets the connection at once."""
    alice, last = await follow(served, "alice", "s", 3)
    sid = sid_of(served.sio, "alice")
    await alice.post("1")
    await served.sio.disconnects.wait(sid)
    await emit_tokens(served.sio, "alice", "s", 4, 8)  # to nobody
    answer = await resumed_by_a_new_tab(served, "s", last, 9)
    assert answer["ok"] is True
    assert answer["gap"] is True
    assert answer["epoch"] != last["epoch"]
    await alice.aclose()


# -- the session log's rule, on each backend directly ---------------------------------------------


@pytest.fixture
async def log(log_settings: dict[str, Any]) -> AsyncIterator[StreamLog]:
    limits = LogLimits(maxlen=500, ttl_ms=60_000, done_ttl_ms=5_000)
    made: StreamLog = MemoryLog(limits)
    if log_settings:
        made = RedisLog.from_url(log_settings["redis_url"], prefix=log_settings["key_prefix"], limits=limits)
    yield made
    await made.aclose()


@pytest.mark.parametrize("fetched", [True, False], ids=["polling-owner", "websocket-owner"])
async def test_a_claim_reads_a_fetching_owners_log_only_once_it_logged_past_the_claim(
    log: StreamLog, fetched: bool
) -> None:
    """A silent websocket had nothing to log; a polling client that stopped fetching may have had."""
    pid, gen, principal = "p" * 24, new_generation(), "alice-hash"

    def batch(owner: str, text: str, flushed_ms: int) -> SessionAppend:
        return SessionAppend(pid, gen, owner, principal, "/", [(log.now_ms(), [text])], flushed_ms, fetched, True)

    assert [r.status for r in await log.session_append([batch("old", "a", log.now_ms())])] == ["ok"]
    assert (await log.session_claim(pid, principal, "/", gen, "new", new_generation(), 60_000)).status == "ok"
    assert (await log.session_read(pid, gen, 0, False)).status == "wait"
    forced = await log.session_read(pid, gen, 0, True)
    if not fetched:
        assert forced.status == "ok"
        return
    assert forced.status == "incomplete"
    # the old connection logs a batch it took after the claim: everything the app sent it before is in
    (late,) = await log.session_append([batch("old", "b", log.now_ms() + CLAIM_SLACK_MS + 5)])
    assert late.status == "taken"
    read = await log.session_read(pid, gen, 0, True)
    assert read.status == "ok"
    assert [payload for _, _, payload in read.frames] == [["a"], ["b"]]
