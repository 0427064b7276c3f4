"""One connection's outbound frames on their way to the client.

Owns: turning a batch of Engine.IO packets the app sent into what the client receives: stream
frames matched or appended in the stream log (under the connection's own principal) with one
call per batch and stamped with ``seq``/``epoch``, binary attachments kept behind their header,
resume requests answered in order with the live frames around them, and (when recovery is on)
recovery offsets. It also reads what the app tells the client that matters to the session: the
CONNECT reply that binds a principal, the calls the client owes an answer. Must not touch:
transports (websocket or polling framing), ASGI messages, the app.

A batch is rendered in order after one log call: a replay reads the log after every frame
queued before it was logged, and a live frame the replay already carried is dropped, so the
client sees each seq once and in order.
"""

from __future__ import annotations

import asyncio
import logging

import anyio

from asgi_resume import protocol, replay
from asgi_resume.frames import RESERVED, EventUnit, Item, template_digest
from asgi_resume.log import AppendRequest, LogUnavailable, StreamKey, StreamLog
from asgi_resume.recovery import Recovery
from asgi_resume.resume import ResumeRequest
from asgi_resume.rules import StreamFrame
from asgi_resume.runtime import Runtime
from asgi_resume.session import Session

logger = logging.getLogger("asgi_resume")

STAMPING_CACHE_SIZE = 256  # recent stream frames: their copies to other connections are stamped alike


class _ConnectReply:
    """The app's CONNECT reply in a namespace with recovery: it carries the pid, after the replay."""

    def __init__(self, frame: str, packet: protocol.Packet) -> None:
        self.frame, self.packet = frame, packet


