"""Frames emitted while nobody is connected: the hold keeps the app-side connection and logs them.

Both logs; real uvicorn, real sockets killed mid-stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import anyio
import pytest

from asgi_resume.config import Settings
from asgi_resume.log import StreamKey
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.resume import ResumeRequest
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.transport.engineio import EngineIOSessions
from asgi_resume.transport.holds import Hold, Holds, HoldState
from asgi_resume.transport.websocket import WebSocketConnection
from tests.support.app import PacedStream, chat_event, content_by_seq, faults, make_app, make_sio, room_of
from tests.support.logs import watch_logs
from tests.support.raw import RawClient
from tests.support.server import serve
from tests.support.waits import until
from tests.test_pipeline import ALICE, send, tab, token

KEY = StreamKey(ALICE, "/", "", "m")

pytestmark = pytest.mark.anyio
FAST = {"hold_grace": 0.2}


def sid_of(sio: Any, token: str) -> str:
    return next(iter(sio.manager.get_participants("/", room_of(token))))[0]


async def test_reload_mid_stream_resumes_with_nothing_missing(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, **backend, **FAST)
    stream = PacedStream(sio, "alice", "reload", 150)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        old_sid = sid_of(sio, "alice")
        emitter = asyncio.create_task(stream.run())
        await tab.wait_seqs("reload", 40)
        await tab.kill()  # the page reloads: for a moment nobody is connected
        gone_at = stream.sent
        await stream.wait_sent(gone_at + 30)

        reloaded = await RawClient(url, auth={"token": "alice"}).connect()
        seen = content_by_seq(tab.events())
        last_seq, epoch = max(seen), tab.events()[-1]["epoch"]
        answer = await reloaded.request(
            "resume-stream", {"message_id": "reload", "last_seq": last_seq, "epoch": epoch}, ack_id=1
        )
        await emitter
        await reloaded.wait_for(lambda f: isinstance(f, str) and '"done":true' in f)

        assert answer["ok"] is True
        assert answer["gap"] is False
        assert answer["replayed"] >= 30  # emitted while no client was connected
        view = seen | content_by_seq(reloaded.events())
        assert [view[s] for s in sorted(view)] == stream.expected
        assert sorted(view) == list(range(1, stream.total + 2))
        # the app heard of the first connection's end once the reloaded tab had taken the stream
        # over (it resumed it, and logs it live): not at the end of the stream
        assert stream.done_at is not None
        assert await sio.disconnects.wait(old_sid) < stream.done_at
        assert app.runtime.stats.holds_started == 1
        await reloaded.close()


async def test_the_hold_answers_the_apps_pings(backend: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """With pings every 0.3 s, a held connection would die 0.6 s after its client if nobody answered them.

    The stream goes on for about 2.5 s after the client left: four ping rounds the hold answers.
    (Intervals a loaded machine meets by a wide margin: the client must answer them too, before.)
    """
    sio = make_sio(ping_interval=0.3, ping_timeout=0.3)
    app = make_app(sio, **backend, **FAST)
    stream = PacedStream(sio, "alice", "pings", 100, pace=0.025)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        sid = sid_of(sio, "alice")
        with caplog.at_level(logging.INFO, logger="asgi_resume"):
            emitter = asyncio.create_task(stream.run())
            await tab.wait_seqs("pings", 5)
            await tab.kill()
            await emitter
            assert await sio.disconnects.wait(sid) >= stream.done_at  # type: ignore[operator]
        messages = [r.getMessage() for r in caplog.records]
        assert any("holding the connection" in m for m in messages)
        assert any("hold of" in m and "streams done" in m for m in messages)
        late = await RawClient(url, auth={"token": "alice"}).connect()
        answer = await late.request("resume-stream", {"message_id": "pings", "last_seq": 0}, ack_id=1)
        assert answer["replayed"] == 101
        assert answer["done"] is True
        await late.close()


async def test_no_hold_without_a_stream_in_flight(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, **backend, hold_grace=0.2)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        sid = sid_of(sio, "alice")
        await sio.emit("events", {"chat_id": "c", "data": {"type": "presence"}}, room=room_of("alice"))  # no stream
        await tab.wait_for(lambda f: isinstance(f, str) and "presence" in f)
        await tab.kill()
        await sio.disconnects.wait(sid)
        assert app.runtime.stats.holds_started == 0


def title(message_id: str) -> dict[str, Any]:
    """What open-webui sends after an answer's done frame: not a done frame itself."""
    return {"chat_id": "chat-1", "message_id": message_id, "data": {"type": "chat:title", "data": "A title"}}


