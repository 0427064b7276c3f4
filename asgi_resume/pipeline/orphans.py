"""Streams a connection left in flight, flagged in the log as orphaned: whoever logs one next
without having followed it starts a new epoch (a resume across says ``gap``).

Owns: the flag (after the connection's append in flight, within the write deadline) and, for a
namespace the client left, repairing the streams the log did not hear flagged. Must not touch:
which streams are in flight (:mod:`~asgi_resume.pipeline.streams`, the connection), transports.
"""

from __future__ import annotations

import asyncio
import contextlib

from asgi_resume.log import LogUnavailable, StreamKey
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.runtime import Runtime


async def orphan_streams(runtime: Runtime, conn: Connection, keys: list[StreamKey]) -> bool:
    """Flag ``keys`` in the log as left in flight by connection ``conn``: whoever logs one next
    without having followed it starts a new epoch. False: nothing to flag, or the log did not hear
    it (a newcomer then continues the epoch: what was lost meanwhile is not flagged).

    After the connection's append in flight, if any: one that followed the stream and landed after
    the flag would clear it (the rule that lets a connection that comes back go on), and a tab
    that left its namespace must not go on (see :meth:`Connection.disconnected`). The wait ends with
    the call's deadline; a call that times out may land later still, so its streams get a new
    epoch as any stream the log may have missed frames of (:meth:`StreamWriter._unlogged`).
    """
    if not keys:
        return False
    guard = runtime.guard
    if conn.calling:
        if conn.call_answered is None:
            conn.call_answered = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(conn.call_answered), guard.deadlines.write.seconds)
    try:
        await guard.call(guard.deadlines.write, runtime.log.orphan, keys, conn.id)
    except LogUnavailable:
        return False
    return True


async def release_left(runtime: Runtime, conn: Connection, left: dict[StreamKey, str]) -> None:
    """Flag the streams of a namespace the connection left (:meth:`Connection.disconnected`: each
    with the epoch it followed it in). If the log does not hear it, they are repaired as streams
    it missed frames of once it answers (a new epoch if still in that one): nobody here goes on
    in them, and a newcomer must not either."""
    if not left or await orphan_streams(runtime, conn, list(left)):
        return
    missed = [key for key, epoch in left.items() if epoch]
    for key in missed:
        conn.unlogged.setdefault(key, left[key])
    runtime.repairs.missed(conn, missed)
