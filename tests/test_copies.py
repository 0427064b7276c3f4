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


async def test_a_frame_only_a_follower_got_goes_out_unstamped(backend: dict[str, Any]) -> None:
    """While another tab leads and is alive, a frame only this tab was sent is not logged by it:
    it cannot know where that frame belongs among the leader's. It still arrives, unstamped."""
    sio = make_sio()
    app = make_app(sio, **backend)
    async with serve(app) as url:
        lead = await RawClient(url, auth={"token": "alice"}).connect()
        follower = await RawClient(url, auth={"token": "alice"}).connect()
        sids = [sid for sid, _ in sio.manager.get_participants("/", room_of("alice"))]
        await sio.emit("events", {"message_id": "f", "hello": "leader"}, to=sids[0])  # the first tab leads
        await lead.wait_for(lambda f: isinstance(f, str) and '"seq":1,' in f)
        stream = PacedStream(sio, "alice", "f", 300, pace=0.003)
        emitter = asyncio.create_task(stream.run())  # keeps the leader busy appending
        await lead.wait_seqs("f", 5)
        await sio.emit("events", {"message_id": "f", "only": "follower"}, to=sids[1])
        frame = await follower.wait_for(lambda f: isinstance(f, str) and '"only":"follower"' in f)
        assert '"seq"' not in str(frame)
        assert app.runtime.stats.frames_unmatched == 1
        emitter.cancel()
        await lead.close()
        await follower.close()
