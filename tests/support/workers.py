"""uvicorn worker processes for the multi-worker tests, each on its own loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import listening_socket, stop

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
