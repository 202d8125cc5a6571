"""The published ``path -> file_id`` mapping other programs read.

Replaced atomically (temp file, fsync, rename, fsync of the folder) so a reader
sees the old mapping or the new one, never half of either.
"""

from __future__ import annotations

import bisect
import glob
import hashlib
import json
import mmap
import os
import tempfile
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from syncd.engine.changes import MOST_KEYS
from syncd.engine.state import Synced

VERSION = 1
_swept: set[Path] = set()


_encode = json.JSONEncoder(ensure_ascii=False).encode


def _files(data: Mapping[str, Any]) -> str:
    """The mapping's files as JSON, one file per line: as easy to read and grep as an
    indented file, and written by the C encoder (an indented dump runs json's
    pure-Python one, twice as slow on a tree of 100,000 files)."""
    entries = data["files"].items()
    return ",\n".join(f"{_encode(path)}: {_encode(entry)}" for path, entry in entries)


def _digest(data: Mapping[str, Any], files: str) -> str:
    """What a mapping says, all but ``generated_at``, in 32 hex digits."""
    said = _encode({k: v for k, v in data.items() if k not in ("files", "generated_at")})
    return hashlib.blake2b(f"{said}\n{files}".encode(), digest_size=16).hexdigest()


# One entry of a publish: its row, its vector stores, and the hash of both.
_Entry = tuple[Synced, Mapping[str, Any] | None, int]


