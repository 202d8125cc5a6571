"""Crash-safe state: per-path records, over the intents and deletes it also keeps.

``State`` is what the engine holds; it is built from :mod:`.state_db` (the file,
transactions, the journal), :mod:`.state_intents` and :mod:`.state_deletes`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Container, Iterable, Iterator
from typing import Any, Protocol, cast

from syncd.api.models import RemoteFile
from syncd.engine.journal import Action
from syncd.engine.model import LocalFile, Note, Record
from syncd.engine.records import RecordTable, Synced
from syncd.engine.state_db import RECORD_COLUMNS, LockHeld, StateLock, StateLost
from syncd.engine.state_deletes import DeleteRecords
from syncd.engine.state_intents import IntentRecords, _drop_intent

__all__ = ["QUIET", "LockHeld", "State", "StateLock", "StateLost", "Synced"]

_COLUMNS = RECORD_COLUMNS


class State(IntentRecords, DeleteRecords):
    """All reads and writes of the state database. Thread-safe."""

    def records(self) -> RecordTable:
        """Every path's record, as the state holds them now: a table that later writes
        leave as it is (they make a new one; see ``StateDb._kept_records``)."""
        with self._lock:
            return self._kept_records()

    def paths_with_status(self, status: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT path FROM files WHERE status = ? ORDER BY path", (status,)
            ).fetchall()
        return [row[0] for row in rows]

    def synced(self) -> Iterator[Synced]:
        """The synced records, by path (code point order, as SQLite's on UTF-8), as the
        mapping names them: tuples of the kept records' own values, nothing read again,
        made one at a time (a list of 100,000 would be 10 MB held for a walk)."""
        with self._lock:
            table = self._kept_records()
        return table.synced()

    def changed_since(self, generation: int) -> set[str] | None:
        """The paths written after ``generation``; None when not known (see
        ``syncd.engine.changes``)."""
        with self._lock:
            self._kept_records()  # a commit by another connection changes everything
            return self.changes.since(generation)

    def synced_of(self, paths: Iterable[str]) -> dict[str, Synced | None]:
        """``synced`` for these paths alone: each one's row, None when it has none."""
        with self._lock:
            kept = self._kept_records()
        records = {p: kept.get(p) for p in paths}
        return {
            p: _row(r) if r is not None and r.status == "synced" and r.file_id else None
            for p, r in records.items()
        }

    def paths_holding(self, ids: Container[str]) -> set[str]:
        """The paths whose record names one of ``ids``."""
        with self._lock:
            table = self._kept_records()
        return table.paths_holding(ids)

    def owned_ids(self) -> set[str]:
        """Every remote id this state holds: recorded for a path, or queued for deletion
        (the state's side of ``StateView.owned_ids``)."""
        with self._lock:
            table = self._kept_records()
        return table.file_ids() | self.garbage()

    def record_uploaded(
        self,
        local: LocalFile,
        remote: RemoteFile,
        *,
        replaces: str | None,
        status: str = "synced",
        reason: str | None = None,
        action: Action = "uploaded",
    ) -> bool:
        """The path now holds ``remote`` (``action``: uploaded, adopted or shared): its
        intent cleared, the journal told and, if no path holds the replaced id any more,
        that id queued for deletion, in one transaction: a crash leaves either all of it
        or none. Returns whether the replaced id was queued."""
        with self._tx() as db:
            self._journal(
                db, action, time.time(), path=local.path, file_id=remote.id,
                size=local.size, status=None if status == "synced" else status, reason=reason,
            )  # fmt: skip
            row = (
                local.path, status, remote.id, local.purpose, remote.filename or local.name,
                local.size, local.mtime_ns, local.inode, local.sha256,
                float(remote.created_at) or time.time(), reason, time.time(),
            )  # fmt: skip
            db.execute(
                f"INSERT OR REPLACE INTO files ({_COLUMNS}, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            _drop_intent(db, local.path)
            self._dirty.add(local.path)
            if not replaces or replaces == remote.id:
                return False
            # The reference count of a remote file is the number of paths holding it,
            # derived in this same transaction rather than kept beside it.
            cursor = db.execute(
                "INSERT OR IGNORE INTO garbage SELECT ?, ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM files WHERE file_id = ?)",
                (replaces, local.path, time.time(), replaces),
            )
            return cursor.rowcount > 0

    def detach(self, path: str) -> None:
        """The path no longer holds its remote id, which other paths keep."""
        with self._tx() as db:
            db.execute(
                "UPDATE files SET file_id = NULL, uploaded_at = NULL, updated_at = ? "
                "WHERE path = ?",
                (time.time(), path),
            )
            self._dirty.add(path)

    def sharing(self) -> dict[str, int]:
        """What dedupe saves: paths and bytes beyond one per remote file."""
        with self._lock:
            paths, files, path_bytes = self._db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT file_id), COALESCE(SUM(size), 0) FROM files "
                "WHERE status = 'synced' AND file_id IS NOT NULL"
            ).fetchone()
            (file_bytes,) = self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size FROM files "
                "WHERE status = 'synced' AND file_id IS NOT NULL GROUP BY file_id)"
            ).fetchone()
        return {
            "paths": paths,
            "remote_files": files,
            "saved_files": paths - files,
            "saved_bytes": path_bytes - file_bytes,
        }

    def forget(self, path: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM files WHERE path = ?", (path,))
            self._dirty.add(path)

    def note(self, note: Note) -> None:
        self.note_many([note])

    def note_many(self, notes: Iterable[Note]) -> None:
        """Record statuses, all in one transaction: a first run over a big tree notes
        thousands of files, and a commit each would cost a disk sync each."""
        now = time.time()
        with self._tx() as db:
            for note in notes:
                _note(db, note, now, self._journal)
                self._dirty.add(note.path)


def _row(r: Record) -> Synced:
    return (r.path, cast(str, r.file_id), r.purpose, r.size, r.sha256, r.uploaded_at)


class _Journal(Protocol):
    def __call__(
        self, db: sqlite3.Connection, action: Action, now: float, **fields: Any
    ) -> None: ...


# Statuses the journal does not record: a refreshed stat, and a delete under way (its
# outcome is recorded).
QUIET = ("synced", "pending")


def _note(db: sqlite3.Connection, note: Note, now: float, write: _Journal) -> None:
    """Only ``synced`` takes the new hash: a record that keeps an old file_id must keep
    the hash of what that id holds. A status that changed is journaled."""
    exists = db.execute(
        "SELECT status, reason FROM files WHERE path = ?", (note.path,)
    ).fetchone()
    if note.status not in QUIET and (exists is None or tuple(exists) != (note.status, note.reason)):
        write(db, "status", now, path=note.path, status=note.status, reason=note.reason)
    if not exists:
        db.execute(
            "INSERT INTO files (path, status, updated_at) VALUES (?, ?, ?)",
            (note.path, note.status, now),
        )
    local = note.local
    if note.status == "synced" and local is not None:
        db.execute(
            "UPDATE files SET status = 'synced', reason = NULL, size = ?, mtime_ns = ?, "
            "inode = ?, sha256 = ?, updated_at = ? WHERE path = ?",
            (local.size, local.mtime_ns, local.inode, local.sha256, now, note.path),
        )
    elif note.status in ("invalid", "skipped") and local is not None:
        # Cache the verdict by stat so an unchanged file is not re-validated.
        db.execute(
            "UPDATE files SET status = ?, reason = ?, size = ?, mtime_ns = ?, inode = ?, "
            "purpose = ?, sha256 = NULL, updated_at = ? WHERE path = ?",
            (note.status, note.reason, local.size, local.mtime_ns, local.inode,
             local.purpose, now, note.path),
        )  # fmt: skip
    else:
        db.execute(
            "UPDATE files SET status = ?, reason = ?, updated_at = ? WHERE path = ?",
            (note.status, note.reason, now, note.path),
        )
