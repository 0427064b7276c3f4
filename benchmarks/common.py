"""What the benchmark scripts share: the server under test in its own process, and a lean client.

The server (``benchmarks/app.py`` under uvicorn) runs bare or wrapped in a subprocess; clients run in
the benchmark's own process. Every script measures the bare app in the same run and prints ratios.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.redis_server import RedisServer  # noqa: E402  (a redis-server of our own)
from tests.support.workers import Worker  # noqa: E402

MODES = ("bare", "memory", "redis")


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(Path(tempfile.mkdtemp(prefix="bench-redis-"))).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def app_server(mode: str, redis_url: str = "", **env: str) -> Iterator[str]:
    """``benchmarks.app:app`` under uvicorn in a subprocess; yields its ``http://`` URL."""
    app = os.environ.get("BENCH_APP", "benchmarks.app:app")
    worker = Worker(
        {"BENCH_MODE": mode, "BENCH_REDIS_URL": redis_url, **env}, app, *os.environ.get("BENCH_UVICORN", "").split()
    )
    try:
        yield worker.url
    finally:
        worker.stop()


def server_pid(url: str) -> int:
    """The pid of the process listening on ``url`` (for RSS readings)."""
    port = url.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    return int(out.split("pid=")[1].split(",")[0])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def tcp_segments() -> int:
    """TCP segments this machine has sent so far (every process's: read it while little else talks).

    Per delivery it says how the kernel coalesced the server's small writes (Nagle's algorithm: a
    write while an earlier one is unacknowledged waits and joins it). The server's CPU time per
    delivery follows it closely from run to run (r = 0.95 on the one-client case), whatever the
    code: compare runs at like segment counts.
    """
    head, values = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Tcp:")]
    return int(dict(zip(head, values, strict=True))["OutSegs"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    """A Socket.IO client over a raw websocket: counts events, keeps arrival times, answers pings."""

    def __init__(self, url: str, auth: dict[str, Any]) -> None:
        self.url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        self.auth = auth
        self.count = 0
        self.latencies: list[float] = []  # receive time - emit time, seconds
        self.events: list[Any] = []  # first arguments, when keep=True
        self.keep = False  # keep every event's first argument
        self.timed = False  # measure latencies (parses every event: the client does more work)
        self.acks: dict[int, asyncio.Future[Any]] = {}
        self._changed = asyncio.Event()
        self._ws: Any = None

    async def connect(self) -> Client:
        self._ws = await websockets.connect(self.url, max_size=None, ping_interval=None, compression=None)
        await self._ws.recv()  # OPEN
        await self._ws.send("40" + json.dumps(self.auth))
        reply = await self._ws.recv()
        assert reply.startswith("40"), reply
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message == "2":
                    await self._ws.send("3")
                elif message.startswith("43"):
                    ack_id = int(message[2 : message.index("[")])
                    self.acks.pop(ack_id).set_result(json.loads(message[message.index("[") :]))
                elif message.startswith("42"):
                    now = time.monotonic()
                    self.count += 1
                    if self.keep or self.timed:
                        args = json.loads(message[2:])
                        if isinstance(args[1], dict) and "t" in args[1]:
                            self.latencies.append(now - args[1]["t"])
                        if self.keep:
                            self.events.append(args[1])
                    self._changed.set()
        except websockets.ConnectionClosed:
            pass

    async def call(self, event: str, arg: Any, timeout: float = 60) -> Any:
        ack_id = len(self.acks) + int(time.monotonic() * 1000) % 1_000_000
        future = asyncio.get_running_loop().create_future()
        self.acks[ack_id] = future
        await self._ws.send(f"42{ack_id}" + json.dumps([event, arg]))
        args = await asyncio.wait_for(future, timeout)
        return args[0] if args else None

    async def send(self, frame: str) -> None:
        await self._ws.send(frame)

    async def wait_count(self, count: int, timeout: float = 120) -> None:
        async with asyncio.timeout(timeout):
            while self.count < count:
                self._changed.clear()
                if self.count >= count:
                    break
                await self._changed.wait()

    async def close(self) -> None:
        await self._ws.send("41")
        await self._ws.close()


class Counter(asyncio.Protocol):
    """A client that only counts the app's events, parsing websocket frames by hand.

    Throughput runs use it so the client is never the bottleneck (a full client spends more CPU
    per frame than the server): it decodes nothing but frame headers.
    """

    def __init__(self) -> None:
        self.count = 0
        self.acks = 0
        self.buffer = bytearray()
        self.handshaken = asyncio.get_running_loop().create_future()
        self.changed = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def connect(cls, url: str, auth: dict[str, Any]) -> Counter:
        host, port = url.removeprefix("http://").split(":")
        loop = asyncio.get_running_loop()
        transport, counter = await loop.create_connection(cls, host, int(port))
        counter.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await counter.handshaken
        counter.send("40" + json.dumps(auth))
        await counter.wait_count(1)  # the CONNECT reply
        counter.count = 0
        return counter

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        assert self.transport is not None
        self.transport.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    async def wait_acks(self, count: int, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while self.acks < count:
                self.changed.clear()
                await self.changed.wait()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.handshaken.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            del buffer[: end + 4]
            self.handshaken.set_result(None)
        i, n, count = 0, len(buffer), 0
        while n - i >= 2:
            length, head = buffer[i + 1] & 0x7F, 2
            if length == 126:
                if n - i < 4:
                    break
                length, head = int.from_bytes(buffer[i + 2 : i + 4], "big"), 4
            elif length == 127:
                if n - i < 10:
                    break
                length, head = int.from_bytes(buffer[i + 2 : i + 10], "big"), 10
            if n - i < head + length:
                break
            kind = buffer[i + head : i + head + 2]
            if kind in (b"42", b"45", b"40"):
                count += 1
            elif kind == b"43":
                self.acks += 1
                self.changed.set()
            i += head + length
        del buffer[:i]
        if count:
            self.count += count
            self.changed.set()

    async def wait_count(self, count: int, timeout: float = 120) -> None:
        async with asyncio.timeout(timeout):
            while self.count < count:
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self.send("41")
        assert self.transport is not None
        self.transport.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def paths() -> str:
    """Which fast paths the server gets (it runs in this environment): said under every result."""
    from asgi_resume.log.redis import REPLY_PARSER
    from asgi_resume.protocol import JSON_PATH

    try:
        import uvloop  # noqa: F401 - only whether it is there

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        loop = "asyncio"
    return f"paths: JSON {JSON_PATH}; Redis replies {REPLY_PARSER}; event loop {loop}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])
