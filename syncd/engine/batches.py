"""Batch jobs over synced inputs, and their results pulled home.

One entry point, :func:`step`, called once per reconcile or poll:

1. **Finish what a crash or a lost answer left**: pulls half done (``pull.recover``),
   intents whose job we never heard of. An intent is recorded (committed) *before* its
   create call and travels in the job's metadata (``syncd_intent``, and on DashScope
   ``ds_name: "syncd:<intent>"`` too); a job is found again by listing batches and
   matching it, never created a second time while it may exist. Only when
   ``confirm_listings`` listings over at least ``confirm_s`` seconds have not shown it is
   it created again, with the same intent, and a duplicate that shows up later after all
   is cancelled.
2. **Follow our jobs** (retrieve each one not yet ended) and cancel those whose input
   changed since (``cancel_superseded``).
3. **Submit**: each synced input a ``SubmitRule`` selects, identified by its content
   (sha256) and the rule's endpoint, gets exactly one job, within the rule's
   ``max_per_day``.
4. **Pull** the provider-made files into the outbox (:mod:`syncd.engine.pull`).

The decisions (:func:`plan_submit`, ``pull.plan_pull``) are pure functions of the store,
the known inputs and what the provider listed; the rest is I/O. With ``dry_run`` the step
lists (reads) but records, creates, cancels, downloads and deletes nothing, and reports
what it would do.

The store is a SQLite file of its own (``state_dir/batches.sqlite3``), written one small
transaction per outcome (WAL, ``synchronous=FULL``), like the sync state.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import structlog
from wcmatch import glob

from syncd.api.errors import (
    AmbiguousCreateError,
    APIError,
    InvalidRequestError,
    NotFoundError,
)
from syncd.api.models import BATCH_TERMINAL, Batch, Downloaded, RemoteFile, RequestCounts
from syncd.engine.pull import (
    Attribution,
    InFlight,
    Kind,
    PullConfig,
    Pulled,
    PullItem,
    PullOutcome,
    plan_pull,
    recover,
    remove_stale,
    result_name,
    run_pull,
)

log = structlog.get_logger(__name__)

STORE_NAME = "batches.sqlite3"
# Metadata keys a job carries: our intent, and the content it was made for.
INTENT_KEY = "syncd_intent"
SHA_KEY = "syncd_sha256"
# DashScope's documented display-name key (<= 100 characters): "syncd:<intent>".
DS_NAME_KEY = "ds_name"
DS_DESCRIPTION_KEY = "ds_description"
DS_NAME_PREFIX = "syncd:"
DAY_S = 86_400.0
# How far before an intent (our clock) its job may be stamped (the provider's clock).
CLOCK_SLACK_S = 3_600.0
# A job that was created more than once is watched for a late duplicate this long, with
# a listing at most every WATCH_EVERY_S.
WATCH_S = 3_600.0
WATCH_EVERY_S = 60.0
# Local statuses before the provider's: recorded, create not answered / answer lost.
INTENT = "intent"
AMBIGUOUS = "ambiguous"
# Local terminal statuses: the provider refused the create; the job vanished.
REFUSED = "refused"
GONE = "gone"
LOCAL_TERMINAL = frozenset({REFUSED, GONE})
_GLOB_FLAGS = glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB | glob.IGNORECASE


# ---- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitRule:
    """``batch:`` of a purpose rule: inputs it selects run as jobs on ``endpoint``."""

    patterns: tuple[str, ...]
    endpoint: str
    completion_window: str = "24h"
    # Jobs this rule may create in any 24 hours (intents counted when recorded).
    max_per_day: int = 100
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or ",".join(self.patterns)

    def matches(self, path: str) -> bool:
        anchored = [p if "/" in p else f"**/{p}" for p in self.patterns]
        return bool(glob.globmatch(path, anchored, flags=_GLOB_FLAGS))


@dataclass(frozen=True)
class BatchesConfig:
    pull: PullConfig | None = None
    submit: tuple[SubmitRule, ...] = ()
    # Cancel a job still running when its input changed (a new job runs for the new content).
    cancel_superseded: bool = True
    # An intent no listing shows is created again after this many listings spanning at
    # least confirm_s seconds (a listing may leave a job out).
    confirm_listings: int = 3
    confirm_s: float = 5.0
    # Pages of batches (100 each) one step may list.
    max_batch_pages: int = 10
    # Which metadata a job carries: our own keys (syncd_intent, syncd_sha256), and/or
    # DashScope's documented ds_name / ds_description ("syncd:<intent>", "syncd sha256=…").
    # Either finds a job again. Whether DashScope keeps keys other than its ds_* ones is
    # unconfirmed: with syncd_keys off, only those are sent.
    syncd_keys: bool = True
    ds_name: bool = True
    # More running jobs than this are followed by listing batches instead of one
    # retrieve each.
    poll_retrieve_max: int = 5


@dataclass(frozen=True)
class KnownInput:
    """A synced input: its remote id and content hash (None: unknown, the id stands in)."""

    file_id: str
    sha256: str | None = None

    @property
    def content(self) -> str:
        return self.sha256 or f"id:{self.file_id}"


# ---- the store -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One intent and, once known, its job."""

    intent: str
    path: str
    sha256: str
    input_file_id: str
    rule: str
    endpoint: str
    completion_window: str
    intended_at: float
    status: str = INTENT
    batch_id: str | None = None
    created_at: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: RequestCounts = field(default_factory=RequestCounts)
    superseded: bool = False
    cancel_sent: bool = False
    misses: int = 0
    first_miss: float | None = None
    attempts: int = 0
    reason: str | None = None
    last_attempt: float | None = None

    @property
    def bound(self) -> bool:
        return self.batch_id is not None

    @property
    def ended(self) -> bool:
        return self.status in BATCH_TERMINAL or self.status in LOCAL_TERMINAL

    @property
    def running(self) -> bool:
        """Bound to a job the provider has not finished."""
        return self.bound and not self.ended

    def as_batch(self) -> Batch:
        assert self.batch_id is not None
        return Batch(id=self.batch_id, status=self.status, endpoint=self.endpoint,
                     input_file_id=self.input_file_id, completion_window=self.completion_window,
                     created_at=self.created_at, output_file_id=self.output_file_id,
                     error_file_id=self.error_file_id, request_counts=self.counts)  # fmt: skip


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
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        # When a duplicate watch last listed (this process; a restart lists once more).
        self.last_watch = 0.0

    @classmethod
    def open(cls, state_dir: Path) -> BatchStore:
        return cls(state_dir / STORE_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

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

    def jobs_created_since(self, rule: str, since: float) -> int:
        rows = self._read("SELECT COUNT(*) FROM jobs WHERE rule = ? AND intended_at > ?",
                          (rule, since))  # fmt: skip
        return int(rows[0][0])

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


# ---- deciding ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewJob:
    path: str
    content: str
    input_file_id: str
    rule: SubmitRule


@dataclass
class SubmitPlan:
    create: list[NewJob] = field(default_factory=list)
    deferred: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    supersede: list[Job] = field(default_factory=list)
    cancel: list[Job] = field(default_factory=list)


def rule_for(path: str, rules: Sequence[SubmitRule]) -> SubmitRule | None:
    for rule in rules:
        if rule.matches(path):
            return rule
    return None


def plan_submit(
    known: Mapping[str, KnownInput],
    rules: Sequence[SubmitRule],
    jobs: Sequence[Job],
    *,
    now: float,
    cancel_superseded: bool = True,
) -> SubmitPlan:
    """What jobs to create, defer (the daily cap), mark superseded and cancel.

    A content (sha256) and endpoint that any job, in any status, was made for gets no
    other: an unchanged file never runs twice, whatever its path, and a job that failed is
    not retried (editing the file runs it again). A job is superseded when the path it
    was made for holds other content now and no synced path holds its content."""
    plan = SubmitPlan()
    taken = {(j.sha256, j.endpoint) for j in jobs}
    day = Counter(j.rule for j in jobs if j.intended_at > now - DAY_S)
    for path in sorted(known):
        rule = rule_for(path, rules)
        if rule is None:
            continue
        key = (known[path].content, rule.endpoint)
        if key in taken:
            continue
        if day[rule.label] >= rule.max_per_day:
            why = (f"the rule's max_per_day ({rule.max_per_day}) is reached; it runs when"
                   " the day's count allows")
            plan.deferred.append((path, why))
            continue
        taken.add(key)
        day[rule.label] += 1
        plan.create.append(NewJob(path, known[path].content, known[path].file_id, rule))
    held = {k.content for k in known.values()}
    for job in jobs:
        current = known.get(job.path)
        if job.superseded or current is None or current.content == job.sha256:
            continue
        if job.sha256 not in held:
            plan.supersede.append(job)
    if cancel_superseded:
        superseded = {j.intent for j in plan.supersede}
        plan.cancel = [
            j for j in jobs
            if (j.superseded or j.intent in superseded) and j.running and not j.cancel_sent
        ]  # fmt: skip
    return plan


def intent_of(batch: Batch) -> str | None:
    """The intent a job was created for, by either key it carries."""
    intent = batch.meta(INTENT_KEY)
    if intent:
        return intent
    name = batch.meta(DS_NAME_KEY) or ""
    return name[len(DS_NAME_PREFIX):] or None if name.startswith(DS_NAME_PREFIX) else None


def job_metadata(job: Job, ds_name: bool = True, syncd_keys: bool = True) -> dict[str, str]:
    """The metadata a job of ``job``'s intent is created with (see BatchesConfig)."""
    meta: dict[str, str] = {}
    if syncd_keys or not ds_name:
        meta.update({INTENT_KEY: job.intent, SHA_KEY: job.sha256[:64]})
    if ds_name:
        meta[DS_NAME_KEY] = DS_NAME_PREFIX + job.intent
        meta[DS_DESCRIPTION_KEY] = f"syncd sha256={job.sha256[:64]}"
    return meta


# ---- the step ------------------------------------------------------------------------------


class BatchRemote(Protocol):
    """What a step needs of the client (``FilesClient`` is one)."""

    def iter_files(
        self, *, purpose: str | None = None, page_size: int | None = None
    ) -> Iterator[RemoteFile]: ...

    def list_batches(self, *, page_size: int = ...) -> Iterator[Batch]: ...

    def retrieve_batch(self, batch_id: str) -> Batch: ...

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str = ...,
        metadata: dict[str, str] | None = None,
    ) -> Batch: ...

    def cancel_batch(self, batch_id: str) -> Batch: ...

    def download(
        self, file_id: str, dest: BinaryIO, *, size: int | None = None, purpose: str | None = None
    ) -> Downloaded: ...

    def delete(self, file_id: str) -> None: ...


