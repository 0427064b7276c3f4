"""Abuse: resume floods, forged epochs, guessed ids, and clients trying to write into a stream's log."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import Stack
from tests.support.app import chat_event, emit_tokens, make_app, make_sio, room_of
from tests.support.raw import RawClient
from tests.support.server import serve

pytestmark = pytest.mark.anyio


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
