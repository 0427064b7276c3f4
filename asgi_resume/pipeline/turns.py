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
        self._waiting: deque[tuple[asyncio.Future[None], int]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that hands turns out, while any wait
        self._owed = 0  # iterations to pass without a turn: the last one was worth that many more

    async def take(self, weight: int = 1) -> None:
        """Wait for a turn. ``weight``: the turn's work in ordinary turns' (a page of large frames
        is several pages' bytes): that many iterations pass before the next turn is given."""
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        self._waiting.append((turn, weight))
        if self._loop is not loop:  # nobody was waiting (or only on a loop that is gone)
            self._loop = loop
            loop.call_soon(self._next, loop)
        await turn

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            return
        if self._owed:
            self._owed -= 1
        else:
            while self._waiting:
                turn, weight = self._waiting.popleft()
                if not turn.done() and turn.get_loop() is loop:  # (a cancelled waiter gave its turn up)
                    turn.set_result(None)
                    self._owed = weight - 1
                    break
        if self._waiting:
            loop.call_soon(self._next, loop)  # the next one in the next iteration
        else:
            self._loop = None
