"""The resume-stream request: replay after last_seq, the ack, errors, gaps, authorization.

Runs against both logs, with a real python-socketio server under uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from tests.conftest import Stack
from tests.support.app import chat_event, emit_tokens, make_app, make_sio, room_of
from tests.support.raw import RawClient
from tests.support.server import serve

pytestmark = pytest.mark.anyio


async def test_resume_replays_after_last_seq_then_acks(stack: Stack) -> None:
    live = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m1", 1, 10)
    await live.wait_seqs("m1", 10)
    epoch = live.events()[0]["epoch"]

    tab = await RawClient(stack.url, auth={"token": "alice"}).connect()
    answer = await tab.request("resume-stream", {"chat_id": "chat-1", "message_id": "m1", "last_seq": 4}, ack_id=12)
    assert answer == {
        "message_id": "m1",
        "ok": True,
        "replayed": 6,
        "last_seq": 10,
        "oldest_seq": 1,
        "epoch": epoch,
        "done": False,
        "gap": False,
    }
    replayed = tab.events()
    assert [e["seq"] for e in replayed] == [5, 6, 7, 8, 9, 10]
    assert [{k: v for k, v in e.items() if k not in ("seq", "epoch")} for e in replayed] == [
        chat_event("m1", i) for i in range(5, 11)
    ]
    # the replay and the ack went to the requester only
    assert len(live.events()) == 10
    assert not any(isinstance(f, str) and f.startswith("43") for f in live.frames)
    await live.close()
    await tab.close()


async def test_resume_reports_done(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m", 1, 3)
    await stack.sio.emit("events", chat_event("m", 4, done=True), room=room_of("alice"))
    await client.wait_seqs("m", 4)
    answer = await client.request("resume-stream", {"message_id": "m", "last_seq": 4}, ack_id=1)
    assert answer["done"] is True
    assert answer["replayed"] == 0
    assert answer["last_seq"] == 4
    await client.close()


async def test_resume_without_an_ack_id_answers_with_a_result_event(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m", 1, 3)
    await client.wait_seqs("m", 3)
    await client.emit("resume-stream", {"message_id": "m", "last_seq": 1})
    frame = await client.wait_for(lambda f: isinstance(f, str) and f.startswith('42["resume-stream:result"'))
    assert isinstance(frame, str)
    assert json.loads(frame[2:])[1]["replayed"] == 2
    assert client.seqs("m") == [1, 2, 3, 2, 3]
    await client.close()


async def test_resume_never_reaches_the_app(backend: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    sio = make_sio()
    seen: list[Any] = []
    hello = asyncio.Event()
    sio.on("resume-stream", lambda sid, data: seen.append(data))
    sio.on("*", lambda event, sid, *args: seen.append((event, args)))

    def on_hello(sid: str, data: Any) -> None:
        seen.append(data)
        hello.set()

    sio.on("hello", on_hello)
    app = make_app(sio, **backend)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        await client.request("resume-stream", {"message_id": "x", "last_seq": 0}, ack_id=1)
        await client.emit("resume-stream", {"message_id": "x", "last_seq": 0})
        # unreadable ones too: an ack id no client sends, a binary resume and its attachment
        await client.send('421234567890123456789["resume-stream",{"message_id":"x","last_seq":0}]')
        await client.send('451-7["resume-stream",{"_placeholder":true,"num":0}]')
        await client.send(b"\x00\x01")
        # its name in JSON escapes, as python-socketio reads it too; more attachments than we parse
        await client.send('421234567890123456789["resume\\u002dstream",{"message_id":"x","last_seq":0}]')
        await client.send('451001-["resume-stream",{"message_id":"x","last_seq":0}]')
        for _ in range(3):
            await client.send(b"\x00\x02")  # (they used to reach python-socketio alone: an ERROR each)
        await client.emit("hello", "after")
        await client.wait_count(lambda f: isinstance(f, str) and "resume-stream:result" in f, 4)
        binary = await client.wait_for(lambda f: isinstance(f, str) and f.startswith("437["))
        assert "bad_request" in str(binary)
        await asyncio.wait_for(hello.wait(), 5)  # frames reach the app in order: the resumes came first
        assert seen == ["after"]
        results = [f for f in client.frames if isinstance(f, str) and "resume-stream:result" in f]
        # (the first is the readable request emitted without an ack id: not_found, a stream nobody sent)
        assert all("bad_request" in result for result in results[1:])
        await client.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    ("arg", "detail"),
    [
        ("m1", "argument must be an object"),
        ([{"message_id": "m1", "last_seq": 0}], "argument must be an object"),
        ({"last_seq": 1}, "message_id must be"),
        ({"message_id": "", "last_seq": 1}, "message_id must be"),
        ({"message_id": {"$ne": 1}, "last_seq": 1}, "message_id must be"),
        ({"message_id": "m1"}, "last_seq must be"),
        ({"message_id": "m1", "last_seq": "3"}, "last_seq must be"),
        ({"message_id": "m1", "last_seq": 2.5}, "last_seq must be"),
        ({"message_id": "m1", "last_seq": -1}, "last_seq must be"),
        ({"message_id": "m1", "last_seq": True}, "last_seq must be"),
        ({"message_id": "m1", "last_seq": 0, "epoch": 5}, "epoch must be"),
        ({"message_id": "m" * 10_000, "last_seq": 0}, "message_id must be"),
    ],
)
async def test_bad_input_gets_a_clear_error_and_the_connection_keeps_working(
    stack: Stack, arg: Any, detail: str
) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    answer = await client.request("resume-stream", arg, ack_id=3)
    assert answer["ok"] is False
    assert answer["error"] == "bad_request"
    assert detail in answer["detail"]
    await emit_tokens(stack.sio, "alice", "m1", 1, 2)
    assert await client.wait_seqs("m1", 2) == [1, 2]
    assert (await client.request("resume-stream", {"message_id": "m1", "last_seq": 1}, ack_id=4))["ok"] is True
    await client.close()


async def test_malformed_resume_frames_do_not_break_the_connection(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    for frame in [
        '42["resume-stream"',
        '42["resume-stream"]',
        '42["resume-stream",{]',
        '4299999999999999999999["resume-stream",{}]',
        '42/nowhere,1["resume-stream",{"message_id":"m","last_seq":0}]',
        '42["resume-stream",' + "[" * 5000 + "]" * 5000 + "]",
    ]:
        await client.send(frame)
    await emit_tokens(stack.sio, "alice", "m1", 1, 2)
    assert await client.wait_seqs("m1", 2) == [1, 2]
    await client.close()


async def test_unknown_and_forbidden_streams_get_the_same_answer(stack: Stack) -> None:
    alice = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "secret-answer", 1, 5)
    await alice.wait_seqs("secret-answer", 5)

    mallory = await RawClient(stack.url, auth={"token": "mallory"}).connect()
    forbidden = await mallory.request("resume-stream", {"message_id": "secret-answer", "last_seq": 0}, ack_id=1)
    unknown = await mallory.request("resume-stream", {"message_id": "no-such-id", "last_seq": 0}, ack_id=2)
    assert forbidden == {"message_id": "secret-answer", "ok": False, "error": "not_found"}
    assert unknown == {"message_id": "no-such-id", "ok": False, "error": "not_found"}
    assert mallory.events() == []

    anonymous = await RawClient(stack.url).connect()
    assert (await anonymous.request("resume-stream", {"message_id": "secret-answer", "last_seq": 0}, ack_id=1))[
        "error"
    ] == "not_found"
    # and the owner still can
    assert (await alice.request("resume-stream", {"message_id": "secret-answer", "last_seq": 0}, ack_id=3))["ok"]
    for client in (alice, mallory, anonymous):
        await client.close()


async def test_cookie_principal(backend: dict[str, Any]) -> None:
    sio = make_sio()

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.enter_room(sid, "everyone")

    sio.on("connect", connect)
    app = make_app(sio, principal="cookie:session", **backend)
    async with serve(app) as url:
        owner = await RawClient(url, headers={"Cookie": "theme=dark; session=s-owner"}).connect()
        await sio.emit("events", chat_event("c1", 1), to=owner_sid(sio))
        await owner.wait_seqs("c1", 1)
        other = await RawClient(url, headers={"Cookie": "session=s-other"}).connect()
        again = await RawClient(url, headers={"Cookie": "session=s-owner"}).connect()
        assert (await other.request("resume-stream", {"message_id": "c1", "last_seq": 0}, ack_id=1))["ok"] is False
        assert (await again.request("resume-stream", {"message_id": "c1", "last_seq": 0}, ack_id=1))["replayed"] == 1
        for client in (owner, other, again):
            await client.close()


def owner_sid(sio: Any) -> str:
    return next(iter(sio.manager.get_participants("/", "everyone")))[0]


async def test_gap_when_the_log_no_longer_holds_the_frames(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, maxlen=50, **backend)
    async with serve(app) as url:
        client = await RawClient(url, auth={"token": "alice"}).connect()
        await emit_tokens(sio, "alice", "long", 1, 400)
        await client.wait_seqs("long", 400)
        answer = await client.request("resume-stream", {"message_id": "long", "last_seq": 3}, ack_id=1)
        assert answer["ok"] is True
        assert answer["gap"] is True
        assert 4 < answer["oldest_seq"] <= 351  # Redis trims whole nodes (MAXLEN ~): at least 50 are kept
        assert answer["replayed"] == 400 - answer["oldest_seq"] + 1
        assert client.seqs("long")[400:] == list(range(answer["oldest_seq"], 401))
        # asking from inside what is held is not a gap
        inside = await client.request("resume-stream", {"message_id": "long", "last_seq": 398}, ack_id=2)
        assert inside["gap"] is False
        assert inside["replayed"] == 2
        await client.close()


async def test_another_epoch_is_a_gap_and_replays_this_history(stack: Stack) -> None:
    client = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emit_tokens(stack.sio, "alice", "m", 1, 3)
    await client.wait_seqs("m", 3)
    epoch = client.events()[0]["epoch"]
    same = await client.request("resume-stream", {"message_id": "m", "last_seq": 2, "epoch": epoch}, ack_id=1)
    assert same["gap"] is False
    assert same["replayed"] == 1
    other = await client.request("resume-stream", {"message_id": "m", "last_seq": 2, "epoch": "old-one"}, ack_id=2)
    assert other["gap"] is True
    assert other["replayed"] == 3
    assert other["epoch"] == epoch
    beyond = await client.request("resume-stream", {"message_id": "m", "last_seq": 9}, ack_id=3)
    assert beyond["gap"] is True
    assert beyond["replayed"] == 3
    await client.close()


async def test_live_frames_during_a_replay_follow_it_in_order(stack: Stack) -> None:
    """A tab resumes while the stream is still flowing to it: seq never goes backwards after the replay starts."""
    first_tab = await RawClient(stack.url, auth={"token": "alice"}).connect()
    total = 400
    emitter = asyncio.create_task(emit_tokens_paced(stack, "race", total))
    await first_tab.wait_seqs("race", 100)
    tab = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await tab.wait_seqs("race", 1)
    request_at = len(tab.frames)
    answer = await tab.request("resume-stream", {"message_id": "race", "last_seq": 0}, ack_id=1)
    await emitter
    await tab.wait_for(lambda f: isinstance(f, str) and f'"seq":{total},' in f)

    seqs = [
        json.loads(f[2:])[1]["seq"] if isinstance(f, str) and f.startswith('42["events"') else None for f in tab.frames
    ]
    # live frames already on the wire when the request left may precede the replay; from its first
    # frame on, seq only grows: live frames that met the replay were held back or dropped
    replay_start = seqs.index(1, request_at)
    from_replay = [s for s in seqs[replay_start:] if s is not None]
    assert from_replay == list(range(1, total + 1))
    ack_index = next(i for i, f in enumerate(tab.frames) if isinstance(f, str) and f.startswith("431"))
    assert [s for s in seqs[replay_start:ack_index] if s is not None] == list(range(1, answer["last_seq"] + 1))
    assert answer["replayed"] == answer["last_seq"]
    assert set(s for s in tab.seqs("race") if s) == set(range(1, total + 1))
    await first_tab.close()
    await tab.close()


async def emit_tokens_paced(stack: Stack, message_id: str, total: int) -> None:
    for i in range(1, total + 1):
        await stack.sio.emit("events", chat_event(message_id, i), room=room_of("alice"))
        if i % 10 == 0:
            await asyncio.sleep(0.001)  # pacing the emitter like a model, not synchronising the test


async def test_a_connection_without_a_principal_is_told_why(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    anonymous = await RawClient(stack.url).connect()
    with caplog.at_level(logging.WARNING, logger="asgi_resume"):
        answer = await anonymous.request("resume-stream", {"message_id": "m1", "last_seq": 0}, ack_id=1)
        again = await anonymous.request("resume-stream", {"message_id": "m1", "last_seq": 0}, ack_id=2)
    assert answer["error"] == "not_found"
    assert "no principal" in answer["detail"]
    assert "auth:token" in answer["detail"]
    assert again["detail"] == answer["detail"]
    hints = [r for r in caplog.records if "without a principal" in r.getMessage()]
    assert len(hints) == 1  # said once, however often it happens
    await anonymous.close()
