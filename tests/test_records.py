"""The record table says what a dict of the same records says: every record back as
given (values no writer of ours makes included), every change applied (in the overlay
or merged into the columns), every one-column pass equal to its pass over the records."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.engine.model import Record
from syncd.engine.records import RecordTable

STATUSES = ("synced", "invalid", "skipped", "quota", "error", "changing", "pending")
PATHS = st.text(st.sampled_from("ab/é😀\"\\ "), min_size=1, max_size=6)
INTS = st.one_of(st.integers(-3, 3), st.integers(-(2**70), 2**70))
HASHES = st.one_of(
    st.none(),
    st.sampled_from(["a" * 64, "0" * 64, "A" * 64, "ab", "zz" * 32, ""]),
    st.binary(min_size=32, max_size=32).map(bytes.hex),
)
TIMES = st.one_of(st.none(), st.floats(allow_nan=False), st.just(math.nan), st.integers(0, 9))


@st.composite
def records(draw: st.DrawFn, path: str | None = None) -> Record:
    return Record(
        path if path is not None else draw(PATHS),
        draw(st.sampled_from(STATUSES)),
        draw(st.one_of(st.none(), st.sampled_from(["file-a", "file-b", "file-c"]))),
        draw(st.one_of(st.none(), st.sampled_from(["user_data", "batch"]))),
        draw(st.one_of(st.none(), st.text(max_size=3))),
        draw(INTS),
        draw(INTS),
        draw(INTS),
        draw(HASHES),
        draw(TIMES),
        draw(st.one_of(st.none(), st.text(max_size=3))),
    )


def same(a: Record, b: Record) -> bool:
    """Equal field by field, NaN equal to itself, and of the same types."""
    fields = Record.__slots__
    return all(
        type(getattr(a, f)) is type(getattr(b, f))
        and (getattr(a, f) == getattr(b, f) or getattr(a, f) != getattr(a, f))
        for f in fields
    )


def by_path(recs: list[Record]) -> dict[str, Record]:
    return {r.path: r for r in recs}


def agrees(table: RecordTable, want: dict[str, Record]) -> None:
    assert list(table) == sorted(want) and len(table) == len(want)
    for path, rec in want.items():
        assert path in table and same(table[path], rec)
    assert all(same(a, want[p]) for p, a in table.items())
    assert "no such path" not in table and table.get("no such path") is None
    assert table.file_ids() == {r.file_id for r in want.values() if r.file_id}
    assert table.paths_holding({"file-a"}) == {p for p, r in want.items() if r.file_id == "file-a"}
    assert sorted(table.statuses()) == sorted((p, r.status, r.file_id) for p, r in want.items())
    pick = {"synced", "quota"}
    assert [r.path for r in table.with_status(pick)] == sorted(
        p for p, r in want.items() if r.status in pick
    )
    held = {(r.size, r.purpose) for r in want.values() if r.file_id and r.purpose}
    assert table.held_sizes() == held
    inodes = {0, 1, 2**70}
    assert table.paths_with_inodes(inodes) == {p for p, r in want.items() if r.inode in inodes}
    synced = [
        (r.path, r.file_id, r.purpose, r.size, r.sha256, r.uploaded_at)
        for r in sorted(want.values(), key=lambda r: r.path)
        if r.status == "synced" and r.file_id
    ]
    got = list(table.synced())
    assert [g[:5] for g in got] == [s[:5] for s in synced]


@settings(max_examples=150, deadline=None)
@given(st.lists(records(), max_size=12), st.data())
def test_a_table_holds_what_a_dict_holds_through_every_change(
    first: list[Record], data: st.DataObject
) -> None:
    want = by_path(first)
    table = RecordTable.of(want.values())
    agrees(table, want)
    for _ in range(3):
        paths = data.draw(st.lists(st.one_of(PATHS, st.sampled_from(sorted(want) or ["a"]))))
        changes: dict[str, Record | None] = {
            p: data.draw(st.one_of(st.none(), records(p))) for p in paths
        }
        before, kept = table, dict(want)
        table = table.updated(changes)
        if data.draw(st.booleans()):
            table = table.compacted()  # as it is past a few hundred changes
        for p, rec in changes.items():
            if rec is None:
                want.pop(p, None)
            else:
                want[p] = rec
        agrees(table, want)
        agrees(before, kept)  # the table read before the change is as it was


def test_a_record_read_is_the_readers_own() -> None:
    rows = [("a", "synced", "file-a", None, "a", 1, 2, 3, None, None, None)]
    table = RecordTable.from_rows(rows).updated({"b": Record("b", "error", reason="io")})
    for path in ("a", "b"):
        table[path].status = "pending"
        next(r for r in table.values() if r.path == path).reason = "changed"
    assert [(r.status, r.reason) for r in table.values()] == [("synced", None), ("error", "io")]


def test_rows_in_another_order_are_sorted() -> None:
    rows = [
        ("b", "synced", "file-b", None, "b", 1, 2, 3, None, None, None),
        ("a", "error", None, "batch", None, 1, 2, 3, "f" * 64, 1.5, "why"),
    ]
    table = RecordTable.from_rows(rows)
    assert list(table) == ["a", "b"]
    assert table["a"] == Record("a", "error", None, "batch", None, 1, 2, 3, "f" * 64, 1.5, "why")
