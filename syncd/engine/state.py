"""Crash-safe state: per-path records, upload intents, ids waiting for deletion.

SQLite (WAL, synchronous=FULL) because every change is one small transaction
that survives ``kill -9`` and power loss, and a write costs O(change), not a
rewrite of everything. One writer process per state_dir, enforced by a lock
file that carries the holder's PID.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from syncd.api.adoption import UploadWindow, wire_name
from syncd.api.models import RemoteFile
from syncd.engine import journal
from syncd.engine.journal import Action, Entry
from syncd.engine.model import GUARDED, Delete, Held, Intent, LocalFile, LostCopy, Note, Record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    file_id TEXT,
    purpose TEXT,
    remote_name TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    inode INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    uploaded_at REAL,
    reason TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS intents (
    path TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    started_at REAL NOT NULL,
    earliest REAL,
    latest REAL
);
-- The stat of a file an intent sent unhashed (its intent's sha256 is ""): whether the
-- file still holds what was sent is then judged by it. Beside the intents table, not in
-- it, so intents written by older versions (and tools) keep their shape.
CREATE TABLE IF NOT EXISTS intent_stats (
    path TEXT PRIMARY KEY,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS garbage (
    file_id TEXT PRIMARY KEY,
    path TEXT,
    since REAL NOT NULL
);
-- Attempts whose response was lost before an upload of the same file succeeded: a copy
-- they may have stored is looked for by later full runs (see model.LostCopy).
CREATE TABLE IF NOT EXISTS lost_copies (
    key INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    filename TEXT NOT NULL,
    size INTEGER NOT NULL,
    earliest REAL NOT NULL,
    latest REAL NOT NULL,
    noted_at REAL NOT NULL,
    most INTEGER NOT NULL DEFAULT 1,
    found INTEGER NOT NULL DEFAULT 0
);
-- Deletes a guard refused: no run makes them until a person confirms or the file
-- comes back (see model.Held).
CREATE TABLE IF NOT EXISTS held_deletes (
    file_id TEXT PRIMARY KEY,
    path TEXT,
    reason TEXT NOT NULL,
    guard TEXT NOT NULL,
    since REAL NOT NULL
);
-- When guarded deletes were made: every run of every process weighs the ones within
-- the delete window against max_delete.
CREATE TABLE IF NOT EXISTS guarded_deletes (at REAL NOT NULL, file_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS guarded_deletes_at ON guarded_deletes (at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Guarded deletes older than this are forgotten (far beyond any delete window).
_GUARDED_KEEP_S = 7 * 86_400.0

# The window the first schema's intents were resolved with.
_LEGACY_BEFORE_S = 2
_LEGACY_AFTER_S = 900

# (path, file_id, purpose, bytes, sha256, uploaded_at) of a synced record. SQLite orders
# paths by their UTF-8 bytes, which is the order of their code points, as Python sorts.
Synced = tuple[str, str, str | None, int, str | None, float | None]

_COLUMNS = (
    "path, status, file_id, purpose, remote_name, size, mtime_ns, inode, sha256, uploaded_at, "
    "reason"
)


class LockHeld(Exception):
    """Raised when another syncd process already writes to this state_dir."""


class StateLock:
    """An exclusive ``flock`` on ``state_dir/lock``, released when the process dies."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(
                f"another syncd process (pid {holder}) is using state_dir {self.path.parent}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class StateLost(sqlite3.DatabaseError):
    """Raised by a write when the state database is no longer the file this State
    opened: deleted or replaced under a running syncd. Nothing more is written to the
    old file (it would vanish with the process); the Syncer opens the new one."""


