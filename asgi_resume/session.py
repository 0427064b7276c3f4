"""One client's Engine.IO session as the middleware sees it.

Owns: what the middleware remembers about one connection: who it is (per
namespace), where it stands in each stream's log (cursors), what it was replayed,
which streams are in flight. Must not touch: I/O of any kind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.types import Scope


@dataclass(eq=False, slots=True)
class Session:
    scope: Scope
    started_ms: int  # on the log's clock: where a stream's first frame looks for its copies
    principals: dict[str, str | None] = field(default_factory=dict)  # namespace -> hashed principal
    cursors: dict[str, tuple[str, int]] = field(default_factory=dict)  # stream -> (epoch, last seq seen)
    replayed: dict[str, tuple[str, int]] = field(default_factory=dict)  # stream -> (epoch, replayed up to)
    unlogged: set[str] = field(default_factory=set)  # streams with frames the log missed: next append resets
    in_flight: dict[str, float] = field(default_factory=dict)  # stream -> monotonic time of its last frame

    def principal_for(self, namespace: str) -> str | None:
        return self.principals.get(namespace)

    def saw(self, stream: str, done: bool) -> None:
        """Track streams in flight on this connection (what a hold waits for)."""
        if done:
            self.in_flight.pop(stream, None)
        else:
            self.in_flight[stream] = time.monotonic()

    def was_replayed(self, stream: str, epoch: str, seq: int) -> bool:
        """True when a replay already gave this client the frame ``seq`` of ``epoch``."""
        replayed = self.replayed.get(stream)
        return replayed is not None and replayed[0] == epoch and seq <= replayed[1]
