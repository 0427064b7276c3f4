"""The codec, on its own: examples from the spec, round trips, and garbage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from asgi_resume import protocol
from asgi_resume.pipeline import units
from asgi_resume.protocol import ACK, BINARY_EVENT, CONNECT, EVENT, Packet, socketio, stamping
from asgi_resume.protocol.socketio import encode

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
namespaces = st.just("/") | st.from_regex(r"/[a-z][a-z0-9_-]{0,8}", fullmatch=True)
ack_ids = st.none() | st.integers(min_value=0, max_value=10**12)
event_names = st.text(min_size=1, max_size=12)


@st.composite
def events(draw: Any) -> Packet:
    binary = draw(st.booleans())
    args = draw(st.lists(json_values, max_size=3))
    return Packet(
        BINARY_EVENT if binary else EVENT,
        draw(namespaces),
        draw(ack_ids),
        [draw(event_names), *args],
        draw(st.integers(1, 5)) if binary else 0,
    )


@st.composite
def object_events(draw: Any) -> Packet:
    """Events whose first argument is an object: the ones that get stamped."""
    packet = draw(events())
    assert isinstance(packet.data, list)
    return Packet(
        packet.type,
        packet.namespace,
        packet.ack_id,
        [packet.data[0], draw(json_objects), *packet.data[2:]],
        packet.attachments,
    )


def test_parses_the_spec_examples() -> None:
    assert protocol.parse('42["events",{"a":1}]') == Packet(EVENT, "/", None, ["events", {"a": 1}])
    assert protocol.parse('420["go",{"x":1}]') == Packet(EVENT, "/", 0, ["go", {"x": 1}])
    assert protocol.parse('430["ok"]') == Packet(ACK, "/", 0, ["ok"])
    assert protocol.parse('42/admin,7["evt",1]') == Packet(EVENT, "/admin", 7, ["evt", 1])
    assert protocol.parse('451-["evt",{"_placeholder":true,"num":0}]') == Packet(
        BINARY_EVENT, "/", None, ["evt", {"_placeholder": True, "num": 0}], 1
    )
    assert protocol.parse('40{"token":"t"}') == Packet(CONNECT, "/", None, {"token": "t"})
    assert protocol.parse('40/admin,{"token":"t"}') == Packet(CONNECT, "/admin", None, {"token": "t"})
    assert protocol.parse("40") == Packet(CONNECT)
    assert protocol.parse("41/admin,") == Packet(1, "/admin")


def test_other_engineio_packets_are_not_socketio() -> None:
    for frame in ["2", "3", "2probe", "6", '0{"sid":"x"}', "1", "", "4", "47", "4x"]:
        assert protocol.parse(frame) is None


def test_an_event_needs_a_name() -> None:
    assert protocol.parse("42[1,2]") is None
    assert protocol.parse("42[]") is None
    assert protocol.parse('42{"a":1}') is None


@given(events())
def test_event_round_trip(packet: Packet) -> None:
    assert protocol.parse(encode(packet)) == packet


@given(namespaces, ack_ids, st.none() | json_objects, st.sampled_from([CONNECT, ACK, 1, 4]))
def test_other_packets_round_trip(ns: str, ack_id: int | None, data: Any, ptype: int) -> None:
    if ptype == ACK:
        data = [data]
    packet = Packet(ptype, ns, ack_id if ptype == ACK else None, data)
    assert protocol.parse(encode(packet)) == packet


@given(object_events(), st.integers(1, 10**9), st.from_regex(r"[A-Za-z0-9]{8}", fullmatch=True))
def test_stamp_template_sets_fields_and_keeps_the_rest(packet: Packet, seq: int, epoch: str) -> None:
    frame = encode(packet)
    parsed = protocol.parse(frame)
    assert parsed is not None
    template = protocol.stamp_template(frame, parsed, ("seq", "epoch"))
    assert template is not None
    live = protocol.parse(template.live(stamping.stamp_fields(seq, epoch)))
    rendered = units.render([template.head, template.tail], seq, epoch)  # what a replay sends
    assert rendered is not None
    logged = protocol.parse(str(rendered[0]))
    assert live is not None
    assert logged is not None
    expected_arg = {**packet.data[1], "seq": seq, "epoch": epoch}
    assert live.data == [packet.data[0], expected_arg, *packet.data[2:]]
    assert (live.ack_id, live.namespace, live.type, live.attachments) == (
        packet.ack_id,
        packet.namespace,
        packet.type,
        packet.attachments,
    )
    assert logged.data == live.data
    assert logged.ack_id is None
    # fields come first, the object's own members keep their order
    assert list(live.data[1])[:2] == ["seq", "epoch"]


def test_stamp_template_keeps_the_original_bytes() -> None:
    frame = '42 [ "events" , {"message_id": "m", "text":"caf\\u00e9"}, 3]'
    packet = protocol.parse(frame)
    assert packet is not None
    template = protocol.stamp_template(frame, packet, ("seq",))
    assert template is not None
    assert template.live('"seq":1') == '42 [ "events" , {"seq":1,"message_id": "m", "text":"caf\\u00e9"}, 3]'


def test_stamp_template_replaces_a_field_the_app_already_set() -> None:
    frame = '42["e",{"seq":"app","message_id":"m"}]'
    packet = protocol.parse(frame)
    assert packet is not None
    template = protocol.stamp_template(frame, packet, ("seq",))
    assert template is not None
    assert json.loads(template.live('"seq":4')[2:]) == ["e", {"seq": 4, "message_id": "m"}]


def test_stamp_template_needs_an_object() -> None:
    for frame in ['42["e",1]', '42["e"]', '42["e",[{"a":1}]]', '42["e",null]']:
        packet = protocol.parse(frame)
        assert packet is not None
        assert protocol.stamp_template(frame, packet, ("seq",)) is None


@given(st.text(max_size=200))
def test_garbage_never_raises(text: str) -> None:
    for frame in (text, "4" + text, "42" + text, "45" + text, "42/" + text, "451-" + text):
        packet = protocol.parse(frame)
        if packet is not None and packet.is_event:
            protocol.stamp_template(frame, packet, ("seq", "epoch"))


def test_a_unicode_digit_is_no_attachment_count() -> None:
    """Found by hypothesis in CI: '¹' is a digit to str.isdigit, and int() refused it (a ValueError
    out of parse, into the connection)."""
    assert protocol.parse("45¹-" + '["e",{"_placeholder":true,"num":0}]') is None
    assert protocol.parse("45٣-" + '["e",{"_placeholder":true,"num":0}]') is None  # (int() takes it: we do not)


def test_deeply_nested_payloads_are_refused_not_raised() -> None:
    assert protocol.parse('42["e",' + "[" * 100_000 + "]" * 100_000 + "]") is None


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\x1e"), min_size=1).map(lambda s: "4" + s)
        | st.binary(max_size=30),
        max_size=6,
    )
)
def test_payload_round_trip(packets: list[str | bytes]) -> None:
    assert protocol.split_payload(protocol.join_payload(packets)) == packets


@given(st.text(max_size=200))
def test_payload_garbage_never_raises(body: str) -> None:
    protocol.split_payload(body)


@given(events(), st.text(max_size=12))
def test_an_appended_last_argument_round_trips(packet: Packet, offset: str) -> None:
    frame = encode(packet)
    parsed = protocol.parse(protocol.with_last_arg(frame, offset))
    assert parsed is not None
    assert parsed.data == [*packet.data, offset]
    assert (parsed.ack_id, parsed.namespace, parsed.attachments) == (
        packet.ack_id,
        packet.namespace,
        packet.attachments,
    )


@given(namespaces, json_objects, st.text(max_size=12))
def test_a_member_set_in_a_connect_reply(ns: str, data: dict[str, Any], pid: str) -> None:
    """Set first, and set even when the app's reply has a member of that name (found by hypothesis:
    ``{"pid": null}`` used to keep the app's null)."""
    frame = encode(Packet(CONNECT, ns, None, data))
    packet = protocol.parse(frame)
    assert packet is not None
    result = protocol.parse(protocol.with_member(frame, packet, "pid", pid))
    assert result is not None
    assert result.data == {**data, "pid": pid}
    assert result.namespace == ns


