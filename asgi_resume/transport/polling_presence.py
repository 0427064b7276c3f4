"""Is a long-polling session's client still there? No connection close tells it here.

Owns: what the transport keeps of a long-polling session's client (:class:`Polling`, held by
its :class:`~asgi_resume.transport.engineio.EngineIOSession`), counting the requests of a
session's client while the app serves them, the timer that
notices a client silent for ``AWAY_S`` (probably gone: its streams in flight are flagged) and then
for Engine.IO's ping interval + timeout (python-engineio has given up on it), and releasing a
session whose client is gone as a closed websocket's connection is. The
other signals (the client left mid-poll, a CLOSE, a refused sid) come from the GET and POST
handlers. Must not touch: bodies, frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import anyio

from asgi_resume.pipeline.outbound import Outbound
from asgi_resume.pipeline.runtime import Runtime

logger = logging.getLogger("asgi_resume")

# A polling client always has a GET waiting in python-engineio but for the round trip between a
# response and its next GET: one that sent no request for this long has probably lost its network.
# What the app sends it meanwhile waits in python-engineio's queue, in no log, so its streams in
# flight are flagged then (a resume from another tab says ``gap``; a newcomer starts a new epoch)
# rather than at python-engineio's ping timeout (45 s by default). If it comes back, its own next
# append continues the epoch and unflags them.
AWAY_S = 2.0
#: python-engineio answers a GET it holds packets for within a few event loop iterations of the GET
#: reaching the middleware (3, python-engineio 4.15 on CPython 3.11, bare and inside open-webui
#: 0.12.4); layers between the middleware and the app add their own (a Starlette
#: ``BaseHTTPMiddleware`` about 5), and time when they look something up (found by review: with
#: 7 such layers, or one that awaits 1 ms, a GET was taken for waiting before it was answered).
#: A GET not answered after this many iterations and ``PARKED_S`` from when the app read it waits
#: for what the app sends next
PARKED_HOPS = 32
PARKED_S = 0.1


@dataclass(eq=False, slots=True, weakref_slot=True)
class Polling:
    """A long-polling session's client as the transport sees it: is it still there? (The polling modules keep it.)

    Frames reach the middleware only in the responses to the client's GETs: a client that stops
    polling leaves what the app sends it in python-engineio's queue, in no log. When it is gone
    its session is released as a closed websocket's is.
    """

    sid: str = ""  # its Engine.IO sid, once python-engineio gave it one
    silence_s: float = 0.0  # Engine.IO's ping interval + timeout: a client silent so long is gone (0: unknown)
    requests: int = 0  # its requests the app is serving now
    seen_at: float = 0.0  # monotonic time the last of them ended
    timer: asyncio.TimerHandle | None = None  # fires when it has been silent for AWAY_S, then for silence_s
    let_go: bool = False  # its session was let go (until the app answers one of its requests again)
    over: bool = False  # a CLOSE ended the session, one way or the other: nothing more to watch
    goodbye: bool = False  # its client POSTed a CLOSE
    unread_replays: int = 0  # bytes of responses with replays the server's buffer holds (PollingReplays)
    unread_principal: str = ""
    # (what PollingFeeds asks: may the app's frames wait in python-engineio for it, unfed?)
    feeding: bool = False  # what the app sends it reaches us at once: its GET waits, or it went on on a websocket
    asked: bool = False  # a GET of its client reached the app, not answered yet, not seen waiting for the app
    taking_ms: int = 0  # python-engineio answered a GET with what it took then, being logged now (0: none)
    waits: int = 0  # its responses (or replays) waiting for other sessions of its user to log theirs first
    in_order: int = 0  # its responses (or replays) waiting for frames fed before theirs to be logged
    logged_ms: int = 0  # when python-engineio took the packets of its last response logged
    logged_at: float = 0.0  # monotonic time that response was logged
    asks_again_s: float = 0.0  # how long its client has lately taken from a response to its next GET
    asked_at: float = 0.0  # monotonic time its GET reached the app, or the app read it
    _gets: int = 0  # GETs of its client so far
    _watched: int = 0  # the GET whose loop iterations are being counted (watch_parking)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def changed(self) -> asyncio.Event:
        return self._changed

    def asks(self) -> None:
        """A GET of its client reached the app: python-engineio answers it within a few loop
        iterations with what it holds, or keeps it waiting for what the app sends next."""
        now = time.monotonic()
        self.asked, self.feeding, self.taking_ms, self.asked_at = True, False, 0, now
        self._gets += 1
        if self.logged_at:  # (the longest lately: a slow GET counts at once, a fast one wears it down)
            self.asks_again_s = max(now - self.logged_at, 0.8 * self.asks_again_s)
        self._tell()

    def read_by_app(self) -> None:
        """The app read its GET (python-engineio, through the layers before it)."""
        self.asked_at = time.monotonic()

    def watch_parking(self) -> None:
        """Somebody waits for its GET's response: if none began ``PARKED_HOPS`` loop iterations
        from now and ``PARKED_S`` after the app read the GET, python-engineio held nothing for it
        and keeps the GET waiting: it feeds."""
        if self.asked and self._watched != self._gets:
            self._watched = self._gets
            asyncio.get_running_loop().call_soon(self._hop, PARKED_HOPS, self._gets)

    def _hop(self, left: int, get: int) -> None:
        if not self.asked or get != self._gets:
            return  # answered (or asked again) meanwhile
        if left:
            asyncio.get_running_loop().call_soon(self._hop, left - 1, get)
            return
        early = self.asked_at + PARKED_S - time.monotonic()
        if early > 0:
            asyncio.get_running_loop().call_later(early, self._hop, 0, get)
            return
        self.asked, self.feeding = False, True
        self._tell()

    def answers(self, taken_ms: int) -> None:
        """python-engineio answers its GET with the packets it took at ``taken_ms`` (0: none to log)."""
        self.asked = self.feeding = False
        self.taking_ms = taken_ms
        self._tell()

    def logged(self, taken_ms: int) -> None:
        """What python-engineio took for a response at ``taken_ms`` is logged (0: the response failed)."""
        if taken_ms:
            self.logged_ms, self.logged_at = max(self.logged_ms, taken_ms), time.monotonic()
        self.taking_ms = 0
        self._tell()

    def upgraded(self, upgraded: bool) -> None:
        """The session went on on a websocket (what the app sends it reaches us at once), or back."""
        self.asked, self.feeding = False, upgraded
        self._tell()

    def waiting(self, waits: bool) -> None:
        """A response (or replay) of it waits for other sessions' (or does no more)."""
        self.waits += 1 if waits else -1
        self._tell()

    def ordering(self, waits: bool) -> None:
        """A response (or replay) of it waits for frames fed before its own (or does no more)."""
        self.in_order += 1 if waits else -1
        self._tell()

    def _tell(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class ClientRequest:
    """One request of the session's client, while the app serves it: the client is there."""

    def __init__(self, runtime: Runtime, outbound: Outbound, polling: Polling | None) -> None:
        self.runtime, self.outbound, self.polling = runtime, outbound, polling

    def __enter__(self) -> None:
        polling = self.polling
        if polling is not None:
            polling.requests += 1
            if polling.timer is not None:
                polling.timer.cancel()
                polling.timer = None

    def __exit__(self, *exc: object) -> None:
        conn, polling = self.outbound.conn, self.polling
        if polling is None:
            return
        polling.requests -= 1
        polling.seen_at = time.monotonic()
        if polling.requests or polling.over or polling.let_go or conn.upgraded:
            return
        away_s = min(AWAY_S, polling.silence_s) if polling.silence_s else AWAY_S
        polling.timer = asyncio.get_running_loop().call_later(away_s, self._away)

    def _still_silent(self) -> Polling | None:
        """The timer fired: the session's polling state if its client stayed silent (and the server
        is not shutting down), else None."""
        polling = self.polling
        assert polling is not None
        polling.timer = None
        return None if polling.requests or self.runtime.closing else polling

    def _away(self) -> None:
        """No request for ``AWAY_S``: flag the streams in flight; later, the ping timeout lets it go."""
        polling = self._still_silent()
        if polling is None:
            return
        self.runtime.in_background(flag_away(self.outbound, polling))
        if polling.silence_s:
            rest = max(0.0, polling.silence_s - AWAY_S)
            polling.timer = asyncio.get_running_loop().call_later(rest, self._silent)

    def _silent(self) -> None:
        """No request for Engine.IO's ping interval + timeout: python-engineio has given up on it too."""
        if self._still_silent() is not None:
            self.runtime.in_background(let_go(self.runtime, self.outbound, self.polling, "it stopped polling"))


async def let_go(
    runtime: Runtime, outbound: Outbound, polling: Polling | None, reason: str, *, over: bool = False
) -> None:
    """The client of this polling session is gone: release it, as a closed websocket's connection is.

    Its streams in flight are flagged (a newcomer starts a new epoch: a resume says ``gap``), and its
    recovery sessions closed (a claim gets a normal connect). ``over``: a CLOSE ended the session.
    Done before the response that tells the client, so that nothing it does next comes first.
    """
    conn = outbound.conn
    if polling is None or conn.upgraded:
        return  # on a websocket now: that transport says when it ends
    polling.over = polling.over or over
    if polling.let_go:
        return
    polling.let_go = True
    async with outbound.lock:  # after any response being rewritten: what it carries is logged first
        with anyio.CancelScope(shield=True):
            flagged = await outbound.release(last_seen=polling.seen_at or None)
    if flagged:  # (said when it matters, as a hold is)
        streams = [key.label() for key in flagged[:5]]
        logger.info(
            "client of polling session %s is gone (%s): streams in flight %s flagged", polling.sid, reason, streams
        )
    else:
        logger.debug("client of polling session %s is gone (%s)", polling.sid, reason)


async def flag_away(outbound: Outbound, polling: Polling) -> None:
    """The client of this polling session sent no request for ``AWAY_S``: flag its streams in flight."""
    conn = outbound.conn
    if conn.upgraded or polling.let_go or polling.requests:
        return
    seen_at = polling.seen_at
    async with outbound.lock:  # after any response being rewritten: what it carries is logged first
        if polling.requests or conn.upgraded or polling.let_go or polling.seen_at != seen_at:
            return  # it came back while the lock was taken: nothing to flag
        with anyio.CancelScope(shield=True):
            flagged = await outbound.away(seen_at)
    if flagged:
        streams = [key.label() for key in flagged[:5]]
        logger.info(
            "client of polling session %s sent no request for %.0f s: streams in flight %s flagged",
            polling.sid,
            AWAY_S,
            streams,
        )


def silence_s(opening: dict[str, object]) -> float:
    """After how long without a request python-engineio gives up on a client (0: it does not say)."""
    interval, timeout = opening.get("pingInterval"), opening.get("pingTimeout")
    if not isinstance(interval, int | float) or not isinstance(timeout, int | float) or interval < 0 or timeout < 0:
        return 0.0
    return (interval + timeout) / 1000
