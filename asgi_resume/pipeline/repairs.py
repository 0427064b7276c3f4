"""Streams the log missed frames of, until each has started a new epoch: the repairs.

Owns: which streams wait for a new epoch after the log missed frames of them (an append that
failed or timed out, a release the log did not hear), which connections to tell once it started
(so that their own next frame does not start another), the reset calls (those a batch or a
replay is about to touch first, in-band; the rest in the background, a chunk per call) and their
bounds. Must not touch: a connection's frames, transports.

A reset names the epoch the frames were missed in and starts a new one only if the stream is
still in it, so the second of two tabs that missed the same frames starts nothing new. A
connection that had no cursor (it missed its first frames of the stream) names no epoch, and its
reset starts a new one whatever the stream's is: one call sends at most one such reset per
stream, and none when another reset names an epoch. A connection that closes before its streams
are repaired is let go: its streams are repaired without it (the epoch it missed frames in, and
its id, kept), so that nobody goes on in them across what it missed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from asgi_resume.guard import RETRY_AFTER_S, Deadline, LogGuard
from asgi_resume.log import AppendRequest, LogUnavailable, StreamKey
from asgi_resume.log.base import LATE_MARGIN_MS
from asgi_resume.pipeline.session import Session
from asgi_resume.stats import Stats

#: streams waiting for their new epoch (~300 bytes each); past it a stream waits for its own tab's
#: next frame (``repairs_dropped``)
MAX_REPAIRS = 100_000
#: resets per background call: a chunk fits a write deadline on Redis (10,000 took 0.42 s)
CHUNK = 500


@dataclass(slots=True)
class _Waiting:
    """One stream waiting for its new epoch."""

    tabs: dict[Session, None] = field(default_factory=dict)  # live connections that missed frames of it
    gone: dict[str, str] = field(default_factory=dict)  # of those that closed since: epoch missed in -> id


class Repairs:
    def __init__(self, guard: LogGuard, stats: Stats) -> None:
        self.guard = guard
        self.stats = stats
        #: the streams waiting (a plain dict: the live path tests it for every batch)
        self.waiting: dict[StreamKey, _Waiting] = {}
        self.closing = False  # the server is going down: no more repairs
        self._task: asyncio.Task[None] | None = None

    def missed(self, session: Session, keys: Iterable[StreamKey]) -> None:
        """The log missed frames of ``keys`` sent to ``session``'s connection (or may have: an
        append that timed out); each one's epoch then is ``session.unlogged[key]``.

        Until a new epoch starts for them, a resume would read a history with a silent hole (or
        a duplicate of what went out unstamped): they are repaired as soon as the log answers
        again, even if no frame of them ever comes again.
        """
        waiting = self.waiting
        for key in keys:
            entry = waiting.get(key)
            if entry is None:
                if len(waiting) >= MAX_REPAIRS:
                    self.stats.repairs_dropped += 1
                    continue
                entry = waiting[key] = _Waiting()
            entry.tabs[session] = None
        if waiting and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._in_background())

    def closed(self, session: Session) -> None:
        """``session``'s connection is over: its streams are repaired without it."""
        for key, epoch in session.unlogged.items():
            entry = self.waiting.get(key)
            if entry is not None and session in entry.tabs:
                del entry.tabs[session]
                entry.gone.setdefault(epoch, session.id)

    async def repair(self, deadline: Deadline | None = None, keys: Iterable[StreamKey] | None = None) -> bool:
        """Start a new epoch for the streams waiting among ``keys`` (by default a chunk of them),
        in one call within ``deadline`` (by default the write deadline). False: the log did not
        answer (they wait again)."""
        waiting = self.waiting
        if not waiting or not self.guard.available():
            return False
        chosen = list(itertools.islice(waiting, CHUNK)) if keys is None else [k for k in keys if k in waiting]
        taken = {key: waiting.pop(key) for key in chosen}
        requests: list[AppendRequest] = []
        told: list[tuple[StreamKey, Session, str]] = []  # each tab, and the epoch it was told of
        for key, entry in taken.items():
            epochs: dict[str, str] = {}  # epoch missed in -> a connection that missed frames in it
            for session in entry.tabs:
                epoch = session.unlogged.get(key)
                if epoch is not None:  # (else its own next frame started the new epoch)
                    epochs.setdefault(epoch, session.id)
                    told.append((key, session, epoch))
            for epoch, connection in entry.gone.items():
                epochs.setdefault(epoch, connection)
            if len(epochs) > 1:
                epochs.pop("", None)  # an epoch named is the one to leave, if any is; "" would start a second
            requests += [AppendRequest(key, [], reset=True, reset_epoch=e, connection=c) for e, c in epochs.items()]
        if not requests:
            return True
        deadline = deadline or self.guard.deadlines.write
        not_after = self.guard.log.now_ms() + int(deadline.seconds * 1000) + LATE_MARGIN_MS
        for request in requests:
            request.not_after_ms = not_after  # (given up on, it must not land later: see AppendRequest)
        try:
            results = await self.guard.call(deadline, self.guard.log.append, requests)
        except LogUnavailable:
            for key, entry in taken.items():
                self._put_back(key, entry)
            return False
        failed = {request.key for request, result in zip(requests, results, strict=True) if result.failed is not None}
        for key in failed:  # (that stream alone: its tabs' next frames start the new epoch)
            self.stats.repairs_dropped += len(taken[key].gone)
        for key, session, epoch in told:
            if key in failed or session.unlogged.get(key) != epoch:
                # the tab logged the stream since, or missed it again, while the repair was on its
                # way: its own state is newer than this answer
                continue
            del session.unlogged[key]  # done on its behalf: its next frame joins the new epoch
            session.cursors.pop(key, None)
            session.skipped.pop(key, None)
        return True

    def _put_back(self, key: StreamKey, entry: _Waiting) -> None:
        """A repair that did not reach the log waits again (with what came for it meanwhile)."""
        now = self.waiting.get(key)
        if now is None:
            self.waiting[key] = entry
            return
        now.tabs.update(entry.tabs)
        for epoch, connection in entry.gone.items():
            now.gone.setdefault(epoch, connection)

    async def _in_background(self) -> None:
        """Repair what waits, a chunk per call, once the log may answer again."""
        deadline = self.guard.deadlines.repair
        while self.waiting and not self.closing:
            await asyncio.sleep(RETRY_AFTER_S)  # (the log failed a moment ago)
            while self.waiting and not self.closing and await self.repair(deadline):
                pass

    def close(self) -> None:
        self.closing = True
        if self._task is not None:
            self._task.cancel()
