"""Engine.IO sessions: one per sid, whichever transport carries it (long-polling, then maybe a websocket).

Owns: one object per Engine.IO session that both transports serve (:class:`EngineIOSession`: its
pipeline, the sid an OPEN packet gives it, what a client frame tells about the session whatever
the transport (its Socket.IO packets, read by :func:`~asgi_resume.pipeline.inbound.inspect`; a
CLOSE: it left on purpose; the binary attachments of a request answered here), and its end), and
this process's sessions by sid (:class:`EngineIOSessions`: a long-polling session spans requests,
then may upgrade to a websocket that continues it). Must not touch: each transport's framing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from urllib.parse import parse_qs

from starlette.types import Scope

from asgi_resume import protocol
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.inbound import UNREAD, Effects, Unread, inspect
from asgi_resume.pipeline.outbound import Outbound
from asgi_resume.pipeline.resume import ResumeRequest
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.transport.polling_presence import ClientRequest, Polling, let_go

REFUSED = 400  # python-engineio's answer to a request for a session it does not have (any more)


def query_param(scope: Scope, name: str) -> str | None:
    raw = scope.get("query_string", b"")
    values = parse_qs(raw.decode("latin-1") if isinstance(raw, bytes) else raw).get(name)
    return values[0] if values else None


class EngineIOSession:
    """One Engine.IO session, whichever transport carries it (long-polling requests, a websocket).

    Its sid (``None`` until the app's OPEN packet gives it one, for a session that starts here),
    its pipeline (``outbound``; what is remembered of the connection: ``conn``), what a frame
    from its client means, and its end (it is no longer known by its sid).
    """

    __slots__ = ("conn", "outbound", "polling", "registry", "runtime", "sid", "websockets")

    def __init__(
        self, runtime: Runtime, registry: EngineIOSessions, scope: Scope, *, polling: bool, sid: str | None = None
    ) -> None:
        self.runtime = runtime
        self.registry = registry
        self.conn = Connection(scope, runtime.log.now_ms())
        self.polling = Polling() if polling else None  # a session that began on long-polling
        self.outbound = Outbound(runtime, self.conn)
        self.outbound.polling_session = self.polling  # (its replays in responses are counted: PollingReplays)
        self.outbound.streams.own_feed = self.polling  # (its frames wait for no response of its own)
        self.sid = sid
        self.websockets = 0  # websockets open on it (probes too): it is not forgotten while one is

    def opened(self, frame: str) -> dict[str, object] | None:
        """``frame`` is what the app sends the client: if it is the OPEN packet of a session that had
        no sid, the session is known by the sid it gives from now on. Its handshake, or ``None``."""
        if self.sid is not None:
            return None
        opening = protocol.handshake(frame)
        sid = opening.get("sid") if opening is not None else None
        if opening is None or not isinstance(sid, str):
            return None
        self.sid = sid
        if self.polling is not None:
            self.polling.sid = sid
        self.registry.add(sid, self)
        return opening

    async def client_text(self, text: str, later: Effects | None = None) -> ResumeRequest | str | Unread | None:
        """What a text frame from the client means here: a resume request to answer in its place,
        the frame the app gets instead (a CONNECT without its recovery fields), ``UNREAD`` (the app
        must not get it: see :func:`~asgi_resume.pipeline.inbound.inspect`), or ``None`` (it
        passes as it is). A CLOSE says the client left on purpose. ``later``: what the frame does
        to the session is added to it, to be done once the app has read it too."""
        kind = text[:1]
        if kind == protocol.EIO_MESSAGE:
            return await inspect(self.runtime, self.conn, text, later)
        if not kind.isascii():  # python-engineio reads the type with int(): "\uff14" is a MESSAGE to it
            return UNREAD
        if kind == protocol.EIO_CLOSE:  # (its payload, if any, does not matter to python-engineio)
            if later is None:
                await self._closed()
            else:
                later.add(self._closed)
        return None

    async def _closed(self) -> None:
        for state in self.conn.recovery.values():
            state.left_cleanly = True
        if self.polling is not None:
            self.polling.goodbye = True  # (its POST's answer ends the session: polling_post)

    def client_binary(self) -> bool:
        """A binary frame from the client: is it an attachment of a request answered here? (Then
        the app never sees it, as it never saw the request.)"""
        conn = self.conn
        if conn.drop_attachments > 0:
            conn.drop_attachments -= 1
            return True
        if conn.attachments_owed > 0:
            conn.attachments_owed -= 1  # (one of the app's binary packet's)
        return False

    def ended(self) -> None:
        """The session is over (its websocket ended, a CLOSE went either way): its sid is forgotten."""
        if self.sid is not None:
            self.registry.remove(self.sid, self)

    def client_request(self) -> ClientRequest:
        """One request of its long-polling client, while the app serves it (``with``): the client is there."""
        return ClientRequest(self.runtime, self.outbound, self.polling)

    async def let_go(self, reason: str, *, over: bool = False) -> None:
        """Its long-polling client is gone: released as a closed websocket's connection is (see
        :func:`~asgi_resume.transport.polling_presence.let_go`)."""
        await let_go(self.runtime, self.outbound, self.polling, reason, over=over)


class EngineIOSessions:
    """This process's Engine.IO sessions by sid: a polling session spans requests, then may upgrade.

    Bounded: sessions untouched for ``idle_s`` are forgotten (not while a websocket of theirs is
    open), the oldest first past ``limit``. A session forgotten while python-engineio may still
    have it is one whose requests would pass here unread from then on (a POST a failed upgrade
    lets python-engineio read again, say): no reply binds on its connection any more.
    """

    def __init__(self, idle_s: float = 120.0, limit: int = 100_000) -> None:
        self.idle_s = idle_s
        self.limit = limit
        self._items: OrderedDict[str, tuple[float, EngineIOSession]] = OrderedDict()

    def add(self, sid: str, item: EngineIOSession) -> None:
        now = time.monotonic()
        self._items[sid] = (now, item)
        self._items.move_to_end(sid)
        for _ in range(len(self._items)):  # (each at most once: a session kept is moved to the end)
            oldest_sid, (touched, oldest) = next(iter(self._items.items()))
            if len(self._items) <= self.limit:
                if now - touched < self.idle_s:
                    break
                if oldest.websockets:  # in use: kept, as if touched now
                    self._items[oldest_sid] = (now, oldest)
                    self._items.move_to_end(oldest_sid)
                    continue
            del self._items[oldest_sid]
            oldest.conn.overflowed = True

    def get(self, sid: str) -> EngineIOSession | None:
        found = self._items.get(sid)
        if found is None:
            return None
        if time.monotonic() - found[0] >= self.idle_s and not found[1].websockets:
            del self._items[sid]
            found[1].conn.overflowed = True
            return None
        self.add(sid, found[1])  # touch
        return found[1]

    def remove(self, sid: str, item: EngineIOSession) -> None:
        """Forget ``sid``, if it still maps to ``item``."""
        found = self._items.get(sid)
        if found is not None and found[1] is item:
            del self._items[sid]
