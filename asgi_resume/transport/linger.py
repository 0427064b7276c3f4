"""How long a websocket's batch waits for more frames before its log call.

Owns: the wait itself and its bounds. Each log call costs the event loop CPU time: when frames
come fast, waiting a few loop turns (never more than ``LINGER_S``) makes one call carry many
frames. At a trickle (a frame every ``LINGER_BELOW_S`` or slower) the call goes at once. Must not
touch: the batch's content (:mod:`~asgi_resume.pipeline.batch`), the transport.
"""

from __future__ import annotations

import asyncio

from asgi_resume.pipeline.batch import Batch

LINGER_S = 0.001  # longest a batch waits for more frames before its log call (only while they keep coming)
LINGER_IDLE_TURNS = 3  # loop turns without a new frame that end the wait
LINGER_BATCH = 256
LINGER_BELOW_S = 0.0002  # only frames closer together than this make a batch wait for more


async def linger(batch: Batch) -> None:
    """Let frames that are on their way join ``batch``, while they keep coming (see the module)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_S
    seen, idle = batch.pending(), 0
    while idle < LINGER_IDLE_TURNS and seen < LINGER_BATCH and loop.time() < deadline:
        await asyncio.sleep(0)
        now = batch.pending()
        idle = idle + 1 if now == seen else 0
        seen = now
