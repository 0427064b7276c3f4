"""What a process knows of the entries its live connections logged lately (asgi_resume.log.recent)."""

from __future__ import annotations

from asgi_resume.log import StreamKey
from asgi_resume.log.base import COPY_WINDOW_MS, Entry
from asgi_resume.log.recent import MAX_KEYS, RecentEntries

KEY = StreamKey("p", "/", "", "m")


def logged(*digests: str) -> list[Entry]:
    return [Entry(digest, ["head", "tail"]) for digest in digests]


def test_copies_of_the_entries_after_a_cursor_match_as_a_prefix() -> None:
    recent = RecentEntries()
    recent.learned(KEY, "e1", [1, 2, 3], logged("a", "b", "c"), 1000)
    assert recent.after(KEY, "e1", 1)
    assert not recent.after(KEY, "e1", 3)
    assert recent.matched(KEY, "e1", 1, ["b", "c"], 1000) == 2
    assert recent.matched(KEY, "e1", 1, ["b", "c", "d"], 1000) == 2  # d is not known: the log numbers it
    assert recent.matched(KEY, "e1", 1, ["c"], 1000) == 0  # the entry after the cursor is b, not c
    assert recent.matched(KEY, "e1", 0, ["a", "x", "c"], 1000) == 1


def test_nothing_matches_in_another_epoch_or_after_the_copy_window() -> None:
    recent = RecentEntries()
    recent.learned(KEY, "e1", [1, 2], logged("a", "b"), 1000)
    assert recent.matched(KEY, "e2", 0, ["a"], 1000) == 0
    assert recent.matched(KEY, "e1", 0, ["a"], 1000 + COPY_WINDOW_MS + 1) == 0
    recent.learned(KEY, "e2", [1], logged("z"), 1000)  # a new epoch replaces what was known
    assert recent.matched(KEY, "e1", 0, ["a"], 1000) == 0
    assert recent.matched(KEY, "e2", 0, ["z"], 1000) == 1
    recent.forget(KEY)
    assert recent.matched(KEY, "e2", 0, ["z"], 1000) == 0


def test_only_contiguous_entries_are_kept() -> None:
    recent = RecentEntries()
    recent.learned(KEY, "e1", [1, 2], logged("a", "b"), 1000)
    recent.learned(KEY, "e1", [5], logged("e"), 1000)  # 3 and 4 were logged by another worker: a new run
    assert recent.matched(KEY, "e1", 4, ["e"], 1000) == 1
    assert recent.matched(KEY, "e1", 0, ["a"], 1000) == 0
    recent.learned(KEY, "e1", [7, -6], logged("g", "f"), 1000)  # not contiguous: remembered as nothing
    assert recent.matched(KEY, "e1", 6, ["g"], 1000) == 0
    recent.learned(KEY, "e1", [5], logged("e"), 1000)  # a copy of one kept: nothing new
    assert recent.matched(KEY, "e1", 4, ["e"], 1000) == 1


def test_it_is_bounded() -> None:
    recent = RecentEntries(max_entries=4)
    for seq in range(1, 101):
        recent.learned(KEY, "e1", [seq], logged(f"d{seq}"), 1000)
    assert recent.matched(KEY, "e1", 99, ["d100"], 1000) == 1
    assert recent.matched(KEY, "e1", 1, ["d2"], 1000) == 0  # long gone
    for i in range(MAX_KEYS + 10):
        recent.learned(StreamKey("p", "/", "", f"s{i}"), "e", [1], logged("x"), 1000)
    assert len(recent._keys) == MAX_KEYS
