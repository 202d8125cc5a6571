"""Carry out a plan: the only place the engine mutates the remote.

Order matters for the guarantees:
- an upload's intent is committed before the request, its outcome after, so a
  crash or lost response can be resolved by adoption instead of a second upload
  (``engine/upload.py``);
- replaced ids are deleted only after the mapping that pointed at them has been
  republished, so the published mapping never names a deleted id;
- a long run of uploads republishes the mapping as it goes (see ``_publish_due``),
  so a file is named within seconds of its upload, not after the last one;
- deletes of files gone locally run last, unless the account is short of space.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TypeVar

import structlog

from syncd import events
from syncd.api.errors import (
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
)
from syncd.engine.apply import adopt_all, claim_orphans, forget_all
from syncd.engine.claims import Claims
from syncd.engine.failures import Failed, failure_for
from syncd.engine.ledger import Ledger
from syncd.engine.model import Delete, Failure, Note, Outcome, Plan, Upload
from syncd.engine.progress import Progress, Silent
from syncd.engine.remote import RemoteFiles, RemoteView
from syncd.engine.state import State
from syncd.engine.upload import Changed, Uploaded, Uploader

log = structlog.get_logger("syncd.execute")
A = TypeVar("A")

# A publish mid-run waits this many times what the previous one cost: rewriting the
# mapping of a large tree takes a while, and must not take over the run.
PUBLISH_COST_FACTOR = 10


class Aborted(Exception):
    """Raised when the run cannot go on at all (the key was refused)."""


class Interrupted(Exception):
    """Raised after Ctrl-C: in-flight calls finished, their outcomes recorded."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__("interrupted")
        self.outcome = outcome


