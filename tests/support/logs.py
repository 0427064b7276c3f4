"""Wait for what the middleware logs, instead of polling its state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager


class LogWatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self._changed = asyncio.Condition()
        self._loop = asyncio.get_running_loop()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._notify()))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def count(self, text: str) -> int:
        return sum(text in message for message in self.messages)

    async def wait_for(self, text: str, count: int = 1, timeout: float = 10.0) -> None:
        """Until ``count`` log lines contain ``text``."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.count(text) >= count)


@contextmanager
def watch_logs() -> Iterator[LogWatcher]:
    logger = logging.getLogger("asgi_resume")
    watcher = LogWatcher()
    level = logger.level
    logger.addHandler(watcher)
    logger.setLevel(logging.INFO)
    try:
        yield watcher
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(level)
