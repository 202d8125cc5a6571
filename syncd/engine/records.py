"""The records the state keeps in memory: one table of columns, not an object per path.

Held as a dict of ``Record`` objects, a path costs about 700 bytes: the dict's entry, the
object, its three integers and float, its hash as 64 characters, its strings. Here it
costs its path, about 100 bytes of columns and a pointer to its id and name (the same
string objects the remote view holds). A ``Record`` is made when one is asked for, and
not kept. The passes a run makes over every record that need one field or two (the ids,
the statuses, the inodes) read those columns alone.

A table never changes: a write to the state makes a new one (``updated``) that shares
the old one's columns and adds the written rows to an overlay, so a run reads one table
from start to end while it writes, and a write costs its own rows. Rows are sorted by
path, in code point order (SQLite's order of UTF-8 text).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Container, Iterable, Iterator, Mapping
from itertools import pairwise, repeat
from typing import Any, cast

from syncd.engine.model import Record, Status

# (path, file_id, purpose, bytes, sha256, uploaded_at) of a synced record.
Synced = tuple[str, str, str | None, int, str | None, float | None]
# A record as the state's row: the fields of Record, in order (RECORD_COLUMNS).
Row = tuple[Any, ...]

# A row's form: its hash is absent or in the hash column, or the row did not fit the
# columns (a value no writer of ours makes: an integer past 64 bits, a hash that is not
# 64 lowercase hex digits) and is kept whole, as read.
_NO_HASH, _HASH, _WHOLE = 0, 1, 2
_HASH_BYTES = 32


class _Words:
    """The statuses and purposes, one string each, shared by a table and the tables
    made from it; code 0 is None. Only added to, so an older table's codes hold."""

    def __init__(self) -> None:
        self.words: list[str | None] = [None]
        self.codes: dict[str | None, int] = {None: 0}

    def code(self, word: str | None) -> int:
        code = self.codes.get(word)
        if code is None:
            code = self.codes[word] = len(self.words)
            self.words.append(word)
        return code