async def test_a_close_just_after_done_is_held_for_what_follows_the_answer(backend: dict[str, Any]) -> None:
    """Found by a run against open-webui: a tab that dropped on seeing the done frame was not held,
    and the title, tags, follow-ups and chat:active=false that followed reached no log (the reload
    got ``gap: false`` without them). It is held for ``hold_grace``."""
    sio = make_sio()
    app = make_app(sio, **backend, hold_grace=1.0)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        sid = sid_of(sio, "alice")
        await sio.emit("events", chat_event("m", 1), room=room_of("alice"))
        await sio.emit("events", chat_event("m", 2, done=True), room=room_of("alice"))
        await tab.wait_seqs("m", 2)
        with watch_logs() as logs:
            await tab.kill()
            await logs.wait_for("holding the connection")
        await sio.emit("events", title("m"), room=room_of("alice"))
        await sio.disconnects.wait(sid)  # the grace passed
        late = await RawClient(url, auth={"token": "alice"}).connect()
        answer = await late.request("resume-stream", {"message_id": "m", "last_seq": 2}, ack_id=1)
        assert (answer["replayed"], answer["gap"]) == (1, False)
        assert "A title" in str(late.frames)
        await late.close()


async def test_what_follows_a_done_frame_does_not_put_the_stream_back_in_flight(backend: dict[str, Any]) -> None:
    """Found by a run against open-webui: a title after the done frame put the stream back in
    flight, and a tab closed later was held until the stream went idle (19-30 s), so the app
    learned late that it left. Held, it is held for the grace after the last frame."""
    sio = make_sio()
    app = make_app(sio, **backend, hold_grace=0.5, hold_idle=30)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        sid = sid_of(sio, "alice")
        await sio.emit("events", chat_event("m", 1), room=room_of("alice"))
        await sio.emit("events", chat_event("m", 2, done=True), room=room_of("alice"))
        await sio.emit("events", title("m"), room=room_of("alice"))
        await tab.wait_seqs("m", 3)
        assert not app.runtime.stats.holds_started
        await tab.kill()
        await sio.disconnects.wait(sid, timeout=10)  # the grace at most, not hold_idle


@pytest.mark.parametrize(
    "ending",
    [
        {"chat_id": "c", "message_id": "m", "data": {"type": "chat:tasks:cancel"}},
        {"chat_id": "c", "message_id": "m", "data": {"type": "chat:message:error", "data": {"error": {}}}},
        {"chat_id": "c", "message_id": "m", "data": {"type": "chat:active", "data": {"active": False}}},
    ],
)
async def test_cancel_and_error_paths_end_the_hold(backend: dict[str, Any], ending: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, **backend, **FAST)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        sid = sid_of(sio, "alice")
        await sio.emit("events", chat_event("m", 1), room=room_of("alice"))
        await tab.wait_seqs("m", 1)
        with watch_logs() as logs:
            await tab.kill()
            await logs.wait_for("holding the connection")  # the middleware sees the socket close first
        ended_at = asyncio.get_running_loop().time()
        await sio.emit("events", ending, room=room_of("alice"))
        assert await sio.disconnects.wait(sid) >= ended_at
        assert app.runtime.stats.holds_active == 0


async def test_a_stream_that_goes_idle_ends_the_hold(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, **backend, hold_idle=0.3, hold_grace=0.1)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        sid = sid_of(sio, "alice")
        await sio.emit("events", chat_event("never-done", 1), room=room_of("alice"))
        await tab.wait_seqs("never-done", 1)
        await tab.kill()
        await sio.disconnects.wait(sid, timeout=10)
        assert app.runtime.stats.holds_started == 1
        assert app.runtime.stats.holds_active == 0


