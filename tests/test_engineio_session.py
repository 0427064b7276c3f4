"""One object per Engine.IO session, whichever transport carries it: without a server."""

from __future__ import annotations

import pytest

from asgi_resume import protocol
from asgi_resume.config import Settings
from asgi_resume.log.memory import MemoryLog
from asgi_resume.pipeline.runtime import Runtime
from asgi_resume.transport.engineio import EngineIOSession, EngineIOSessions

pytestmark = pytest.mark.anyio
OPEN = '0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}'


def polling_session(registry: EngineIOSessions) -> EngineIOSession:
    rt = Runtime(Settings.load({}, recovery=True), MemoryLog())
    return EngineIOSession(rt, registry, {"type": "http", "query_string": b"EIO=4&transport=polling"}, polling=True)


async def test_the_open_packet_makes_the_session_known_by_its_sid_to_both_transports() -> None:
    registry = EngineIOSessions()
    eio = polling_session(registry)
    assert eio.opened("40") is None  # not an OPEN
    opening = eio.opened(OPEN)
    assert opening is not None
    assert opening["pingTimeout"] == 20000
    assert eio.sid == "abc"
    assert eio.polling is not None
    assert eio.polling.sid == "abc"
    assert registry.get("abc") is eio  # what a websocket upgrading this session continues
    assert eio.opened('0{"sid":"other"}') is None  # a sid once
    assert registry.get("other") is None


async def test_a_session_ends_once_and_only_its_own_sid_is_forgotten() -> None:
    registry = EngineIOSessions()
    eio = polling_session(registry)
    eio.opened(OPEN)
    impostor = polling_session(registry)
    impostor.sid = "abc"  # (a websocket that named a sid the process did not know)
    impostor.ended()
    assert registry.get("abc") is eio
    eio.ended()
    assert registry.get("abc") is None
    eio.ended()  # (the websocket's end after a CLOSE: nothing more to do)


async def test_a_close_from_the_client_says_it_left_on_purpose() -> None:
    eio = polling_session(EngineIOSessions())
    eio.opened(OPEN)
    assert await eio.client_text("40" + '{"token":"alice"}') is None  # (the app gets it as it is)
    assert "/" in eio.conn.recovery
    assert await eio.client_text(protocol.EIO_CLOSE) is None
    assert eio.conn.recovery["/"].left_cleanly
    assert eio.polling is not None
    assert eio.polling.goodbye


async def test_the_attachments_of_a_request_answered_here_never_reach_the_app() -> None:
    eio = polling_session(EngineIOSessions())
    request = await eio.client_text('451-["resume-stream",{"_placeholder":true,"num":0}]')
    assert request is not None
    assert not isinstance(request, str)
    assert request.error  # refused: a resume request carries no binary data
    assert eio.client_binary()  # its attachment is dropped
    assert not eio.client_binary()  # the next binary frame is the app's


def test_a_session_is_not_forgotten_while_a_websocket_of_it_is_open() -> None:
    """Found by attack: an upgraded session untouched for the registry's idle time was forgotten
    while its websocket went on; a failed second probe then let python-engineio read the session's
    POSTs again, and they passed here unread (an uncounted CONNECT's reply bound alice). A session
    forgotten while python-engineio may have it binds nothing any more."""
    registry = EngineIOSessions(idle_s=0.0)  # (everything is idle at once)
    eio = polling_session(registry)
    eio.websockets = 1
    assert eio.opened(OPEN) is not None
    sid = eio.sid
    assert sid is not None
    assert registry.get(sid) is eio
    registry.add("other", polling_session(EngineIOSessions()))
    assert registry.get(sid) is eio
    assert not eio.conn.overflowed
    eio.websockets = 0
    assert registry.get(sid) is None
    assert eio.conn.overflowed
