"""What one connection was fed since its last flush: the batch being built.

Owns: the units the app sent a connection (and the resume requests that came by another
transport), each classified as it is fed (:mod:`~asgi_resume.pipeline.classify`), a binary event
kept until its attachments came, stream frames given their place in the emit order
(:mod:`~asgi_resume.pipeline.order`), and what the batch will need when it is flushed (a log
call, answers). Must not touch: the log, the transport, rendering
(:mod:`~asgi_resume.pipeline.outbound` takes the batch and does those).
"""

from __future__ import annotations

from typing import assert_never

from asgi_resume import protocol
from asgi_resume.pipeline.classify import Classifier
from asgi_resume.pipeline.order import Feeder, FeedOrder
from asgi_resume.pipeline.resume import ResumeRequest
from asgi_resume.pipeline.units import ConnectReply, EventUnit, Incoming, Passthrough, Unit

#: a batch taken for a flush: its units in order, those of a stream, and whether it answers (a
#: resume request or a CONNECT reply is in it)
Taken = tuple[list[Unit], list[EventUnit], bool]


class Batch:
    def __init__(self, classify: Classifier, order: FeedOrder, feeder: Feeder) -> None:
        self._classify = classify
        self._order = order
        self._feeder = feeder
        self._units: list[Unit] = []
        self._pending: EventUnit | None = None  # a binary event waiting for its attachments
        self._behind: list[ResumeRequest] = []  # the client's requests that came meanwhile
        self._stream_units: list[EventUnit] = []  # the units fed that belong to a stream
        self._answers = False  # a resume request or a CONNECT reply was fed: the batch answers it
        self._recovering = False  # an event that gets a recovery offset was fed
        self._deferred: list[ResumeRequest] = []  # requests that came by another transport

    def pending(self, *, answer_deferred: bool = True) -> int:
        """Units fed and not taken yet."""
        return len(self._units) + (len(self._deferred) if answer_deferred else 0)

    def held(self) -> int:
        """Everything it holds: units not taken yet, and a binary event waiting for its attachments
        with the requests that came behind it."""
        return len(self._units) + len(self._deferred) + len(self._behind) + (self._pending is not None)

    def needs_log(self, *, answer_deferred: bool = True) -> bool:
        """Has it frames to log or requests to answer? (Else a flush only passes frames on.)"""
        if self._stream_units or self._answers or self._recovering:  # (kept as units are fed: hot)
            return True
        return answer_deferred and bool(self._deferred)

    def has_deferred(self) -> bool:
        return bool(self._deferred)

    def defer(self, request: ResumeRequest) -> None:
        """Answer ``request`` in the next flush, after what was fed before it (polling POSTs)."""
        self._deferred.append(request)

    def feed(self, item: Incoming, *, as_emitted: bool = False) -> None:
        """Add one packet (or request, or other ASGI message) to the batch.

        ``as_emitted``: ``item`` is the object the app handed over, the same one its other
        recipients here get for one emit (websockets; long-polling payloads are cut up here).
        """
        if self._pending is not None and self._attach(item):
            return
        match item:
            case str():
                if item[:3] != protocol.PLAIN_EVENT_HEAD and protocol.concerns_connection(item):  # (most frames: not)
                    self._classify.note(item)
                match self._classify.unit(item):
                    case None:
                        self._units.append(item)
                    case EventUnit() as unit:
                        if as_emitted:  # (the object its other recipients here get too)
                            unit.emitted = item
                        if unit.expected_attachments and not unit.complete:
                            self._pending = unit  # a binary event's header: its attachments follow
                        else:
                            self._queue(unit)
                    case ConnectReply() as reply:
                        self._answers = True
                        self._units.append(reply)
                    case other:
                        assert_never(other)
            case ResumeRequest():
                self._answers = True
                self._units.append(item)
            case bytes() | Passthrough():
                self._units.append(item)
            case _:
                assert_never(item)

    def _attach(self, item: Incoming) -> bool:
        """A binary event's header waits for its attachments: is ``item`` taken care of here?"""
        pending = self._pending
        assert pending is not None
        if isinstance(item, bytes):
            pending.attachments.append(item)
            if pending.complete:
                self._queue(pending)
                self._done_waiting()
            return True
        if item in (protocol.EIO_PING, protocol.EIO_NOOP):
            self._units.append(item)  # harmless between a header and its attachments
            return True
        if isinstance(item, ResumeRequest):  # the client's: its reader does not wait for the app's writer
            self._behind.append(item)  # answered once the event is whole (answered between, it split it)
            return True
        # the attachments never came: give up on logging this one, keep the bytes (and ``item``)
        self._units.extend([pending.raw, *pending.attachments])
        self._done_waiting()
        return False

    def _done_waiting(self) -> None:
        self._pending = None
        if self._behind:
            self._units.extend(self._behind)
            self._answers = True
            self._behind = []

    def _queue(self, unit: EventUnit) -> None:
        if unit.stream is not None:
            unit.order = self._order.fed(unit.stream, unit.content_digest(), self._feeder, unit.emitted)
            self._stream_units.append(unit)
        if unit.recover:
            self._recovering = True
        self._units.append(unit)

    def take(self, *, answer_deferred: bool = True) -> Taken:
        """What was fed, for a flush; the batch starts again empty (a binary event still waiting
        for its attachments stays, and so do deferred requests unless ``answer_deferred``)."""
        units, stream_units, answers = self._units, self._stream_units, self._answers
        self._units, self._stream_units, self._answers, self._recovering = [], [], False, False
        if self._deferred and answer_deferred:
            units += self._deferred
            self._deferred = []
            answers = True
        return units, stream_units, answers

    def stream_units(self) -> list[EventUnit]:
        """The stream units fed and not taken yet (a connection released before its flush)."""
        return self._stream_units