async def test_hold_max_bounds_a_hold(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, **backend, hold_max=0.3)
    stream = PacedStream(sio, "alice", "endless", 2000, pace=0.01)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        sid = sid_of(sio, "alice")
        emitter = asyncio.create_task(stream.run())
        await tab.wait_seqs("endless", 3)
        await tab.kill()
        await sio.disconnects.wait(sid, timeout=10)
        assert stream.done_at is None  # ended by hold_max, mid-stream
        emitter.cancel()


async def test_holds_are_bounded(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, **backend, max_holds=1)
    async with serve(app) as url:
        alice = await RawClient(url, auth={"token": "alice"}).connect()
        bob = await RawClient(url, auth={"token": "bob"}).connect()
        bob_sid = sid_of(sio, "bob")
        for token, client in (("alice", alice), ("bob", bob)):
            await sio.emit("events", chat_event(f"s-{token}", 1), room=room_of(token))
            await client.wait_seqs(f"s-{token}", 1)
        with watch_logs() as logs:
            await alice.kill()
            await logs.wait_for("holding the connection")
            await bob.kill()
            await sio.disconnects.wait(bob_sid)  # let go at once: no room for a second hold
        assert app.runtime.stats.holds_refused == 1
        assert logs.count("MAX_HOLDS") == 1
        await sio.emit("events", chat_event("s-alice", 2, done=True), room=room_of("alice"))


async def test_the_app_closing_a_held_connection_ends_the_hold(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, **backend)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        sid = sid_of(sio, "alice")
        await sio.emit("events", chat_event("m", 1), room=room_of("alice"))
        await tab.wait_seqs("m", 1)
        with watch_logs() as logs:
            await tab.kill()
            await logs.wait_for("holding the connection")
            await sio.disconnect(sid)
            await logs.wait_for("the app closed the connection")
        assert app.runtime.stats.holds_active == 0


async def test_frames_lost_past_hold_max_come_back_as_a_gap(backend: dict[str, Any]) -> None:
    """Past hold_max nobody logs the stream; whoever picks it up later starts a new epoch."""
    sio = make_sio()
    app = make_app(sio, **backend, hold_max=0.2)
    stream = PacedStream(sio, "alice", "lost", 3000, pace=0.004)
    async with serve(app) as url:
        tab = await RawClient(url, auth={"token": "alice"}).connect()
        sid = sid_of(sio, "alice")
        emitter = asyncio.create_task(stream.run())
        await tab.wait_seqs("lost", 10)
        old = tab.events()[-1]
        with watch_logs() as logs:
            await tab.kill()
            await sio.disconnects.wait(sid)  # the hold ran out mid-stream
            lost_from = stream.sent
            await stream.wait_sent(lost_from + 20)  # emitted while nobody was there at all
            back = await RawClient(url, auth={"token": "alice"}).connect()
            await back.wait_seqs("lost", 3)
        assert logs.count("hold_max") == 1
        answer = await back.request(
            "resume-stream", {"message_id": "lost", "last_seq": old["seq"], "epoch": old["epoch"]}, ack_id=1
        )
        assert answer["ok"] is True
        assert answer["gap"] is True  # not a silent hole
        assert answer["epoch"] != old["epoch"]
        emitter.cancel()
        await back.close()


