"""Latency: how long a frame takes from the app's emit to the client, bare and wrapped, in one run.

    python -m benchmarks.latency [--rate 1000] [--frames 5000] [--workers 2] [--repeat 1]

The app emits at a steady rate (1,000 frames/s by default) to one client; each frame carries its
emit time (CLOCK_MONOTONIC, shared by the processes). Prints p50/p99 and what the middleware
adds to the bare app's.

``--workers 2``: two app processes whose emits fan out through Redis (python-socketio's
``AsyncRedisManager``), bare and wrapped on the Redis log. One user has three tabs, two on the
first worker and one on the second; the first worker's app emits to the user's room. Shows what a
tab on another worker than the emit waits for: the middleware never waits for another process's
connections, so what it adds there is its own append, as on one worker. ``--repeat N`` runs the
apps alternately N times and prints each run.
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack

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


async def measure_workers(urls: list[str], rate: int, frames: int) -> dict[str, list[float]]:
    """Three tabs of one user (two on the first worker, one on the second), the first worker
    emitting: their latencies by where the tab is."""
    first, second = urls
    tabs = {"emitting worker": [first, first], "other worker": [second]}
    clients = {where: [await Client(url, {"room": "lat"}).connect() for url in at] for where, at in tabs.items()}
    everyone = [client for group in clients.values() for client in group]
    for client in everyone:
        client.timed = True
    control = clients["emitting worker"][0]
    await control.call("steady", {"n": 500, "rate": rate, "room": "lat", "message_id": "warm"})
    for client in everyone:
        await client.wait_count(500)
        client.latencies.clear()
    await control.call("steady", {"n": frames, "rate": rate, "room": "lat", "message_id": "lat"})
    for client in everyone:
        await client.wait_count(500 + frames)
    for client in everyone:
        await client.close()
    return {where: [t for client in group for t in client.latencies] for where, group in clients.items()}


def workers_main(args: argparse.Namespace) -> None:
    rows = []
    with redis_server() as redis:
        for run in range(1, args.repeat + 1):
            results: dict[str, dict[str, list[float]]] = {}
            for mode in ("bare", "redis"):
                env = {"BENCH_MANAGER_URL": redis.url, "BENCH_KEY_PREFIX": f"lat{run}"}
                with ExitStack() as servers:
                    urls = [servers.enter_context(app_server(mode, redis.url, **env)) for _ in range(args.workers)]
                    results[mode] = uvloop.run(measure_workers(urls, args.rate, args.frames))
            for where, bare in results["bare"].items():
                wrapped = results["redis"][where]
                b50, b99 = percentile(bare, 0.5) * 1000, percentile(bare, 0.99) * 1000
                w50, w99 = percentile(wrapped, 0.5) * 1000, percentile(wrapped, 0.99) * 1000
                rows.append([str(run), where, f"{b50:.2f}/{b99:.2f}", f"{w50:.2f}/{w99:.2f}", f"{w99 - b99:+.2f}"])
    print(f"latency with {args.workers} workers at {args.rate} frames/s, {args.frames} frames, milliseconds")
    print(table(rows, ["run", "tab on", "bare p50/p99", "Redis log p50/p99", "added p99"]))
    print(paths())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000, help="frames per second")
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1, help="2: two workers fanning out through Redis")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each app, alternated (--workers 2)")
    args = parser.parse_args()
    if args.workers > 1:
        workers_main(args)
        return
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
