"""What a connection tells the log's recovery sessions about itself: the previous connection's
side of connection state recovery.

Owns: the notes a connection sends its sessions (:meth:`RecoveryNotes.tell`: its client ``left``,
it ``closed``, it ``upgraded`` from long-polling), asking whether they were claimed
(:meth:`RecoveryNotes.claimed`); whether
its client keeps up (:meth:`RecoveryNotes.tell_behind`: ``behind`` or ``caught_up``, told by one
task at a time, the last word winning); and sessions that sent an event the log missed
(``broken``, :meth:`RecoveryNotes.tell_losses`). Must not touch: claiming a session or giving events
their offsets (:mod:`~asgi_resume.pipeline.recovery`), transports.
"""

from __future__ import annotations

import time
from typing import Literal

import anyio

from asgi_resume.guard import RETRY_AFTER_S
from asgi_resume.log import LogUnavailable
from asgi_resume.log.base import Note
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.recovery_state import RecoveryState
from asgi_resume.pipeline.runtime import Runtime

#: what a connection says of itself with :meth:`RecoveryNotes.tell`
Said = Literal["left", "closed", "upgraded"]


class RecoveryNotes:
    """What one connection tells the log about its recovery sessions (all its namespaces)."""

    def __init__(self, runtime: Runtime, conn: Connection) -> None:
        self.runtime = runtime
        self.conn = conn

    @property
    def states(self) -> dict[str, RecoveryState]:
        return self.conn.recovery

    def tell_behind(self) -> None:
        """``Connection.behind`` changed: the log's sessions are told (by one task at a time, again
        after a failure, until they know the connection's latest state, for the recovery window)."""
        conn = self.conn
        if not conn.behind_telling and conn.behind != conn.behind_told and self.states:
            conn.behind_telling = True
            self.runtime.in_background(self._tell_behind())

    async def _tell_behind(self) -> None:
        conn, runtime = self.conn, self.runtime
        give_up = time.monotonic() + runtime.settings.recovery_window
        try:
            while conn.behind != conn.behind_told and not runtime.closing and time.monotonic() < give_up:
                behind = conn.behind
                action: Note = "behind" if behind else "caught_up"
                told = True
                for state in list(self.states.values()):  # (a DISCONNECT may end one meanwhile)
                    if not state.pid:
                        continue
                    try:
                        await self._note(state, action)
                    except LogUnavailable:
                        told = False
                if told:
                    conn.behind_told = behind
                else:
                    await anyio.sleep(RETRY_AFTER_S)
        finally:
            conn.behind_telling = False

    async def tell_losses(self) -> None:
        """Sessions that sent an event the log missed are noted ``broken``: never recovered, for a
        replay without it would be a partial history presented as complete (tried again on every
        append and note until the log answers)."""
        for state in list(self.states.values()):  # (a DISCONNECT may end one meanwhile)
            if not (state.loss_untold and state.pid):
                continue
            try:
                await self._note(state, "broken")
            except LogUnavailable:
                return
            state.loss_untold = False

    async def tell(self, action: Said) -> None:
        """Tell the log the client ``left``, the connection ``closed`` or ``upgraded`` from
        long-polling (its frames no longer wait for its client's GET). (Whether its client keeps
        up is told by :meth:`tell_behind`.)"""
        await self.tell_losses()
        for state in list(self.states.values()):  # (a DISCONNECT may end one while a note is out)
            if action == "closed":
                self.runtime.held_frames.ended(state.pid, state.gen)
            if state.pid:
                await self._tell(state, action)

    async def claimed(self) -> bool:
        """Was every recoverable session of this connection claimed by another one? (Asked of the
        log: ``state``.)"""
        await self.tell_losses()
        taken = True
        for state in list(self.states.values()):  # (a DISCONNECT may end one while the log is asked)
            if state.pid and state.recoverable and not await self._tell(state, "state"):
                taken = False
        return taken

    async def _note(self, state: RecoveryState, action: Note) -> tuple[str, str]:
        """``action`` noted in ``state``'s session: who owns it now (:class:`LogUnavailable` if the
        log did not hear it). An upgrade waits for it (the live path): as a write; the rest as a
        reconnect's claim."""
        guard = self.runtime.guard
        deadline = guard.deadlines.write if action == "upgraded" else guard.deadlines.recovery
        return await guard.call(deadline, self.runtime.log.session_note, state.pid, action, state.gen, self.conn.id)

    async def _tell(self, state: RecoveryState, action: Note) -> bool:
        """Tell the log about ``state``'s session; True when another connection claimed it."""
        try:
            gen, owner = await self._note(state, action)
        except LogUnavailable:
            if action == "closed":  # (a session left unclosed would be claimable for the window)
                self.runtime.closes.add(state.pid, state.gen, self.conn.id, state.principal)
            return False
        # claimed: it keeps logging all the same (what it got before the claim may still wait for
        # its send, and the claim reads it; what the log takes after is never read)
        return (gen, owner) != (state.gen, self.conn.id)
