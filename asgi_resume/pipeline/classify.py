"""What an outbound frame is to one connection: a stream event, a CONNECT reply, or a frame to pass.

Owns: classifying a frame the app sends (its stream key under this connection's principal, its
stamp template and content digest, shared by the copies of one emit through a process-wide
cache), and what the app tells the client that the connection keeps (a CONNECT's outcome, a call
the client owes an answer; the app disconnecting the client from a namespace has its streams in
flight flagged, in the background, by :mod:`~asgi_resume.pipeline.orphans`). Must not touch: the
log's calls (its own: it reads the log's clock only), the order of a batch, transports.
"""

from __future__ import annotations

import dataclasses

from asgi_resume import protocol
from asgi_resume.log import StreamKey
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.orphans import release_left
from asgi_resume.pipeline.recovery import Recovery
from asgi_resume.pipeline.rules import Stamping
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.pipeline.units import RESERVED, ConnectReply, EventUnit, sampled_digest, template_digest, text_over

STAMPING_CACHE_SIZE = 256  # recent stream frames: their copies to other connections are stamped alike...
#: ...of at most this many characters in all (with their parsed content and template, about three
#: times as many bytes): 256 frames of 256 KB held +197 MiB until newer frames pushed them out
STAMPING_CACHE_CHARS = 4 << 20


class Classifier:
    def __init__(self, runtime: Runtime, conn: Connection, recovery: Recovery | None) -> None:
        self.runtime = runtime
        self.conn = conn
        self.recovery = recovery
        self._max_frame = runtime.settings.max_frame_bytes  # (larger frames are never logged)

    def note(self, frame: str) -> None:
        """What the app tells the client that the connection keeps: a CONNECT's outcome, a call."""
        packet = protocol.peek(frame)
        if packet is None:
            return
        if packet.type == protocol.CONNECT:
            if frame[packet.data_offset : packet.data_offset + 1] != "{":  # (python-socketio's is {"sid": ...})
                self.conn.overflowed = True  # not a reply the app sends: from now on, none binds
                return
            self.conn.connected(packet.namespace, accepted=True)
        elif packet.type == protocol.CONNECT_ERROR:
            self.conn.connected(packet.namespace, accepted=False)
        elif packet.type == protocol.DISCONNECT:  # (the app sends it once it has let the client go)
            left = self.conn.disconnected(packet.namespace, self.runtime.settings.hold_idle)
            if left:
                self.runtime.in_background(release_left(self.runtime, self.conn, left))
            if self.recovery is not None:
                self.recovery.ended(packet.namespace)  # the app let it go there: nothing to recover
        elif packet.ack_id is not None:
            self.conn.called(packet.namespace, packet.ack_id)

    def unit(self, frame: str) -> EventUnit | ConnectReply | None:
        """The unit for an event we stamp or log (``None``: the frame passes as it is)."""
        recovery = self.recovery
        stamping = self._stamping(frame)
        if stamping is not None:
            classified = stamping.frame
            packet = classified.packet
            namespace = packet.namespace
            principal = self.conn.principals.get(namespace)
            recover = recovery is not None and recovery.wants(namespace, packet.ack_id)
            expected = packet.attachments if packet.type == protocol.BINARY_EVENT else 0
            if principal is not None:
                first = stamping.first
                if first is None:
                    stamping.first = principal
                key = StreamKey._make((principal, namespace, classified.variant, classified.stream))
                return EventUnit(
                    frame,
                    namespace,
                    expected,
                    self.runtime.log.now_ms(),
                    key,
                    classified.done,
                    stamping.template,
                    recover,
                    stamping.digest,
                    first == principal,  # another tab of its principal here was sent it first: a copy
                )
            if recover:  # a connection without a principal logs nothing: only recovery offsets
                return EventUnit(frame, namespace, expected, self.runtime.log.now_ms(), recover=True)
            return None
        if recovery is None or not recovery.states:
            return None
        if frame[:2] in protocol.EVENT_HEADS:
            peeked = protocol.peek(frame)
            if peeked is not None and recovery.wants(peeked.namespace, peeked.ack_id):
                expected = peeked.attachments if peeked.type == protocol.BINARY_EVENT else 0
                return EventUnit(frame, peeked.namespace, expected, self.runtime.log.now_ms(), recover=True)
        reply = recovery.is_reply(frame)
        return ConnectReply(frame, reply) if reply is not None else None

    def _stamping(self, frame: str) -> Stamping | None:
        """How to stamp ``frame`` and its content's digest: shared by its copies (an emit to a room
        sends N equal frames)."""
        runtime = self.runtime
        cache = runtime.stamping_cache
        if len(frame) > STAMPING_CACHE_CHARS:  # (compared, not hashed: a copy is a str of its own)
            large = runtime.large_stamping
            if large is not None and large[0] == frame:
                return large[1]
        elif frame in cache:
            return cache[frame]
        classified = runtime.rules.classify(frame)
        template = protocol.stamp_template(frame, classified.packet, RESERVED) if classified is not None else None
        found = None
        if classified is not None and template is not None:
            limit = self._max_frame  # (hot: a call only for a frame whose characters may be past it)
            too_large = len(frame) << 2 > limit and text_over(frame, limit)
            digest = sampled_digest(template) if too_large else template_digest(template)
            found = Stamping(classified, template, digest)
        if classified is not None and len(frame) > STAMPING_CACHE_CHARS:
            if found is not None:  # (its copies need the packet's header, not its parsed payload: 4x the frame)
                packet = dataclasses.replace(classified.packet, data=None)
                found = Stamping(dataclasses.replace(classified, packet=packet), found.template, found.digest)
            runtime.large_stamping = (frame, found)  # (kept apart: it would empty the cache)
        elif classified is not None:  # (frames without a stream id are cheap to classify again)
            chars = runtime.stamping_cache_chars + len(frame)
            while len(cache) >= STAMPING_CACHE_SIZE or chars > STAMPING_CACHE_CHARS:
                oldest = next(iter(cache))
                del cache[oldest]
                chars -= len(oldest)
            cache[frame] = found
            runtime.stamping_cache_chars = chars
        return found
