"""Outbound frames: stream events get seq (and epoch); everything else passes untouched.

Runs against both logs (memory and a real redis-server), with a real python-socketio
server under uvicorn and real clients.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import socketio

from tests.conftest import Stack
from tests.support.app import chat_event, emit_tokens, make_app, make_sio, room_of
from tests.support.raw import RawClient
from tests.support.redis_server import RedisServer
from tests.support.server import serve

pytestmark = pytest.mark.anyio


async def test_stream_frames_get_consecutive_seq(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m1", 1, 30)
    seqs = await client.wait_seqs("m1", 30)
    assert seqs == list(range(1, 31))
    frames = client.events()
    assert len({f["epoch"] for f in frames}) == 1
    # apart from the stamp, each frame is what the app sent
    for i, arg in enumerate(frames, 1):
        assert {k: v for k, v in arg.items() if k not in ("seq", "epoch")} == chat_event("m1", i)
    await client.close()


async def test_each_stream_counts_on_its_own(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    for i in range(1, 11):
        await stack.sio.emit("events", chat_event("a", i), room=room_of("alice"))
        await stack.sio.emit("events", chat_event("b", i), room=room_of("alice"))
    assert await client.wait_seqs("b", 10) == list(range(1, 11))
    assert client.seqs("a") == list(range(1, 11))
    await client.close()


async def test_other_frames_pass_byte_for_byte(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    room = room_of("alice")
    await stack.sio.emit("other", {"chat_id": "c", "x": [1, 2]}, room=room)
    await stack.sio.emit("events", "message_id", room=room)
    await stack.sio.emit("events", [{"message_id": "inside a list"}], room=room)
    await stack.sio.emit("events", {"message_id": ""}, room=room)
    await stack.sio.emit("plain", room=room)
    await stack.sio.emit("last", {"caf\u00e9": "\u2603"}, room=room)
    await client.wait_for(lambda f: isinstance(f, str) and f.startswith('42["last"'))
    assert client.frames[1:] == [
        '42["other",{"chat_id":"c","x":[1,2]}]',
        '42["events","message_id"]',
        '42["events",[{"message_id":"inside a list"}]]',
        '42["events",{"message_id":""}]',
        '42["plain"]',
        '42["last",{"caf\\u00e9":"\\u2603"}]',
    ]
    await client.close()


async def test_binary_event_is_stamped_and_attachments_pass_untouched(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    blob = bytes(range(256))
    await stack.sio.emit("events", {"message_id": "bin", "blob": blob, "n": 1}, room=room_of("alice"))
    await stack.sio.emit("events", {"message_id": "bin", "n": 2}, room=room_of("alice"))
    await client.wait_seqs("bin", 2)
    header, attachment, second = client.frames[1:4]
    assert isinstance(header, str)
    assert header.startswith("451-")
    assert json.loads(header[4:])[1] == {
        "seq": 1,
        "epoch": json.loads(header[4:])[1]["epoch"],
        "message_id": "bin",
        "blob": {"_placeholder": True, "num": 0},
        "n": 1,
    }
    assert attachment == blob
    assert isinstance(second, str)
    assert '"seq":2' in second
    await client.close()


async def test_python_socketio_client_sees_stamped_events_and_binary(stack: Stack) -> None:
    received: list[Any] = []
    done = asyncio.Event()
    client = socketio.AsyncClient()

    @client.on("events")
    async def on_events(data: Any) -> None:
        received.append(data)
        if len(received) == 3:
            done.set()

    await client.connect(stack.url, auth={"token": "alice"}, transports=["websocket"], wait_timeout=5)
    await stack.sio.emit("events", chat_event("m", 1), room=room_of("alice"))
    await stack.sio.emit("events", {"message_id": "m", "blob": b"\x00\xff"}, room=room_of("alice"))
    await stack.sio.emit("events", chat_event("m", 3), room=room_of("alice"))
    await asyncio.wait_for(done.wait(), 10)
    assert [r["seq"] for r in received] == [1, 2, 3]
    assert received[1]["blob"] == b"\x00\xff"
    await client.disconnect()


async def test_event_filter_limits_what_is_logged(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, events="events", **backend)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        await sio.emit("progress", {"message_id": "m"}, room=room_of("alice"))
        await sio.emit("events", {"message_id": "m"}, room=room_of("alice"))
        await client.wait_seqs("m", 2)  # both frames carry the id; only "events" is logged
        assert client.frames[1] == '42["progress",{"message_id":"m"}]'
        assert '"seq":1' in str(client.frames[2])
        await client.close()


async def test_custom_stream_id_path(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, stream_id="job.id", **backend)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        for i in range(3):
            await sio.emit("log", {"job": {"id": 7}, "line": i}, room=room_of("alice"))
        await client.wait_count(lambda f: isinstance(f, str) and '"line":2' in f, 1)
        assert [e["seq"] for e in client.events("log")] == [1, 2, 3]
        answer = await client.request("resume-stream", {"id": 7, "last_seq": 1}, ack_id=1)
        assert answer["ok"]
        assert answer["replayed"] == 2
        await client.close()


async def test_namespaces_are_stamped_and_resumed(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect(namespaces=("/", "/admin"))
    for i in range(1, 4):
        await stack.sio.emit("events", chat_event("adm", i), room=room_of("alice"), namespace="/admin")
    await client.wait_count(lambda f: isinstance(f, str) and f.startswith("42/admin,"), 3)
    assert [e["seq"] for e in client.events(namespace="/admin")] == [1, 2, 3]
    answer = await client.request("resume-stream", {"message_id": "adm", "last_seq": 1}, ack_id=4, namespace="/admin")
    assert answer["ok"]
    assert answer["replayed"] == 2
    assert [e["seq"] for e in client.events(namespace="/admin")] == [1, 2, 3, 2, 3]
    await client.close()


async def test_calls_to_one_connection_are_not_stream_content(stack: Stack) -> None:
    """An event with an ack id (``sio.call``, open-webui's input request) passes as it is, unlogged."""
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    sid = next(iter(stack.sio.manager.get_participants("/", room_of("alice"))))[0]
    answered = asyncio.get_running_loop().create_future()
    await stack.sio.emit("events", {"message_id": "q", "ask": 1}, to=sid, callback=answered.set_result)
    frame = await client.wait_for(lambda f: isinstance(f, str) and '"ask":1' in f)
    assert isinstance(frame, str)
    packet_id = frame[2 : frame.index("[")]
    assert packet_id.isdigit()
    assert "seq" not in json.loads(frame[2 + len(packet_id) :])[1]
    await client.send(f'43{packet_id}["yes"]')
    assert await asyncio.wait_for(answered, 5) == "yes"
    answer = await client.request("resume-stream", {"message_id": "q", "last_seq": 0}, ack_id=99)
    assert answer["error"] == "not_found"
    await client.close()


async def test_server_events_with_an_ack_keep_it_when_calls_are_logged(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, **backend, log_calls=True)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        sid = next(iter(sio.manager.get_participants("/", room_of("alice"))))[0]
        answered = asyncio.get_running_loop().create_future()
        await sio.emit("events", {"message_id": "q", "ask": 1}, to=sid, callback=answered.set_result)
        frame = await client.wait_for(lambda f: isinstance(f, str) and '"ask":1' in f)
        assert isinstance(frame, str)
        packet_id = frame[2 : frame.index("[")]
        assert packet_id.isdigit()
        assert json.loads(frame[2 + len(packet_id) :])[1]["seq"] == 1
        await client.send(f'43{packet_id}["yes"]')
        assert await asyncio.wait_for(answered, 5) == "yes"
        # the log keeps it without the ack id: a replay cannot be answered to the old callback
        await client.request("resume-stream", {"message_id": "q", "last_seq": 0}, ack_id=99)
        replayed = [f for f in client.frames if isinstance(f, str) and '"ask":1' in f][-1]
        assert replayed.startswith('42["events",')
        await client.close()


async def test_an_app_field_named_seq_is_replaced_not_duplicated(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await stack.sio.emit("events", {"message_id": "s", "seq": "app's own"}, room=room_of("alice"))
    frame = await client.wait_for(lambda f: isinstance(f, str) and '"message_id":"s"' in f)
    assert isinstance(frame, str)
    assert frame.count('"seq"') == 1
    assert json.loads(frame[2:])[1]["seq"] == 1
    await client.close()


async def test_a_burst_is_logged_in_batches_not_one_write_per_frame(redis_server: RedisServer) -> None:
    """With Redis, frames that queue up while a write is in flight go out in the next single write."""
    sio = make_sio()
    app = make_app(sio, redis_url=redis_server.url, key_prefix="burst")
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        await emit_tokens(sio, "alice", "burst", 1, 2000)
        assert await client.wait_seqs("burst", 2000) == list(range(1, 2001))
        stats = app.runtime.stats
        assert stats.frames_stamped == 2000
        assert stats.log_writes < 2000 * 0.75, stats
        await client.close()
