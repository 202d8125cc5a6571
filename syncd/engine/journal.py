"""What syncd did, and why: the journal kept in the state database.

Every upload, refresh, adoption, share, delete, held delete and change of a file's
status is one row, with its time, path, file id, size, reason and the run it
belongs to (a one-off reconcile, a daemon's batch of changes, a scheduled
reconcile...). A row is written in the transaction of the outcome it records, so a
crash keeps both or neither. The journal is bounded by count and by age; the
oldest rows go first. ``syncd log`` reads it.

Functions here take the state's open connection: the State decides when, this
module decides what a row holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    started_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    run INTEGER,
    action TEXT NOT NULL,
    path TEXT,
    file_id TEXT,
    bytes INTEGER,
    status TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS journal_path ON journal (path);
CREATE INDEX IF NOT EXISTS journal_at ON journal (at);
"""

# What a row records. ``status``: a file's status changed (invalid, quota, error...);
# ``held``: a guard refused its delete; ``submitted``: a batch job was created for an
# input, ``pulled``: a provider-made file came home to the outbox (``reason``: a
# conflict copy and why); ``attached``, ``detached``, ``attach_failed``: a file id joined
# or left a vector store, or the provider failed to process it there (``reason``: the
# store and the provider's error); the others are what happened to a file's remote copy.
Action = Literal[
    "uploaded", "refreshed", "adopted", "shared", "deleted", "held", "status", "submitted",
    "pulled", "attached", "detached", "attach_failed",
]

# The bounds: rows beyond the newest MAX_ROWS, or older than MAX_AGE_S, are dropped.
MAX_ROWS = 100_000
MAX_AGE_S = 90 * 86_400.0
# Rows written between two prunings (each run prunes at its start, and long runs
# every this many rows, so the bound holds while a 100,000-file first sync runs): the
# State that writes them counts.
PRUNE_EVERY = 5_000


@dataclass(frozen=True, slots=True)
class Entry:
    """One row, as ``syncd log`` shows it."""

    seq: int
    at: float
    run: int | None
    run_kind: str | None
    action: str
    path: str | None
    file_id: str | None
    bytes: int | None
    status: str | None
    reason: str | None


def begin_run(db: sqlite3.Connection, kind: str, now: float) -> int:
    cursor = db.execute("INSERT INTO runs (kind, started_at) VALUES (?, ?)", (kind, now))
    return int(cursor.lastrowid or 0)


def add(
    db: sqlite3.Connection,
    run: int | None,
    action: Action,
    now: float,
    *,
    path: str | None = None,
    file_id: str | None = None,
    size: int | None = None,
    status: str | None = None,
    reason: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO journal (at, run, action, path, file_id, bytes, status, reason) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (now, run, action, path, file_id, size, status, reason),
    )


def prune(
    db: sqlite3.Connection, now: float, *, max_rows: int = MAX_ROWS, max_age_s: float = MAX_AGE_S
) -> None:
    """Drop what is beyond the bounds (the oldest first), and runs no row names. Room
    is left for the rows written until the next pruning, so the count never exceeds
    ``max_rows``."""
    db.execute(
        "DELETE FROM journal WHERE at < ? OR seq <= (SELECT MAX(seq) FROM journal) - ?",
        (now - max_age_s, max(max_rows - PRUNE_EVERY, 0)),
    )
    db.execute(
        "DELETE FROM runs WHERE started_at < ? AND id NOT IN "
        "(SELECT DISTINCT run FROM journal WHERE run IS NOT NULL)",
        (now - 86_400.0,),
    )


def read(
    db: sqlite3.Connection,
    *,
    paths: Sequence[str] = (),
    since: float | None = None,
    limit: int | None = None,
) -> list[Entry]:
    """Rows oldest first; ``paths`` narrows to those paths and what is under them;
    ``limit`` keeps the newest ones."""
    where: list[str] = []
    args: list[object] = []
    if paths:
        alternatives = []
        for p in paths:
            # Under a folder: the path itself or anything below it (LIKE's wildcards in a
            # name are escaped, so a literal % or _ matches only itself).
            escaped = p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            alternatives.append("(j.path = ? OR j.path LIKE ? ESCAPE '\\')")
            args += [p, escaped.rstrip("/") + "/%"]
        where.append("(" + " OR ".join(alternatives) + ")")
    if since is not None:
        where.append("j.at >= ?")
        args.append(since)
    sql = (
        "SELECT j.seq, j.at, j.run, r.kind, j.action, j.path, j.file_id, j.bytes, j.status, "
        "j.reason FROM journal j LEFT JOIN runs r ON r.id = j.run"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY j.seq DESC"
        + (" LIMIT ?" if limit is not None else "")
    )
    if limit is not None:
        args.append(limit)
    rows = db.execute(sql, args).fetchall()
    return [Entry(*row) for row in reversed(rows)]
