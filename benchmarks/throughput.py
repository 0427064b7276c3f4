"""Throughput: frames/s the app delivers, bare and wrapped (memory log, Redis log), in one run.

    python -m benchmarks.throughput [--frames 20000] [--clients 50]

One client: the app emits frames as fast as it can to a room of one; the client counts them. Then
a room of many clients. Prints frames/s and the ratio to the bare app measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import uvloop

from benchmarks.common import MODES, Client, Counter, app_server, redis_server, table


async def one_room(url: str, clients: int, frames: int, size: int, room: str) -> float:
    """Deliveries per second: frames x clients over the time until every client has them all."""
    members = [await Counter.connect(url, {"room": room}) for _ in range(clients)]
    control = await Client(url, {}).connect()
    await control.call("blast", {"n": 500, "room": room, "message_id": f"warm-{room}", "size": size})
    for member in members:
        await member.wait_count(500)
    before = [m.count for m in members]
    started = time.monotonic()
    await control.call("blast", {"n": frames, "room": room, "message_id": f"m-{room}", "size": size})
    for member, count in zip(members, before, strict=True):
        await member.wait_count(count + frames)
    elapsed = time.monotonic() - started
    for client in [*members, control]:
        await client.close()
    return frames * clients / elapsed


async def measure(url: str, args: argparse.Namespace) -> dict[str, float]:
    control = await Client(url, {}).connect()
    before = await control.call("stats", {})
    single = max([await one_room(url, 1, args.frames, args.size, f"one{i}") for i in range(args.repeat)])
    after = await control.call("stats", {})
    await control.close()
    writes = after.get("log_writes", 0) - before.get("log_writes", 0)
    stamped = after.get("frames_stamped", 0) - before.get("frames_stamped", 0)
    print(f"  one client: {stamped} frames stamped in {writes} log calls", flush=True)
    many = max([await one_room(url, args.clients, args.room_frames, args.size, f"many{i}") for i in range(args.repeat)])
    return {"one": single, "room": many}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20000, help="frames to one client")
    parser.add_argument("--clients", type=int, default=50, help="clients in the room")
    parser.add_argument("--room-frames", type=int, default=1000, help="frames to the room")
    parser.add_argument("--size", type=int, default=16, help="content bytes per frame")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best is kept")
    args = parser.parse_args()
    results = {}
    with redis_server() as redis:
        for mode in MODES:
            with app_server(mode, redis.url) as url:
                results[mode] = uvloop.run(measure(url, args))
    bare = results["bare"]
    rows = [
        [
            mode,
            f"{r['one']:,.0f}",
            f"{r['one'] / bare['one']:.2f}",
            f"{r['room']:,.0f}",
            f"{r['room'] / bare['room']:.2f}",
        ]
        for mode, r in results.items()
    ]
    print(f"throughput, {args.size}-byte tokens; best of {args.repeat}")
    print(table(rows, ["app", "1 client frames/s", "ratio", f"{args.clients} clients deliveries/s", "ratio"]))


if __name__ == "__main__":
    main()
