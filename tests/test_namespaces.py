"""What one connection's CONNECTs and DISCONNECTs leave behind, without a server.

Found by an attack run: every CONNECT was noted before the app decided, and a refused one (a
namespace the app does not have, a second CONNECT where the connection is in already) left its
notes for the connection's life: 20,000 CONNECTs to made-up namespaces grew the server by 194 MiB,
and with recovery on, a second CONNECT to "/" held back every later event of the connection.
Drives the pipeline as the transports do (``inspect`` for the client's frames, ``feed``/``flush``
for the app's).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from asgi_resume import protocol
from asgi_resume.config import Settings
from asgi_resume.log import LogRefused, LogUnavailable, StreamLog
from asgi_resume.log.base import Claim, Note, SessionAppendResult
from asgi_resume.log.memory import MemoryLog
from asgi_resume.log.redis import RedisLog
from asgi_resume.pipeline.closes import IN_FLIGHT, MAX_PENDING, PER_PRINCIPAL
from asgi_resume.pipeline.connection import MAX_NAMESPACES, Connection
from asgi_resume.pipeline.inbound import inspect
from asgi_resume.pipeline.outbound import Outbound
from asgi_resume.pipeline.runtime import Runtime
from tests.support.redis_server import RedisServer
from tests.support.waits import until
from tests.test_pipeline import events, send, token

pytestmark = pytest.mark.anyio
_prefixes = itertools.count()


def connection(rt: Runtime) -> Outbound:
    return Outbound(rt, Connection({"type": "websocket", "query_string": b""}, rt.log.now_ms()))


async def join(outbound: Outbound, namespace: str = "/", token_: str | None = "alice") -> list[object]:
    """The client's CONNECT, then the app's acceptance; what the client is sent."""
    head = "40" + ("" if namespace == "/" else namespace + ",")
    auth = {"token": token_} if token_ is not None else {}
    await inspect(outbound.runtime, outbound.conn, head + json.dumps(auth))
    return await send(outbound, head + '{"sid":"s"}')


def pid_of(sent: list[object]) -> str | None:
    reply = next(f for f in sent if isinstance(f, str) and f.startswith("40"))
    packet = protocol.parse(reply)
    assert packet is not None
    return packet.data.get("pid")  # type: ignore[no-any-return,union-attr]


@pytest.mark.parametrize("recovery", [False, True])
async def test_refused_connects_leave_nothing_behind(recovery: bool) -> None:
    rt = Runtime(Settings.load({}, recovery=recovery))
    client = connection(rt)
    await join(client)
    for i in range(1000):
        namespace = f"/made-up-{i}"
        await inspect(rt, client.conn, f'40{namespace},{{"token":"alice"}}')
        await send(client, f'44{namespace},{{"message":"Invalid namespace"}}')
    conn = client.conn
    assert set(conn.joined_ms) == {"/"}
    assert set(conn.recovery) == ({"/"} if recovery else set())
    assert not conn.pending
    assert conn.principals.keys() == {"/"}


async def test_connects_the_app_has_not_answered_are_noted_up_to_a_bound() -> None:
    rt = Runtime(Settings.load({}, recovery=True))
    client = connection(rt)
    for i in range(MAX_NAMESPACES * 4):
        await inspect(rt, client.conn, f'40/ns{i},{{"token":"alice"}}')
    await inspect(rt, client.conn, "40/" + "x" * 5000 + ',{"token":"alice"}')
    conn = client.conn
    assert len(conn.joined_ms) == len(conn.recovery) == len(conn.pending) == MAX_NAMESPACES


async def test_leaving_a_namespace_forgets_when_it_joined() -> None:
    rt = Runtime(Settings.load({}))
    client = connection(rt)
    await join(client, "/admin")
    await inspect(rt, client.conn, "41/admin,")
    assert "/admin" not in client.conn.joined_ms


async def test_a_second_connect_where_the_connection_is_in_changes_nothing() -> None:
    """python-socketio refuses it ("Unable to connect") and the connection goes on: with recovery on
    it used to wait for a CONNECT reply that never came, holding back every later event."""
    rt = Runtime(Settings.load({}, recovery=True))
    client = connection(rt)
    pid = pid_of(await join(client))
    assert pid
    before = events(await send(client, token(1)))[0]
    await inspect(rt, client.conn, '40{"token":"mallory"}')
    await send(client, '44{"message":"Unable to connect"}')
    after = await send(client, token(2), token(3))
    assert [e["seq"] for e in events(after)] == [before["seq"] + 1, before["seq"] + 2]  # sent, still alice's
    offsets = [json.loads(f[2:])[-1] for f in after if isinstance(f, str) and f.startswith("42")]
    assert len(offsets) == 2
    assert all(re.fullmatch(r"[A-Za-z0-9]+\.[0-9]+", offset) for offset in offsets)  # logged for recovery
    assert client.conn.recovery["/"].pid == pid
    assert client.conn.principal_for("/") is not None


async def test_a_connection_without_a_principal_gets_no_recovery_session() -> None:
    """Without a principal a pid would be anybody's to claim (every anonymous connection shared the
    empty principal: another one presenting the pid read the session), and such a connection logs
    nothing."""
    rt = Runtime(Settings.load({}, recovery=True))
    anonymous = connection(rt)
    sent = await join(anonymous, token_=None)
    assert pid_of(sent) is None
    assert not anonymous.conn.recovery
    frame = protocol.event("note", {"n": 1})
    assert await send(anonymous, frame) == [frame]  # no offset appended: it is as the app sent it


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_client_that_joins_and_leaves_over_and_over_piles_up_no_recovery_sessions(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Found by an attack run: each join made a recovery session kept for the stream ttl (an hour),
    though a client that leaves on purpose has nothing to recover: 20,000 joins kept 18.8 MiB on
    the memory log, 15,799 keys on Redis."""
    log: StreamLog = MemoryLog()
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        log = RedisLog.from_url(server.url, prefix=f"joins{next(_prefixes)}")
    rt = Runtime(Settings.load({}, recovery=True), log)
    client = connection(rt)
    await join(client)
    try:
        for _ in range(20):
            assert pid_of(await join(client, "/admin"))
            await inspect(rt, client.conn, "41/admin,")
        await until(lambda: not rt.closes.pending, 10)  # (the closes go in the background)
        if isinstance(log, RedisLog):
            kept = [key async for key in log.client.scan_iter(f"{log.prefix}:*")]
            assert len(kept) <= 2  # "/"'s session: its meta and its log
        else:
            assert len(log._sessions._by_pid) == 1
    finally:
        await log.aclose()


