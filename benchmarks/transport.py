"""The websocket transport and the pipeline together, in one process: no sockets, no server.

    python -m benchmarks.transport [--frames 2000] [--tabs 50] [--repeat 5] [--redis] [--recovery]

A stand-in for python-engineio drives the ASGI websocket interface as python-socketio's server
does: per connection, a queue the app's emits are put on and a writer task that takes what is
queued and calls ``send`` once per packet (``engineio.async_socket``'s writer). The same stand-in
runs bare and wrapped (memory log; ``--redis``: a Redis log on a redis-server of its own) in one
run, so the difference is the middleware's own work on the way a frame takes through
``ResumeMiddleware`` (the ``send`` wrapper, the writer task, the batch, the log), without uvicorn,
the client and the kernel that the server benchmarks add and share two cores with (nor
redis-server's own CPU). Prints CPU µs per delivery (best of ``--repeat``) for one tab at
saturation and for a room of ``--tabs`` tabs of one principal and of as many principals.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import time
from typing import Any

import uvloop

from asgi_resume import ResumeMiddleware
from benchmarks.common import redis_server
from tests.support.loop import KeptUpTransport  # (benchmarks.common put the checkout on sys.path)

_prefixes = itertools.count()


def token(i: int) -> str:
    data = {"type": "chat:completion", "data": {"content": f"tok{i} xxxxxxxxxx"}}
    return "42" + json.dumps(["events", {"chat_id": "c", "message_id": "m", "data": data}], separators=(",", ":"))


class FakeEngineIO:
    """The app: one packet queue and one writer task per connection, as python-engineio has."""

    def __init__(self) -> None:
        self.queues: list[asyncio.Queue[str | None]] = []
        self.ready: list[asyncio.Future[None]] = []
        self.joined: asyncio.Queue[None] = asyncio.Queue()  # one item per connection the app accepted

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": f'0{{"sid":"s{len(self.queues)}","pingInterval":25000}}'})
        connect = await receive()  # the client's CONNECT, with its auth
        assert connect["text"].startswith("40")
        await send({"type": "websocket.send", "text": '40{"sid":"x"}'})
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.queues.append(queue)
        self.joined.put_nowait(None)
        done = asyncio.get_running_loop().create_future()
        self.ready.append(done)
        while True:  # engineio.async_socket's writer: what is queued, one send per packet
            packets = [await queue.get()]
            while not queue.empty():
                packets.append(queue.get_nowait())
            for packet in packets:
                if packet is None:
                    done.set_result(None)
                    return
                await send({"type": "websocket.send", "text": packet})

    async def emit(self, frame: str) -> None:
        for queue in self.queues:
            queue.put_nowait(frame)
        await asyncio.sleep(0)  # the app's emit loop yields (python-socketio's emit awaits)


class Tally:
    """Frames the clients were sent, and an event set once they reach ``target``."""

    def __init__(self) -> None:
        self.sent = 0
        self.target = -1
        self.reached = asyncio.Event()

    def add(self) -> None:
        self.sent += 1
        if self.sent == self.target:
            self.reached.set()


class Server:
    """uvicorn's protocol object: its ``send`` is a bound method, with the transport beside it."""

    transport = KeptUpTransport()

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            self.tally.add()


async def connect(app: Any, principal: str, tally: Tally) -> None:
    """A connection whose CONNECT names ``principal``; what it is sent is counted in ``tally``."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    inbox.put_nowait({"type": "websocket.receive", "text": "40" + json.dumps({"room": principal})})

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    scope = {"type": "websocket", "path": "/socket.io/", "query_string": b"EIO=4&transport=websocket", "headers": []}
    asyncio.get_running_loop().create_task(app(scope, receive, Server(tally).send))


async def run(
    wrapped: bool, tabs: int, principals: int, frames: int, redis_url: str | None = None, recovery: bool = False
) -> float:
    """CPU µs per delivery: ``frames`` emits to ``tabs`` connections of ``principals`` principals."""
    engine = FakeEngineIO()
    options: dict[str, Any] = {"recovery": True} if recovery else {}
    if redis_url:
        options |= {"redis_url": redis_url, "key_prefix": f"bench{next(_prefixes)}", "secret": "bench"}
    app: Any = ResumeMiddleware(engine, principal="auth:room", **options) if wrapped else engine
    tally = Tally()
    for i in range(tabs):
        await connect(app, f"p{i % principals}", tally)
    for _ in range(tabs):
        await engine.joined.get()
    tally.target = tally.sent + 200 * tabs
    for i in range(200):  # warm up
        await engine.emit(token(i))
    await asyncio.wait_for(tally.reached.wait(), 60)
    tally.target, tally.reached = tally.sent + frames * tabs, asyncio.Event()
    start = time.process_time()
    for i in range(frames):
        await engine.emit(token(200 + i))
    for queue in engine.queues:
        queue.put_nowait(None)
    await asyncio.gather(*engine.ready)
    await asyncio.wait_for(tally.reached.wait(), 60)  # the middleware's writers send what they have
    cpu = time.process_time() - start
    if wrapped:
        await app.runtime.aclose()
    return cpu / (frames * tabs) * 1e6


async def main() -> None:
    # (its start-up line, once per run; and the log's end under connections left open at exit)
    logging.getLogger("asgi_resume").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="emits per case (twenty times as many to one tab)")
    parser.add_argument("--tabs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the best is kept")
    parser.add_argument(
        "--redis", action="store_true", help="a Redis log (a redis-server of its own) instead of memory"
    )
    parser.add_argument("--recovery", action="store_true", help="with connection state recovery on")
    args = parser.parse_args()
    cases = [
        ("1 tab", 1, 1, args.frames * 20),
        (f"{args.tabs} tabs, 1 principal", args.tabs, 1, args.frames),
        (f"{args.tabs} tabs, {args.tabs} principals", args.tabs, args.tabs, args.frames),
    ]
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server()).url if args.redis else None
        log = f"{'Redis' if url else 'memory'} log{', recovery' if args.recovery else ''}"
        print(f"transport + pipeline ({log}), CPU µs per delivery, best of", args.repeat)
        for name, tabs, principals, frames in cases:
            bare = min([await run(False, tabs, principals, frames) for _ in range(args.repeat)])
            mine = min([await run(True, tabs, principals, frames, url, args.recovery) for _ in range(args.repeat)])
            print(f"  {name:<28} bare {bare:6.2f}  wrapped {mine:6.2f}  (+{mine - bare:.2f})")


if __name__ == "__main__":
    uvloop.run(main())