@given(events())
def test_the_stdlib_parser_gives_the_same_packets(packet: Packet) -> None:
    """Without orjson (an optional speedup) parsing is the stdlib's: same packets."""
    frame = encode(packet)
    fast = protocol.parse(frame)
    saved, socketio._orjson = socketio._orjson, None  # type: ignore[assignment]
    try:
        assert protocol.parse(frame) == fast == packet
    finally:
        socketio._orjson = saved


def test_a_member_the_app_already_set_is_replaced() -> None:
    frame = '40{"pid":null,"sid":"s"}'
    packet = protocol.parse(frame)
    assert packet is not None
    result = protocol.parse(protocol.with_member(frame, packet, "pid", ""))
    assert result is not None
    assert result.data == {"pid": "", "sid": "s"}


@pytest.mark.parametrize(
    ("frame", "named"),
    [
        ('42["resume-stream",{}]', True),
        ('421234567890123456789["resume-stream",{}]', True),  # an ack id parse() refuses
        ('42/admin,7[ \n"resume-stream"', True),  # broken JSON after the name
        ('42["resume\\u002dstream",{}]', True),  # the name in JSON escapes, as python-socketio reads it
        ('4512-9["\\u0072esume-stream"]', True),
        ('42["resume-streams",{}]', False),
        ('42["resume\\u002dstreams",{}]', False),
        ('42["resume\\u002', False),
        ('42[5,"resume-stream"]', False),
        ('423-["resume-stream",{}]', True),  # python-socketio reads "3-" as attachments, on an EVENT too
        ("45" + "9" * 11 + '-["resume-stream"]', False),  # python-socketio refuses 11 digits of attachments
        ("42" + "1" * 101 + '["resume-stream"]', False),  # ... and an ack id over 100 digits
        ('43["resume-stream"]', False),
    ],
)
def test_names_event_reads_the_name_as_python_socketio_does(frame: str, named: bool) -> None:
    assert protocol.names_event(frame, "resume-stream") is named


