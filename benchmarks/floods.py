"""Floods: what issue 13's floods cost another user's live stream, bare and wrapped, in one run.

    python -m benchmarks.floods [--quick] [--floods posts,nonreaders,storm,anonymous,pollreplays,...]
        [--repeat 1] [sizes]

Issue 13's condition: a bystander's live gap under each flood stays within 100 ms of the bare app's.
For each flood, the same traffic goes to the bare app and to the wrapped app (memory log; Redis log
where a log is read), each in a fresh server process; to the bare app ``resume-stream`` is an
unknown event it ignores. A bystander ("alice") gets a live token stream from the server (100
tokens/s, paced by the app) during the flood. The floods (shapes from the tests):

1. ``posts``: large polling POSTs (tests/test_abuse_bounds.py): 4 polling sessions with a GET
   pending x 3 POSTs and a session that never GETs x 8 POSTs, bodies just under 16 MiB of resume
   requests (the app's limit is 1 MB: both refuse them). Bare and memory log (a refused body asks
   no log anything).
2. ``nonreaders``: replays to clients that never read (tests/test_replay_pressure.py): 50
   connections that never read x 20 resume requests for a 2,000-frame stream. Bare, memory, Redis.
3. ``storm``: 200 clients that read, each resuming the 2,000-frame stream from its start as fast as
   the rate limit allows (its burst of 20, then 2/s: 400 requests/s together) for 10 s. The replays
   still queued then are not waited for (at most ``--drain`` s more). Bare, memory, Redis.
4. ``anonymous``: 3,000 connections without a principal opened and aborted (RST), 50 at a time: a
   third cut right after the websocket's OPEN, a third after a CONNECT and a resume request, a
   third long-polling handshakes never continued. Bare and memory log.
5. ``pollreplays``: long-polling replays that wait for their clients (tests/test_replay_pressure.py):
   one principal's 40 polling sessions, one at a time, each POSTing 2 resume requests for its
   2,000-frame stream of 4 KB frames (8 MB) and an UPGRADE (python-engineio answers it with a NOOP,
   so the pending GET returns in the bare app too), then a GET it never reads (a 4 KiB receive
   buffer); the next session starts once that GET's response has begun to arrive.
   ``pollreplays10``: the same, ten sessions at once. ``pollreplaysgz``, ``pollreplaysgz10``: the
   same with GETs that accept gzip (as browsers' do), each session first asking the app for a
   2 KB frame to itself so that python-engineio compresses its response (past 1 KB): the
   middleware then compresses the response it rewrote, replay and all. Bare, memory, Redis.
   ``--poll-rounds N``: each session POSTs and sends an unread GET N times, each GET on a new
   connection (the session's next GET is what says its client read the last response).

6. ``bigframes``: the app sends the attacker's 3 tabs 4 stream events of 16 MB each (an app that
   echoes an upload back inside a stream; ``--big-mb``, ``--big-frames``, ``--big-tabs``). Bare,
   memory, Redis (over ``ASGI_RESUME_MAX_FRAME_BYTES``: not logged, but read).

The flood runs in a subprocess (this script again, ``--attacker``), so the attacker's CPU and memory
are not the measuring process's: this process only holds the bystander, a control connection and
a thread reading the server's RSS (/proc/PID/status) every 5 ms. A flood is over when the attacker
has sent it all and then the server was quiet for 1 s (the middleware's resume counters still, the
server under 15% of a core), or after ``--drain`` s (10) more.

Prints, per flood and app: the bystander's longest gap between consecutive live frames (from the
last frame before the flood to the end of it) and when into the flood it began, its emit-to-arrival
latency (p99 and worst), the server's RSS growth over its baseline (peak, and held at the end with
the attackers still connected), the window's length and what was sent and answered; then, per
flood and log, wrapped - bare and whether the gap is within 100 ms of the bare app's. With
``--repeat N``, medians (and ranges) of N runs, the apps interleaved. Clients, server and Redis
share the machine's cores (``--nice`` lowers the attacker's priority).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvloop

from benchmarks.common import (
    ROOT,
    Client,
    Counter,
    app_server,
    cpu_seconds,
    paths,
    percentile,
    redis_server,
    rss_kib,
    server_pid,
    table,
)
from tests.support.raw import masked_frame, read_frame  # (benchmarks.common put the checkout on sys.path)

BYSTANDER_ROOM = "alice"
ATTACKER_ROOM = "mallory"  # the attacker's principal (auth:room): it owns the long stream
STREAM = "long"
LIVE = "live"
WITHIN_S = 0.1  # issue 13: the bystander's gap stays within 100 ms of the bare app's
QUIET_S = 1.0  # the flood is over once the server was quiet this long:
QUIET_CPU = 0.15  # under this much of a core (the bystander's stream alone takes a few %)
RESUME_COUNTERS = (
    "resumes_ok",
    "resumes_gap",
    "resumes_not_found",
    "resumes_bad_request",
    "resumes_unavailable",
    "resumes_rate_limited",
    "frames_replayed",
)
REPORTED = (*RESUME_COUNTERS, "frames_unstamped", "frames_too_large", "log_failures")  # the live path's faults too


@dataclass(frozen=True)
class Flood:
    name: str
    modes: tuple[str, ...]
    seeds: bool  # the attacker's long stream is logged first
    frame_bytes: int = 16  # the size of its frames' content


FLOODS = {
    "bigframes": Flood("bigframes", ("bare", "memory", "redis"), seeds=False),
    "posts": Flood("posts", ("bare", "memory"), seeds=True),
    "nonreaders": Flood("nonreaders", ("bare", "memory", "redis"), seeds=True),
    "storm": Flood("storm", ("bare", "memory", "redis"), seeds=True),
    "anonymous": Flood("anonymous", ("bare", "memory"), seeds=False),
    "pollreplays": Flood("pollreplays", ("bare", "memory", "redis"), seeds=True, frame_bytes=4096),
    "pollreplays10": Flood("pollreplays10", ("bare", "memory", "redis"), seeds=True, frame_bytes=4096),
    "pollreplaysgz": Flood("pollreplaysgz", ("bare", "memory", "redis"), seeds=True, frame_bytes=4096),
    "pollreplaysgz10": Flood("pollreplaysgz10", ("bare", "memory", "redis"), seeds=True, frame_bytes=4096),
}


def resume_request(ack_id: int = 1) -> str:
    return f'42{ack_id}["resume-stream",{{"message_id":"{STREAM}","last_seq":0}}]'


# -- the attacker: this module again, in its own process ---------------------------------------------
#
# It sets its flood up (connections, sessions), prints "ready", waits for "go" on stdin, floods,
# prints "done <json summary>", and keeps its connections open until stdin closes.


async def read_ws_text(reader: asyncio.StreamReader) -> str:
    """One server frame's payload, as text."""
    return (await read_frame(reader)).decode(errors="replace")


