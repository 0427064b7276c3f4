"""Interop with the official socket.io-client (Node): drop mid-stream, resume, see every token once."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Stack
from tests.support.app import chat_event, faults, room_of
from tests.support.node import NodeClient

pytestmark = pytest.mark.anyio

TOTAL = 300


async def stream_paced(stack: Stack, message_id: str, started: asyncio.Event) -> None:
    for i in range(1, TOTAL + 1):
        await stack.sio.emit("events", chat_event(message_id, i), room=room_of("alice"))
        if i == 50:
            started.set()
        await asyncio.sleep(0.002)  # a model's pace, so the drop lands mid-stream
    await stack.sio.emit("events", chat_event(message_id, TOTAL + 1, done=True), room=room_of("alice"))


@pytest.mark.parametrize(
    ("transports", "how"),
    [("websocket", "close"), ("websocket", "kill"), ("polling,websocket", "kill")],
    ids=["websocket-close", "websocket-kill", "default-transports-kill"],
)
async def test_node_client_drops_mid_stream_and_resumes(stack: Stack, transports: str, how: str) -> None:
    """Nobody else is connected: what is emitted while the client is away is logged by the hold."""
    async with NodeClient("drop_and_resume.mjs", stack.url, "alice", "node-msg", "40", transports, how) as node:
        await node.expect("connected")
        started = asyncio.Event()
        emitter = asyncio.create_task(stream_paced(stack, "node-msg", started))
        dropped = await node.expect("dropped")
        resumed = await node.expect("resumed")
        finished = await node.expect("finished", timeout=30)
        await emitter

    assert dropped["transport"] == "websocket"  # the default client had upgraded by then
    answer = resumed["answer"]
    assert answer["ok"] is True
    assert answer["gap"] is False, (answer, faults(stack.app))
    assert answer["replayed"] > 0
    assert answer["last_seq"] > dropped["lastSeq"]
    assert finished["seqs"] == list(range(1, TOTAL + 2)), faults(stack.app)
    assert finished["contents"] == [f"tok{i} " for i in range(1, TOTAL + 1)] + [""]
