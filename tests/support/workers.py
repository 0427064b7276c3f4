"""uvicorn worker processes for the multi-worker tests, each on its own loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


class Worker:
    """One uvicorn process serving ``tests.support.worker_app:app`` on a socket bound before it starts.

    Clients can connect at once: the kernel queues them until uvicorn accepts.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.output: list[str] = []
        fd = self.sock.fileno()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.support.worker_app:app",
                "--fd",
                str(fd),
                "--log-level",
                "warning",
                "--ws",
                "websockets-sansio",
                "--timeout-graceful-shutdown",  # held connections must not delay the next test
                "1",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            pass_fds=(fd,),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.sock.close()


@contextmanager
def workers(count: int, env: dict[str, str]) -> Iterator[list[Worker]]:
    started = [Worker(env) for _ in range(count)]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()