async def test_a_leave_the_log_did_not_hear_closes_the_session_once_it_answers(tmp_path: Path) -> None:
    """A client that leaves a namespace on purpose has nothing to recover there: its session is
    closed. The note used to be sent once: with Redis down at that moment (then back with its data:
    a restart from its append-only file, a failover) the session stayed claimable for the recovery
    window, and a claim got ``recovered`` though what the app sent after the client left is in no
    log. Now it is sent again once the log answers."""
    server = RedisServer(tmp_path / "down", "--appendonly", "yes", "--appendfsync", "always").start()
    log = RedisLog.from_url(server.url, prefix="leave")
    rt = Runtime(Settings.load({}, recovery=True, write_timeout=0.2), log)
    client = connection(rt)
    try:
        await join(client)
        pid = pid_of(await join(client, "/admin"))
        assert pid
        sent = await send(client, protocol.event("note", {"n": 1}, namespace="/admin"))
        last_offset = json.loads(sent[0][len("42/admin,") :])[-1]  # type: ignore[index]
        meta = log.session_keys(pid)[0]
        assert await log.client.exists(meta)

        server.kill()  # Redis is down when the client leaves: the note of the leave fails
        await inspect(rt, client.conn, "41/admin,")
        await until(lambda: rt.stats.log_failures > 0, 20)
        server.start()  # back, with the session (its append-only file)

        async def closed() -> bool:
            return not await log.client.exists(meta)

        await until(closed, 20)  # the note is sent again after the guard's retry pause

        again = connection(rt)
        auth = {"token": "alice", "pid": pid, "offset": last_offset}
        await inspect(rt, again.conn, "40/admin," + json.dumps(auth))
        reply = await send(again, '40/admin,{"sid":"s2"}')
        assert pid_of(reply) != pid  # a normal connect, not "recovered"
    finally:
        server.stop()
        await rt.aclose()


