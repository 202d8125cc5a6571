"""What one run did: its plan, the outcome of carrying it out, and what is left not
synced, as the CLI prints it, the daemon logs it and ``--json`` shows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from syncd.engine.model import Outcome, Plan
from syncd.engine.plan import scoped
from syncd.engine.records import RecordTable
from syncd.exitcodes import ExitCode

if TYPE_CHECKING:
    from syncd.engine import attach as vector_attach
    from syncd.engine import batches as batch_jobs

# Statuses that mean "this file should be on the remote and is not".
UNSYNCED = ("invalid", "quota", "error", "changing", "pending")


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


def unsynced_after(
    the_plan: Plan, records: RecordTable, scope: frozenset[str] | None
) -> dict[str, tuple[str, str]]:
    """What a run of this plan would leave not synced (a dry run exits as it would):
    the records not synced now, as the plan's notes change them; uploads are taken to
    succeed."""
    out: dict[str, tuple[str, str]] = {
        rec.path: (rec.status, rec.reason or "") for rec in scoped(records, scope, UNSYNCED)
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
