"""One connection's outbound frames on their way to the client.

Owns: turning a batch of Engine.IO packets the app sent into what the client
receives: stream frames matched or appended in the log with one call per batch and
stamped with ``seq``/``epoch``, binary attachments kept behind their header, resume
requests answered in order with the live frames around them. Must not touch:
transports (websocket or polling framing), ASGI messages, the app.

A batch is rendered in order after one log call: a replay reads the log after every
frame queued before it was logged, and a live frame the replay already carried is
dropped, so the client sees each seq once and in order.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from asgi_resume import protocol, resume
from asgi_resume.log import AppendRequest, Entry, LogUnavailable, StreamLog
from asgi_resume.resume import ResumeRequest
from asgi_resume.runtime import Runtime
from asgi_resume.session import Session

logger = logging.getLogger("asgi_resume")

SEQ_FIELD, EPOCH_FIELD = "seq", "epoch"
LEADER_WAIT_S = 0.45  # how long a frame waits for the stream's leader to log it (longer than its lease)
LEADER_POLL_S = 0.001
RESERVED = (SEQ_FIELD, EPOCH_FIELD)

#: What flows through: text and binary Engine.IO packets, resume requests, and any
#: other object (e.g. an ASGI close message), which passes through in its place.
Item = Any


def stamp_fields(seq: int, epoch: str) -> str:
    return f'"{SEQ_FIELD}":{seq},"{EPOCH_FIELD}":"{epoch}"'


def render(payload: list[Any], seq: int, epoch: str) -> list[str | bytes] | None:
    """A logged payload as the frames to send; ``None`` if the entry is malformed."""
    if len(payload) < 2 or not isinstance(payload[0], str) or not isinstance(payload[1], str):
        return None
    attachments = payload[2:]
    if not all(isinstance(a, bytes) for a in attachments):
        return None
    return [payload[0] + stamp_fields(seq, epoch) + payload[1], *attachments]


@dataclass(eq=False, slots=True)
class _StreamUnit:
    """A stream frame (and its binary attachments), before and after the log."""

    raw: str
    stream: str
    namespace: str
    done: bool
    template: protocol.StampTemplate
    expected_attachments: int
    attachments: list[bytes] = field(default_factory=list)
    received_ms: int = 0
    seq: int = 0
    epoch: str = ""

    @property
    def complete(self) -> bool:
        return len(self.attachments) >= self.expected_attachments

    def entry(self) -> Entry:
        digest = hashlib.blake2b(digest_size=12)
        digest.update(self.template.head.encode())
        digest.update(b"\x00")
        digest.update(self.template.tail.encode())
        for attachment in self.attachments:
            digest.update(b"\x00")
            digest.update(attachment)
        payload: list[str | bytes] = [self.template.head, self.template.tail, *self.attachments]
        return Entry(digest.hexdigest(), payload, self.done, self.received_ms)

    def frames(self) -> list[Item]:
        if self.seq:
            return [self.template.live(stamp_fields(self.seq, self.epoch)), *self.attachments]
        return [self.raw, *self.attachments]


class Outbound:
    def __init__(self, runtime: Runtime, session: Session) -> None:
        self.runtime = runtime
        self.session = session
        self._units: list[Item] = []
        self._pending: _StreamUnit | None = None  # a binary event waiting for its attachments
        self._deferred: list[ResumeRequest] = []  # requests that came by another transport
        self.lock = anyio.Lock()  # transports of one session take turns: feed, then flush

    def defer(self, request: ResumeRequest) -> None:
        """Answer ``request`` in the next flush, after what was fed before it (polling POSTs)."""
        self._deferred.append(request)

    @property
    def log(self) -> StreamLog:
        return self.runtime.log

    def feed(self, item: Item) -> None:
        """Queue one packet (or request, or control message) for the next :meth:`flush`."""
        pending = self._pending
        if pending is not None:
            if isinstance(item, bytes):
                pending.attachments.append(item)
                if pending.complete:
                    self._units.append(pending)
                    self._pending = None
                return
            if item in (protocol.PING_FRAME, protocol.NOOP_FRAME):
                self._units.append(item)  # harmless between a header and its attachments
                return
            # the attachments never came: give up on logging this one, keep the bytes
            self._units.extend([pending.raw, *pending.attachments])
            self._pending = None
        if isinstance(item, str):
            unit = self._stream_unit(item)
            if unit is None:
                self._units.append(item)
            elif unit.complete:
                self._units.append(unit)
            else:
                self._pending = unit
            return
        self._units.append(item)

    def _stream_unit(self, frame: str) -> _StreamUnit | None:
        classified = self.runtime.rules.classify(frame)
        if classified is None:
            return None
        packet = classified.packet
        template = protocol.stamp_template(frame, packet, RESERVED)
        if template is None:
            return None
        expected = packet.attachments if packet.type == protocol.BINARY_EVENT else 0
        stream, namespace, now = classified.stream, packet.namespace, self.log.now_ms()
        return _StreamUnit(frame, stream, namespace, classified.done, template, expected, received_ms=now)

    async def flush(self) -> list[Item]:
        """Log what was fed and return what to send, in order."""
        units, self._units = self._units, []
        if self._deferred:
            units += self._deferred
            self._deferred = []
        try:
            return await self._render(units)
        except Exception:  # a bug here must cost the stamps, never the frames
            logger.exception("asgi_resume failed to process a batch; sending it unchanged")
            out: list[Item] = []
            for unit in units:
                if isinstance(unit, _StreamUnit):
                    out += [unit.raw, *unit.attachments]
                elif not isinstance(unit, ResumeRequest):
                    out.append(unit)
            return out

    async def _render(self, units: list[Item]) -> list[Item]:
        stream_units = [u for u in units if isinstance(u, _StreamUnit)]
        if stream_units:
            await self._append(stream_units)
        # Frames of a stream that this batch also resumes wait for the replay, which
        # carries them; what it does not carry goes out right after it.
        last_resume = {u.stream: i for i, u in enumerate(units) if isinstance(u, ResumeRequest) and u.stream}
        waiting: dict[str, list[_StreamUnit]] = {}
        out: list[Item] = []
        for i, unit in enumerate(units):
            if isinstance(unit, _StreamUnit):
                if i < last_resume.get(unit.stream, -1):
                    waiting.setdefault(unit.stream, []).append(unit)
                elif not (unit.seq and self.session.was_replayed(unit.stream, unit.epoch, unit.seq)):
                    out += unit.frames()
            elif isinstance(unit, ResumeRequest):
                out += await self._resume(unit)
                if last_resume.get(unit.stream) == i:
                    for held in waiting.pop(unit.stream, ()):
                        if not (held.seq and self.session.was_replayed(held.stream, held.epoch, held.seq)):
                            out += held.frames()
            else:
                out.append(unit)
        return out

    async def _append(self, units: list[_StreamUnit]) -> None:
        session, stats = self.session, self.runtime.stats
        pending: dict[str, list[_StreamUnit]] = {}
        for unit in units:
            pending.setdefault(unit.stream, []).append(unit)
            session.saw(unit.stream, unit.done)
        if not self.runtime.health.available():
            self._unlogged(pending, None)
            return
        pause = LEADER_POLL_S
        give_up_waiting = time.monotonic() + LEADER_WAIT_S
        while pending:
            requests = [self._request(stream, group) for stream, group in pending.items()]
            stats.log_writes += 1
            try:
                with anyio.fail_after(self.runtime.settings.write_timeout):
                    results = await self.log.append(requests)
            except (LogUnavailable, TimeoutError) as exc:
                self._unlogged(pending, str(exc) or "timed out")
                return
            self.runtime.health.succeeded()
            waiting = {}
            for (stream, group), result in zip(pending.items(), results, strict=True):
                session.unlogged.discard(stream)
                for unit, seq in zip(group, result.seqs, strict=False):
                    unit.seq, unit.epoch = seq, result.epoch
                if result.seqs:
                    session.cursors[stream] = (result.epoch, result.seqs[-1])
                    stats.frames_stamped += len(result.seqs)
                if len(result.seqs) < len(group):
                    waiting[stream] = group[len(result.seqs) :]
            pending = waiting
            if not pending:
                return
            # Another connection leads these streams and has not logged these frames yet.
            stats.leader_waits += 1
            if time.monotonic() >= give_up_waiting:
                # The leader is alive but never logged them: frames only this connection was sent.
                # They go out unstamped; logging them here could put a twin where it does not belong.
                stats.frames_unmatched += sum(len(group) for group in pending.values())
                return
            await anyio.sleep(pause)
            pause = min(pause * 2, 0.02)

    def _request(self, stream: str, group: list[_StreamUnit]) -> AppendRequest:
        session = self.session
        cursor_epoch, cursor_seq = session.cursors.get(stream, (None, 0))
        return AppendRequest(
            stream,
            [unit.entry() for unit in group],
            session.principal_for(group[0].namespace),
            cursor_epoch,
            cursor_seq,
            session.started_ms,
            reset=stream in session.unlogged,
            connection=session.id,
        )

    def _unlogged(self, by_stream: dict[str, list[_StreamUnit]], reason: str | None) -> None:
        """The log missed these frames: they go out unstamped, and the streams get a new epoch."""
        if reason is not None:
            self.runtime.health.failed(reason)
        for stream, group in by_stream.items():
            self.session.unlogged.add(stream)
            self.session.cursors.pop(stream, None)
            self.runtime.stats.frames_unstamped += len(group)

    async def release(self) -> None:
        """The connection is over: hand the lead of its streams on, and flag those it left in flight.

        A newcomer that later logs an orphaned stream starts a new epoch, so what was emitted while
        nobody logged it shows up as a gap instead of a silent hole.
        """
        session = self.session
        streams = list(session.cursors)
        if not streams or not self.runtime.health.available():
            return
        orphaned = session.active_streams(self.runtime.settings.hold_idle)
        try:
            with anyio.fail_after(self.runtime.settings.write_timeout):
                await self.log.release(streams, session.id, orphaned)
        except (LogUnavailable, TimeoutError):
            pass  # the lease runs out by itself

    async def _resume(self, request: ResumeRequest) -> list[Item]:
        runtime, stats = self.runtime, self.runtime.stats
        settings = runtime.settings

        def reply(body: dict[str, Any]) -> str:
            return resume.answer(request, body, settings.resume_event, runtime.stream_key)

        if request.error is not None:
            stats.resumes_bad_request += 1
            return [reply(resume.error("bad_request", request.error))]
        principal = self.session.principal_for(request.namespace)
        try:
            with anyio.fail_after(settings.write_timeout * 4):
                result = await self.log.replay(request.stream, principal, request.last_seq, request.epoch)
        except (LogUnavailable, TimeoutError) as exc:
            runtime.health.failed(str(exc) or "timed out")
            stats.resumes_unavailable += 1
            return [reply(resume.error("unavailable", "the stream log is not reachable; try again"))]
        if result.status == "not_found":
            stats.resumes_not_found += 1
            return [reply(resume.error("not_found"))]
        out: list[Item] = []
        replayed = 0
        for seq, payload in result.frames:
            frames = render(payload, seq, result.epoch)
            if frames is not None:
                out += frames
                replayed += 1
        self.session.replayed[request.stream] = (result.epoch, result.last_seq)
        stats.frames_replayed += replayed
        if result.gap:
            stats.resumes_gap += 1
        else:
            stats.resumes_ok += 1
        body = {
            "ok": True,
            "replayed": replayed,
            "last_seq": result.last_seq,
            "oldest_seq": result.oldest_seq,
            "epoch": result.epoch,
            "done": result.done,
            "gap": result.gap,
        }
        out.append(reply(body))
        return out
