"""The state database: opening it, its schema, one writer per state_dir, transactions.

SQLite (WAL, synchronous=FULL) because every change is one small transaction
that survives ``kill -9`` and power loss, and a write costs O(change), not a
rewrite of everything. One writer process per state_dir, enforced by a lock
file that carries the holder's PID. The tables are read and written by
:mod:`.state` (paths), :mod:`.state_intents` (uploads under way) and
:mod:`.state_deletes` (ids to delete, refused and made).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from syncd.engine import journal
from syncd.engine.changes import ChangeLog
from syncd.engine.journal import Action, Entry
from syncd.engine.model import Record
from syncd.engine.records import RecordTable

# A path's record as stored, in the order of Record's fields.
RECORD_COLUMNS = (
    "path, status, file_id, purpose, remote_name, size, mtime_ns, inode, sha256, uploaded_at, "
    "reason"
)
# A transaction that wrote more paths than this drops the kept records instead of reading
# each path back: the next read builds them anew, in one pass.
_REREAD_MOST = 2000

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

# The window the first schema's intents were resolved with.
_LEGACY_BEFORE_S = 2
_LEGACY_AFTER_S = 900


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


class StateDb:
    """The state database: its file, one lock, transactions, meta and the journal's
    writes. The record kinds are read and written by the classes built on it."""

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
            # One transaction: a fresh state costs one sync of the disk, not one per table
            # and index (nineteen), which a one-off run pays before its first byte goes.
            self._db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}{journal.SCHEMA}COMMIT;")
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
        # The files table as a RecordTable, built at the first read and kept current by
        # this object's own writes (one writer per state_dir), so a run over 100,000 paths
        # reads them once, not once per step. A commit by any other connection (SQLite's
        # data_version) has them read again. ``_dirty``: paths the open transaction wrote.
        self._records: RecordTable | None = None
        self._records_version = -1
        self._dirty: set[str] = set()
        # The paths each committed write touched (for the mapping's publisher).
        self.changes = ChangeLog()


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
                self._dirty.clear()
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.generation += 1
            self.changes.noted(self.generation, self._dirty)
            self._reread_dirty()

    def _kept_records(self) -> RecordTable:
        """The records kept in memory, read first when not kept or when another
        connection committed since (the caller holds the lock)."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        if self._records_version not in (-1, version):
            # Another connection wrote: what it changed is not known here.
            self.generation += 1
            self.changes.everything(self.generation)
        if self._records is None or version != self._records_version:
            self._records = None  # the old ones go before the new ones are built
            rows = self._db.execute(f"SELECT {RECORD_COLUMNS} FROM files ORDER BY path")
            self._records = RecordTable.from_rows(map(_interned, rows))
            self._records_version = version
        return self._records

    def _reread_dirty(self) -> None:
        """Read back the paths the committed transaction wrote (the lock is held)."""
        dirty, self._dirty = self._dirty, set()
        if self._records is None or not dirty:
            return
        if len(dirty) > _REREAD_MOST:
            self._records = None
            return
        paths = sorted(dirty)
        found: dict[str, Record | None] = dict.fromkeys(paths)
        for start in range(0, len(paths), 500):
            chunk = paths[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT {RECORD_COLUMNS} FROM files WHERE path IN ({marks})", chunk
            )
            found.update((row[0], Record(*_interned(row))) for row in rows)
        self._records = self._records.updated(found)

    def journal(
        self, paths: Iterable[str] = (), since: float | None = None, limit: int | None = None
    ) -> list[Entry]:
        with self._lock:
            return journal.read(self._db, paths=list(paths), since=since, limit=limit)

    def get_meta(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

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

    def journal_events(self, events: Iterable[tuple[Action, dict[str, Any]]]) -> None:
        """Rows for what happened outside this state's tables (batch jobs, pulled
        files), in one transaction."""
        now = time.time()
        with self._tx() as db:
            for action, fields in events:
                self._journal(db, action, now, **fields)


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _interned(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A files row with its id and name interned, as the listing's ids and names are
    (and the claims'): one string object per id across the process."""
    path, status, fid, purpose, name, *rest = row
    return (path, status, fid and sys.intern(fid), purpose, name and sys.intern(name), *rest)
