"""Latency: how long a frame takes from the app's emit to the client, bare and wrapped, in one run.

    python -m benchmarks.latency [--rate 1000] [--frames 5000]

The app emits at a steady rate (1,000 frames/s by default) to one client; each frame carries its
emit time (CLOCK_MONOTONIC, shared by the two processes). Prints p50/p99 and what the middleware
adds to the bare app's.
"""

from __future__ import annotations

import argparse

import uvloop

from benchmarks.common import MODES, Client, app_server, paths, percentile, redis_server, table


async def measure(url: str, rate: int, frames: int) -> list[float]:
    client = await Client(url, {"room": "lat"}).connect()
    client.timed = True
    await client.call("steady", {"n": 500, "rate": rate, "room": "lat", "message_id": "warm"})
    await client.wait_count(500)
    client.latencies.clear()
    await client.call("steady", {"n": frames, "rate": rate, "room": "lat", "message_id": "lat"})
    await client.wait_count(500 + frames)
    await client.close()
    return client.latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000, help="frames per second")
    parser.add_argument("--frames", type=int, default=5000)
    args = parser.parse_args()
    results = {}
    with redis_server() as redis:
        for mode in MODES:
            with app_server(mode, redis.url) as url:
                results[mode] = uvloop.run(measure(url, args.rate, args.frames))
    bare = results["bare"]
    rows = []
    for mode, latencies in results.items():
        p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
        added50 = p50 - percentile(bare, 0.5) * 1000
        added99 = p99 - percentile(bare, 0.99) * 1000
        rows.append([mode, f"{p50:.2f}", f"{p99:.2f}", f"{added50:+.2f}", f"{added99:+.2f}"])
    print(f"latency at {args.rate} frames/s, {args.frames} frames, milliseconds")
    print(table(rows, ["app", "p50", "p99", "added p50", "added p99"]))
    print(paths())


if __name__ == "__main__":
    main()
