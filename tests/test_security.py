"""Abuse: resume floods, forged epochs, guessed ids, and clients trying to write into a stream's log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from typing import Any

import httpx
import pytest
import socketio
import websockets
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from asgi_resume import ResumeMiddleware, protocol
from asgi_resume.pipeline.connection import Connection, UnnotedConnect
from asgi_resume.principal import _plain
from tests.conftest import Stack
from tests.support.app import chat_event, emit_tokens, make_app, make_sio, room_of
from tests.support.polling import PollingClient, event_args, is_event
from tests.support.raw import RawClient
from tests.support.server import serve
from tests.support.waits import until

pytestmark = pytest.mark.anyio


async def _streamed_to_alice(url: str, sio: socketio.AsyncServer, path: str = "/socket.io/") -> RawClient:
    """Alice's tab, sent 5 frames of stream ``m``."""
    owner = await RawClient(url, auth={"token": "alice"}, path=path).connect()
    await emit_tokens(sio, "alice", "m", 1, 5)
    await owner.wait_seqs("m", 5)
    return owner


async def _session(url: str, path: str = "/socket.io/") -> PollingClient:
    """A long-polling session, connected to no namespace yet."""
    client = PollingClient(url, path=path)
    opening = await client.get()
    client.sid = json.loads(str(opening[0])[1:])["sid"]
    return client


async def _replays_nothing(client: PollingClient, params: dict[str, str] | None = None) -> None:
    """``client`` resumes alice's stream ``m`` from 0 and gets none of it: ``not_found`` (its own
    log). ``params``: the query of the POST that asks, if not the client's own."""
    resume = '421["resume-stream",{"message_id":"m","last_seq":0}]'
    if params is None:
        await client.post(resume)
    else:
        await client.http.post(client.url, params=params, content=resume)
    got = await client.collect(lambda p: isinstance(p, str) and p.startswith("431"), 1)
    answer = next(p for p in got if isinstance(p, str) and p.startswith("431"))
    assert json.loads(answer[3:])[0]["error"] == "not_found"
    assert not [p for p in got if isinstance(p, str) and '"seq"' in p]


async def test_resume_requests_are_rate_limited_per_connection(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, resume_limit=5, **backend)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        await emit_tokens(sio, "alice", "m", 1, 3)
        await client.wait_seqs("m", 3)
        answers = [
            await client.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=i) for i in range(8)
        ]
        assert [a["ok"] for a in answers] == [True] * 5 + [False] * 3
        assert answers[-1]["error"] == "rate_limited"
        assert app.runtime.stats.resumes_rate_limited == 3
        assert len(client.seqs("m")) == 3 + 5 * 3  # only the allowed ones replayed
        # the live stream is not affected, and another connection has its own budget
        await emit_tokens(sio, "alice", "m", 4, 4)
        await client.wait_seqs("m", 3 + 15 + 1)
        other = await RawClient(url, auth={"token": "alice"}).connect()
        assert (await other.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1))["ok"]
        for c in (client, other):
            await c.close()


async def test_a_forged_epoch_does_not_open_another_users_stream(stack: Stack) -> None:
    alice = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "private", 1, 3)
    await alice.wait_seqs("private", 3)
    epoch = alice.events()[0]["epoch"]
    mallory = await RawClient(stack.url, auth={"token": "mallory"}).connect()
    for request in (
        {"message_id": "private", "last_seq": 0, "epoch": epoch},
        {"message_id": "private", "last_seq": 0, "epoch": "x" * 64},
        {"message_id": "private", "last_seq": 10**15},
    ):
        assert (await mallory.request("resume-stream", request, ack_id=1)) == {
            "message_id": "private", "ok": False, "error": "not_found",
        }  # fmt: skip
    assert mallory.events() == []
    await alice.close()
    await mallory.close()


async def test_clients_cannot_write_into_a_streams_log(stack: Stack) -> None:
    """Only what the app sends is logged: frames a client sends never reach the log."""
    alice = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "target", 1, 2)
    await alice.wait_seqs("target", 2)
    mallory = await RawClient(stack.url, auth={"token": "mallory"}).connect()
    forged = chat_event("target", 666)
    forged["data"]["data"]["content"] = "injected"
    await mallory.emit("events", forged)
    await mallory.send('451-["events",{"message_id":"target","seq":3},{"_placeholder":true,"num":0}]')
    await mallory.send(b"\x00junk")
    await stack.sio.emit("events", chat_event("target", 3), room=room_of("alice"))
    await alice.wait_seqs("target", 3)
    answer = await alice.request("resume-stream", {"message_id": "target", "last_seq": 0}, ack_id=1)
    assert answer["replayed"] == 3
    assert "injected" not in "".join(str(f) for f in alice.frames)
    await alice.close()
    await mallory.close()


