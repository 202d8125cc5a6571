"""The engine's front door: one Syncer per project, used by the CLI and the daemon.

A Syncer owns the state lock, the client and the last known remote listing, and
serializes its operations: a scheduled reconcile and a watcher-triggered sync
never interleave their plans.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from syncd.api.errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
)
from syncd.config import Config, MaxDelete, RulesConfig
from syncd.engine import attach as vector_attach
from syncd.engine import batches as batch_jobs
from syncd.engine import identity, publish
from syncd.engine.claims import Claims
from syncd.engine.execute import Aborted, Executor, Interrupted, Outcome
from syncd.engine.journal import Action
from syncd.engine.ledger import Ledger, LocalLedger
from syncd.engine.model import Plan, Record, ScanResult
from syncd.engine.plan import (
    Consent,
    Policy,
    StateView,
    delete_budget,
    in_scope,
    plan,
    window_start,
)
from syncd.engine.progress import Progress
from syncd.engine.pull import PullConfig
from syncd.engine.remote import RemoteFiles, RemoteView
from syncd.engine.rules import Rules
from syncd.engine.scan import (
    record_key,
    root_relative,
    same_file_elsewhere,
    scan_paths,
    scan_root,
    unselected_examples,
)
from syncd.engine.scan import summary as scan_summary
from syncd.engine.state import State, StateLock, StateLost
from syncd.exitcodes import ExitCode

log = structlog.get_logger("syncd.engine")

# Statuses that mean "this file should be on the remote and is not".
UNSYNCED = ("invalid", "quota", "error", "changing", "pending")
# When a person last answered for deletes (a run with --confirm-deletes or --max-delete).
CONFIRMED_META = "deletes_confirmed_at"
# Claims on ids gone from the provider checked (one read each) and released per reconcile.
RELEASE_PER_RUN = 20


@dataclass
class RunReport:
    plan: Plan
    outcome: Outcome = field(default_factory=Outcome)
    scan_errors: list[str] = field(default_factory=list)
    hashed: int = 0
    duration_s: float = 0.0
    dry_run: bool = False
    aborted: str | None = None
    # The remote could not be listed: nothing was planned, the run should be retried.
    remote_unavailable: bool = False
    # Our ids missing from the listing that the provider still had when asked directly.
    inconsistent: int = 0
    interrupted: bool = False
    # Paths (in the run's scope) that are not synced, with status and reason.
    unsynced: dict[str, tuple[str, str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    # A full run: how many files each rule left out (status counts them the same way).
    skipped_by_rule: dict[str, int] = field(default_factory=dict)
    # The mapping file the run publishes ("" when none was written).
    mapping_file: str = ""
    # What the batch step did after the run (when pull or batch is configured).
    batches: batch_jobs.Report | None = None
    # What the attach step did (when vector_stores.rules are configured).
    attachments: vector_attach.Report | None = None

    @property
    def root_unavailable(self) -> bool:
        return self.plan.halted

    @property
    def changed_during_upload(self) -> list[str]:
        return self.outcome.changed_during_upload

    @property
    def uploaded(self) -> int:
        return self.outcome.uploaded

    @property
    def deleted(self) -> int:
        return self.outcome.deleted

    @property
    def uploaded_bytes(self) -> int:
        """Bytes of the files this run uploaded: its planned uploads that did not fail."""
        if self.dry_run or not self.outcome.uploaded:
            return 0
        not_sent = set(self.outcome.failures) | set(self.outcome.changed_during_upload)
        return sum(u.local.size for u in self.plan.uploads if u.path not in not_sent)

    @property
    def failed_paths(self) -> set[str]:
        """Paths this run could not sync (an upload or delete failed, or the file is not
        syncable): never parsed out of the error messages."""
        return set(self.outcome.failures) | set(self.unsynced)

    @property
    def errors(self) -> list[str]:
        errs = list(self.scan_errors)
        errs += [str(failure) for failure in self.outcome.failures.values()]
        if self.plan.refused:
            errs.append(self.plan.refused)
        if self.aborted:
            errs.append(self.aborted)
        if self.interrupted:
            errs.append("interrupted: what was confirmed is published; run again to finish")
        return errs

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.aborted:
            return ExitCode.USAGE
        if self.plan.refused:
            return ExitCode.REFUSED
        if self.unsynced or self.outcome.failures or self.scan_errors:
            return ExitCode.UNSYNCED
        return ExitCode.OK

    def as_json(self) -> dict[str, Any]:
        """The report as `syncd reconcile --json` prints it and the daemon answers it."""
        p, report = self.plan, self
        return {
            "dry_run": report.dry_run,
            "exit_code": report.exit_code,
            "duration_s": round(report.duration_s, 3),
            "planned": {
                "upload": [
                    {"path": u.path, "kind": u.kind, "bytes": u.local.size} for u in p.uploads
                ],
                "adopt": [{"path": a.path, "file_id": a.file_id} for a in p.adopts],
                # Paths that take an existing remote file of the same content (dedupe), or
                # ride along with one upload of it ("with").
                "share": [{"path": s.path, "file_id": s.file_id} for s in p.shares]
                + [{"path": r.path, "with": u.path} for u in p.uploads for r in u.sharers],
                "delete": [
                    {"path": d.path, "file_id": d.file_id, "reason": d.reason} for d in p.deletes
                ],
                # Deletes deletion safety held back (see "refused" for why).
                "refused_delete": [
                    {"path": d.path, "file_id": d.file_id, "reason": d.reason}
                    for d in p.refused_deletes
                ],
            },
            "uploaded": report.outcome.uploaded,
            "uploaded_bytes": report.uploaded_bytes,
            "adopted": report.outcome.adopted,
            "shared": len(p.shares) + sum(len(u.sharers) for u in p.uploads),
            "deleted": report.outcome.deleted,
            "inconsistent_listing": report.inconsistent,
            "hashed": report.hashed,
            "mapping_file": report.mapping_file,
            "batches": report.batches.as_dict() if report.batches else None,
            "attachments": report.attachments.as_dict() if report.attachments else None,
            "refused": p.refused,
            "errors": report.errors,
            "not_synced": [
                {"path": path, "status": status, "reason": reason}
                for path, (status, reason) in sorted(report.unsynced.items())
            ],
            "skipped": [{"path": k, "reason": v} for k, v in sorted(report.skipped.items())],
            "skipped_by_rule": [
                {"rule": rule, "files": n}
                for rule, n in sorted(report.skipped_by_rule.items(), key=lambda kv: -kv[1])
            ],
            "notes": [
                {"path": n.path, "status": n.status, "reason": n.reason}
                for n in p.notes
                if n.status != "synced"
            ],
        }


def _unsynced_after(
    the_plan: Plan, records: dict[str, Record], scope: frozenset[str] | None
) -> dict[str, tuple[str, str]]:
    """What a run of this plan would leave not synced (a dry run exits as it would):
    the records not synced now, as the plan's notes change them; uploads are taken to
    succeed."""
    out: dict[str, tuple[str, str]] = {
        path: (rec.status, rec.reason or "")
        for path, rec in records.items()
        if rec.status in UNSYNCED and in_scope(path, scope)
    }
    for note in the_plan.notes:
        if note.status in UNSYNCED:
            out[note.path] = (note.status, note.reason or "")
        else:
            out.pop(note.path, None)
    riders = [r.path for u in the_plan.uploads for r in u.sharers]
    for path in [*(u.path for u in the_plan.uploads), *(a.path for a in the_plan.adopts), *riders]:
        out.pop(path, None)
    for path in [s.path for s in the_plan.shares] + [f.path for f in the_plan.forgets]:
        out.pop(path, None)
    return out


def batches_config(config: Config) -> batch_jobs.BatchesConfig | None:
    """The config's ``pull`` and ``batch`` sections as the batch step takes them; None
    when neither is on."""
    pull = (
        PullConfig(config.pull.outbox, tuple(config.pull.purposes),
                   config.pull.delete_remote_after_pull)
        if config.pull.outbox is not None
        else None
    )  # fmt: skip
    b = config.batch
    rules = (
        (batch_jobs.SubmitRule(b.submit, b.endpoint, b.completion_window, b.max_per_day),)
        if b.submit
        else ()
    )
    if pull is None and not rules:
        return None
    return batch_jobs.BatchesConfig(pull=pull, submit=rules, cancel_superseded=b.cancel_superseded)


def _journaled(report: batch_jobs.Report) -> list[tuple[Action, dict[str, Any]]]:
    """The journal's rows for what a batch step did."""
    conflicts = {fid: why for fid, _name, why in report.conflicts}
    rows: list[tuple[Action, dict[str, Any]]] = [
        ("submitted", {"path": path, "file_id": batch_id}) for path, batch_id in report.submitted
    ]
    rows += [("pulled", {"path": name, "file_id": fid, "reason": conflicts.get(fid)})
             for fid, name in report.pulled]  # fmt: skip
    return rows


