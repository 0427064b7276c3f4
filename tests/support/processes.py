"""Helpers for the processes and sockets the tests (and benchmarks) start themselves."""

from __future__ import annotations

import socket
import subprocess


def listening_socket(backlog: int = 1024) -> socket.socket:
    """A TCP socket on a free loopback port, listening before any server runs on it.

    A client can connect at once: the kernel queues it until the server accepts. Its connections
    have Nagle's algorithm off (Linux passes TCP_NODELAY on to accepted sockets): uvicorn writes a
    response's head and body apart, and on loopback the second write then waits for the client's
    delayed ACK, 44 ms per long-polling request, bare or wrapped; the suite spent about 25 s on it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def stop(process: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it does not go."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