async def test_a_flood_of_garbage_does_not_stall_the_stream(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    flood = asyncio.gather(*(client.send('42["resume-stream",' + "[" * 200 + "]" * 200 + "]") for _ in range(200)))
    await flood
    await emit_tokens(stack.sio, "alice", "after", 1, 5)
    assert await client.wait_seqs("after", 5) == [1, 2, 3, 4, 5]
    await client.close()


async def test_a_user_who_reuses_a_message_id_neither_reads_nor_writes_the_victims_stream(stack: Stack) -> None:
    """The browser chooses message ids: mallory asks the app for a completion under alice's id."""
    victim = await RawClient(stack.url, auth={"token": "alice"}).connect()
    mallory = await RawClient(stack.url, auth={"token": "mallory"}).connect()
    await emit_tokens(stack.sio, "alice", "shared-id", 1, 30)
    await victim.wait_seqs("shared-id", 30)
    await emit_tokens(stack.sio, "mallory", "shared-id", 1, 5)  # her own frames under the same id
    assert await mallory.wait_seqs("shared-id", 5) == [1, 2, 3, 4, 5]  # her own view, from 1

    stolen = await mallory.request("resume-stream", {"message_id": "shared-id", "last_seq": 0}, ack_id=1)
    assert stolen["replayed"] == 5  # hers only: none of the victim's 30
    contents = [e["data"]["data"]["content"] for e in mallory.events() if e.get("message_id") == "shared-id"]
    assert contents[5:] == contents[:5]

    own = await victim.request("resume-stream", {"message_id": "shared-id", "last_seq": 0}, ack_id=1)
    assert own["replayed"] == 30  # nothing mallory received entered the victim's log
    replayed = [e["data"]["data"]["content"] for e in victim.events()[30:]]
    assert replayed == [f"tok{i} " for i in range(1, 31)]
    await victim.close()
    await mallory.close()


async def test_a_refused_connect_cannot_replay(stack: Stack) -> None:
    """The principal is bound when the app accepts the CONNECT, never from one it refused."""
    owner = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m", 1, 10)
    await owner.wait_seqs("m", 10)
    refused = await RawClient(stack.url, auth={"token": "alice", "refuse": True}).connect(namespaces=())
    await refused.send('40{"token":"alice","refuse":true}')
    await refused.wait_for(lambda f: isinstance(f, str) and f.startswith("44"))
    answer = await refused.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
    assert answer["error"] == "not_found"
    assert not [f for f in refused.frames if isinstance(f, str) and '"seq"' in f]
    # nor on a namespace the app does not have
    await refused.send('40/nowhere,{"token":"alice"}')
    await refused.wait_for(lambda f: isinstance(f, str) and f.startswith("44/nowhere,"))
    answer = await refused.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=2, namespace="/nowhere")
    assert answer["error"] == "not_found"
    await owner.close()
    await refused.close()


async def test_a_principal_is_never_rebound(stack: Stack) -> None:
    """A second CONNECT in a namespace (another user's token) does not change who the connection is."""
    owner = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m", 1, 3)
    await owner.wait_seqs("m", 3)
    mallory = await RawClient(stack.url, auth={"token": "mallory"}).connect()
    await mallory.send('40{"token":"alice"}')
    answer = await mallory.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
    assert answer["error"] == "not_found"
    await owner.close()
    await mallory.close()


async def test_a_leaked_sid_of_a_websocket_session_is_not_ours_to_read(stack: Stack) -> None:
    """python-engineio refuses polling POSTs for a websocket session: the middleware does not act on them."""
    victim = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m", 1, 20)
    await victim.wait_seqs("m", 20)
    resume = '421["resume-stream",{"message_id":"m","last_seq":0}]'
    body = "\x1e".join(['40{"token":"mallory"}'] + [resume] * 25)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            stack.url + "/socket.io/", params={"EIO": "4", "transport": "polling", "sid": victim.eio_sid}, content=body
        )
    assert response.status_code == 400  # python-engineio's answer, unchanged
    assert stack.app.runtime.stats.frames_replayed == 0  # nothing was replayed to the victim
    answer = await victim.request("resume-stream", {"message_id": "m", "last_seq": 19}, ack_id=7)
    assert answer["replayed"] == 1  # still alice: the POSTed CONNECT bound nothing
    assert len(victim.seqs("m")) == 21
    await victim.close()


async def test_a_leaked_sid_of_an_upgraded_session_owes_its_victim_nothing(stack: Stack) -> None:
    """A POSTed binary event head to a session that upgraded to a websocket (python-engineio
    answers 400, unread) left the victim's connection owing an attachment: its next resume
    request was refused ``bad_request``, and so on until it sent a binary frame (found by review)."""
    alice = await PollingClient(stack.url).open({"token": "alice"})
    url = stack.url.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&sid={alice.sid}"
    async with websockets.connect(url, ping_interval=None) as ws:
        await ws.send("2probe")
        assert await ws.recv() == "3probe"
        await alice.get()  # the NOOP that ends the poll
        await ws.send("5")
        await emit_tokens(stack.sio, "alice", "m", 1, 5)
        seqs: list[int] = []
        while len(seqs) < 5:
            frame = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(frame, str) and frame.startswith('42["events"'):
                seqs.append(json.loads(frame[2:])[1]["seq"])
        params = {"EIO": "4", "transport": "polling", "sid": alice.sid}
        async with httpx.AsyncClient() as http:
            head = '452-["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
            response = await http.post(stack.url + "/socket.io/", params=params, content=head)
            assert response.status_code == 400  # python-engineio's: the session is on its websocket
        await ws.send('427["resume-stream",{"message_id":"m","last_seq":3}]')
        while True:
            frame = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(frame, str) and frame.startswith("437["):
                break
    answer = json.loads(frame[3:])[0]
    assert answer.get("replayed") == 2, answer
    await alice.aclose()


async def test_a_polling_body_longer_than_the_app_accepts_is_not_read(backend: dict[str, Any]) -> None:
    sio = make_sio(max_http_buffer_size=10_000)
    app = make_app(sio, **backend)
    async with serve(app) as url:
        client = await PollingClient(url).open({"token": "alice"})
        (sid,) = [sid for sid, _ in sio.manager.get_participants("/", room_of("alice"))]
        resume = '42["resume-stream",{"message_id":"m","last_seq":0}]'
        body = "\x1e".join([resume] * 400)  # 20 KB: over the app's limit
        params = {"EIO": "4", "transport": "polling", "sid": client.sid}
        async with httpx.AsyncClient() as http:
            # python-engineio refuses it and ends the session (its answer may never come: not ours)
            post = asyncio.create_task(http.post(url + "/socket.io/", params=params, content=body))
            await sio.disconnects.wait(sid)
            post.cancel()
        stats = app.runtime.stats
        assert stats.resumes_not_found + stats.resumes_rate_limited + stats.resumes_ok == 0  # nothing parsed
        await client.aclose()


