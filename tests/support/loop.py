"""The event loop's iterations counted, and uvicorn's transport stood in for, for tests that count
the loop iterations a frame waits (and ``benchmarks.transport``, which drives the transport alone)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class Iterations:
    """How many iterations the running loop has made since :func:`counting_iterations` began."""

    def __init__(self) -> None:
        self.count = 0


@contextmanager
def counting_iterations() -> Iterator[Iterations]:
    """Count the running asyncio loop's iterations (its ``_run_once``) while the block runs."""
    loop = asyncio.get_running_loop()
    iterations = Iterations()
    run_once = loop._run_once  # type: ignore[attr-defined]

    def counted() -> None:
        iterations.count += 1
        run_once()

    loop._run_once = counted  # type: ignore[attr-defined]
    try:
        yield iterations
    finally:
        loop._run_once = run_once  # type: ignore[attr-defined]


class KeptUpTransport:
    """uvicorn's transport, as far as the middleware looks at it (its ``send`` is a bound method of
    an object with a ``transport``): nothing is buffered for the client, which keeps up."""

    def get_extra_info(self, name: str) -> None:
        return None

    def get_write_buffer_size(self) -> int:
        return 0
