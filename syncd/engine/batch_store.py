"""The record of batch jobs and pulled results: one SQLite file per project.

:class:`BatchStore` keeps the intents and their jobs, the duplicates found, and the
provider-made files pulled (or refused, or on their way when a crash interrupted
them); it is ``pull.PullLedger`` for :mod:`syncd.engine.pull`. The file is
``state_dir/batches.sqlite3``, written one small transaction per outcome (WAL,
``synchronous=FULL``), like the sync state. :func:`summary` reads it back for
``syncd status`` and the metrics. It records; the decisions are
:mod:`syncd.engine.batch_plan`'s and the step's (:mod:`syncd.engine.batches`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syncd.api.models import Batch, RequestCounts
from syncd.engine.batch_plan import INTENT, Job, SubmitRule
from syncd.engine.pull import InFlight, Pulled, PullItem
from syncd.engine.side_db import SideDB

STORE_NAME = "batches.sqlite3"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    intent TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    intended_at REAL NOT NULL,
    status TEXT NOT NULL,
    batch_id TEXT UNIQUE,
    created_at INTEGER NOT NULL DEFAULT 0,
    output_file_id TEXT,
    error_file_id TEXT,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    superseded INTEGER NOT NULL DEFAULT 0,
    cancel_sent INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0,
    first_miss REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    last_attempt REAL,
    updated_at REAL NOT NULL
);
-- One job per content and endpoint, whatever path holds it.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_content ON jobs (sha256, endpoint);
-- Jobs of ours found beyond the one an intent is bound to (cancelled when seen running).
CREATE TABLE IF NOT EXISTS duplicates (
    batch_id TEXT PRIMARY KEY,
    intent TEXT NOT NULL,
    seen_at REAL NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0
);
-- Provider-made files: pulled (state 'done'), refused, or on their way (a crash may have
-- interrupted them: 'downloading' into temp, 'placing' once downloaded).
CREATE TABLE IF NOT EXISTS pulls (
    file_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    name TEXT,
    temp TEXT,
    item TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    inode INTEGER NOT NULL DEFAULT 0,
    pulled_at REAL,
    batch_id TEXT,
    batch_created_at INTEGER NOT NULL DEFAULT 0,
    conflict TEXT,
    ours INTEGER NOT NULL DEFAULT 0,
    remote_deleted INTEGER NOT NULL DEFAULT 0,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS pulls_by_name ON pulls (name, state);
"""

_JOB_COLUMNS = (
    "intent, path, sha256, input_file_id, rule, endpoint, completion_window, intended_at,"
    " status, batch_id, created_at, output_file_id, error_file_id, total, completed, failed,"
    " superseded, cancel_sent, misses, first_miss, attempts, reason, last_attempt"
)
_PULL_COLUMNS = (
    "file_id, name, bytes, sha256, mtime_ns, inode, pulled_at, batch_id, batch_created_at,"
    " conflict, ours, remote_deleted"
)


def _job(row: Sequence[Any]) -> Job:
    return Job(
        intent=row[0], path=row[1], sha256=row[2], input_file_id=row[3], rule=row[4],
        endpoint=row[5], completion_window=row[6], intended_at=float(row[7]), status=row[8],
        batch_id=row[9], created_at=int(row[10]), output_file_id=row[11],
        error_file_id=row[12], counts=RequestCounts(int(row[13]), int(row[14]), int(row[15])),
        superseded=bool(row[16]), cancel_sent=bool(row[17]), misses=int(row[18]),
        first_miss=row[19], attempts=int(row[20]), reason=row[21], last_attempt=row[22],
    )  # fmt: skip


def _pulled(row: Sequence[Any]) -> Pulled:
    return Pulled(
        file_id=row[0], name=row[1], bytes=int(row[2]), sha256=row[3], mtime_ns=int(row[4]),
        inode=int(row[5]), pulled_at=float(row[6]), batch_id=row[7],
        batch_created_at=int(row[8]), conflict=row[9], ours=bool(row[10]),
        remote_deleted=bool(row[11]),
    )  # fmt: skip


