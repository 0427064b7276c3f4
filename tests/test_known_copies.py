"""Copies stamped from what the process learned (asgi_resume.log.recent) agree with the log.

Pipeline-level (``Outbound.feed``/``flush``, as tests/test_pipeline.py). Each case was found by an
attack on the first version of these copies: they stamped differently from the log, or hid a
takeover from a held tab.
"""

from __future__ import annotations

from typing import Any

import pytest

from asgi_resume.config import Settings
from asgi_resume.log import Entry, StreamKey
from asgi_resume.log.recent import RecentEntries
from asgi_resume.runtime import Runtime
from tests.test_pipeline import events, send, tab, token

pytestmark = pytest.mark.anyio


def seqs(sent: list[Any]) -> list[int]:
    return [e.get("seq", 0) for e in events(sent)]


async def test_an_out_of_order_copy_is_not_learned_as_the_entry_it_stepped_over(backend: dict[str, Any]) -> None:
    """Two tabs get t2 late (another worker's emit, say) and t5 not yet. The first one's append of
    [t4, t2, t6] gets [4, -2, 6]: t2 came out of order (unstamped), 5 was passed over. That is no
    run of entries to learn: the second tab's same batch must get the log's answer too, and t5,
    when it comes, is one entry."""
    rt = Runtime(Settings.load({}, **backend))
    await rt.ready()
    try:
        leader, one, two = tab(rt), tab(rt), tab(rt)
        for outbound in (leader, one, two):
            await outbound.flush()  # (the CONNECT replies)
        assert seqs(await send(leader, *(token(i) for i in range(1, 7)))) == [1, 2, 3, 4, 5, 6]
        for outbound in (one, two):
            assert seqs(await send(outbound, token(1))) == [1]
            assert seqs(await send(outbound, token(3))) == [3]  # 2 passed over
        assert seqs(await send(one, token(4), token(2), token(6))) == [4, 0, 6]  # the log's answer
        second = seqs(await send(two, token(4), token(2), token(6)))
        late_one, late_two = seqs(await send(one, token(5))), seqs(await send(two, token(5)))
        key = next(iter(leader.session.cursors))
        logged = await rt.log.replay(key, 0, None, "reader")
        assert (second, late_one, late_two, logged.last_seq) == ([4, 0, 6], [0], [0], 6)
    finally:
        await rt.log.aclose()


async def test_copies_seen_after_a_hold_began_tell_the_held_tab_it_was_taken_over() -> None:
    """A held tab learns it was taken over from its own appends (another connection used the key
    after the hold began). Copies of entries another tab logged before the hold must not be stamped
    from what was learned then: they would touch nothing, and the hold would go on."""
    clock = [1000.0]
    rt = Runtime(Settings.load({}))
    rt.log.clock = lambda: clock[0]  # type: ignore[attr-defined]
    leader, other, held = tab(rt), tab(rt), tab(rt)
    for outbound in (leader, other, held):
        await outbound.flush()
        assert seqs(await send(outbound, token(0))) == [1]
    clock[0] += 0.1
    assert seqs(await send(leader, token(1), token(2))) == [2, 3]  # logged (and learned) before the hold
    clock[0] += 0.01
    held.held = True
    since_ms = rt.log.now_ms()
    clock[0] += 0.01
    assert seqs(await send(other, token(1), token(2))) == [2, 3]  # the other tab follows, after the hold began
    clock[0] += 0.01
    assert seqs(await send(held, token(1), token(2))) == [2, 3]  # the held tab's late copies
    assert held.session.taken_over(since_ms, rt.settings.hold_idle)


def test_a_run_of_entries_learned_in_one_append_is_kept_within_the_bound() -> None:
    recent = RecentEntries(max_entries=4)
    key = StreamKey("p", "/", "", "m")
    recent.learned(key, "e1", list(range(1, 1001)), [Entry(f"d{i}", []) for i in range(1, 1001)], 1000)
    assert len(recent._keys[key].digests) <= 2 * 4
    assert recent.matched(key, "e1", 998, ["d999", "d1000"], 1000) == 2  # the newest are the ones kept
