"""What the middleware takes from a client's frames, whatever the transport.

Owns: reading an inbound Socket.IO packet for what concerns us: a CONNECT (its auth names the
principal the connection will have in that namespace once the app accepts it, and starts the
clock a stream's first frame is matched from; with recovery on, its ``pid`` and ``offset`` are
taken out before the app sees it), a DISCONNECT (the client left on purpose: nothing to
recover), an ACK (the client answered one of the app's calls), and a ``resume-stream`` EVENT (a
:class:`ResumeRequest`, answered here, never seen by the app). Must not touch: I/O of its own
(a DISCONNECT's flagging of the streams in flight, the session's closing and the first
``Runtime.ready()`` go through the runtime and its guard).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import sys
from collections.abc import Awaitable, Callable

from asgi_resume import protocol
from asgi_resume.pipeline.connection import Connection, UnnotedConnect
from asgi_resume.pipeline.orphans import release_left
from asgi_resume.pipeline.recovery import Recovery
from asgi_resume.pipeline.recovery_state import RecoveryState
from asgi_resume.pipeline.resume import RATE_LIMITED, ResumeRequest, parse_request
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.protocol.recovery import strip_connect

logger = logging.getLogger("asgi_resume")


class Unread(enum.Enum):
    """A client frame the app must not get: python-engineio and python-socketio would read a packet
    in it that we cannot read (see :func:`inspect`)."""

    FRAME = "frame"


UNREAD = Unread.FRAME


class Effects:
    """What reading client frames does to their connection, to be done once the app has read them
    too (a long-polling POST: python-engineio refuses some unread, and says so only in its answer):
    ``actions`` in order, and the namespaces of the CONNECTs among them (counted as read and not
    noted on the connection, until :meth:`settled`)."""

    __slots__ = ("actions", "connects")

    def __init__(self) -> None:
        self.actions: list[Callable[[], Awaitable[None]]] = []
        self.connects: list[tuple[str, UnnotedConnect]] = []

    def add(self, action: Callable[[], Awaitable[None]]) -> None:
        self.actions.append(action)

    async def run(self, conn: Connection) -> None:
        """The app read the frames: do what they do (once). A failure is logged and the rest goes
        on; no reply binds on ``conn`` from then on (a CONNECT the app read may have gone uncounted)."""
        actions, self.actions = self.actions, []
        for action in actions:
            try:
                await action()
            except Exception:  # never let a client's frame break the connection (as inspect)
                conn.overflowed = True
                logger.exception("asgi_resume could not note what an inbound frame does; going on")

    def settled(self, conn: Connection) -> None:
        """The app answered (its answer said whether it read them): their CONNECTs are noted or
        never will be (once)."""
        connects, self.connects = self.connects, []
        for namespace, connect in connects:
            conn.connect_read(namespace, connect)


#: packets the app must not read otherwise than we do: a CONNECT names the principal bound at the
#: app's reply, a DISCONNECT ends what the connection follows (an EVENT we cannot read is ours if
#: it names the resume event, and the app's otherwise: an event named by a number, say)
_MUST_READ = ("40", "41")


async def inspect(
    runtime: Runtime, conn: Connection, frame: str, later: Effects | None = None
) -> ResumeRequest | str | Unread | None:
    """Note what ``frame`` (an Engine.IO MESSAGE) tells about the client.

    Returns a resume request (to be answered here), a frame the app should get instead of this
    one (a CONNECT without recovery fields), :data:`UNREAD` (the app must not get it), or ``None``
    (pass the frame on as it is). ``later``: what the frame does to the connection (a CONNECT's
    principal, a DISCONNECT, an ACK) is added to it, to be done once the app has read the frame,
    rather than now.

    python-socketio reads a packet's type, attachment count and ack id with ``int()`` and
    ``str.isdigit()``, which take any Unicode digit (``4\\uff12``, ``\\u0664``), and python-engineio reads a
    MESSAGE whose payload is JSON as its value (``4"2[...]"``): one frame could be a CONNECT or a
    resume request to the app and something else to us. No Socket.IO client sends such frames,
    nor CONNECTs or DISCONNECTs we cannot parse: they are not passed on. An EVENT we cannot parse
    is refused if it names the resume event, not passed on if its head is too long to tell, and
    the app's otherwise (an event named by a number, say).
    """
    head = frame[:2]
    if conn.attachments_owed:
        return _maybe_attachment(runtime, conn, frame)
    if head not in protocol.CLIENT_HEADS:
        kind = head[1:]
        return None if kind.isascii() and kind.isdigit() else UNREAD
    if head in _MUST_READ and frame[2:3].isdigit():
        return UNREAD  # (python-socketio reads "12-" after the type as an attachment count; no client sends one)
    try:
        packet = protocol.parse(frame)
        if packet is None:
            if head not in protocol.EVENT_HEADS:
                if head == "46":
                    _owe(conn, frame)
                return UNREAD if head in _MUST_READ else None
            if protocol.names_event(frame, runtime.settings.resume_event):
                # unreadable (an ack id python-socketio would never send, broken JSON): still ours,
                # and so are the attachments it says follow it
                conn.drop_attachments += protocol.declared_attachments(frame)
                return ResumeRequest(protocol.namespace_of(frame), None, error=UNREADABLE)
            # (which event a head too long for us names, we cannot tell: it could be a resume request)
            if not protocol.event_head_read(frame):
                return UNREAD
            _owe(conn, frame)
            return None
        if packet.type in (protocol.CONNECT, protocol.DISCONNECT) and not packet.namespace.isprintable():
            # python-socketio echoes a namespace in its reply as it is, and a record separator in it
            # splits a long-polling response there: the rest would read as a reply of its own
            return UNREAD
        if packet.type == protocol.CONNECT:
            return await _connect(runtime, conn, frame, packet, later)
        if packet.type in (protocol.ACK, protocol.BINARY_ACK):
            if packet.ack_id is not None:
                await _do(later, _answered(conn, packet.namespace, packet.ack_id))
            if packet.type == protocol.BINARY_ACK:
                _owe(conn, frame)
            return None
        if packet.type == protocol.DISCONNECT:
            await _do(later, _disconnected(runtime, conn, packet.namespace))
            return None
        if packet.event_name != runtime.settings.resume_event:
            if packet.type == protocol.BINARY_EVENT:
                _owe(conn, frame)
            return None
        if packet.type == protocol.BINARY_EVENT:
            conn.drop_attachments += packet.attachments  # they follow it: not the app's either
            return ResumeRequest(packet.namespace, packet.ack_id, error="a resume request carries no binary data")
        request = parse_request(packet, runtime.stream_key)
        limited = conn.resume_bucket.take(runtime.settings.resume_limit)
        if limited is not None:
            return dataclasses.replace(request, error=RATE_LIMITED, refusal=limited)
        return request
    except Exception:  # never let a client's frame break the connection
        logger.exception("asgi_resume could not inspect an inbound frame; passing it on")
        return UNREAD if head in _MUST_READ else None


UNREADABLE = "the resume request could not be read (its ack id or its JSON)"
_AN_ATTACHMENT = "the resume request came where the app takes a message for a binary packet's attachment"
_ALL_OWED = sys.maxsize  # (python-socketio waits for attachments of a binary packet that declares none, forever)


def _owe(conn: Connection, frame: str) -> None:
    """A binary packet's head the app gets: python-socketio takes the next messages for its
    attachments (all of them, for one that says none: it refuses each and waits on)."""
    awaited = protocol.attachments_awaited(frame)
    if awaited is not None:
        conn.attachments_owed += awaited or _ALL_OWED


def _maybe_attachment(runtime: Runtime, conn: Connection, frame: str) -> ResumeRequest | Unread | None:
    """A message python-socketio may take for an attachment of a binary packet the client sent it
    (if that packet was for a namespace it had connected), or read as a packet (if not): nothing in
    it is acted on here, and one we would act on is not passed on either, so that the app does not
    act on it alone: a CONNECT or a DISCONNECT reaches nobody, a resume request is refused. (The
    app's binary packet still waits for its attachments then: so does the count.)"""
    if frame[:2] in _MUST_READ:
        return UNREAD
    if protocol.names_event(frame, runtime.settings.resume_event):
        packet = protocol.peek(frame)
        if packet is None:
            return ResumeRequest(protocol.namespace_of(frame), None, error=UNREADABLE)
        return ResumeRequest(packet.namespace, packet.ack_id, error=_AN_ATTACHMENT)
    conn.attachments_owed -= 1
    return None


async def _do(later: Effects | None, effect: Callable[[], Awaitable[None]]) -> None:
    if later is None:
        await effect()
    else:
        later.add(effect)


def _answered(conn: Connection, namespace: str, ack_id: int) -> Callable[[], Awaitable[None]]:
    async def answered() -> None:
        conn.answered(namespace, ack_id)

    return answered


def _disconnected(runtime: Runtime, conn: Connection, namespace: str) -> Callable[[], Awaitable[None]]:
    async def disconnected() -> None:
        # flagged before the app hears it: what it emits after reaches this connection no more
        await release_left(runtime, conn, conn.disconnected(namespace, runtime.settings.hold_idle))
        if namespace in conn.recovery:
            Recovery(runtime, conn).ended(namespace)  # a goodbye: nothing to recover there

    return disconnected


async def _connect(
    runtime: Runtime, conn: Connection, frame: str, packet: protocol.Packet, later: Effects | None
) -> str | None:
    namespace = packet.namespace
    replacement, auth, claim = None, packet.data, None
    if runtime.settings.recovery:
        claim, replacement, auth = strip_connect(frame, packet)

    await runtime.ready()  # (the principal's key may come from the log: read before the app can reply)
    # read now, where a failure keeps the frame from the app (a token nested too deep for us, say)
    principal = runtime.resolver.resolve(conn.scope, auth)

    def note() -> None:  # (synchronous: done before the app's reply can go out, or at that reply)
        if namespace in conn.unbindable:
            return  # no reply binds there (see Connection.unnoted)
        if not conn.may_join(namespace):  # one namespace too many: not noted, and yet answered
            conn.overflowed = True
            return
        if namespace in conn.principals:
            # connected there already: python-socketio refuses this one (its reply is counted), and
            # what the connection has there stays as it was
            conn.connecting(namespace, None)
            return
        now = runtime.log.now_ms()
        conn.joined_ms[namespace] = now  # (a rejoin too: its first frames are not older entries it got)
        if runtime.settings.recovery:
            conn.recovery[namespace] = RecoveryState(namespace, now, claim)
        conn.connecting(namespace, principal)

    connect = UnnotedConnect(note)

    async def connecting() -> None:
        connect.run()

    if later is not None:
        conn.reading_connect(namespace, connect)
        later.connects.append((namespace, connect))
    await _do(later, connecting)
    return replacement