async def test_a_tab_that_stays_keeps_the_history_when_another_leaves(backend: dict[str, Any]) -> None:
    """The leader leaving mid-stream is no loss when another tab follows the stream: no new epoch."""
    sio = make_sio()
    app = make_app(sio, **backend, hold_max=0.1)  # the first tab's hold runs out mid-stream
    stream = PacedStream(sio, "alice", "kept", 200, pace=0.003)
    async with serve(app) as url:
        first = await RawClient(url, auth={"token": "alice"}).connect()
        await sio.emit("events", chat_event("kept", 0), to=sid_of(sio, "alice"))  # the first tab leads
        await first.wait_seqs("kept", 1)
        second = await RawClient(url, auth={"token": "alice"}).connect()
        emitter = asyncio.create_task(stream.run())
        await second.wait_seqs("kept", 10)
        first_sid = sid_of(sio, "alice")
        await first.close()
        await sio.disconnects.wait(first_sid)
        assert stream.done_at is None  # it left as leader, in flight
        await emitter
        await second.wait_for(lambda f: isinstance(f, str) and '"done":true' in f)
        assert len({e["epoch"] for e in second.events()}) == 1
        assert second.seqs("kept") == list(range(2, 203))
        await second.close()


async def reload_and_resume(url: str, victim: RawClient, stream: PacedStream, emitter: asyncio.Task[None]) -> None:
    """alice reloads after ``victim`` was held: her resume says no gap, and she has every token once."""
    reloaded = await RawClient(url, auth={"token": "alice"}).connect()
    seen = content_by_seq(victim.events())
    answer = await reloaded.request(
        "resume-stream",
        {"message_id": "answer", "last_seq": max(seen), "epoch": victim.events()[-1]["epoch"]},
        ack_id=1,
    )
    assert answer["gap"] is False
    await emitter
    await reloaded.wait_for(lambda f: isinstance(f, str) and '"done":true' in f)
    view = seen | content_by_seq(reloaded.events())
    assert [view[s] for s in sorted(view)] == stream.expected
    await reloaded.close()


async def test_one_user_cannot_take_every_hold(backend: dict[str, Any]) -> None:
    """Mallory drops five connections with streams in flight: two at most are held; the victim still is."""
    sio = make_sio()
    app = make_app(sio, **backend, max_holds=4, max_holds_per_principal=2, hold_grace=0.2)
    hers = PacedStream(sio, "mallory", "flood", 2000, pace=0.01)
    victims = PacedStream(sio, "alice", "answer", 150, pace=0.01)
    async with serve(app) as url:
        mallory = [await RawClient(url, auth={"token": "mallory"}).connect() for _ in range(5)]
        victim = await RawClient(url, auth={"token": "alice"}).connect()
        flood = asyncio.create_task(hers.run())
        emitter = asyncio.create_task(victims.run())
        for tab in mallory:
            await tab.wait_seqs("flood", 3)
            await tab.kill()
        await victim.wait_seqs("answer", 20)
        assert app.runtime.stats.holds_active <= 2  # (a hold ends when a live tab of hers takes over)
        before = app.runtime.stats.holds_started
        await victim.kill()
        gone_at = victims.sent
        await victims.wait_sent(gone_at + 20)
        assert app.runtime.stats.holds_started == before + 1  # the victim was held
        await reload_and_resume(url, victim, victims, emitter)
        flood.cancel()


async def test_many_users_connections_dropped_without_streams_do_not_take_every_hold(backend: dict[str, Any]) -> None:
    """Found by attack (recovery on): 100 principals x 10 connections dropped with no stream took
    the 1,000 holds; alice, dropped mid-stream, was not held and lost 63 of 201 events. When every
    hold is taken, a connection with a stream in flight takes the room of the oldest without."""
    sio = make_sio()
    app = make_app(sio, **backend, recovery=True, max_holds=3, hold_grace=0.2)
    victims = PacedStream(sio, "alice", "answer", 150, pace=0.01)
    async with serve(app) as url:
        victim = await RawClient(url, auth={"token": "alice"}).connect()
        for i in range(3):  # three users' connections, held for their recoverable sessions
            other = await RawClient(url, auth={"token": f"m{i}"}).connect()
            await other.kill()
        stats = app.runtime.stats
        await until(lambda: stats.holds_active == 3, 10)
        emitter = asyncio.create_task(victims.run())
        await victim.wait_seqs("answer", 20)
        await victim.kill()
        gone_at = victims.sent
        await victims.wait_sent(gone_at + 20)
        assert (stats.holds_started, stats.holds_refused) == (4, 0)  # the victim was held
        assert stats.holds_active <= 3
        await reload_and_resume(url, victim, victims, emitter)


