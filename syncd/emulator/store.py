"""Durable file store: metadata in SQLite, blobs as plain files under the data dir.

A single connection guarded by a lock keeps quota checks and inserts atomic; callers run
these methods in a worker thread so the event loop never waits on disk.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors

ID_PREFIX = {
    "file-extract": "file-fe-",
    "batch": "file-batch-",
    "batch_output": "file-batch_output-",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_by_account ON files (account, deleted, created_at, seq);
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

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
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
        self._closed = False

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
                " WHERE account = ? AND deleted = 0", (account,)).fetchone()
        return int(row[0]), int(row[1])

    def all_usage(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT account, COUNT(*), COALESCE(SUM(bytes), 0) FROM files"
                " WHERE deleted = 0 GROUP BY account").fetchall()
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def check_quota(self, account: str, size: int, max_files: int, max_bytes: int) -> None:
        count, total = self.usage(account)
        self._raise_if_over(count, total, size, max_files, max_bytes)

    @staticmethod
    def _raise_if_over(count: int, total: int, size: int, max_files: int, max_bytes: int) -> None:
        if count + 1 > max_files:
            raise errors.bad_request(errors.MSG_QUOTA_FILES, code=errors.CODE_QUOTA)
        if total + size > max_bytes:
            raise errors.bad_request(errors.MSG_QUOTA_BYTES, code=errors.CODE_QUOTA)

    def commit_upload(self, account: str, temp_path: Path, filename: str, purpose: str,
                      size: int, max_files: int, max_bytes: int) -> FileRecord:
        """Move a fully received temp file into the blob store and record it, quota permitting."""
        file_id = ID_PREFIX[purpose] + secrets.token_hex(12)
        blob = self.blob_path(file_id)
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM files"
                " WHERE account = ? AND deleted = 0", (account,)).fetchone()
            self._raise_if_over(int(row[0]), int(row[1]), size, max_files, max_bytes)
            os.replace(temp_path, blob)
            created_at = int(time.time())
            try:
                cur = self._db.execute(
                    "INSERT INTO files (id, account, bytes, created_at, filename, purpose)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (file_id, account, size, created_at, filename, purpose))
            except BaseException:
                blob.unlink(missing_ok=True)
                raise
            seq = cur.lastrowid
        assert seq is not None
        return FileRecord(seq, file_id, size, created_at, filename, purpose)

    def get(self, account: str, file_id: str) -> FileRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT seq, id, bytes, created_at, filename, purpose FROM files"
                " WHERE account = ? AND id = ? AND deleted = 0", (account, file_id)).fetchone()
        return FileRecord(*row) if row else None

    def delete(self, account: str, file_id: str) -> bool:
        # Deleted rows stay as tombstones so an `after` cursor naming a file deleted between
        # two list pages keeps working.
        with self._lock:
            cur = self._db.execute(
                "UPDATE files SET deleted = 1 WHERE account = ? AND id = ? AND deleted = 0",
                (account, file_id))
            if cur.rowcount == 0:
                return False
            self.blob_path(file_id).unlink(missing_ok=True)
        return True

    def cursor_position(self, account: str, file_id: str) -> tuple[int, int] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT created_at, seq FROM files WHERE account = ? AND id = ?",
                (account, file_id)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def list(self, account: str, *, limit: int, after: tuple[int, int] | None = None,
             purpose: str | None = None, create_after: int | None = None,
             create_before: int | None = None) -> tuple[list[FileRecord], bool]:
        """Newest first; `created_at` has one-second resolution so insertion order breaks ties."""
        sql = ["SELECT seq, id, bytes, created_at, filename, purpose FROM files"
               " WHERE account = ? AND deleted = 0"]
        args: list[Any] = [account]
        if after is not None:
            sql.append("AND (created_at < ? OR (created_at = ? AND seq < ?))")
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
        sql.append("ORDER BY created_at DESC, seq DESC LIMIT ?")
        args.append(limit + 1)
        with self._lock:
            rows = self._db.execute(" ".join(sql), args).fetchall()
        records = [FileRecord(*r) for r in rows[:limit]]
        return records, len(rows) > limit
