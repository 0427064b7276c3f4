"""The queue between the app's ``send`` and a websocket connection's writer task.

Owns: its bounds (past ``OUTBOX_SIZE`` queued items the app's writer for the connection waits,
unless the connection keeps recovery sessions: see :meth:`Outbox.put_late`; past ``OUTBOX_SIZE``
of the client's requests, its reader waits), when the oldest item
still queued was queued (what a batch logged now may claim to have), what the writer's take of at
most ``OUTBOX_SIZE`` items changes, and the signals the writer reads besides the app's items.
Must not touch: what the items mean, sending them (``websocket``).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

from asgi_resume.pipeline.resume import ResumeRequest
from asgi_resume.pipeline.units import Incoming

#: items the writer takes at a time, and queued per connection before python-engineio's writer for
#: it waits (unless the connection keeps recovery sessions: :meth:`Outbox.put_late`)
OUTBOX_SIZE = 1024


class Signal(enum.Enum):
    END = "end"  # queued after the app returns: the writer ends once it has sent what came before
    NUDGE = "nudge"  # frames were fed that need the log: the writer sends them


END, NUDGE = Signal.END, Signal.NUDGE


class Outbox(asyncio.Queue[Incoming | Signal]):
    """asyncio's queue, not an anyio stream: it costs no checkpoint per frame on the hot path.

    Unbounded as a queue: the bound is :meth:`put_waiting`'s, so that :meth:`put_late` can pass it.
    """

    def __init__(self, clock: Callable[[], int]) -> None:
        super().__init__()
        self._clock = clock
        self._room = asyncio.Event()  # set when the writer took items (a waiting put looks again)
        #: when the oldest item queued now was queued (the log's clock), ``None`` when none is: a
        #: batch logged meanwhile has what was fed before then, not what is still queued
        self.oldest_ms: int | None = None
        self.requests = 0  # the client's requests queued (see put_request)
        self._waiting = 0  # puts waiting for room

    async def put_waiting(self, item: Incoming | Signal) -> None:
        """Queue ``item``, waiting while ``OUTBOX_SIZE`` items are queued (for a connection without
        recovery sessions: nothing needs to know when it was queued)."""
        while self.qsize() >= OUTBOX_SIZE:
            await self._wait_for_room()
        self.put_nowait(item)

    async def put_request(self, request: ResumeRequest) -> None:
        """Queue a request of the client's, waiting while ``OUTBOX_SIZE`` of its requests are
        queued: only its own requests keep its reader waiting (not the app's frames, which may keep
        the queue over its bound: the client's pongs, read after the request, must not starve)."""
        while self.requests >= OUTBOX_SIZE:
            await self._wait_for_room()
        self.requests += 1
        self.put_late(request)

    def put_late(self, item: Incoming | Signal) -> None:
        """Queue ``item`` at once, past the bound if need be. For a connection with recovery
        sessions the app's writer never waits: what the app emitted before a claim must reach this
        connection (and its log) before anything it emits after, not wait in python-engineio's
        queue while a later batch tells the claim that everything before it was logged."""
        if self.oldest_ms is None and not isinstance(item, Signal):
            self.oldest_ms = self._clock()
        self.put_nowait(item)

    def put_soon(self, signal: Signal) -> None:
        """Queue a signal at once (no clock: the hot path of a connection with recovery)."""
        self.put_nowait(signal)

    async def _wait_for_room(self) -> None:
        self._waiting += 1
        try:
            self._room.clear()
            await self._room.wait()
        finally:
            self._waiting -= 1

    def taken(self, items: list[Incoming | Signal]) -> None:
        """The writer took ``items`` (at most ``OUTBOX_SIZE``, oldest first: a backlog is sent, and
        logged, a bounded batch at a time; the writer takes them itself, a call less per batch)."""
        if self.requests:
            self.requests -= sum(isinstance(item, ResumeRequest) for item in items)
        if self.oldest_ms is not None and self.empty():
            self.oldest_ms = None  # (else the oldest left is younger: the older time stays, safely;
            # the connection is then behind: see WebSocketConnection._write)
        if self._waiting:
            self._room.set()
