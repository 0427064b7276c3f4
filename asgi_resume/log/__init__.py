"""The stream log: where stamped frames are kept, per stream, for replay.

Owns: the storage interface (:class:`StreamLog`) and its two backends, Redis Streams
(:mod:`asgi_resume.log.redis`) and an in-process memory log
(:mod:`asgi_resume.log.memory`). Both implement the same rules:

* Everything is kept per :class:`StreamKey`: one principal's view (namespace, variant) of
  one stream id. A principal's keys are the only ones its connections append to or
  replay, so nothing crosses principals, whatever stream id the app or a browser chose.
* ``append`` is an atomic "match or append" per key: a connection that already saw
  entry *n* matches its next frame against entry *n+1*, or a later one (a frame it did
  not get; its first frame: the earliest entry with that content logged since it
  connected), so the copies of one emit to a principal's tabs make one entry with one
  seq. A frame that matches nothing is appended at once: no frame waits for another
  connection. One whose copy is among the entries the connection passed over came out of
  order: it goes out unstamped rather than twice in the log.
* ``replay`` reads the requester's own key, and says when the history it returns has a
  hole (``gap``).

Must not touch: websockets, ASGI, Socket.IO framing (entries are opaque payloads).
"""

from asgi_resume.log.base import (
    AppendRequest,
    AppendResult,
    Entry,
    LogRefused,
    LogUnavailable,
    LogUnsupported,
    ReplayResult,
    StreamKey,
    StreamLog,
)

__all__ = [
    "AppendRequest",
    "AppendResult",
    "Entry",
    "LogRefused",
    "LogUnavailable",
    "LogUnsupported",
    "ReplayResult",
    "StreamKey",
    "StreamLog",
]
