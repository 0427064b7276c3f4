"""A real redis-server for the tests, on a free loopback port, started and stopped by them.

Never the machine's own Redis: each server gets its own port and directory, and can be
killed, paused (SIGSTOP) and restarted on the same port, for the fault tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

READY_LINE = "Ready to accept connections"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        raise RuntimeError("redis-server is not installed; ./scripts/test installs it (apt-get install redis-server)")
    return binary


class RedisServer:
    def __init__(self, directory: Path, *extra: str, port: int | None = None) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            "",
            "--protected-mode",
            "no",
            *self.extra,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        seen = []
        for line in self.process.stdout:  # blocks on the server's own log: no polling
            seen.append(line)
            if READY_LINE in line:
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError(f"redis-server exited: {''.join(seen)[-2000:]}")
        if READY_LINE not in "".join(seen):
            self.stop()
            raise RuntimeError(f"redis-server did not start: {''.join(seen)[-2000:]}")
        # keep draining its log so the pipe never fills up
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        process = self.process
        if process is not None and process.stdout is not None:
            for _ in process.stdout:
                pass

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()