async def test_a_connection_whose_hold_ended_takes_nothing_over() -> None:
    """Found by a run against open-webui (4 of 4 runs, memory log): tab C's hold ended (tab A took
    its stream over), and the frames python-engineio still had queued for C went through it as a
    live connection's while the app was told C left. A had dropped meanwhile: its hold read C's
    append as a takeover and ended, and what was emitted until the reload joined reached no log
    (the resume said gap: false with 19 tokens missing). A connection whose client left takes
    nothing over, during its hold or after it."""
    runtime = Runtime(Settings.load({}))
    scope = {"type": "websocket", "path": "/socket.io/", "query_string": b"EIO=4&transport=websocket", "headers": []}

    async def nothing(*args: Any) -> Any:
        return None

    c = WebSocketConnection(
        nothing, runtime, EngineIOSessions(), Holds(runtime.settings, runtime.stats), scope, nothing, nothing
    )
    c.conn.connecting("/", ALICE)
    c.outbound.feed('40{"sid":"c"}')
    a = tab(runtime)
    await send(a, token(1))
    await send(c.outbound, token(1))
    c.outbound.held = True  # C's client left: held (see WebSocketConnection._start_hold)
    await send(a, token(2))  # A takes the stream over...
    c.hold.run = nothing  # type: ignore[method-assign]  # ...and C's hold ends
    await c._held({"type": "websocket.disconnect", "code": 1006})
    await send(c.outbound, token(3, to="c"))  # queued for C before the app learned it left
    assert runtime.log._streams[StreamKey(ALICE, "/", "", "m")].by == a.conn.id  # (A's hold would see C's)


class DroppedTogether:
    """Two tabs of alice, A and C, that both got frame 1 and then dropped at once with one hold per
    user: A is held, C's hold is refused. Each step runs in a millisecond of its own (``tick``)."""

    def __init__(self, **settings: Any) -> None:
        self.runtime = runtime = Runtime(Settings.load({}, max_holds_per_principal=1, **settings))
        self.clock = 1000.0
        runtime.log.clock = lambda: self.clock  # type: ignore[attr-defined]  # (the memory log's)
        self.holds = Holds(runtime.settings, runtime.stats)
        self.a, self.c = self._websocket("a"), self._websocket("c")

    def _websocket(self, sid: str) -> WebSocketConnection:
        scope = {
            "type": "websocket",
            "path": "/socket.io/",
            "query_string": b"EIO=4&transport=websocket",
            "headers": [],
        }

        async def nothing(*args: Any) -> Any:
            return None

        async def client_left() -> Any:
            return {"type": "websocket.disconnect", "code": 1006}

        c = WebSocketConnection(nothing, self.runtime, EngineIOSessions(), self.holds, scope, client_left, nothing)
        c.conn.connecting("/", ALICE)
        c.outbound.feed('40{"sid":"' + sid + '"}')
        c.accepted = True
        return c

    def tick(self) -> None:
        self.clock += 1

    async def drop(self) -> None:
        a, c = self.a, self.c
        await send(a.outbound, token(1))
        await send(c.outbound, token(1))
        self.tick()
        assert a.hold.start(self.runtime.log.now_ms(), "a")  # (see WebSocketConnection._start_hold)
        a.outbound.held = True
        async with anyio.create_task_group() as tg:
            c._tg = tg
            assert (await c._receive())["type"] == "websocket.disconnect"  # no room for its hold
        assert c.hold.state is HoldState.NOT_HELD
        assert self.runtime.stats.holds_refused == 1
        self.tick()

    def a_taken_over(self) -> bool:
        settings = self.runtime.settings
        return self.a.conn.taken_over(self.a.hold._started_ms, settings.hold_idle, settings.hold_grace)


