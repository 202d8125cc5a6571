"""The engine's front door: one Syncer per project, used by the CLI and the daemon.

A Syncer owns the state lock, the client and the last known remote listing, and
serializes its operations: a scheduled reconcile and a watcher-triggered sync
never interleave their plans.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import structlog

from syncd.api.errors import APIError
from syncd.config import MaxDelete
from syncd.engine.execute import Aborted, Executor, Interrupted
from syncd.engine.model import Plan, ScanResult
from syncd.engine.plan import (
    Consent,
    Policy,
    StateView,
    delete_budget,
    plan,
    scoped,
    window_start,
)
from syncd.engine.progress import Progress
from syncd.engine.records import RecordTable
from syncd.engine.report import UNSYNCED, RunReport, unsynced_after
from syncd.engine.scan import (
    record_key,
    root_relative,
    same_file_elsewhere,
    scan_paths,
    scan_root,
    unselected_examples,
)
from syncd.engine.scan import summary as scan_summary
from syncd.engine.state import StateLost
from syncd.engine.sync_listing import ListingChecks
from syncd.engine.sync_steps import SideSteps

log = structlog.get_logger("syncd.engine")

# When a person last answered for deletes (a run with --confirm-deletes or --max-delete).
CONFIRMED_META = "deletes_confirmed_at"


def _consent(max_delete: MaxDelete | None, confirm_deletes: bool) -> Consent:
    if confirm_deletes:
        return "confirmed"
    return "capped" if max_delete is not None else "none"


class Syncer(ListingChecks, SideSteps):
    """One project's runs: full reconciles and targeted syncs, each planned then carried
    out, one at a time."""

    def reconcile(
        self,
        dry_run: bool = False,
        progress: Progress | None = None,
        *,
        max_delete: MaxDelete | None = None,
        confirm_deletes: bool = False,
        why: str = "reconcile",
    ) -> RunReport:
        """Full scan + remote listing + plan + execute + publish.

        ``max_delete`` (a person's cap for this run) or ``confirm_deletes`` answers for
        the deletes earlier refusals hold; see ``plan.Consent``. ``why`` names the run
        in the journal (a scheduled reconcile, one asked for...)."""
        with self._op:
            self._reopen_if_lost()
            if not dry_run:
                self.state.begin_run(f"{self.origin} {why}")
            try:
                report = self._reconcile(dry_run, progress, max_delete, confirm_deletes)
                if not (report.aborted or report.remote_unavailable or report.interrupted):
                    report.batches = self._batches_after(dry_run)
                    report.attachments = self._attach_after(dry_run, confirm_deletes,
                                                            report.plan)
                return report
            except StateLost:
                # Deleted or replaced mid-run: what the run sent is in the claims
                # registry, and a full run on the new state adopts it.
                self._reopen_if_lost()
                if not dry_run:
                    self.state.begin_run(f"{self.origin} reconcile (the state was lost)")
                return self._reconcile(dry_run, progress, max_delete, confirm_deletes)

    def _reconcile(
        self,
        dry_run: bool,
        progress: Progress | None,
        max_delete: MaxDelete | None,
        confirm_deletes: bool,
    ) -> RunReport:
        started = time.monotonic()
        records = self.state.records()
        scan = scan_root(self.config.root, self.rules, records, marker=self.config.sync.marker)
        scanned_s = time.monotonic() - started
        failed = self._try_list(scan.errors)
        consent = _consent(max_delete, confirm_deletes)
        report = failed or self._run(
            scan, records, None, dry_run, progress, max_delete, consent
        )
        if not (failed or dry_run or report.aborted or report.interrupted):
            self._release_gone_claims()
        # Files no purpose rule takes have no record: the report names a few per rule.
        report.skipped.update(unselected_examples(scan))
        report.skipped_by_rule = dict(scan.skipped)
        report.duration_s = time.monotonic() - started
        if not dry_run:
            self.state.set_meta("scan", scan_summary(scan, scanned_s))
            self.state.set_meta(
                "last_reconcile",
                {
                    "at": time.time(),
                    "duration_s": round(report.duration_s, 3),
                    "exit_code": report.exit_code,
                    "uploaded": report.outcome.uploaded,
                    "deleted": report.outcome.deleted,
                    "refused": report.plan.refused,
                    "inconsistent_listing": report.inconsistent,
                },
            )
        return report

    def sync_paths(
        self,
        paths: Iterable[str],
        *,
        max_delete: MaxDelete | None = None,
        confirm_deletes: bool = False,
        why: str = "changes",
    ) -> RunReport:
        """Targeted sync of these root-relative paths, against the last known listing.
        A path that does not stay inside the root is not synced, and is reported."""
        inside: set[str] = set()
        outside: list[str] = []
        for p in paths:
            if not p.strip("/"):
                continue  # the root itself: a targeted run of nothing
            try:
                inside.add(root_relative(p))
            except ValueError as exc:
                outside.append(f"not synced: {exc}")
        scope = frozenset(inside)
        with self._op:
            if self._reopen_if_lost():
                self.state.begin_run(f"{self.origin} reconcile (the state was lost)")
                return self._reconcile(False, None, max_delete, confirm_deletes)
            self.state.begin_run(f"{self.origin} {why}")
            try:
                report = self._sync_paths(scope, max_delete, confirm_deletes)
            except StateLost:
                self._reopen_if_lost()
                self.state.begin_run(f"{self.origin} reconcile (the state was lost)")
                return self._reconcile(False, None, max_delete, confirm_deletes)
            report.scan_errors += outside
            return report

    def _sync_paths(
        self, scope: frozenset[str], max_delete: MaxDelete | None, confirm_deletes: bool
    ) -> RunReport:
        started = time.monotonic()
        if self.remote.listed_at is None and (failed := self._try_list([])):
            return failed
        records = self.state.records()
        scope = scope | same_file_elsewhere(self.config.root, scope, records)
        scan = scan_paths(
            self.config.root, self.rules, records, scope, marker=self.config.sync.marker
        )
        # The plan and the report look for records under the scan's keys: a name
        # that is not UTF-8 is recorded under a visible spelling, not as queued.
        keys = frozenset(map(record_key, scope))
        consent = _consent(max_delete, confirm_deletes)
        report = self._run(scan, records, keys, False, None, max_delete, consent)
        report.duration_s = time.monotonic() - started
        return report

    def _run(
        self,
        scan: ScanResult,
        records: RecordTable,
        scope: frozenset[str] | None,
        dry_run: bool,
        progress: Progress | None,
        max_delete: MaxDelete | None = None,
        consent: Consent = "none",
    ) -> RunReport:
        policy = self._policy(records, scope, max_delete, consent)
        try:
            inconsistent = self._confirm_absence(records, scope)
        except APIError as exc:
            log.error("cannot confirm files missing from the listing", error=str(exc))
            errors = [*scan.errors, f"cannot confirm files missing from the listing: {exc}"]
            return RunReport(Plan(), scan_errors=errors, remote_unavailable=True)
        full = scope is None  # only a full run's plan reads the claims (see StateView)
        view = StateView(
            records,
            self.state.intents(),
            self.state.garbage(),
            self.claims.others() if full else frozenset(),
            self.claims.mine() if full else frozenset(),
            self.state.lost_copies(),
            self.state.held(),
        )
        the_plan = plan(scan, view, self.remote.snapshot(), policy)
        report = RunReport(
            the_plan,
            scan_errors=list(scan.errors),
            hashed=scan.hashed,
            dry_run=dry_run,
            inconsistent=inconsistent,
        )
        if the_plan.refused:
            log.error("deletion safety", reason=the_plan.refused, root=str(self.config.root))
        if dry_run:
            report.unsynced = unsynced_after(the_plan, records, scope)
            return report
        self._execute(report, progress, consent)
        if the_plan.mutating or the_plan.shares:
            self._save_account()
        for rec in scoped(self.state.records(), scope, (*UNSYNCED, "skipped")):
            if rec.status == "skipped":
                report.skipped[rec.path] = rec.reason or ""
            else:
                report.unsynced[rec.path] = (rec.status, rec.reason or "")
        return report

    def _policy(
        self,
        records: RecordTable,
        scope: frozenset[str] | None,
        max_delete: MaxDelete | None,
        consent: Consent,
    ) -> Policy:
        """The planner's inputs from the config, the state and the clock."""
        limits = self.config.limits
        cap = max_delete or self.config.sync.max_delete
        # The delete window is read from the state: every run of every process that
        # held this state_dir in it counts, a restart forgets none of it.
        since = window_start(time.time(), self.state.get_meta(CONFIRMED_META), consent)
        already = self.state.guarded_deletes_since(since)
        offset = sum(self.client.clock.offset()) / 2
        return Policy(
            delete_remote=self.config.sync.delete_remote,
            max_delete=delete_budget(cap, records, already),
            deleted_recently=already,
            consent=consent,
            max_files=limits.max_files,
            max_bytes=limits.max_bytes,
            headroom_files=limits.headroom_files,
            headroom_bytes=limits.headroom_bytes,
            dedupe=self.config.sync.dedupe,
            now=time.time() + offset,
            clock_offset=offset,
            refresh_before_expiry_s=self.config.sync.refresh_before_expiry_s,
            scope=scope,
        )

    def _execute(self, report: RunReport, progress: Progress | None, consent: Consent) -> None:
        """Carry out the report's plan, its outcome into the report."""
        the_plan = report.plan
        report.mapping_file = str(self.config.mapping_file)
        if progress is not None:
            # Totals for a progress display: what this run will send or take over.
            sizes = [u.local.size for u in the_plan.uploads] + [
                a.local.size for a in the_plan.adopts
            ]
            progress.planned(len(sizes), sum(sizes))
        executor = Executor(
            self.config.root,
            self.client,
            self.state,
            self.remote,
            self.claims,
            self.ledger,
            workers=self.config.limits.workers,
            publish_every_s=self.config.daemon.publish_interval_s,
            progress=progress,
            stopping=self._stopping,
        )
        try:
            report.outcome = executor.run(the_plan, self._publish_attaching)
            if consent != "none":
                # A person answered for deletes: later runs weigh only what follows.
                self.state.set_meta(CONFIRMED_META, time.time())
        except Aborted as exc:
            report.aborted = str(exc)
            log.error("run aborted", error=str(exc))
            self.publish_mapping()  # what was confirmed before the key was refused
        except Interrupted as exc:
            report.outcome = exc.outcome
            report.interrupted = True
            log.warning("interrupted", uploaded=exc.outcome.uploaded, deleted=exc.outcome.deleted)
            self.publish_mapping()
