"""The resume rate limit: one token bucket per connection.

Owns: how many resume requests a connection may make, and when a flood of them stops being
answered at all. Must not touch: I/O, what a request asks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

#: a request past the limit: answered ``rate_limited``, or, past as many refusals again, ``flooded``
#: (dropped unanswered: a flood must not make the middleware send one answer per request)
Limited = Literal["rate_limited", "flooded"]


@dataclass(eq=False, slots=True)
class ResumeBucket:
    """``limit`` requests, refilled at ``limit`` per ``per_s`` seconds (full until first used)."""

    tokens: float = -1.0  # -1: full, not yet used
    refilled: float = 0.0  # monotonic time of the last refill
    refusals: float = 0.0  # rate_limited answers sent lately (they refill like the tokens)

    def take(self, limit: int, per_s: float = 10.0) -> Limited | None:
        """``None``: go on; else how the request is refused (:data:`Limited`)."""
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens, self.refilled = float(limit), now
        refill = (now - self.refilled) * limit / per_s
        self.tokens = min(float(limit), self.tokens + refill)
        self.refusals = max(0.0, self.refusals - refill)
        self.refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        if self.refusals >= limit:
            return "flooded"
        self.refusals += 1
        return "rate_limited"
