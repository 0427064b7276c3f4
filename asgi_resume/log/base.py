"""Types shared by the log backends, and the :class:`StreamLog` interface."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

#: A logged frame as the log keeps it: ``[head, tail, *binary attachments]``, where the
#: stamped text frame is ``head + fields + tail`` (see ``protocol.StampTemplate``).
Payload = list[str | bytes]


def payload_size(payload: Payload) -> int:
    """About what a payload takes in a log (its parts' lengths: msgpack adds a few bytes on Redis)."""
    return sum(len(part) for part in payload)


#: Copies of one emit reach a principal's connections within this much of each other (fan-out
#: between workers included); an entry received further apart is another emit with the same bytes.
COPY_WINDOW_MS = 1000
#: How far past its cursor a connection's frame is looked for among the entries (frames it did not
#: get); the entries it passed over are remembered as far back (``Connection.skipped``).
SCAN_AHEAD = 64
#: Where processes share the log: how long before a connection joined (by its process's reckoning of
#: the log's clock) another process may have logged an emit that still reaches that connection
#: (``AppendRequest.lookback_ms``). Seen: 3 ms between two workers fanning one emit out (which
#: logged it twice); each process reckons the clock to within 11 ms. A first frame whose own
#: entry is not logged yet but repeats one logged in this window takes that one's seq: kept short
SHARED_LOOKBACK_MS = 100
#: an append that would have run after its caller gave up on it (``within_ms``): it wrote nothing
LATE = "late: the call would have run after its caller gave up on it, and wrote nothing"


class LogUnavailable(Exception):
    """The log backend could not be reached or did not answer in time."""


class LogRefused(LogUnavailable):
    """The log answered, but this one call failed on its own keys (a key of the wrong type, left by
    a prefix clash or a corrupted store): the log is not down for anyone else."""


class LogUnsupported(LogUnavailable):
    """The log backend answers but cannot run this log (a Redis older than the scripts need)."""


class StreamKey(NamedTuple):
    """One recipient's view of a stream: the unit the log keeps, appends to and replays.

    A stream id is chosen by the app, often by the browser: it is never an authority. What one
    principal received under it is a log of its own, so nothing another principal's connections
    received can enter it, and a resume can only name logs of the requester's own principal.
    A named tuple: a dict key on the hot path, hashed and compared in C.
    """

    principal: str  # hashed: the log never holds a credential
    namespace: str
    variant: str  # which audience's view ("" unless ASGI_RESUME_VARIANT tells them apart)
    stream: str

    def tag(self) -> str:
        """A fixed-size name for the key (one Redis Cluster hash tag for all of its keys)."""
        return _tag(self)

    def label(self) -> str:
        """How log lines name it: the stream id, and the view when there are views (open-webui's
        tabs get the same id twice, their own view and the ``shared`` one)."""
        return f"{self.stream} ({self.variant})" if self.variant else self.stream


@functools.lru_cache(maxsize=4096)  # a key is named for every append call: hash it once
def _tag(key: StreamKey) -> str:
    # as JSON: its parts stay apart whatever they hold (a NUL, a lone surrogate: ASCII escapes)
    text = json.dumps(key)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Entry:
    """One logical emit of a stream, as one connection saw it."""

    digest: str  # content hash of the unstamped frame: the safety check for matching copies
    payload: Payload
    done: bool = False
    received_ms: int = 0  # when this connection got it from the app, on the log's clock


@dataclass(slots=True)
class AppendRequest:
    """A connection's frames for one stream key, in the order it received them."""

    key: StreamKey
    entries: list[Entry]
    cursor_epoch: str | None = None  # the last entry this connection matched or appended...
    cursor_seq: int = 0  # ...or None/0 for its first frame of the stream
    since_ms: int = 0  # when the connection started, on the log's clock
    reset: bool = False  # start a new epoch: this connection could not log part of the stream
    connection: str = ""
    #: recent seqs this connection passed over without getting them (another tab's frames, or
    #: copies of its own still on their way): a frame of its own found among them came out of
    #: order, and goes out unstamped rather than twice in the log
    skipped: list[int] = field(default_factory=list)
    #: the connection is held (its client left): it logs, but it takes nothing over from anyone
    held: bool = False
    #: with ``reset``: only if the stream is still in this epoch, or one of these (comma-separated:
    #: epochs a call that timed out may have started; "": whatever it is), so that whoever comes
    #: first starts the new epoch (the connection's next append, or the repair on its behalf), once
    reset_epoch: str = ""
    #: its caller gives up on the call this long after making it (0: never). A log whose calls can
    #: outlive their caller (Redis: a paused server runs what it queued when it wakes) refuses to
    #: run it any later (``LATE``), so that a call given up on does not land after all, out of place
    #: in the stream's history
    within_ms: int = 0
    #: the epoch the call starts if it starts one ("": the log draws it). Named by the caller when
    #: the call may land unanswered (it timed out): the stream is then repaired from that epoch too
    fresh_epoch: str = ""
    #: for a first frame with no copy logged since ``since_ms``: the latest copy logged in this many
    #: ms before it. Where processes share the log, another one may log an emit a few ms before
    #: this connection joined by the clock and still deliver it here after (each process reckons
    #: the log's clock to within a few ms, and fans an emit out a few ms apart)
    lookback_ms: int = 0
    #: the connection's history of the stream broke (the log missed frames it was sent, or may
    #: have) and it has logged none of its frames since: a frame of it that matches no entry and
    #: was received no later than the epoch's first one is from before this epoch (another
    #: connection began it after the break, with frames this one gets later): no part of it (seq
    #: 0). Appended after that epoch's entries, it would put them out of emit order, and its
    #: copies of them would follow it into the log a second time. (So is one whose cursor names
    #: an epoch before the log's: a tab behind, whose writer still has frames from before it.)
    rejoining: bool = False


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The epoch, and for each entry its seq: > 0 matched or appended; -s: the copy already
    logged at ``s`` among the request's ``skipped`` (sent unstamped: it came out of order); 0:
    from before the epoch began, for a ``rejoining`` caller (sent unstamped)."""

    epoch: str
    seqs: list[int]
    others_ms: int = 0  # when another connection last appended to, matched in or replayed this key
    failed: str | None = None  # this request alone could not be logged (the others were)
    #: the connection that appended to the epoch last, when a caller without a cursor (a newcomer)
    #: appended its first frame to it (no copy of it was logged), not done ("" otherwise): if that
    #: one's process died, what the app emitted since reached nobody, and the epoch must not go on
    #: across it (see ``BEAT_LAPSE_MS``)
    continued: str = ""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    status: Literal["ok", "not_found"]
    epoch: str = ""
    last_seq: int = 0
    oldest_seq: int = 0
    done: bool = False
    gap: bool = False
    frames: list[tuple[int, Payload]] = field(default_factory=list)


NOT_FOUND = ReplayResult("not_found")


# -- connection state recovery: one log per recovery session (pid), in generations -------------


@dataclass(slots=True)
class SessionAppend:
    """Events one connection sent in a recovery session's current generation, in order."""

    pid: str
    gen: str
    owner: str  # connection id
    principal: str
    namespace: str
    frames: list[tuple[int, Payload]]  # (received at, on the log clock; [frame, *attachments])
    flushed_ms: int  # every frame this connection got before this is in this call or an earlier one
    #: the connection gets its frames only when its client fetches them (long-polling), or its
    #: client stopped reading (a websocket whose sends block): frames wait unlogged meanwhile, so
    #: its silence proves nothing (see ``session_read``)
    fetched: bool = False
    #: this call starts the connection's generation (at its CONNECT reply, or after ``lost``): it may
    #: make the session. A later call that does not find it is ``lost``: a session lost with its keys
    #: (Redis emptied, or its TTL passed with no event) is never made again under the same
    #: generation, whose numbering would start over under offsets its client already holds
    starts: bool = False


#: what a connection tells its recovery session (``session_note``), or ``state``: who owns it now
Note = Literal["left", "closed", "upgraded", "behind", "caught_up", "broken", "state"]


#: The app hands each connection its frames through a queue of the connection's own (python-engineio's
#: writer task): a frame the app emitted before a reconnect joined its rooms can reach the previous
#: connection a moment after the claim. A claim's read waits until the previous connection logged a
#: batch it took this long after the claim (what it logs after that, the claimer also got live).
CLAIM_SLACK_MS = 50
#: how often a process says, in a shared log, that it is running: a claim's read that trusts the
#: silence of a connection in another process needs a beat of that process after the claim
BEAT_EVERY_S = 0.1
BEAT_KEPT_MS = 2_000  # a process's last beat is forgotten this long after it
#: a process that did not beat within this after a newcomer went on in an epoch its connection
#: appended to last (``AppendResult.continued``) is taken for dead then (killed, stopped or blocked that
#: long): the epoch ends there
BEAT_LAPSE_MS = 1_000


@dataclass(frozen=True, slots=True)
class SessionAppendResult:
    #: ok; taken (another connection claimed the session: the frames were logged all the same, for
    #: its read may still be waiting for them); gone (the session is not this connection's any more);
    #: lost (it is not in the log: Redis emptied, or its TTL passed; nothing was logged: see ``starts``)
    status: Literal["ok", "taken", "gone", "lost"]
    numbers: list[int]


@dataclass(frozen=True, slots=True)
class Claim:
    #: ... or incomplete: an event of the generation claimed is in no log (a write failed)
    status: Literal["ok", "unknown", "refused", "stale", "expired", "incomplete"]


@dataclass(frozen=True, slots=True)
class SessionReplay:
    #: ok; wait (the previous owner may still log frames it got before the claim); lost (frames
    #: after the offset are no longer kept); incomplete (the previous owner fetched its frames and
    #: logged nothing it fetched after the claim, or noted an event it could not log: what the app
    #: sent it may be in no log)
    status: Literal["ok", "wait", "lost", "incomplete"]
    frames: list[tuple[int, int, Payload]] = field(default_factory=list)  # (n, received at, payload)
    #: ok on a forced read that took the previous owner's silence for a complete log: that owner
    #: (a connection id), whose process must have run since the claim (else it may have died with
    #: frames it never logged); "" when the owner logged or closed after the claim
    trusted: str = ""
    #: ok: the generation's last number when the read began (its following pages end there)
    last: int = 0


@dataclass(frozen=True, slots=True)
class LogLimits:
    maxlen: int = 2000  # entries kept per stream (approximately, on Redis)
    ttl_ms: int = 3_600_000  # a stream's life after its last frame
    done_ttl_ms: int = 30_000  # its life once it is done
    max_streams: int = 10_000  # stream keys the memory log keeps (see MemoryLog._add for which go)


class StreamLog(Protocol):
    """Storage for stream frames. Methods raise :class:`LogUnavailable` on backend faults."""

    limits: LogLimits
    #: True when calls never wait (the in-process log): frames need no trip to the writer task
    synchronous: bool
    #: True when other processes use it too (then they must hash principals with the same key)
    shared: bool

    def now_ms(self) -> int:
        """The log's clock, in milliseconds (Redis ``TIME`` for the Redis log)."""
        ...

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Match or append each request's entries; one result per request, in order."""
        ...

    async def replay(
        self,
        key: StreamKey,
        after_seq: int,
        epoch: str | None,
        connection: str,
        limit: int | None = None,
        max_bytes: int | None = None,
    ) -> ReplayResult:
        """Entries of ``key`` with seq > ``after_seq``, the first ``limit`` of them when given,
        and with ``max_bytes`` only as many as reach that many bytes of payload (at least one: a
        page of large frames is a few of them). ``connection`` takes the stream over."""
        ...

    async def orphan(self, keys: Sequence[StreamKey], connection: str) -> None:
        """``connection`` left while ``keys`` were in flight: what is emitted until a connection
        that followed them logs them again may be lost (a newcomer starts a new epoch)."""
        ...

    async def session_append(self, requests: Sequence[SessionAppend]) -> list[SessionAppendResult]:
        """Number and keep each request's frames; creates the session on its first call."""
        ...

    async def session_claim(
        self, pid: str, principal: str, namespace: str, gen: str, claimer: str, new_gen: str, window_ms: int
    ) -> Claim:
        """A reconnect to ``namespace`` presents ``pid`` and an offset of generation ``gen``: move the
        session to ``new_gen`` (``refused`` unless it is ``principal``'s session in ``namespace``)."""
        ...

    async def session_read(
        self, pid: str, gen: str, after: int, force: bool, limit: int = 0, max_bytes: int = 0, until: int = 0
    ) -> SessionReplay:
        """Frames of generation ``gen`` after ``after`` (``wait`` while its owner may still log some).

        A page of them when ``limit`` (entries) or ``max_bytes`` (their payloads' size as kept; at
        least one entry) is given: the read's ``last`` says where it ends, and a following page is
        read with ``until=last`` and ``after`` the last number read. A following page checks none of
        what the first read did (it is of the same read), only that the generation is still the one
        claimed and its entries after ``after`` are still kept (``lost``).

        Complete once the previous owner logged a batch it took ``CLAIM_SLACK_MS`` after the claim,
        or closed after it;
        ``force`` stops waiting for that, unless the owner's frames were fetched (``incomplete``): a
        silent websocket had nothing to log, a polling client that stopped fetching may have had.
        A forced read that trusts the owner's silence names it (``trusted``): its process must have
        been running since the claim.
        """
        ...

    async def session_note(self, pid: str, action: Note, gen: str, owner: str) -> tuple[str, str]:
        """``left`` (the client is gone), ``closed`` (the connection is over), ``upgraded`` (off
        long-polling), ``behind`` (its client stopped reading: frames wait for it unlogged, so its
        silence proves nothing, as a polling client's) and ``caught_up`` (it logged what waited,
        and its silence tells again), ``broken`` (an event it sent is in no log:
        the generation cannot be recovered) or ``state``: (gen, owner)."""
        ...

    async def beat(self, process: str) -> None:
        """``process`` is running (a shared log: said every ``BEAT_EVERY_S``, for claims elsewhere)."""
        ...

    async def last_beat(self, process: str) -> int | None:
        """When ``process`` last said it was running (the log's clock), if it did lately."""
        ...

    async def prepare(self) -> None:
        """Connect and load what the first calls need, so that they pay none of it."""
        ...

    async def aclose(self) -> None: ...
