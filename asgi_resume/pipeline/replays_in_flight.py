"""Replays being sent to websocket clients, per user and per process: bounded.

Owns: how many replays each principal, and the process, has in flight on websockets (each holds
a page, about 256 KiB, while its client does not read); a replay past a bound waits for one of
them to end, holding nothing meanwhile. One connection has one replay in flight at most, but one
user's 400 connections that each asked once and never read held +133 MiB (found by attack), and
many users' such connections add up (the process's bound). Long-polling
responses have their own bounds (:mod:`~asgi_resume.pipeline.polling_replays`). Must not touch:
the replays.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

#: a principal's replays in flight at once: 64 pages of about 256 KiB, 16 MiB (a user with more
#: tabs than that resuming at the same moment has the rest wait their turn)
PER_PRINCIPAL = 64
#: everyone's: 512 pages, 128 MiB (as long-polling responses' bound); users who fill it together
#: make others' replays wait until theirs end (one user alone holds 64 of them at most)
PER_PROCESS = 512


@dataclass(slots=True)
class _Slots:
    semaphore: asyncio.Semaphore
    users: int = 0  # replays in flight or waiting


class ReplaysInFlight:
    def __init__(self, per_principal: int = PER_PRINCIPAL, per_process: int = PER_PROCESS) -> None:
        self.per_principal = per_principal
        self._slots: dict[str, _Slots] = {}
        self._process = asyncio.Semaphore(per_process)

    @contextlib.asynccontextmanager
    async def slot(self, principal: str) -> AsyncIterator[None]:
        """A replay to ``principal`` is in flight within: it waits while the principal has
        ``per_principal`` others in flight, then while the process has ``per_process`` (a user's
        replays past their own bound take none of the process's meanwhile)."""
        slots = self._slots.get(principal)
        if slots is None:
            slots = self._slots[principal] = _Slots(asyncio.Semaphore(self.per_principal))
        slots.users += 1
        try:
            async with slots.semaphore, self._process:
                yield
        finally:
            slots.users -= 1
            if not slots.users:
                del self._slots[principal]

    def of(self, principal: str) -> int:
        """Replays to ``principal`` in flight or waiting."""
        slots = self._slots.get(principal)
        return 0 if slots is None else slots.users
