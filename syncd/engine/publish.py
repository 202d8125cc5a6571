"""The published ``path -> file_id`` mapping other programs read.

Replaced atomically (temp file, fsync, rename, fsync of the folder) so a reader
sees the old mapping or the new one, never half of either.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Container, Iterable, Mapping
from pathlib import Path
from typing import Any

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
    more than every other part of a run)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # path -> the hash of what its entry says, in the file's order.
        self._marks: dict[str, int] = {}
        self._head: dict[str, Any] | None = None
        self._inputs: object = None
        # The file as this publisher last wrote or read it: (inode, size, mtime_ns).
        self._ours: tuple[int, int, int] | None = None

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
        # The rows are the state's own values in tuples; of what they say, only a hash
        # per entry is kept from one publish to the next.
        chosen = [row for row in rows() if row[1] in confirmed]
        entries = [(row, more := stores.get(row[0]) if stores else None, _mark(row, more))
                   for row in chosen]  # fmt: skip
        del chosen
        marks = {row[0]: mark for row, _more, mark in entries}
        changed = self._head != dict(head) or not self.path.exists() or marks != self._marks
        first = self._head is None
        self._head, self._inputs = dict(head), inputs
        if not changed:
            self._marks = marks
            return False
        data = {"version": VERSION, **head, "generated_at": time.time()}
        # The first publish of a process compares with what an earlier run wrote.
        on_disk = published(self.path) if first else None
        if on_disk is not None and on_disk == _digest_lines(
            data, (_line(row, more) for row, more, _mark in entries)
        ):
            self._marks = marks
            self._ours = _stat(self.path)
            return False
        lines = self._lines(entries)
        self._marks = marks
        del entries
        _write(self.path, data, lines)
        self._ours = _stat(self.path)
        return True

    def _lines(self, entries: list[_Entry]) -> list[bytes]:
        """Each entry's line: copied from the file this publisher wrote last when the
        entry's hash is unchanged (both in path order: one walk), else rendered."""
        before = list(self._marks.items())
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
        if self._ours is None or self._ours != _stat(self.path) or not count:
            return None
        try:
            raw = self.path.read_bytes()
        except OSError:
            return None
        at = raw.find(_FILES_KEY)
        if at < 0 or not raw.endswith(b"\n}}\n"):
            return None
        lines = raw[at + len(_FILES_KEY) + 1 : -4].split(b",\n")
        return lines if len(lines) == count else None


def _mark(row: Synced, more: Mapping[str, Any] | None) -> int:
    """What an entry says, as one hash (compared within this process only)."""
    if more is None:
        return hash(row)
    return hash((row, _encode(dict(sorted(more.items())))))


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
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


def published(path: Path) -> str | None:
    """The digest of the mapping file at ``path`` as written, None if there is none.

    A file as ``_write`` lays it out is hashed as it lies, its head alone parsed;
    any other (an older layout, a hand edit) is parsed whole."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    quick = _digest_as_laid_out(raw)
    if quick is not None:
        return quick
    try:
        data = json.loads(raw.decode("utf-8"))
        return _digest(data, _files(data))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


_FILES_KEY = b'"files": {'


def _digest_as_laid_out(raw: bytes) -> str | None:
    """The digest of a mapping in ``_write``'s layout: the head, then ``"files": {``,
    one entry a line, ``}}``. The first ``"files": {`` is the key: inside a JSON
    string a quote is escaped, so the head's values cannot hold that text."""
    at = raw.find(_FILES_KEY)
    if at < 0:
        return None
    try:
        data = json.loads(raw[:at].rstrip().rstrip(b",") + b"}")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    start = at + len(_FILES_KEY)
    if len(raw) == start + 3 and raw.endswith(b"}}\n"):
        files = memoryview(raw)[:0]
    elif raw.startswith(b"\n", start) and raw.endswith(b"\n}}\n") and len(raw) > start + 4:
        files = memoryview(raw)[start + 1 : -4]
    else:
        return None
    said = _encode({k: v for k, v in data.items() if k not in ("files", "generated_at")})
    digest = hashlib.blake2b(f"{said}\n".encode(), digest_size=16)
    digest.update(files)
    return digest.hexdigest()


def _write(path: Path, data: Mapping[str, Any], lines: list[bytes]) -> None:
    """The file: the head, ``"files": {``, one entry a line, ``}}``; written as it is
    made, never joined into one copy in memory."""
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
            sep = b"\n"
            for line in lines:
                fh.write(sep)
                fh.write(line)
                sep = b",\n"
            fh.write(b"\n}}\n" if lines else b"}}\n")
            fh.flush()
            os.fsync(fh.fileno())
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
