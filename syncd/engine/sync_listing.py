"""What a listing of the remote proves, and what it does not: the account as listed,
ids it lacks asked for one by one before anything is taken as gone, claims on ids the
provider no longer has let go."""

from __future__ import annotations

import time

import structlog

from syncd.api.errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
)
from syncd.engine import identity
from syncd.engine.model import Plan
from syncd.engine.plan import within
from syncd.engine.records import RecordTable
from syncd.engine.report import RunReport
from syncd.engine.sync_core import SyncerCore

log = structlog.get_logger("syncd.engine")

# Claims on ids gone from the provider checked (one read each) and released per reconcile.
RELEASE_PER_RUN = 20


class ListingChecks(SyncerCore):
    """Listing the remote, and confirming what the listing lacks."""

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

    def key_refused(self) -> str | None:
        """The provider's refusal of the key, in its words; None when it took the key
        or could not be asked (unreachable: the next run lists, and retries)."""
        try:
            self.client.check_key()
        except AuthenticationError as exc:
            log.error("the key was refused", error=str(exc))
            return str(exc)
        except APIError as exc:
            log.warning("cannot check the key now", error=str(exc))
        return None

    def _release_gone_claims(self) -> None:
        """Let go of claims on ids the provider no longer has (someone deleted them, or
        they expired): each claim is read by every run, and nothing can take such an id
        again. An id is released only when nothing here knows it, the listing lacks it
        and the provider answers not-found for it; a few per run, so a large backlog
        costs no burst of reads."""
        unlisted = {i for i in self.claims.mine() if i not in self.remote}
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

    def _confirm_absence(self, records: RecordTable, scope: frozenset[str] | None) -> int:
        """A listing is not a proof of absence: ask for each of our ids it lacks.

        Found ones go back into the view (the listing was inconsistent; their count is
        returned). Only a not-found answer, or another 4xx that is not about auth or
        quota, confirms that an id is gone; anything else ends the run undecided.
        """
        listed = self.remote
        ours = (
            records.file_ids()
            if scope is None
            else {f for path in within(records, scope) if (f := records[path].file_id)}
        )
        missing = sorted(f for f in ours if f not in listed)
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
        self.remote.replace_all(self.client.iter_files())
        files, size = self.remote.totals()
        self.ledger.rebase(files, size, mark, self.remote)
        identity.record(self.state, identity.of_config(self.config, self.client.key_fingerprint))
        self._save_account()

    def _save_account(self) -> None:
        """Account usage as listed, kept current by our own calls (for `syncd status`)."""
        files, size = self.remote.totals()
        self.state.set_meta("account", {"files": files, "bytes": size, "at": time.time()})
