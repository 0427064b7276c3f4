"""The resume rate limit: one token bucket per connection.

Owns: how many resume requests a connection may make, and when a flood of them stops being
answered at all. Must not touch: I/O, what a request asks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(eq=False, slots=True)
class ResumeBucket:
    """``limit`` requests, refilled at ``limit`` per ``per_s`` seconds (full until first used)."""

    tokens: float = -1.0  # -1: full, not yet used
    refilled: float = 0.0  # monotonic time of the last refill
    refusals: float = 0.0  # rate_limited answers sent lately (they refill like the tokens)

    def take(self, limit: int, per_s: float = 10.0) -> bool | None:
        """True: go on; False: answer that it is rate limited; None: past as many refusals again,
        drop it unanswered (a flood must not make the middleware send one answer per request)."""
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens, self.refilled = float(limit), now
        refill = (now - self.refilled) * limit / per_s
        self.tokens = min(float(limit), self.tokens + refill)
        self.refusals = max(0.0, self.refusals - refill)
        self.refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        if self.refusals >= limit:
            return None
        self.refusals += 1
        return False