class Executor:
    def __init__(
        self,
        root: Path,
        client: RemoteFiles,
        state: State,
        remote: RemoteView,
        claims: Claims,
        ledger: Ledger,
        *,
        workers: int,
        publish_every_s: float = 2.0,
        progress: Progress | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self._root = root
        self._client = client
        self._state = state
        self._remote = remote
        self._claims = claims
        self._ledger = ledger
        self._workers = workers
        self._progress: Progress = progress or Silent()
        self._abort: AuthenticationError | None = None
        # Set by Ctrl-C or by a daemon stopping: calls not started yet are not started,
        # calls in flight finish and record their outcome.
        self._stopping = stopping or threading.Event()
        self._shares_freed: list[Delete] = []
        self._out = Outcome()
        self._uploader = Uploader(root, client, state, remote, claims, ledger, self._stopping)
        self._publish: Callable[[], None] = lambda: None
        self._publish_every_s = publish_every_s
        # When the mapping was last published, what that cost, and the uploads it named.
        self._published_at = 0.0
        self._publish_cost_s = 0.0
        self._published_uploads = 0

    def run(self, plan: Plan, publish: Callable[[], None]) -> Outcome:
        out = self._out
        self._publish = publish
        self._published_at = time.monotonic()
        try:
            self._apply_decisions(plan, out)
            if plan.deletes_first:
                self._publish_now()
                self._deletes(plan.deletes, out)
            late = [] if plan.deletes_first else plan.deletes
            replaced = self._uploads(plan.uploads, out)
            if self._abort is not None:
                raise Aborted(str(self._abort))
            self._publish_now()
            self._deletes([*late, *self._shares_freed, *replaced], out)
        except KeyboardInterrupt:
            self._stopping.set()
            raise Interrupted(out) from None
        if self._abort is not None:
            raise Aborted(str(self._abort))
        if self._stopping.is_set():
            raise Interrupted(out)
        return out

    def _publish_now(self) -> None:
        started = time.monotonic()
        self._publish()
        self._published_at = time.monotonic()
        self._publish_cost_s = self._published_at - started
        self._published_uploads = self._out.uploaded

    def _publish_due(self) -> None:
        """Between uploads: publish what was uploaded since the last publish, at most
        every ``publish_every_s``, and no sooner than ten times what the last publish
        cost (so publishing a large mapping takes about a tenth of the run at most).

        Safe mid-run: a replaced id stays on the remote until the run's last publish
        (its delete comes after), and a path being deleted left the mapping before.
        Called only by the thread running the plan, which holds the Syncer's lock.
        """
        if self._out.uploaded == self._published_uploads:
            return
        wait = max(self._publish_every_s, PUBLISH_COST_FACTOR * self._publish_cost_s)
        if time.monotonic() - self._published_at >= wait:
            try:
                self._publish_now()
            except Exception as exc:  # a full disk, say: the run's last publish tries again
                log.warning("could not publish the mapping mid-run", error=str(exc))
                self._published_at = time.monotonic()

    def _apply_decisions(self, plan: Plan, out: Outcome) -> None:
        """Everything the plan decided that needs no remote call."""
        claim_orphans(plan, self._state, self._claims)
        for lost in plan.note_lost:
            self._state.note_lost_copies(lost.path, lost.filename, lost.size, lost.window, 1)
        records = self._state.records()
        remote = self._remote.snapshot()
        adopt_all(plan.adopts, self._root, self._state, self._claims, self._progress,
                  records, remote, out)  # fmt: skip
        if plan.guard_refusal and plan.refused_deletes:
            self._state.hold(plan.refused_deletes, plan.guard_refusal)
        if plan.unhold:
            self._state.unhold(plan.unhold)
        for path in plan.clear_intents:
            self._state.clear_intent(path)
        if plan.found_lost:
            self._state.found_lost_copies(plan.found_lost)
        if plan.clear_lost:
            self._state.clear_lost_copies(plan.clear_lost)
        self._state.note_many(plan.notes)
        for note in plan.notes:
            if note.status not in ("synced",):
                log.info(events.NOT_SYNCED, path=note.path, status=note.status, reason=note.reason)
        forget_all(plan, records, self._state, self._claims)
        self._shares_freed = [
            Delete(sh.replaces, "replaced", sh.path)
            for sh in plan.shares
            if sh.file_id in remote
            and self._state.record_uploaded(
                sh.local, remote[sh.file_id], replaces=sh.replaces, action="shared"
            )
            and sh.replaces
        ]
        if plan.shares:
            log.info("shared identical content", paths=len(plan.shares))
        # Out of the mapping before its id is deleted (the record keeps the id, so it
        # stays ours if the delete fails).
        for d in plan.deletes:
            if d.reason == "gone" and d.path is not None:
                self._state.note(Note(d.path, "pending", "deleting: gone locally"))
        # Intents a targeted run left open: each upload looks for its file first.
        self._uploader.open_intents = self._state.intents()

    # ---- uploads

    def _uploads(self, uploads: list[Upload], out: Outcome) -> list[Delete]:
        replaced: list[Delete] = []
        lock = threading.Lock()

        def one(up: Upload) -> None:
            if self._abort is not None or self._stopping.is_set():
                return
            try:
                result = self._uploader.upload(up)
            except AuthenticationError as exc:
                self._abort = exc
                return
            except APIError as exc:  # a lookup for an earlier upload failed
                result = failure_for(exc)
                self._state.note(Note(up.path, result.status, result.reason))
            except Exception as exc:  # one file's failure never stops the others
                log.exception("upload crashed", path=up.path)
                result = Failed("error", f"{type(exc).__name__}: {exc}", True)
                self._state.note(Note(up.path, "error", result.reason))
            with lock:
                sent = 0
                if isinstance(result, Uploaded):
                    out.uploaded += 1
                    sent = up.local.size
                    replaced.extend(Delete(i, "replaced", up.path) for i in result.freed)
                elif isinstance(result, Changed):
                    out.changed_during_upload.append(up.path)
                    replaced.extend(Delete(i, "replaced", up.path) for i in result.freed)
                elif result.status != "skipped":  # no longer a file to sync: not a failure
                    out.failures[up.path] = Failure(up.path, result.status, result.reason)
            self._progress.done("upload", up.path, sent)

        self._pool(one, uploads, between=self._publish_due)
        return replaced

    # ---- deletes

    def _deletes(self, deletes: list[Delete], out: Outcome) -> None:
        lock = threading.Lock()

        def one(d: Delete) -> None:
            if self._abort is not None or self._stopping.is_set():
                return
            started = time.monotonic()
            try:
                self._client.delete(d.file_id)
            except NotFoundError:
                pass  # already gone: the goal is reached
            except AuthenticationError as exc:
                self._abort = exc
                return
            except APIError as exc:
                if self._absent(d.file_id, exc):
                    log.info(
                        events.DELETE_ID_UNKNOWN, file_id=d.file_id, error=str(exc)
                    )
                else:
                    with lock:
                        where = d.path or d.file_id
                        why = f"delete of {d.file_id} failed: {exc}"
                        out.failures[where] = Failure(where, "error", why)
                    if d.reason != "gone":  # a "gone" record keeps the id: retried next run
                        self._state.add_garbage(d.file_id, d.path)
                    return
            self._state.record_deleted(
                d.file_id, d.path, forget_path=d.reason == "gone", reason=d.reason
            )
            self._claims.release(d.file_id)
            gone = self._remote.remove(d.file_id)
            self._ledger.on_delete(gone.bytes if gone else 0)
            with lock:
                out.deleted += 1
            log.info(
                events.DELETED,
                path=d.path,
                file_id=d.file_id,
                reason=d.reason,
                duration_s=round(time.monotonic() - started, 3),
            )
            self._progress.done("delete", d.path or d.file_id, gone.bytes if gone else 0)

        self._pool(one, deletes)

    def _absent(self, file_id: str, exc: APIError) -> bool:
        """Some servers answer an unknown id with another 4xx than 404: with the id also
        missing from the listing, that is as good as not found; never retried forever."""
        definite = isinstance(exc, InvalidRequestError) and not isinstance(exc, QuotaExceededError)
        return definite and file_id not in self._remote.snapshot()

    def _pool(
        self,
        fn: Callable[[A], None],
        items: Sequence[A],
        between: Callable[[], None] = lambda: None,
    ) -> None:
        """``fn`` over ``items`` on the worker threads; ``between`` runs on this thread
        after each item is done."""
        if not items:
            return
        try:
            if len(items) == 1 or self._workers == 1:
                for item in items:
                    fn(item)
                    between()
                return
            with ThreadPoolExecutor(self._workers, thread_name_prefix="syncd-worker") as pool:
                try:
                    for done in as_completed([pool.submit(fn, item) for item in items]):
                        done.result()
                        between()
                except KeyboardInterrupt:
                    # Set before the pool waits: queued items see it and return at once,
                    # in-flight calls finish and record their outcome.
                    self._stopping.set()
                    raise
        except KeyboardInterrupt:
            self._stopping.set()
            raise

