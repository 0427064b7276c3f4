"""One connection's side of the stream log: a batch's stream frames matched or appended.

Owns: grouping a batch's stream frames by key, how long a batch waits (for frames another tab
here was fed first, then one deadline for its log calls: a repair and the append), frames
another tab went on without (unstamped, as missed), the append
request (the connection's cursor and the entries it passed over), stamping what the log
numbered, what the log missed (those streams start a new epoch, and so do those a newcomer went
on in after a dead process's connection), and which streams a connection
left in flight when it ends (or, on long-polling, when its client has been away a while;
:mod:`~asgi_resume.pipeline.orphans` flags them). Must not touch: frames' bytes (``units``), the
order a batch is sent in (``outbound``), transports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection

from asgi_resume.guard import Deadline
from asgi_resume.log import AppendRequest, LogUnavailable, StreamKey
from asgi_resume.log.base import BEAT_LAPSE_MS, SHARED_LOOKBACK_MS
from asgi_resume.log.names import new_epoch, process_name, process_of, with_epoch
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.orphans import orphan_streams
from asgi_resume.pipeline.polling_feeds import Feed, in_order
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.pipeline.units import EventUnit, by_content
from asgi_resume.stats import fault

logger = logging.getLogger("asgi_resume")


class StreamWriter:
    def __init__(self, runtime: Runtime, conn: Connection) -> None:
        self.runtime = runtime
        self.conn = conn
        self.log = runtime.log
        self._waiting_repairs = runtime.repairs.waiting  # (the same dict for the process's life: hot)
        self._held = False
        self._lookback_ms = SHARED_LOOKBACK_MS if runtime.log.shared else 0  # (one process: no fan-out lag)
        self._max_frame = runtime.settings.max_frame_bytes
        self.own_feed: Feed | None = None  # its long-polling session (it waits for no frame of its own)

    @property
    def held(self) -> bool:
        """Its client left (the connection is held, or told the app it left): it takes no stream over."""
        return self._held

    @held.setter
    def held(self, value: bool) -> None:
        if value and not self._held:  # from now on only a log call made after this counts as taking its streams over
            self.runtime.recent.hold_began(self.conn.in_flight, self.log.now_ms())
        self._held = value

    async def append(self, units: list[EventUnit]) -> None:
        """Match or append the batch's stream frames: one log call, however many streams. Then they
        are logged (or never will be): other connections' frames of these keys need not wait."""
        try:
            await self._append(units)
        finally:
            logged = self.runtime.order.logged
            for unit in units:
                logged(unit.stream, unit.order, unit.epoch, unit.seq)  # type: ignore[arg-type]  # (stream units have one)

    async def _append(self, units: list[EventUnit]) -> None:
        conn, stats = self.conn, self.runtime.stats
        if conn.departed:
            # frames fed before it left their namespace: its streams there are flagged and no longer
            # followed here (Connection.disconnected), so they go out as they are, in no log, rather
            # than take the stream back (a cursor, or a newcomer's new epoch under the tabs that stayed)
            units = [unit for unit in units if conn.still_in(unit.stream)]  # type: ignore[arg-type]
            if not units:
                return
        pending: dict[StreamKey, list[EventUnit]] = {}
        saw = conn.saw
        max_frame, too_large = self._max_frame, None
        for unit in units:
            key = unit.stream
            assert key is not None
            group = pending.get(key)
            if group is None:
                pending[key] = [unit]
            else:
                group.append(unit)
            saw(key, unit.done)
            if (len(unit.raw) << 2 > max_frame or unit.attachments) and unit.over(max_frame):  # (hot)
                too_large = too_large or set()
                too_large.add(key)
        if too_large:
            # a frame over ASGI_RESUME_MAX_FRAME_BYTES is not logged (one append of 32 MB outlasted
            # the write timeout on Redis and opened the breaker for every stream: found by attack):
            # its stream's frames in this batch go out unstamped, and the stream starts a new epoch
            stats.frames_too_large += sum(len(pending[key]) for key in too_large)
            self._unlogged({key: pending.pop(key) for key in too_large})
            if not pending:
                return
        runtime = self.runtime
        guard = runtime.guard
        synchronous = self.log.synchronous
        if not (synchronous or guard.available()):  # it failed a moment ago: do not wait on it
            self._unlogged(pending)
            return
        # copies of entries logged here a moment ago (none while streams wait for their repair)
        if units[0].copy and not self._held and not self._waiting_repairs:
            self._known(pending)
            if not pending:
                return
        clock = time.monotonic  # (not the loop's: asyncio.get_running_loop() is a getpid() on CPython 3.11)
        order, wait = runtime.order, guard.deadlines.write.seconds
        waits_end = 0.0  # (the clock is read only when a wait is due: hot path)
        cursors = conn.cursors
        out_of_turn: dict[StreamKey, list[EventUnit]] = {}
        for key, group in pending.items():  # frames another tab here was fed first, and these lack, go first
            head = group[0]
            if key not in cursors and runtime.polling_feeds.any_of(key.principal):
                # its first frame of the stream: what the app sent a long-polling tab of the user
                # before it may wait unfed in python-engineio, and goes to the log first
                waits_end = waits_end or clock() + wait
                remaining = max(0.0, waits_end - clock())
                if not await runtime.polling_feeds.fed(key.principal, head.received_ms, remaining, self.own_feed):
                    stats.order_waits_timed_out += 1
            if order.before(key, head.order):
                waits_end = waits_end or clock() + wait
                with in_order(self.own_feed):
                    turned = await order.turn(key, head.order, by_content(group), max(0.0, waits_end - clock()))
                if not turned:
                    stats.order_waits_timed_out += 1  # (the log is not to blame: it gets its own deadline)
            if order.passed_over(key, group) and key not in conn.rejoining:
                out_of_turn[key] = group  # another tab went on without these (a tab rejoining logs none of them)
                continue
            if head.emitted is not None and key not in cursors and not conn.unlogged:
                # its first frame of the stream: placed at its own emit if another tab here logs it
                copy = order.copy_on_its_way(key, head.emitted, head.order)
                if copy is not None:
                    waits_end = waits_end or clock() + wait
                    with in_order(self.own_feed):
                        logged = await order.until_logged(key, copy, max(0.0, waits_end - clock()))
                    if not logged:
                        stats.order_waits_timed_out += 1
                where = order.placed(key, head.content_digest(), head.emitted)
                if where is not None:
                    conn.placed(key, *where)
        if out_of_turn:  # logged now they would follow frames emitted after them: a client applying
            # frames by seq would drop those as seen. They go out unstamped, and the stream starts anew
            for key in out_of_turn:
                del pending[key]
            self._passed_over(out_of_turn)
            if not pending:
                return
        # one deadline for the batch's log calls, a repair and the append (the in-process log gets no timer)
        ends = None if synchronous else clock() + wait
        if self._waiting_repairs:  # streams of the batch the log missed frames of start a new epoch first
            await runtime.repairs.repair(Deadline(wait if ends is None else max(0.0, ends - clock())), pending)
            if not guard.available():  # the repair found the log still failing
                self._unlogged(pending)
                return
        if conn.departed:  # (it may have left a namespace while this batch waited its turn)
            for key in [key for key in pending if not conn.still_in(key)]:
                del pending[key]
            if not pending:
                return
        requests = [self._request(key, group) for key, group in pending.items()]
        remaining = 0.0
        if ends is not None:  # a call given up on must not land later, out of place (see AppendRequest)
            remaining = max(0.0, ends - clock())
            within_ms = int(remaining * 1000)
            for request in requests:
                request.within_ms, request.fresh_epoch = within_ms, new_epoch()
        stats.log_writes += 1
        try:
            if ends is None:  # the in-process log never waits: no timer (the guard sets none), no company
                results = await guard.call(guard.deadlines.write, self.log.append, requests)
            else:
                conn.calling = True  # (what a release of its streams waits for: see orphans.orphan_streams())
                try:
                    # (the group commit keeps the deadline: one timer for the callers of a round trip)
                    deadline = Deadline(remaining, timed_here=False)
                    results = await guard.call(deadline, runtime.appends.append, requests, remaining)
                finally:
                    conn.calling = False
                    if conn.call_answered is not None:
                        conn.call_answered.set_result(None)
                        conn.call_answered = None
        except LogUnavailable:
            self._unlogged(pending, requests)  # (the call may still land)
            return
        recent = runtime.recent
        learned = None if self._held else recent.learned  # (a held connection takes nothing over)
        copied = recent.copies_seen
        continued: dict[str, dict[StreamKey, str]] = {}  # other processes whose connection's epoch we went on in
        for (key, group), request, result in zip(pending.items(), requests, results, strict=True):
            if result.failed is not None:  # this stream alone: the log is up, and others were logged
                guard.failed_alone()
                self._unlogged({key: group})
                continue
            if conn.unlogged:
                conn.unlogged.pop(key, None)
            if learned is not None and key in copied:
                learned(key, result.epoch, result.seqs, request.entries, group[-1].received_ms)
            for unit, seq in zip(group, result.seqs, strict=True):
                if seq > 0:
                    unit.seq, unit.epoch = seq, result.epoch
                    stats.frames_stamped += 1
                else:  # its copy was logged before frames this connection got earlier: no seq for it
                    stats.frames_unmatched += 1
            if conn.departed and not conn.still_in(key):
                continue  # it left the namespace while this call was out: it follows the stream no more
            conn.followed(key, result.epoch, result.seqs, result.others_ms)
            if result.continued:
                process = process_of(result.continued)
                if process != process_name():
                    continued.setdefault(process, {})[key] = result.epoch
        if continued:  # (rare: the log had nobody's copy of its first frame)
            runtime.in_background(self._after_the_dead(continued, self.log.now_ms()))

    async def _after_the_dead(self, continued: dict[str, dict[StreamKey, str]], appended_ms: int) -> None:
        """This connection, new to these streams, appended its first frame of each to an epoch that
        a connection of another process appended to last. If that process was dead by then (no beat
        since, within ``BEAT_LAPSE_MS``: killed, or stopped that long), what the app emitted after
        it died was logged by nobody, and the epoch must not go on across it: the streams start a
        new one, as streams the log missed frames of do (a process shut down flags its streams; a
        killed one cannot). If the log does not say, they start one all the same. Checked after the
        fact, not before the frames go out: a running process beats within it, so a live one costs
        one call, and no wait."""
        await asyncio.sleep(BEAT_LAPSE_MS / 1000)
        runtime, log, conn = self.runtime, self.log, self.conn
        if runtime.closing:
            return
        guard = runtime.guard
        dead: dict[StreamKey, str] = {}
        for process, epochs in continued.items():
            try:
                beat = await guard.call(guard.deadlines.write, log.last_beat, process)
            except LogUnavailable:
                beat = None
            except Exception:  # (a bug here must not go unseen, nor cost the connection)
                logger.exception("asgi_resume could not ask for process %s's heartbeat", process)
                beat = None
            if beat is None or beat < appended_ms:
                cursors = conn.cursors
                for key, epoch in epochs.items():  # (not those it follows no more in that epoch: repaired, left)
                    if conn.released or (key in cursors and cursors[key][0] == epoch):
                        dead[key] = epoch
        if not dead:
            return
        conn.unlogged.update(dead)  # (the epoch the repair leaves)
        self._start_over(dead)
        if conn.released:
            runtime.repairs.closed(conn)  # (repaired without it)

    def _known(self, pending: dict[StreamKey, list[EventUnit]]) -> None:
        """Stamp, and take out of ``pending``, the frames that are copies of the entries right after
        this connection's cursor, as another live connection here just logged them: the log would
        match them to those seqs (its rule), so they need no call. That connection's append told
        the log the key is taken over, as this one's would have (see :mod:`asgi_resume.log.recent`).
        What follows them in a group goes to the log, after the cursor they moved."""
        recent, stats = self.runtime.recent, self.runtime.stats
        copies_seen, cursors = recent.copies_seen, self.conn.cursors
        for key, group in list(pending.items()):
            if key not in copies_seen:
                recent.copied(key)  # (its entries are worth learning from now on)
            cursor = cursors.get(key)
            if cursor is None or not recent.after(key, *cursor):  # (its first frame, or nothing new here)
                continue
            epoch, after = cursor
            count = recent.matched(key, epoch, after, [u.content_digest() for u in group], group[0].received_ms)
            if not count:
                continue
            for seq, unit in enumerate(group[:count], after + 1):
                unit.seq, unit.epoch = seq, epoch
            cursors[key] = (epoch, after + count)  # (what ``Connection.followed`` makes of contiguous seqs)
            stats.frames_stamped += count
            stats.frames_stamped_known += count
            if count == len(group):
                del pending[key]
            else:
                pending[key] = group[count:]

    def _request(self, key: StreamKey, group: list[EventUnit]) -> AppendRequest:
        conn = self.conn
        cursor_epoch, cursor_seq = conn.cursors.get(key, (None, 0))
        unlogged, skipped = conn.unlogged, conn.skipped  # (both empty, mostly)
        reset_epoch = unlogged.get(key) if unlogged else None
        return AppendRequest(
            key,
            [unit.entry() for unit in group],
            cursor_epoch,
            cursor_seq,
            conn.joined_ms.get(key.namespace, conn.started_ms),
            lookback_ms=self._lookback_ms,
            reset=reset_epoch is not None,
            reset_epoch=reset_epoch or "",
            connection=conn.id,
            skipped=skipped.get(key, []) if skipped else [],
            held=self._held,
            rejoining=bool(conn.rejoining) and key in conn.rejoining,
        )

    def _unlogged(self, by_key: dict[StreamKey, list[EventUnit]], sent: list[AppendRequest] | None = None) -> None:
        """The log missed these frames: they go out unstamped, and the streams get a new epoch.

        ``sent``: the requests of a call that timed out, which may have landed all the same (its
        answer, or Redis, was slow): the epoch it would have started is repaired too, as the one
        the connection knew. Streams of a namespace this connection left meanwhile are the tabs'
        that stayed to log, but such a call that followed the stream could land after its release
        and clear the flag: that stream gets a new epoch if it is still in the one the call followed.
        """
        conn, recent, stats = self.conn, self.runtime.recent, self.runtime.stats
        requests = {request.key: request for request in sent} if sent else {}
        missed = []
        for key, group in by_key.items():
            stats.frames_unstamped += len(group)
            recent.forget(key)  # (its history here has a hole: the log numbers what comes next)
            request = requests.get(key)
            if conn.departed and not conn.still_in(key):
                epoch = request.cursor_epoch if request is not None else None
                if not epoch:
                    continue
                conn.unlogged.setdefault(key, epoch)
            else:
                conn.forget(key)
            if request is not None and request.fresh_epoch:
                conn.unlogged[key] = with_epoch(conn.unlogged[key], request.fresh_epoch)
            missed.append(key)
        self.runtime.repairs.missed(conn, missed)

    def _passed_over(self, by_key: dict[StreamKey, list[EventUnit]]) -> None:
        """Another tab here logged newer frames without these (see ``FeedOrder.passed_over``)."""
        runtime = self.runtime
        runtime.stats.frames_passed_over += sum(len(group) for group in by_key.values())
        skipped = runtime.warnings.allow("passed_over")
        if skipped is not None:
            logger.warning(
                "frames of streams %s went out unstamped (their streams start a new epoch): another tab "
                "logged newer frames without them, after ASGI_RESUME_WRITE_TIMEOUT or while this "
                "connection's client did not read (%d more not logged)",
                [key.label() for key in list(by_key)[:5]],
                skipped,
                extra=fault("frames_passed_over", skipped=skipped),
            )
        self._unlogged(by_key)

    def passed_unread(self) -> None:
        """Frames of this connection went out unread (see :meth:`Outbound.passed_unread`): every
        stream it follows (or has in flight) starts a new epoch, as one the log missed frames of."""
        conn = self.conn
        self._start_over(list(dict.fromkeys([*conn.cursors, *conn.in_flight])))

    def _start_over(self, keys: Collection[StreamKey]) -> None:
        """What was logged of ``keys`` has a hole: each starts a new epoch (at its next append, or
        repaired: :mod:`~asgi_resume.pipeline.repairs`), from the one in ``Connection.unlogged``."""
        conn, recent = self.conn, self.runtime.recent
        for key in keys:
            recent.forget(key)
            conn.forget(key)
        self.runtime.repairs.missed(conn, keys)

    async def release(
        self, unflushed: list[EventUnit], handed_over: bool = False, last_seen: float | None = None
    ) -> list[StreamKey]:
        """The connection is over: flag the streams it left in flight (returned).

        A newcomer that later logs an orphaned stream starts a new epoch, so what was emitted while
        nobody logged it shows up as a gap instead of a silent hole. A connection whose client
        recovered its session on another one (``handed_over``) orphans nothing: that connection
        joined the rooms before it claimed the session, so nothing fell between the two.
        ``last_seen``: when its client was last there (monotonic; a polling client that stopped
        polling a while ago): streams in flight then are the ones it left. ``unflushed``: stream
        frames fed and never flushed (the connection was cut): nobody waits for them.
        """
        for unit in unflushed:
            self.runtime.order.logged(unit.stream, unit.order)  # type: ignore[arg-type]  # (stream units)
        return [] if handed_over else await self.orphan(last_seen)

    async def orphan(self, last_seen: float | None = None) -> list[StreamKey]:
        """Flag the streams in flight here as of ``last_seen`` (returned): whoever logs one next
        without having followed it starts a new epoch, and a resume meanwhile says ``gap``. This
        connection's own next append continues the epoch (it follows the stream) and unflags it."""
        orphaned = self.conn.active_streams(self.runtime.settings.hold_idle, last_seen)
        return orphaned if await orphan_streams(self.runtime, self.conn, orphaned) else []
