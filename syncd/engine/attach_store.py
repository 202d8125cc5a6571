"""The record of vector stores and attachments: one SQLite file per project.

``state_dir/attachments.sqlite3`` keeps the stores syncd created by name (an intent first,
then the id: a crash or a lost answer between the two is resolved by listing the stores
for the name and owner the intent carries), and every attachment syncd made or meant to
make: an ``intent`` row is written before the file batch that makes it is sent, so after
a crash the ids it names count as ours when the store is listed (no stray survives), and
since a store holds an id once, sending it again makes no duplicate. Each row then holds
the provider's status and ``last_error``, as last listed, and the paths it serves. Written
one small transaction per outcome (WAL, ``synchronous=FULL``), like the sync state.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.engine.side_db import SideDB

STORE_NAME = "attachments.sqlite3"
INTENT = "intent"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
    name TEXT PRIMARY KEY,
    store_id TEXT,
    intended_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attached (
    store_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    status TEXT NOT NULL,
    last_error TEXT,
    paths TEXT NOT NULL DEFAULT '[]',
    batch_id TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (store_id, file_id)
);
"""


@dataclass(frozen=True)
class Attachment:
    store_id: str
    file_id: str
    status: str
    last_error: str | None
    paths: tuple[str, ...]


class AttachStore:
    """Stores and attachments of one project (see the module doc). One writer process:
    the syncd that holds the state lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = SideDB(path, _SCHEMA)
        # Bumped by every write: the mapping is rebuilt only when it moved.
        self.generation = 0

    @classmethod
    def open(cls, state_dir: Path) -> AttachStore:
        return cls(state_dir / STORE_NAME)

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.execute_many(sql, rows)
        self.generation += 1

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self._db.read(sql, args)

    # -- stores made by name --

    def store_ids(self) -> dict[str, str]:
        """name -> id of every store syncd created or found by name."""
        rows = self._read("SELECT name, store_id FROM stores WHERE store_id IS NOT NULL")
        return {str(n): str(i) for n, i in rows}

    def intend_store(self, name: str) -> None:
        self._write("INSERT OR IGNORE INTO stores (name, store_id, intended_at)"
                    " VALUES (?, NULL, ?)", [(name, time.time())])

    def bind_store(self, name: str, store_id: str) -> None:
        self._write("INSERT INTO stores (name, store_id, intended_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET store_id = excluded.store_id",
                    [(name, store_id, time.time())])

    # -- attachments --

    def attachments(self) -> list[Attachment]:
        rows = self._read("SELECT store_id, file_id, status, last_error, paths FROM attached"
                          " ORDER BY store_id, file_id")
        return [Attachment(r[0], r[1], r[2], r[3], tuple(json.loads(r[4]))) for r in rows]

    def ours(self) -> dict[str, set[str]]:
        """store -> every id we attached there or meant to."""
        out: dict[str, set[str]] = {}
        for store_id, file_id in self._read("SELECT store_id, file_id FROM attached"):
            out.setdefault(store_id, set()).add(file_id)
        return out

    def intend(self, store_id: str, items: Iterable[tuple[str, Sequence[str]]]) -> None:
        """Before a batch is sent: each (file id, paths) becomes ours in this store."""
        now = time.time()
        self._write(
            "INSERT INTO attached (store_id, file_id, status, paths, updated_at)"
            " VALUES (?, ?, 'intent', ?, ?) ON CONFLICT (store_id, file_id) DO UPDATE SET"
            " status = 'intent', last_error = NULL, paths = excluded.paths,"
            " updated_at = excluded.updated_at",
            [(store_id, fid, json.dumps(list(paths)), now) for fid, paths in items])

    def sent(self, store_id: str, file_ids: Iterable[str], batch_id: str) -> None:
        self._write("UPDATE attached SET status = 'in_progress', batch_id = ?, updated_at = ?"
                    " WHERE store_id = ? AND file_id = ?",
                    [(batch_id, time.time(), store_id, f) for f in file_ids])

    def observed(self, store_id: str, statuses: Iterable[tuple[str, str, str | None]]) -> None:
        """The provider's (file id, status, last_error) of ours, as listed."""
        self._write("UPDATE attached SET status = ?, last_error = ?, updated_at = ?"
                    " WHERE store_id = ? AND file_id = ? AND (status != ? OR"
                    " IFNULL(last_error, '') != IFNULL(?, ''))",
                    [(s, e, time.time(), store_id, f, s, e) for f, s, e in statuses])

    def set_paths(self, store_id: str, paths: Iterable[tuple[str, Sequence[str]]]) -> None:
        self._write("UPDATE attached SET paths = ? WHERE store_id = ? AND file_id = ?"
                    " AND paths != ?",
                    [(json.dumps(list(p)), store_id, f, json.dumps(list(p))) for f, p in paths])

    def forget(self, store_id: str, file_ids: Iterable[str]) -> None:
        """Detached (or never made): no longer ours in this store."""
        self._write("DELETE FROM attached WHERE store_id = ? AND file_id = ?",
                    [(store_id, f) for f in file_ids])

    def by_path(self) -> dict[str, dict[str, str]]:
        """path -> store id -> status: where each path is searchable, and whether yet."""
        out: dict[str, dict[str, str]] = {}
        for a in self.attachments():
            for path in a.paths:
                out.setdefault(path, {})[a.store_id] = a.status
        return out


def summary(store: AttachStore) -> dict[str, Any]:
    """For ``syncd status`` and the metrics: attachments by status, each failure."""
    rows = store.attachments()
    return {
        "stores": store.store_ids(),
        "attachments": dict(Counter(a.status for a in rows)),
        "failed": [{"store_id": a.store_id, "file_id": a.file_id, "paths": list(a.paths),
                    "reason": a.last_error} for a in rows if a.status == "failed"],
    }
