"""Where the middleware sits: inside Starlette, under a mount prefix, beside other routes and transports."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import socketio
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from asgi_resume import ResumeMiddleware
from tests.support.app import chat_event, emit_tokens, make_sio, room_of
from tests.support.raw import RawClient
from tests.support.server import serve

pytestmark = pytest.mark.anyio


def starlette_app(sio: socketio.AsyncServer, *middleware: Middleware) -> Starlette:
    """open-webui's layout: Socket.IO mounted under /ws, beside ordinary routes."""
    return Starlette(
        routes=[
            Route("/health", lambda request: PlainTextResponse("fine")),
            Mount("/ws", app=socketio.ASGIApp(sio, socketio_path="/ws/socket.io")),
        ],
        middleware=list(middleware),
    )


async def test_starlette_middleware_under_a_mount_prefix(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = starlette_app(sio, Middleware(ResumeMiddleware, **backend))
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}, path="/ws/socket.io/").connect()
        await emit_tokens(sio, "alice", "mounted", 1, 3)
        assert await client.wait_seqs("mounted", 3) == [1, 2, 3]
        answer = await client.request("resume-stream", {"message_id": "mounted", "last_seq": 1}, ack_id=1)
        assert answer["ok"]
        assert answer["replayed"] == 2
        async with httpx.AsyncClient() as http:
            response = await http.get(url + "/health")
            assert response.text == "fine"
        await client.close()


async def test_python_socketio_client_on_long_polling(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = ResumeMiddleware(socketio.ASGIApp(sio), **backend)
    received: list[Any] = []
    arrived = asyncio.Condition()
    client = socketio.AsyncClient()

    @client.on("events")
    async def on_events(data: Any) -> None:
        async with arrived:
            received.append(data)
            arrived.notify_all()

    async def wait_for(count: int) -> None:
        async with asyncio.timeout(10), arrived:
            await arrived.wait_for(lambda: len(received) >= count)

    async with serve(app) as url:
        await client.connect(url, auth={"token": "alice"}, transports=["polling"], wait_timeout=5)
        # python-engineio's client refuses polling bodies of more than 16 packets: emit in bursts
        for burst in range(10):
            for i in range(burst * 10 + 1, burst * 10 + 11):
                await sio.emit("events", chat_event("poll", i), room=room_of("alice"))
            await wait_for(burst * 10 + 10)
        await sio.emit("events", {"message_id": "poll", "blob": b"\x01\x02" * 600}, room=room_of("alice"))
        await wait_for(101)
        # python-engineio's client waits out its pending long-poll on disconnect: end it from the server
        gone = asyncio.Event()
        client.on("disconnect", lambda *args: gone.set())
        await sio.disconnect(client.get_sid())
        await asyncio.wait_for(gone.wait(), 10)
    assert [{k: v for k, v in r.items() if k not in ("seq", "epoch")} for r in received[:100]] == [
        chat_event("poll", i) for i in range(1, 101)
    ]
    assert [r["seq"] for r in received] == list(range(1, 102))  # stamped over polling too
    assert received[100]["blob"] == b"\x01\x02" * 600


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        user = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(user)) if user else None


async def test_scope_user_principal(backend: dict[str, Any]) -> None:
    sio = socketio.AsyncServer(async_mode="asgi")

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        user = environ["asgi.scope"]["user"]
        if user.is_authenticated:
            await sio.enter_room(sid, room_of(user.username))

    sio.on("connect", connect)
    app = starlette_app(
        sio,
        Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
        Middleware(ResumeMiddleware, principal="scope:user", **backend),
    )
    async with serve(app) as url:
        alice = await RawClient(url, path="/ws/socket.io/", headers={"x-user": "alice"}).connect()
        await emit_tokens(sio, "alice", "u1", 1, 2)
        await alice.wait_seqs("u1", 2)
        alice_again = await RawClient(url, path="/ws/socket.io/", headers={"x-user": "alice"}).connect()
        bob = await RawClient(url, path="/ws/socket.io/", headers={"x-user": "bob"}).connect()
        nobody = await RawClient(url, path="/ws/socket.io/").connect()
        ask = {"message_id": "u1", "last_seq": 0}
        assert (await alice_again.request("resume-stream", ask, ack_id=1))["replayed"] == 2
        assert (await bob.request("resume-stream", ask, ack_id=1))["error"] == "not_found"
        assert (await nobody.request("resume-stream", ask, ack_id=1))["error"] == "not_found"
        for client in (alice, alice_again, bob, nobody):
            await client.close()
