"""Waiting for a state the code under test offers no event for (a key gone from Redis, a counter)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], Awaitable[bool] | bool], timeout: float, every: float = 0.05) -> None:
    """Return once ``condition()`` is true, looking every ``every`` seconds; TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            held = condition()
            if inspect.isawaitable(held):
                held = await held
            if held:
                return
            await asyncio.sleep(every)
