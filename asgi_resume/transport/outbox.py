"""The queue between the app's ``send`` and a websocket connection's writer task.

Owns: its bound (past ``OUTBOX_SIZE`` queued items the app's writer for the connection waits),
and the signals the writer reads besides the app's items.
Must not touch: what the items mean, sending them (``websocket``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum

from asgi_resume.pipeline.units import Incoming

OUTBOX_SIZE = 1024  # frames queued per connection before python-engineio's writer for it waits


class Signal(enum.Enum):
    END = "end"  # queued after the app returns: the writer ends once it has sent what came before
    NUDGE = "nudge"  # frames were fed that need the log: the writer sends them


END, NUDGE = Signal.END, Signal.NUDGE


class Outbox(asyncio.Queue[Incoming | Signal]):
    """asyncio's queue, not an anyio stream: it costs no checkpoint per frame on the hot path."""

    def __init__(self) -> None:
        super().__init__(OUTBOX_SIZE)

    async def put_waiting(self, item: Incoming | Signal) -> None:
        """Queue ``item``, waiting only when the queue is full."""
        try:
            self.put_nowait(item)
        except asyncio.QueueFull:
            await self.put(item)

    def put_soon(self, item: Incoming | Signal) -> None:
        """Queue ``item`` unless the queue is full (a full queue wakes the writer anyway)."""
        with contextlib.suppress(asyncio.QueueFull):
            self.put_nowait(item)
