"""What a recovery replays to the connection that claimed a session, and the live copies of it.

Owns: the missed events rendered with their old offsets, the stream seqs they carry noted as
replayed, and the events a live copy of which may still come (the new connection joined its rooms
before the emit) recognised so they do not go out twice. Must not touch: claiming the session or
reading its log (:mod:`~asgi_resume.pipeline.recovery`), transports.
"""

from __future__ import annotations

import time

from asgi_resume import protocol
from asgi_resume.log import StreamKey
from asgi_resume.log.base import COPY_WINDOW_MS, Payload
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.recovery_state import RecoveryState
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.pipeline.units import EventUnit, Outgoing
from asgi_resume.protocol.recovery import offset
from asgi_resume.protocol.stamping import unstamped

DUPLICATES_FOR_S = 5.0  # how long after a recovery a replayed event may still arrive live


def replay_frames(
    runtime: Runtime,
    conn: Connection,
    state: RecoveryState,
    gen: str,
    entries: list[tuple[int, int, Payload]],
    objects: dict[int, str] | None = None,
) -> list[Outgoing]:
    """The missed events with their old offsets; note them so live copies are not sent twice.

    ``objects``: number -> the app's frame object, for the entries a held connection here logged
    (their live copies are that object: see :mod:`~asgi_resume.pipeline.held_frames`)."""
    objects = objects or {}
    out: list[Outgoing] = []
    rules = runtime.rules
    principal = conn.principal_for(state.namespace)
    for n, received_ms, payload in entries:
        if not payload or not isinstance(payload[0], str):
            continue
        text, attachments = payload[0], [a for a in payload[1:] if isinstance(a, bytes)]
        out += [protocol.with_last_arg(text, offset(gen, n)), *attachments]
        # what its live copy looks like, if one may still come (emitted since this connection
        # began): the event as the app sent it, unstamped, for the stream log may have failed for it
        live = text if received_ms >= state.connect_ms else None
        classified = rules.classify(text)
        arg = classified.packet.first_arg if classified is not None else None
        if classified is not None and principal and isinstance(arg, dict) and isinstance(arg.get("seq"), int):
            epoch, seq = str(arg.get("epoch", "")), arg["seq"]
            key = StreamKey(principal, state.namespace, classified.variant, classified.stream)
            known = conn.replayed.get(key)
            if known is None or known[0] != epoch or known[1] < seq:
                conn.replayed_to(key, epoch, seq)
            if live is not None:
                live = unstamped(text, seq, epoch)
        if live is not None:  # dropped if it comes: matched by content
            unit = EventUnit(live, state.namespace, 0, received_ms, attachments=attachments)
            state.duplicates.setdefault(unit.digest(), []).append((received_ms, objects.get(n)))
    state.duplicates_until = time.monotonic() + DUPLICATES_FOR_S
    runtime.stats.frames_recovered += len(entries)
    return out


def duplicate(conn: Connection, unit: EventUnit) -> bool:
    """An event the recovery replay already carried, arriving again on the new connection: the
    same content, received within ``COPY_WINDOW_MS`` of the replayed one (copies of one emit
    reach a user's connections that close together; an event emitted before the new connection
    joined its rooms never comes again, and a new one with that content is not taken for it).
    Where the held connection that logged it is here, its copy is the very object it was sent."""
    state = conn.recovery.get(unit.namespace)
    if state is None or not state.duplicates:
        return False
    if time.monotonic() > state.duplicates_until:
        state.duplicates.clear()
        return False
    if unit.stream is not None and unit.seq:
        known = conn.replayed.get(unit.stream)
        if known is not None and known[0] == unit.epoch:
            return False  # told apart by seq (Connection.was_replayed)
        digest = unit.digest(as_sent=False)  # stamped in another epoch than the replay's: by content
    else:
        digest = unit.digest()
    received = state.duplicates.get(digest)
    if not received:
        return False
    emitted = unit.emitted
    for i, (at, replayed) in enumerate(received):
        if replayed is not None and emitted is not None:
            if replayed is not emitted:
                continue  # another emit with the same content (one before this connection joined)
        elif abs(unit.received_ms - at) > COPY_WINDOW_MS:
            continue
        del received[i]
        return True
    return False
