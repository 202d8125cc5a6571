"""The steps a full run ends with, when the config asks for them: batch jobs and
pulled results (:mod:`.batches`), vector store attachments (:mod:`.attach`). Their
failures are reported, not raised: the next step carries on from its store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import structlog

from syncd.api.errors import APIError
from syncd.engine.journal import Action
from syncd.engine.model import Plan
from syncd.engine.sync_core import SyncerCore

if TYPE_CHECKING:
    # Imported where the steps run: a project without them does not load them.
    from syncd.engine import attach as vector_attach
    from syncd.engine import batches as batch_jobs

log = structlog.get_logger("syncd.engine")


def _journaled(report: batch_jobs.Report) -> list[tuple[Action, dict[str, Any]]]:
    """The journal's rows for what a batch step did."""
    conflicts = {fid: why for fid, _name, why in report.conflicts}
    rows: list[tuple[Action, dict[str, Any]]] = [
        ("submitted", {"path": path, "file_id": batch_id}) for path, batch_id in report.submitted
    ]
    rows += [("pulled", {"path": name, "file_id": fid, "reason": conflicts.get(fid)})
             for fid, name in report.pulled]  # fmt: skip
    return rows


class SideSteps(SyncerCore):
    """The batch and attach steps."""

    def batches_step(
        self, dry_run: bool = False, *, listed: bool = False
    ) -> batch_jobs.Report | None:
        """One pass over batch jobs and provider-made files (``listed``: the remote
        view is a fresh full listing, so the step need not list again)."""
        if self.batches_config is None or self._batch_store is None:
            return None
        from syncd.engine import batches as batch_jobs

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
        if self._batch_store is None:
            return None
        from syncd.engine.batches import summary

        return summary(self._batch_store)

    def _batches_after(self, dry_run: bool) -> batch_jobs.Report | None:
        """The batch step a full run ends with; its failures are reported, not raised
        (the next step carries on from the store)."""
        try:
            return self.batches_step(dry_run, listed=True)
        except APIError as exc:
            log.error("batch step failed", error=str(exc))
            return None

    def _publish_attaching(self) -> None:
        """A run's publish while it uploads, then the files it confirmed offered to the
        attach step's mid-run part (:class:`~syncd.engine.attach.Early`), so attachments
        keep pace with the uploads; the pass after the run finishes the job, and takes
        over from a failure here."""
        self.publish_mapping()
        if self.attacher is None:
            return
        try:
            client = cast("vector_attach.VectorRemote", self.client)
            self.attacher.early(client, self.state, self.remote.snapshot,
                                stopping=self._stopping.is_set)
        except APIError as exc:
            log.warning("vector store attach during the run failed", error=str(exc))

    def attach_step(self) -> vector_attach.Report | None:
        """The daemon's attach step between full runs, over what its syncs changed."""
        with self._op:
            return self._attach_after(False, False)

    def _attach_after(self, dry_run: bool, confirmed: bool, planned: Plan | None = None
                      ) -> vector_attach.Report | None:
        """The attach step a full run ends with; its failures are reported, not raised.
        The daemon does not wait for processing: it follows the step while any is. A dry
        run's step plans over what the run's plan (``planned``) would leave synced."""
        if self.attacher is None:
            return None
        try:
            client = cast("vector_attach.VectorRemote", self.client)
            report = self.attacher.run(client, self.state, self.remote.snapshot(),
                                       dry_run=dry_run, confirmed=confirmed,
                                       stopping=self._stopping.is_set,
                                       wait=self.origin != "daemon",
                                       planned=planned if dry_run else None)
        except APIError as exc:
            log.error("vector store step failed", error=str(exc))
            return None
        if not dry_run:
            self.publish_mapping()
        return report