def abort(writer: asyncio.StreamWriter) -> None:
    """Close with a RST, as a crashed client or a dropped network would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def attack_posts(url: str, params: dict[str, Any], ready: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """Polling sessions that keep a GET pending, one that never GETs; threads POST the big bodies."""
    import httpx

    from tests.support.polling import PollingClient

    host, port = host_port(url)
    packet = resume_request().encode()
    body = b"\x1e".join([packet] * (params["body"] // (len(packet) + 1)))
    pollers = [await PollingClient(url).open({"room": ATTACKER_ROOM}) for _ in range(params["sessions"])]

    async def keep_polling(client: PollingClient) -> None:
        while True:
            try:
                packets = await client.get()
                if "2" in packets:
                    await client.post("3")
            except (httpx.HTTPError, AssertionError):
                return  # the server ended the session (it refused a POST)

    tasks = [asyncio.create_task(keep_polling(client)) for client in pollers]
    async with httpx.AsyncClient(timeout=30) as http:
        query = {"EIO": "4", "transport": "polling"}
        opening = await http.get(url + "/socket.io/", params=query)
        silent = str(json.loads(opening.text[1:])["sid"])
        connect = "40" + json.dumps({"room": ATTACKER_ROOM})
        await http.post(url + "/socket.io/", params={**query, "sid": silent}, content=connect)
    answers: dict[str, int] = {}  # status line, or how the connection ended without one
    taken: list[int] = []  # bytes the kernel took of each POST before the server gave up on it
    lock = threading.Lock()

    def post(sid: str) -> None:
        head = (
            f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        data, answer, ending = memoryview(head + body), b"", "closed"
        total = len(data)
        with socket.create_connection((host, port), timeout=5) as s:
            try:  # a server that reads nothing for 5 s refused the body (python-engineio may never answer)
                while data:
                    data = data[s.send(data) :]
                while chunk := s.recv(65536):
                    answer += chunk
            except OSError as error:  # a reset: the server closed with the body unread
                ending = type(error).__name__
        status = answer.split(b"\r\n", 1)[0].decode(errors="replace").removeprefix("HTTP/1.1 ")
        with lock:
            outcome = status or ending
            answers[outcome] = answers.get(outcome, 0) + 1
            taken.append(total - len(data))

    def session(sid: str, count: int) -> None:
        for _ in range(count):
            post(sid)

    await ready()
    sessions = [(client.sid, params["posts"]) for client in pollers] + [(silent, params["silent_posts"])]
    await asyncio.gather(*(asyncio.to_thread(session, sid, count) for sid, count in sessions))
    for task in tasks:
        task.cancel()
    for client in pollers:
        await client.aclose()
    posts = sum(count for _, count in sessions)
    return {"posts": posts, "MiB each": round(len(body) / 2**20, 1), "packets each": body.count(b"\x1e") + 1,
            "MiB sent each": round(statistics.mean(taken) / 2**20, 1), "answers": answers}  # fmt: skip


async def attack_nonreaders(url: str, params: dict[str, Any], ready: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """Connections that read their CONNECT answer, then never read again, and ask for replays."""
    clients = await asyncio.gather(*(Counter.connect(url, {"room": ATTACKER_ROOM}) for _ in range(params["clients"])))
    for client in clients:
        assert client.transport is not None
        client.transport.pause_reading()  # the kernel's buffers fill, then the server's
    await ready()
    sent = 0
    for client in clients:
        for i in range(params["requests"]):
            client.send(resume_request(i + 1))
            sent += 1
        await asyncio.sleep(0)  # let the writes go out, connection by connection
    return {"requests": sent}


async def attack_storm(url: str, params: dict[str, Any], ready: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """Clients that read, each asking for the long stream as fast as the rate limit allows."""
    n = params["clients"]
    clients = await asyncio.gather(*(Counter.connect(url, {"room": ATTACKER_ROOM}) for _ in range(n)))
    await ready()
    limit, seconds = params["limit"], params["seconds"]
    interval = 10.0 / limit * 1.02  # the bucket refills `limit` per 10 s; a little slower, never refused
    started, sent = time.monotonic(), 0
    for client in clients:  # the whole bucket at once
        for _ in range(limit):
            sent += 1
            client.send(resume_request(sent % 1000 + 1))
    k = 1
    while True:  # then one per refill, client j at phase j/n of each interval: smooth, not bursts
        for j, client in enumerate(clients):
            at = started + (k + j / n) * interval
            if at - started > seconds:
                return {"requests": sent, "req/s": round(sent / (time.monotonic() - started)),
                        "answered": sum(c.acks for c in clients)}  # fmt: skip
            if (delay := at - time.monotonic()) > 0:
                await asyncio.sleep(delay)  # pacing the attacker
            sent += 1
            client.send(resume_request(sent % 1000 + 1))
        k += 1


async def attack_anonymous(url: str, params: dict[str, Any], ready: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """Connections without a principal, opened and aborted, ``parallel`` at a time."""
    host, port = host_port(url)
    done = {"open-abort": 0, "connect-resume-abort": 0, "polling-abort": 0, "failed": 0}

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            if i % 3 == 2:  # a long-polling handshake never continued: the session waits for its ping timeout
                writer.write(f"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                await reader.readuntil(b"\r\n0\r\n\r\n")  # the OPEN packet, chunked (uvicorn)
                done["polling-abort"] += 1
                return
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            await reader.readuntil(b"\r\n\r\n")
            assert (await read_ws_text(reader)).startswith("0")  # Engine.IO OPEN
            if i % 3 == 0:
                done["open-abort"] += 1
                return
            writer.write(masked_frame("40"))  # CONNECT, no auth: no principal
            while not (await read_ws_text(reader)).startswith("40"):
                pass
            writer.write(masked_frame(resume_request()))  # and a request it does not wait for
            done["connect-resume-abort"] += 1
        except (OSError, AssertionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            done["failed"] += 1
        finally:
            abort(writer)

    await ready()
    started, next_index = time.monotonic(), 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < params["connections"]:
            next_index += 1
            await one(next_index)

    await asyncio.gather(*(worker() for _ in range(params["parallel"])))
    return {**done, "conn/s": round(params["connections"] / (time.monotonic() - started))}


UNREAD: list[socket.socket] = []  # (pollreplays) the GETs never read, open until the attacker exits


async def attack_pollreplays(url: str, params: dict[str, Any], ready: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """Polling sessions of one principal, ``parallel`` at a time, each asking for replays and never
    reading the GET that carries them (it only waits until its response begins to arrive)."""
    import httpx

    host, port = host_port(url)
    query = {"EIO": "4", "transport": "polling"}
    requests = [resume_request(i + 1).encode() for i in range(params["requests"])]
    accept = "gzip" if params["gzip"] else "identity"
    began: list[float] = []  # seconds from each unread GET to the first byte of its response
    late = 0  # responses that had not begun after params["wait"] s
    compressed = 0  # responses (of those begun) whose head says gzip

    def unread_get(sid: str) -> None:
        nonlocal late, compressed
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel takes little of it
        s.connect((host, port))
        s.sendall(
            (
                f"GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {host}\r\n"
                f"Accept-Encoding: {accept}\r\n\r\n"
            ).encode()
        )
        UNREAD.append(s)
        sent = time.monotonic()
        s.settimeout(params["wait"])
        try:
            s.recv(1, socket.MSG_PEEK)  # it has begun: nothing is taken from the buffer
            began.append(time.monotonic() - sent)
            compressed += b"content-encoding: gzip" in s.recv(1024, socket.MSG_PEEK).lower()
        except TimeoutError:
            late += 1

    async def one(http: httpx.AsyncClient) -> None:
        opening = await http.get(url + "/socket.io/", params=query)
        sid = str(json.loads(opening.text[1:])["sid"])
        on = {**query, "sid": sid}
        await http.post(url + "/socket.io/", params=on, content="40" + json.dumps({"room": ATTACKER_ROOM}))
        reply = await http.get(url + "/socket.io/", params=on)  # the CONNECT reply (read: the only one)
        assert "40{" in reply.text, reply.text
        packets = requests
        if params["gzip"]:  # a frame of 2 KB to this client first: python-engineio compresses its GET's response
            own = json.loads(reply.text[reply.text.index("40{") + 2 :].split("\x1e")[0])["sid"]
            pad = {"n": 1, "room": own, "message_id": "pad", "size": 2048}
            packets = [("42" + json.dumps(["blast", pad])).encode(), *requests]  # (before the GET: it is queued)
        for _ in range(params["rounds"]):  # (each GET on a new connection, the ones before still unread)
            answer = await http.post(url + "/socket.io/", params=on, content=b"\x1e".join([*packets, b"5"]))
            assert answer.text.lower() == "ok", answer.text
            await asyncio.to_thread(unread_get, sid)
            packets = requests

    await ready()
    sessions, parallel = params["sessions"], params["parallel"]
    limits = httpx.Limits(max_connections=parallel * 2)
    async with httpx.AsyncClient(timeout=30, headers={"Accept-Encoding": "identity"}, limits=limits) as http:
        for first in range(0, sessions, parallel):
            await asyncio.gather(*(one(http) for _ in range(first, min(sessions, first + parallel))))
    return {"sessions": sessions, "at once": parallel, "began ms (median)": round(statistics.median(began) * 1000)
            if began else None, "not begun": late, "gzip": compressed}  # fmt: skip


async def attack_bigframes(url: str, params: dict[str, Any], ready: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """The app sends the attacker's tabs stream events of ``size`` bytes (an upload echoed back)."""
    tabs = [await Client(url, {"room": ATTACKER_ROOM}).connect() for _ in range(params["tabs"])]
    await ready()
    blast = {"n": params["frames"], "room": ATTACKER_ROOM, "message_id": "big", "size": params["size"]}
    took = await tabs[0].call("blast", blast, timeout=120)
    for tab in tabs:
        await tab.wait_count(params["frames"])
    return {"frames": params["frames"], "MB": params["size"] / 1e6, "tabs": len(tabs), "emit_s": round(took, 2)}


