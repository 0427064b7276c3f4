"""Streams the log missed frames of, until each has started a new epoch: the repairs.

Owns: which streams wait for a new epoch after the log missed frames of them (an append that
failed or timed out, a release the log did not hear), which connections to tell once it started
(so that their own next frame does not start another), the reset calls (those a batch or a
replay is about to touch first, in-band; the rest in the background, a chunk per call) and their
bounds. Must not touch: a connection's frames, transports.

A reset names the epochs the frames were missed in (the one each tab knew, and any that a call
which timed out may have started all the same) and starts a new one only if the stream is still
in one of them, so the second of two tabs that missed the same frames starts nothing new. A
connection that had no cursor (it missed its first frames of the stream) names no epoch: its reset
starts a new one whatever the stream's is, and goes only when no other names one. One call sends
one reset per stream. A connection that closes before its streams are repaired is let go: its
streams are repaired without it (the epochs it missed frames in, and its id, kept), so that nobody
goes on in them across what it missed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from asgi_resume.guard import RETRY_AFTER_S, Deadline, LogGuard
from asgi_resume.log import AppendRequest, LogUnavailable, StreamKey
from asgi_resume.log.names import new_epoch, with_epoch
from asgi_resume.pipeline.connection import Connection
from asgi_resume.stats import Stats

#: streams waiting for their new epoch (~300 bytes each); past it a stream waits for its own tab's
#: next frame (``repairs_dropped``)
MAX_REPAIRS = 100_000
#: resets per background call: a chunk fits a write deadline on Redis (10,000 took 0.42 s)
CHUNK = 500
#: streams one connection remembers it missed frames of (``Connection.unlogged``); past it its oldest
#: are repaired without it, as a closed connection's are (its own next frame of one of them then
#: joins the stream as a newcomer's, until the repair starts the new epoch)
UNLOGGED_KEPT = 1024


@dataclass(slots=True)
class _Waiting:
    """One stream waiting for its new epoch."""

    tabs: dict[Connection, None] = field(default_factory=dict)  # live connections that missed frames of it
    gone: dict[str, str] = field(default_factory=dict)  # of those that closed since: epochs missed in -> id


class Repairs:
    def __init__(self, guard: LogGuard, stats: Stats) -> None:
        self.guard = guard
        self.stats = stats
        #: the streams waiting (a plain dict: the live path tests it for every batch)
        self.waiting: dict[StreamKey, _Waiting] = {}
        self.closing = False  # the server is going down: no more repairs
        self._task: asyncio.Task[None] | None = None

    def missed(self, conn: Connection, keys: Iterable[StreamKey]) -> None:
        """The log missed frames of ``keys`` sent to connection ``conn`` (or may have: an
        append that timed out); each one's epoch then is ``conn.unlogged[key]``.

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
            entry.tabs[conn] = None
        unlogged = conn.unlogged
        if len(unlogged) > UNLOGGED_KEPT:  # (an outage with a connection on many streams)
            for key in list(itertools.islice(unlogged, len(unlogged) - UNLOGGED_KEPT)):
                self._let_go(conn, key, unlogged.pop(key))
        if waiting and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._in_background())

    def closed(self, conn: Connection) -> None:
        """Connection ``conn`` is over: its streams are repaired without it."""
        for key, epoch in conn.unlogged.items():
            self._let_go(conn, key, epoch)

    def _let_go(self, conn: Connection, key: StreamKey, epoch: str) -> None:
        """``key`` is repaired without ``conn`` (which missed frames of it in ``epoch``)."""
        entry = self.waiting.get(key)
        if entry is not None and conn in entry.tabs:
            del entry.tabs[conn]
            entry.gone.setdefault(epoch, conn.id)

    async def repair(self, deadline: Deadline | None = None, keys: Iterable[StreamKey] | None = None) -> bool:
        """Start a new epoch for the streams waiting among ``keys`` (by default a chunk of them),
        in one call within ``deadline`` (by default the write deadline). False: the log did not
        answer (they wait again)."""
        waiting = self.waiting
        if not waiting or not self.guard.available():
            return False
        chosen = list(itertools.islice(waiting, CHUNK)) if keys is None else [k for k in keys if k in waiting]
        taken = {key: waiting.pop(key) for key in chosen}
        deadline = deadline or self.guard.deadlines.write
        requests: list[AppendRequest] = []
        told: list[tuple[StreamKey, Connection, str]] = []  # each tab, and the epochs it was told of
        for key, entry in taken.items():
            missed: dict[str, str] = {}  # epochs missed in ("a,b": one of them) -> a connection that missed frames
            for conn in entry.tabs:
                epochs = conn.unlogged.get(key)
                if epochs is not None:  # (else its own next frame started the new epoch)
                    missed.setdefault(epochs, conn.id)
                    told.append((key, conn, epochs))
            for epochs, connection in entry.gone.items():
                missed.setdefault(epochs, connection)
            if not missed:
                continue
            # one reset: the stream is in one of the epochs named at most; "" (whatever it is) only
            # when none is named, or it would start a second one
            named = list(dict.fromkeys(e for epochs in missed if epochs for e in epochs.split(",")))
            requests.append(
                AppendRequest(
                    key,
                    [],
                    reset=True,
                    reset_epoch=",".join(named),
                    connection=next(iter(missed.values())),
                    # a repair is no connection using the stream: it takes nothing over from a hold (on
                    # behalf of a tab whose client left, it ended the user's held tab's hold: found by review)
                    held=True,
                    within_ms=int(deadline.seconds * 1000),  # (given up on, it must not land later)
                    fresh_epoch=new_epoch(),
                )
            )
        if not requests:
            return True
        try:
            results = await self.guard.call(deadline, self.guard.log.append, requests)
        except LogUnavailable:
            for request in requests:  # (it may have landed all the same: its epoch is repaired too)
                self._put_back(request.key, taken[request.key], request.fresh_epoch)
            return False
        failed = {request.key for request, result in zip(requests, results, strict=True) if result.failed is not None}
        for key in failed:  # (that stream alone: its tabs' next frames start the new epoch)
            self.stats.repairs_dropped += len(taken[key].gone)
        for key, conn, epoch in told:
            if key in failed or conn.unlogged.get(key) != epoch:
                # the tab logged the stream since, or missed it again, while the repair was on its
                # way: its own state is newer than this answer
                continue
            del conn.unlogged[key]  # done on its behalf: its next frame joins the new epoch
            conn.cursors.pop(key, None)
            conn.skipped.pop(key, None)
        return True

    def _put_back(self, key: StreamKey, entry: _Waiting, fresh_epoch: str) -> None:
        """A repair that got no answer waits again (with what came for it meanwhile), naming the
        epoch it would have started as well: it may have landed after all."""
        for conn in entry.tabs:
            epochs = conn.unlogged.get(key)
            if epochs is not None:
                conn.unlogged[key] = with_epoch(epochs, fresh_epoch)
        entry.gone = {with_epoch(epochs, fresh_epoch): connection for epochs, connection in entry.gone.items()}
        now = self.waiting.get(key)
        if now is None:
            self.waiting[key] = entry
            return
        now.tabs.update(entry.tabs)
        for epochs, connection in entry.gone.items():
            now.gone.setdefault(epochs, connection)

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