async def test_a_stream_id_with_a_lone_surrogate_costs_nobody_else(stack: Stack) -> None:
    """A hostile stream id ("\\ud800", legal JSON) in the same batches as a bystander's stream."""
    bystander = await RawClient(stack.url, auth={"token": "alice"}).connect()
    mallory = await RawClient(stack.url, auth={"token": "mallory"}).connect()
    for i in range(1, 201):
        await stack.sio.emit("events", chat_event("\ud800", i), room=room_of("mallory"))
        await stack.sio.emit("events", chat_event("m", i), room=room_of("alice"))
    assert await bystander.wait_seqs("m", 200) == list(range(1, 201))
    answer = await bystander.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
    assert (answer["replayed"], answer["gap"]) == (200, False)
    odd = await mallory.request("resume-stream", {"message_id": "\ud800", "last_seq": 0}, ack_id=1)
    assert "ok" in odd  # answered, whatever it says
    bad_epoch = await mallory.request("resume-stream", {"message_id": "m", "last_seq": 0, "epoch": "\ud800"}, ack_id=2)
    assert bad_epoch["error"] == "bad_request"
    await bystander.close()
    await mallory.close()


async def test_two_connects_in_flight_bind_nobody(stack: Stack) -> None:
    """CONNECT as herself, then at once as alice (refused): the replies cannot tell which is which."""
    owner = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m", 1, 10)
    await owner.wait_seqs("m", 10)
    mallory = await RawClient(stack.url).connect(namespaces=())
    await mallory.send('40{"token":"mallory"}')
    await mallory.send('40{"token":"alice","refuse":true}')
    await mallory.wait_for(lambda f: isinstance(f, str) and f.startswith("44"))
    await mallory.wait_for(lambda f: isinstance(f, str) and f.startswith('40{"sid"'))
    answer = await mallory.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
    assert answer["error"] == "not_found"
    await owner.close()
    await mallory.close()


async def test_leaving_a_namespace_unbinds_its_principal(stack: Stack) -> None:
    """alice leaves "/" and connects again as mallory on the same Engine.IO connection."""
    alice = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "a", 1, 5)
    await alice.wait_seqs("a", 5)
    sid = await _only_sid(stack)
    await alice.send("41")
    await stack.sio.disconnects.wait(sid)
    await alice.send('40{"token":"mallory"}')
    await alice.wait_count(lambda f: isinstance(f, str) and f.startswith('40{"sid"'), 2)
    await emit_tokens(stack.sio, "mallory", "b", 1, 4)
    await alice.wait_seqs("b", 4)
    mine = await alice.request("resume-stream", {"message_id": "b", "last_seq": 0}, ack_id=1)
    assert mine["replayed"] == 4  # logged under mallory, who received it
    theirs = await alice.request("resume-stream", {"message_id": "a", "last_seq": 0}, ack_id=2)
    assert theirs["error"] == "not_found"  # the connection is mallory now, not alice
    phone = await RawClient(stack.url, auth={"token": "alice"}).connect()
    leaked = await phone.request("resume-stream", {"message_id": "b", "last_seq": 0}, ack_id=1)
    assert leaked["error"] == "not_found"  # nothing mallory received entered alice's log
    await alice.close()
    await phone.close()


