"""Which frames belong to a stream and which finish it."""

from __future__ import annotations

import json

import pytest

from asgi_resume.config import DEFAULT_DONE
from asgi_resume.paths import parse_done_rules, parse_path
from asgi_resume.pipeline.rules import StreamRules


def rules(events: frozenset[str] | None = None, path: str = "message_id", done: str = DEFAULT_DONE) -> StreamRules:
    return StreamRules(events, parse_path(path), parse_done_rules(done))


def frame(name: str, arg: object) -> str:
    return "42" + json.dumps([name, arg])


def envelope(kind: str, data: object) -> dict[str, object]:
    return {"chat_id": "c", "message_id": "m", "data": {"type": kind, "data": data}}


@pytest.mark.parametrize(
    ("arg", "done"),
    [
        (envelope("chat:completion", {"content": "x"}), False),
        (envelope("chat:completion", {"done": True}), True),
        (envelope("chat:completion", {"error": {"content": "boom"}}), True),
        (envelope("status", {"description": "searching", "done": True}), False),  # mid-stream status
        (envelope("chat:tasks:cancel", {}), True),
        ({"chat_id": "c", "message_id": "m", "data": {"type": "chat:tasks:cancel"}}, True),
        (envelope("chat:message:error", {"error": {"content": "x"}}), True),
        (envelope("chat:active", {"active": True}), False),
        (envelope("chat:active", {"active": False}), True),
        ({"message_id": "m", "delta": "x"}, False),
        ({"message_id": "m", "done": True}, True),
        ({"message_id": "m", "done": 0}, False),
    ],
)
def test_open_webui_done_shapes(arg: dict[str, object], done: bool) -> None:
    classified = rules().classify(frame("events", arg))
    assert classified is not None
    assert classified.stream == "m"
    assert classified.done is done


def test_frames_without_a_stream_id_are_not_streams() -> None:
    r = rules()
    assert r.classify(frame("events", {"chat_id": "c"})) is None
    assert r.classify(frame("events", "message_id")) is None
    assert r.classify(frame("events", {"message_id": ""})) is None
    assert r.classify(frame("events", {"message_id": True})) is None
    assert r.classify(frame("events", {"message_id": {"a": 1}})) is None
    assert r.classify('43[{"message_id":"m"}]') is None  # an ack is not a stream frame
    assert r.classify("2") is None


def test_integer_ids_and_nested_paths() -> None:
    assert rules().classify(frame("e", {"message_id": 42})).stream == "42"  # type: ignore[union-attr]
    nested = rules(path="data.stream")
    assert nested.classify(frame("e", {"data": {"stream": "s1"}})).stream == "s1"  # type: ignore[union-attr]
    assert nested.classify(frame("e", {"stream": "s1"})) is None


def test_event_filter() -> None:
    r = rules(events=frozenset({"events"}))
    assert r.classify(frame("events", {"message_id": "m"})) is not None
    assert r.classify(frame("other", {"message_id": "m"})) is None


def test_custom_done_rules() -> None:
    r = rules(done="phase=final,state.code=3&state.ok=false")

    def done(arg: dict[str, object]) -> bool:
        found = r.classify(frame("e", {"message_id": "m", **arg}))
        assert found is not None
        return found.done

    assert done({"phase": "final"})
    assert not done({"phase": "draft"})
    assert done({"state": {"code": 3, "ok": False}})
    assert not done({"state": {"code": 3, "ok": 0}})
