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
client sees each seq once and in order. What is rendered is handed to the transport as it is
ready (:meth:`Outbound.send`): a replay goes out a page at a time (``replay.answer``), each page
once the one before was taken, and the batch's live frames of that stream wait behind it; the
connection's later frames wait for the batch. So a connection has one replay in flight at most,
and a second request is answered after it, in order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import assert_never

from asgi_resume import protocol
from asgi_resume.guard import Deadline
from asgi_resume.log import AppendRequest, LogUnavailable, StreamKey, StreamLog
from asgi_resume.pipeline import replay
from asgi_resume.pipeline.recovery import Recovery
from asgi_resume.pipeline.replay import Deliver
from asgi_resume.pipeline.resume import ResumeRequest
from asgi_resume.pipeline.rules import StreamFrame
from asgi_resume.pipeline.session import Session
from asgi_resume.pipeline.units import (
    RESERVED,
    ConnectReply,
    EventUnit,
    Incoming,
    Outgoing,
    Passthrough,
    Unit,
    template_digest,
)
from asgi_resume.runtime import Runtime

logger = logging.getLogger("asgi_resume")

_NONE_HELD: tuple[int, ...] = ()
STAMPING_CACHE_SIZE = 256  # recent stream frames: their copies to other connections are stamped alike


class Outbound:
    def __init__(self, runtime: Runtime, session: Session) -> None:
        self.runtime = runtime
        self.session = session
        self.recovery = Recovery(runtime, session) if runtime.settings.recovery else None
        self._units: list[Unit] = []
        self._pending: EventUnit | None = None  # a binary event waiting for its attachments
        self._stream_units: list[EventUnit] = []  # the units fed that belong to a stream
        self._answers = False  # a resume request or a CONNECT reply was fed: the batch answers it
        self._deferred: list[ResumeRequest] = []  # requests that came by another transport
        self.lock = asyncio.Lock()  # transports of one session take turns: feed, then flush
        self.held = False  # its client left and the connection is held: it takes no stream over
        self._handed: tuple[int, tuple[int, ...]] = (0, _NONE_HELD)  # how far :meth:`send` handed its batch over

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

    def feed(self, item: Incoming) -> None:
        """Queue one packet (or request, or other ASGI message) for the next :meth:`flush`."""
        pending = self._pending
        if pending is not None:
            if isinstance(item, bytes):
                pending.attachments.append(item)
                if pending.complete:
                    self._queue(pending)
                    self._pending = None
                return
            if item in (protocol.EIO_PING, protocol.EIO_NOOP):
                self._units.append(item)  # harmless between a header and its attachments
                return
            # the attachments never came: give up on logging this one, keep the bytes
            self._units.extend([pending.raw, *pending.attachments])
            self._pending = None
        if isinstance(item, str):
            if item[:3] != protocol.PLAIN_EVENT_HEAD and protocol.concerns_session(item):  # (most frames: not)
                self._note(item)
            unit = self._event_unit(item)
            if unit is None:
                self._units.append(item)
            elif not isinstance(unit, EventUnit) or not unit.expected_attachments or unit.complete:
                self._queue(unit)
            else:
                self._pending = unit
            return
        if isinstance(item, ResumeRequest):
            self._answers = True
        self._units.append(item)

    def _queue(self, unit: EventUnit | ConnectReply) -> None:
        if isinstance(unit, EventUnit):
            if unit.stream is not None:
                unit.order = self.runtime.order.fed(unit.stream, unit.content_digest())
                self._stream_units.append(unit)
        else:
            self._answers = True
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

    def _event_unit(self, frame: str) -> EventUnit | ConnectReply | None:
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
        return ConnectReply(frame, reply) if reply is not None else None

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

    async def flush(self, *, answer_deferred: bool = True, taken_ms: int | None = None) -> list[Outgoing]:
        """Log what was fed and return what to send, in order (replays whole: see :meth:`send`)."""
        out: list[Outgoing] = []

        async def collect(items: list[Outgoing]) -> bool:
            out.extend(items)
            return True

        await self.send(collect, answer_deferred=answer_deferred, taken_ms=taken_ms)
        return out

    async def send(self, deliver: Deliver, *, answer_deferred: bool = True, taken_ms: int | None = None) -> None:
        """Log what was fed and hand what to send to ``deliver``, in order.

        ``deliver`` is called with what is ready whenever the batch is about to wait (a replay's
        next page, a log read), so a replay goes out a page at a time (see :func:`replay.answer`).
        ``answer_deferred=False``: keep the requests that came by another transport for a later
        flush (a websocket still probing an upgrade: the client drops what it carries until then).
        ``taken_ms``: when what was fed was taken from the app (a polling GET's response: python-
        engineio took everything queued for it then), if not now.
        """
        units, self._units = self._units, []
        stream_units, self._stream_units = self._stream_units, []
        answers, self._answers = self._answers, False
        if taken_ms is None:
            taken_ms = self.log.now_ms()  # everything fed before now is in this batch
        if self._deferred and answer_deferred:
            units += self._deferred
            self._deferred = []
            answers = True
        self._handed = (0, _NONE_HELD)  # nothing of this batch handed over yet
        if not answers and self.recovery is None:  # most batches: frames only, nothing to answer (inline: hot)
            try:
                if stream_units:
                    try:
                        await self._append(stream_units)
                    finally:  # logged (or never to be): other connections' frames of these keys may go now
                        logged = self.runtime.order.logged
                        for event in stream_units:
                            logged(event.stream, event.order)  # type: ignore[arg-type]  # (stream units have one)
                replayed = self.session.replayed  # (empty unless this connection resumed something)
                out: list[Outgoing] = []
                for unit in units:
                    if isinstance(unit, EventUnit):
                        if not replayed or not self._replayed(unit):
                            out += unit.frames()
                    else:
                        assert not isinstance(unit, ResumeRequest | ConnectReply)
                        out.append(unit)
            except Exception:  # a bug here must cost the stamps, never the frames
                logger.exception("asgi_resume failed to process a batch; sending it unchanged")
                out = [f for unit in units for f in _unprocessed(unit)]
            await deliver(out)
            return
        taken = self.runtime.order.fed_count  # (what was fed, here, before this batch was taken)
        try:
            try:
                if stream_units:
                    await self._append(stream_units)
            finally:  # logged (or never to be): other connections' frames of these keys may go now
                order = self.runtime.order
                for unit in stream_units:
                    assert unit.stream is not None
                    order.logged(unit.stream, unit.order)
            start = 0  # a CONNECT reply ends a segment: what follows gets the new session's offsets
            for i, each in enumerate(units):
                if isinstance(each, ConnectReply):
                    await self._render(units, start, i + 1, taken_ms, taken, deliver)
                    start = i + 1
            if start < len(units):
                await self._render(units, start, len(units), taken_ms, taken, deliver)
        except Exception:  # a bug here must cost the stamps, never the frames
            logger.exception("asgi_resume failed to process a batch; sending what is left of it unchanged")
            upto, held = self._handed
            left = [units[index] for index in held] + units[upto:]
            await deliver([f for unit in left for f in _unprocessed(unit)])

    async def _render(
        self, units: list[Unit], start: int, stop: int, taken_ms: int, taken: int, deliver: Deliver
    ) -> None:
        """Render ``units[start:stop]`` and hand it to ``deliver``, in order.

        ``self._handed`` follows what was handed over (every unit before an index, but those held
        back for a replay), so a failure sends the rest unchanged and nothing twice.
        """
        recovery = self.recovery
        if recovery is not None:
            recovering = [u for u in units[start:stop] if isinstance(u, EventUnit) and u.recover and not u.offset]
            await recovery.log(recovering, taken_ms)
        # Frames of a stream that this batch also resumes wait for the replay, which
        # carries them; what it does not carry goes out right after it.
        session = self.session
        last_resume = {
            key: i
            for i in range(start, stop)
            if isinstance(u := units[i], ResumeRequest) and (key := session.key_of(u)) is not None
        }
        waiting: dict[StreamKey, list[int]] = {}
        out: list[Outgoing] = []
        for i in range(start, stop):
            unit = units[i]
            match unit:
                case EventUnit():
                    if (
                        recovery is not None
                        and unit.recover
                        and (recovery.waits_for_reply(unit) or recovery.duplicate(unit))
                    ):
                        continue
                    if unit.stream is not None and i < last_resume.get(unit.stream, -1):
                        waiting.setdefault(unit.stream, []).append(i)
                    elif not self._replayed(unit):
                        out += unit.frames()
                case ResumeRequest():
                    # what came before it goes first; then the replay, a page at a time
                    self._handed = (i + 1, _held(waiting))
                    if out:
                        await deliver(out)
                        out = []
                    await self._after_others(unit, units, taken)
                    await replay.answer(self.runtime, self.session, unit, deliver)
                    key = session.key_of(unit)
                    if key is not None and last_resume.get(key) == i:
                        for j in waiting.pop(key, ()):
                            held = units[j]
                            assert isinstance(held, EventUnit)
                            if not self._replayed(held):
                                out += held.frames()
                case ConnectReply():
                    assert recovery is not None
                    self._handed = (i, _held(waiting))
                    if out:
                        await deliver(out)
                    out = await recovery.reply(unit.frame, unit.packet, taken_ms)
                case str() | bytes() | Passthrough():
                    out.append(unit)
                case _:
                    assert_never(unit)
        self._handed = (stop, _NONE_HELD)  # (nothing waits past the segment's last resume request)
        if out:
            await deliver(out)

    async def _after_others(self, request: ResumeRequest, units: list[Unit], taken: int) -> None:
        """Let frames of the stream fed to another connection here before this batch reach the log first.

        A tab that joined mid-stream never gets live the frames emitted before it joined: another
        connection (a held one, the tab it reloads) logs them, and a replay that read the log before
        that connection's write landed would leave them out while the tab's live frames go on after
        them: a hole the answer cannot tell. Copies of frames in this batch are logged already.
        Bounded like the wait for emit order (``ASGI_RESUME_WRITE_TIMEOUT``).
        """
        key = self.session.key_of(request)
        order = self.runtime.order
        if key is None or request.error is not None or not order.before(key, taken + 1):
            return
        mine = {u.content_digest() for u in units if isinstance(u, EventUnit) and u.stream == key}
        if not await order.turn(key, taken + 1, mine, self.runtime.guard.deadlines.write.seconds):
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
        runtime = self.runtime
        guard = runtime.guard  # (while the log just failed, its call below fails at once)
        # one deadline for the whole batch: a repair, the wait for other tabs' frames and the append
        loop = asyncio.get_running_loop()
        ends = loop.time() + guard.deadlines.write.seconds
        if runtime.repairs:  # streams the log missed frames of start a new epoch first
            await runtime.repair(Deadline(max(0.0, ends - loop.time())))
            if not guard.available():  # the repair found the log still failing
                self._unlogged(pending)
                return
        order = runtime.order
        for key, group in pending.items():  # frames another tab here was fed first, and these lack, go first
            first = group[0].order
            if order.before(key, first) and not await order.turn(
                key, first, {unit.content_digest() for unit in group}, max(0.0, ends - loop.time())
            ):
                stats.order_waits_timed_out += 1
        requests = [self._request(key, group) for key, group in pending.items()]
        stats.log_writes += 1
        try:
            if self.log.synchronous:  # the in-process log neither fails nor waits: no guard, no timer, no company
                results = await self.log.append(requests)
            else:
                within = Deadline(max(0.0, ends - loop.time()))
                results = await guard.call(within, runtime.appends.append, requests)
        except LogUnavailable:
            self._unlogged(pending)
            return
        for (key, group), result in zip(pending.items(), results, strict=True):
            if result.failed is not None:  # this stream alone: the log is up, and others were logged
                guard.failed_alone()
                self._unlogged({key: group})
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
        unlogged, skipped = session.unlogged, session.skipped  # (both empty, mostly)
        reset_epoch = unlogged.get(key) if unlogged else None
        return AppendRequest(
            key,
            [unit.entry() for unit in group],
            cursor_epoch,
            cursor_seq,
            session.started_ms,
            reset=reset_epoch is not None,
            reset_epoch=reset_epoch or "",
            connection=session.id,
            skipped=skipped.get(key, []) if skipped else [],
            held=self.held,
        )

    def _unlogged(self, by_key: dict[StreamKey, list[EventUnit]]) -> None:
        """The log missed these frames: they go out unstamped, and the streams get a new epoch."""
        for key, group in by_key.items():
            self.session.forget(key)
            self.runtime.stats.frames_unstamped += len(group)
        self.runtime.missed(self.session, by_key)

    async def release(self, handed_over: bool = False, *, last_seen: float | None = None) -> list[StreamKey]:
        """The connection is over: flag the streams it left in flight (returned).

        A newcomer that later logs an orphaned stream starts a new epoch, so what was emitted while
        nobody logged it shows up as a gap instead of a silent hole. A connection whose client
        recovered its session on another one (``handed_over``) orphans nothing: that connection
        joined the rooms before it claimed the session, so nothing fell between the two.
        ``last_seen``: when its client was last there (monotonic; a polling client that stopped
        polling a while ago): streams in flight then are the ones it left.
        """
        session = self.session
        for unit in self._units:  # fed, never flushed (the connection was cut): nobody waits for them
            if isinstance(unit, EventUnit) and unit.stream is not None:
                self.runtime.order.logged(unit.stream, unit.order)
        if self.recovery is not None:
            await self.recovery.note("closed")
        orphaned = [] if handed_over else session.active_streams(self.runtime.settings.hold_idle, last_seen)
        if not orphaned:
            return []
        guard = self.runtime.guard
        try:
            await guard.call(guard.deadlines.write, self.log.release, orphaned, session.id)
        except LogUnavailable:
            return []  # a newcomer then continues the epoch: what was lost meanwhile is not flagged
        return orphaned


def _held(waiting: dict[StreamKey, list[int]]) -> tuple[int, ...]:
    """The indexes of the units held back for a replay, in order."""
    return tuple(sorted(i for held in waiting.values() for i in held)) if waiting else _NONE_HELD


def _needs_log(unit: Unit) -> bool:
    match unit:
        case EventUnit():
            return unit.stream is not None or unit.recover
        case ResumeRequest() | ConnectReply():
            return True
        case str() | bytes() | Passthrough():
            return False
        case _:
            assert_never(unit)


def _unprocessed(unit: Unit) -> list[Outgoing]:
    """What to send for a unit when processing the batch failed: its original bytes."""
    match unit:
        case EventUnit():
            return [unit.raw, *unit.attachments]
        case ConnectReply():
            return [unit.frame]
        case ResumeRequest():
            return []
        case str() | bytes() | Passthrough():
            return [unit]
        case _:
            assert_never(unit)