async def test_a_connection_the_app_disconnected_cannot_replay(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m", 1, 10)
    await client.wait_seqs("m", 10)
    sid = await _only_sid(stack)
    await stack.sio.disconnect(sid)  # a logout, a ban
    await client.wait_for(lambda f: isinstance(f, str) and f.startswith("41"))
    answer = await client.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
    assert answer["error"] == "not_found"
    await client.close()


async def test_always_connect_then_refused_binds_nothing(backend: dict[str, Any]) -> None:
    """With always_connect, python-socketio accepts first (40), then disconnects a refusal (41)."""
    sio = make_sio(always_connect=True)
    app = make_app(sio, **backend)
    async with serve(app) as url:
        owner = await RawClient(url, auth={"token": "alice"}).connect()
        await emit_tokens(sio, "alice", "m", 1, 10)
        await owner.wait_seqs("m", 10)
        revoked = await RawClient(url).connect(namespaces=())
        await revoked.send('40{"token":"alice","refuse":true}')
        await revoked.wait_for(lambda f: isinstance(f, str) and f.startswith("41"))
        answer = await revoked.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
        assert answer["error"] == "not_found"
        await owner.close()
        await revoked.close()


async def _only_sid(stack: Stack) -> str:
    (sid,) = [sid for sid, _ in stack.sio.manager.get_participants("/", room_of("alice"))]
    return sid


async def test_a_flood_of_resume_requests_gets_a_bounded_number_of_answers(backend: dict[str, Any]) -> None:
    """2,000 resume requests on a websocket: the allowed ones and as many refusals are answered."""
    sio = make_sio()
    seen: list[Any] = []
    sio.on("resume-stream", lambda sid, data: seen.append(data))

    async def on_hello(sid: str, data: Any) -> None:
        await sio.emit("marker", 1, to=sid)  # follows every answer to the requests sent before it

    sio.on("hello", on_hello)
    app = make_app(sio, **backend, resume_limit=5)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        for _ in range(2000):
            await client.emit("resume-stream", {"message_id": "m", "last_seq": 0})
        await client.emit("hello", 1)
        await client.wait_for(lambda f: isinstance(f, str) and '"marker"' in f)
        answers = [f for f in client.frames if isinstance(f, str) and "resume-stream:result" in f]
        # 5 allowed, 5 refusals, and what the buckets refilled while the flood was read: not 2,000
        assert 10 <= len(answers) <= 20
        assert sum('"rate_limited"' in a for a in answers) >= 5
        assert seen == []
        await client.close()


async def test_a_polling_body_of_more_packets_than_the_app_reads_is_not_read(backend: dict[str, Any]) -> None:
    """python-engineio refuses a POST of more than 16 packets: so does the middleware."""
    sio = make_sio()
    app = make_app(sio, **backend)
    async with serve(app) as url:
        client = await PollingClient(url).open({"token": "alice"})
        resume = '42["resume-stream",{"message_id":"m","last_seq":0}]'
        params = {"EIO": "4", "transport": "polling", "sid": client.sid}
        async with httpx.AsyncClient() as http:
            await http.post(url + "/socket.io/", params=params, content="\x1e".join([resume] * 17))
        stats = app.runtime.stats
        assert stats.resumes_not_found + stats.resumes_rate_limited + stats.resumes_ok == 0
        await client.aclose()


async def test_a_form_body_shows_the_app_and_the_middleware_the_same_connect(stack: Stack) -> None:
    """Found by attack: python-engineio reads a POST body that starts with ``d=`` as a form (its
    field ``d``, URL-decoded, is the payload); the middleware read the raw body. One body showed
    the app mallory's CONNECT, which it accepted, and the middleware alice's (a token the app
    refuses), which it bound at the app's reply: mallory replayed alice's stream."""
    owner = await _streamed_to_alice(stack.url, stack.sio)
    mallory = await _session(stack.url)
    try:
        body = "d=" + urllib.parse.quote('40{"token":"mallory"}') + '&x=\x1e40{"token":"alice","refuse":true}'
        response = await mallory.http.post(mallory.url, params=mallory._params(), content=body)
        assert response.status_code == 200
        assert any(isinstance(p, str) and p.startswith("40{") for p in await mallory.get())  # accepted
        await _replays_nothing(mallory)
    finally:
        await mallory.aclose()
        await owner.close()


@pytest.mark.parametrize(
    ("params", "headers", "body"),
    [
        pytest.param({"j": "x"}, {}, '41\x1e40{"token":"alice"}', id="a bad JSONP index: refused unread"),
        pytest.param({}, {"Origin": "http://evil.example"}, '41\x1e40{"token":"alice"}', id="an origin refused unread"),
        pytest.param({}, {}, '41\x1e40{"token":"alice"}\x1e', id="an empty packet: no packet read"),
        pytest.param({}, {}, '8\x1e41\x1e40{"token":"alice"}', id="read up to a packet it stops at"),
    ],
)
async def test_a_post_the_app_does_not_read_binds_nobody(
    stack: Stack, params: dict[str, str], headers: dict[str, str], body: str
) -> None:
    """Found by attack: python-engineio refuses some POSTs before it reads their body, reads none
    of a payload it cannot decode, and stops at a packet type it does not take from a client; the
    middleware read them all. Mallory's CONNECT was accepted and its reply waited for her next GET;
    a POST the app never read told the middleware she left and connected again as alice, whom it
    bound at that reply: mallory replayed alice's stream."""
    owner = await _streamed_to_alice(stack.url, stack.sio)
    mallory = await _session(stack.url)
    try:
        await mallory.post('40{"token":"mallory"}')  # accepted: its reply waits for the next GET
        response = await mallory.http.post(
            mallory.url, params={**mallory._params(), **params}, headers=headers, content=body
        )
        assert response.status_code in (200, 400)  # (python-engineio's answer, unchanged)
        assert any(isinstance(p, str) and p.startswith("40{") for p in await mallory.get())
        await _replays_nothing(mallory)
    finally:
        await mallory.aclose()
        await owner.close()


async def test_a_post_whose_client_left_mid_body_is_read_as_the_app_reads_it(stack: Stack) -> None:
    """Found by review: python-engineio reads the part of a body that came before its client
    left, and acts on it; so must the middleware, or a CONNECT only the app saw would take the
    principal of the next one, which the app refused."""
    owner = await _streamed_to_alice(stack.url, stack.sio)
    mallory = await _session(stack.url)
    try:
        host, port = stack.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        body = b'40{"token":"mallory"}'
        writer.write(
            f"POST /socket.io/?EIO=4&transport=polling&sid={mallory.sid} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body) + 50}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()  # 50 bytes short
        await until(lambda: bool(stack.sio.manager.rooms.get("/", {}).get(room_of("mallory"))), 5)  # the app read it
        await mallory.post('40{"token":"alice","refuse":true}')
        await mallory.get()
        await _replays_nothing(mallory)
    finally:
        await mallory.aclose()
        await owner.close()


async def test_a_refused_post_binds_nobody_behind_an_http_middleware() -> None:
    """Found by review: a Starlette ``BaseHTTPMiddleware`` between the middleware and the app reads
    ``receive`` itself (to notice a client that leaves), so when python-engineio reads a body says
    nothing; its answer does."""

    async def passthrough(request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)

    sio = make_sio()
    app = Starlette(
        routes=[Mount("/ws", app=socketio.ASGIApp(sio, socketio_path="/ws/socket.io"))],
        middleware=[Middleware(ResumeMiddleware), Middleware(BaseHTTPMiddleware, dispatch=passthrough)],
    )
    async with serve(app) as url:
        owner = await _streamed_to_alice(url, sio, path="/ws/socket.io/")
        mallory = await _session(url, path="/ws/socket.io/")
        try:
            await mallory.post('40{"token":"mallory"}')
            refused = await mallory.http.post(
                mallory.url, params={**mallory._params(), "j": "x"}, content='41\x1e40{"token":"alice"}'
            )
            assert refused.status_code == 400
            await mallory.get()
            await _replays_nothing(mallory)
        finally:
            await mallory.aclose()
            await owner.close()


async def _probe(url: str, sid: str, *frames: str) -> None:
    """An upgrade probe websocket on ``sid`` that sends ``frames`` (each after the app's answer to
    the one before, if any), until python-engineio gives the upgrade up and closes it."""
    ws = await websockets.connect(url.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&sid={sid}")
    async with asyncio.timeout(10):
        for frame in frames:
            await ws.send(frame)
            if frame == "2probe":
                assert await ws.recv() == "3probe"
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                pass


async def _upgraded(url: str, sid: str, upgrade: str = "5") -> Any:
    """A websocket that upgrades session ``sid`` (its probe answered, then ``upgrade``)."""
    ws = await websockets.connect(url.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&sid={sid}")
    async with asyncio.timeout(10):
        await ws.send("2probe")
        assert await ws.recv() == "3probe"
        await ws.send(upgrade)
    return ws


@pytest.mark.parametrize("probed", [False, True], ids=["before the probe", "after the probe"])
async def test_frames_on_an_upgrade_probe_bind_nobody(stack: Stack, probed: bool) -> None:
    """Found by attack: python-engineio reads only the probe and the UPGRADE on a probe websocket
    (anything else ends the upgrade, unread); the middleware read a DISCONNECT and a CONNECT there,
    and bound the second at the app's reply to an earlier CONNECT: mallory replayed alice's stream."""
    owner = await _streamed_to_alice(stack.url, stack.sio)
    mallory = await _session(stack.url)
    try:
        await mallory.post('40{"token":"mallory"}')  # accepted: its reply waits for the next GET
        first = ("2probe",) if probed else ()
        await _probe(stack.url, mallory.sid, *first, "41")
        await _probe(stack.url, mallory.sid, *first, '40{"token":"alice","refuse":true}')
        assert any(isinstance(p, str) and p.startswith("40{") for p in await mallory.get())
        await _replays_nothing(mallory)
    finally:
        await mallory.aclose()
        await owner.close()


async def test_an_upgrade_as_python_engineio_reads_it_ends_the_probe(stack: Stack) -> None:
    """python-engineio takes any packet of type 5 for the UPGRADE ("5x" too): from then on what the
    websocket carries is the app's, and a resume request on it is answered here, not by the app."""
    await emit_tokens(stack.sio, "alice", "m", 1, 3)
    client = await PollingClient(stack.url).open({"token": "alice"})
    ws = await _upgraded(stack.url, client.sid, "5x")
    try:
        async with asyncio.timeout(10):
            await ws.send('421["resume-stream",{"message_id":"m","last_seq":0}]')
            while not str(frame := await ws.recv()).startswith("431"):
                pass
        assert json.loads(str(frame)[3:])[0]["error"] == "not_found"  # (nothing was sent to this tab)
    finally:
        await ws.close()
        await client.aclose()


@pytest.mark.parametrize("posts", [1, 2], ids=["one POST", "two POSTs"])
async def test_a_disconnect_between_two_connects_binds_nobody(stack: Stack, posts: int) -> None:
    """Found by attack: mallory's CONNECT is accepted and its reply waits for her next GET; she
    leaves and connects again as alice, whom the app refuses. The DISCONNECT made the middleware
    forget the first CONNECT, so the second was not ambiguous, and the app's reply to the first
    bound alice."""
    owner = await _streamed_to_alice(stack.url, stack.sio)
    mallory = await _session(stack.url)
    try:
        packets = ['40{"token":"mallory"}', "41", '40{"token":"alice","refuse":true}']
        if posts == 1:
            await mallory.post(*packets)
        else:
            await mallory.post(packets[0])
            await mallory.post(*packets[1:])
        await mallory.collect(lambda p: isinstance(p, str) and p.startswith("44"), 1)  # both replies came
        await _replays_nothing(mallory)
    finally:
        await mallory.aclose()
        await owner.close()


async def test_a_reply_before_its_posts_answer_binds_nobody() -> None:
    """Found by attack: with ``async_handlers=False`` python-socketio runs handlers inside the POST,
    and one that awaits lets the replies to the POST's CONNECTs go out on the client's GET before the
    POST's answer, when its CONNECTs are noted. A refused CONNECT noted after its reply stayed
    pending, and the app's reply to mallory's next CONNECT bound it: she replayed alice's stream."""
    sio = socketio.AsyncServer(async_mode="asgi", async_handlers=False)
    gates = [asyncio.Event(), asyncio.Event()]

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        if not isinstance(auth, dict) or auth.get("refuse"):
            return False
        await sio.enter_room(sid, room_of(auth["token"]))
        return True

    async def admin_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await gates[0].wait()  # a token looked up in a database

    async def slow(sid: str, data: Any = None) -> None:
        await gates[1].wait()

    sio.on("connect", connect)
    sio.on("connect", admin_connect, namespace="/admin")
    sio.on("slow", slow, namespace="/admin")
    async with serve(make_app(sio)) as url:
        owner = await _streamed_to_alice(url, sio)
        mallory = await _session(url)
        try:
            for gate, packets in zip(
                gates,
                [
                    ('40{"token":"alice","refuse":true}', '40/admin,{"token":"mallory"}'),
                    ('40{"token":"mallory"}', '42/admin,["slow"]'),
                ],
                strict=True,
            ):
                posted = asyncio.create_task(mallory.post(*packets))
                # the reply to the POST's CONNECT to "/" comes while a handler of the POST still waits
                await mallory.collect(lambda p: isinstance(p, str) and p[:2] in ("40", "44") and p[2:3] != "/", 1)
                gate.set()
                await posted
            await _replays_nothing(mallory)
        finally:
            await mallory.aclose()
            await owner.close()


async def test_an_upgrade_longer_than_the_app_reads_completes_nothing(stack: Stack) -> None:
    """Found by attack: python-engineio reads no websocket frame over its ``max_http_buffer_size``;
    the middleware took such an UPGRADE for one, ended the session when the probe closed, and from
    then on the client's POSTs reached the app unread: a resume request reached its handler."""
    client = await PollingClient(stack.url).open({"token": "alice"})
    try:
        await _probe(stack.url, client.sid, "2probe", "5" + "x" * 1_000_001)
        await client.post('421["resume-stream",{"message_id":"m","last_seq":0}]')
        got = await client.collect(lambda p: isinstance(p, str) and p.startswith("431"), 1)
        answer = next(p for p in got if isinstance(p, str) and p.startswith("431"))
        assert json.loads(answer[3:])[0]["error"] == "not_found"  # answered here
    finally:
        await client.aclose()


async def test_a_connect_past_the_namespace_bound_binds_nothing_after_it(stack: Stack) -> None:
    """Found by attack: past 64 namespaces a CONNECT is not noted, yet the app answers it. Mallory's
    CONNECT to "/" was skipped there and accepted; she freed a slot, connected as alice (refused as
    a second CONNECT), and the app's reply to her own bound alice."""
    owner = await _streamed_to_alice(stack.url, stack.sio)
    mallory = await _session(stack.url)
    try:
        names = [f"/n{i}" for i in range(64)]  # the app has none of them: refused, once she GETs
        for at in range(0, 64, 16):
            await mallory.post(*[f"40{name}," for name in names[at : at + 16]])
        await mallory.post('40{"token":"mallory"}')  # the 65th: not noted; the app accepts it
        await until(lambda: bool(stack.sio.manager.rooms.get("/", {}).get(room_of("mallory"))), 5)
        await mallory.post("41/n0,")  # a slot free again
        await mallory.post('40{"token":"alice","refuse":true}')
        await mallory.collect(lambda p: isinstance(p, str) and p.startswith("44") and p[2:3] != "/", 1)
        await _replays_nothing(mallory)
    finally:
        await mallory.aclose()
        await owner.close()


async def test_a_reply_still_owed_after_an_ambiguous_pair_binds_nobody(stack: Stack) -> None:
    """Found by attack: three CONNECTs back to back on a websocket. The first two were ambiguous;
    the first one's refusal took that mark away while the second's reply was still to come, the
    third (alice, refused) was then noted alone, and the second's acceptance bound alice."""
    owner = await _streamed_to_alice(stack.url, stack.sio)
    mallory = await RawClient(stack.url).connect(namespaces=())
    for frame in ('40{"token":"x","refuse":true}', '40{"token":"mallory"}', '40{"token":"alice","refuse":true}'):
        await mallory.send(frame)
    await mallory.wait_count(lambda f: isinstance(f, str) and f.startswith("44"), 2, timeout=10)
    await mallory.wait_for(lambda f: isinstance(f, str) and f.startswith("40{"), timeout=10)
    before = len(mallory.frames)
    answer = await mallory.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
    assert answer["error"] == "not_found"
    assert not [f for f in mallory.frames[before:] if isinstance(f, str) and '"seq"' in f]
    await mallory.close()
    await owner.close()


def test_a_connect_noted_while_a_reply_is_owed_binds_nobody() -> None:
    """The same, step by step: a reply binds only a CONNECT that no other reply was owed with."""
    conn = Connection({"type": "websocket", "query_string": b""}, 0)
    conn.connecting("/", "x")
    conn.connecting("/", "mallory")  # two in flight: ambiguous
    conn.connected("/", accepted=False)  # the first's refusal: the second's reply is still owed
    conn.connecting("/", "alice")
    conn.connected("/", accepted=True)  # the second's acceptance
    conn.connected("/", accepted=False)  # the third's refusal
    assert conn.principals.get("/") is None
    assert not conn.awaiting  # owed nothing any more


@pytest.mark.parametrize("hidden", [False, True], ids=["its limit found", "its limit hidden"])
async def test_a_websocket_only_app_is_read_up_to_its_own_frame_limit(hidden: bool) -> None:
    """Found by attack: the app's ``max_http_buffer_size`` was looked up at the first polling
    request only; a process that served websockets alone took 1 MB for it, passed a longer
    CONNECT on unread and uncounted, and the app's reply to it bound the next one (alice, refused).
    Where the limit cannot be found (an app the middleware cannot look into), a frame passed on
    unread leaves nothing to bind."""
    sio = make_sio(max_http_buffer_size=5_000_000)
    inner = socketio.ASGIApp(sio)

    async def opaque(scope: Any, receive: Any, send: Any) -> None:
        await inner(scope, receive, send)

    async with serve(ResumeMiddleware(opaque) if hidden else make_app(sio)) as url:
        owner = await _streamed_to_alice(url, sio)
        mallory = await RawClient(url).connect(namespaces=())
        await mallory.send(json.dumps({"token": "mallory", "pad": "x" * 1_100_000}).join(["40", ""]))
        await mallory.send('40{"token":"alice","refuse":true}')
        await mallory.wait_for(lambda f: isinstance(f, str) and f.startswith("44"), timeout=10)
        answer = await mallory.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
        assert answer["error"] == "not_found"
        await mallory.close()
        await owner.close()


async def test_a_connect_whose_principal_cannot_be_read_is_counted_or_never_reaches_the_app(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by attack: a CONNECT token nested deeper than the middleware's ``json.dumps`` reads
    was accepted by the app, while reading its principal at the POST's answer raised: the CONNECT
    went uncounted, and its reply bound the next one's principal (alice, refused). The principal is
    read with the frame now (a failure keeps the frame from the app, as on a websocket)."""
    owner = await _streamed_to_alice(stack.url, stack.sio)
    resolve = stack.app.runtime.resolver.resolve

    def failing(scope: Any, auth: Any) -> str | None:
        if isinstance(auth, dict) and auth.get("token") == "deep":
            raise RecursionError("maximum recursion depth exceeded")
        return resolve(scope, auth)

    monkeypatch.setattr(stack.app.runtime.resolver, "resolve", failing)
    mallory = await _session(stack.url)
    try:
        await mallory.post('40{"token":"deep"}', '40{"token":"alice","refuse":true}')
        await mallory.collect(lambda p: isinstance(p, str) and p.startswith("44"), 1)
        await _replays_nothing(mallory)
    finally:
        await mallory.aclose()
        await owner.close()


def test_a_token_nested_too_deep_names_nobody() -> None:
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    assert _plain(deep) is None


@pytest.mark.parametrize("transport", [None, "websocket"], ids=["no transport", "transport=websocket"])
async def test_a_post_python_engineio_takes_for_polling_is_read_here(stack: Stack, transport: str | None) -> None:
    """Found by attack: python-engineio reads a missing ``transport`` as polling, and reads a POST
    whatever its ``transport`` says; the middleware passed such POSTs on unread. Mallory's CONNECT
    in one went uncounted, and its reply bound alice's (refused); a resume request in one reached
    the app."""
    owner = await _streamed_to_alice(stack.url, stack.sio)
    mallory = await _session(stack.url)
    params = {"EIO": "4", "sid": mallory.sid or ""} | ({} if transport is None else {"transport": transport})
    try:
        response = await mallory.http.post(mallory.url, params=params, content='40{"token":"mallory"}')
        assert response.status_code == 200
        await mallory.post('40{"token":"alice","refuse":true}')
        await mallory.collect(lambda p: isinstance(p, str) and p.startswith("44"), 1)
        await _replays_nothing(mallory, params)  # answered here, and nobody bound
    finally:
        await mallory.aclose()
        await owner.close()


async def test_a_close_the_app_does_not_read_ends_nothing(stack: Stack) -> None:
    """Found by attack: a CLOSE in a POST python-engineio refused unread made the middleware end
    the session at the next POST's answer; from then on resume requests reached the app, and its
    stream frames went out unstamped."""
    client = await PollingClient(stack.url).open({"token": "alice"})
    try:
        refused = await client.http.post(client.url, params={**client._params(), "j": "x"}, content="1")
        assert refused.status_code == 400
        await client.post("3")
        await emit_tokens(stack.sio, "alice", "m", 1, 3)
        await client.post('421["resume-stream",{"message_id":"m","last_seq":0}]')
        got = await client.collect(lambda p: isinstance(p, str) and p.startswith("431"), 1)
        answer = json.loads(next(p for p in got if isinstance(p, str) and p.startswith("431"))[3:])[0]
        assert answer["ok"]  # answered here: the session is still ours
        assert answer["last_seq"] == 3
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "frame",
    [
        '4\uff12["resume-stream",{"message_id":"m","last_seq":0}]',  # a fullwidth 2: an EVENT to int()
        '\u06642["resume-stream",{"message_id":"m","last_seq":0}]',  # an Arabic-Indic 4: a MESSAGE
        '4"2[\\"resume-stream\\",{\\"message_id\\":\\"m\\",\\"last_seq\\":0}]"',  # JSON: its value
        '42\u0661["resume-stream",{"message_id":"m","last_seq":0}]',  # an ack id in another script
        "4\uff11",  # a DISCONNECT python-socketio reads, the middleware did not
        '401-{"token":"mallory"}',  # an attachment count python-socketio skips on a CONNECT
        # a namespace longer, and an ack id longer, than the middleware reads (python-socketio
        # strips the query: an EVENT in "/"); found by attack
        "42/?" + "x" * 1100 + ',1234567890123456["resume-stream",{"message_id":"m","last_seq":0}]',
    ],
    ids=[
        "fullwidth-type",
        "arabic-indic-eio-type",
        "json-string",
        "arabic-indic-ack-id",
        "hidden-disconnect",
        "dash",
        "long-head",
    ],
)
async def test_a_frame_the_app_would_read_otherwise_does_not_reach_it(backend: dict[str, Any], frame: str) -> None:
    """Found by attack: python-engineio and python-socketio read types, attachment counts and ack
    ids with ``int()`` and ``str.isdigit()`` (any Unicode digit), and a MESSAGE that is JSON as its
    value: a resume request reached the app's handler, a DISCONNECT the middleware never saw left
    it following streams it no longer got (their next frames logged across the hole)."""
    sio = make_sio()
    seen: list[Any] = []

    @sio.on("resume-stream")  # type: ignore[misc]
    async def resume(sid: str, *args: Any) -> None:
        seen.append(args)

    app = make_app(sio, **backend)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        await emit_tokens(sio, "alice", "m", 1, 3)
        await client.wait_seqs("m", 3)
        await client.send(frame)
        # the connection goes on (its next request is answered), and the app saw none of it
        answer = await client.request("resume-stream", {"message_id": "m", "last_seq": 2}, ack_id=9)
        assert answer["replayed"] == 1
        await emit_tokens(sio, "alice", "m", 4, 4)
        assert (await client.wait_seqs("m", 5))[-1] == 4  # still in its rooms: no DISCONNECT reached the app
        assert seen == []
        assert not sio.disconnects.at
        await client.close()


async def test_an_event_the_middleware_cannot_read_still_reaches_the_app_unless_it_is_a_resume(
    backend: dict[str, Any],
) -> None:
    """An EVENT named by a number (``socket.emit(1)`` in JavaScript) is the app's, read or not."""
    sio = make_sio()
    seen: list[Any] = []

    @sio.on("*")  # type: ignore[misc]
    async def any_event(event: Any, sid: str, *args: Any) -> None:
        seen.append(event)

    app = make_app(sio, **backend)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        await client.send("42[1]")
        await client.send('42["after"]')
        await until(lambda: "after" in seen, timeout=10)
        assert seen == [1, "after"]
        await client.close()


def test_a_reply_that_may_answer_a_connect_never_noted_leaves_nothing_to_bind() -> None:
    """A reply came while a CONNECT the app read was not noted yet (see
    ``test_a_reply_before_its_posts_answer_binds_nobody``): it may have answered another CONNECT,
    and then the one never noted is answered later, in a later one's place. No reply there binds
    from then on."""
    conn = Connection({"type": "http", "query_string": b""}, 0)
    conn.connecting("/", "mallory")
    second = UnnotedConnect(lambda: conn.connecting("/", "second"))
    conn.reading_connect("/", second)  # a second CONNECT, read by the app, noted at its POST's answer
    conn.connected("/", accepted=True)  # mallory's reply, or the second one's
    conn.connect_read("/", second)  # (not noted: a reply came meanwhile)
    conn.connecting("/", "alice")  # a third, which the app refuses
    conn.connected("/", accepted=True)  # the reply to the second
    assert conn.principals.get("/") is None


@pytest.mark.parametrize("header", ['451-["x",{"_placeholder":true,"num":0}]', "461-[]"], ids=["event", "ack"])
async def test_a_message_the_app_takes_for_an_attachment_is_not_read_as_a_packet(stack: Stack, header: str) -> None:
    """Found by attack: python-socketio takes the messages after a binary packet's header (an event,
    or an ack) for its attachments, text ones too. The middleware read such a ``40`` as a CONNECT
    (noted as alice's, never answered): any reply it did not count then bound alice. Now nothing is
    read in a message that may be an attachment, and a CONNECT there reaches neither."""
    owner = await _streamed_to_alice(stack.url, stack.sio)
    mallory = await RawClient(stack.url, auth={"token": "mallory"}).connect()
    try:
        session = stack.app.sessions.get(mallory.eio_sid)
        assert session is not None
        conn = session.conn
        await mallory.send(header)  # the app waits for one attachment
        answer = await mallory.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
        assert answer["error"] == "bad_request"  # (answered here, as every resume request is)
        await mallory.send('40/admin,{"token":"alice"}')
        await mallory.send('42["plain text"]')  # (taken for the attachment)
        await mallory.send('40/admin,{"token":"mallory"}')
        await mallory.wait_for(lambda f: isinstance(f, str) and f.startswith("40/admin,{"))
        assert conn.principals["/admin"] == conn.principals["/"]  # mallory's, in both
        assert conn.attachments_owed == 0
    finally:
        await mallory.close()
        await owner.close()


async def test_a_failed_second_upgrade_probe_leaves_the_sessions_posts_read(stack: Stack) -> None:
    """Found by attack: two probes on one session; one upgrades, the other fails, and python-engineio
    takes the session for long-polling again. The middleware still took it for upgraded and passed
    its POSTs on unread: a CONNECT in one went uncounted, and its reply bound alice (mallory then
    replayed her stream)."""
    owner = await _streamed_to_alice(stack.url, stack.sio)
    mallory = await _session(stack.url)
    url = stack.url.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&sid={mallory.sid}"
    first, second = await websockets.connect(url), await websockets.connect(url)
    try:
        session = stack.app.sessions.get(mallory.sid)
        assert session is not None
        async with asyncio.timeout(10):
            for ws in (first, second):
                await ws.send("2probe")
                assert await ws.recv() == "3probe"
            await first.send("5")
            await until(lambda: session.conn.upgraded, 10)
            await second.send("4x")  # not an UPGRADE: python-engineio gives that one up, and the upgrade
            with contextlib.suppress(websockets.ConnectionClosed):
                async for _ in second:
                    pass
        await until(lambda: not session.conn.upgraded, 10)
        await mallory.post('40/admin,{"token":"mallory"}')  # read: counted, and bound at its reply
        async with asyncio.timeout(10):
            while not str(await first.recv()).startswith("40/admin,{"):  # (the websocket's writer takes it)
                pass
        assert session.conn.principals.get("/admin") is not None  # (mallory's)
        await first.send('421["resume-stream",{"message_id":"m","last_seq":0}]')
        async with asyncio.timeout(10):
            while not str(frame := await first.recv()).startswith("431"):
                assert '"seq"' not in str(frame)
        assert json.loads(str(frame)[3:])[0]["error"] == "not_found"
    finally:
        await first.close()
        await second.close()
        await mallory.aclose()
        await owner.close()


async def test_a_websocket_of_a_session_the_middleware_never_saw_binds_nobody(stack: Stack) -> None:
    """Found by attack: a session whose handshake was not read here (a JSONP one, ``j=0``, before
    those were refused; one another server of the app opened) has a sid never known here; a
    websocket naming it was taken for one from the start (python-engineio takes it for an
    upgrade), while the session's POSTs passed on unread: a CONNECT in one went uncounted, and its
    reply bound the CONNECT the websocket carried (alice's, refused). Such a websocket binds nobody
    now."""
    async with serve(socketio.ASGIApp(stack.sio)) as bare_url, httpx.AsyncClient(timeout=10) as http:
        opening = await http.get(bare_url + "/socket.io/", params={"EIO": "4", "transport": "polling"})
    sid = json.loads(opening.text[1:])["sid"]
    assert stack.app.sessions.get(sid) is None  # (the handshake was not read)
    ws = await _upgraded(stack.url, sid)
    try:
        async with asyncio.timeout(10):
            await ws.send('40{"token":"mallory"}')
            while not str(await ws.recv()).startswith("40{"):
                pass
            await emit_tokens(stack.sio, "mallory", "m", 1, 1)
            while not str(frame := await ws.recv()).startswith("42"):
                pass
        assert '"seq"' not in str(frame)  # bound to nobody: nothing stamped, nothing logged
    finally:
        await ws.close()


async def test_a_get_python_engineio_answers_as_a_poll_is_read_here(stack: Stack) -> None:
    """Found by attack: a session's GET that says ``transport=websocket`` with an ``Upgrade`` header
    but no ``Connection: upgrade`` is answered by python-engineio as a poll; the middleware passed
    it on unread, so what it carried was neither stamped nor logged, nor its replies counted."""
    client = await PollingClient(stack.url).open({"token": "alice"})
    try:
        await emit_tokens(stack.sio, "alice", "m", 1, 1)
        response = await client.http.get(
            client.url,
            params={"EIO": "4", "transport": "websocket", "sid": client.sid},
            headers={"Upgrade": "websocket"},
        )
        assert response.status_code == 200
        events = [p for p in protocol.split_payload(response.text) if isinstance(p, str) and p.startswith("42")]
        assert events
        assert '"seq":1' in events[0]
    finally:
        await client.aclose()


async def test_jsonp_long_polling_is_refused_so_no_frame_goes_out_unread(stack: Stack) -> None:
    """Found by attack: python-engineio serves JSONP long-polling (``j=N``), its responses wrapped
    in a script call the middleware did not read. A JSONP GET on a session chose which frames the
    middleware never saw: the app's DISCONNECT (a refused or signed-out connection went on
    replaying), a CONNECT reply (a namespace held back for good, memory growing), stream events
    (a resume said gap: false over them, a recovery said recovered); a JSONP session's resume
    requests reached the app. No Socket.IO v4 client uses JSONP: it is refused (400)."""
    client = await PollingClient(stack.url).open({"token": "alice"})
    try:
        await emit_tokens(stack.sio, "alice", "m", 1, 3)
        for method, params, body in (
            ("GET", {"EIO": "4", "transport": "polling", "j": "0"}, None),  # a handshake
            ("GET", {**client._params(), "j": "0"}, None),
            ("POST", {**client._params(), "j": "0"}, "d=" + urllib.parse.quote('42["resume-stream",{}]')),
        ):
            response = await client.http.request(method, client.url, params=params, content=body)
            assert (response.status_code, "JSONP" in response.text) == (400, True), (method, response.text)
        # what the refused GET would have carried comes in the next GET, read here
        assert [e["seq"] for e in event_args(await client.collect(is_event, 3))] == [1, 2, 3]
    finally:
        await client.aclose()
