"""Streams belong to their recipients: JWT principals, views for other audiences, events that are
not stream content, and holds that give way to the app (open-webui's shapes, our own small app)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
import socketio

from asgi_resume import ResumeMiddleware
from tests.support.app import PacedStream, chat_event, emit_tokens, make_app, make_sio, room_of
from tests.support.raw import RawClient
from tests.support.server import serve

pytestmark = pytest.mark.anyio
SECRET = "a-test-secret-of-32-bytes-or-more"


def login(user_id: str, *, key: str = SECRET, expires_in: float = 3600) -> str:
    """A token as open-webui issues one at every login: a new jti each time, the same id claim."""
    claims = {"id": user_id, "jti": f"{time.monotonic_ns()}", "exp": int(time.time() + expires_in)}
    return jwt.encode(claims, key, algorithm="HS256")


async def test_a_fresh_login_resumes_its_own_stream(backend: dict[str, Any]) -> None:
    """Per-login tokens map to one principal: a second device, or a new login, resumes."""
    sio = make_sio()
    app = make_app(sio, **backend, principal="jwt:id", jwt_secret=SECRET)
    first_login, second_login = login("u1"), login("u1")
    assert first_login != second_login
    async with serve(app) as url:
        laptop = await RawClient(url, auth={"token": first_login}).connect()
        await emit_tokens(sio, first_login, "m", 1, 10)
        await laptop.wait_seqs("m", 10)
        phone = await RawClient(url, auth={"token": second_login}).connect()
        answer = await phone.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
        assert answer["ok"] is True
        assert answer["replayed"] == 10
        await laptop.close()
        await phone.close()


@pytest.mark.parametrize("token", ["forged", "expired", "garbage"])
async def test_a_token_that_does_not_verify_gives_no_principal(token: str) -> None:
    sio = make_sio()
    app = make_app(sio, principal="jwt:id", jwt_secret=SECRET)
    owner_token = login("u1")
    bad = {
        "forged": login("u1", key="not-the-secret-but-as-long-as-it"),
        "expired": login("u1", expires_in=-60),
        "garbage": "not.a.jwt",
    }[token]
    async with serve(app) as url:
        owner = await RawClient(url, auth={"token": owner_token}).connect()
        await emit_tokens(sio, owner_token, "m", 1, 5)
        await owner.wait_seqs("m", 5)
        intruder = await RawClient(url, auth={"token": bad}).connect()
        answer = await intruder.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
        assert answer["error"] == "not_found"
        assert "no principal" in answer["detail"]
        # and what it is sent is not logged: it has no log to be in
        await emit_tokens(sio, bad, "m", 1, 2)
        assert await intruder.wait_seqs("m", 2) == [None, None]
        await owner.close()
        await intruder.close()


@pytest.mark.parametrize("carrier", ["cookie", "bearer-header", "auth-token-not-a-string"])
async def test_a_jwt_principal_is_read_from_the_connect_auth_only(carrier: str) -> None:
    """Found by attack: a ``jwt:`` principal fell back to an ``Authorization: Bearer`` header and a
    ``token`` cookie when the CONNECT auth had no token. A browser sends the cookie on its own,
    also on a socket another website opens (open-webui accepts any origin), and open-webui, which
    reads only the CONNECT auth, takes that socket for anonymous: it replayed its user's stream."""
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")
    users: dict[str, str] = {}

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if isinstance(token, str):  # (anything else: anonymous, accepted, as open-webui does)
            users[sid] = jwt.decode(token, SECRET, algorithms=["HS256"])["id"]
            await sio.enter_room(sid, room_of(users[sid]))

    app = ResumeMiddleware(socketio.ASGIApp(sio), principal="jwt:id", jwt_secret=SECRET)
    victim_token = login("victim")
    headers = {"Origin": "https://evil.example", "Cookie": f"token={victim_token}"}  # what the browser adds
    auth: Any = {"token": ["x"]} if carrier == "auth-token-not-a-string" else None
    if carrier == "bearer-header":
        headers = {"Authorization": f"Bearer {victim_token}"}
    async with serve(app) as url:
        victim = await RawClient(url, auth={"token": victim_token}).connect()
        await emit_tokens(sio, "victim", "m", 1, 5)
        await victim.wait_seqs("m", 5)
        evil = await RawClient(url, auth=auth, headers=headers).connect()
        assert len(users) == 1  # the app took it for anonymous
        answer = await evil.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
        await victim.close()
        await evil.close()
    assert answer["error"] == "not_found"
    assert not evil.events()


def shared_event(message_id: str, i: int, *, done: bool = False) -> dict[str, Any]:
    """open-webui's throttled view for the chat's room: the accumulated output, marked shared."""
    data: dict[str, Any] = {"content": " ".join(f"tok{n}" for n in range(1, i + 1))}
    if done:
        data["done"] = True
    view = {"type": "chat:completion", "data": data}
    return {"chat_id": "c", "message_id": message_id, "user_id": "alice", "shared": True, "data": view}


