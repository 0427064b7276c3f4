"""A fuzzer (hypothesis) against the codec, the inbound and outbound pipelines, and a live connection.

Malformed Engine.IO/Socket.IO frames both ways, text and binary, huge and deeply nested: nothing
raises (and nothing reaches the middleware's own catch-all), frames that are not stream frames
pass unchanged and in order, and the connection stays usable.

The budget here is small; a longer run is one command:
    ASGI_RESUME_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py
Any input that ever broke something is kept below as an @example.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from asgi_resume import protocol
from asgi_resume.config import Settings
from asgi_resume.pipeline.connection import Connection
from asgi_resume.pipeline.inbound import inspect
from asgi_resume.pipeline.outbound import Outbound
from asgi_resume.pipeline.runtime import Runtime
from tests.support.app import emit_tokens, make_app, make_sio
from tests.support.raw import RawClient
from tests.support.server import serve

EXAMPLES = int(os.environ.get("ASGI_RESUME_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
stream_args = st.fixed_dictionaries(
    {"message_id": st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans())},
    optional={"seq": json_values, "epoch": json_values, "done": json_values, "data": json_values},
)


@st.composite
def frames(draw: Any) -> str | bytes:
    """Frames that look like Socket.IO, broken in every way: the fuzzer's vocabulary."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return draw(st.text(max_size=64))
    head = "4" + draw(st.sampled_from("0123456789")) + draw(st.sampled_from(["", "1-", "3-", "99999-", "x-"]))
    head += draw(st.sampled_from(["", "/admin,", "/", "/a?b=1,", "/nope"]))
    head += draw(st.sampled_from(["", "0", "12", "9" * 30]))
    body = draw(
        st.one_of(
            st.builds(lambda name, arg: json.dumps([name, arg]), st.sampled_from(["events", "resume-stream", "x"]),
                      st.one_of(stream_args, json_values)),
            json_values.map(json.dumps),
            st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
            st.integers(1, 3000).map(lambda depth: '["events",' + "{\"a\":" * depth + "1" + "}" * depth + "]"),
            st.text(max_size=40),
        )
    )  # fmt: skip
    cut = draw(st.integers(0, 3))
    return head + (body[: len(body) // 2] if cut == 0 else body)


def runtime() -> Runtime:
    return Runtime(Settings.load({}, recovery=True))


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.ERROR, logger="asgi_resume")
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors  # the middleware's catch-alls were never needed


@FUZZ
@given(st.lists(frames(), max_size=12))
@example(['42["events",{"message_id":-9223372036854775809}]'])  # orjson made this a float
@example(["451-" + json.dumps(["events", {"message_id": "m", "b": {"_placeholder": True, "num": 0}}]), "2", "3"])
def test_inbound_frames_never_raise(no_errors: None, items: list[str | bytes]) -> None:
    import anyio

    async def run() -> None:
        rt = runtime()
        conn = Connection({"type": "websocket", "headers": [], "query_string": b""}, 0)
        for item in items:
            if isinstance(item, str):
                await inspect(rt, conn, item)

    anyio.run(run)


@FUZZ
@given(st.lists(frames(), max_size=12))
def test_outbound_frames_pass_in_order_and_never_raise(no_errors: None, items: list[str | bytes]) -> None:
    import anyio

    async def run() -> list[Any]:
        rt = runtime()
        outbound = Outbound(rt, Connection({"type": "websocket", "headers": []}, 0))
        for item in items:
            outbound.feed(item)
        out = await outbound.flush()
        return out + await outbound.flush()

    out = anyio.run(run)
    # every frame is still there, in order: unchanged, or stamped (stream frames) with the rest kept
    assert len(out) <= len(items)  # (a binary header still waiting for its attachments is held)
    for original, sent in zip(items, out, strict=False):
        if original == sent:
            continue
        assert isinstance(original, str)
        assert isinstance(sent, str)
        packet, stamped = protocol.parse(original), protocol.parse(sent)
        assert packet is not None
        assert stamped is not None
        assert isinstance(stamped.data[1], dict)
        assert "seq" in stamped.data[1]
        rest = {k: v for k, v in stamped.data[1].items() if k not in ("seq", "epoch")}
        assert rest == {k: v for k, v in packet.data[1].items() if k not in ("seq", "epoch")}


def keeps_the_connection(frame: str | bytes) -> bool:
    """Frames after which python-engineio keeps a connection: Engine.IO messages (text that is not
    an Engine.IO packet ends it, with or without the middleware), but not a goodbye (DISCONNECT)
    nor a CONNECT again in the same namespace."""
    return isinstance(frame, bytes) or (frame[:1] == "4" and frame[:2] not in ("40", "41", "44"))


@settings(max_examples=max(10, EXAMPLES // 20), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(frames().filter(keeps_the_connection), min_size=1, max_size=20))
def test_a_live_connection_survives_garbage(no_errors: None, items: list[str | bytes]) -> None:
    import anyio

    async def run() -> None:
        sio = make_sio()
        app = make_app(sio)
        async with serve(app) as url:
            client = await RawClient(url, auth={"token": "alice"}).connect()
            await emit_tokens(sio, "alice", "m", 1, 2)
            await client.wait_seqs("m", 2)
            for item in items:
                await client.send(item)
            answer = await client.request("resume-stream", {"message_id": "m", "last_seq": 0}, ack_id=7)
            # (refused where python-socketio would take it for an attachment of a binary packet sent before)
            assert answer["ok"] is True or answer["error"] in ("rate_limited", "bad_request")
            await emit_tokens(sio, "alice", "m", 3, 3)  # and the live stream goes on
            await client.wait_for(lambda f: isinstance(f, str) and "tok3" in f)
            await client.close()

    anyio.run(run)
