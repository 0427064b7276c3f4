"""Redis round trips per logged frame, at saturation and at a trickle.

    python -m benchmarks.roundtrips

Counts the middleware's log calls (each one pipelined round trip) and, independently, the EVALSHA
commands Redis executed (INFO commandstats), over a burst at the app's maximum rate and over a
steady trickle.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
import uvloop

from benchmarks.common import Client, Counter, app_server, paths, redis_server, table


async def evalsha_calls(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    stats = await client.info("commandstats")
    await client.aclose()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def case(app_url: str, redis_url: str, request: str, frames: int, rate: int = 0) -> tuple[float, float]:
    member = await Counter.connect(app_url, {"room": request})
    control = await Client(app_url, {}).connect()
    before, evals = await control.call("stats", {}), await evalsha_calls(redis_url)
    if rate:
        await control.call("steady", {"n": frames, "rate": rate, "room": request, "message_id": request})
    else:
        await control.call("blast", {"n": frames, "room": request, "message_id": request})
    await member.wait_count(frames)
    await asyncio.sleep(0.2)  # let the last log call's counters land before reading them (not a test)
    after, evals_after = await control.call("stats", {}), await evalsha_calls(redis_url)
    await member.close()
    await control.close()
    stamped = after["frames_stamped"] - before["frames_stamped"]
    return (after["log_writes"] - before["log_writes"]) / stamped, (evals_after - evals) / stamped


def main() -> None:
    rows = []
    with redis_server() as redis, app_server("redis", redis.url) as url:
        saturated = uvloop.run(case(url, redis.url, "burst", 20000))
        trickle = uvloop.run(case(url, redis.url, "trickle", 500, rate=100))
    rows.append(["saturation (burst of 20,000)", f"{saturated[0]:.3f}", f"{saturated[1]:.3f}"])
    rows.append(["trickle (100 frames/s)", f"{trickle[0]:.3f}", f"{trickle[1]:.3f}"])
    print("Redis round trips per logged frame (one client)")
    print(table(rows, ["load", "log calls / frame", "EVALSHA / frame"]))
    print(paths())


if __name__ == "__main__":
    main()
