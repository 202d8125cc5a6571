"""The schedule of account listings while files wait for space (engine/recheck.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syncd.engine.recheck import MAX_SPACE_RECHECK_S, SpaceRecheck


def test_nothing_waiting_means_no_listing() -> None:
    s = SpaceRecheck.starting(60.0).after_run(0, listed=True, now=100.0)
    assert s.due is None and not s.is_due(1e12)


def test_a_listing_that_frees_nothing_doubles_the_interval_up_to_an_hour() -> None:
    s = SpaceRecheck.starting(60.0).after_run(5, listed=True, now=0.0)
    assert s.due == 60.0
    intervals = []
    now = 0.0
    for _ in range(10):
        now = s.due or now
        s = s.taken().after_run(5, listed=True, now=now)
        intervals.append(s.every_s)
    assert intervals[:4] == [120.0, 240.0, 480.0, 960.0]
    assert max(intervals) == MAX_SPACE_RECHECK_S


def test_space_freed_by_anyone_resets_the_interval() -> None:
    s = SpaceRecheck.starting(60.0).after_run(5, listed=True, now=0.0)
    s = s.taken().after_run(5, listed=True, now=60.0)
    assert s.every_s == 120.0
    s = s.taken().after_run(4, listed=True, now=180.0)
    assert (s.every_s, s.due) == (60.0, 240.0)


def test_a_targeted_sync_arms_but_never_postpones() -> None:
    s = SpaceRecheck.starting(60.0).after_run(3, listed=False, now=10.0)
    assert s.due == 70.0
    assert s.after_run(3, listed=False, now=50.0).due == 70.0


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.floats(0, 10)), max_size=40))
def test_while_files_wait_a_listing_is_always_due_within_an_hour(
    runs: list[tuple[int, bool, float]],
) -> None:
    s, now = SpaceRecheck.starting(60.0), 0.0
    for waiting, listed, step in runs:
        now += step
        s = s.after_run(waiting, listed=listed, now=now)
        if waiting:
            assert s.due is not None and s.due <= now + MAX_SPACE_RECHECK_S
        else:
            assert s.due is None