class _Gated(MemoryLog):
    """A log whose calls named in ``gated`` wait for ``gate`` (a slow Redis), saying when they began."""

    synchronous = False

    def __init__(self) -> None:
        super().__init__()
        self.gated: set[str] = set()
        self.gate, self.entered = asyncio.Event(), asyncio.Event()

    async def _wait(self, name: str) -> None:
        if name in self.gated:
            self.entered.set()
            await self.gate.wait()

    async def session_note(self, *args: Any) -> tuple[str, str]:
        await self._wait("session_note")
        return await super().session_note(*args)

    async def session_append(self, *args: Any) -> list[SessionAppendResult]:
        await self._wait("session_append")
        return await super().session_append(*args)

    async def session_claim(self, *args: Any) -> Claim:
        await self._wait("session_claim")
        return await super().session_claim(*args)


async def _leave_while(log: _Gated, call: str, client: Outbound, namespace: str, pending: Awaitable[Any]) -> Any:
    """Run ``pending`` until its ``call`` to the log is out; the client leaves ``namespace`` then."""
    log.gated.add(call)
    task = asyncio.ensure_future(pending)
    async with asyncio.timeout(10):
        await log.entered.wait()
    await inspect(client.runtime, client.conn, "41" + ("" if namespace == "/" else namespace + ","))
    log.gate.set()
    async with asyncio.timeout(10):
        return await task


async def test_leaving_a_namespace_while_a_note_is_out_breaks_nothing() -> None:
    """Found by an attack run: a DISCONNECT read while an upgrade's note was out (Redis slow) ended
    that namespace's recovery under the loop over them: "dictionary changed size during iteration"
    reached the app, and the upgraded websocket died."""
    log = _Gated()
    rt = Runtime(Settings.load({}, recovery=True), log)
    client = connection(rt)
    await join(client)
    await join(client, "/admin")
    await _leave_while(log, "session_note", client, "/admin", client.recovery.notes.tell("upgraded"))  # type: ignore[union-attr]
    assert set(client.conn.recovery) == {"/"}


async def test_leaving_a_namespace_while_its_events_are_logged_costs_no_stamp(caplog: pytest.LogCaptureFixture) -> None:
    """Found by an attack run: the session log's answer came back to a namespace's state the client's
    DISCONNECT had ended meanwhile (KeyError): the batch went out unprocessed, a "/" stream frame
    unstamped though logged (a resume would replay it again)."""
    log = _Gated()
    rt = Runtime(Settings.load({}, recovery=True), log)
    client = connection(rt)
    await join(client)
    await join(client, "/admin")
    client.feed(protocol.event("note", {"n": 1}, namespace="/admin"))
    client.feed(token(1))
    sent = await _leave_while(log, "session_append", client, "/admin", client.flush())
    assert [e["seq"] for e in events(sent) if "seq" in e] == [1]  # the "/" frame, stamped
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_leaving_a_namespace_while_its_recovery_is_claimed_closes_the_claimed_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by an attack run: a reconnect that left its namespace while its claim was out failed its
    batch (KeyError: no replay, a CONNECT reply without pid), and the session it had claimed was
    never closed (the claim set its pid after the leave looked for one)."""
    log = _Gated()
    rt = Runtime(Settings.load({}, recovery=True), log)
    before, again = connection(rt), connection(rt)
    before.conn.upgraded = again.conn.upgraded = True  # websockets from the start
    pid = pid_of(await join(before))
    assert pid
    sent = await send(before, protocol.event("note", {"n": 1}))
    last_offset = json.loads(sent[0][2:])[-1]
    await inspect(rt, again.conn, "40" + json.dumps({"token": "alice", "pid": pid, "offset": last_offset}))
    again.feed('40{"sid":"s2"}')
    sent = await _leave_while(log, "session_claim", again, "/", again.flush())
    assert sent == ['40{"sid":"s2"}']  # the app's reply, as it sent it
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert rt.stats.recoveries_ok == 0
    await until(lambda: not rt.closes.pending, 10)
    principal = before.conn.principal_for("/") or ""
    await before.release()  # the previous connection ends too: a session closed by both is gone
    assert (await log.session_claim(pid, principal, "/", "g", "c3", "g3", 60_000)).status == "unknown"


async def test_leaves_during_an_outage_wait_in_one_queue(tmp_path: Path) -> None:
    """Found by an attack run: with Redis down, each leave's close was retried by a task of its own
    (3,000 joins and leaves: 3,000 tasks, +45 MiB, 87,000 failed calls, a bystander's frames 313 ms
    apart). They wait in one bounded queue now, tried only while the guard lets calls through."""
    server = RedisServer(tmp_path / "down").start()
    log = RedisLog.from_url(server.url, prefix="herd")
    rt = Runtime(Settings.load({}, recovery=True, write_timeout=0.2), log)
    client = connection(rt)
    try:
        await join(client)
        server.kill()
        for _ in range(200):
            assert pid_of(await join(client, "/admin"))
            await inspect(rt, client.conn, "41/admin,")
        assert len(rt.closes.pending) == 200
        assert len(rt._background) <= 2
        assert rt.stats.log_failures < 30  # not a call per leave per retry
    finally:
        server.stop()
        await rt.aclose()


class _RefusesOneClose(MemoryLog):
    """A log that refuses the close of one session (its keys alone: a WRONGTYPE, say) and may be down."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused, self.down = refused, False
        self.closed: list[str] = []  # the sessions closed, in order

    async def session_note(self, pid: str, action: Note, gen: str, owner: str) -> tuple[str, str]:
        if self.down:
            raise LogUnavailable("connection refused")
        if pid == self.refused and action == "closed":
            raise LogRefused("WRONGTYPE")
        if action == "closed":
            self.closed.append(pid)
        return await super().session_note(pid, action, gen, owner)


