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

from tests.support.processes import stop

READY_LINE = "Ready to accept connections"


def free_port(below: int = 65536, also_free_at: int = 0) -> int:
    """A free loopback port under ``below`` (and with ``port + also_free_at`` free too, when given)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port >= below:
            continue
        if also_free_at:
            with socket.socket() as other:
                try:
                    other.bind(("127.0.0.1", port + also_free_at))
                except OSError:
                    continue
        return port


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
            stop(self.process)
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


class RedisCluster:
    """A real local Redis Cluster: ``masters`` redis-server processes in cluster mode, slots spread."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        # a node's cluster bus listens 10000 above its port
        self.nodes = [
            RedisServer(
                directory / f"node{i}",
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                port=free_port(below=55536, also_free_at=10000),
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        # the nodes agree on the slot map within a gossip round or two: wait until each says ok
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while True:
                info = subprocess.run(
                    ["redis-cli", "-p", str(node.port), "cluster", "info"], capture_output=True, text=True
                ).stdout
                if "cluster_state:ok" in info:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster did not settle: {info}")
                time.sleep(0.1)  # a process we do not control: poll its state, bounded by the deadline
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
