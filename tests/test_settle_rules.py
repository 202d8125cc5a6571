"""The settle queue's timing rules, property-tested: when a path may be released."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syncd.daemon.settle_rules import Entry, Timing, folder_above

times = st.floats(0, 1000, allow_nan=False)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Timing, Entry, float, float | None]:
    settle = draw(st.floats(0.01, 30))
    timing = Timing(settle, settle + draw(st.floats(0, 300)))
    first = draw(times)
    last = first + draw(st.floats(0, 400))
    entry = Entry(first_seen=first, last_event=last, due=0.0, born=draw(st.booleans()),
                  closed=draw(st.booleans()))
    entry.due = timing.due(entry)
    now = last + draw(st.floats(-1, 400))
    age = draw(st.none() | st.floats(0, 100))
    return timing, entry, now, age


@given(cases())
def test_nothing_waits_past_its_deadline(case: tuple[Timing, Entry, float, float | None]) -> None:
    timing, entry, now, age = case
    deadline = entry.first_seen + timing.max_settle_s
    assert entry.due <= deadline
    wait = timing.wait_until(entry, now, age)
    if now >= deadline:
        assert wait is None
    if wait is not None:
        assert wait <= deadline


@given(cases())
def test_a_closed_or_gone_file_goes_at_once(case: tuple[Timing, Entry, float, float | None]
                                            ) -> None:
    timing, entry, now, age = case
    if entry.closed or age is None:
        assert timing.wait_until(entry, now, age) is None


@given(cases())
def test_an_open_file_waits_for_quiet_and_old_timestamps(
        case: tuple[Timing, Entry, float, float | None]) -> None:
    timing, entry, now, age = case
    if entry.closed or age is None or now >= entry.first_seen + timing.max_settle_s:
        return
    wait = timing.wait_until(entry, now, age)
    if now < entry.last_event + timing.settle_s:
        assert wait is not None and wait >= min(entry.last_event + timing.settle_s,
                                                entry.first_seen + timing.max_settle_s)
    elif age >= timing.settle_s:
        assert wait is None
    else:  # quiet, but the file's own timestamps are younger than settle_s
        assert wait is not None and wait > now


def test_a_path_finds_the_folder_it_lies_below() -> None:
    folders = {"a/b", "c"}
    assert folder_above("a/b/x/y.txt", folders) == "a/b"
    assert folder_above("c/z", folders) == "c"
    assert folder_above("a/bx/y", folders) is None
    assert folder_above("a/b", folders) is None