async def test_a_refused_close_does_not_hold_up_the_others() -> None:
    """Found by an attack run: a close the log refused stayed first in the queue, retried for the
    recovery window, and every other leave meanwhile stayed claimable."""
    log = _RefusesOneClose("")
    rt = Runtime(Settings.load({}, recovery=True), log)
    alice, bob = connection(rt), connection(rt)
    await join(alice)
    await join(bob, token_="bob")
    pid_a, pid_b = pid_of(await join(alice, "/admin")), pid_of(await join(bob, "/admin", token_="bob"))
    assert pid_a
    assert pid_b
    log.refused = pid_a
    state = alice.conn.recovery["/admin"]
    rt.closes.add(pid_a, state.gen, alice.conn.id, state.principal)  # refused: first in the queue
    await inspect(rt, bob.conn, "41/admin,")
    await until(lambda: not rt.closes.pending, 10)
    assert pid_b not in log._sessions._by_pid  # closed
    assert rt.stats.closes_dropped == 1


async def test_a_close_the_log_did_not_hear_at_the_end_of_a_connection_is_queued() -> None:
    """Found by an attack run: a connection's close at its end was told once; with the log down
    then, its session stayed claimable, and a reconnect was told recovered though what the app
    sent after the connection ended is in no log. A claim of a session this process is closing is
    refused meanwhile."""
    log = _RefusesOneClose("")
    rt = Runtime(Settings.load({}, recovery=True), log)
    client = connection(rt)
    client.conn.upgraded = True
    pid = pid_of(await join(client))
    assert pid
    sent = await send(client, protocol.event("note", {"n": 1}))
    last_offset = json.loads(sent[0][2:])[-1]
    log.down = True
    await client.release()
    assert list(rt.closes.pending) == [(pid, client.conn.recovery["/"].gen)]
    log.down = False
    again = connection(rt)
    again.conn.upgraded = True
    await inspect(rt, again.conn, "40" + json.dumps({"token": "alice", "pid": pid, "offset": last_offset}))
    reply = await send(again, '40{"sid":"s2"}')
    assert pid_of(reply) != pid  # not recovered: the session is being closed
    await until(lambda: not rt.closes.pending, 10)
    assert pid not in log._sessions._by_pid


