"""A reconnect storm: many tabs resume at once, and not one frame is lost (correctness, not timing:
the time it takes is measured by benchmarks/replay.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.app import emit_tokens, make_app, make_sio
from tests.support.raw import RawClient
from tests.support.server import serve

pytestmark = pytest.mark.anyio
TABS, FRAMES = 150, 100


async def test_many_tabs_resuming_at_once_lose_nothing(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, **backend)
    async with serve(app) as url:
        owner = await RawClient(url, auth={"token": "alice"}).connect()
        await emit_tokens(sio, "alice", "storm", 1, FRAMES)
        await owner.wait_seqs("storm", FRAMES)
        tabs = await asyncio.gather(*(RawClient(url, auth={"token": "alice"}).connect() for _ in range(TABS)))
        answers = await asyncio.gather(
            *(
                tab.request("resume-stream", {"message_id": "storm", "last_seq": 0}, ack_id=1, timeout=60)
                for tab in tabs
            )
        )
        assert all(answer["ok"] and answer["replayed"] == FRAMES for answer in answers), answers[:3]
        for tab in tabs:
            assert tab.seqs("storm") == list(range(1, FRAMES + 1))
        await asyncio.gather(*(tab.close() for tab in [*tabs, owner]))