def _bounded(state: State, config: Config) -> State:
    """The state, keeping its journal within the config's bounds."""
    state.journal_rows = config.journal.max_entries
    state.journal_age_s = config.journal.max_age_days * 86_400.0
    return state


def _consent(max_delete: MaxDelete | None, confirm_deletes: bool) -> Consent:
    if confirm_deletes:
        return "confirmed"
    return "capped" if max_delete is not None else "none"


class Syncer:
    def __init__(
        self,
        config: Config,
        client: RemoteFiles,
        state: State,
        claims: Claims,
        *,
        ledger: Ledger | None = None,
        base_url: str = "",
        lock: StateLock | None = None,
        closers: Iterable[Callable[[], None]] = (),
    ) -> None:
        self.config = config
        self.base_url = base_url or config.api.base_url
        self.client = client
        self.state = _bounded(state, config)
        self.claims = claims
        # The account's quota as every host on the key sees it (single host: admits all).
        self.ledger: Ledger = ledger or LocalLedger()
        self.rules = Rules(config.rules)
        self.remote = RemoteView()
        self._lock = lock
        self._closers = list(closers)
        self._op = threading.RLock()
        # Who runs this Syncer, for the journal: a one-off command, or the daemon.
        self.origin = "one-off"
        self._publisher = publish.Publisher(config.mapping_file)
        # What writing the mapping last cost (s): the daemon spaces runs by it.
        self.publish_cost_s = 0.0
        # Batch jobs and pulled results (engine/batches.py), when the config asks.
        self.batches_config = batches_config(config)
        self._batch_store = (
            batch_jobs.BatchStore.open(config.state_dir) if self.batches_config else None
        )
        self._stopping = threading.Event()
        # Vector stores (engine/attach.py), when the config has rules for them.
        self.attacher = vector_attach.open_for(config, claims.owner)

    # ---- operations

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
                    report.attachments = self._attach_after(dry_run, confirm_deletes)
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
        records: dict[str, Record],
        scope: frozenset[str] | None,
        dry_run: bool,
        progress: Progress | None,
        max_delete: MaxDelete | None = None,
        consent: Consent = "none",
    ) -> RunReport:
        limits = self.config.limits
        cap = max_delete or self.config.sync.max_delete
        # The delete window is read from the state: every run of every process that
        # held this state_dir in it counts, a restart forgets none of it.
        since = window_start(time.time(), self.state.get_meta(CONFIRMED_META), consent)
        already = self.state.guarded_deletes_since(since)
        offset = sum(self.client.clock.offset()) / 2
        policy = Policy(
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
        try:
            inconsistent = self._confirm_absence(records, scope)
        except APIError as exc:
            log.error("cannot confirm files missing from the listing", error=str(exc))
            errors = [*scan.errors, f"cannot confirm files missing from the listing: {exc}"]
            return RunReport(Plan(), scan_errors=errors, remote_unavailable=True)
        view = StateView(
            records,
            self.state.intents(),
            self.state.garbage(),
            self.claims.others(),
            self.claims.mine(),
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
            report.unsynced = _unsynced_after(the_plan, records, scope)
            return report
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
            workers=limits.workers,
            publish_every_s=self.config.daemon.publish_interval_s,
            progress=progress,
            stopping=self._stopping,
        )
        try:
            report.outcome = executor.run(the_plan, self.publish_mapping)
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
        if the_plan.mutating or the_plan.shares:
            self._save_account()
        for path, rec in self.state.records().items():
            if not in_scope(path, scope):
                continue
            if rec.status in UNSYNCED:
                report.unsynced[path] = (rec.status, rec.reason or "")
            elif rec.status == "skipped":
                report.skipped[path] = rec.reason or ""
        return report

    def _batches_after(self, dry_run: bool) -> batch_jobs.Report | None:
        """The batch step a full run ends with; its failures are reported, not raised
        (the next step carries on from the store)."""
        try:
            return self.batches_step(dry_run, listed=True)
        except APIError as exc:
            log.error("batch step failed", error=str(exc))
            return None

    def _attach_after(self, dry_run: bool, confirmed: bool) -> vector_attach.Report | None:
        """The attach step a full run ends with; its failures are reported, not raised."""
        if self.attacher is None:
            return None
        try:
            client = cast(vector_attach.VectorRemote, self.client)
            report = self.attacher.run(client, self.state, self.remote.snapshot(),
                                       dry_run=dry_run, confirmed=confirmed,
                                       stopping=self._stopping.is_set)
        except APIError as exc:
            log.error("vector store step failed", error=str(exc))
            return None
        self.publish_mapping()
        return report

    def _reopen_if_lost(self) -> bool:
        """Open the state anew if its database was deleted or replaced under us (the
        old file is written no more); True when it was. The next full run adopts what
        the claims registry proves ours instead of uploading it again."""
        if not self.state.replaced():
            return False
        log.error(
            "the state database was deleted or replaced while open: opening it anew, "
            "a full reconcile adopts the files this project uploaded",
            state_dir=str(self.config.state_dir),
        )
        # Closed first: its last close removes the -wal and -shm files beside the path,
        # which the new database must not inherit.
        self.state.close()
        self.state = _bounded(State(self.config.state_dir), self.config)
        return True

    def _try_list(self, scan_errors: list[str]) -> RunReport | None:
        """List the remote; on failure, the report of a run that did nothing."""
        try:
            self._list_remote()
        except AuthenticationError as exc:
            # A refused key stops the run like it does mid-run: exit 2, no traceback.
            log.error("run aborted", error=str(exc))
            return RunReport(Plan(), scan_errors=list(scan_errors), aborted=str(exc))
        except APIError as exc:
            log.error("cannot list remote files", error=str(exc))
            errors = [*scan_errors, f"cannot list remote files: {exc}"]
            return RunReport(Plan(), scan_errors=errors, remote_unavailable=True)
        return None

    def _release_gone_claims(self) -> None:
        """Let go of claims on ids the provider no longer has (someone deleted them, or
        they expired): each claim is read by every run, and nothing can take such an id
        again. An id is released only when nothing here knows it, the listing lacks it
        and the provider answers not-found for it; a few per run, so a large backlog
        costs no burst of reads."""
        unlisted = self.claims.mine() - set(self.remote.snapshot())
        candidates = sorted(unlisted - self.state.owned_ids()) if unlisted else []
        released = 0
        for file_id in candidates[:RELEASE_PER_RUN]:
            if self._stopping.is_set():
                break
            try:
                self.client.retrieve(file_id)
            except NotFoundError:
                self.claims.release(file_id)
                released += 1
            except APIError:
                break  # anything else: try again next run
        if released:
            log.info("claims released on ids the provider no longer has", count=released)

    def _confirm_absence(self, records: dict[str, Record], scope: frozenset[str] | None) -> int:
        """A listing is not a proof of absence: ask for each of our ids it lacks.

        Found ones go back into the view (the listing was inconsistent; their count is
        returned). Only a not-found answer, or another 4xx that is not about auth or
        quota, confirms that an id is gone; anything else ends the run undecided.
        """
        listed = self.remote.snapshot()
        missing = sorted(
            {
                rec.file_id
                for path, rec in records.items()
                if rec.file_id and rec.file_id not in listed and in_scope(path, scope)
            }
        )
        found = 0
        for file_id in missing:
            try:
                self.remote.add(self.client.retrieve(file_id))
                found += 1
            except NotFoundError:
                continue
            except InvalidRequestError as exc:
                if isinstance(exc, QuotaExceededError):
                    raise
                continue
        if found:
            log.warning("listing omitted files that exist", count=found, asked=len(missing))
        return found

    def _list_remote(self) -> None:
        mark = self.ledger.begin_listing()
        files = self.client.list_files()
        self.remote.replace_all(files)
        self.ledger.rebase(len(files), sum(f.bytes for f in files), mark, {f.id for f in files})
        identity.record(self.state, identity.of_config(self.config, self.client.key_fingerprint))
        self._save_account()

    def _save_account(self) -> None:
        """Account usage as listed, kept current by our own calls (for `syncd status`)."""
        files = self.remote.snapshot().values()
        self.state.set_meta(
            "account",
            {"files": len(files), "bytes": sum(f.bytes for f in files), "at": time.time()},
        )

    # ---- publishing and queries

    def publish_mapping(self) -> None:
        with self._op:
            head = {"project": self.config.project, "owner": self.claims.owner,
                    "base_url": self.base_url}  # fmt: skip
            attacher = self.attacher
            inputs = (id(self.state), self.state.generation, self.remote.generation,
                      attacher.store.generation if attacher else 0)
            started = time.monotonic()
            extra = attacher.by_path if attacher else None
            if self._publisher.publish(self.state.synced, self.remote, head, inputs, extra):
                self.publish_cost_s = time.monotonic() - started

    def batches_step(
        self, dry_run: bool = False, *, listed: bool = False
    ) -> batch_jobs.Report | None:
        """One pass over batch jobs and provider-made files (``listed``: the remote
        view is a fresh full listing, so the step need not list again)."""
        if self.batches_config is None or self._batch_store is None:
            return None
        with self._op:
            known = {
                path: batch_jobs.KnownInput(fid, sha)
                for path, fid, purpose, _size, sha, _at in self.state.synced()
                if purpose == "batch" and fid in self.remote
            }
            client = cast(batch_jobs.BatchRemote, self.client)
            files = self.remote.snapshot().values() if listed else None
            report = batch_jobs.step(
                client, self._batch_store, self.batches_config, known,
                dry_run=dry_run, remote_files=files,
            )  # fmt: skip
            if not dry_run:
                self.state.journal_events(_journaled(report))
            return report

    def batch_summary(self) -> dict[str, Any] | None:
        return batch_jobs.summary(self._batch_store) if self._batch_store else None

    def waiting_for_space(self) -> list[str]:
        """Paths held back for want of account space (status ``quota``)."""
        return self.state.paths_with_status("quota")

    def stop_soon(self) -> None:
        """Start no more uploads or deletes: the run in progress lets its calls in
        flight finish, publishes what they confirmed and ends as interrupted. Safe from
        any thread (a daemon's signal handling); for good: the process is stopping."""
        self._stopping.set()

    def set_rules(self, rules: RulesConfig) -> None:
        """Judge paths by these rules from the next run on (a reloaded config)."""
        with self._op:
            self.config = dataclasses.replace(self.config, rules=rules)
            self.rules = Rules(rules)

    def is_candidate(self, rel_path: str) -> bool:
        return self.rules.is_candidate(rel_path)

    def can_hold(self, rel_dir: str) -> bool:
        return self.rules.can_hold(rel_dir)

    def stats(self) -> dict[str, int]:
        """Paths by status; one whose delete a guard holds counts as ``held``."""
        held = self.state.held()
        counts: dict[str, int] = {}
        for rec in self.state.records().values():
            status = "held" if rec.file_id in held else rec.status
            counts[status] = counts.get(status, 0) + 1
        return counts

    def close(self) -> None:
        closers = [self.client.close, self.state.close, self.claims.close, *self._closers]
        if self._batch_store is not None:
            closers.append(self._batch_store.close)
        if self.attacher is not None:
            closers.append(self.attacher.close)
        for close in closers:
            try:
                close()
            except Exception:  # closing must finish even if one part is broken
                log.exception("close failed")
        if self._lock is not None:
            self._lock.release()
