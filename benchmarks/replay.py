"""Replay: the server time to replay a long stream, and a reconnect storm.

    python -m benchmarks.replay [--frames 2000] [--clients 1000] [--storm-frames 200]

1. A 2,000-frame stream is logged; a client resumes it from the start: the middleware's own time
   to read the log and render the replay (its replay timer), median of 10.
2. A storm: that many clients (a reload of every tab at once) connect at the same moment and each
   resumes a stream from its start. Reports the time until every client has every frame and its
   answer, and frames lost (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import uvloop

from benchmarks.common import Client, Counter, app_server, paths, redis_server, table


async def replay_time(url: str, frames: int) -> float:
    member = await Counter.connect(url, {"room": "replay"})
    control = await Client(url, {}).connect()
    await control.call("blast", {"n": frames, "room": "replay", "message_id": "long"})
    await member.wait_count(frames)
    times = []
    for _ in range(10):
        before = (await control.call("stats", {}))["replay_seconds"]
        member.send('421["resume-stream",{"message_id":"long","last_seq":0}]')
        await member.wait_acks(len(times) + 1)
        after = (await control.call("stats", {}))["replay_seconds"]
        times.append(after["total"] - before["total"])
    await member.close()
    await control.close()
    assert member.count == frames * 11, member.count
    return statistics.median(times)


async def storm(url: str, clients: int, frames: int) -> tuple[float, int]:
    owner = await Counter.connect(url, {"room": "storm"})
    control = await Client(url, {}).connect()
    await control.call("blast", {"n": frames, "room": "storm", "message_id": "storm"})
    await owner.wait_count(frames)
    tabs = await asyncio.gather(*(Counter.connect(url, {"room": "storm"}) for _ in range(clients)))
    started = time.monotonic()
    for tab in tabs:
        tab.send('421["resume-stream",{"message_id":"storm","last_seq":0}]')
    await asyncio.gather(*(tab.wait_acks(1, timeout=120) for tab in tabs))
    elapsed = time.monotonic() - started
    lost = sum(max(0, frames - tab.count) for tab in tabs)
    for tab in [*tabs, owner]:
        await tab.close()
    await control.close()
    return elapsed, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--storm-frames", type=int, default=200)
    args = parser.parse_args()
    rows = []
    with redis_server() as redis:
        for mode in ("memory", "redis"):
            with app_server(mode, redis.url) as url:
                server_time = uvloop.run(replay_time(url, args.frames))
            with app_server(mode, redis.url) as url:
                elapsed, lost = uvloop.run(storm(url, args.clients, args.storm_frames))
            rows.append([mode, f"{server_time * 1000:.1f}", f"{elapsed:.2f}", str(lost)])
    print(f"replay of {args.frames} frames (server time, median of 10); storm: {args.clients} clients resume "
          f"{args.storm_frames} frames each at once")  # fmt: skip
    print(table(rows, ["log", "replay ms", "storm: all caught up, s", "frames lost"]))
    print(paths())


if __name__ == "__main__":
    main()
