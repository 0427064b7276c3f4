"""Socket.IO connection state recovery, for python-socketio apps and the stock socket.io-client.

Owns: the protocol of the official Node server (see docs/protocol.md) spoken on the app's behalf: a
``pid`` in each CONNECT reply, an offset appended to every event without an ack id, and, when a
client reconnects with ``{pid, offset}`` in its CONNECT auth, the events its previous connection
missed, sent before the CONNECT reply (which repeats the pid, so ``socket.recovered`` is true;
rendered by :mod:`~asgi_resume.pipeline.recovery_replay`).

Each (connection, namespace) logs the events it sends in a session log (per pid, in generations:
a reconnect claims the session and starts a new generation). The previous connection, when still
held, keeps logging what it received before the claim, then notices the claim and lets its app
connection go; what a connection tells its sessions about itself is
:mod:`~asgi_resume.pipeline.recovery_notes`. Must not touch: transports, the per-stream log.
"""

from __future__ import annotations

import logging
import time

import anyio

from asgi_resume import protocol
from asgi_resume.log import LogUnavailable
from asgi_resume.log.base import CLAIM_SLACK_MS, Payload, SessionAppend, payload_size
from asgi_resume.log.names import new_generation, process_name, process_of
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.recovery_notes import RecoveryNotes
from asgi_resume.pipeline.recovery_replay import duplicate, replay_frames
from asgi_resume.pipeline.recovery_state import RecoveryState
from asgi_resume.pipeline.replay import REPLAY_FIRST_PAGE, REPLAY_PAGE_BYTES, Deliver, next_page, page_turns
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.pipeline.units import EventUnit, Outgoing
from asgi_resume.protocol.recovery import PID_FIELD, UNLOGGED_OFFSET, new_pid, offset

logger = logging.getLogger("asgi_resume")

FLUSH_WAIT_S = 0.3  # how long a claim waits for the previous connection to log what it got before it