async def test_one_principals_leaves_cost_nobody_elses_close() -> None:
    """A client that joins and leaves a namespace over and over while the log does not answer
    fills its own share of the closes waiting, never another principal's: past ``PER_PRINCIPAL``
    its own oldest is given up (before, the process-wide bound gave up the oldest of anyone's,
    and that session stayed claimable with what was sent after the leave in no log)."""
    log = _RefusesOneClose("")
    rt = Runtime(Settings.load({}, recovery=True), log)
    mallory, bob = connection(rt), connection(rt)
    try:
        await join(bob, token_="bob")
        pid_b = pid_of(await join(bob, "/admin", token_="bob"))
        assert pid_b
        log.down = True
        await inspect(rt, bob.conn, "41/admin,")  # bob's leave waits first
        await join(mallory, token_="mallory")
        for _ in range(PER_PRINCIPAL + 50):
            assert pid_of(await join(mallory, "/admin", token_="mallory"))
            await inspect(rt, mallory.conn, "41/admin,")
        assert len(rt.closes.pending) == PER_PRINCIPAL + 1
        assert pid_b in {pid for pid, _ in rt.closes.pending}
        assert rt.stats.closes_dropped == 50
        # her sessions given up stay claimable: her claims get a normal connect for the window
        mallory_principal, bob_principal = mallory.conn.principal_for("/"), bob.conn.principal_for("/")
        assert mallory_principal is not None
        assert bob_principal is not None
        assert rt.closes.refuses("any-pid", "any-gen", mallory_principal)
        assert not rt.closes.refuses("any-pid", "any-gen", bob_principal)
        log.down = False
        await until(lambda: not rt.closes.pending, 20)
        assert pid_b in log.closed
        assert pid_b not in log._sessions._by_pid
    finally:
        await rt.aclose()


class _SlowCloses(MemoryLog):
    """A log whose closes wait until let through, counting how many are out at once."""

    def __init__(self) -> None:
        super().__init__()
        self.through = asyncio.Event()
        self.out = self.most = 0

    async def session_note(self, pid: str, action: Note, gen: str, owner: str) -> tuple[str, str]:
        self.out += 1
        self.most = max(self.most, self.out)
        try:
            await self.through.wait()
        finally:
            self.out -= 1
        return await super().session_note(pid, action, gen, owner)


async def test_closes_go_to_the_log_several_at_a_time() -> None:
    """A join/leave flood outran one close call per round trip: they go ``IN_FLIGHT`` at a time."""
    log = _SlowCloses()
    rt = Runtime(Settings.load({}, recovery=True), log)
    try:
        for n in range(3 * IN_FLIGHT):
            rt.closes.add(f"pid{n}", "g", "c", f"user{n % 3}")
        await until(lambda: log.out == IN_FLIGHT, 10)
        log.through.set()
        await until(lambda: not rt.closes.pending, 10)
        assert log.most == IN_FLIGHT
        assert rt.stats.closes_dropped == 0
    finally:
        await rt.aclose()


async def test_closes_still_waiting_at_shutdown_are_tried_once_more() -> None:
    """A close queued while the log did not answer was dropped at shutdown, and its session
    stayed claimable for the window (another process may answer the claim): it is tried once
    more, whether or not the breaker has closed again."""
    log = _RefusesOneClose("")
    rt = Runtime(Settings.load({}, recovery=True), log)
    client = connection(rt)
    await join(client)
    pid = pid_of(await join(client, "/admin"))
    assert pid
    log.down = True
    await inspect(rt, client.conn, "41/admin,")
    await until(lambda: log.down and not rt.guard.available(), 10)  # its first try failed
    assert pid not in log.closed
    log.down = False
    await rt.aclose()
    assert log.closed == [pid]
    assert rt.stats.closes_dropped == 0


async def test_past_the_process_bound_claims_are_refused_for_the_window() -> None:
    """Found by an attack run: past ``MAX_PENDING`` the oldest close waiting was given up, and a
    bystander's session left open was claimed later: recovered, with what the app sent after his
    leave in no log. A close given up that may be anyone's refuses every claim here for the window."""
    rt = Runtime(Settings.load({}, recovery=True), MemoryLog())
    try:
        for n in range(MAX_PENDING):
            rt.closes.add(f"pid{n}", "g", "c", f"user{n % 100}")
        assert not rt.closes.refuses("another", "g", "user1")
        assert rt.closes.refuses("pid0", "g", "user0")  # (being closed)
        rt.closes.add("one-more", "g", "c", "user1")
        assert rt.stats.closes_dropped == 1
        assert "pid0" not in {pid for pid, _ in rt.closes.pending}
        assert rt.closes.refuses("pid0", "g", "user0")  # given up: still refused
        assert rt.closes.refuses("another", "g", "somebody")
    finally:
        await rt.aclose()
