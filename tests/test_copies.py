"""One log entry per logical emit: copies of a frame to several tabs share one entry and one seq.

Both logs, in one process (the multi-worker cases are in test_workers.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import Stack
from tests.support.app import PacedStream, chat_event, content_by_seq, make_app, make_sio, room_of
from tests.support.raw import RawClient
from tests.support.server import serve

pytestmark = pytest.mark.anyio


def same(message_id: str, content: str) -> dict[str, Any]:
    return {"message_id": message_id, "data": {"type": "chat:completion", "data": {"content": content}}}


async def test_tabs_share_one_entry_and_one_seq_per_emit(stack: Stack) -> None:
    tabs = [await RawClient(stack.url, auth={"token": "alice"}).connect() for _ in range(3)]
    payloads = ["x", "x", "y", "x", "x", "x", "z", "z"] * 10  # identical deltas in a row are still entries
    for payload in payloads:
        await stack.sio.emit("events", same("copies", payload), room=room_of("alice"))
    for tab in tabs:
        assert await tab.wait_seqs("copies", len(payloads)) == list(range(1, len(payloads) + 1))
        view = content_by_seq(tab.events())
        assert [view[s] for s in sorted(view)] == payloads
    answer = await tabs[0].request("resume-stream", {"message_id": "copies", "last_seq": 0}, ack_id=1)
    assert answer["last_seq"] == len(payloads)  # one entry per emit, not per copy
    assert answer["replayed"] == len(payloads)
    for tab in tabs:
        await tab.close()


async def test_a_tab_joining_mid_stream_gets_the_same_seqs(stack: Stack) -> None:
    first = await RawClient(stack.url, auth={"token": "alice"}).connect()
    stream = PacedStream(stack.sio, "alice", "join", 120, pace=0.002)
    emitter = asyncio.create_task(stream.run())
    await stream.wait_sent(40)
    second = await RawClient(stack.url, auth={"token": "alice"}).connect()
    await emitter
    for tab in (first, second):
        await tab.wait_for(lambda f: isinstance(f, str) and '"done":true' in f)
    first_view, second_view = content_by_seq(first.events()), content_by_seq(second.events())
    assert second_view.items() <= first_view.items()  # the same seq for the same frame
    assert sorted(second_view) == list(range(min(second_view), 122))  # contiguous from where it joined
    assert min(second_view) > 40
    await first.close()
    await second.close()


async def test_a_frame_sent_to_one_tab_only_is_still_logged(backend: dict[str, Any]) -> None:
    """The tab that gets extra frames leads the stream: it logs them, the other tab matches the rest."""
    sio = make_sio()
    app = make_app(sio, **backend)
    async with serve(app) as url:
        lead = await RawClient(url, auth={"token": "alice"}).connect()
        lead_sid = next(iter(sio.manager.get_participants("/", room_of("alice"))))[0]
        other = await RawClient(url, auth={"token": "alice"}).connect()
        await sio.emit("events", chat_event("m", 1), to=lead_sid)  # only this tab: it leads
        await lead.wait_seqs("m", 1)
        await sio.emit("events", chat_event("m", 2), room=room_of("alice"))
        await sio.emit("events", chat_event("m", 3), to=lead_sid)
        await sio.emit("events", chat_event("m", 4), room=room_of("alice"))
        assert await lead.wait_seqs("m", 4) == [1, 2, 3, 4]
        assert await other.wait_seqs("m", 2) == [2, 4]
        await lead.close()
        await other.close()


async def test_a_frame_only_one_tab_got_is_stamped_at_once(backend: dict[str, Any]) -> None:
    """No frame waits for another connection: one sent to one tab only, while a stream flows to
    both, goes out stamped on that tab; the other tab's seqs step over it; a replay from the start
    has every emit once."""
    sio = make_sio()
    app = make_app(sio, **backend)
    async with serve(app) as url:
        first = await RawClient(url, auth={"token": "alice"}).connect()
        second = await RawClient(url, auth={"token": "alice"}).connect()
        sids = [sid for sid, _ in sio.manager.get_participants("/", room_of("alice"))]
        stream = PacedStream(sio, "alice", "f", 300, pace=0.003)
        emitter = asyncio.create_task(stream.run())
        await first.wait_seqs("f", 5)
        extra = {"message_id": "f", "only": "second", "data": {"type": "note", "data": {}}}
        await sio.emit("events", extra, to=sids[1])
        frame = await second.wait_for(lambda f: isinstance(f, str) and '"only":"second"' in f)
        assert '"seq"' in str(frame)
        await emitter
        for tab in (first, second):
            await tab.wait_for(lambda f: isinstance(f, str) and '"done":true' in f)
        assert app.runtime.stats.frames_unmatched == 0
        answer = await first.request("resume-stream", {"message_id": "f", "last_seq": 0}, ack_id=1)
        assert answer["replayed"] == 302  # 300 tokens, the done frame and the second tab's own frame
        replayed = [f for f in first.frames if isinstance(f, str) and '"only":"second"' in f]
        assert len(replayed) == 1
        assert sorted(content_by_seq(second.events())) == list(range(1, 303))
        await first.close()
        await second.close()