class Outbound:
    def __init__(self, runtime: Runtime, session: Session) -> None:
        self.runtime = runtime
        self.session = session
        self.recovery = Recovery(runtime, session) if runtime.settings.recovery else None
        self._units: list[Item] = []
        self._pending: EventUnit | None = None  # a binary event waiting for its attachments
        self._deferred: list[ResumeRequest] = []  # requests that came by another transport
        self.lock = asyncio.Lock()  # transports of one session take turns: feed, then flush
        self.held = False  # its client left and the connection is held: it takes no stream over

    def pending(self, *, answer_deferred: bool = True) -> int:
        """Units fed and not flushed yet."""
        return len(self._units) + (len(self._deferred) if answer_deferred else 0)

    def needs_log(self, *, answer_deferred: bool = True) -> bool:
        """Does :meth:`flush` have frames to log or requests to answer? (Else it only passes frames on.)"""
        return (answer_deferred and bool(self._deferred)) or any(_needs_log(u) for u in self._units)

    def has_deferred(self) -> bool:
        return bool(self._deferred)

    def defer(self, request: ResumeRequest) -> None:
        """Answer ``request`` in the next flush, after what was fed before it (polling POSTs)."""
        self._deferred.append(request)

    @property
    def log(self) -> StreamLog:
        return self.runtime.log

    # -- feeding -----------------------------------------------------------------------------------

    def feed(self, item: Item) -> None:
        """Queue one packet (or request, or control message) for the next :meth:`flush`."""
        pending = self._pending
        if pending is not None:
            if isinstance(item, bytes):
                pending.attachments.append(item)
                if pending.complete:
                    self._queue(pending)
                    self._pending = None
                return
            if item in (protocol.PING_FRAME, protocol.NOOP_FRAME):
                self._units.append(item)  # harmless between a header and its attachments
                return
            # the attachments never came: give up on logging this one, keep the bytes
            self._units.extend([pending.raw, *pending.attachments])
            self._pending = None
        if isinstance(item, str):
            if item[:3] != "42[" and item[:1] == "4" and item[1:2] in ("0", "1", "2", "4", "5"):
                self._note(item)  # (an EVENT in "/" without ack id, most frames, tells nothing)
            unit = self._event_unit(item)
            if unit is None:
                self._units.append(item)
            elif not isinstance(unit, EventUnit) or unit.complete:
                self._queue(unit)
            else:
                self._pending = unit
            return
        self._units.append(item)

    def _queue(self, unit: EventUnit | _ConnectReply) -> None:
        if isinstance(unit, EventUnit) and unit.stream is not None:
            unit.order = self.runtime.order.fed(unit.stream, unit.content_digest())
        self._units.append(unit)

    def _note(self, frame: str) -> None:
        """What the app tells the client that the session keeps: a CONNECT's outcome, a call."""
        packet = protocol.peek(frame)
        if packet is None:
            return
        if packet.type == protocol.CONNECT:
            self.session.connected(packet.namespace, accepted=True)
        elif packet.type == protocol.CONNECT_ERROR:
            self.session.connected(packet.namespace, accepted=False)
        elif packet.type == protocol.DISCONNECT:
            self.session.disconnected(packet.namespace)
        elif packet.ack_id is not None:
            self.session.called(packet.namespace, packet.ack_id)

    def _event_unit(self, frame: str) -> EventUnit | _ConnectReply | None:
        """The unit for an event we stamp or log (``None``: the frame passes as it is)."""
        recovery = self.recovery
        stamping = self._stamping(frame)
        if stamping is not None:
            classified, template, digest = stamping
            packet = classified.packet
            namespace = packet.namespace
            principal = self.session.principals.get(namespace)
            recover = recovery is not None and recovery.wants(namespace, packet.ack_id)
            expected = packet.attachments if packet.type == protocol.BINARY_EVENT else 0
            if principal is not None:
                key = StreamKey._make((principal, namespace, classified.variant, classified.stream))
                return EventUnit(
                    frame, namespace, expected, self.log.now_ms(), key, classified.done, template, recover, digest
                )
            if recover:  # a connection without a principal logs nothing: only recovery offsets
                return EventUnit(frame, namespace, expected, self.log.now_ms(), recover=True)
            return None
        if recovery is None or not recovery.states or frame[:1] != protocol.EIO_MESSAGE:
            return None
        if frame[1:2] in ("2", "5"):
            peeked = protocol.peek(frame)
            if peeked is not None and recovery.wants(peeked.namespace, peeked.ack_id):
                expected = peeked.attachments if peeked.type == protocol.BINARY_EVENT else 0
                return EventUnit(frame, peeked.namespace, expected, self.log.now_ms(), recover=True)
        reply = recovery.is_reply(frame)
        return _ConnectReply(frame, reply) if reply is not None else None

    def _stamping(self, frame: str) -> tuple[StreamFrame, protocol.StampTemplate, str] | None:
        """How to stamp ``frame`` and its content's digest: shared by its copies (an emit to a room
        sends N equal frames)."""
        cache = self.runtime.stamping_cache
        if frame in cache:
            cached: tuple[StreamFrame, protocol.StampTemplate, str] | None = cache[frame]
            return cached
        classified = self.runtime.rules.classify(frame)
        template = protocol.stamp_template(frame, classified.packet, RESERVED) if classified is not None else None
        found = None
        if classified is not None and template is not None:
            found = (classified, template, template_digest(template))
        if classified is not None:  # (frames without a stream id are cheap to classify again)
            if len(cache) >= STAMPING_CACHE_SIZE:
                del cache[next(iter(cache))]
            cache[frame] = found
        return found

    # -- flushing ----------------------------------------------------------------------------------

    async def flush(self, *, answer_deferred: bool = True) -> list[Item]:
        """Log what was fed and return what to send, in order.

        ``answer_deferred=False``: keep the requests that came by another transport for a later
        flush (a websocket still probing an upgrade: the client drops what it carries until then).
        """
        units, self._units = self._units, []
        taken_ms = self.log.now_ms()  # everything fed before now is in this batch
        taken = self.runtime.order.fed_count  # (and numbered at most this, on every connection here)
        if self._deferred and answer_deferred:
            units += self._deferred
            self._deferred = []
        stream_units = [u for u in units if isinstance(u, EventUnit) and u.stream is not None]
        try:
            if stream_units:
                await self._append(stream_units)
                self._done_with(stream_units)  # logged: another connection's frames need not wait for them
            out: list[Item] = []
            segment: list[Item] = []
            for unit in units:  # a CONNECT reply ends a segment: what follows gets the new session's offsets
                segment.append(unit)
                if isinstance(unit, _ConnectReply):
                    out += await self._render(segment, taken_ms, taken)
                    segment = []
            return out + (await self._render(segment, taken_ms, taken) if segment else [])
        except Exception:  # a bug here must cost the stamps, never the frames
            logger.exception("asgi_resume failed to process a batch; sending it unchanged")
            return [f for unit in units for f in _unprocessed(unit)]
        finally:
            self._done_with(stream_units)

    def _done_with(self, stream_units: list[EventUnit]) -> None:
        order = self.runtime.order
        for unit in stream_units:
            assert unit.stream is not None
            order.logged(unit.stream, unit.order)

    async def _render(self, units: list[Item], taken_ms: int, taken: int) -> list[Item]:
        recovery = self.recovery
        if recovery is not None:
            await recovery.log([u for u in units if isinstance(u, EventUnit) and u.recover and not u.offset], taken_ms)
        # Frames of a stream that this batch also resumes wait for the replay, which
        # carries them; what it does not carry goes out right after it.
        session = self.session
        last_resume = {
            key: i
            for i, u in enumerate(units)
            if isinstance(u, ResumeRequest) and (key := session.key_of(u)) is not None
        }
        waiting: dict[StreamKey, list[EventUnit]] = {}
        out: list[Item] = []
        for i, unit in enumerate(units):
            if isinstance(unit, EventUnit):
                if recovery is not None and unit.recover and (recovery.holds(unit) or recovery.duplicate(unit)):
                    continue
                if unit.stream is not None and i < last_resume.get(unit.stream, -1):
                    waiting.setdefault(unit.stream, []).append(unit)
                elif not self._replayed(unit):
                    out += unit.frames()
            elif isinstance(unit, ResumeRequest):
                await self._after_others(unit, units, taken)
                out += await replay.answer(self.runtime, self.session, unit)
                key = session.key_of(unit)
                if key is not None and last_resume.get(key) == i:
                    for held in waiting.pop(key, ()):
                        if not self._replayed(held):
                            out += held.frames()
            elif isinstance(unit, _ConnectReply):
                assert recovery is not None
                out += await recovery.reply(unit.frame, unit.packet, taken_ms)
            else:
                out.append(unit)
        return out

    async def _after_others(self, request: ResumeRequest, units: list[Item], taken: int) -> None:
        """Let frames of the stream fed to another connection here before this batch reach the log first.

        A tab that joined mid-stream never gets live the frames emitted before it joined: another
        connection (a held one, the tab it reloads) logs them, and a replay that read the log before
        that connection's write landed would leave them out while the tab's live frames go on after
        them: a hole the answer cannot tell. Copies of frames in this batch are logged already.
        Bounded like the wait for emit order (``ASGI_RESUME_WRITE_TIMEOUT``).
        """
        key = self.session.key_of(request)
        if key is None or request.error is not None or not self.runtime.order.before(key, taken + 1):
            return
        mine = {u.content_digest() for u in units if isinstance(u, EventUnit) and u.stream == key}
        if not await self.runtime.order.turn(key, taken + 1, mine, self.runtime.settings.write_timeout):
            self.runtime.stats.order_waits_timed_out += 1

    def _replayed(self, unit: EventUnit) -> bool:
        replayed = self.session.replayed  # (empty unless this connection resumed something)
        return (
            bool(replayed)
            and unit.stream is not None
            and bool(unit.seq)
            and unit.stream in replayed
            and (self.session.was_replayed(unit.stream, unit.epoch, unit.seq))
        )

    # -- the stream log ----------------------------------------------------------------------------

    async def _append(self, units: list[EventUnit]) -> None:
        """Match or append the batch's stream frames: one log call, however many streams."""
        session, stats = self.session, self.runtime.stats
        pending: dict[StreamKey, list[EventUnit]] = {}
        for unit in units:
            assert unit.stream is not None
            pending.setdefault(unit.stream, []).append(unit)
            session.saw(unit.stream, unit.done)
        if not self.runtime.health.available():
            self._unlogged(pending, None)
            return
        if self.runtime.repairs_due():  # streams the log missed frames of start a new epoch first
            await self.runtime.repair()
            if not self.runtime.health.available():  # the repair found the log still failing
                self._unlogged(pending, None)
                return
        order, timeout = self.runtime.order, self.runtime.settings.write_timeout
        for key, group in pending.items():  # frames another tab here was fed first, and these lack, go first
            first = group[0].order
            if order.before(key, first) and not await order.turn(
                key, first, {unit.content_digest() for unit in group}, timeout
            ):
                stats.order_waits_timed_out += 1
        requests = [self._request(key, group) for key, group in pending.items()]
        stats.log_writes += 1
        try:
            if self.log.synchronous:  # nothing to wait for: no timer, no company
                results = await self.log.append(requests)
            else:
                async with asyncio.timeout(self.runtime.settings.write_timeout):
                    results = await self.runtime.appends.append(requests)
        except (LogUnavailable, TimeoutError) as exc:
            self._unlogged(pending, str(exc) or "timed out")
            return
        self.runtime.health.succeeded()
        for (key, group), result in zip(pending.items(), results, strict=True):
            if result.failed is not None:  # this stream alone: the log is up, and others were logged
                stats.log_failures += 1
                self._unlogged({key: group}, None)
                continue
            session.unlogged.pop(key, None)
            for unit, seq in zip(group, result.seqs, strict=True):
                if seq > 0:
                    unit.seq, unit.epoch = seq, result.epoch
                    stats.frames_stamped += 1
                else:  # its copy was logged before frames this connection got earlier: no seq for it
                    stats.frames_unmatched += 1
            session.followed(key, result.epoch, result.seqs, result.others_ms)

    def _request(self, key: StreamKey, group: list[EventUnit]) -> AppendRequest:
        session = self.session
        cursor_epoch, cursor_seq = session.cursors.get(key, (None, 0))
        return AppendRequest(
            key,
            [unit.entry() for unit in group],
            cursor_epoch,
            cursor_seq,
            session.started_ms,
            reset=key in session.unlogged,
            reset_epoch=session.unlogged.get(key, ""),
            connection=session.id,
            skipped=session.skipped.get(key, []),
            held=self.held,
        )

    def _unlogged(self, by_key: dict[StreamKey, list[EventUnit]], reason: str | None) -> None:
        """The log missed these frames: they go out unstamped, and the streams get a new epoch."""
        if reason is not None:
            self.runtime.health.failed(reason)
        for key, group in by_key.items():
            self.session.forget(key)
            self.runtime.stats.frames_unstamped += len(group)
        self.runtime.missed(self.session, by_key)

    async def release(self, handed_over: bool = False) -> None:
        """The connection is over: flag the streams it left in flight.

        A newcomer that later logs an orphaned stream starts a new epoch, so what was emitted while
        nobody logged it shows up as a gap instead of a silent hole. A connection whose client
        recovered its session on another one (``handed_over``) orphans nothing: that connection
        joined the rooms before it claimed the session, so nothing fell between the two.
        """
        session = self.session
        for unit in self._units:  # fed, never flushed (the connection was cut): nobody waits for them
            if isinstance(unit, EventUnit) and unit.stream is not None:
                self.runtime.order.logged(unit.stream, unit.order)
        if self.recovery is not None:
            await self.recovery.note("closed")
        orphaned = [] if handed_over else session.active_streams(self.runtime.settings.hold_idle)
        if not orphaned or not self.runtime.health.available():
            return
        try:
            with anyio.fail_after(self.runtime.settings.write_timeout):
                await self.log.release(orphaned, session.id)
        except (LogUnavailable, TimeoutError):
            pass  # a newcomer then continues the epoch: what was lost meanwhile is not flagged


def _needs_log(unit: Item) -> bool:
    if isinstance(unit, EventUnit):
        return unit.stream is not None or unit.recover
    return isinstance(unit, ResumeRequest | _ConnectReply)


def _unprocessed(unit: Item) -> list[Item]:
    """What to send for a unit when processing the batch failed: its original bytes."""
    if isinstance(unit, EventUnit):
        return [unit.raw, *unit.attachments]
    if isinstance(unit, _ConnectReply):
        return [unit.frame]
    return [] if isinstance(unit, ResumeRequest) else [unit]