async def test_a_connection_whose_hold_was_refused_takes_nothing_over() -> None:
    """Found by a run against open-webui (2-4 of 6 runs, memory log, one hold per user): a user's
    twelve tabs dropped at once; A was held, C's hold was refused. The frames python-engineio still
    had queued for C went through it as a live connection's just after A's hold began: A's hold read
    that as a takeover and ended, and what followed reached no log (the resume said gap: false with
    382-397 of 600 tokens missing). A connection whose client left takes nothing over, held or not."""
    tabs = DroppedTogether()
    await tabs.drop()
    await send(tabs.c.outbound, token(2, to="c"))  # queued for C before the app learned it left
    tabs.tick()
    await send(tabs.a.outbound, token(2))
    assert not tabs.a_taken_over()


async def test_a_refused_tabs_repair_takes_nothing_over() -> None:
    """Found by review: the app emits a frame over ASGI_RESUME_MAX_FRAME_BYTES to both; neither logs
    it, and A's stream starts a new epoch. C had it queued: its repair (on C's behalf) reached the
    log after A's hold began and was dated then, as C using the stream. A's hold read it as a
    takeover and ended, flagging nothing, and what the app emitted after reached no log. A repair
    is no connection using the stream."""
    tabs = DroppedTogether(max_frame_bytes=1000)
    await tabs.drop()
    big = token(2, content="x" * 1000)  # in no log
    await send(tabs.a.outbound, big)
    await send(tabs.a.outbound, token(3))  # A's stream starts a new epoch
    tabs.tick()
    await send(tabs.c.outbound, big)  # queued for C before the app learned it left
    await tabs.runtime.repairs.repair()  # C's repair (what the background task does)
    tabs.tick()
    await send(tabs.a.outbound, token(4))  # A, held, goes on logging
    assert not tabs.a_taken_over()


async def test_a_resume_that_waited_while_its_client_left_is_not_read() -> None:
    """Found by review: C's resume request, sent just before it dropped, waited its turn (a reconnect
    storm); then it was read from the log on C's behalf, which the log dated then, as C using the
    stream: A's hold read that as a takeover and ended. Nobody is there to answer: it is not read."""
    tabs = DroppedTogether()
    await tabs.drop()
    epoch = tabs.a.conn.cursors[KEY][0]
    tabs.c.outbound.feed(ResumeRequest("/", 7, "m", 0, epoch))  # sent by C's client just before it left
    assert await tabs.c.outbound.flush() == []  # (no answer: nobody to send it to)
    tabs.tick()
    await send(tabs.a.outbound, token(2))
    assert not tabs.a_taken_over()


async def test_a_users_tabs_dropped_at_once_past_the_hold_limit_leave_the_held_one_logging(
    backend: dict[str, Any],
) -> None:
    """Eight tabs of alice drop at once with one hold per user: one is held, the others are
    refused; what they still had queued must not end the hold (see the test above)."""
    sio = make_sio()
    app = make_app(sio, **backend, max_holds_per_principal=1, hold_grace=0.2)
    stream = PacedStream(sio, "alice", "answer", 600, pace=0.0005)
    async with serve(app) as url:
        tabs = [await RawClient(url, auth={"token": "alice"}).connect() for _ in range(12)]
        emitter = asyncio.create_task(stream.run())
        for t in tabs:
            await t.wait_seqs("answer", 20)
        await asyncio.gather(*(t.kill() for t in tabs))
        gone_at = stream.sent
        await stream.wait_sent(gone_at + 60)  # nobody is connected meanwhile
        stats = app.runtime.stats
        assert stats.holds_active == 1, faults(app)  # the held tab still holds
        victim = max(tabs, key=lambda t: max(content_by_seq(t.events())))
        await reload_and_resume(url, victim, stream, emitter)


async def test_a_connection_without_a_principal_is_never_held(backend: dict[str, Any]) -> None:
    sio = make_sio()
    app = make_app(sio, **backend, recovery=True)
    async with serve(app) as url:
        anonymous = await RawClient(url).connect()
        await sio.emit("events", {"note": 1})
        await anonymous.wait_for(lambda f: isinstance(f, str) and '"note":1' in f)
        (sid,) = [sid for sid, _ in sio.manager.get_participants("/", None)]
        await anonymous.kill()
        await sio.disconnects.wait(sid)
        assert app.runtime.stats.holds_started == 0