class State:
    """All reads and writes of the state database. Thread-safe."""

    FILE = "state.sqlite3"

    @classmethod
    def exists(cls, state_dir: Path) -> bool:
        """Whether a state was ever opened in ``state_dir`` (opening one creates it)."""
        return (state_dir / cls.FILE).is_file()

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = self._path = state_dir / self.FILE
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.executescript(journal.SCHEMA)
            self._migrate()
            self._file = _identity(path)
        except (sqlite3.DatabaseError, OSError) as exc:
            self._db.close()
            # sqlite's own words ("file is not a database") do not say which file.
            # SQLITE_CORRUPT, SQLITE_NOTADB (the codes are on the exception from 3.11 on).
            damaged = getattr(exc, "sqlite_errorcode", None) in (11, 26)
            hint = (
                " (the state is damaged: move the file aside and run `syncd reconcile`; "
                "the files this project uploaded are taken back, not sent again)"
                if damaged
                else ""
            )
            raise sqlite3.DatabaseError(f"{path}: {exc}{hint}") from None
        self._lock = threading.RLock()
        # The run the journal's rows belong to (see begin_run), its bounds, and the rows
        # written since it was last pruned.
        self._run: int | None = None
        self.journal_rows, self.journal_age_s = journal.MAX_ROWS, journal.MAX_AGE_S
        self._journaled = 0
        # Counts committed writes: what was derived from the state at one count is
        # still true at the same count (the mapping is not rebuilt in between).
        self.generation = 0

    def _migrate(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(intents)")}
        if "earliest" not in columns:
            # Intents of the first schema were resolved by a fixed window around their
            # start in our clock: keep that rule for the ones still open.
            self._db.executescript(
                "BEGIN IMMEDIATE;"
                "ALTER TABLE intents ADD COLUMN earliest REAL;"
                "ALTER TABLE intents ADD COLUMN latest REAL;"
                f"UPDATE intents SET earliest = started_at - {_LEGACY_BEFORE_S},"
                f" latest = started_at + {_LEGACY_AFTER_S};"
                "COMMIT;"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def replaced(self) -> bool:
        """Whether the database file on disk is no longer the one this State opened."""
        try:
            return _identity(self._path) != self._file
        except OSError:
            return True

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            # One stat per transaction: a write to a file deleted or replaced under us
            # would be lost with the process, so none is made.
            if self.replaced():
                raise StateLost(f"{self._path} was deleted or replaced while syncd had it open")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.generation += 1

    # ---- reads

    def records(self) -> dict[str, Record]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM files").fetchall()
        return {row[0]: Record(*row) for row in rows}

    def paths_with_status(self, status: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT path FROM files WHERE status = ? ORDER BY path", (status,)
            ).fetchall()
        return [row[0] for row in rows]

    def synced(self) -> list[Synced]:
        """The synced records, by path, as the mapping names them: read straight from
        the table (no Record built), since a project may have 100,000 of them and the
        mapping is rebuilt every few seconds while uploads run."""
        with self._lock:
            return self._db.execute(
                "SELECT path, file_id, purpose, size, sha256, uploaded_at FROM files "
                "WHERE status = 'synced' AND file_id IS NOT NULL ORDER BY path"
            ).fetchall()

    def intents(self) -> dict[str, Intent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT i.path, filename, size, sha256, started_at, earliest, latest, "
                "s.mtime_ns, s.inode FROM intents i LEFT JOIN intent_stats s USING (path)"
            ).fetchall()
        return {
            row[0]: Intent(
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                UploadWindow(row[5], row[6]) if row[5] is not None else None,
                row[7],
                row[8],
            )
            for row in rows
        }

    def owned_ids(self) -> set[str]:
        """Every remote id this state holds: recorded for a path, or queued for deletion
        (the state's side of ``StateView.owned_ids``, read in one query)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT file_id FROM files WHERE file_id IS NOT NULL "
                "UNION SELECT file_id FROM garbage"
            )
            return {row[0] for row in rows}

    def garbage(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT file_id FROM garbage")}

    def held(self) -> dict[str, Held]:
        with self._lock:
            rows = self._db.execute(
                "SELECT file_id, path, reason, guard, since FROM held_deletes"
            ).fetchall()
        return {row[0]: Held(*row) for row in rows}

    def guarded_deletes_since(self, since: float) -> int:
        """Guarded deletes made at or after ``since``, by any run of any process."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM guarded_deletes WHERE at >= ?", (since,)
            ).fetchone()
        return int(n)

    def journal(
        self, paths: Iterable[str] = (), since: float | None = None, limit: int | None = None
    ) -> list[Entry]:
        with self._lock:
            return journal.read(self._db, paths=list(paths), since=since, limit=limit)

    def get_meta(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    # ---- writes (each one transaction)

    def _journal(
        self, db: sqlite3.Connection, action: Action, now: float, **fields: Any
    ) -> None:
        """One journal row, in the caller's transaction; the bounds kept as rows come."""
        journal.add(db, self._run, action, now, **fields)
        self._journaled += 1
        if self._journaled % journal.PRUNE_EVERY == 0:
            journal.prune(db, now, max_rows=self.journal_rows, max_age_s=self.journal_age_s)

    def begin_run(self, kind: str) -> None:
        """What is recorded from now on belongs to a new run of this kind (journal)."""
        with self._tx() as db:
            journal.prune(db, time.time(), max_rows=self.journal_rows, max_age_s=self.journal_age_s)
            self._run = journal.begin_run(db, kind, time.time())

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def begin_intent(self, local: LocalFile) -> Intent:
        intent = Intent(
            local.path, wire_name(local.name), local.size, local.sha256 or "", time.time(),
            mtime_ns=local.mtime_ns, inode=local.inode,
        )  # fmt: skip
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO intents VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                (intent.path, intent.filename, intent.size, intent.sha256, intent.started_at),
            )
            db.execute(
                "INSERT OR REPLACE INTO intent_stats VALUES (?, ?, ?)",
                (intent.path, intent.mtime_ns, intent.inode),
            )
        return intent

    def mark_sent(self, path: str, window: UploadWindow) -> None:
        """The body's last byte is about to leave: from now on the provider may store the
        file, within ``window``. A later attempt widens the window, never narrows it."""
        with self._tx() as db:
            db.execute(
                "UPDATE intents SET earliest = MIN(COALESCE(earliest, ?), ?), "
                "latest = MAX(COALESCE(latest, ?), ?) WHERE path = ?",
                (window.earliest, window.earliest, window.latest, window.latest, path),
            )

    def note_lost_copies(
        self, path: str, filename: str, size: int, window: UploadWindow, most: int
    ) -> int:
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO lost_copies (path, filename, size, earliest, latest, noted_at, most)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (path, filename, size, window.earliest, window.latest, time.time(), most),
            )
            return int(cursor.lastrowid or 0)

    def update_lost_copies(self, key: int, window: UploadWindow, most: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE lost_copies SET earliest = ?, latest = ?, most = ? WHERE key = ?",
                (window.earliest, window.latest, most, key),
            )

    def lost_copies(self) -> list[LostCopy]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, path, filename, size, earliest, latest, noted_at, most, found "
                "FROM lost_copies"
            ).fetchall()
        return [
            LostCopy(k, p, f, s, UploadWindow(lo, hi), at, most, found)
            for k, p, f, s, lo, hi, at, most, found in rows
        ]

    def found_lost_copies(self, found: Mapping[int, int]) -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE lost_copies SET found = found + ? WHERE key = ?",
                ((n, key) for key, n in found.items()),
            )

    def clear_lost_copies(self, keys: Iterable[int]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM lost_copies WHERE key = ?", ((k,) for k in keys))

    def clear_intent(self, path: str) -> None:
        with self._tx() as db:
            _drop_intent(db, path)

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

    def add_garbage(self, file_id: str, path: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO garbage VALUES (?, ?, ?)", (file_id, path, time.time())
            )

    def record_deleted(
        self, file_id: str, path: str | None, *, forget_path: bool, reason: str = "garbage"
    ) -> None:
        """After a remote delete: the id is no longer ours anywhere, no longer held, and a
        guarded delete is counted for the delete window, all in one transaction."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT size FROM files WHERE file_id = ?", (file_id,)).fetchone()
            self._journal(
                db, "deleted", now, path=path, file_id=file_id,
                size=row[0] if row else None, reason=reason,
            )  # fmt: skip
            db.execute("DELETE FROM garbage WHERE file_id = ?", (file_id,))
            db.execute("DELETE FROM held_deletes WHERE file_id = ?", (file_id,))
            if reason in GUARDED:
                db.execute("INSERT INTO guarded_deletes VALUES (?, ?)", (now, file_id))
                db.execute("DELETE FROM guarded_deletes WHERE at < ?", (now - _GUARDED_KEEP_S,))
            if forget_path and path is not None:
                db.execute("DELETE FROM files WHERE path = ? AND file_id = ?", (path, file_id))
            db.execute(
                "UPDATE files SET file_id = NULL, uploaded_at = NULL, updated_at = ? "
                "WHERE file_id = ?",
                (time.time(), file_id),
            )

    def hold(self, deletes: Iterable[Delete], guard: str) -> None:
        """Keep refused deletes refused; a delete already held keeps its first refusal."""
        now = time.time()
        with self._tx() as db:
            for d in deletes:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO held_deletes VALUES (?, ?, ?, ?, ?)",
                    (d.file_id, d.path, d.reason, guard, now),
                )
                if cursor.rowcount:
                    self._journal(
                        db, "held", now, path=d.path, file_id=d.file_id,
                        status=d.reason, reason=guard,
                    )  # fmt: skip

    def unhold(self, file_ids: Iterable[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM held_deletes WHERE file_id = ?", ((f,) for f in file_ids))

    def journal_events(self, events: Iterable[tuple[Action, dict[str, Any]]]) -> None:
        """Rows for what happened outside this state's tables (batch jobs, pulled
        files), in one transaction."""
        now = time.time()
        with self._tx() as db:
            for action, fields in events:
                self._journal(db, action, now, **fields)

    def forget(self, path: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM files WHERE path = ?", (path,))

    def note(self, note: Note) -> None:
        self.note_many([note])

    def note_many(self, notes: Iterable[Note]) -> None:
        """Record statuses, all in one transaction: a first run over a big tree notes
        thousands of files, and a commit each would cost a disk sync each."""
        now = time.time()
        with self._tx() as db:
            for note in notes:
                _note(db, note, now, self._journal)


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


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _drop_intent(db: sqlite3.Connection, path: str) -> None:
    db.execute("DELETE FROM intents WHERE path = ?", (path,))
    db.execute("DELETE FROM intent_stats WHERE path = ?", (path,))