@dataclass(frozen=True)
class JobView:
    path: str
    status: str
    batch_id: str | None
    endpoint: str
    counts: RequestCounts
    superseded: bool = False
    reason: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None


@dataclass
class Report:
    """What a step did (or, in a dry run, would do)."""

    dry_run: bool = False
    submitted: list[tuple[str, str | None]] = field(default_factory=list)  # (path, batch id)
    adopted: list[tuple[str, str]] = field(default_factory=list)  # found again after a loss
    deferred: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    cancelled: list[tuple[str, str]] = field(default_factory=list)  # superseded (path, batch)
    duplicates: list[str] = field(default_factory=list)  # extra jobs of ours, cancelled
    pulled: list[tuple[str, str]] = field(default_factory=list)  # (file id, outbox name)
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)  # (id, name, why)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file id, why)
    deleted_remote: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # stale results replaced by a newer run
    errors: list[tuple[str, str]] = field(default_factory=list)  # (what, message)
    jobs: list[JobView] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``--json``)."""
        return asdict(self)

    @property
    def pending(self) -> bool:
        """Jobs still running or to be resolved: the caller should step again later."""
        return any(j.status not in BATCH_TERMINAL and j.status not in LOCAL_TERMINAL
                   for j in self.jobs)  # fmt: skip


def step(
    client: BatchRemote,
    store: BatchStore,
    config: BatchesConfig,
    known_inputs: Mapping[str, KnownInput],
    *,
    dry_run: bool = False,
    remote_files: Iterable[RemoteFile] | None = None,
    now: float | None = None,
) -> Report:
    """One pass (see the module doc). ``known_inputs``: root-relative path -> input, for
    the synced files of purpose batch. ``remote_files``: the account's listing when the
    caller has one (else the step lists the pull purposes itself). Failures of single calls
    are reported in ``Report.errors``; the next step carries on from the store."""
    at = time.time() if now is None else now
    report = Report(dry_run=dry_run)
    outcome = PullOutcome()
    if config.pull is not None and not dry_run:
        recover(store, config.pull.outbox, outcome)
    if not dry_run:
        _poll(client, store, config, report)
    jobs = store.jobs()
    pending = [j for j in jobs if not j.bound and j.status in (INTENT, AMBIGUOUS)]

    candidates: list[RemoteFile] = []
    attribution = Attribution()
    for job in jobs:
        if job.bound:
            attribution.add(job.as_batch())
    if config.pull is not None:
        candidates = _pull_candidates(client, store, config.pull, remote_files)
    unattributed = {r.id for r in candidates if r.id not in attribution.results}
    watch = _watching(store, jobs, at)

    listed: list[Batch] | None = None
    if pending or unattributed or watch:
        listed = _list_batches(client, config, pending, unattributed, watch, at, report)
        if listed is not None and watch:
            store.last_watch = at
    if listed is not None:
        for batch in listed:
            attribution.add(batch)
        if not dry_run:
            _resolve(client, store, config, pending, listed, at, report)
    elif pending:
        log.info("batches.resolve_deferred", intents=len(pending))

    _submit(client, store, config, known_inputs, at, dry_run, report)

    if config.pull is not None:
        inputs = {j.input_file_id: j.path for j in store.jobs()}
        inputs.update({k.file_id: path for path, k in known_inputs.items()})
        items = plan_pull(candidates, attribution, inputs, store.pulled_ids(),
                          store.held_names(), config.pull)  # fmt: skip
        if dry_run:
            report.pulled = [(i.file_id, i.name) for i in items]
        else:
            run_pull(client, store, config.pull, items, outcome)
            report.pulled = [(p.file_id, p.name) for p in outcome.pulled]
            report.conflicts = [(p.file_id, p.name, p.conflict) for p in outcome.pulled
                                if p.conflict]  # fmt: skip
            report.refused = outcome.refused
            report.deleted_remote = outcome.deleted_remote
            report.removed = _prune_stale(store, config.pull.outbox)
            report.errors += [(f"pull {fid}", msg) for fid, msg in outcome.errors]
    report.jobs = [_view(j) for j in store.jobs()]
    return report


def _prune_stale(store: BatchStore, outbox: Path) -> list[str]:
    """After an input's newest job completed: its results replace the older run's, so an
    older output or error file it has no counterpart of goes too (when unchanged)."""
    latest: dict[str, Job] = {}
    for job in store.jobs():
        latest[job.path] = job  # ordered by intended_at: the last one wins
    removed = []
    for path, job in latest.items():
        if job.status != "completed" or not job.bound:
            continue
        kinds: tuple[tuple[Kind, str | None], ...] = (
            ("output", job.output_file_id), ("errors", job.error_file_id))
        for kind, file_id in kinds:
            if file_id is None:
                gone = remove_stale(store, outbox, result_name(path, kind), job.as_batch())
                if gone is not None:
                    removed.append(gone)
    return removed


def _view(job: Job) -> JobView:
    return JobView(path=job.path, status=job.status, batch_id=job.batch_id,
                   endpoint=job.endpoint, counts=job.counts, superseded=job.superseded,
                   reason=job.reason, output_file_id=job.output_file_id,
                   error_file_id=job.error_file_id)  # fmt: skip


def _poll(client: BatchRemote, store: BatchStore, config: BatchesConfig, report: Report) -> None:
    """Bring every running job of ours up to date: one retrieve each, or, with more of
    them than ``poll_retrieve_max``, listing pages (newest first) until all are seen,
    then a retrieve for any the listing did not show."""
    running = [j for j in store.jobs() if j.running and j.batch_id is not None]
    if len(running) > config.poll_retrieve_max:
        wanted = {j.batch_id: j for j in running}
        oldest = min(j.created_at for j in running)
        try:
            for i, batch in enumerate(client.list_batches()):
                job = wanted.pop(batch.id, None)
                if job is not None:
                    _update(store, job, batch)
                if not wanted or batch.created_at < oldest or (
                        i + 1 >= config.max_batch_pages * 100):
                    break
        except APIError as exc:
            report.errors.append(("list batches", str(exc)))
        running = list(wanted.values())
    for job in running:
        assert job.batch_id is not None
        try:
            batch = client.retrieve_batch(job.batch_id)
        except NotFoundError:
            store.mark(job.intent, GONE, "the provider no longer knows the job")
            continue
        except APIError as exc:
            report.errors.append((f"retrieve {job.batch_id}", str(exc)))
            continue
        _update(store, job, batch)


def _update(store: BatchStore, job: Job, batch: Batch) -> None:
    if batch.status != job.status or batch.request_counts != job.counts:
        log.info("batches.status", path=job.path, batch_id=batch.id, status=batch.status,
                 completed=batch.request_counts.completed,
                 failed=batch.request_counts.failed)  # fmt: skip
    store.bind(job.intent, batch)


def _pull_candidates(
    client: BatchRemote,
    store: BatchStore,
    config: PullConfig,
    remote_files: Iterable[RemoteFile] | None,
) -> list[RemoteFile]:
    done = store.pulled_ids()
    if remote_files is None:
        listing: list[RemoteFile] = []
        for purpose in config.purposes:
            listing += client.iter_files(purpose=purpose)
        remote_files = listing
    wanted = set(config.purposes)
    return [r for r in remote_files if r.purpose in wanted and r.id not in done]


def _watching(store: BatchStore, jobs: Sequence[Job], now: float) -> bool:
    """Whether a job created more than once lately may yet show a duplicate, and a
    listing for it is due."""
    recent = any(j.attempts > 1 and (j.last_attempt or 0) > now - WATCH_S for j in jobs)
    return recent and now - store.last_watch >= WATCH_EVERY_S


def _list_batches(
    client: BatchRemote,
    config: BatchesConfig,
    pending: Sequence[Job],
    unattributed: set[str],
    watch: bool,
    now: float,
    report: Report,
) -> list[Batch] | None:
    """Newest first, until every pending intent and unattributed result is accounted
    for, pages are older than the oldest intent (and the watch horizon), or the page
    budget is spent. None when the listing failed."""
    intents = {j.intent for j in pending}
    horizon = min([j.intended_at for j in pending] + ([now - WATCH_S] if watch else []),
                  default=now) - CLOCK_SLACK_S  # fmt: skip
    left = set(unattributed)
    out: list[Batch] = []
    per_page = 100
    try:
        for i, batch in enumerate(client.list_batches(page_size=per_page)):
            out.append(batch)
            intents.discard(intent_of(batch) or "")
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    left.discard(file_id)
            old = batch.created_at < horizon
            if (not left and (not intents or old) and (not watch or old)) or (
                    i + 1 >= config.max_batch_pages * per_page):
                break
    except APIError as exc:
        report.errors.append(("list batches", str(exc)))
        return None
    return out


def _resolve(
    client: BatchRemote,
    store: BatchStore,
    config: BatchesConfig,
    pending: Sequence[Job],
    listed: Sequence[Batch],
    now: float,
    report: Report,
) -> None:
    """Bind each pending intent to the job a listing shows for it; create it again once
    enough listings agree it is not there. Duplicates of any intent are cancelled."""
    ours: dict[str, list[Batch]] = {}
    for batch in listed:
        intent = intent_of(batch)
        if intent:
            ours.setdefault(intent, []).append(batch)
    by_intent = {j.intent: j for j in store.jobs()}
    for intent, batches in ours.items():
        job = by_intent.get(intent)
        if job is None:
            continue
        matching = sorted((b for b in batches if b.input_file_id == job.input_file_id),
                          key=lambda b: (b.created_at, b.id))  # fmt: skip
        if not matching:
            continue
        keep = job.batch_id if job.bound else matching[0].id
        if not job.bound:
            store.bind(intent, matching[0])
            report.adopted.append((job.path, matching[0].id))
            log.info("batches.adopted", path=job.path, batch_id=matching[0].id, intent=intent)
        for extra in matching:
            if extra.id != keep:
                _cancel_duplicate(client, store, intent, extra, report)
    for job in pending:
        if job.intent in ours and any(b.input_file_id == job.input_file_id
                                      for b in ours[job.intent]):  # fmt: skip
            continue
        after = store.missed(job.intent, now)
        if after is None:
            continue
        waited = now - (after.first_miss or now)
        if after.misses >= config.confirm_listings and waited >= config.confirm_s:
            log.info("batches.not_found", path=job.path, intent=job.intent,
                     listings=after.misses)  # fmt: skip
            _create(client, store, config, after, now, report)


def _cancel_duplicate(
    client: BatchRemote, store: BatchStore, intent: str, batch: Batch, report: Report
) -> None:
    fresh = store.note_duplicate(batch.id, intent)
    cancelled = {b for b, _, done in store.duplicates() if done}
    if batch.terminal or batch.status == "cancelling" or batch.id in cancelled:
        return
    try:
        client.cancel_batch(batch.id)
    except InvalidRequestError:
        pass  # it ended meanwhile
    except APIError as exc:
        report.errors.append((f"cancel duplicate {batch.id}", str(exc)))
        return
    store.duplicate_cancelled(batch.id)
    report.duplicates.append(batch.id)
    log.warning("batches.duplicate_cancelled", batch_id=batch.id, intent=intent, first=fresh)


def _submit(
    client: BatchRemote,
    store: BatchStore,
    config: BatchesConfig,
    known: Mapping[str, KnownInput],
    now: float,
    dry_run: bool,
    report: Report,
) -> None:
    plan = plan_submit(known, config.submit, store.jobs(), now=now,
                       cancel_superseded=config.cancel_superseded)  # fmt: skip
    report.deferred += plan.deferred
    for job in plan.supersede:
        if not dry_run:
            store.supersede(job.intent)
    for job in plan.cancel:
        if dry_run:
            report.cancelled.append((job.path, job.batch_id or ""))
            continue
        assert job.batch_id is not None
        try:
            client.cancel_batch(job.batch_id)
        except InvalidRequestError:
            pass  # it ended meanwhile: nothing to cancel
        except APIError as exc:
            report.errors.append((f"cancel {job.batch_id}", str(exc)))
            continue
        store.cancel_sent(job.intent)
        report.cancelled.append((job.path, job.batch_id))
        log.info("batches.cancelled", path=job.path, batch_id=job.batch_id, why="superseded")
    for new in plan.create:
        if dry_run:
            report.submitted.append((new.path, None))
            continue
        job = store.add_intent(new.path, new.content, new.input_file_id, new.rule, now)
        _create(client, store, config, job, now, report)


def _create(
    client: BatchRemote,
    store: BatchStore,
    config: BatchesConfig,
    job: Job,
    now: float,
    report: Report,
) -> None:
    store.note_attempt(job.intent, now)
    metadata = job_metadata(job, config.ds_name, config.syncd_keys)
    try:
        batch = client.create_batch(job.input_file_id, job.endpoint, job.completion_window,
                                    metadata)  # fmt: skip
    except AmbiguousCreateError as exc:
        store.mark(job.intent, AMBIGUOUS, exc.message)
        report.errors.append((f"create for {job.path}", f"{exc} (looked for on the next step)"))
        log.warning("batches.create_ambiguous", path=job.path, intent=job.intent)
        return
    except NotFoundError as exc:
        _undo(store, job, report, f"the input is gone from the provider: {exc}")
        return
    except InvalidRequestError as exc:
        store.mark(job.intent, REFUSED, exc.message)
        report.errors.append((f"create for {job.path}", str(exc)))
        log.warning("batches.create_refused", path=job.path, reason=exc.message)
        return
    except APIError as exc:
        # Nothing was created (the client raises AmbiguousCreateError when it may have).
        _undo(store, job, report, str(exc))
        return
    store.bind(job.intent, batch)
    report.submitted.append((job.path, batch.id))
    log.info("batches.submitted", path=job.path, batch_id=batch.id, endpoint=job.endpoint)


def _undo(store: BatchStore, job: Job, report: Report, why: str) -> None:
    """A create that made no job: the intent goes, unless an earlier attempt may have
    made one (then it stays to be looked for)."""
    current = store.job(job.intent)
    if current is not None and current.attempts <= 1:
        store.drop_intent(job.intent)
    else:
        store.mark(job.intent, AMBIGUOUS, why)
    report.errors.append((f"create for {job.path}", why))


# ---- reading it back -----------------------------------------------------------------------


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


__all__ = [
    "BatchRemote",
    "BatchStore",
    "BatchesConfig",
    "Job",
    "JobView",
    "KnownInput",
    "NewJob",
    "PullConfig",
    "Report",
    "SubmitPlan",
    "SubmitRule",
    "intent_of",
    "job_metadata",
    "plan_submit",
    "step",
    "summary",
]
