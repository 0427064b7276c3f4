"""One log call for the appends of every connection that asks in the same loop turn.

Owns: merging the appends asked for in one loop turn into one :meth:`StreamLog.append` call and
handing each caller its own results (or the failure). Must not touch: what an append means
(:mod:`~asgi_resume.log.base`), deadlines (the caller's guard).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from asgi_resume.log.base import AppendRequest, AppendResult, StreamLog


class GroupCommit:
    """One log call for the appends of every connection that asks in the same loop turn.

    An emit to a room wakes every member's writer at once; instead of one round trip each, their
    requests go out together (the log runs them in order, each still atomic).
    """

    def __init__(self, log: StreamLog) -> None:
        self.log = log
        self._waiting: list[tuple[Sequence[AppendRequest], asyncio.Future[list[AppendResult]]]] = []
        self._ends: float | None = None  # the soonest deadline of the callers waiting (the loop's clock)
        self._calls: set[asyncio.Task[None]] = set()

    async def append(self, requests: Sequence[AppendRequest], within: float | None = None) -> list[AppendResult]:
        """``requests``' results. ``within``: seconds the caller waits at most; the merged call is
        given up at the soonest of its callers' (``TimeoutError``): one timer per round trip, not
        one per caller (a room's tabs each have one)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[AppendResult]] = loop.create_future()
        if not self._waiting:
            # the call's task takes what is waiting when it first runs, in the loop's next
            # iteration: every caller of this one has joined by then
            call = loop.create_task(self._run())
            self._calls.add(call)  # (the loop keeps only a weak reference to a task)
            call.add_done_callback(self._calls.discard)
        if within is not None:
            ends = loop.time() + within
            if self._ends is None or ends < self._ends:
                self._ends = ends
        self._waiting.append((requests, future))
        return await future  # (a caller that gives up cancels its own future, not the others' call)

    async def _run(self) -> None:
        batch, self._waiting = self._waiting, []
        ends, self._ends = self._ends, None
        merged = [request for requests, _ in batch for request in requests]
        try:
            async with asyncio.timeout_at(ends):  # (None: no timer)
                results = await self.log.append(merged)
        except Exception as exc:  # noqa: BLE001 - every caller gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(TimeoutError() if isinstance(exc, TimeoutError) else exc)
                    future.exception()  # a caller that gave up (timed out) leaves it unread: no warning
            return
        start = 0
        for requests, future in batch:
            if not future.done():
                future.set_result(results[start : start + len(requests)])
            start += len(requests)
