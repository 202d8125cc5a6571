"""A project's side record beside its state: one SQLite file (batch jobs and pulls,
vector stores and attachments), in WAL mode and synced in full, written by one process
(the syncd that holds the state lock), every call under one lock so the daemon's
threads share it."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


class SideDB:
    def __init__(self, path: Path, schema: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(f"BEGIN IMMEDIATE;{schema}COMMIT;")  # one sync, not one a table

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """One statement (its own transaction); the rows it changed."""
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement over many rows, all or none."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