class Publisher:
    """Publishes one project's mapping in O(changes) of encoding: what each entry says is
    kept as a hash of the row and the vector stores it was rendered from, and a publish
    renders only the entries whose hash changed; the others are copied, as bytes, from
    the file this publisher wrote last (when it is still that file). One whose inputs did
    not change (the state and the remote view, each counted by a generation) reads
    nothing at all. The file is replaced whole, atomically, and only when what it says
    changed. Kept per entry: a hash, not the row or its line (100,000 of them would cost
    more than every other part of a run).

    ``patch`` goes further when the caller knows which paths changed (the state and the
    remote view log them, :mod:`syncd.engine.changes`): only their lines are rendered,
    and the rest of the file is copied around them as bytes, so an edit in a
    100,000-file tree costs its own line, a read and a write of the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # path -> the hash of what its entry says; the paths in the file's order.
        self._marks: dict[str, int] = {}
        self._order: list[str] = []
        # Whether the entries hold no vector stores (what ``patch`` renders).
        self._plain = True
        self._head: dict[str, Any] | None = None
        self._inputs: object = None
        # The file as this publisher last wrote or read it: (inode, size, mtime_ns).
        self._ours: FileId | None = None

    def publish(
        self,
        rows: Callable[[], Iterable[Synced]],
        confirmed: Container[str],
        head: Mapping[str, Any],
        inputs: object,
        extra: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
    ) -> bool:
        """Write the mapping of ``rows`` (synced records, in path order) whose id is
        ``confirmed``, under ``head`` (project, owner, base_url); ``inputs`` identifies
        what rows and confirmed are made of: unchanged, nothing is read. Returns whether
        the file was written. ``extra``: path -> the vector stores it is attached to and
        each one's status, added to its entry as ``vector_stores``."""
        if inputs == self._inputs and self.path.exists():
            return False
        stores = extra() if extra is not None else {}

        def entries() -> Iterator[_Entry]:
            for row in rows():
                if row[1] in confirmed:
                    more = stores.get(row[0]) if stores else None
                    yield row, more, _mark(row, more)

        data = {"version": VERSION, **head, "generated_at": time.time()}
        # Of what the rows say, only a hash per entry is kept from one publish to the
        # next, and the rows are walked again (not held) when lines must be rendered;
        # once when the file is to be written whatever they say.
        first = self._head is None
        if not self.path.exists() or (not first and self._head != dict(head)):
            marks: dict[str, int] = {}
            self._head, self._inputs, self._plain = dict(head), inputs, extra is None
            return self._write_all(data, _noting(entries(), marks), marks)
        marks = {row[0]: mark for row, _more, mark in entries()}
        self._head, self._inputs, self._plain = dict(head), inputs, extra is None
        if not first and marks == self._marks:
            self._keep(marks)
            return False
        # The first publish of a process compares with what an earlier run wrote.
        on_disk = published(self.path) if first else None
        if on_disk is not None and on_disk[0] == _digest_lines(
            data, (_line(row, more) for row, more, _mark in entries())
        ):
            self._keep(marks)
            self._ours = on_disk[1]
            return False
        return self._write_all(data, entries(), marks)

    def _write_all(
        self, data: Mapping[str, Any], entries: Iterable[_Entry], marks: dict[str, int]
    ) -> bool:
        """Write the file of ``entries``, whose marks (``marks``, complete once they are
        walked) are kept for the next publish."""
        lines = self._lines(entries)
        self._keep(marks)
        self._ours = _write(self.path, data, _joined(lines), empty=not lines)
        return True

    @property
    def inputs(self) -> object:
        """What the mapping on disk was last made of (``publish``'s ``inputs``)."""
        return self._inputs

    def patch(
        self,
        rows: Mapping[str, Synced | None],
        confirmed: Container[str],
        head: Mapping[str, Any],
        inputs: object,
    ) -> bool | None:
        """Publish what changed for these paths alone (None: the path has no synced
        row), every other line copied as bytes from the file this publisher wrote last,
        found by search. Returns whether the file was written; None when it cannot patch
        (the file is not its own, another head, vector stores in the entries, too many
        paths) and ``publish`` must."""
        if self._head != dict(head) or not self._plain or len(rows) > MOST_KEYS:
            return None
        ops: dict[str, tuple[bytes, int] | None] = {}
        for path, row in rows.items():
            mark = hash(row) if row is not None and row[1] in confirmed else None
            if self._marks.get(path) != mark:
                ops[path] = None if row is None or mark is None else (_line(row).encode(), mark)
        if not ops:
            self._inputs = inputs
            return False
        data = {"version": VERSION, **head, "generated_at": time.time()}
        changes = {p: op and op[0] for p, op in ops.items()}
        wrote = _rewrite(self.path, self._ours, data, changes, self._order)
        if wrote is None:
            return None
        for path, op in ops.items():
            at = bisect.bisect_left(self._order, path)
            listed = at < len(self._order) and self._order[at] == path
            if op is None:
                self._marks.pop(path, None)
                if listed:
                    del self._order[at]
            else:
                self._marks[path] = op[1]
                if not listed:
                    self._order.insert(at, path)
        self._inputs, self._ours = inputs, wrote
        return True

    def _keep(self, marks: dict[str, int]) -> None:
        self._marks, self._order = marks, list(marks)

    def _lines(self, entries: Iterable[_Entry]) -> list[bytes]:
        """Each entry's line: copied from the file this publisher wrote last when the
        entry's hash is unchanged (both in path order: one walk), else rendered."""
        before = [(path, self._marks[path]) for path in self._order]
        kept = self._lines_as_written(len(before))
        out: list[bytes] = []
        j = 0
        for row, more, mark in entries:
            while j < len(before) and before[j][0] < row[0]:
                j += 1
            if kept is not None and j < len(before) and before[j] == (row[0], mark):
                out.append(kept[j])
            else:
                out.append(_line(row, more).encode())
        return out

    def _lines_as_written(self, count: int) -> list[bytes] | None:
        """The entry lines of the file this publisher wrote last, None when the file is
        no longer that one (replaced, edited) or does not hold ``count`` of them."""
        if self._ours is None or not count:
            return None
        try:
            with self.path.open("rb") as fh:
                if _identity(os.fstat(fh.fileno())) != self._ours:
                    return None
                raw = fh.read()
        except OSError:
            return None
        at = raw.find(_FILES_KEY)
        if at < 0 or not raw.endswith(b"\n}}\n"):
            return None
        lines = raw[at + len(_FILES_KEY) + 1 : -4].split(b",\n")
        return lines if len(lines) == count else None


def _noting(entries: Iterable[_Entry], marks: dict[str, int]) -> Iterator[_Entry]:
    """``entries``, each one's mark noted in ``marks`` as it passes."""
    for entry in entries:
        marks[entry[0][0]] = entry[2]
        yield entry


def _mark(row: Synced, more: Mapping[str, Any] | None) -> int:
    """What an entry says, as one hash (compared within this process only)."""
    if more is None:
        return hash(row)
    return hash((row, _encode(dict(sorted(more.items())))))


