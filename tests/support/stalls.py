"""The end of a stalled-tab scenario: another tab of alice opens and gets the rest of stream ``m``,
the stalled tab reads again, and a third tab's resume from 0 must be in emit order."""

from __future__ import annotations

import socketio

from tests.support.app import chat_event, content_by_seq, room_of
from tests.support.raw import DeafClient, RawClient


async def another_tab_then_a_resume_from_zero(sio: socketio.AsyncServer, url: str, stalled: DeafClient) -> None:
    """Tokens 1-10 of ``m`` went to the stalled tab (and whoever else was open): a tab opens, gets
    11-20 and done; the stalled tab reads up to the end; a resume from 0 replays the log in emit
    order, each token once, and all of them unless it says ``gap``."""
    opened = await RawClient(url, auth={"token": "alice"}).connect()
    for i in range(11, 21):
        await sio.emit("events", chat_event("m", i), room=room_of("alice"))
    await sio.emit("events", chat_event("m", 21, done=True), room=room_of("alice"))
    await opened.wait_for(lambda f: isinstance(f, str) and '"done":true' in f)
    await stalled.read_until(lambda f: '"done":true' in f)  # the stalled tab reads again, up to the end
    resumed = await RawClient(url, auth={"token": "alice"}).connect()
    answer = await resumed.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=1)
    view = content_by_seq(resumed.events())  # (the replay comes before its answer)
    assert len(view) == answer["replayed"]
    tokens = [int(content.split()[0].removeprefix("tok")) if content else 21 for _, content in sorted(view.items())]
    assert tokens == sorted(set(tokens)), f"replayed out of order, or twice: {tokens} {answer}"
    if not answer["gap"]:
        assert tokens == list(range(1, 22))
    await opened.close()
    await resumed.close()
