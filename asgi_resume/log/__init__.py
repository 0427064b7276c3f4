"""The stream log: where stamped frames are kept, per stream, for replay.

Owns: the storage interface (:class:`StreamLog`) and its two backends, Redis Streams
(:mod:`asgi_resume.log.redis`) and an in-process memory log
(:mod:`asgi_resume.log.memory`). Both implement the same rules:

* ``append`` is an atomic "match or append" per stream: a connection that already
  saw entry *n* of a stream matches its next frame against entry *n+1* (its first
  frame: the earliest entry with that content appended since it connected), so N
  copies of one emit make one entry with one seq. Copies arrive with different lags
  (another worker gets them through pub/sub), so one connection leads: only the
  stream's leader appends what matches nothing; another connection's unmatched frame
  waits for the leader, and takes the lead when the leader has been silent for a
  lease or it has waited long enough.
* ``replay`` authorizes the requester against the principals the stream was sent
  to live, and says when the history it returns has a hole (``gap``).

Must not touch: websockets, ASGI, Socket.IO framing (entries are opaque payloads).
"""

from asgi_resume.log.base import (
    AppendRequest,
    AppendResult,
    Entry,
    LogUnavailable,
    ReplayResult,
    StreamLog,
)

__all__ = ["AppendRequest", "AppendResult", "Entry", "LogUnavailable", "ReplayResult", "StreamLog"]
