"""Long-polling sessions of a user whose frames may still wait in python-engineio, unfed.

Owns: which long-polling sessions each principal has here, which of them may hold frames the app
sent before a given moment that the middleware has not been fed yet (no GET of its client was
waiting, and its last response was taken before that moment), and waiting until those logged
their next response. What the app sends a long-polling session reaches the middleware only in the
response to its client's next GET. A websocket tab of the same user that joined meanwhile never
gets those frames live, and it logged its own live frames ahead of them, under the seqs they
should have had: its replay ended before them, its frames carried wrong seqs, and when the polling
tab went away they were lost from every view with ``gap: false`` (found by attack). A connection's
first frames of a stream, and a replay, wait for them first (at most the write timeout). Must not
touch: responses, the log.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Protocol

import anyio

#: A polling client asks again within a round trip of its last response: one that has not within
#: this long is not waited for (gone, as a reloaded tab's old session is, or too slow for it to help)
ASKS_AGAIN_S = 0.25


class Feed(Protocol):
    """A long-polling session as seen here (the transport's ``Polling``)."""

    #: what the app sends it reaches the middleware at once: a GET of its client waits in
    #: python-engineio, or the session went on on a websocket
    feeding: bool
    logged_ms: int  # when python-engineio took the packets of its last response logged (the log's clock)
    logged_at: float  # monotonic time that response was logged
    over: bool  # the session ended
    let_go: bool  # its client is gone

    @property
    def changed(self) -> asyncio.Event:
        """Set when it feeds at once again, or logged a response (a new one each time)."""
        ...


class PollingFeeds:
    def __init__(self) -> None:
        self._by_principal: dict[str, weakref.WeakSet[Feed]] = {}
        self._swept_at = 8  # principals there were after the last sweep (a sweep when doubled: amortised O(1))

    def note(self, principal: str, feed: Feed) -> None:
        """``feed`` is a long-polling session of ``principal`` (said at each of its responses)."""
        feeds = self._by_principal.get(principal)
        if feeds is None:
            if len(self._by_principal) >= 2 * self._swept_at:
                self._sweep()
            feeds = self._by_principal[principal] = weakref.WeakSet()
        feeds.add(feed)

    def _sweep(self) -> None:
        """Forget principals whose sessions are all gone (found by review: a user who polled once
        and left is never asked about again, and her entry stayed for the life of the process)."""
        for gone in [principal for principal, feeds in self._by_principal.items() if not feeds]:
            del self._by_principal[gone]
        self._swept_at = max(8, len(self._by_principal))

    def any_of(self, principal: str) -> bool:
        """Has ``principal`` a long-polling session here? (Hot: a dict lookup.)"""
        return bool(self._by_principal.get(principal))  # (an entry whose sessions are gone: swept by note)

    def behind(self, principal: str, since_ms: int, mine: Feed | None = None) -> list[Feed]:
        """Sessions of ``principal`` (but ``mine``) that may hold frames sent before ``since_ms``,
        unfed, and whose client should ask for them soon (see ``ASKS_AGAIN_S``)."""
        feeds = self._by_principal.get(principal)
        if not feeds:
            return []
        recent = time.monotonic() - ASKS_AGAIN_S
        return [
            feed
            for feed in list(feeds)
            if feed is not mine
            and not (feed.feeding or feed.over or feed.let_go)
            and feed.logged_ms < since_ms
            and feed.logged_at > recent
        ]

    async def fed(self, principal: str, since_ms: int, seconds: float, mine: Feed | None = None) -> bool:
        """Wait until no session of ``principal`` (but ``mine``) may hold frames sent before
        ``since_ms`` unfed, ``seconds`` at most; ``False`` if they still may then."""
        deadline = time.monotonic() + seconds
        while behind := self.behind(principal, since_ms, mine):
            now = time.monotonic()
            if now >= deadline:
                return False
            until = min(deadline, min(feed.logged_at for feed in behind) + ASKS_AGAIN_S)
            with anyio.move_on_after(until - now):
                await behind[0].changed.wait()
        return True