class BatchStore:
    """Intents, jobs and pulls of one project (see the module doc). Implements
    ``pull.PullLedger``. One writer process: the syncd that holds the state lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = SideDB(path, _SCHEMA)
        # When a duplicate watch last listed (this process; a restart lists once more).
        self.last_watch = 0.0

    @classmethod
    def open(cls, state_dir: Path) -> BatchStore:
        return cls(state_dir / STORE_NAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._db.execute(sql, args)

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self._db.read(sql, args)

    # -- jobs --

    def jobs(self) -> list[Job]:
        rows = self._read(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY intended_at, intent")
        return [_job(r) for r in rows]

    def job(self, intent: str) -> Job | None:
        rows = self._read(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE intent = ?", (intent,))
        return _job(rows[0]) if rows else None

    def add_intent(
        self,
        path: str,
        content: str,
        input_file_id: str,
        rule: SubmitRule,
        now: float | None = None,
    ) -> Job:
        """Record that a job is about to be created (committed before the call)."""
        at = time.time() if now is None else now
        job = Job(intent=uuid.uuid4().hex, path=path, sha256=content,
                  input_file_id=input_file_id, rule=rule.label, endpoint=rule.endpoint,
                  completion_window=rule.completion_window, intended_at=at)  # fmt: skip
        self._write(
            "INSERT INTO jobs (intent, path, sha256, input_file_id, rule, endpoint,"
            " completion_window, intended_at, status, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.intent, path, content, input_file_id, job.rule, job.endpoint,
             job.completion_window, at, INTENT, at),
        )  # fmt: skip
        return job

    def note_attempt(self, intent: str, now: float) -> None:
        """A create call is about to be sent for ``intent``."""
        self._write(
            "UPDATE jobs SET attempts = attempts + 1, last_attempt = ?, status = ?, misses = 0,"
            " first_miss = NULL, updated_at = ? WHERE intent = ?",
            (now, INTENT, now, intent),
        )

    def mark(self, intent: str, status: str, reason: str | None = None) -> None:
        self._write("UPDATE jobs SET status = ?, reason = ?, updated_at = ? WHERE intent = ?",
                    (status, reason, time.time(), intent))  # fmt: skip

    def missed(self, intent: str, now: float) -> Job | None:
        """A listing did not show the job of ``intent``."""
        self._write(
            "UPDATE jobs SET misses = misses + 1, first_miss = COALESCE(first_miss, ?),"
            " updated_at = ? WHERE intent = ?",
            (now, now, intent),
        )
        return self.job(intent)

    def drop_intent(self, intent: str) -> None:
        """Forget an intent whose create made no job (refused before any was made)."""
        self._write("DELETE FROM jobs WHERE intent = ? AND batch_id IS NULL", (intent,))

    def bind(self, intent: str, batch: Batch) -> None:
        """The job of ``intent`` is ``batch``, as the provider described it."""
        c = batch.request_counts
        reason = _failure(batch)
        self._write(
            "UPDATE jobs SET batch_id = ?, status = ?, created_at = ?, output_file_id = ?,"
            " error_file_id = ?, total = ?, completed = ?, failed = ?, reason = ?,"
            " updated_at = ? WHERE intent = ?",
            (batch.id, batch.status, batch.created_at, batch.output_file_id,
             batch.error_file_id, c.total, c.completed, c.failed, reason, time.time(), intent),
        )  # fmt: skip

    def supersede(self, intent: str) -> None:
        self._write("UPDATE jobs SET superseded = 1, updated_at = ? WHERE intent = ?",
                    (time.time(), intent))  # fmt: skip

    def cancel_sent(self, intent: str) -> None:
        self._write("UPDATE jobs SET cancel_sent = 1, updated_at = ? WHERE intent = ?",
                    (time.time(), intent))  # fmt: skip

    def note_duplicate(self, batch_id: str, intent: str) -> bool:
        """A second job of ``intent``; True if it was not known before."""
        return self._write(
            "INSERT OR IGNORE INTO duplicates (batch_id, intent, seen_at) VALUES (?, ?, ?)",
            (batch_id, intent, time.time()),
        ) > 0

    def duplicate_cancelled(self, batch_id: str) -> None:
        self._write("UPDATE duplicates SET cancelled = 1 WHERE batch_id = ?", (batch_id,))

    def duplicates(self) -> list[tuple[str, str, bool]]:
        rows = self._read("SELECT batch_id, intent, cancelled FROM duplicates ORDER BY seen_at")
        return [(r[0], r[1], bool(r[2])) for r in rows]

    # -- pulls (pull.PullLedger) --

    def pulled_ids(self) -> set[str]:
        rows = self._read(
            "SELECT file_id FROM pulls WHERE state IN ('done', 'refused', 'removed')"
        )
        return {r[0] for r in rows}

    def holder(self, name: str) -> Pulled | None:
        rows = self._read(
            f"SELECT {_PULL_COLUMNS} FROM pulls WHERE name = ? AND state = 'done'"
            " ORDER BY pulled_at DESC LIMIT 1",
            (name,),
        )
        return _pulled(rows[0]) if rows else None

    def held_names(self) -> dict[str, int]:
        """Outbox names holding a job's result -> the newest such job's created_at."""
        rows = self._read(
            "SELECT name, MAX(batch_created_at) FROM pulls WHERE state = 'done'"
            " AND conflict IS NULL AND batch_id IS NOT NULL GROUP BY name"
        )
        return {r[0]: int(r[1]) for r in rows}

    def note_downloading(self, file_id: str, temp: str, item: PullItem) -> None:
        self._write(
            "INSERT OR REPLACE INTO pulls (file_id, state, temp, item)"
            " VALUES (?, 'downloading', ?, ?)",
            (file_id, temp, json.dumps(_item_json(item))),
        )

    def note_placing(self, file_id: str, dest: str, sha256: str, conflict: str | None) -> None:
        self._write(
            "UPDATE pulls SET state = 'placing', name = ?, sha256 = ?, conflict = ?"
            " WHERE file_id = ?",
            (dest, sha256, conflict, file_id),
        )

    def in_flight(self) -> list[InFlight]:
        rows = self._read(
            "SELECT file_id, temp, state, name, sha256, item, conflict FROM pulls"
            " WHERE state IN ('downloading', 'placing')"
        )
        out = []
        for file_id, temp, state, name, sha256, item, conflict in rows:
            placing = state == "placing"
            out.append(InFlight(file_id=file_id, temp=temp, dest=name if placing else None,
                                sha256=sha256 if placing else None,
                                item=_item_from(item) if item else None,
                                conflict=conflict))  # fmt: skip
        return out

    def forget_in_flight(self, file_id: str) -> None:
        self._write("DELETE FROM pulls WHERE file_id = ? AND state IN ('downloading', 'placing')",
                    (file_id,))  # fmt: skip

    def record_pulled(self, pulled: Pulled) -> None:
        self._write(
            "INSERT OR REPLACE INTO pulls (file_id, state, name, bytes, sha256, mtime_ns, inode,"
            " pulled_at, batch_id, batch_created_at, conflict, ours, remote_deleted)"
            " VALUES (?, 'done', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (pulled.file_id, pulled.name, pulled.bytes, pulled.sha256, pulled.mtime_ns,
             pulled.inode, pulled.pulled_at, pulled.batch_id, pulled.batch_created_at,
             pulled.conflict, int(pulled.ours), int(pulled.remote_deleted)),
        )  # fmt: skip

    def record_refused(self, file_id: str, reason: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO pulls (file_id, state, reason, pulled_at)"
            " VALUES (?, 'refused', ?, ?)",
            (file_id, reason, time.time()),
        )

    def pending_remote_deletes(self) -> list[Pulled]:
        rows = self._read(
            f"SELECT {_PULL_COLUMNS} FROM pulls WHERE state = 'done' AND ours = 1"
            " AND remote_deleted = 0 ORDER BY pulled_at"
        )
        return [_pulled(r) for r in rows]

    def record_remote_deleted(self, file_id: str) -> None:
        self._write("UPDATE pulls SET remote_deleted = 1 WHERE file_id = ?", (file_id,))

    def record_removed(self, file_id: str) -> None:
        """A pulled file syncd removed from the outbox (a newer run's results replaced
        it): still pulled (never again), no longer holding its name."""
        self._write("UPDATE pulls SET state = 'removed' WHERE file_id = ? AND state = 'done'",
                    (file_id,))  # fmt: skip

    def pulls(self) -> list[Pulled]:
        rows = self._read(f"SELECT {_PULL_COLUMNS} FROM pulls WHERE state = 'done'"
                          " ORDER BY pulled_at")  # fmt: skip
        return [_pulled(r) for r in rows]

    def refused(self) -> list[tuple[str, str]]:
        rows = self._read("SELECT file_id, reason FROM pulls WHERE state = 'refused'")
        return [(r[0], r[1] or "") for r in rows]


def _item_json(item: PullItem) -> dict[str, Any]:
    return {"file_id": item.file_id, "bytes": item.bytes, "name": item.name, "kind": item.kind,
            "batch_id": item.batch_id, "batch_created_at": item.batch_created_at,
            "input_path": item.input_path}  # fmt: skip


def _item_from(text: str) -> PullItem:
    d = json.loads(text)
    return PullItem(file_id=d["file_id"], bytes=int(d["bytes"]), name=d["name"], kind=d["kind"],
                    batch_id=d.get("batch_id"),
                    batch_created_at=int(d.get("batch_created_at") or 0),
                    input_path=d.get("input_path"))  # fmt: skip


def _failure(batch: Batch) -> str | None:
    if batch.status != "failed" or not batch.errors:
        return None
    first = batch.errors[0]
    where = f"line {first.line}: " if first.line else ""
    more = f" (and {len(batch.errors) - 1} more)" if len(batch.errors) > 1 else ""
    return f"{where}{first.message or first.code}{more}"


def summary(store: BatchStore) -> dict[str, Any]:
    """For ``syncd status`` and the metrics: jobs by status, each job, pulled files."""
    jobs = store.jobs()
    pulls = store.pulls()
    return {
        "jobs": dict(Counter(j.status for j in jobs)),
        "job_list": [
            {"path": j.path, "status": j.status, "batch_id": j.batch_id,
             "endpoint": j.endpoint, "total": j.counts.total,
             "completed": j.counts.completed, "failed": j.counts.failed,
             "superseded": j.superseded, "reason": j.reason}
            for j in jobs
        ],
        "pulled": len(pulls),
        "pulled_bytes": sum(p.bytes for p in pulls),
        "conflicts": [{"file_id": p.file_id, "name": p.name, "reason": p.conflict}
                      for p in pulls if p.conflict],
        "refused": [{"file_id": f, "reason": r} for f, r in store.refused()],
        "duplicates": [{"batch_id": b, "cancelled": c} for b, _, c in store.duplicates()],
    }  # fmt: skip
