"""The change log: what changed since a generation, or None when that is not known."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syncd.engine.changes import MOST_KEYS, ChangeLog

_step = st.one_of(
    st.sets(st.sampled_from("abcdefgh"), max_size=4),  # a write touching these keys
    st.none(),  # a change of everything
)


@given(st.lists(_step, max_size=30), st.data())
def test_since_is_exactly_what_changed_or_unknown(steps: list[set[str] | None],
                                                  data: st.DataObject) -> None:  # fmt: skip
    log = ChangeLog()
    history: list[set[str] | None] = []  # what changed at generation i + 1
    for generation, step in enumerate(steps, start=1):
        if step is None:
            log.everything(generation)
        else:
            log.noted(generation, step)
        history.append(step)
    now = len(steps)
    asked = data.draw(st.integers(0, now + 2))
    got = log.since(asked)
    after = history[asked:] if asked <= now else None
    if after is None or any(step is None for step in after):
        assert got is None
    else:
        # Small logs are never cut: the answer is known, and exact.
        assert got == set().union(*after)


def test_a_reader_too_far_behind_is_told_to_read_everything() -> None:
    log = ChangeLog()
    log.noted(1, {"first"})
    for generation in range(2, MOST_KEYS + 3):
        log.noted(generation, {f"k{generation}"})
    assert log.since(0) is None  # "first" was forgotten
    assert log.since(MOST_KEYS + 1) == {f"k{MOST_KEYS + 2}"}