# A file as this publisher wrote it: (inode, size, mtime_ns), from the descriptor it
# read or wrote, so what is checked is what is then read (no second look by path).
FileId = tuple[int, int, int]


def _identity(st: os.stat_result) -> FileId:
    return st.st_ino, st.st_size, st.st_mtime_ns


def _digest_lines(data: Mapping[str, Any], lines: Iterable[str]) -> str:
    """``_digest`` of the files these lines make, without joining them."""
    said = _encode({k: v for k, v in data.items() if k not in ("files", "generated_at")})
    digest = hashlib.blake2b(f"{said}\n".encode(), digest_size=16)
    sep = b""
    for line in lines:
        digest.update(sep)
        digest.update(line.encode())
        sep = b",\n"
    return digest.hexdigest()


def _line(row: Synced, stores: Mapping[str, Any] | None = None) -> str:
    path, file_id, purpose, size, sha256, uploaded_at = row
    entry: dict[str, Any] = {"file_id": file_id, "purpose": purpose, "bytes": size,
                             "sha256": sha256, "uploaded_at": uploaded_at}  # fmt: skip
    if stores:
        # Where the path is searchable: store id -> completed, in_progress, failed...
        entry["vector_stores"] = dict(sorted(stores.items()))
    return f"{_encode(path)}: {_encode(entry)}"


def published(path: Path) -> tuple[str, FileId] | None:
    """The digest of the mapping file at ``path`` as written, and the identity of the
    file hashed; None if there is none.

    A file as ``_write`` lays it out is hashed as it lies, a megabyte at a time, its
    head alone parsed; any other (an older layout, a hand edit) is parsed whole."""
    try:
        with path.open("rb") as fh:
            seen = _identity(os.fstat(fh.fileno()))
            quick = _digest_as_laid_out(fh)
            if quick is not None:
                return quick, seen
            fh.seek(0)
            raw = fh.read()
    except OSError:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
        return _digest(data, _files(data)), seen
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


_FILES_KEY = b'"files": {'
# Where the files key must be found: a head (project, owner, base_url...) is far shorter.
_HEAD_MOST = 1 << 16
_CHUNK = 1 << 20


def head_of(path: Path) -> dict[str, Any] | None:
    """What the mapping at ``path`` says besides its files (project, owner...), read
    from its head alone when it is in ``_write``'s layout (a 100,000-file mapping is
    not parsed for its owner); None when there is none, or it is not a JSON object."""
    try:
        with path.open("rb") as fh:
            found = _head(fh)
            data = found[0] if found is not None else json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _head(fh: BinaryIO) -> tuple[dict[str, Any], int] | None:
    """The head of a mapping in ``_write``'s layout (read from the file's start) and
    where its files begin; None when the file is not in that layout. The file is left
    at its start."""
    head = fh.read(_HEAD_MOST)
    fh.seek(0)
    at = head.find(_FILES_KEY)
    if at < 0:
        return None
    try:
        data = json.loads(head[:at].rstrip().rstrip(b",") + b"}")
    except ValueError:
        return None
    return (data, at + len(_FILES_KEY)) if isinstance(data, dict) else None


def _digest_as_laid_out(fh: BinaryIO) -> str | None:
    """The digest of a mapping in ``_write``'s layout: the head, then ``"files": {``,
    one entry a line, ``}}``. The first ``"files": {`` is the key: inside a JSON
    string a quote is escaped, so the head's values cannot hold that text."""
    size = os.fstat(fh.fileno()).st_size
    found = _head(fh)
    if found is None:
        return None
    data, start = found
    fd = fh.fileno()
    if size == start + 3 and os.pread(fd, 3, start) == b"}}\n":
        lo = hi = start
    elif (
        size > start + 4 and os.pread(fd, 1, start) == b"\n"
        and os.pread(fd, 4, size - 4) == b"\n}}\n"
    ):  # fmt: skip
        lo, hi = start + 1, size - 4
    else:
        return None
    said = _encode({k: v for k, v in data.items() if k not in ("files", "generated_at")})
    digest = hashlib.blake2b(f"{said}\n".encode(), digest_size=16)
    while lo < hi:
        chunk = os.pread(fd, min(_CHUNK, hi - lo), lo)
        if not chunk:
            return None  # cut short while read
        digest.update(chunk)
        lo += len(chunk)
    return digest.hexdigest()


