"""The abuse target: point an attack at the middleware and check what it costs a bystander.

An attack is an async function of an :class:`Arena` (the served app, its URL, bob's connection),
listed in ``ATTACKS``. For each attack, on the memory log and on Redis, the test serves a
python-socketio app under uvicorn (every connection in its user's room; an ``ask`` event that
streams an answer under a message id the client chooses, as open-webui lets its frontend do),
connects bob on a raw websocket and streams him tokens every 5 ms for as long as the attack runs
(at least 100). Then it checks what the middleware promises bob whatever another client does:

- bob got every token once, in order, stamped 1..N, with his own content;
- his resume from 0 replays all N frames of his own view, ``gap: false``;
- his longest wait between two live tokens stayed under ``MAX_LIVE_GAP_S``;
- no resume request reached the app; the middleware and uvicorn logged nothing at ERROR;
- the process's RSS (server and clients) grew less than ``MAX_RSS_GROWTH_MIB``.

An attack asserts what it expects of its own answers (refusals, no foreign frames). To try a new
idea: write ``async def my_idea(arena: Arena) -> None`` below, add it to ``ATTACKS``, and run
``.venv/bin/python -m pytest tests/test_attacks.py -k my_idea``. Issue-specific floods with their
own bounds are in ``test_abuse_bounds.py``, ``test_replay_pressure.py`` and ``test_security.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import socketio
import websockets

from tests.support.app import chat_event, faults, make_app, make_sio, room_of
from tests.support.raw import RawClient
from tests.support.redis_server import RedisServer
from tests.support.server import serve
from tests.test_abuse_bounds import rss_mib

pytestmark = pytest.mark.anyio

MAX_LIVE_GAP_S = 1.0  # a bystander's tokens come every 5 ms; a loaded 2-core machine stays far below
MAX_RSS_GROWTH_MIB = 50.0
_prefixes = itertools.count()


@dataclass
class Arena:
    url: str
    sio: socketio.AsyncServer
    bob: RawClient
    reached_app: list[Any] = field(default_factory=list)  # resume requests the app was given


def contents(client: RawClient, message_id: str) -> list[str]:
    return [
        e["data"]["data"]["content"]
        for e in client.events()
        if isinstance(e, dict) and e.get("message_id") == message_id and isinstance(e.get("data"), dict)
    ]


# -- attacks --------------------------------------------------------------------------------------


async def hostile_resume_requests(arena: Arena) -> None:
    """Resume requests no client should send: each is answered as refused, none reaches the app."""
    mallory = await RawClient(arena.url, auth={"token": "mallory"}).connect()
    bad = [
        {"message_id": "\ud800", "last_seq": 0},  # a lone surrogate (legal JSON)
        {"message_id": "b", "last_seq": 0, "epoch": "\ud800"},
        {"message_id": "x" * 100_000, "last_seq": 0},
        {"message_id": {"nested": [[[[["deep"]]]]]}, "last_seq": 0},
        {"message_id": "b", "last_seq": -1},
        {"message_id": "b", "last_seq": 10**30},
        {"message_id": "b", "last_seq": 0, "epoch": "e" * 10_000},
        "not an object",
    ]
    for ack_id, request in enumerate(bad, start=1):
        answer = await mallory.request("resume-stream", request, ack_id=ack_id)
        assert answer["ok"] is False, (request, answer)
    # mallory asks for bob's stream id: her own view of it, which holds nothing
    answer = await mallory.request("resume-stream", {"message_id": "b", "last_seq": 0}, ack_id=90)
    assert (answer["ok"], answer["error"]) == (False, "not_found"), answer
    # an ack id longer than python-socketio reads, and a binary resume: answered, not passed on
    await mallory.send('421234567890123456789["resume-stream",{"message_id":"b","last_seq":0}]')
    await mallory.send('451-91["resume-stream",{"message_id":"b","last_seq":0,"x":{"_placeholder":true,"num":0}}]')
    await mallory.send(b"\x00attachment")
    await mallory.wait_count(lambda f: isinstance(f, str) and f.startswith("4391["), 1)
    assert not any("bob" in c for c in contents(mallory, "b"))
    await mallory.close()


async def the_same_message_id_as_bob(arena: Arena) -> None:
    """mallory has the app stream her an answer under bob's message id (she chose it), and resumes it:
    her view is hers alone, and nothing of hers enters bob's (the harness checks bob's side)."""
    mallory = await RawClient(arena.url, auth={"token": "mallory"}).connect()
    await mallory.request("ask", {"message_id": "b", "tokens": 30}, ack_id=1)
    seqs = await mallory.wait_seqs("b", 31)
    assert seqs == list(range(1, 32))
    answer = await mallory.request("resume-stream", {"message_id": "b", "last_seq": 0}, ack_id=2)
    assert (answer["ok"], answer["replayed"], answer["gap"]) == (True, 31, False), answer
    assert not any("bob" in c for c in contents(mallory, "b"))
    await mallory.close()


async def connection_churn(arena: Arena) -> None:
    """200 websocket connections, anonymous and named, cut without a close mid-CONNECT or after it."""
    for i in range(200):
        client = RawClient(arena.url, auth={"token": f"churn{i % 7}"} if i % 2 else None)
        await client.connect()
        if i % 3 == 0:
            await client.emit("resume-stream", {"message_id": "b", "last_seq": 0}, ack_id=1)
        await client.kill()


async def a_leaked_sid(arena: Arena) -> None:
    """bob's Engine.IO sid leaked: POSTs to it by polling (python-engineio answers 400) neither rebind
    his principal nor make the middleware answer on his connection."""
    sid = arena.bob.eio_sid
    url = arena.url + f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    async with httpx.AsyncClient() as http:
        for body in ['40{"token":"mallory"}', '42["resume-stream",{"message_id":"b","last_seq":0}]']:
            for _ in range(10):
                response = await http.post(url, content=body)
                assert response.status_code == 400, response.text


async def polling_resume_flood(arena: Arena) -> None:
    """20 polling sessions, each POSTing bodies of 16 resume requests (python-engineio's most) as fast as
    it can for bob's stream id and its own: refused past the rate limit, never replaying bob's."""

    async def one(i: int) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            base = arena.url + "/socket.io/?EIO=4&transport=polling"
            opening = await http.get(base)
            sid = json.loads(opening.text[1:])["sid"]
            url = f"{base}&sid={sid}"
            await http.post(url, content="40" + json.dumps({"token": f"flood{i}"}))
            packet = '42["resume-stream",{"message_id":"b","last_seq":0}]'
            for _ in range(10):
                await http.post(url, content="\x1e".join([packet] * 16))
                got = await http.get(url)
                assert "bob" not in got.text

    await asyncio.gather(*(one(i) for i in range(20)))


async def websocket_garbage(arena: Arena) -> None:
    """Binary frames, attachments with no header, broken packets, deep nesting and a huge text frame,
    each on a websocket of its own, then a resume request. python-socketio itself drops a connection
    over some of these (its parser raises); the middleware answers the request on every other one."""
    url = arena.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    garbage: list[str | bytes] = [b"\x00" * 1000, "451-", "45999999999-[]", "4" + "[" * 10_000, "42" + "x" * 900_000]
    answered = 0
    for frame in garbage:
        async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
            await ws.recv()
            await ws.send('40{"token":"mallory"}')
            await ws.recv()
            await ws.send(frame)
            await ws.send('423["resume-stream",{"message_id":"b","last_seq":0}]')
            try:
                while True:
                    got = await asyncio.wait_for(ws.recv(), 10)
                    assert not (isinstance(got, str) and "bob" in got)
                    if isinstance(got, str) and got.startswith("433["):
                        answered += 1
                        break
            except websockets.ConnectionClosed:
                pass  # the app's parser gave up on this connection
    assert answered >= 2  # (the huge frame and the unknown ack: python-socketio reads past them)


async def namespace_floods(arena: Arena) -> None:
    """One connection CONNECTs to 3,000 made-up namespaces (python-socketio refuses each), then again
    to "/" where it is in already: it keeps its own stream. (What refused CONNECTs leave behind is
    counted exactly in ``test_namespaces.py``: here the attacker's own copies of the refusals would
    weigh as much in this process's RSS.)"""
    mallory = await RawClient(arena.url, auth={"token": "mallory"}).connect()
    for i in range(3000):
        await mallory.send(f"40/{i:05d}{'x' * 1000},{{}}")
    await mallory.send('40{"token":"mallory"}')
    await mallory.wait_for(lambda f: isinstance(f, str) and f.startswith("44/02999"), timeout=60)
    assert await mallory.request("ask", {"message_id": "m", "tokens": 5}, ack_id=1) == "ok"
    assert await mallory.wait_seqs("m", 6) == [1, 2, 3, 4, 5, 6]
    await mallory.close()


ATTACKS: list[Callable[[Arena], Awaitable[None]]] = [
    hostile_resume_requests,
    the_same_message_id_as_bob,
    connection_churn,
    a_leaked_sid,
    polling_resume_flood,
    websocket_garbage,
    namespace_floods,
]


# -- the harness ----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def log_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"redis_url": server.url, "key_prefix": f"attack{next(_prefixes)}", "secret": "s"}


def app_of(reached_app: list[Any]) -> socketio.AsyncServer:
    sio = make_sio()

    @sio.on("ask")
    async def ask(sid: str, arg: Any) -> str:
        """Streams ``arg["tokens"]`` tokens and a done frame to the asker's user, under ``arg["message_id"]``."""
        (user,) = [room[len("user:") :] for room in sio.rooms(sid) if room.startswith("user:")]
        message_id, count = str(arg["message_id"]), int(arg["tokens"])
        for i in range(1, count + 1):
            await sio.emit("events", chat_event(message_id, i, content=f"{user}{i} "), room=room_of(user))
        await sio.emit("events", chat_event(message_id, count + 1, done=True), room=room_of(user))
        return "ok"

    @sio.on("resume-stream")
    async def resume(sid: str, *args: Any) -> None:  # the middleware answers these: never called
        reached_app.append(args)

    return sio


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.__name__ for a in ATTACKS])
async def test_an_attack_costs_a_bystander_nothing(
    attack: Callable[[Arena], Awaitable[None]], log_settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    reached_app: list[Any] = []
    sio = app_of(reached_app)
    app = make_app(sio, **log_settings)
    async with serve(app) as url:
        bob = await RawClient(url, auth={"token": "bob"}).connect()
        arena = Arena(url, sio, bob, reached_app)
        rss_before = rss_mib()
        attacking = asyncio.create_task(attack(arena))
        sent = 0
        while sent < 100 or not attacking.done():
            sent += 1
            await sio.emit("events", chat_event("b", sent, content=f"bob{sent} "), room=room_of("bob"))
            await asyncio.sleep(0.005)  # a model's pace, not synchronisation
        await attacking  # (its own assertions)
        await sio.emit("events", chat_event("b", sent + 1, done=True), room=room_of("bob"))
        seqs = await bob.wait_seqs("b", sent + 1, timeout=30)
        rss_growth = rss_mib() - rss_before

        assert seqs == list(range(1, sent + 2)), f"bob's live stream: every token once, in order {faults(app)}"
        assert contents(bob, "b") == [f"bob{i} " for i in range(1, sent + 1)] + [""]
        answer = await bob.request("resume-stream", {"message_id": "b", "last_seq": 0}, ack_id=1)
        assert (answer["ok"], answer["replayed"], answer["gap"]) == (True, sent + 1, False), (answer, faults(app))
        assert contents(bob, "b")[sent + 1 :] == [f"bob{i} " for i in range(1, sent + 1)] + [""]
        times = [t for f, t in zip(bob.frames, bob.arrived, strict=True) if isinstance(f, str) and '"bob' in f]
        live_gap = max(b - a for a, b in itertools.pairwise(times[:sent]))  # (the live tokens, not the replay)
        assert live_gap < MAX_LIVE_GAP_S, f"bob waited {live_gap:.3f} s for a live token"
        assert reached_app == []
        assert rss_growth < MAX_RSS_GROWTH_MIB, f"RSS +{rss_growth:.1f} MiB"
        await bob.close()
    # the middleware's and the server's (python-engineio logs errors of its own about hostile requests)
    errors = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("asgi_resume", "uvicorn")
    ]
    assert errors == []