class _Columns:
    """A table's rows, column by column, as they are filled."""

    def __init__(self, words: _Words) -> None:
        self.words = words
        self.paths: list[str] = []
        self.status = array("H")
        self.purpose = array("H")
        self.file_id: list[str | None] = []
        self.name: list[str | None] = []
        self.size = array("q")
        self.mtime_ns = array("q")
        self.inode = array("q")
        self.uploaded_at = array("d")
        self.sha = bytearray()
        self.form = bytearray()
        self.reasons: dict[str, str] = {}
        self.whole: dict[str, Row] = {}

    def add_rows(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows in ``RECORD_COLUMNS`` order (path, status, file_id, purpose, remote_name,
        size, mtime_ns, inode, sha256, uploaded_at, reason). One loop with its appends
        bound once: a state of 100,000 paths is read this way at every start."""
        paths, file_ids, names = self.paths.append, self.file_id.append, self.name.append
        status, purpose, code = self.status.append, self.purpose.append, self.words.code
        sizes, mtimes, inodes = self.size.append, self.mtime_ns.append, self.inode.append
        ats, forms, sha = self.uploaded_at.append, self.form.append, self.sha
        fromhex, nan, zeros = bytes.fromhex, math.nan, bytes(_HASH_BYTES)
        for row in rows:
            path, st, fid, pur, name, size, mtime_ns, inode, sha256, at, reason = row
            if (
                type(size) is not int
                or type(mtime_ns) is not int
                or type(inode) is not int
                or not (at is None or (type(at) is float and at == at))  # NaN means None here
                or not (sha256 is None or (type(sha256) is str and len(sha256) == 64))
            ):
                self._add_whole(row)
                continue
            start = len(self.paths)
            try:
                sizes(size)
                mtimes(mtime_ns)
                inodes(inode)
                digest = zeros if sha256 is None else fromhex(sha256)
            except (OverflowError, ValueError):
                self._truncate(start)
                self._add_whole(row)
                continue
            if len(digest) != _HASH_BYTES or (sha256 is not None and digest.hex() != sha256):
                self._truncate(start)
                self._add_whole(row)
                continue
            sha += digest
            ats(nan if at is None else at)
            forms(_NO_HASH if sha256 is None else _HASH)
            paths(path)
            status(code(st))
            purpose(code(pur))
            file_ids(fid)
            names(name)
            if reason is not None:
                self.reasons[path] = reason

    def _truncate(self, rows: int) -> None:
        """Drops what a row that did not fit appended to the number columns."""
        del self.size[rows:], self.mtime_ns[rows:], self.inode[rows:]

    def _add_whole(self, row: Row) -> None:
        """A row kept as it is: the number and hash columns hold placeholders for it."""
        path, status, file_id, purpose, name = row[:5]
        self.whole[path] = row
        self.paths.append(path)
        self.status.append(self.words.code(status))
        self.purpose.append(self.words.code(purpose))
        self.file_id.append(file_id)
        self.name.append(name)
        self.size.append(0)
        self.mtime_ns.append(0)
        self.inode.append(0)
        self.uploaded_at.append(math.nan)
        self.sha += bytes(_HASH_BYTES)
        self.form.append(_WHOLE)

    def extend(self, table: RecordTable, start: int, stop: int) -> None:
        """Rows ``start`` to ``stop`` of ``table`` (which shares these words), as they are."""
        if start >= stop:
            return
        cols = table._cols
        self.paths += cols.paths[start:stop]
        self.status += cols.status[start:stop]
        self.purpose += cols.purpose[start:stop]
        self.file_id += cols.file_id[start:stop]
        self.name += cols.name[start:stop]
        self.size += cols.size[start:stop]
        self.mtime_ns += cols.mtime_ns[start:stop]
        self.inode += cols.inode[start:stop]
        self.uploaded_at += cols.uploaded_at[start:stop]
        self.sha += cols.sha[start * _HASH_BYTES : stop * _HASH_BYTES]
        self.form += cols.form[start:stop]


class RecordTable(Mapping[str, Record]):
    """Every path's record, by path. Immutable; thread-safe to read.

    The columns are rebuilt only now and then: the records written since they were
    built are an overlay (path -> row, None for none) until it grows past
    ``_overlay_most`` of them, so a write in a tree of 100,000 paths costs its own rows,
    not a copy of every column (12 ms).
    """

    def __init__(
        self, cols: _Columns | None = None, over: dict[str, Row | None] | None = None,
        size: int | None = None,
    ) -> None:  # fmt: skip
        self._cols = cols or _Columns(_Words())
        self._over: dict[str, Row | None] = over or {}
        self._len = len(self._cols.paths) if size is None else size

    @classmethod
    def of(cls, records: Iterable[Record]) -> RecordTable:
        """A table of these records (any order; one per path)."""
        cols = _Columns(_Words())
        cols.add_rows(_fields(r) for r in sorted(records, key=_path))
        return cls(cols)

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> RecordTable:
        """A table of the state's rows, in ``RECORD_COLUMNS`` order, sorted by path."""
        cols = _Columns(_Words())
        cols.add_rows(rows)
        table = cls(cols)
        paths = cols.paths
        if any(a >= b for a, b in pairwise(paths)):
            return cls.of(table.values())  # not sorted as said: sorted here
        return table

    def updated(self, changes: Mapping[str, Record | None]) -> RecordTable:
        """This table with each changed path's new record (None: the path has none)."""
        over, size = dict(self._over), self._len
        for path, rec in changes.items():
            size += (rec is not None) - (path in self)
            over[path] = None if rec is None else _fields(rec)
        table = RecordTable(self._cols, over, size)
        return table.compacted() if len(over) > _overlay_most(len(self._cols.paths)) else table

    def compacted(self) -> RecordTable:
        """The same records, the overlay merged into new columns: the rows between its
        paths are copied as slices, in one pass."""
        if not self._over:
            return self
        old = self._cols
        cols = _Columns(old.words)
        cols.reasons = {p: r for p, r in old.reasons.items() if p not in self._over}
        cols.whole = {p: r for p, r in old.whole.items() if p not in self._over}
        start = 0
        for path in sorted(self._over):
            at = bisect_left(old.paths, path, start)
            cols.extend(self, start, at)
            start = at + 1 if at < len(old.paths) and old.paths[at] == path else at
            if (row := self._over[path]) is not None:
                cols.add_rows((row,))
        cols.extend(self, start, len(old.paths))
        return RecordTable(cols)

    # The Mapping.

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[str]:
        if not self._over:
            return iter(self._cols.paths)
        paths = self._cols.paths
        return (paths[i] if row is None else row[0] for i, row in self._merged())

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        if path in self._over:
            return self._over[path] is not None
        return self._find(path) is not None

    def __getitem__(self, path: str) -> Record:
        if path in self._over:
            row = self._over[path]
            if row is None:
                raise KeyError(path)
            return Record(*row)
        at = self._find(path)
        if at is None:
            raise KeyError(path)
        return self._row(at)

    def values(self) -> Iterator[Record]:  # type: ignore[override]
        return (self._row(i) if row is None else Record(*row) for i, row in self._merged())

    def items(self) -> Iterator[tuple[str, Record]]:  # type: ignore[override]
        return ((rec.path, rec) for rec in self.values())

    def __repr__(self) -> str:
        return f"RecordTable({len(self)} paths, {len(self._over)} in the overlay)"

    # Passes over one column or two, no Record made for a row of the columns.

    def file_ids(self) -> set[str]:
        """Every id a path's record holds."""
        cols, over = self._cols, self._over
        if not over:
            every = set(cols.file_id)
            every.discard(None)
            return cast(set[str], every)
        pairs = zip(cols.paths, cols.file_id, strict=True)
        ids = {f for p, f in pairs if f is not None and p not in over}
        return ids | {row[2] for row in over.values() if row is not None and row[2]}

    def paths_holding(self, ids: Container[str]) -> set[str]:
        cols, over = self._cols, self._over
        pairs = zip(cols.paths, cols.file_id, strict=True)
        found = {p for p, f in pairs if f is not None and f in ids and p not in over}
        return found | {p for p, row in over.items() if row is not None and row[2] in ids}

    def statuses(self) -> Iterator[tuple[str, Status, str | None]]:
        """(path, status, file_id) of every row, by path."""
        cols, words = self._cols, self._cols.words.words
        for i, row in self._merged():
            if row is None:
                yield cols.paths[i], cast(Status, words[cols.status[i]]), cols.file_id[i]
            else:
                yield row[0], row[1], row[2]

    def with_status(self, wanted: Container[str]) -> Iterator[Record]:
        """The records whose status is one of ``wanted``, by path."""
        cols, words = self._cols, self._cols.words.words
        codes = {c for c, w in enumerate(words) if w is not None and w in wanted}
        for i, row in self._merged():
            if row is None:
                if cols.status[i] in codes:
                    yield self._row(i)
            elif row[1] in wanted:
                yield Record(*row)

    def held_sizes(self) -> set[tuple[int, str]]:
        """(size, purpose) of every record that holds an id and has a purpose."""
        cols, over, words = self._cols, self._over, self._cols.words.words
        rows = zip(cols.paths, cols.size, cols.purpose, cols.file_id, cols.form, strict=True)
        pairs = {
            (size, cast(str, words[p]))
            for path, size, p, f, form in rows
            if f is not None and p and form != _WHOLE and path not in over
        }
        return pairs | {(r[5], r[3]) for r in self._loose_rows() if r[2] and r[3]}

    def paths_with_inodes(self, inodes: Container[int]) -> set[str]:
        cols, over = self._cols, self._over
        rows = zip(cols.paths, cols.inode, cols.form, strict=True)
        found = {p for p, ino, form in rows if ino in inodes and form != _WHOLE and p not in over}
        return found | {r[0] for r in self._loose_rows() if r[7] in inodes}

    def synced(self) -> Iterator[Synced]:
        """(path, file_id, purpose, bytes, sha256, uploaded_at) of each synced record
        that holds an id, by path."""
        cols, words = self._cols, self._cols.words.words
        synced = cols.words.codes.get("synced")
        for i, row in self._merged():
            if row is None and cols.form[i] == _WHOLE:
                row = cols.whole[cols.paths[i]]
            if row is not None:
                if row[1] == "synced" and row[2] is not None:
                    yield (row[0], row[2], row[3], row[5], row[8], row[9])
                continue
            if cols.status[i] != synced or (fid := cols.file_id[i]) is None:
                continue
            at = cols.uploaded_at[i]
            sha = cols.sha[i * _HASH_BYTES : (i + 1) * _HASH_BYTES].hex() if cols.form[i] else None
            yield (cols.paths[i], fid, words[cols.purpose[i]], cols.size[i], sha,
                   None if at != at else at)  # fmt: skip

    # Rows.

    def _loose_rows(self) -> list[Row]:
        """The rows the number columns do not hold: whole rows no write replaced, and
        the overlay's."""
        over = self._over
        loose = [row for p, row in self._cols.whole.items() if p not in over]
        return loose + [row for row in over.values() if row is not None]

    def _merged(self) -> Iterator[tuple[int, Row | None]]:
        """Every record in path order: (i, None) for row i of the columns, (-1, row)
        for a row of the overlay."""
        n = len(self._cols.paths)
        if not self._over:
            return zip(range(n), repeat(None))
        return self._merging(n)

    def _merging(self, n: int) -> Iterator[tuple[int, Row | None]]:
        paths, over, start = self._cols.paths, self._over, 0
        for path in sorted(over):
            at = bisect_left(paths, path, start)
            yield from zip(range(start, at), repeat(None))
            start = at + 1 if at < n and paths[at] == path else at
            if (row := over[path]) is not None:
                yield -1, row
        yield from zip(range(start, n), repeat(None))

    def _find(self, path: str) -> int | None:
        paths = self._cols.paths
        at = bisect_left(paths, path)
        return at if at < len(paths) and paths[at] == path else None

    def _row(self, i: int) -> Record:
        cols = self._cols
        path, form = cols.paths[i], cols.form[i]
        if form == _WHOLE:
            return Record(*cols.whole[path])
        words = cols.words.words
        at = cols.uploaded_at[i]
        return Record(
            path,
            cast(Status, words[cols.status[i]]),
            cols.file_id[i],
            words[cols.purpose[i]],
            cols.name[i],
            cols.size[i],
            cols.mtime_ns[i],
            cols.inode[i],
            cols.sha[i * _HASH_BYTES : (i + 1) * _HASH_BYTES].hex() if form == _HASH else None,
            None if at != at else at,  # NaN: none
            cols.reasons.get(path) if cols.reasons else None,
        )


def _overlay_most(rows: int) -> int:
    """Overlay rows past which the columns are rebuilt: one rebuild per ``rows / 64``
    writes keeps a write's share of it to a copy of 64 rows."""
    return max(256, rows // 64)


def _fields(r: Record) -> Row:
    return (r.path, r.status, r.file_id, r.purpose, r.remote_name, r.size, r.mtime_ns,
            r.inode, r.sha256, r.uploaded_at, r.reason)  # fmt: skip


def _path(record: Record) -> str:
    return record.path
