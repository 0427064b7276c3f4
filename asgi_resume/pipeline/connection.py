"""One client connection (its Engine.IO session, on either transport) as the middleware sees it.

Owns: what the middleware remembers about one connection: who it is (per namespace,
bound when the app accepts the CONNECT, never changed after), where it stands in each
stream key's log (cursors, and the entries it passed over), what it was replayed, which
streams are in flight, which of the app's calls its client has not answered yet (whether a
long-polling client is still there is the transport's: ``transport.polling_presence``). Its
resume rate limit is a
:class:`~asgi_resume.pipeline.rate_limit.ResumeBucket`, its recovery per namespace a
:class:`~asgi_resume.pipeline.recovery_state.RecoveryState`.
Must not touch: I/O of any kind.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import Scope

from asgi_resume.log.base import SCAN_AHEAD, StreamKey
from asgi_resume.log.names import process_name
from asgi_resume.pipeline.rate_limit import ResumeBucket
from asgi_resume.pipeline.recovery_state import RecoveryState
from asgi_resume.pipeline.resume import ResumeRequest

_AMBIGUOUS = "\x00ambiguous"  # a pending CONNECT whose principal cannot be known (never a hash)
SKIPPED_KEPT = SCAN_AHEAD  # entries a connection passed over, remembered per stream key (as far as the log looks)
CALLS_KEPT = 64  # unanswered calls remembered per connection
#: streams a connection keeps its place in (cursor, what it passed over or was replayed); past it
#: the ones no longer in flight are forgotten, the oldest first (a stream not in flight any more
#: that comes back is then placed by content, as a new tab's first frame is)
STREAMS_KEPT = 1024
FINISHED_KEPT = 64  # streams whose done frame a connection remembers (the latest)
#: namespaces one connection's CONNECTs are noted for (python-socketio refuses those it does not
#: have, and an app with dynamic namespaces may accept any): past it, or for a longer name, a
#: CONNECT binds nobody and nothing is kept for it
MAX_NAMESPACES, MAX_NAMESPACE_CHARS = 64, 1024


class UnnotedConnect:
    """A CONNECT the app reads in a long-polling POST: noted (``note``) at python-engineio's answer,
    or at the app's reply if that comes first (see :meth:`Connection.connected`); once."""

    __slots__ = ("_note", "noted")

    def __init__(self, note: Callable[[], None]) -> None:
        self._note, self.noted = note, False

    def run(self) -> None:
        if not self.noted:
            self.noted = True
            self._note()


