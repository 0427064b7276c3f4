"""uvicorn worker processes for the multi-worker tests, each on its own loopback port."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import listening_socket, stop
from tests.support.raw import RawClient

ROOT = Path(__file__).resolve().parent.parent.parent


class Worker:
    """One uvicorn process serving ``app`` on a socket bound before it starts (see listening_socket)."""

    def __init__(self, env: dict[str, str], app: str = "tests.support.worker_app:app", *args: str) -> None:
        self.sock = listening_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.output: list[str] = []
        fd = self.sock.fileno()
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", app, "--fd", str(fd), "--log-level", "warning",
                "--ws", "websockets-sansio",
                "--timeout-graceful-shutdown", "1",  # held connections must not delay the next run
                *args,
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            pass_fds=(fd,),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def stop(self) -> None:
        stop(self.process)
        self.sock.close()


@contextmanager
def workers(count: int, env: dict[str, str]) -> Iterator[list[Worker]]:
    started = [Worker(env) for _ in range(count)]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


async def fan_out_ready(pair: list[Worker]) -> None:
    """Wait until each worker hears the other's emits. python-socketio subscribes a worker to the
    fan-out channel once its first client connects, in the background: an emit from the other
    worker before that is lost to its clients, which no test here is about."""
    for listener, emitter in ((pair[0], pair[1]), (pair[1], pair[0])):
        ear = await RawClient(listener.url, auth={"token": "warm-up"}).connect()
        mouth = await RawClient(emitter.url, auth={"token": "warm-up-control"}).connect()
        async with asyncio.timeout(30):
            for attempt in itertools.count():
                mark = {"warm-up": attempt}
                await mouth.request("emit", {"token": "warm-up", "events": [mark]}, ack_id=1)
                try:  # (a mark sent before the subscription is never delivered: send another)
                    await ear.wait_for(lambda f, m=attempt: isinstance(f, str) and f'{{"warm-up":{m}}}' in f, 0.2)
                except TimeoutError:
                    continue
                break
        await ear.close()
        await mouth.close()