async def test_views_for_other_audiences_are_streams_of_their_own(backend: dict[str, Any]) -> None:
    """Each delta goes to the user's room; every third, a shared view goes to the chat's room,
    skipping the requesting tab. A second tab of the user gets both, a collaborator only the shared
    view: each view is stamped contiguously for its recipients, and resumable."""
    sio = make_sio()
    app = make_app(sio, **backend, variant="shared", exclude="data.type=chat:list")
    async with serve(app) as url:
        requester = await RawClient(url, auth={"token": "alice"}).connect()
        (requester_sid,) = [sid for sid, _ in sio.manager.get_participants("/", room_of("alice"))]
        second_tab = await RawClient(url, auth={"token": "alice"}).connect()
        collaborator = await RawClient(url, auth={"token": "bob"}).connect()
        for user in ("alice", "bob"):  # the chat is open in every tab (open-webui's "join")
            for sid, _ in list(sio.manager.get_participants("/", room_of(user))):
                await sio.enter_room(sid, "chat:c")
        for i in range(1, 31):
            await sio.emit("events", chat_event("m", i, chat_id="c"), room=room_of("alice"))
            if i % 3 == 0:
                await sio.emit("events", shared_event("m", i, done=i == 30), room="chat:c", skip_sid=requester_sid)
        await sio.emit(
            "events", {"chat_id": "c", "message_id": "m", "data": {"type": "chat:list"}}, room=room_of("alice")
        )
        await sio.emit("events", chat_event("m", 31, chat_id="c", done=True), room=room_of("alice"))

        await requester.wait_seqs("m", 32)
        await second_tab.wait_seqs("m", 42)
        await collaborator.wait_seqs("m", 10)

        def views(tab: RawClient) -> tuple[list[Any], list[Any]]:
            events = [e for e in tab.events() if e.get("message_id") == "m"]
            return [e.get("seq") for e in events if not e.get("shared")], [
                e.get("seq") for e in events if e.get("shared")
            ]

        own, shared = views(requester)
        assert own == [*range(1, 31), None, 31]  # chat:list is not stream content: unstamped, unlogged
        assert shared == []
        own, shared = views(second_tab)
        assert own == [*range(1, 31), None, 31]
        assert shared == list(range(1, 11))
        own, shared = views(collaborator)
        assert own == []
        assert shared == list(range(1, 11))

        answer = await collaborator.request(
            "resume-stream", {"message_id": "m", "last_seq": 4, "variant": "true"}, ack_id=1
        )
        assert (answer["replayed"], answer["variant"], answer["done"]) == (6, "true", True)
        # the view named as the frames name it (found by attack: `true` was refused with bad_request)
        answer = await collaborator.request("resume-stream", {"message_id": "m", "last_seq": 4, "variant": True}, 3)
        assert (answer["replayed"], answer["variant"]) == (6, "true")
        default = await collaborator.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=2)
        assert default["error"] == "not_found"  # bob never received alice's own view
        answer = await requester.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
        assert answer["replayed"] == 31
        for tab in (requester, second_tab, collaborator):
            await tab.close()


async def test_a_client_that_owes_the_app_an_answer_is_not_held(backend: dict[str, Any]) -> None:
    """open-webui re-sends an input request to the user's next tab once it sees this one leave."""
    sio = make_sio()
    app = make_app(sio, **backend, hold_grace=0.2)
    stream = PacedStream(sio, "alice", "m", 400, pace=0.01)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        sid = next(iter(sio.manager.get_participants("/", room_of("alice"))))[0]
        emitter = asyncio.create_task(stream.run())
        await tab.wait_seqs("m", 5)
        await sio.emit("events", {"message_id": "m", "data": {"type": "input"}}, to=sid, callback=lambda *a: None)
        await tab.wait_for(lambda f: isinstance(f, str) and '"type":"input"' in f)
        await tab.kill()
        await sio.disconnects.wait(sid)
        assert stream.done_at is None  # the app knew long before the stream ended
        assert app.runtime.stats.holds_started == 0
        emitter.cancel()


async def test_a_hold_ends_when_the_app_asks_the_absent_client_something(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, **backend, hold_grace=0.2)
    stream = PacedStream(sio, "alice", "m", 400, pace=0.01)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        sid = next(iter(sio.manager.get_participants("/", room_of("alice"))))[0]
        emitter = asyncio.create_task(stream.run())
        await tab.wait_seqs("m", 5)
        await tab.kill()
        await stream.wait_sent(stream.sent + 10)  # held: the app still sends it the stream
        assert sid not in sio.disconnects.at
        assert app.runtime.stats.holds_started == 1
        await sio.emit("events", {"message_id": "m", "data": {"type": "input"}}, to=sid, callback=lambda *a: None)
        await sio.disconnects.wait(sid)
        assert stream.done_at is None
        emitter.cancel()


def test_what_a_connection_remembers_of_streams_it_must_rejoin_is_bounded() -> None:
    """Found by review: streams whose history broke stayed marked after they ended."""
    from asgi_resume.log import StreamKey
    from asgi_resume.pipeline.connection import STREAMS_KEPT, Connection

    conn = Connection({"type": "websocket"}, 0)
    for i in range(3 * STREAMS_KEPT):
        conn.forget(StreamKey("alice", "/", "", f"m{i}"))
    assert len(conn.rejoining) <= STREAMS_KEPT + 1