async def test_two_held_tabs_do_not_end_each_others_holds(backend: dict[str, Any]) -> None:
    """Both tabs of a laptop drop at once: a held connection takes nothing over from another."""
    sio = make_sio()
    app = make_app(sio, **backend, hold_grace=0.2)
    stream = PacedStream(sio, "alice", "m", 300, pace=0.01)
    async with serve(app) as url:
        first = await RawClient(url, auth={"token": "alice"}).connect()
        second = await RawClient(url, auth={"token": "alice"}).connect()
        sids = [sid for sid, _ in sio.manager.get_participants("/", room_of("alice"))]
        emitter = asyncio.create_task(stream.run())
        await first.wait_seqs("m", 30)
        # both drop between two tokens (else one tab's next frame, logged before its drop is seen,
        # would take the other's streams over: a hold that ends, rightly)
        gone = await stream.pause()
        await first.wait_seqs("m", gone)
        await second.wait_seqs("m", gone)
        await first.kill()
        await second.kill()
        await until(lambda: app.runtime.stats.holds_started == 2, 10)
        await stream.resume()
        await stream.wait_sent(gone + 40)  # nobody is connected meanwhile
        assert not [sid for sid in sids if sid in sio.disconnects.at]  # both still held
        reloaded = await RawClient(url, auth={"token": "alice"}).connect()
        seen = content_by_seq(first.events()) | content_by_seq(second.events())
        request = {"message_id": "m", "last_seq": max(seen), "epoch": first.events()[-1]["epoch"]}
        answer = await reloaded.request("resume-stream", request, ack_id=1)
        assert answer["gap"] is False
        await emitter
        await reloaded.wait_for(lambda f: isinstance(f, str) and '"done":true' in f)
        view = seen | content_by_seq(reloaded.events())
        assert [view[s] for s in sorted(view)] == stream.expected
        for sid in sids:  # the reloaded tab took the stream over: the app learns of both departures
            await sio.disconnects.wait(sid)
        await reloaded.close()


def _holds(**settings: Any) -> Holds:
    runtime = Runtime(Settings.load({}, **settings))
    return Holds(runtime.settings, runtime.stats)


def _conn(*, active: bool = False, idle: bool = False, just_done: bool = False) -> Connection:
    conn = Connection({"type": "websocket"}, 0)
    key = StreamKey(ALICE, "/", "", "m")
    now = time.monotonic()
    if active:
        conn.in_flight[key] = now
    if idle:
        conn.in_flight[key] = now - 60  # never done, and idle past hold_idle
    if just_done:
        conn.finished[key] = now
    return conn


async def test_a_stream_idle_past_hold_idle_gives_a_hold_no_right_to_room() -> None:
    """Found by attack: holds made room by ``Connection.in_flight``, which keeps streams that never
    said done: two principals' connections with such a stream, idle for long, took both holds, and
    a user dropped mid-stream was refused one (141 of 201 frames). Read as a hold reads them."""
    holds = _holds(max_holds=2, hold_idle=1)
    for owner in ("m1", "m2"):
        assert holds.admit(Hold(holds, _conn(idle=True), None), owner)
    dave = Hold(holds, _conn(active=True), None)
    assert holds.admit(dave, "dave")
    assert sum(hold.ending for hold in holds._active) == 1


async def test_a_hold_for_a_streams_grace_is_not_ended_for_another_users_stream() -> None:
    """Found by attack: bob, dropped at his done frame, was held for the grace (his title to
    come); mallory's drop mid-stream took his room as if he held no stream, and the title reached
    no log while his resume said gap: false."""
    holds = _holds(max_holds=1, hold_grace=3)
    bob = Hold(holds, _conn(just_done=True), None)
    assert holds.admit(bob, "bob")
    assert not holds.admit(Hold(holds, _conn(active=True), None), "mallory")
    assert not bob.ending