ATTACKS = {
    "bigframes": attack_bigframes,
    "posts": attack_posts,
    "nonreaders": attack_nonreaders,
    "storm": attack_storm,
    "anonymous": attack_anonymous,
    "pollreplays": attack_pollreplays,
    "pollreplays10": attack_pollreplays,
    "pollreplaysgz": attack_pollreplays,
    "pollreplaysgz10": attack_pollreplays,
}


async def attacker_main(kind: str, url: str, params: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    if params.get("nice"):
        os.nice(params["nice"])  # the server before the attacker on a shared machine, as if on another

    async def ready() -> None:
        print("ready", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        assert line.strip() == "go", line

    summary = await ATTACKS[kind](url, params, ready)
    print("done " + json.dumps(summary), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # keep the connections open until told (EOF)


class Attacker:
    """The attacker subprocess, seen from the measuring process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, kind: str, url: str, params: dict[str, Any]) -> Attacker:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.floods", "--attacker", kind, "--url", url, "--params", json.dumps(params),
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        attacker = cls(process)
        assert await attacker._line(120) == "ready", "the attacker did not get ready"
        return attacker

    async def _line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the attacker exited ({await self.process.wait()})")
        return line.decode().strip()

    async def flood(self, timeout: float = 300) -> dict[str, Any]:
        """Says go; returns its summary once it has sent the whole flood."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        await self.process.stdin.drain()
        word, _, summary = (await self._line(timeout)).partition(" ")
        assert word == "done", word
        return dict(json.loads(summary))

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


# -- the measuring process ---------------------------------------------------------------------------


class PeakRss:
    """Reads a process's RSS every 5 ms from a thread (it goes on while this event loop is busy)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, RuntimeError):  # the server is gone
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@dataclass
class Result:
    gap_s: float
    gap_at_s: float  # when the longest gap began, from the flood's start (< 0: before it)
    latency_p99_s: float
    latency_s: float
    peak_mib: float
    held_mib: float
    took_s: float
    drained: bool
    summary: dict[str, Any]
    counters: dict[str, int] = field(default_factory=dict)


def live_window(bystander: Client, started: float, ended: float) -> tuple[float, float, float, float]:
    """The longest gap between live frames from the last before ``started`` to ``ended`` (a stall
    still going on at the end counts) and when it began, and the emit-to-arrival latency of the
    window's frames: p99 and worst."""
    arrivals = [
        (event["t"] + latency, latency) for event, latency in zip(bystander.events, bystander.latencies, strict=True)
    ]
    inside = [a for a in arrivals if a[0] >= started]
    before = [a[0] for a in arrivals if a[0] < started][-1:]
    times = [*before, *(a for a, _ in inside), ended]
    gap, at = max((b - a, a - started) for a, b in itertools.pairwise(times))
    latencies = [latency for _, latency in inside]
    return gap, at, percentile(latencies, 0.99), max(latencies, default=float("nan"))


def counters(stats: dict[str, Any], names: tuple[str, ...] = RESUME_COUNTERS) -> dict[str, int]:
    return {name: int(stats[name]) for name in names if name in stats}


async def drain(control: Client, pid: int, cap: float) -> bool:
    """Until the server is quiet for QUIET_S: the middleware's resume counters stood still (the bare
    app has none) and the server used under QUIET_CPU of a core (a replay counts only once it ends:
    replays taking turns can all be under way with no counter moving). At most ``cap`` s; True if
    it went quiet."""
    deadline = time.monotonic() + max(cap, QUIET_S + 0.5)
    samples: list[tuple[float, float, dict[str, int]]] = []  # (time, server CPU s, counters)
    while time.monotonic() < deadline:
        now = (time.monotonic(), cpu_seconds(pid), counters(await control.call("stats", {})))
        samples.append(now)
        first = next(s for s in samples if s[0] >= now[0] - QUIET_S)
        span = now[0] - first[0]
        if span >= QUIET_S * 0.9 and first[2] == now[2] and now[1] - first[1] < QUIET_CPU * span:
            return True
        await asyncio.sleep(0.1)  # polling the server's counters and CPU time: there is no event to wait on
    return False


def attack_params(flood: str, args: argparse.Namespace) -> dict[str, Any]:
    match flood:
        case "bigframes":
            return {"tabs": args.big_tabs, "frames": args.big_frames, "size": args.big_mb * 1_000_000}
        case "posts":
            return {"body": args.post_mib * 2**20, "sessions": args.post_sessions, "posts": args.posts,
                    "silent_posts": args.silent_posts}  # fmt: skip
        case "nonreaders":
            return {"clients": args.nonreaders, "requests": args.requests}
        case "storm":
            return {"clients": args.storm_clients, "limit": args.resume_limit, "seconds": args.storm_seconds}
        case "anonymous":
            return {"connections": args.anonymous, "parallel": args.anonymous_parallel}
        case "pollreplays" | "pollreplays10" | "pollreplaysgz" | "pollreplaysgz10":
            return {"sessions": args.poll_sessions, "parallel": 10 if flood.endswith("10") else 1,
                    "requests": args.poll_requests, "gzip": "gz" in flood, "rounds": args.poll_rounds,
                    "wait": 10.0}  # fmt: skip
    raise ValueError(flood)


async def measure(url: str, flood: Flood, args: argparse.Namespace) -> Result:
    pid = server_pid(url)
    control = await Client(url, {}).connect()
    owner = await Counter.connect(url, {"room": ATTACKER_ROOM})  # open to the end: no hold, no orphaned stream
    if flood.seeds:  # the attacker's own long stream: what its resume requests replay
        blast = {"n": args.frames, "room": ATTACKER_ROOM, "message_id": STREAM, "size": flood.frame_bytes}
        await control.call("blast", blast)
        await owner.wait_count(args.frames)
    bystander = Client(url, {"room": BYSTANDER_ROOM})
    bystander.keep = bystander.timed = True
    await bystander.connect()
    await control.call("steady", {"n": args.rate * 3600, "rate": args.rate, "room": BYSTANDER_ROOM, "message_id": LIVE})
    await bystander.wait_count(args.rate)  # a second of live frames before the flood
    attacker = await Attacker.start(flood.name, url, {**attack_params(flood.name, args), "nice": args.nice})
    before = counters(await control.call("stats", {}), REPORTED)  # a round trip: the server has taken the setup in
    baseline = rss_kib(pid)
    sampler = PeakRss(pid)
    started = time.monotonic()
    summary = await attacker.flood()
    drained = await drain(control, pid, args.drain)
    ended = time.monotonic()
    took = ended - started
    peak = sampler.stop()
    held = rss_kib(pid)
    after = counters(await control.call("stats", {}), REPORTED)
    gap, at, p99, latency = live_window(bystander, started, ended)
    await attacker.close()
    for client in (bystander, control, owner):
        await client.close()
    return Result(
        gap, at, p99, latency, (peak - baseline) / 1024, (held - baseline) / 1024, took, drained, summary,
        {name: value - before.get(name, 0) for name, value in after.items()},
    )  # fmt: skip


def cell(values: list[float], fmt: str) -> str:
    """The median, and the range when there are several."""
    text = format(statistics.median(values), fmt)
    return text if len(values) == 1 else f"{text} ({format(min(values), fmt)}..{format(max(values), fmt)})"


def notes(result: Result) -> str:
    parts = [f"{k} {v}" for k, v in result.summary.items()]
    answers = [
        f"{k.removeprefix('resumes_')} {v}" for k, v in result.counters.items() if v and k.startswith("resumes_")
    ]
    if answers:
        parts.append("resumes: " + ", ".join(answers))
    parts += [f"{k.removeprefix('frames_')} {v}" for k, v in result.counters.items() if v and k.startswith("frames_")]
    if result.counters.get("log_failures"):
        parts.append(f"log failures {result.counters['log_failures']}")
    if not result.drained:
        parts.append("not drained")
    return "; ".join(parts)


def report(results: dict[tuple[str, str], list[Result]]) -> None:
    rows = []
    for (flood, mode), runs in results.items():
        rows.append([
            flood, mode,
            cell([r.gap_s * 1000 for r in runs], ".0f"),
            f"{runs[-1].gap_at_s:+.2f}",
            cell([r.latency_p99_s * 1000 for r in runs], ".0f"),
            cell([r.latency_s * 1000 for r in runs], ".0f"),
            cell([r.peak_mib for r in runs], "+.1f"),
            cell([r.held_mib for r in runs], "+.1f"),
            cell([r.took_s for r in runs], ".1f"),
            notes(runs[-1]),
        ])  # fmt: skip
    headers = ["flood", "app", "longest gap ms", "it began at s", "latency p99 ms", "worst ms", "RSS peak MiB",
               "RSS held MiB", "window s", "what was sent and answered (last run)"]  # fmt: skip
    print(table(rows, headers))
    print()
    rows = []
    for (flood, mode), runs in results.items():
        bare = results.get((flood, "bare"))
        if mode == "bare" or not bare:
            continue
        gap = statistics.median(r.gap_s for r in runs) - statistics.median(r.gap_s for r in bare)
        peak = statistics.median(r.peak_mib for r in runs) - statistics.median(r.peak_mib for r in bare)
        held = statistics.median(r.held_mib for r in runs) - statistics.median(r.held_mib for r in bare)
        within = "yes" if gap <= WITHIN_S else f"NO (+{(gap - WITHIN_S) * 1000:.0f} ms over)"
        rows.append([flood, mode, f"{gap * 1000:+.0f}", within, f"{peak:+.1f}", f"{held:+.1f}"])
    print("wrapped - bare, per flood")
    print(table(rows, ["flood", "log", "longest gap ms", "within 100 ms", "RSS peak MiB", "RSS held MiB"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floods", default=",".join(FLOODS), help="which floods, comma separated")
    parser.add_argument("--quick", action="store_true", help="small floods (a smoke run, not the issue's sizes)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (flood, app); medians are shown")
    parser.add_argument("--rate", type=int, default=100, help="the bystander's live tokens/s")
    parser.add_argument("--frames", type=int, default=2000, help="frames of the stream the attackers resume")
    parser.add_argument(
        "--drain", type=float, default=10.0, help="longest wait, s, for the server to go quiet after a flood"
    )
    parser.add_argument("--resume-limit", type=int, default=20, help="resume requests per connection per 10 s")
    parser.add_argument("--big-mb", type=int, default=16, help="bigframes: MB per stream event")
    parser.add_argument("--big-frames", type=int, default=4, help="bigframes: events")
    parser.add_argument("--big-tabs", type=int, default=3, help="bigframes: the attacker's tabs, which read them")
    parser.add_argument("--post-mib", type=int, default=16, help="posts: body size (just under it)")
    parser.add_argument("--post-sessions", type=int, default=4, help="posts: polling sessions with a GET pending")
    parser.add_argument("--posts", type=int, default=3, help="posts: POSTs per polling session")
    parser.add_argument("--silent-posts", type=int, default=8, help="posts: POSTs of the session that never GETs")
    parser.add_argument("--nonreaders", type=int, default=50, help="nonreaders: connections")
    parser.add_argument("--requests", type=int, default=20, help="nonreaders: resume requests each")
    parser.add_argument("--storm-clients", type=int, default=200, help="storm: clients")
    parser.add_argument("--storm-seconds", type=float, default=10.0, help="storm: how long they keep asking")
    parser.add_argument("--anonymous", type=int, default=3000, help="anonymous: connections opened and aborted")
    parser.add_argument("--anonymous-parallel", type=int, default=50, help="anonymous: at a time")
    parser.add_argument("--poll-sessions", type=int, default=40, help="pollreplays: polling sessions")
    parser.add_argument("--poll-requests", type=int, default=2, help="pollreplays: resume requests each")
    parser.add_argument(
        "--poll-rounds", type=int, default=1, help="pollreplays: POST and unread GET, again and again, per session"
    )
    parser.add_argument("--nice", type=int, default=0, help="niceness of the attacker process (0: the server's)")
    parser.add_argument("--attacker", choices=list(ATTACKS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker:
        uvloop.run(attacker_main(args.attacker, args.url, json.loads(args.params)))
        return
    if args.quick:
        args.post_sessions, args.posts, args.silent_posts = 2, 1, 2
        args.nonreaders, args.requests = 10, 20
        args.storm_clients, args.storm_seconds = 50, 3.0
        args.anonymous = 600
        args.poll_sessions = 20
        args.drain = 3.0
    floods = [FLOODS[name] for name in args.floods.split(",")]
    env = {"ASGI_RESUME_RESUME_LIMIT": str(args.resume_limit)}
    results: dict[tuple[str, str], list[Result]] = {}
    started = time.monotonic()
    with redis_server() as redis:
        for flood in floods:
            for _ in range(args.repeat):
                for mode in flood.modes:
                    with app_server(mode, redis.url, **env) as url:
                        result = uvloop.run(measure(url, flood, args))
                    results.setdefault((flood.name, mode), []).append(result)
                    print(f"  {flood.name} {mode}: gap {result.gap_s * 1000:.0f} ms, RSS peak "
                          f"{result.peak_mib:+.1f} MiB, {result.took_s:.1f} s", flush=True)  # fmt: skip
    print(f"floods against a bystander's live stream ({args.rate} tokens/s); {args.repeat} run(s) each; "
          f"took {time.monotonic() - started:.0f} s")  # fmt: skip
    report(results)
    print(paths())


if __name__ == "__main__":
    main()
