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


class Publisher:
    """Publishes one project's mapping in O(changes): each entry is rendered once and
    kept with the row it was rendered from, so a publish re-encodes only what changed,
    and one whose inputs did not change (the state and the remote view, each counted
    by a generation) reads nothing at all. The file is still replaced whole, atomically,
    and only when what it says changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # What the file says: path -> (the row, its confirmed id, its rendered line).
        self._entries: dict[str, tuple[Synced, str, Mapping[str, Any] | None]] = {}
        self._head: dict[str, Any] | None = None
        self._inputs: object = None

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
        entries: dict[str, tuple[Synced, str, Mapping[str, Any] | None]] = {}
        changed = self._head != dict(head) or not self.path.exists()
        old = self._entries
        for row in rows():
            if row[1] not in confirmed:
                continue
            before = old.get(row[0])
            more = stores.get(row[0])
            if before is not None and before[0] == row and before[2] == more:
                entries[row[0]] = before
                continue
            changed = True
            entries[row[0]] = (row, _line(row, more), more)
        changed = changed or len(entries) != len(old)
        first = self._head is None
        self._entries, self._head, self._inputs = entries, dict(head), inputs
        if not changed:
            return False
        files = ",\n".join(line for _, line, _more in entries.values())
        data = {"version": VERSION, **head, "generated_at": time.time()}
        # The first publish of a process compares with what an earlier run wrote.
        if first and _digest(data, files) == published(self.path):
            return False
        _write(self.path, data, files)
        return True


def _line(row: Synced, stores: Mapping[str, Any] | None = None) -> str:
    path, file_id, purpose, size, sha256, uploaded_at = row
    entry: dict[str, Any] = {"file_id": file_id, "purpose": purpose, "bytes": size,
                             "sha256": sha256, "uploaded_at": uploaded_at}  # fmt: skip
    if stores:
        # Where the path is searchable: store id -> completed, in_progress, failed...
        entry["vector_stores"] = dict(sorted(stores.items()))
    return f"{_encode(path)}: {_encode(entry)}"


def published(path: Path) -> str | None:
    """The digest of the mapping file at ``path`` as written, None if there is none."""
    try:
        data = json.loads(path.read_text("utf-8"))
        return _digest(data, _files(data))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _write(path: Path, data: Mapping[str, Any], files: str) -> None:
    head = _encode({k: v for k, v in data.items() if k != "files"})
    body = f"\n{files}\n" if files else ""
    text = f'{head[:-1]}, "files": {{{body}}}}}\n'
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
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
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
