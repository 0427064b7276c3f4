"""Holds: a connection whose client left while its streams were in flight, kept open for the app.

The app is not told that the client left yet: the transport answers its pings and the pipeline
keeps logging what it sends, so a reload resumes everything. Owns: whether a connection may be
held (a principal of its own, streams in flight or a recoverable session, no answer it owes the
app, room under ``ASGI_RESUME_MAX_HOLDS`` and ``ASGI_RESUME_MAX_HOLDS_PER_PRINCIPAL``, or a hold
that holds less to end for it: see :meth:`Holds._make_room`), a hold's
states (:class:`HoldState`), when it ends (what the app sends that ends it: :func:`ends_connection`),
and the process-wide registry (:class:`Holds`).

A hold ends when another connection of the same principal took its streams over (it receives
them live or resumed them), when the app asks the absent client something (an event with an ack
id), when its streams are done (plus ``hold_grace``) or idle (``hold_idle``), its client
recovered the session elsewhere, ``hold_max`` passed, the app closed the connection, or the
server shuts down. Must not touch: transports (the websocket answers the pings and tells the
app at the end), what frames mean.
"""

from __future__ import annotations

import enum
import logging
import time

import anyio

from asgi_resume import protocol
from asgi_resume.config import Settings
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.recovery import Recovery
from asgi_resume.pipeline.units import Outgoing, Passthrough
from asgi_resume.stats import Stats, Throttle, fault

logger = logging.getLogger("asgi_resume")

RECOVERY_POLL_S = 0.25  # how often a held connection asks whether its client recovered elsewhere


def ends_connection(item: Outgoing) -> bool:
    """Does the app end the connection with ``item`` (an Engine.IO CLOSE, a Socket.IO DISCONNECT,
    the ASGI close)? What a held connection's absent client would have answered by leaving."""
    if isinstance(item, str):
        return protocol.ends_connection(item)
    return isinstance(item, Passthrough) and item.message.get("type") == "websocket.close"


class HoldState(enum.Enum):
    NOT_HELD = "not held"  # the client is there, or left and the app was told at once
    HELD = "held"  # the client left; the app is not told yet
    ENDED = "ended"  # the hold is over: the app is told the client left


class Holds:
    """This process's holds: how many (in all, per principal), and ending them all at shutdown."""

    def __init__(self, settings: Settings, stats: Stats) -> None:
        self.settings = settings
        self.stats = stats
        self._throttle = Throttle()
        self._active: dict[Hold, None] = {}  # (the oldest first)
        self._by_principal: dict[str, int] = {}
        self._making_room = 0  # holds ended to make room for another, until they have ended
        self.shutting_down = False

    def admit(self, hold: Hold, owner: str) -> bool:
        """Room for one more hold of ``owner``? (Counted when admitted.) When every hold of the
        process is taken, one that holds less makes room (see :meth:`_make_room`)."""
        stats, settings = self.stats, self.settings
        of_owner = self._by_principal.get(owner, 0)
        full = stats.holds_active - self._making_room >= settings.max_holds
        if of_owner >= settings.max_holds_per_principal or (full and not self._make_room(owner, hold.conn)):
            stats.holds_refused += 1
            skipped = self._throttle.allow("hold_refused")
            if skipped is not None:
                logger.warning(
                    "not holding %s: %d connections already held, %d of them this user's "
                    "(ASGI_RESUME_MAX_HOLDS, ASGI_RESUME_MAX_HOLDS_PER_PRINCIPAL; %d more not logged)",
                    hold.sid,
                    stats.holds_active,
                    of_owner,
                    skipped,
                    extra=fault("hold_refused", held=stats.holds_active, skipped=skipped),
                )
            return False
        self._active[hold] = None
        self._by_principal[owner] = of_owner + 1
        stats.holds_active += 1
        stats.holds_started += 1
        return True

    def _make_room(self, owner: str, conn: Connection) -> bool:
        """End a hold so that one of ``owner`` (for ``conn``) can start: the oldest hold without a
        stream (in flight, or done within the grace), when ``conn`` has one (a recoverable session
        only); else the oldest of a principal with more holds than ``owner`` would have. False:
        none holds less. (Many principals' connections dropped without streams took every hold:
        found by attack; so did streams idle past ``hold_idle`` until they were read as ``start``
        reads them, and a hold for a stream's grace was ended for another's, losing its title.)"""
        victim, reason = None, "its room went to a connection with a stream in flight"
        if self._has_streams(conn):
            victim = next((h for h in self._active if not h.ending and not self._has_streams(h.conn)), None)
        if victim is None:
            reason = "its room went to a user with fewer holds"
            mine = self._by_principal.get(owner, 0) + 1
            most = max(self._by_principal.items(), key=lambda item: item[1], default=("", 0))
            if most[1] > mine:
                victim = next((h for h in self._active if not h.ending and h.owner == most[0]), None)
        if victim is None:
            return False
        self._making_room += 1
        victim.making_room = True
        victim.end(reason)
        return True

    def _has_streams(self, conn: Connection) -> bool:
        """Would a hold of ``conn`` log streams besides its recoverable session?"""
        return bool(conn.held_streams(self.settings.hold_idle, self.settings.hold_grace))

    def _ended(self, hold: Hold, owner: str) -> None:
        self._active.pop(hold, None)
        if hold.making_room:
            self._making_room -= 1
        self.stats.holds_active -= 1
        left = self._by_principal.pop(owner, 1) - 1
        if left:
            self._by_principal[owner] = left

    def shut_down(self) -> None:
        """The server is going down: end every hold, and start no new one."""
        if not self.shutting_down:
            self.shutting_down = True
            logger.info("server shutting down: ending %d held connections", len(self._active))
        for hold in list(self._active):
            hold.end("the server is shutting down")


