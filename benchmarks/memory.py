"""Memory: RSS per idle connection and per in-flight stream, and whether it stays flat over a long run.

    python -m benchmarks.memory [--connections 500] [--streams 200] [--rounds 20]

Reads the server process's RSS (/proc/PID/status) around each step, bare and wrapped.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop

from benchmarks.common import MODES, Client, Counter, app_server, redis_server, rss_kib, server_pid, table


async def settle(control: Client) -> None:
    await control.call("stats", {})  # one round trip: what was sent before it has been handled
    await asyncio.sleep(0.5)  # let the allocator settle before reading RSS (not a test)


async def measure(url: str, args: argparse.Namespace) -> dict[str, float]:
    pid = server_pid(url)
    control = await Client(url, {}).connect()
    await settle(control)
    base = rss_kib(pid)
    idle = [await Counter.connect(url, {"room": f"idle{i}"}) for i in range(args.connections)]
    await settle(control)
    per_connection = (rss_kib(pid) - base) / args.connections
    for client in idle:
        await client.close()

    # streams in flight: each logged (memory log: in this process) and not done
    owner = await Counter.connect(url, {"room": "streams"})
    await settle(control)
    before = rss_kib(pid)
    for i in range(args.streams):
        await control.call("blast", {"n": args.frames, "room": "streams", "message_id": f"s{i}"})
    await owner.wait_count(args.streams * args.frames)
    await settle(control)
    per_stream = (rss_kib(pid) - before) / args.streams

    # a long run: rounds of clients streaming and leaving; RSS should not creep
    samples = []
    for r in range(args.rounds):
        clients = [await Counter.connect(url, {"room": f"round{r}"}) for _ in range(20)]
        await control.call("blast", {"n": 200, "room": f"round{r}", "message_id": f"r{r}"})
        for client in clients:
            await client.wait_count(200)
            await client.close()
        await settle(control)
        samples.append(rss_kib(pid))
    await owner.close()
    await control.close()
    third = max(1, len(samples) // 3)
    growth = sum(samples[-third:]) / third - sum(samples[:third]) / third
    return {"connection": per_connection, "stream": per_stream, "growth": growth, "last": samples[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--frames", type=int, default=100, help="frames per in-flight stream")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    rows = []
    with redis_server() as redis:
        for mode in MODES:
            # short TTLs so that the long run's finished streams leave the memory log during it
            with app_server(mode, redis.url, ASGI_RESUME_DONE_TTL="1", ASGI_RESUME_TTL="5") as url:
                r = uvloop.run(measure(url, args))
            rows.append([mode, f"{r['connection']:.1f}", f"{r['stream']:.1f}", f"{r['growth']:+.0f}", f"{r['last']:,}"])
    print(f"RSS of the server process, KiB ({args.streams} streams of {args.frames} frames; {args.rounds} rounds)")
    print(table(rows, ["app", "per idle connection", "per stream in flight", "long run: last third - first third",
                       "RSS at the end"]))  # fmt: skip


if __name__ == "__main__":
    main()
