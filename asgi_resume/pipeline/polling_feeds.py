"""Long-polling sessions of a user whose frames may still wait in python-engineio, unlogged.

Owns: which long-polling sessions each principal has here, which of them may hold frames the app
sent before a given moment that the middleware has not logged yet (between its client's GETs, a
GET on its way to python-engineio's answer, a response being logged), and waiting until those
logged their next response. What the app sends a long-polling session reaches the middleware only
in the response to its client's next GET. A websocket tab of the same user that joined meanwhile
never gets those frames live, and it logged its own live frames ahead of them, under the seqs
they should have had: its replay ended before them, its frames carried wrong seqs, and when the
polling tab went away they were lost from every view with ``gap: false`` (found by attack). A
connection's first frames of a stream, and a replay, wait for them first (at most the write
timeout). Must not touch: responses, the log.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

#: A polling client asks again within a round trip of its last response: one that has not within
#: this long, or 1.5 times as long as it has lately taken (``Feed.asks_again_s``) up to
#: ``ASKS_AGAIN_MAX_S``, is not waited for (gone, as a reloaded tab's old session is)
ASKS_AGAIN_S = 0.25
ASKS_AGAIN_MAX_S = 1.0


def _asks_again_by(feed: Feed) -> float:
    """When ``feed``'s client should have asked again (monotonic)."""
    return feed.logged_at + min(ASKS_AGAIN_MAX_S, max(ASKS_AGAIN_S, 1.5 * feed.asks_again_s))


class Feed(Protocol):
    """A long-polling session as seen here (the transport's ``Polling``)."""

    #: what the app sends it reaches the middleware at once: a GET of its client waits in
    #: python-engineio, or the session went on on a websocket
    feeding: bool
    asked: bool  # a GET of its client reached the app, not answered yet, not seen waiting
    taking_ms: int  # python-engineio answered a GET with what it took then, being logged now (0: none)
    waits: int  # its responses (or replays) waiting here (in ``fed``) for other sessions' to be logged
    in_order: int  # its responses (or replays) waiting for frames fed before theirs (the feed order)
    logged_ms: int  # when python-engineio took the packets of its last response logged (the log's clock)
    logged_at: float  # monotonic time that response was logged
    asks_again_s: float  # how long its client has lately taken from a response to its next GET
    over: bool  # the session ended
    let_go: bool  # its client is gone

    @property
    def changed(self) -> asyncio.Event:
        """Set at each change of the above (a new event each time)."""
        ...

    def watch_parking(self) -> None:
        """Count loop iterations until its GET is answered: ``feeding`` when none was soon."""

    def waiting(self, waits: bool) -> None:
        """A response (or replay) of it waits in ``fed``, or one does no more."""

    def ordering(self, waits: bool) -> None:
        """A response (or replay) of it waits for frames fed before its own, or one does no more."""


def in_order(feed: Feed | None) -> AbstractContextManager[object]:
    """A wait of ``feed``'s response for frames fed before its own to be logged (the feed order):
    nobody waits in :meth:`PollingFeeds.fed` for that response meanwhile, since it may be them it
    waits for (found by review: a tab's first frame waited for a polling tab's response, which
    waited in the feed order for that tab's earlier frame, until the deadline)."""
    return _NOT_POLLING if feed is None else _InOrder(feed)


class _InOrder:
    __slots__ = ("feed",)

    def __init__(self, feed: Feed) -> None:
        self.feed = feed

    def __enter__(self) -> None:
        self.feed.ordering(True)

    def __exit__(self, *exc: object) -> None:
        self.feed.ordering(False)


_NOT_POLLING = nullcontext()  # (websocket connections, nearly all: hot)


def _rank(feed: Feed) -> tuple[int, int]:
    """Which of two responses waiting for each other goes first: the one taken first."""
    return (feed.taking_ms or 1 << 62, id(feed))


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
        """Sessions of ``principal`` (but ``mine``) that may hold frames sent before ``since_ms``
        unlogged, and should log them soon: a GET of its client is being answered, or its client
        took a response a moment ago and will ask again (see ``ASKS_AGAIN_S``: a client far away
        takes longer, and is waited for as long).

        A GET that reached the app is answered a few loop iterations later (found by review: a
        tab that went on when the GET arrived logged its frame ahead of the ones the response
        carried, under their seqs); one that python-engineio keeps waiting feeds (``watch_parking``).
        Two responses that wait for each other: the one taken later lets the other go first.
        """
        feeds = self._by_principal.get(principal)
        if not feeds:
            return []
        now = time.monotonic()
        rank = _rank(mine) if mine is not None else None
        behind = []
        for feed in list(feeds):
            if feed is mine or feed.feeding or feed.over or feed.let_go or feed.logged_ms >= since_ms:
                continue
            if feed.taking_ms:
                if feed.in_order or (feed.waits and rank is not None and rank < _rank(feed)):
                    continue  # it may wait for mine
            elif not feed.asked and _asks_again_by(feed) <= now:
                continue
            behind.append(feed)
        return behind

    async def fed(self, principal: str, since_ms: int, seconds: float, mine: Feed | None = None) -> bool:
        """Wait until no session of ``principal`` (but ``mine``) may hold frames sent before
        ``since_ms`` unlogged, ``seconds`` at most; ``False`` if they still may then."""
        behind = self.behind(principal, since_ms, mine)
        if not behind:
            return True
        deadline = time.monotonic() + seconds
        if mine is not None:
            mine.waiting(True)
        try:
            while behind:
                now = time.monotonic()
                if now >= deadline:
                    return False
                until = deadline
                for feed in behind:
                    feed.watch_parking()
                    if not (feed.asked or feed.taking_ms):
                        until = min(until, _asks_again_by(feed))
                changes = [asyncio.ensure_future(feed.changed.wait()) for feed in behind]
                try:
                    await asyncio.wait(changes, timeout=until - now, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for change in changes:
                        change.cancel()
                behind = self.behind(principal, since_ms, mine)
            return True
        finally:
            if mine is not None:
                mine.waiting(False)
