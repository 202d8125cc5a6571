"""Batch jobs: create, retrieve, list, cancel, and the lifecycle that runs them.

A job moves ``validating -> in_progress -> finalizing -> completed`` (or ``failed``,
``expired``, ``cancelling -> cancelled``), spending ``EmulatorSettings.batch_step_s`` in
each status. Nothing runs in the background: every API call first brings every job up to
the emulator's clock (``advance``), so a client that only lists files still sees a job's
output appear on time, and a job whose steps all passed while nobody asked catches up at
once, each transition stamped with the time it would have happened.

The input file is hard-linked aside at create time: deleting it from the account does not
pull it from under a running job. Each valid request is answered with a deterministic fake
completion (an echo of its last message); each invalid one gets an error line.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from . import errors
from .batch_jobs import JobFiles, run_job, validate_job
from .faults import FaultDice
from .settings import EmulatorSettings
from .stats import Stats
from .store import BatchRow, BatchTable, Store
from .validate import Flavor

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "failed", "expired", "cancelled")
LIST_MAX = 100
LIST_DEFAULT = 20
METADATA_MAX_PAIRS = 16
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 512
# DashScope's documented metadata keys and their length caps.
DASHSCOPE_METADATA_CAPS = {"ds_name": 100, "ds_description": 200}

# Private fields kept in the stored object, never served.
_PRIVATE = "_emulator"


class BatchRunner:
    def __init__(self, store: Store, flavor: Flavor, settings: EmulatorSettings,
                 dice: FaultDice, stats: Stats) -> None:
        self.store = store
        self.table = BatchTable(store)
        self.flavor = flavor
        self.settings = settings
        self.dice = dice
        self.stats = stats
        self.jobs = JobFiles(store.data_dir / "batch_work")
        # One transition at a time; a request that finds nothing due does not wait.
        self._lock = threading.RLock()
        self._next_due = -math.inf

    # ---- the API -------------------------------------------------------------------------

    def create(self, account: str, request: Any) -> dict[str, Any]:
        flavor = self.flavor
        if not isinstance(request, dict):
            raise errors.bad_request("The request body must be a JSON object.")
        input_file_id = request.get("input_file_id")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise errors.bad_request("Missing required parameter: 'input_file_id'.",
                                     param="input_file_id")
        endpoint = request.get("endpoint")
        if not isinstance(endpoint, str) or endpoint not in flavor.batch_urls:
            raise errors.bad_request(
                f"Invalid 'endpoint': {endpoint!r}; supported values are"
                f" {', '.join(sorted(flavor.batch_urls))}.", param="endpoint")
        window = request.get("completion_window")
        hours = flavor.completion_window_hours(window) if isinstance(window, str) else None
        if hours is None:
            allowed = "'24h'" if flavor.name == "openai" else "'24h' to '336h' (or '1d' to '14d')"
            raise errors.bad_request(
                f"Invalid 'completion_window': {window!r}; expected {allowed}.",
                param="completion_window")
        metadata = self._metadata(request.get("metadata"))
        record = self.store.get(account, input_file_id)
        if record is None:
            raise errors.not_found(input_file_id, self.settings.unknown_id_status)
        if record.purpose != "batch":
            raise errors.bad_request(
                f"File {input_file_id} has purpose {record.purpose!r}; a batch's input file"
                " must have purpose 'batch'.", param="input_file_id")
        batch_id = flavor.new_batch_id()
        _link_or_copy(self.store.blob_path(input_file_id), self.jobs.path(batch_id, "input"))
        now = self.store.clock()
        created_at = int(now)
        body: dict[str, Any] = {
            "id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None,
            "input_file_id": input_file_id, "completion_window": window,
            "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": created_at, "in_progress_at": None,
            "expires_at": created_at + hours * 3600, "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None,
            "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata,
            _PRIVATE: {"expire": self.dice.roll("batch_expire", self.settings.batch_expire)},
        }
        with self._lock:
            self.table.insert(account, body, now)
            self._due_by(now)
        self.stats.bump("mutations", "batch_create")
        return public(body)

    def _metadata(self, raw: Any) -> dict[str, str] | None:
        if raw is None:
            return None
        if not isinstance(raw, dict) or len(raw) > METADATA_MAX_PAIRS:
            raise errors.bad_request(
                f"Invalid 'metadata': expected an object of at most {METADATA_MAX_PAIRS}"
                " string values.", param="metadata")
        for key, value in raw.items():
            cap = METADATA_VALUE_MAX
            if self.flavor.name == "dashscope":
                cap = DASHSCOPE_METADATA_CAPS.get(key, cap)
            if (not isinstance(value, str) or len(key) > METADATA_KEY_MAX
                    or len(value) > cap):
                raise errors.bad_request(
                    f"Invalid 'metadata.{key}': keys are at most {METADATA_KEY_MAX}"
                    f" characters, values strings of at most {cap}.", param="metadata")
        return dict(raw)

    def get(self, account: str, batch_id: str) -> dict[str, Any]:
        row = self.table.get(account, batch_id)
        if row is None:
            raise self._not_found(batch_id)
        return public(row.body)

    def page(self, account: str, *, after: str | None, limit: int
             ) -> tuple[list[dict[str, Any]], bool]:
        position = None
        if after is not None:
            position = self.table.cursor_position(account, after)
            if position is None:
                raise errors.bad_request(f"Invalid 'after': no batch {after!r} in this account.",
                                         param="after")
        rows, has_more = self.table.list(account, limit=limit, after=position)
        return [public(r.body) for r in rows], has_more

    def cancel(self, account: str, batch_id: str) -> dict[str, Any]:
        with self._lock:
            row = self.table.get(account, batch_id)
            if row is None:
                raise self._not_found(batch_id)
            body = row.body
            status = body["status"]
            if status in ("cancelling", "cancelled"):
                return public(body)
            if status in TERMINAL:
                raise errors.bad_request(f"Cannot cancel a batch with status {status!r}.",
                                         param="batch_id", code="invalid_batch_status")
            now = self.store.clock()
            body = {**body, "status": "cancelling", "cancelling_at": int(now)}
            self.table.update(body, now)
            self._due_by(now)
        self.stats.bump("mutations", "batch_cancel")
        return public(body)

    def _not_found(self, batch_id: str) -> errors.ApiError:
        if self.settings.unknown_id_status == 400:
            return errors.ApiError(400, "Batch not found", detail_only=True)
        return errors.ApiError(404, f"Not found! No such batch: {batch_id}", param="batch_id",
                               code="not_found")

    def everything(self) -> dict[str, list[dict[str, Any]]]:
        """Every batch of every account, newest first (the control API's truth)."""
        out: dict[str, list[dict[str, Any]]] = {}
        rows, _ = self.table.list(None, limit=2**31)
        for row in rows:
            out.setdefault(row.account, []).append(public(row.body))
        return out

    # ---- the lifecycle -------------------------------------------------------------------

    def due(self) -> bool:
        """Whether a job may have a step to take (cheap: no database read)."""
        return self.store.clock() >= self._next_due

    def step_changed(self) -> None:
        """The step length changed: look at every job on the next call."""
        self._next_due = -math.inf

    def _due_by(self, since: float) -> None:
        self._next_due = min(self._next_due, since + max(0.0, self.settings.batch_step_s))

    def advance(self) -> None:
        """Move every job whose step has passed, as often as it passed."""
        now = self.store.clock()
        if now < self._next_due:
            return
        with self._lock:
            step = max(0.0, self.settings.batch_step_s)
            next_due = math.inf
            for row in self.table.in_status(ACTIVE):
                body, since = row.body, row.phase_since
                while body["status"] in ACTIVE and since + step <= now:
                    since += step
                    body = self._transition(row, body, since)
                if body is not row.body:
                    self.table.update(body, since)
                if body["status"] in ACTIVE:
                    next_due = min(next_due, since + step)
            self._next_due = next_due

    def _transition(self, row: BatchRow, body: dict[str, Any], at: float) -> dict[str, Any]:
        status = body["status"]
        stamp = int(at)
        if status == "cancelling":
            self.jobs.clean(body["id"])
            self.stats.bump("mutations", "batch_cancelled")
            return {**body, "status": "cancelled", "cancelled_at": stamp}
        if status == "validating":
            problems, total = validate_job(self.flavor, self.jobs.path(body["id"], "input"), body)
            if problems:
                self.jobs.clean(body["id"])
                self.stats.bump("mutations", "batch_failed")
                return {**body, "status": "failed", "failed_at": stamp,
                        "errors": {"object": "list", "data": problems}}
            return {**body, "status": "in_progress", "in_progress_at": stamp,
                    "request_counts": {"total": total, "completed": 0, "failed": 0}}
        if status == "in_progress":
            expire = bool(body.get(_PRIVATE, {}).get("expire"))
            total = body["request_counts"]["total"]
            limit = total // 2 if expire else None
            done, failed = run_job(self.flavor, self.jobs, body, limit=limit)
            counts = {"total": total, "completed": done, "failed": failed}
            if expire:
                self.stats.bump("mutations", "batch_expired")
                return {**self._commit(row.account, body), "status": "expired",
                        "expired_at": stamp, "request_counts": counts}
            return {**body, "status": "finalizing", "finalizing_at": stamp,
                    "request_counts": counts}
        # finalizing
        self.stats.bump("mutations", "batch_completed")
        return {**self._commit(row.account, body), "status": "completed", "completed_at": stamp}

    def _commit(self, account: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store the job's output and error files (each only if it has a line)."""
        batch_id = body["id"]
        expires_in = self.flavor.default_expiry_s.get("batch") if self.flavor.expiry else None
        ids: dict[str, str | None] = {"output": None, "error": None}
        for kind in ("output", "error"):
            path = self.jobs.path(batch_id, kind)
            if path.exists() and path.stat().st_size > 0:
                file_id = self.flavor.new_result_id(kind)
                self.store.commit_generated(account, path, file_id, f"{batch_id}_{kind}.jsonl",
                                            "batch_output", expires_in)
                ids[kind] = file_id
        self.jobs.clean(batch_id)
        return {**body, "output_file_id": ids["output"], "error_file_id": ids["error"]}


def public(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != _PRIVATE}


def _link_or_copy(source: Path, dest: Path) -> None:
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
