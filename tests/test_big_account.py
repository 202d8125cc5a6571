"""What keeps a big account cheap must not change what is said: the state's records
kept in memory agree with the database, and a mapping published in O(changes) is the
very file a fresh publish writes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.api.models import RemoteFile
from syncd.engine.model import LocalFile, Note
from syncd.engine.publish import Publisher
from syncd.engine.state import State, Synced

HEAD = {"project": "p", "owner": "o", "base_url": "http://x"}


def _fresh(state_dir: Path) -> dict[str, tuple[object, ...]]:
    """The records as a new State reads them from the file."""
    other = State(state_dir)
    try:
        return {p: tuple(vars_of(r)) for p, r in other.records().items()}
    finally:
        other.close()


def vars_of(rec: object) -> list[object]:
    return [getattr(rec, f) for f in rec.__slots__]  # type: ignore[attr-defined]


def _upload(state: State, path: str, fid: str, size: int = 3) -> None:
    local = LocalFile(path, size, 1, 2, purpose="user_data", sha256="a" * 64)
    state.record_uploaded(local, RemoteFile(fid, size, 100, path, "user_data"), replaces=None)


def test_kept_records_follow_every_write_and_other_connections(tmp_path: Path) -> None:
    state = State(tmp_path)
    try:
        _upload(state, "a.txt", "file-a")
        _upload(state, "b.txt", "file-shared")
        _upload(state, "c.txt", "file-shared")
        assert set(state.records()) == {"a.txt", "b.txt", "c.txt"}  # kept from here on
        state.note_many([Note("d.txt", "quota", "waiting"), Note("a.txt", "error", "io")])
        state.detach("a.txt")
        state.forget("b.txt")
        state.record_deleted("file-shared", "c.txt", forget_path=False)
        mine = {p: tuple(vars_of(r)) for p, r in state.records().items()}
        assert mine == _fresh(tmp_path)
        assert mine["c.txt"][2] is None and "b.txt" not in mine
        # A commit by another connection (a tool, a test) is seen, not hidden by the copy.
        with sqlite3.connect(tmp_path / State.FILE) as db:
            db.execute("UPDATE files SET reason = 'edited' WHERE path = 'd.txt'")
        assert state.records()["d.txt"].reason == "edited"
        # A table read before a write stays what it was read as.
        before = state.records()
        state.forget("d.txt")
        assert "d.txt" in before and "d.txt" not in state.records()
        assert before["d.txt"].reason == "edited" and len(before) == 3
        assert [row[0] for row in state.synced()] == []
        _upload(state, "é.txt", "file-e")
        _upload(state, "z.txt", "file-z")
        assert [row[0] for row in state.synced()] == ["z.txt", "é.txt"]
    finally:
        state.close()


def test_a_failed_transaction_leaves_the_kept_records_as_the_file(tmp_path: Path) -> None:
    state = State(tmp_path)
    try:
        _upload(state, "a.txt", "file-a")
        state.records()
        with pytest.raises(RuntimeError), state._tx() as db:
            db.execute("DELETE FROM files WHERE path = 'a.txt'")
            state._dirty.add("a.txt")
            raise RuntimeError("mid-transaction")
        assert {p: tuple(vars_of(r)) for p, r in state.records().items()} == _fresh(tmp_path)
        assert "a.txt" in state.records()
    finally:
        state.close()


_row = st.tuples(
    st.integers(0, 30).map(lambda i: f"d{i % 3}/f{i:02d}.txt"),
    st.sampled_from(["file-1", "file-2", "file-3", "file-4"]),
    st.sampled_from(["user_data", "batch"]),
    st.integers(0, 5),
)


def _rows(spec: list[tuple[str, str, str, int]]) -> list[Synced]:
    by_path = {p: (p, fid, purpose, size, None if size == 0 else "b" * 64, 1.5) for p, fid,
               purpose, size in spec}  # fmt: skip
    return [by_path[p] for p in sorted(by_path)]


def _said(path: Path) -> tuple[dict[str, object], list[str]]:
    text = path.read_text("utf-8")
    data = json.loads(text)
    data.pop("generated_at")
    return data, text.splitlines()[1:]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(_row, max_size=12), min_size=1, max_size=5), st.data())
def test_each_publish_writes_what_a_fresh_publisher_would(
    tmp_path_factory: pytest.TempPathFactory, versions: list[list[tuple[str, str, str, int]]],
    data: st.DataObject,
) -> None:  # fmt: skip
    where = tmp_path_factory.mktemp("pub")
    kept = Publisher(where / "mapping.json")
    for n, spec in enumerate(versions):
        rows = _rows(spec)
        confirmed = set(data.draw(st.sets(st.sampled_from(["file-1", "file-2", "file-3"]))))
        stores = {r[0]: {"vs_1": "completed"} for r in rows if r[3] == 5}
        kept.publish(lambda rows=rows: rows, confirmed, HEAD, n, lambda s=stores: s)
        fresh = where / f"fresh-{n}.json"
        assert Publisher(fresh).publish(lambda rows=rows: rows, confirmed, HEAD, 0,
                                        lambda s=stores: s)  # fmt: skip
        assert _said(kept.path) == _said(fresh)
        # Another process with the same rows leaves the file as it is.
        before = kept.path.stat().st_mtime_ns, kept.path.stat().st_ino
        assert not Publisher(kept.path).publish(lambda rows=rows: rows, confirmed, HEAD, 0,
                                                lambda s=stores: s)  # fmt: skip
        assert (kept.path.stat().st_mtime_ns, kept.path.stat().st_ino) == before


def test_a_mapping_edited_by_hand_is_rendered_again_not_copied(tmp_path: Path) -> None:
    path = tmp_path / "mapping.json"
    rows = _rows([("a.txt", "file-1", "user_data", 1), ("b.txt", "file-2", "user_data", 2)])
    pub = Publisher(path)
    assert pub.publish(lambda: rows, {"file-1", "file-2"}, HEAD, 1)
    path.write_text(path.read_text().replace('"file-1"', '"file-10"'))
    changed = [rows[0], (*rows[1][:3], 7, *rows[1][4:])]
    # Nor patched: a patch copies the lines of the file its publisher wrote.
    assert pub.patch({"b.txt": changed[1]}, {"file-1", "file-2"}, HEAD, 2) is None
    assert pub.publish(lambda: changed, {"file-1", "file-2"}, HEAD, 2)
    files = json.loads(path.read_text())["files"]
    assert files["a.txt"]["file_id"] == "file-1" and files["b.txt"]["bytes"] == 7


_odd_row = st.tuples(
    st.sampled_from(["a.txt", 'q"uote.txt', "b\\slash.txt", "é.txt", "d0/x.txt", "d0/y.txt",
                     "d1/日本.txt", "z.txt", "a.txt.bak"]),
    st.sampled_from(["file-1", "file-2", "file-3", "file-4"]),
    st.sampled_from(["user_data", "batch"]),
    st.integers(1, 4),
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_odd_row, max_size=9), min_size=2, max_size=6), st.data())
def test_a_patched_mapping_says_what_a_fresh_publisher_writes(
    tmp_path_factory: pytest.TempPathFactory, versions: list[list[tuple[str, str, str, int]]],
    data: st.DataObject,
) -> None:  # fmt: skip
    """``patch`` of the paths that changed (and of some that did not) leaves the file a
    fresh publisher of the whole would write: lines replaced, inserted, removed."""
    where = tmp_path_factory.mktemp("patch")
    kept = Publisher(where / "mapping.json")
    ids = ["file-1", "file-2", "file-3"]
    rows = _rows(versions[0])
    confirmed = set(data.draw(st.sets(st.sampled_from(ids))))
    kept.publish(lambda: rows, confirmed, HEAD, 0)
    for n, spec in enumerate(versions[1:], start=1):
        before = {r[0]: r for r in rows}
        rows = _rows(spec)
        now = {r[0]: r for r in rows}
        confirmed = set(data.draw(st.sets(st.sampled_from(ids))))
        asked = {p for p in before.keys() | now.keys() if before.get(p) != now.get(p)}
        asked |= set(data.draw(st.sets(st.sampled_from(sorted(before.keys() | now.keys()))))
                     if before or now else set())  # fmt: skip
        # What the confirmed ids changed is asked for too, as the remote view tells it.
        asked |= {p for p, r in {**before, **now}.items() if r[1] in ids}
        assert kept.patch({p: now.get(p) for p in asked}, confirmed, HEAD, n) is not None
        fresh = where / f"fresh-{n}.json"
        Publisher(fresh).publish(lambda rows=rows: rows, confirmed, HEAD, 0)
        assert _said(kept.path) == _said(fresh)