class Recovery:
    """Connection state recovery for one connection (all its namespaces)."""

    def __init__(self, runtime: Runtime, conn: Connection) -> None:
        self.runtime = runtime
        self.conn = conn
        self.notes = RecoveryNotes(runtime, conn)  # what it tells its sessions about itself
        self._max_frame = runtime.settings.max_frame_bytes

    @property
    def states(self) -> dict[str, RecoveryState]:
        return self.conn.recovery

    def wants(self, namespace: str, ack_id: int | None) -> bool:
        """Does an event sent in ``namespace`` get an offset? (Ack'd events do not, as on Node.)"""
        return ack_id is None and namespace in self.states

    def waits_for_reply(self, unit: EventUnit) -> bool:
        """Frames sent before the CONNECT reply wait for it: the replay must come first."""
        state = self.states.get(unit.namespace)
        if state is None or not state.awaiting_reply:
            return False
        state.before_reply.append(unit)
        return True

    def is_reply(self, frame: str) -> protocol.Packet | None:
        """The app's CONNECT reply for a namespace whose client presented (or may get) a pid."""
        if frame[:2] != protocol.CONNECT_HEAD:
            return None
        packet = protocol.parse(frame)
        if packet is None or not isinstance(packet.data, dict) or "sid" not in packet.data:
            return None
        state = self.states.get(packet.namespace)
        return packet if state is not None and state.awaiting_reply else None

    async def log(
        self, units: list[EventUnit], flushed_ms: int, *, create: RecoveryState | None = None, held: bool = False
    ) -> None:
        """Give each unit its offset: log it in its namespace's session (one round trip in all).

        ``flushed_ms``: every frame this connection got before then is in ``units`` or was logged
        before (a claim waits for that to pass its own time before it reads). ``held``: the
        connection is held (its client left): the frames' objects are kept for a claim here
        (:mod:`~asgi_resume.pipeline.held_frames`).
        """
        # each namespace's state, taken now: a DISCONNECT read while the log call is out ends it
        groups: dict[str, tuple[RecoveryState, list[EventUnit]]] = {}
        if create is not None:
            groups[create.namespace] = (create, [])
        for unit in units:
            state = self.states.get(unit.namespace)
            if state is not None and state.awaiting_reply:
                continue  # waits for the CONNECT reply, then is logged in the session it recovers
            if state is None:
                continue  # the namespace's recovery ended after it was fed (refused, or no principal): no offset
            if not state.logging:
                unit.offset = UNLOGGED_OFFSET
                continue
            if unit.over(self._max_frame):
                # not logged (one append of 32 MB can outlast the write timeout on Redis, which opens
                # the breaker for everyone): the session has a hole, and is never recovered
                unit.offset = UNLOGGED_OFFSET
                state.loss_untold = True
                self.runtime.stats.frames_too_large += 1
                continue
            groups.setdefault(unit.namespace, (state, []))[1].append(unit)
        if not groups:
            if any(state.loss_untold for state in self.states.values()):
                await self.notes.tell_losses()
            return
        conn = self.conn
        # on long-polling what the app sends waits for the client's GET; on a websocket whose client
        # stopped reading, for the client to read
        fetched = not conn.upgraded or conn.behind
        requests = []
        for ns, (state, group) in groups.items():
            frames: list[tuple[int, Payload]] = [(u.received_ms, [u.live(), *u.attachments]) for u in group]
            requests.append(
                SessionAppend(
                    state.pid, state.gen, conn.id, state.principal, ns, frames, flushed_ms, fetched, state.starting
                )
            )
        guard = self.runtime.guard
        try:
            results = await guard.call(guard.deadlines.recovery_append, self.runtime.log.session_append, requests)
        except LogUnavailable:
            for state, group in groups.values():
                state.loss_untold = True  # a recovery from here cannot be complete: told when it answers
                for unit in group:
                    unit.offset = UNLOGGED_OFFSET
            return
        for (state, group), result in zip(groups.values(), results, strict=True):
            if result.status == "gone":
                state.logging = False  # the session is another connection's, and was read
            elif result.status == "lost":
                # not in the log (Redis emptied, no event for its TTL): these frames get an offset
                # no session has (a claim with an offset from before gets a normal connect); a
                # client still here gets the next ones in a new generation, which makes it again
                if held:  # (its client, gone, holds only offsets from before)
                    state.logging = False
                else:
                    state.gen, state.starting = new_generation(), True
            else:
                state.starting = False
            for i, unit in enumerate(group):
                unit.offset = offset(state.gen, result.numbers[i]) if i < len(result.numbers) else UNLOGGED_OFFSET
            if held and result.status in ("ok", "taken") and self.states.get(state.namespace) is state:
                numbered = [
                    (n, u.emitted) for n, u in zip(result.numbers, group, strict=False) if u.emitted is not None
                ]
                self.runtime.held_frames.logged(state.pid, state.gen, numbered)
        if any(state.loss_untold for state in self.states.values()):
            await self.notes.tell_losses()

    async def reply(self, frame: str, packet: protocol.Packet, flushed_ms: int, deliver: Deliver) -> list[Outgoing]:
        """The app accepted the connection: recover the session (or start one), then the CONNECT reply.

        A recovery's replay is handed to ``deliver`` here, a page per loop iteration (a page's frames
        may take the transport a while: compressing them, for one); what follows it is returned.
        """
        stats = self.runtime.stats
        ns = packet.namespace
        state = self.states[ns]
        state.awaiting_reply = False
        principal = self.conn.principal_for(ns)
        if principal is None:
            # a connection without a principal logs nothing, and its pid would be anybody's to claim
            del self.states[ns]
            if state.claim is not None:
                stats.recoveries_refused += 1
            passed: list[Outgoing] = [f for unit in state.before_reply for f in unit.frames()]
            return [*passed, frame]
        state.principal = principal
        new_gen = new_generation()
        replay: list[list[Outgoing]] = []
        recovered = False
        if state.claim is not None:
            recovered, replay = await self._claim(state, new_gen)
        waited, state.before_reply = state.before_reply, []
        if self.states.get(ns) is not state:
            # the client left the namespace while the claim was out: nothing is to be recovered
            # there, and a session it claimed is closed (the app's reply goes out as it is)
            if recovered:
                self.runtime.closes.add(state.pid, new_gen, self.conn.id, state.principal)
            gone: list[Outgoing] = [f for unit in waited for f in unit.frames()]
            return [*gone, frame]
        if not recovered:
            state.pid = new_pid()
        state.gen, state.logging, state.starting = new_gen, True, True
        waited = [u for u in waited if not self._replayed(u)]
        await self.log(waited, flushed_ms, create=state)
        for i, page in enumerate(replay):
            if i:
                size = sum(len(part) for part in page if isinstance(part, str | bytes))
                await self.runtime.replay_turns.take(page_turns(size))
            if not await deliver(page):
                break  # the client is gone
        out: list[Outgoing] = []
        for unit in waited:
            out += unit.frames()
        out.append(protocol.with_member(frame, packet, PID_FIELD, state.pid))
        if state.claim is not None:
            if recovered:
                stats.recoveries_ok += 1
            else:
                stats.recoveries_refused += 1
        return out

    def _replayed(self, unit: EventUnit) -> bool:
        if unit.stream is not None and unit.seq and self.conn.was_replayed(unit.stream, unit.epoch, unit.seq):
            return True
        return duplicate(self.conn, unit)

    async def _claim(self, state: RecoveryState, new_gen: str) -> tuple[bool, list[list[Outgoing]]]:
        """Claim the client's previous session; its frames after the client's offset, or nothing.

        Read and rendered a page at a time, as a resume's replay is (``replay.next_page``), a page
        per loop iteration; nothing is rendered until every page was read (a page that finds its entries
        gone makes a normal connect: the replay is whole or not sent)."""
        claim, runtime, conn = state.claim, self.runtime, self.conn
        assert claim is not None
        principal = state.principal
        window_ms = int(runtime.settings.recovery_window * 1000)
        guard, log = runtime.guard, runtime.log
        if runtime.closes.refuses(claim.pid, claim.gen, principal):  # its client left it: being closed
            logger.info("recovery of session %s…: closed", claim.pid[:6])
            return False, []
        claimed_ms = log.now_ms()  # (the claim's time in the log is a little later)
        try:
            result = await guard.call(
                guard.deadlines.recovery,
                log.session_claim,
                claim.pid,
                principal,
                state.namespace,
                claim.gen,
                conn.id,
                new_gen,
                window_ms,
            )
            if result.status != "ok":
                logger.info("recovery of session %s…: %s", claim.pid[:6], result.status)
                return False, []
            give_up_waiting = time.monotonic() + FLUSH_WAIT_S
            while True:
                force = time.monotonic() >= give_up_waiting
                read = await guard.call(
                    guard.deadlines.recovery,
                    log.session_read,
                    claim.pid,
                    claim.gen,
                    claim.after,
                    force,
                    REPLAY_FIRST_PAGE,
                    REPLAY_PAGE_BYTES,
                )
                if read.status != "wait":
                    break
                await anyio.sleep(0.01)  # the previous connection is still logging what it got
            if read.status == "ok" and not await self._ran_since(read.trusted, claimed_ms):
                logger.info(
                    "recovery of session %s…: its previous connection's process has not run since the claim "
                    "(killed, stopped or blocked: what it was sent may be in no log)",
                    claim.pid[:6],
                )
                return False, []
            pages = [read.frames] if read.status == "ok" else []
            sizes = [_size(read.frames)]  # (each page's payload bytes)
            while pages and pages[-1] and pages[-1][-1][0] < read.last:
                await runtime.replay_turns.take()  # a page per loop iteration, of all replays and claims
                before = pages[-1]
                page = await guard.call(
                    guard.deadlines.recovery,
                    log.session_read,
                    claim.pid,
                    claim.gen,
                    before[-1][0],
                    True,
                    next_page(len(before), sizes[-1]),
                    REPLAY_PAGE_BYTES,
                    read.last,  # a following page of the read: it ends where the read did
                )
                if page.status != "ok" or not page.frames:
                    logger.info("recovery of session %s…: its frames were dropped while it was read", claim.pid[:6])
                    return False, []
                pages.append(page.frames)
                sizes.append(_size(page.frames))
        except LogUnavailable as exc:
            logger.warning("recovery of session %s… failed: the log is unreachable (%s)", claim.pid[:6], exc)
            return False, []
        if read.status == "incomplete":
            logger.info(
                "recovery of session %s…: what the app sent its connection may be in no log (the log missed "
                "an event, or the connection was on long-polling, or its client had stopped reading, and it "
                "logged nothing since the claim)",
                claim.pid[:6],
            )
            return False, []
        if read.status != "ok":
            logger.info("recovery of session %s…: its frames after the offset are gone", claim.pid[:6])
            return False, []
        state.pid = claim.pid
        objects = runtime.held_frames.take(claim.pid, claim.gen)  # (when the previous connection is held here)
        rendered = []
        for i, entries in enumerate(pages):
            if i:  # rendered a page per loop iteration too
                await runtime.replay_turns.take(page_turns(sizes[i]))
            rendered.append(replay_frames(runtime, conn, state, claim.gen, entries, objects))
        return True, rendered

    async def _ran_since(self, owner: str, claimed_ms: int) -> bool:
        """Has the process of ``owner`` (a connection whose silence a read took for complete, if
        any) run since the claim? This one has; another says so by its heartbeat."""
        process = process_of(owner)
        if not owner or not process or process == process_name():
            return True
        guard = self.runtime.guard
        beat = await guard.call(guard.deadlines.recovery, self.runtime.log.last_beat, process)
        return beat is not None and beat > claimed_ms + CLAIM_SLACK_MS

    def passed_unread(self) -> list[Outgoing]:
        """Frames went to the client unread (see :meth:`Outbound.passed_unread`): every session is
        noted broken (a history with a hole), and a namespace still waiting for its CONNECT reply
        (which may have gone out unread) ends its recovery there: what waited for that reply is
        returned, owed to the client."""
        owed: list[Outgoing] = []
        for ns, state in list(self.states.items()):
            state.loss_untold = True
            if state.awaiting_reply:
                del self.states[ns]
                if state.claim is not None:
                    self.runtime.stats.recoveries_refused += 1
                owed += [f for unit in state.before_reply for f in unit.frames()]
        return owed

    @property
    def recoverable(self) -> bool:
        return any(state.recoverable for state in self.states.values())

    def ended(self, namespace: str) -> None:
        """The client left ``namespace`` on purpose, or the app let it go there: nothing of it is to
        be recovered. Its session is closed now (the log drops it at once: a client that joins and
        leaves over and over must not pile up sessions kept for the stream ttl)."""
        state = self.states.pop(namespace, None)
        if state is not None and state.pid:
            self.runtime.held_frames.ended(state.pid, state.gen)
            self.runtime.closes.add(state.pid, state.gen, self.conn.id, state.principal)


def _size(entries: list[tuple[int, int, Payload]]) -> int:
    """A page of a session's entries: their payloads' bytes."""
    return sum(payload_size(payload) for _, _, payload in entries)
