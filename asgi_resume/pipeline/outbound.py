"""One connection's outbound frames on their way to the client: a batch logged, stamped, sent.

Owns: turning a batch of Engine.IO packets the app sent into what the client receives, in order:
fed one frame at a time (:mod:`~asgi_resume.pipeline.batch`), then flushed: the batch's stream
frames matched or appended in the stream log in one call and stamped with ``seq``/``epoch``
(:mod:`~asgi_resume.pipeline.streams`), binary attachments kept behind their header, resume
requests answered in order with the live frames around them (:mod:`~asgi_resume.pipeline.replay`),
and, when recovery is on, recovery offsets (:mod:`~asgi_resume.pipeline.recovery`). Must not
touch: transports (websocket or polling framing), ASGI messages, the app.

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
import contextlib
import dataclasses
import logging
import time
from contextlib import AbstractAsyncContextManager
from typing import assert_never

from asgi_resume.log import StreamKey, StreamLog
from asgi_resume.pipeline import replay
from asgi_resume.pipeline.batch import Batch
from asgi_resume.pipeline.classify import Classifier
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.order import Feeder
from asgi_resume.pipeline.polling_feeds import in_order
from asgi_resume.pipeline.polling_replays import Session
from asgi_resume.pipeline.recovery import Recovery
from asgi_resume.pipeline.recovery_replay import duplicate
from asgi_resume.pipeline.replay import Deliver
from asgi_resume.pipeline.resume import RESPONSE_FULL, ResumeRequest
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.pipeline.streams import StreamWriter
from asgi_resume.pipeline.units import (
    ConnectReply,
    EventUnit,
    Outgoing,
    Passthrough,
    Unit,
    by_content,
    unprocessed,
)

logger = logging.getLogger("asgi_resume")

_NONE_WAITING: tuple[int, ...] = ()


class Outbound:
    def __init__(self, runtime: Runtime, conn: Connection) -> None:
        self.runtime = runtime
        self.conn = conn
        self.recovery = Recovery(runtime, conn) if runtime.settings.recovery else None
        self.lock = asyncio.Lock()  # transports of one session take turns: feed, then flush
        self.streams = StreamWriter(runtime, conn)  # its side of the stream log
        self._handed: tuple[int, tuple[int, ...]] = (0, _NONE_WAITING)  # how far :meth:`send` handed its batch over
        self.feeder = Feeder()  # since when it has been handing a batch to its transport, for the feed order
        #: what it was fed since its last flush (each frame classified as it comes)
        self.batch = Batch(Classifier(runtime, conn, self.recovery), runtime.order, self.feeder)
        self.feed = self.batch.feed  # (hot: one call per frame)
        self._owed: list[Outgoing] = []  # frames held back for a CONNECT reply that went out unread
        self._response: list[Outgoing] | None = None  # what :meth:`flush` has collected so far
        #: bytes counted for the replays :meth:`flush` started (PollingReplays): taken, and zeroed,
        #: by the transport under ``lock`` as that flush ends
        self.replays_in_response = 0
        self.polling_session: Session | None = None  # its long-polling session, whose replays are counted

    @property
    def log(self) -> StreamLog:
        return self.runtime.log

    @property
    def held(self) -> bool:
        """Its client left (the connection is held, or told the app it left): it takes no stream over."""
        return self.streams.held

    @held.setter
    def held(self, value: bool) -> None:
        self.streams.held = value

    # -- flushing ----------------------------------------------------------------------------------

    async def flush(self, *, answer_deferred: bool = True, taken_ms: int | None = None) -> list[Outgoing]:
        """Log what was fed and return what to send, in order (replays whole: see :meth:`send`).

        What it returns is held whole until the transport sends it (a long-polling response): once
        it holds ``RESPONSE_REPLAY_BYTES``, or the principal's responses with replays waiting for
        their clients hold theirs (``runtime.polling_replays``: the transport counts them), no
        further replay starts in it; the requests left are refused ``rate_limited`` (the client
        asks again once it has read this one)."""
        out: list[Outgoing] = []

        async def collect(items: list[Outgoing]) -> bool:
            out.extend(items)
            return True

        self._response = out
        self.replays_in_response = 0
        try:
            await self.send(collect, answer_deferred=answer_deferred, taken_ms=taken_ms)
        finally:
            self._response = None
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
        if self._owed:  # (see passed_unread)
            owed, self._owed = self._owed, []
            await deliver(owed)
        units, stream_units, answers = self.batch.take(answer_deferred=answer_deferred)
        if taken_ms is None:
            taken_ms = self.log.now_ms()  # everything fed before now is in this batch
        self._handed = (0, _NONE_WAITING)  # nothing of this batch handed over yet
        if not answers and self.recovery is None:  # most batches: frames only, nothing to answer (inline: hot)
            try:
                if stream_units:
                    await self.streams.append(stream_units)
                replayed = self.conn.replayed  # (empty unless this connection resumed something)
                out: list[Outgoing] = []
                for unit in units:
                    match unit:
                        case EventUnit():
                            if not replayed or not self._replayed(unit):
                                out += unit.frames()
                        case str() | bytes() | Passthrough():
                            out.append(unit)
                        case ResumeRequest() | ConnectReply():  # (answers: a batch with them takes _render)
                            raise AssertionError(f"{type(unit).__name__} in a batch of frames only")
                        case _:
                            assert_never(unit)
            except Exception:  # a bug here must cost the stamps, never the frames
                logger.exception("asgi_resume failed to process a batch; sending it unchanged")
                out = [f for unit in units for f in unprocessed(unit)]
            feeder = self.feeder
            feeder.sending_since = time.monotonic()
            try:
                await deliver(out)
            finally:
                feeder.sending_since = 0.0
            return
        deliver = self._timed(deliver)
        taken = self.runtime.order.fed_count  # (what was fed, here, before this batch was taken)
        try:
            if stream_units:
                await self.streams.append(stream_units)
            start = 0  # a CONNECT reply ends a segment: what follows gets the new session's offsets
            for i, each in enumerate(units):
                if isinstance(each, ConnectReply):
                    await self._render(units, start, i + 1, taken_ms, taken, deliver)
                    start = i + 1
            if start < len(units):
                await self._render(units, start, len(units), taken_ms, taken, deliver)
        except Exception:  # a bug here must cost the stamps, never the frames
            logger.exception("asgi_resume failed to process a batch; sending what is left of it unchanged")
            upto, waiting = self._handed
            left = [units[index] for index in waiting] + units[upto:]
            await deliver([f for unit in left for f in unprocessed(unit)])

    def _replay_may_start(self, request: ResumeRequest) -> bool:
        """May a replay start in the response :meth:`flush` collects? Not once it holds
        ``RESPONSE_REPLAY_BYTES``, nor while the requester's responses its clients have not read
        hold their bound (see :class:`~asgi_resume.pipeline.polling_replays.PollingReplays`). One
        that starts is counted at once, as much as a response may start replays in (the transport
        counts the response's size once it is built), so that the requests of sessions that came
        together do not all find room."""
        response = self._response or ()
        if sum(len(item) for item in response if isinstance(item, str | bytes)) >= replay.RESPONSE_REPLAY_BYTES:
            return False
        principal = self.conn.principals.get(request.namespace)
        polling_replays = self.runtime.polling_replays
        if principal is not None and polling_replays.full(principal):
            return False
        if principal is not None and self.polling_session is not None:
            self.replays_in_response += replay.RESPONSE_REPLAY_BYTES
            polling_replays.sent(self.polling_session, principal, replay.RESPONSE_REPLAY_BYTES)
        return True

    def _timed(self, deliver: Deliver) -> Deliver:
        """``deliver``, telling the feed order while it hands frames to the transport."""
        feeder = self.feeder

        async def timed(items: list[Outgoing]) -> bool:
            feeder.sending_since = time.monotonic()
            try:
                return await deliver(items)
            finally:
                feeder.sending_since = 0.0

        return timed

    async def _render(
        self, units: list[Unit], start: int, stop: int, taken_ms: int, taken: int, deliver: Deliver
    ) -> None:
        """Render ``units[start:stop]`` and hand it to ``deliver``, in order.

        ``self._handed`` follows what was handed over (every unit before an index, but those that
        wait for a replay), so a failure sends the rest unchanged and nothing twice.
        """
        recovery = self.recovery
        if recovery is not None:
            recovering = [u for u in units[start:stop] if isinstance(u, EventUnit) and u.recover and not u.offset]
            await recovery.log(recovering, taken_ms, held=self.held)
        # Frames of a stream that this batch also resumes wait for the replay, which
        # carries them; what it does not carry goes out right after it.
        conn = self.conn
        last_resume = {
            key: i
            for i in range(start, stop)
            if isinstance(u := units[i], ResumeRequest) and (key := conn.key_of(u)) is not None
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
                        and (recovery.waits_for_reply(unit) or duplicate(self.conn, unit))
                    ):
                        continue
                    if unit.stream is not None and i < last_resume.get(unit.stream, -1):
                        waiting.setdefault(unit.stream, []).append(i)
                    elif not self._replayed(unit):
                        out += unit.frames()
                case ResumeRequest():
                    # what came before it goes first; then the replay, a page at a time
                    self._handed = (i + 1, _waiting_for_replay(waiting))
                    if out:
                        await deliver(out)
                        out = []
                    in_flight: AbstractAsyncContextManager[None] = contextlib.nullcontext()
                    if self._response is not None:
                        if unit.error is None and not self._replay_may_start(unit):
                            unit = dataclasses.replace(unit, error=RESPONSE_FULL, refusal="rate_limited")
                    elif unit.error is None and (principal := conn.principals.get(unit.namespace)) is not None:
                        # a user's websocket replays in flight are bounded: past it one waits its turn
                        in_flight = self.runtime.replays_in_flight.slot(principal)
                    async with in_flight:
                        await self._after_others(unit, units, taken)
                        await replay.answer(self.runtime, self.conn, unit, deliver, lambda: self.held)
                    key = conn.key_of(unit)
                    if key is not None and last_resume.get(key) == i:
                        for j in waiting.pop(key, ()):
                            waited = units[j]
                            assert isinstance(waited, EventUnit)
                            if not self._replayed(waited):
                                out += waited.frames()
                case ConnectReply():
                    assert recovery is not None
                    self._handed = (i, _waiting_for_replay(waiting))
                    if out:
                        await deliver(out)
                    out = await recovery.reply(unit.frame, unit.packet, taken_ms, deliver)
                case str() | bytes() | Passthrough():
                    out.append(unit)
                case _:
                    assert_never(unit)
        self._handed = (stop, _NONE_WAITING)  # (nothing waits past the segment's last resume request)
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
        key = self.conn.key_of(request)
        order = self.runtime.order
        if key is None or request.error is not None:
            return
        wait = self.runtime.guard.deadlines.write.seconds
        # (and what the app sent a long-polling tab of the user, unfed yet: see polling_feeds)
        if not await self.runtime.polling_feeds.fed(key.principal, self.log.now_ms(), wait, self.streams.own_feed):
            self.runtime.stats.order_waits_timed_out += 1
        if not order.before(key, taken + 1):
            return
        mine = by_content(u for u in units if isinstance(u, EventUnit) and u.stream == key)
        with in_order(self.streams.own_feed):
            turned = await order.turn(key, taken + 1, mine, self.runtime.guard.deadlines.write.seconds)
        if not turned:
            self.runtime.stats.order_waits_timed_out += 1

    def _replayed(self, unit: EventUnit) -> bool:
        replayed = self.conn.replayed  # (empty unless this connection resumed something)
        return (
            bool(replayed)
            and unit.stream is not None
            and bool(unit.seq)
            and unit.stream in replayed
            and (self.conn.was_replayed(unit.stream, unit.epoch, unit.seq))
        )

    async def away(self, last_seen: float) -> list[StreamKey]:
        """Its client has probably gone (a polling client that stopped polling): the streams in
        flight then are flagged (returned; see :meth:`StreamWriter.orphan`), nothing else changes."""
        return await self.streams.orphan(last_seen)

    async def passed_unread(self) -> None:
        """Frames went to the client that the pipeline never read (a long-polling response too
        large to parse, or in an encoding it cannot read): they are in no log. The streams this
        connection follows start a new epoch (a resume across them says ``gap``), and its recovery
        sessions are noted broken (a claim gets a normal connect); a namespace whose CONNECT reply
        it may have carried ends its recovery, and what waited for that reply goes out next."""
        self.streams.passed_unread()
        if self.recovery is not None:
            self._owed += self.recovery.passed_unread()
            await self.recovery.notes.tell_losses()

    async def release(self, handed_over: bool = False, *, last_seen: float | None = None) -> list[StreamKey]:
        """The connection is over: its recovery sessions closed, the streams it left in flight
        flagged (returned; see :meth:`StreamWriter.release`)."""
        if self.recovery is not None:
            await self.recovery.notes.tell("closed")
        flagged = await self.streams.release(self.batch.stream_units(), handed_over, last_seen)
        self.conn.released = True
        self.runtime.repairs.closed(self.conn)  # (its streams the log missed are repaired without it)
        return flagged


def _waiting_for_replay(waiting: dict[StreamKey, list[int]]) -> tuple[int, ...]:
    """The indexes of the units waiting for a replay (which carries them), in order."""
    return tuple(sorted(i for indexes in waiting.values() for i in indexes)) if waiting else _NONE_WAITING
