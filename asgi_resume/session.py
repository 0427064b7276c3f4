"""One client's Engine.IO session as the middleware sees it, and this process's sessions by sid.

Owns: what the middleware remembers about one connection: who it is (per
namespace), where it stands in each stream's log (cursors), what it was replayed,
which streams are in flight. Must not touch: I/O of any kind.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from starlette.types import Scope

if TYPE_CHECKING:
    from asgi_resume.recovery import RecoveryState

T = TypeVar("T")


@dataclass(eq=False, slots=True)
class Session:
    scope: Scope
    started_ms: int  # on the log's clock (reset at CONNECT): a stream's first frame matches copies since then
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    principals: dict[str, str | None] = field(default_factory=dict)  # namespace -> hashed principal
    cursors: dict[str, tuple[str, int]] = field(default_factory=dict)  # stream -> (epoch, last seq seen)
    replayed: dict[str, tuple[str, int]] = field(default_factory=dict)  # stream -> (epoch, replayed up to)
    unlogged: set[str] = field(default_factory=set)  # streams with frames the log missed: next append resets
    in_flight: dict[str, float] = field(default_factory=dict)  # stream not done -> monotonic time of its last frame
    last_frame_at: float = 0.0  # monotonic time of the last stream frame
    recovery: dict[str, RecoveryState] = field(default_factory=dict)  # namespace -> connection state recovery
    resume_tokens: float = -1.0  # the resume rate limit's bucket (-1: full, not yet used)
    resume_refilled: float = 0.0

    def may_resume(self, limit: int, per_s: float = 10.0) -> bool:
        """A token bucket: ``limit`` requests, refilled at ``limit`` per ``per_s`` seconds."""
        now = time.monotonic()
        if self.resume_tokens < 0:
            self.resume_tokens, self.resume_refilled = float(limit), now
        self.resume_tokens = min(float(limit), self.resume_tokens + (now - self.resume_refilled) * limit / per_s)
        self.resume_refilled = now
        if self.resume_tokens < 1:
            return False
        self.resume_tokens -= 1
        return True

    def principal_for(self, namespace: str) -> str | None:
        return self.principals.get(namespace)

    def saw(self, stream: str, done: bool) -> None:
        """Track streams in flight on this connection (what a hold waits for)."""
        self.last_frame_at = now = time.monotonic()
        if done:
            self.in_flight.pop(stream, None)
        else:
            self.in_flight[stream] = now

    def active_streams(self, idle_s: float) -> list[str]:
        """Streams in flight that had a frame in the last ``idle_s`` seconds."""
        now = time.monotonic()
        return [stream for stream, at in self.in_flight.items() if now - at < idle_s]

    def was_replayed(self, stream: str, epoch: str, seq: int) -> bool:
        """True when a replay already gave this client the frame ``seq`` of ``epoch``."""
        replayed = self.replayed.get(stream)
        return replayed is not None and replayed[0] == epoch and seq <= replayed[1]


class Registry(Generic[T]):
    """This process's Engine.IO sessions by sid: a polling session spans requests, then may upgrade.

    Bounded: sessions untouched for ``idle_s`` are forgotten, the oldest first past ``limit``.
    """

    def __init__(self, idle_s: float = 120.0, limit: int = 100_000) -> None:
        self.idle_s = idle_s
        self.limit = limit
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, sid: str, item: T) -> None:
        now = time.monotonic()
        self._items[sid] = (now, item)
        self._items.move_to_end(sid)
        while self._items:
            oldest_sid, (touched, _) = next(iter(self._items.items()))
            if len(self._items) <= self.limit and now - touched < self.idle_s:
                break
            del self._items[oldest_sid]

    def get(self, sid: str) -> T | None:
        found = self._items.get(sid)
        if found is None or time.monotonic() - found[0] >= self.idle_s:
            return None
        self.add(sid, found[1])  # touch
        return found[1]

    def remove(self, sid: str, item: T | None = None) -> None:
        """Forget ``sid`` (only if it still maps to ``item``, when given)."""
        found = self._items.get(sid)
        if found is not None and (item is None or found[1] is item):
            del self._items[sid]
