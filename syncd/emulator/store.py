"""Durable file store: metadata in SQLite, blobs as plain files under the data dir.

A single connection guarded by a lock keeps quota checks and inserts atomic; callers run
these methods in a worker thread so the event loop never waits on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS files_by_account ON files (account, deleted, created_at, seq);
-- Batch jobs: the object as served (JSON), its status for the lifecycle's queries, and
-- when (emulator clock, fractional seconds) it entered that status.
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    phase_since REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_account ON batches (account, created_at, seq);
CREATE INDEX IF NOT EXISTS batches_by_status ON batches (status, phase_since);
"""


def account_of(api_key: str) -> str:
    """Accounts are keyed by a key digest so raw keys never reach disk or responses."""
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class FileRecord:
    seq: int
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    expires_at: int | None = None

    def to_json(self, with_expiry: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }
        if with_expiry:
            body["expires_at"] = self.expires_at
        return body


_COLUMNS = "seq, id, bytes, created_at, filename, purpose, expires_at"
# A file is live until deleted or until the provider's clock reaches its expiry.
_LIVE = "deleted = 0 AND (expires_at IS NULL OR expires_at > ?)"


class Store:
    def __init__(self, data_dir: Path, clock: Callable[[], float] = time.time) -> None:
        """`clock` is the provider's clock: it stamps `created_at` and decides expiry."""
        self.data_dir = data_dir
        self._clock = clock
        self.blob_dir = data_dir / "blobs"
        self.tmp_dir = data_dir / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        # Partial uploads from a previous run can never complete.
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / "meta.sqlite3", check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(files)")}
        if "expires_at" not in columns:  # a data dir from before expiry existed
            self._db.execute("ALTER TABLE files ADD COLUMN expires_at INTEGER")
        self._closed = False

    def now(self) -> int:
        return int(self._clock())

    def clock(self) -> float:
        """The provider's clock, with its fraction (batch steps may be shorter than 1 s)."""
        return self._clock()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._db.close()
                self._closed = True

    def blob_path(self, file_id: str) -> Path:
        return self.blob_dir / file_id

    def new_temp_path(self) -> Path:
        return self.tmp_dir / f"upload-{secrets.token_hex(8)}"

    def usage(self, account: str) -> tuple[int, int]:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM files"
                f" WHERE account = ? AND {_LIVE}", (account, self.now())).fetchone()
        return int(row[0]), int(row[1])

    def all_usage(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT account, COUNT(*), COALESCE(SUM(bytes), 0) FROM files"
                f" WHERE {_LIVE} GROUP BY account", (self.now(),)).fetchall()
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    @staticmethod
    def _raise_if_over(count: int, total: int, size: int, max_files: int, max_bytes: int) -> None:
        if count + 1 > max_files:
            raise errors.bad_request(errors.MSG_QUOTA_FILES, code=errors.CODE_QUOTA)
        if total + size > max_bytes:
            raise errors.bad_request(errors.MSG_QUOTA_BYTES, code=errors.CODE_QUOTA)

    def commit_upload(self, account: str, temp_path: Path, file_id: str, filename: str,
                      purpose: str, size: int, max_files: int, max_bytes: int,
                      expires_in: int | None = None) -> FileRecord:
        """Move a fully received temp file into the blob store and record it, quota permitting."""
        blob = self.blob_path(file_id)
        with self._lock:
            created_at = self.now()
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM files"
                f" WHERE account = ? AND {_LIVE}", (account, created_at)).fetchone()
            self._raise_if_over(int(row[0]), int(row[1]), size, max_files, max_bytes)
            os.replace(temp_path, blob)
            expires_at = None if expires_in is None else created_at + expires_in
            try:
                cur = self._db.execute(
                    "INSERT INTO files (id, account, bytes, created_at, filename, purpose,"
                    " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (file_id, account, size, created_at, filename, purpose, expires_at))
            except BaseException:
                blob.unlink(missing_ok=True)
                raise
            seq = cur.lastrowid
        assert seq is not None
        return FileRecord(seq, file_id, size, created_at, filename, purpose, expires_at)

    def commit_generated(self, account: str, temp_path: Path, file_id: str, filename: str,
                         purpose: str, expires_in: int | None = None) -> FileRecord:
        """Store a file the provider made itself (a batch's output): like an upload, but
        never refused for quota (it counts toward it from then on)."""
        size = temp_path.stat().st_size
        return self.commit_upload(account, temp_path, file_id, filename, purpose, size,
                                  max_files=2**62, max_bytes=2**62, expires_in=expires_in)

    def get(self, account: str, file_id: str) -> FileRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE account = ? AND id = ? AND {_LIVE}",
                (account, file_id, self.now())).fetchone()
        return FileRecord(*row) if row else None

    def delete(self, account: str, file_id: str) -> bool:
        # Deleted rows stay as tombstones so an `after` cursor naming a file deleted between
        # two list pages keeps working.
        with self._lock:
            cur = self._db.execute(
                f"UPDATE files SET deleted = 1 WHERE account = ? AND id = ? AND {_LIVE}",
                (account, file_id, self.now()))
            if cur.rowcount == 0:
                return False
            self.blob_path(file_id).unlink(missing_ok=True)
        return True

    def expire(self, file_ids: list[str]) -> int:
        """Make files expire now, in any account; returns how many were live."""
        with self._lock:
            now = self.now()
            count = 0
            for file_id in file_ids:
                cur = self._db.execute(
                    f"UPDATE files SET expires_at = ? WHERE id = ? AND {_LIVE}",
                    (now, file_id, now))
                count += cur.rowcount
        return count

    def live_files(self) -> dict[str, list[FileRecord]]:
        """Every live file per account, newest first: the truth no fault touches."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT account, {_COLUMNS} FROM files WHERE {_LIVE}"
                " ORDER BY created_at DESC, seq DESC", (self.now(),)).fetchall()
        out: dict[str, list[FileRecord]] = {}
        for row in rows:
            out.setdefault(row[0], []).append(FileRecord(*row[1:]))
        return out

    def cursor_position(self, account: str, file_id: str) -> tuple[int, int] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT created_at, seq FROM files WHERE account = ? AND id = ?",
                (account, file_id)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def list(self, account: str, *, limit: int, after: tuple[int, int] | None = None,
             purpose: str | None = None, create_after: int | None = None,
             create_before: int | None = None, ascending: bool = False
             ) -> tuple[list[FileRecord], bool]:
        """Newest first unless `ascending`; `created_at` has one-second resolution, so
        insertion order breaks ties."""
        sql = [f"SELECT {_COLUMNS} FROM files WHERE account = ? AND {_LIVE}"]
        args: list[Any] = [account, self.now()]
        if after is not None:
            cmp = ">" if ascending else "<"
            sql.append(f"AND (created_at {cmp} ? OR (created_at = ? AND seq {cmp} ?))")
            args += [after[0], after[0], after[1]]
        if purpose is not None:
            sql.append("AND purpose = ?")
            args.append(purpose)
        if create_after is not None:
            sql.append("AND created_at >= ?")
            args.append(create_after)
        if create_before is not None:
            sql.append("AND created_at <= ?")
            args.append(create_before)
        direction = "ASC" if ascending else "DESC"
        sql.append(f"ORDER BY created_at {direction}, seq {direction} LIMIT ?")
        args.append(limit + 1)
        with self._lock:
            rows = self._db.execute(" ".join(sql), args).fetchall()
        records = [FileRecord(*r) for r in rows[:limit]]
        return records, len(rows) > limit


@dataclass(frozen=True)
class BatchRow:
    seq: int
    id: str
    account: str
    created_at: int
    status: str
    phase_since: float
    body: dict[str, Any]


_BATCH_COLUMNS = "seq, id, account, created_at, status, phase_since, body"


def _batch_row(row: tuple[Any, ...]) -> BatchRow:
    return BatchRow(int(row[0]), row[1], row[2], int(row[3]), row[4], float(row[5]),
                    json.loads(row[6]))


class BatchTable:
    """The batches table of a `Store`'s database, under the store's lock."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def insert(self, account: str, body: dict[str, Any], phase_since: float) -> None:
        s = self._store
        with s._lock:
            s._db.execute(
                "INSERT INTO batches (id, account, created_at, status, phase_since, body)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (body["id"], account, int(body["created_at"]), body["status"], phase_since,
                 json.dumps(body)))

    def update(self, body: dict[str, Any], phase_since: float) -> None:
        s = self._store
        with s._lock:
            s._db.execute(
                "UPDATE batches SET status = ?, phase_since = ?, body = ? WHERE id = ?",
                (body["status"], phase_since, json.dumps(body), body["id"]))

    def get(self, account: str | None, batch_id: str) -> BatchRow | None:
        s = self._store
        sql = f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = ?"
        args: list[Any] = [batch_id]
        if account is not None:
            sql += " AND account = ?"
            args.append(account)
        with s._lock:
            row = s._db.execute(sql, args).fetchone()
        return _batch_row(row) if row else None

    def in_status(self, statuses: tuple[str, ...]) -> list[BatchRow]:
        s = self._store
        marks = ", ".join("?" for _ in statuses)
        with s._lock:
            rows = s._db.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE status IN ({marks})"
                " ORDER BY phase_since, seq", statuses).fetchall()
        return [_batch_row(r) for r in rows]

    def cursor_position(self, account: str, batch_id: str) -> tuple[int, int] | None:
        s = self._store
        with s._lock:
            row = s._db.execute("SELECT created_at, seq FROM batches WHERE account = ? AND id = ?",
                                (account, batch_id)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def list(self, account: str | None, *, limit: int, after: tuple[int, int] | None = None
             ) -> tuple[list[BatchRow], bool]:
        """Newest first (insertion order breaks ties of `created_at`)."""
        sql = [f"SELECT {_BATCH_COLUMNS} FROM batches WHERE 1 = 1"]
        args: list[Any] = []
        if account is not None:
            sql.append("AND account = ?")
            args.append(account)
        if after is not None:
            sql.append("AND (created_at < ? OR (created_at = ? AND seq < ?))")
            args += [after[0], after[0], after[1]]
        sql.append("ORDER BY created_at DESC, seq DESC LIMIT ?")
        args.append(limit + 1)
        s = self._store
        with s._lock:
            rows = s._db.execute(" ".join(sql), args).fetchall()
        return [_batch_row(r) for r in rows[:limit]], len(rows) > limit