def _joined(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The files part of the layout: each line after a newline, a comma between."""
    sep = b"\n"
    for line in lines:
        yield sep
        yield line
        sep = b",\n"


def _rewrite(
    path: Path, ours: FileId | None, data: Mapping[str, Any],
    changes: Mapping[str, bytes | None], order: list[str],
) -> FileId | None:  # fmt: skip
    """``_write`` of the file at ``path`` under a new head, with ``_splice``'s changes;
    None when the file there is not ``ours`` (replaced, edited, gone) or not in the
    layout. The file checked is the file read: one descriptor."""
    try:
        with path.open("rb") as fh:
            if ours is None or _identity(os.fstat(fh.fileno())) != ours:
                return None
            # Mapped, not read: the kept lines go from the page cache to the new file,
            # and a 23 MB mapping leaves the daemon no heap to hold on to after.
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as raw:
                region = _splice(raw, changes, order)
                if region is None:
                    return None
                try:
                    return _write(path, data, region, empty=not any(region))
                finally:
                    for part in region:  # the map closes once no view into it is left
                        if isinstance(part, memoryview):
                            part.release()
    except (OSError, ValueError):  # gone, or empty (no map of nothing)
        return None


def _splice(
    raw: bytes | mmap.mmap, changes: Mapping[str, bytes | None], order: list[str]
) -> list[bytes | memoryview] | None:
    """The files part of ``raw`` (a mapping in ``_write``'s layout, its lines for the
    paths of ``order``) with the line of each path in ``changes`` replaced, inserted in
    path order, or (None) removed; the rest stays the bytes of ``raw``. None when
    ``raw`` is not in that layout or lacks a line it should hold."""
    at = raw.find(_FILES_KEY)
    start = at + len(_FILES_KEY)
    if at >= 0 and raw[start : start + 1] == b"\n" and raw[-4:] == b"\n}}\n":
        end = len(raw) - 4
    elif at >= 0 and len(raw) == start + 3 and raw[-3:] == b"}}\n":
        end = start
    else:
        return None
    view = memoryview(raw)
    runs: list[bytes | memoryview] = []
    done = start  # what lies before is placed
    for path in sorted(changes):
        i = bisect.bisect_left(order, path)
        if i < len(order):
            # Its own line, or the one it goes before. A line starts after a newline and
            # a newline is nowhere else (JSON escapes it), so the key is found only there.
            s = raw.find(b"\n" + _encode(order[i]).encode() + b": ", done, end)
            if s < 0:
                return None
        else:
            s = end
        e = s
        if i < len(order) and order[i] == path:
            e = raw.find(b",\n", s + 1, end)
            e = end if e < 0 else e
        runs.append(view[done:s])
        line = changes[path]
        if line is not None:
            runs.append(b"\n" + line)
        done = e
    runs.append(view[done:end])
    # A run of kept lines may begin or end with the comma that stood next to a changed
    # line: each is cut off, and one comma goes between the non-empty parts.
    parts: list[bytes | memoryview] = []
    for run in runs:
        run = run[1:] if run[:1] == b"," else run
        run = run[:-1] if run[-1:] == b"," else run
        if run:
            parts.extend((b",", run) if parts else (run,))
    return parts


def _write(
    path: Path, data: Mapping[str, Any], files: Iterable[bytes | memoryview], *, empty: bool
) -> FileId:
    """The file: the head, ``"files": {``, one entry a line (``files``, as ``_joined``
    makes them; ``empty``: none), ``}}``; written as it is made, never joined into one
    copy in memory. Returns the written file's identity (``_identity``)."""
    head = _encode({k: v for k, v in data.items() if k != "files"})
    path.parent.mkdir(parents=True, exist_ok=True)
    if path not in _swept:
        # A process killed between creating its temp file and the rename leaves it
        # behind; one process publishes a mapping (the state lock), so at its first
        # publish any such file is debris.
        for debris in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            debris.unlink(missing_ok=True)
        _swept.add(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(f'{head[:-1]}, "files": {{'.encode())
            fh.writelines(files)
            fh.write(b"}}\n" if empty else b"\n}}\n")
            fh.flush()
            os.fsync(fh.fileno())
            wrote = _identity(os.fstat(fh.fileno()))  # a rename keeps all three
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return wrote
