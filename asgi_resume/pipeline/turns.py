"""Turns: one at a time per event loop iteration, process-wide, first come first served.

Owns: handing out turns to work that must not take the loop for long stretches however much of
it is waiting (resumes' first reads, replay pages). Must not touch: what the turns are for.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Turns:
    """One turn per event loop iteration, process-wide, first come first served.

    A resume takes a turn before its first read, and a replay page before it is rendered and sent:
    however many replays are going on (a reconnect storm, clients that ask again and again), the
    loop does one page of them per iteration, and live frames, which take a few iterations to go
    out, wait for a few pages at most instead of a page of every replay. Nothing is held while a
    page is sent: a client that does not read keeps nobody else from their turn.
    """

    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that hands turns out, while any wait

    async def take(self) -> None:
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        self._waiting.append(turn)
        if self._loop is not loop:  # nobody was waiting (or only on a loop that is gone)
            self._loop = loop
            loop.call_soon(self._next, loop)
        await turn

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            return
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done() and turn.get_loop() is loop:  # (a cancelled waiter gave its turn up)
                turn.set_result(None)
                break
        if self._waiting:
            loop.call_soon(self._next, loop)  # the next one in the next iteration
        else:
            self._loop = None