class Hold:
    """One connection's hold: at most one, started when its client leaves."""

    def __init__(self, holds: Holds, conn: Connection, recovery: Recovery | None) -> None:
        self.holds = holds
        self.conn = conn
        self.recovery = recovery
        self.sid: str | None = None  # (known when it starts: a websocket learns it from its OPEN packet)
        self.state = HoldState.NOT_HELD
        self.handed_over = False  # its client's streams or session went on on another connection
        self.owner = ""  # the principal it is counted against
        self.making_room = False  # ended to make room for another hold
        self._end = anyio.Event()
        self._wake = anyio.Event()
        self._reason = ""
        self._started_ms = 0
        self._recoverable = False

    def start(self, now_ms: int, sid: str | None) -> bool:
        """The client left: hold the connection? (Then :meth:`run` it, and tell the app after.)"""
        conn, settings = self.conn, self.holds.settings
        self.sid = sid
        if self.holds.shutting_down:
            return False
        streams = conn.held_streams(settings.hold_idle, settings.hold_grace)
        recoverable = self.recovery is not None and self.recovery.recoverable
        if not (streams or recoverable):
            return False
        owner = next((principal for principal in conn.principals.values() if principal), None)
        if owner is None:  # nothing of its own is logged: a hold would keep nothing
            return False
        if conn.calls:  # the app waits for this client's answer: it must learn it left
            logger.info("not holding %s: its client left owing the app an answer", self.sid)
            return False
        if not self.holds.admit(self, owner):
            return False
        self.state, self.owner, self._started_ms = HoldState.HELD, owner, now_ms
        self._recoverable = recoverable
        if streams:
            state = "in flight" if streams[0] in conn.in_flight else "just done"
            what = f"streams {state} {[key.label() for key in streams[:5]]}"
        else:
            what = "a recoverable session"
        logger.info("client of %s left with %s: holding the connection", self.sid, what)
        return True

    @property
    def ending(self) -> bool:
        """Told to end (it ends within a loop iteration or so)."""
        return self._end.is_set()

    def wake(self) -> None:
        """Frames went out (and were logged): look again whether the hold should end."""
        if self.state is HoldState.HELD:
            self._wake.set()

    def end(self, reason: str) -> None:
        """End it now (the app closed the connection, the server shuts down)."""
        self._reason = self._reason or reason
        self._end.set()
        self._wake.set()

    async def run(self) -> None:
        """Until the hold ends (see the module's docstring); then the app may be told."""
        settings, conn, recovery = self.holds.settings, self.conn, self.recovery
        started = time.monotonic()
        reason = ""
        # a recoverable session is held for the recovery window, so it keeps getting (and logging)
        # what the app sends its rooms, as the Node server keeps a session's packets
        recover_until = started + settings.recovery_window if self._recoverable else 0.0
        next_poll = started + RECOVERY_POLL_S
        try:
            with anyio.move_on_after(settings.hold_max):
                if recovery is not None and self._recoverable:
                    await recovery.notes.tell("left")
                while not self._end.is_set():
                    if conn.calls:
                        reason = "the app asked its absent client something"
                        break
                    if conn.taken_over(self._started_ms, settings.hold_idle, settings.hold_grace):
                        reason = "another connection took its streams over"
                        self.handed_over = True
                        break
                    now = time.monotonic()
                    active = [
                        at + settings.hold_idle for at in conn.in_flight.values() if now < at + settings.hold_idle
                    ]
                    # streams still flowing: look again when they could have gone idle; else end after the grace
                    until = max(max(active) if active else conn.last_frame_at + settings.hold_grace, recover_until)
                    if until <= now:
                        reason = "streams went idle" if conn.in_flight else "streams done"
                        break
                    if recovery is not None and now < recover_until:
                        if now >= next_poll:
                            next_poll = now + RECOVERY_POLL_S
                            if await recovery.notes.claimed():
                                reason = "its client recovered the session on another connection"
                                self.handed_over = True
                                break
                        until = min(until, next_poll)
                    self._wake = anyio.Event()
                    with anyio.move_on_after(until - now):
                        await self._wake.wait()  # the writer wakes us when frames came
        finally:
            reason = reason or self._reason or f"held for hold_max ({settings.hold_max:g}s)"
            self.holds._ended(self, self.owner)
            self.state = HoldState.ENDED
            logger.info("hold of %s ended after %.1fs: %s", self.sid, time.monotonic() - started, reason)
