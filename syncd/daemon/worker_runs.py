"""The worker's engine runs: reconciles (scheduled, asked for over the control socket,
or retried), targeted syncs of settled paths, the batch step, and what each outcome
means for the daemon (reachability, a refused key, files queued again)."""

from __future__ import annotations

import math
import queue
import time
from typing import Any

import structlog

from syncd import events
from syncd.config import MaxDelete
from syncd.daemon.control import ReconcileRequest
from syncd.daemon.phase import Phase
from syncd.daemon.protocols import Report
from syncd.daemon.settle import Kind
from syncd.daemon.worker_core import (
    ATTACH_FOLLOW_MAX_S,
    ATTACH_FOLLOW_S,
    BATCH_FOLLOW_S,
    WorkerCore,
)
from syncd.engine.progress import Progress

log = structlog.get_logger("syncd.daemon")


class RunHandling(WorkerCore):
    """Engine runs and their outcomes, for the worker thread."""

    def submit(self, request: ReconcileRequest) -> None:
        """Queue a reconcile asked for from outside; its outcome arrives in ``request.result``."""
        self._requests.put(request)
        self.nudge()
        if not self.is_alive():
            self._fail_requests("the daemon is not running its worker")

    def _serve_requests(self) -> bool:
        """Run the reconciles asked for over the control socket; True if there were any."""
        served = False
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return served
            served = True
            if not request.result.set_running_or_notify_cancel():
                continue
            try:
                request.result.set_result(self._requested(request))
            except Exception as exc:
                log.exception("requested reconcile failed", error=str(exc))
                request.result.set_exception(exc)

    def _requested(self, request: ReconcileRequest) -> dict[str, Any]:
        if self.reach.probed_down:
            return _not_run(request.dry_run, self.reach.describe())
        root = self.config.root
        if not root.is_dir():
            return _not_run(request.dry_run, f"the folder {root} is unavailable")
        if request.paths:
            self.phase = Phase.SYNCING
            paths, cap, yes = list(request.paths), request.max_delete, request.confirm_deletes
            report = self._call(
                lambda: self.syncer.sync_paths(paths, max_delete=cap, confirm_deletes=yes)
            )
            self._after(report, what="sync")
            if not report.remote_unavailable and not report.errors:
                self._reachable()
            return report.as_json()
        what = "requested dry run" if request.dry_run else "requested"
        report = self._reconcile(
            what,
            dry_run=request.dry_run,
            max_delete=request.max_delete,
            confirm_deletes=request.confirm_deletes,
            progress=request.progress,
        )
        return report.as_json()

    def _fail_requests(self, why: str) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request.result.set_running_or_notify_cancel():
                request.result.set_exception(RuntimeError(why))

    def _run_reconcile(self, reason: str) -> bool:
        try:
            report = self._reconcile(reason)
        except Exception as exc:
            log.exception("reconcile failed", reason=reason, error=str(exc))
            return False
        return not (report.aborted is not None or report.remote_unavailable)

    def _reconcile(
        self,
        reason: str,
        *,
        dry_run: bool = False,
        max_delete: MaxDelete | None = None,
        confirm_deletes: bool = False,
        progress: Progress | None = None,
    ) -> Report:
        self.phase = Phase.RECONCILING if reason != "catch-up" else Phase.CATCHING_UP
        self.rescans += 1
        log.info("reconcile", reason=reason, dry_run=dry_run)
        cap, yes = max_delete, confirm_deletes
        if progress is None:  # the daemon's own runs: nobody watches them
            report = self._call(
                lambda: self.syncer.reconcile(dry_run, max_delete=cap, confirm_deletes=yes)
            )
        else:  # asked for over the socket by a client that shows the progress
            shown = progress
            report = self._call(
                lambda: self.syncer.reconcile(dry_run, shown, max_delete=cap, confirm_deletes=yes)
            )
        if dry_run:
            return report
        # The run attached without waiting: follow what it sent.
        self._attach_at, self._attach_follow = 0.0, ATTACH_FOLLOW_S
        log.info(
            "reconciled",
            reason=reason,
            hashed=report.hashed,
            uploaded=report.uploaded,
            deleted=report.deleted,
            duration_s=round(report.duration_s, 3),
            exit_code=report.exit_code,
        )
        self._after(report, what=reason)
        if report.aborted is not None:
            return report
        # Nothing was planned without a listing: the caller retries.
        if report.remote_unavailable:
            self.reach.failed()
            return report
        self._reachable()
        if not self.caught_up.is_set():
            self.caught_up.set()
            self._wake()  # the supervisor says so at once
        return report

    def _sync(self, batch: list[str], first_events: dict[str, float] | None = None) -> bool:
        self.phase = Phase.SYNCING
        try:
            report = self._call(lambda: self.syncer.sync_paths(batch))
        except Exception as exc:
            log.exception("sync failed; will retry", paths=len(batch), error=str(exc))
            self.recorder.error(f"sync failed: {exc}")
            self.queue.requeue(batch)
            return False
        failed = report.remote_unavailable or (self.reach.down and bool(report.errors))
        self._after(report, what="sync", first_events=None if failed else first_events)
        if report.aborted is not None:
            return False
        if report.remote_unavailable:
            self.reach.failed()
        if report.remote_unavailable or (self.reach.down and report.errors):
            # Failed for want of a remote (the supervisor's probe may have found it down
            # while the call retried): keep the paths and retry with backoff.
            self.queue.requeue(batch)
            return False
        if not report.errors:
            self._reachable()
        if any(p.endswith(".jsonl") for p in batch):
            self._batches_at = 0.0  # a new or changed input: its job without waiting
        self._attach_at, self._attach_follow = 0.0, ATTACH_FOLLOW_S  # its changes next
        return True

    def _step_attach(self) -> None:
        """Attach what the last syncs uploaded, detach what they replaced or deleted, and
        follow the attachments being processed until none is (ATTACH_FOLLOW_S, doubled)."""
        self._attach_at = math.inf
        try:
            report = self._call(lambda: self.syncer.attach_step())
        except Exception as exc:
            log.exception("vector store step failed", error=str(exc))
            self.recorder.error(f"vector store step failed: {exc}")
            return
        if report is None:
            return
        if report.attached or report.detached or report.newly_failed:
            log.info("vector stores", attached=len(report.attached),
                     detached=len(report.detached), failed=len(report.newly_failed))
        if report.pending:
            self._attach_at = time.monotonic() + self._attach_follow
            self._attach_follow = min(self._attach_follow * 2, ATTACH_FOLLOW_MAX_S)

    def _step_batches(self) -> None:
        """Create the jobs new inputs need, follow the running ones, pull their results:
        a batch file dropped into the folder comes back as results with no command typed.
        Stepped every batch.poll_interval_s, sooner after a sync of a .jsonl file."""
        self.phase = Phase.BATCHES
        self._batches_at = time.monotonic() + self.config.batch.poll_interval_s
        try:
            report = self._call(lambda: self.syncer.batches_step())
        except Exception as exc:
            log.exception("batch step failed", error=str(exc))
            self.recorder.error(f"batch step failed: {exc}")
            return
        if report is None:
            return
        if report.submitted or report.pulled or report.errors or report.conflicts:
            log.info("batches", submitted=len(report.submitted), pulled=len(report.pulled),
                     conflicts=len(report.conflicts), errors=len(report.errors))  # fmt: skip
        if report.pending:
            # Running jobs are followed sooner than the poll interval while young.
            self._batches_at = min(self._batches_at, time.monotonic() + BATCH_FOLLOW_S)

    def _reachable(self) -> None:
        if self.reach.down:
            log.info("the remote is reachable again", base_url=self.syncer.base_url)
        self.reach.ok()

    def _after(
        self, report: Report, *, what: str, first_events: dict[str, float] | None = None
    ) -> None:
        self.recorder.run_finished(
            "sync" if what == "sync" else "reconcile",
            report,
            duration_s=report.duration_s,
            uploaded_bytes=report.uploaded_bytes,
            first_events=first_events,
        )
        if report.aborted is not None:
            self._refuse(report.aborted)
            return
        if report.root_unavailable:
            log.error("the folder is unavailable; nothing was deleted", root=str(self.config.root))
        for error in report.errors[:20]:
            log.warning(events.NOT_SYNCED, during=what, error=error)
        changed = report.changed_during_upload
        if changed:
            log.info("files changed while uploading; queued again", count=len(changed))
            self.queue.requeue(changed)
        if report.deleted:
            # Deletes free account space: what waited for it goes up now, not at the
            # next scheduled reconcile.
            waiting = self.syncer.waiting_for_space()
            if waiting:
                log.info("account space freed; files waiting for it queued", count=len(waiting))
                for path in waiting:
                    self.queue.touch(path, Kind.MODIFIED)
        try:
            self.stats = dict(self.syncer.stats())
        except Exception:
            log.debug("stats unavailable", exc_info=True)
        self.space = self.space.after_run(
            self.stats.get("quota", 0), listed=what != "sync", now=time.monotonic()
        )

    def _refuse(self, error: str) -> None:
        """The provider refused the key: say so in the words ``check-config --online``
        and a one-off run use, and end (the main thread exits with EXIT_REFUSED)."""
        from syncd.remote_problem import refusal

        key, why = refusal(self.config, None)
        self.refused = (
            f"{self.config.origin.at(key)}: {why}; the provider said: {error}; "
            "fix it, then start syncd again"
        )
        log.error(self.refused)
        self._wake()


def _not_run(dry_run: bool, why: str) -> dict[str, Any]:
    """The outcome of a requested reconcile that could not start."""
    return {
        "dry_run": dry_run,
        "exit_code": 1,
        "duration_s": 0.0,
        "planned": {"upload": [], "adopt": [], "delete": []},
        "uploaded": 0,
        "adopted": 0,
        "deleted": 0,
        "hashed": 0,
        "refused": None,
        "errors": [why],
        "not_synced": [],
        "skipped": [],
        "notes": [],
    }
