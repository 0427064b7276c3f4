"""Whether a connection's sends to its client have stalled: the client stopped reading.

Owns: the send in progress (``sending``, counted in ``sends``), and a watch over a batch's sends
while frames wait behind them: a send unfinished for ``STALLED_AFTER_S`` then calls ``on_stall``
(a frame that comes while a send waits tells it sooner, in the transport). Must not touch: what
a stall means for the log (the transport tells the recovery sessions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

STALLED_AFTER_S = 0.05  # a send this long, with frames waiting behind it: the client stopped reading


class StallWatch:
    def __init__(self, on_stall: Callable[[], None]) -> None:
        self.on_stall = on_stall
        self.sending = False  # a send to the client is out (it waits while the client does not read)
        self.sends = 0  # sends started
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Frames wait behind the sends that follow: watch them until :meth:`stop`."""
        self._check(-1)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self, sends: int) -> None:
        """The same send (``sends``) still out since the last check: stalled. Else watch on."""
        if self.sending and self.sends == sends:
            self._handle = None
            self.on_stall()
            return
        self._handle = asyncio.get_running_loop().call_later(STALLED_AFTER_S, self._check, self.sends)