@dataclass(eq=False, slots=True)
class Connection:
    scope: Scope
    #: on the log's clock, when it began: a stream's first frame matches copies since its CONNECT in
    #: the stream's namespace (``joined_ms``), or since then if none was seen (a Connection driven directly)
    started_ms: int
    #: ``<process>.<random>``: a claim made in another process asks whether that one still runs
    id: str = field(default_factory=lambda: f"{process_name()}.{secrets.token_hex(8)}")
    principals: dict[str, str | None] = field(default_factory=dict)  # namespace -> hashed principal, once accepted
    pending: dict[str, str | None] = field(default_factory=dict)  # namespace -> principal its CONNECT names
    cursors: dict[StreamKey, tuple[str, int]] = field(default_factory=dict)  # key -> (epoch, last seq seen)
    skipped: dict[StreamKey, list[int]] = field(default_factory=dict)  # key -> recent seqs passed over
    others_ms: dict[StreamKey, int] = field(default_factory=dict)  # key -> when another connection last used it
    replayed: dict[StreamKey, tuple[str, int]] = field(default_factory=dict)  # key -> (epoch, replayed up to)
    #: keys with frames the log missed -> the epoch this connection knew them in ("" none): that
    #: history has a hole, so the next append (or a repair) starts a new epoch, if nobody did yet
    #: (at most ``repairs.UNLOGGED_KEPT``: past it the oldest are repaired without this connection)
    unlogged: dict[StreamKey, str] = field(default_factory=dict)
    #: keys whose history broke here (``forget``) with none of its frames logged since: the epoch
    #: it joins may have begun after frames it still has to send (``AppendRequest.rejoining``)
    rejoining: set[StreamKey] = field(default_factory=set)
    in_flight: dict[StreamKey, float] = field(default_factory=dict)  # key not done -> monotonic time of last frame
    #: keys whose done frame it was sent -> when (monotonic; the ``FINISHED_KEPT`` latest): frames
    #: after it (a title, follow-ups) do not put the stream back in flight
    finished: dict[StreamKey, float] = field(default_factory=dict)
    calls: dict[tuple[str, int], None] = field(default_factory=dict)  # (namespace, ack id) the client owes
    departed: bool = False  # it left a namespace (or was disconnected from one) at least once
    released: bool = False  # the connection is over (Outbound.release)
    joined_ms: dict[str, int] = field(default_factory=dict)  # namespace -> its last CONNECT there (log's clock)
    calling: bool = False  # its append is out (Redis): answered, ...
    call_answered: asyncio.Future[None] | None = None  # ... this is done, if someone waits for it
    last_frame_at: float = 0.0  # monotonic time of the last stream frame
    recovery: dict[str, RecoveryState] = field(default_factory=dict)  # namespace -> connection state recovery
    upgraded: bool = False  # on a websocket for good: python-engineio refuses its polling requests
    #: its client stopped reading (a send to it blocked while more frames came): what waits for it
    #: is in no log yet, so a claim of its recovery sessions must not take its silence for complete
    behind: bool = False
    behind_told: bool = False  # what the log was last told of it (the recovery sessions' fetched)
    behind_telling: bool = False  # a task is telling the log (one at a time: the last word wins)
    drop_attachments: int = 0  # binary frames still to come of an inbound request the app never sees
    #: messages python-socketio may take for attachments of a binary packet the client sent it (it
    #: takes the next ones, text or binary, whatever they say): none of them is acted on here
    attachments_owed: int = 0
    #: namespace -> CONNECTs the app has read and this connection has not noted yet (a polling
    #: POST's are noted at python-engineio's answer: see polling_post); a reply meanwhile is the
    #: one's if it is the only one there and no CONNECT noted is owed a reply (it is noted then),
    #: else it may be any of theirs, so that namespace becomes ...
    unnoted: dict[str, list[UnnotedConnect]] = field(default_factory=dict)
    #: ... one where a reply may answer a CONNECT never noted: from then on no reply there binds
    unbindable: set[str] = field(default_factory=set)
    #: namespace -> replies the app owes to CONNECTs there it read and that were noted (a CONNECT
    #: where the connection is in already too: python-socketio refuses it, with a reply)
    awaiting: dict[str, int] = field(default_factory=dict)
    #: a CONNECT was not noted, past MAX_NAMESPACES: its reply may come in any namespace's place,
    #: so from then on no reply binds (no client connects to that many)
    overflowed: bool = False
    resume_bucket: ResumeBucket = field(default_factory=ResumeBucket)  # its resume requests' rate limit

    def principal_for(self, namespace: str) -> str | None:
        return self.principals.get(namespace)

    def key_of(self, request: ResumeRequest) -> StreamKey | None:
        """The stream key a resume request names: always one of this connection's principal."""
        principal = self.principals.get(request.namespace)
        if principal is None or not request.stream:
            return None
        return StreamKey(principal, request.namespace, request.variant, request.stream)

    def may_join(self, namespace: str) -> bool:
        """Is a CONNECT to ``namespace`` noted? (Not past :data:`MAX_NAMESPACES`: see there.)"""
        if namespace in self.joined_ms:
            return True
        return len(self.joined_ms) < MAX_NAMESPACES and len(namespace) <= MAX_NAMESPACE_CHARS

    def connecting(self, namespace: str, principal: str | None) -> None:
        """The client asked to CONNECT to ``namespace`` as ``principal``: the app decides.

        Two CONNECTs in flight at once cannot be told apart by their replies: neither binds, nor
        does one noted while a reply to an earlier one is still to come.
        """
        earlier = self.awaiting.get(namespace, 0)
        self.awaiting[namespace] = earlier + 1
        if namespace in self.principals:
            return  # connected: python-socketio refuses it, and a principal is never rebound
        self.pending[namespace] = _AMBIGUOUS if earlier or namespace in self.pending else principal

    def connected(self, namespace: str, accepted: bool) -> None:
        """The app answered the CONNECT: its principal is bound if accepted, and never rebound."""
        unnoted = self.unnoted.get(namespace)
        if unnoted and len(unnoted) == 1 and not self.awaiting.get(namespace) and namespace not in self.pending:
            # the one CONNECT there the app read and has not answered, and none noted is owed a
            # reply: this is its reply, come before python-engineio answered the POST (python-socketio
            # with always_connect replies before the connect handler runs, inside the POST; open-webui's
            # awaits its database: a long-polling tab of it was never bound, found by a run against it)
            connect = unnoted[0]
            self.connect_read(namespace, connect)
            connect.run()
        if not accepted and namespace not in self.principals:  # what its CONNECT started is over
            self.joined_ms.pop(namespace, None)
            state = self.recovery.get(namespace)
            if state is not None and state.awaiting_reply:
                del self.recovery[namespace]
        owed = self.awaiting.pop(namespace, 0)  # (replies owed, this one among them)
        if owed > 1:
            self.awaiting[namespace] = owed - 1
        if self.unnoted.get(namespace):
            # a CONNECT the app read is not noted yet (an app whose handlers run inside the POST):
            # this reply may be that one's, or another's, and that one's may come after the next
            self.unbindable.add(namespace)
            if len(self.unbindable) > MAX_NAMESPACES:
                self.overflowed = True
        if self.overflowed or namespace in self.unbindable:
            self.pending.pop(namespace, None)  # it binds nobody
            return
        if namespace not in self.pending:
            return  # a reply to a CONNECT whose outcome is taken already (or never seen)
        if owed > 1:  # another is still to come: which CONNECT this one answers cannot be told
            self.pending[namespace] = _AMBIGUOUS
            return
        principal = self.pending.pop(namespace)
        if accepted and namespace not in self.principals:
            self.principals[namespace] = None if principal is _AMBIGUOUS else principal

    def disconnected(self, namespace: str, idle_s: float) -> dict[StreamKey, str]:
        """The client left ``namespace``, or the app disconnected it: it is nobody there any more.

        What the app emits to its streams there reaches this connection no more, so it follows
        none of them from now on (coming back, it is a newcomer to each). Returns those that were
        in flight (a frame in the last ``idle_s``), with the epoch it followed each in ("": none):
        they are to be flagged in the log, as a closed connection's are, or a newcomer would
        continue them across what nobody logged.
        """
        self.principals.pop(namespace, None)
        if namespace in self.pending:
            # its CONNECT's reply is still to come, after this DISCONNECT: a CONNECT after it would
            # be taken for that one (its own reply comes second): whichever comes binds nobody
            self.pending[namespace] = _AMBIGUOUS
        self.joined_ms.pop(namespace, None)
        self.departed = True
        cursors = self.cursors
        left = {
            key: cursors[key][0] if key in cursors else ""
            for key in self.active_streams(idle_s)
            if key.namespace == namespace
        }
        for places in (self.in_flight, self.finished, self.cursors, self.skipped, self.others_ms, self.replayed):
            for key in [key for key in places if key.namespace == namespace]:
                del places[key]
        return left

    def reading_connect(self, namespace: str, connect: UnnotedConnect) -> None:
        """The app reads a CONNECT to ``namespace`` that is noted later (see ``unnoted``)."""
        self.unnoted.setdefault(namespace, []).append(connect)

    def connect_read(self, namespace: str, connect: UnnotedConnect) -> None:
        """A CONNECT counted by ``reading_connect`` is noted now, or never will be (once)."""
        unnoted = self.unnoted.get(namespace)
        if unnoted is None or connect not in unnoted:
            return
        unnoted.remove(connect)
        if not unnoted:
            del self.unnoted[namespace]

    def called(self, namespace: str, ack_id: int) -> None:
        """The app sent the client an event that expects an answer."""
        self.calls[(namespace, ack_id)] = None
        if len(self.calls) > CALLS_KEPT:
            del self.calls[next(iter(self.calls))]

    def answered(self, namespace: str, ack_id: int) -> None:
        self.calls.pop((namespace, ack_id), None)

    def followed(self, key: StreamKey, epoch: str, seqs: list[int], others_ms: int) -> None:
        """Where this connection stands in ``key`` after an append: its cursor and what it passed over."""
        cursor = self.cursors.get(key)
        if cursor is None and len(self.cursors) >= STREAMS_KEPT:
            self.bound()
        previous = cursor[1] if cursor is not None and cursor[0] == epoch else None
        first = seqs[0] if seqs else 0
        if (
            first > 0
            and (previous is None or first == previous + 1)
            and seqs[-1] - first == len(seqs) - 1
            and (len(seqs) == 1 or min(seqs) > 0)
        ):  # contiguous, the common case: nothing passed over (positive seqs only grow within a call)
            self.cursors[key] = (epoch, seqs[-1])
            if previous is None:
                self.skipped.pop(key, None)
                if self.rejoining:
                    self.rejoining.discard(key)
            if others_ms:
                self.others_ms[key] = others_ms
            return
        skipped = self.skipped.get(key, []) if previous is not None else []
        for seq in seqs:
            if seq <= 0:  # an out-of-order copy of an entry it had passed over (or one from before the epoch)
                if -seq in skipped:
                    skipped.remove(-seq)
                continue
            if previous is not None and seq > previous + 1:
                skipped.extend(range(max(previous + 1, seq - SKIPPED_KEPT), seq))
            previous = seq
        if previous is not None:
            self.cursors[key] = (epoch, previous)
            self.rejoining.discard(key)
        if skipped:
            self.skipped[key] = skipped[-SKIPPED_KEPT:]
        else:
            self.skipped.pop(key, None)
        if others_ms:
            self.others_ms[key] = others_ms

    def placed(self, key: StreamKey, epoch: str, seq: int) -> None:
        """Its first frame of ``key`` is a copy of entry ``seq`` of ``epoch``: the log is to match
        it there (the entry after its cursor), wherever else the same content is."""
        if key not in self.cursors and len(self.cursors) >= STREAMS_KEPT:
            self.bound()
        self.cursors[key] = (epoch, seq - 1)

    def replayed_to(self, key: StreamKey, epoch: str, seq: int) -> None:
        """A replay (or recovery) gave this client ``key`` up to ``seq`` of ``epoch``: its live
        copies up to there are dropped (see :meth:`was_replayed`). The newest replay is kept last."""
        replayed = self.replayed
        if replayed.pop(key, None) is None and len(replayed) >= STREAMS_KEPT:
            self.bound()
        replayed[key] = (epoch, seq)

    def bound(self) -> None:
        """Keep what this connection remembers per stream within ``STREAMS_KEPT`` streams: forget
        a quarter of them, those not in flight first, in the order they were first seen (replays
        in the order they were last made), then streams in flight that were idle longest."""
        kept = STREAMS_KEPT * 3 // 4
        if len(self.in_flight) > kept:  # (an app whose streams never say done)
            by_age = sorted(self.in_flight, key=self.in_flight.__getitem__)
            for key in by_age[: len(self.in_flight) - kept]:
                del self.in_flight[key]
        for places in (self.cursors, self.replayed):
            if len(places) > kept:
                stale = [key for key in places if key not in self.in_flight][: len(places) - kept]
                for key in stale:
                    self.cursors.pop(key, None)
                    self.rejoining.discard(key)
                    self.skipped.pop(key, None)
                    self.others_ms.pop(key, None)
                    self.replayed.pop(key, None)

    def forget(self, key: StreamKey) -> None:
        """The log missed frames of ``key``: the next append starts a new epoch."""
        cursor = self.cursors.pop(key, None)
        self.unlogged.setdefault(key, cursor[0] if cursor is not None else "")
        self.skipped.pop(key, None)
        rejoining = self.rejoining
        rejoining.add(key)
        if len(rejoining) > STREAMS_KEPT:  # (streams that ended meanwhile need it no more: found by review)
            self.rejoining = {k for k in rejoining if k in self.in_flight or k == key}

    def still_in(self, key: StreamKey) -> bool:
        """Is this connection still ``key``'s principal in its namespace? (Not once it left it, nor
        after it joined again as someone else.)"""
        return self.principals.get(key.namespace) == key.principal

    def saw(self, stream: StreamKey, done: bool) -> None:
        """Track streams in flight on this connection (what a hold waits for). A stream is over at
        its done frame: what the app sends after it (open-webui: a title, tags, follow-ups) does
        not put it back in flight (a tab closed then was held 19-30 s for it, found by a run
        against open-webui), though a close soon after it is held for them (``held_streams``)."""
        self.last_frame_at = now = time.monotonic()
        if done:
            self.in_flight.pop(stream, None)
            finished = self.finished
            finished.pop(stream, None)
            finished[stream] = now
            if len(finished) > FINISHED_KEPT:
                del finished[next(iter(finished))]
        elif stream not in self.finished:
            in_flight = self.in_flight
            if len(in_flight) >= STREAMS_KEPT and stream not in in_flight:
                self.bound()
            in_flight[stream] = now

    def finished_within(self, grace_s: float) -> list[StreamKey]:
        """Streams whose done frame came in the last ``grace_s`` seconds: the app may still send
        what follows an answer (a title, follow-ups), which ``ASGI_RESUME_HOLD_GRACE`` waits for."""
        now = time.monotonic()
        return [stream for stream, at in self.finished.items() if now - at < grace_s]

    def active_streams(self, idle_s: float, as_of: float | None = None) -> list[StreamKey]:
        """Streams in flight that had a frame in the ``idle_s`` seconds before ``as_of`` (now)."""
        now = time.monotonic() if as_of is None else as_of
        return [stream for stream, at in self.in_flight.items() if now - at < idle_s]

    def held_streams(self, idle_s: float, grace_s: float) -> list[StreamKey]:
        """What a hold of this connection keeps logging: its streams in flight (a frame in the last
        ``idle_s`` seconds), else those done in the last ``grace_s`` (a title, follow-ups to come)."""
        return self.active_streams(idle_s) or self.finished_within(grace_s)

    def taken_over(self, since_ms: int, idle_s: float, grace_s: float) -> bool:
        """Has another connection used each of its ``held_streams`` after ``since_ms``?

        Strictly after: the other tab of two that dropped together may have logged its last frame
        in the hold's own millisecond, before it was held (seen under CPU load in
        tests/test_holds.py). A recovered client's new connection uses the stream later than that.
        """
        held = self.held_streams(idle_s, grace_s)
        return bool(held) and all(self.others_ms.get(key, 0) > since_ms for key in held)

    def was_replayed(self, stream: StreamKey, epoch: str, seq: int) -> bool:
        """True when a replay already gave this client the frame ``seq`` of ``epoch``."""
        replayed = self.replayed.get(stream)
        return replayed is not None and replayed[0] == epoch and seq <= replayed[1]
