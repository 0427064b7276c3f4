"""The outbound pipeline alone: what the middleware's own work costs per delivery, without a server.

    python -m benchmarks.pipeline [--frames 20000] [--repeat 5]

Drives ``Outbound.feed`` then ``flush`` on the memory log as the websocket transport does, with
open-webui-shaped token frames: one tab with one frame per batch, one tab with ten, and fifty tabs
of one principal with one frame per batch. No sockets, no other process: steadier than the
server benchmarks on a shared machine, and the number to watch when a change touches the hot
path (the server adds python-socketio, uvicorn and the client to it). Best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from asgi_resume.config import Settings
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.outbound import Outbound
from asgi_resume.pipeline.runtime import Runtime

CASES = ((1, 1), (1, 10), (50, 1))  # (tabs, frames per batch)


def tab(runtime: Runtime) -> Outbound:
    """A connection whose CONNECT the app accepted, as one principal."""
    outbound = Outbound(runtime, Connection({"type": "websocket", "query_string": b""}, runtime.log.now_ms()))
    outbound.conn.connecting("/", "alice")
    outbound.feed('40{"sid":"s"}')
    return outbound


def token(i: int) -> str:
    data = {"type": "chat:completion", "data": {"content": f"tok{i} abcdefgh"}}
    return "42" + json.dumps(["events", {"chat_id": "c", "message_id": "m", "data": data}], separators=(",", ":"))


async def per_delivery(tabs: int, batch: int, frames: int) -> float:
    """Microseconds of pipeline work per frame delivered to one tab."""
    runtime = Runtime(Settings.load({}))
    connections = [tab(runtime) for _ in range(tabs)]
    for connection in connections:
        await connection.flush()
    sent = [token(i) for i in range(frames)]
    start = time.perf_counter()
    for first in range(0, frames, batch):
        group = sent[first : first + batch]
        for connection in connections:
            for frame in group:
                connection.feed(frame)
            await connection.flush()
    return (time.perf_counter() - start) / (frames * tabs) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000, help="frames per tab (a fiftieth of it for 50 tabs)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the best is kept")
    args = parser.parse_args()
    print("pipeline alone (memory log), µs per delivery, best of", args.repeat)
    for tabs, batch in CASES:
        frames = args.frames if tabs == 1 else max(1, args.frames // tabs)
        best = min([await per_delivery(tabs, batch, frames) for _ in range(args.repeat)])
        print(f"  {tabs:>2} tab(s), {batch:>2} frame(s) per batch: {best:6.2f} µs")


if __name__ == "__main__":
    asyncio.run(main())
