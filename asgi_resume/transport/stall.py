"""Whether frames wait unlogged on a connection for long: its client stopped reading, or its log is slow.

Owns: the send to the client in progress (``sending``), and a watch over each step of the
connection's writer (a batch's log calls, then its sends): a step still out after
``STALLED_AFTER_S``, in its log calls or with frames waiting behind its sends, calls
``on_stall`` (a frame that comes while a send waits tells it sooner, in the transport). Must not
touch: what a stall means for the log (the transport tells the recovery sessions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: a step this long, in its log calls or with frames waiting behind its sends: frames wait unlogged
#: (well within the 0.3 s a claim waits before it trusts a connection's silence)
STALLED_AFTER_S = 0.05


class StallWatch:
    def __init__(self, on_stall: Callable[[], None], waiting: Callable[[], bool]) -> None:
        self.on_stall = on_stall
        self.waiting = waiting  # do frames wait behind the step?
        self.sending = False  # a send to the client is out (it waits while the client does not read)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """A step of the writer starts: watched until :meth:`stop`."""
        self._handle = asyncio.get_running_loop().call_later(STALLED_AFTER_S, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        """The step is still out (:meth:`stop` cancels the check): in its log calls (what it
        carries is unlogged), or sending with frames waiting behind it, it stalled; else (sending
        what is logged) watch on."""
        if not self.sending or self.waiting():
            self._handle = None
            self.on_stall()
            return
        self._handle = asyncio.get_running_loop().call_later(STALLED_AFTER_S, self._check)