def test_declared_attachments_are_read_from_a_head_parse_refuses() -> None:
    assert protocol.declared_attachments('451001-["resume-stream",{}]') == 1001
    assert protocol.declared_attachments("462-/admin,7[") == 2  # a BINARY_ACK's too
    assert protocol.declared_attachments('42["resume-stream",{}]') == 0
    assert protocol.declared_attachments('423-["resume-stream",{}]') == 0  # an EVENT: handed on at once
    assert protocol.declared_attachments("42" + "1" * 30 + '-["resume-stream"]') == 0


@pytest.mark.parametrize(
    ("frame", "ends"),
    [("1", True), ("41", True), ("41/admin,", True), ("40", False), ("42[]", False), ("2", False), ("", False)],
)
def test_ends_connection_is_a_close_or_a_disconnect(frame: str, ends: bool) -> None:
    assert protocol.ends_connection(frame) is ends


@given(st.text())
@example("0" + "[" * 100_000)  # (deeper than json.loads recurses)
@example('0{"sid":"abc","pingInterval":25000}')
def test_an_open_packets_handshake_is_read_from_any_text(frame: str) -> None:
    found = protocol.handshake(frame)
    assert found is None or (frame.startswith("0") and isinstance(found, dict))


def test_the_packet_type_is_read_as_python_engineio_reads_it() -> None:
    assert protocol.packet_type("5x") == 5  # whatever follows
    assert protocol.packet_type("\uff15") == 5  # int() takes any Unicode digit
    assert protocol.packet_type("") is None
    assert protocol.packet_type("b") is None


@pytest.mark.parametrize(
    ("frame", "awaited"),
    [
        ('451-["x",{"_placeholder":true,"num":0}]', 1),
        ("461-/admin,7[]", 1),  # an ack's too
        ('45["x",{}]', 0),  # no count: python-socketio waits on, taking every later message for one
        ('45["events", {"mes', None),  # it cannot decode it: it waits for nothing (found by the fuzz test)
        ('42["x"]', None),
    ],
)
def test_the_attachments_python_socketio_waits_for_are_read_as_it_reads_them(frame: str, awaited: int | None) -> None:
    assert protocol.attachments_awaited(frame) == awaited
