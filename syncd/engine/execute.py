"""Carry out a plan: the only place the engine mutates the remote.

Order matters for the guarantees:
- an upload's intent is committed before the request, its outcome after, so a
  crash or lost response can be resolved by adoption instead of a second upload;
- replaced ids are deleted only after the mapping that pointed at them has been
  republished, so the published mapping never names a deleted id;
- a long run of uploads republishes the mapping as it goes (see ``_publish_due``),
  so a file is named within seconds of its upload, not after the last one;
- deletes of files gone locally run last, unless the account is short of space.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import structlog

from syncd.api.adoption import UploadWindow, find_own_upload, wire_name
from syncd.api.errors import (
    AmbiguousUploadError,
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
)
from syncd.api.models import RemoteFile
from syncd.engine.claims import Claims
from syncd.engine.failures import Failed, failure_for
from syncd.engine.journal import Action
from syncd.engine.ledger import Ledger
from syncd.engine.localopen import Opened, Refused, cannot_read
from syncd.engine.model import Delete, Failure, Intent, LocalFile, Note, Plan, Upload
from syncd.engine.progress import Progress, Silent
from syncd.engine.remote import RemoteFiles
from syncd.engine.scan import (
    CHANGED_SINCE_SCAN,
    hash_opened,
    hash_scanned,
    open_scanned,
    same_as_scanned,
    still_as_opened,
)
from syncd.engine.state import State

log = structlog.get_logger("syncd.execute")
A = TypeVar("A")

# Lost responses to one upload before it is left to the next run (its intent stays).
AMBIGUOUS_TRIES = 5
# Listings searched for an upload whose response was lost before it is sent again, and
# the pause before the second look (growing by as much before each next one: 5 s in all).
# A listing that omits a file at random is then wrong five times in a row for the
# copy to be made (1 in 400 at a 30 % omission rate); one that lags catches up.
LOOKS = 5
LOOK_PAUSE_S = 0.5
# A publish mid-run waits this many times what the previous one cost: rewriting the
# mapping of a large tree takes a while, and must not take over the run.
PUBLISH_COST_FACTOR = 10


class RemoteView:
    """The account's files as last listed, kept current by our own calls."""

    def __init__(self, files: Iterable[RemoteFile] = ()) -> None:
        self._files = {f.id: f for f in files}
        self._lock = threading.Lock()
        self.listed_at: float | None = None
        # Counts changes, as State.generation does.
        self.generation = 0

    def replace_all(self, files: Iterable[RemoteFile]) -> None:
        with self._lock:
            self._files = {f.id: f for f in files}
            self.listed_at = time.time()
            self.generation += 1

    def add(self, f: RemoteFile) -> None:
        with self._lock:
            self._files[f.id] = f
            self.generation += 1

    def remove(self, file_id: str) -> RemoteFile | None:
        with self._lock:
            self.generation += 1
            return self._files.pop(file_id, None)

    def __contains__(self, file_id: object) -> bool:
        return file_id in self._files

    def snapshot(self) -> dict[str, RemoteFile]:
        with self._lock:
            return dict(self._files)


class Aborted(Exception):
    """Raised when the run cannot go on at all (the key was refused)."""


class _MovedOn(Exception):
    """The file went, or changed, before an upload whose response was lost could be
    sent again."""


class Interrupted(Exception):
    """Raised after Ctrl-C: in-flight calls finished, their outcomes recorded."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__("interrupted")
        self.outcome = outcome


@dataclass
class Outcome:
    uploaded: int = 0
    adopted: int = 0
    deleted: int = 0
    failures: dict[str, Failure] = field(default_factory=dict)
    changed_during_upload: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Uploaded:
    remote: RemoteFile
    # Ids this upload (or a path riding along) left without any path: delete them.
    freed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Changed:
    """The file moved on before or while it was sent; it is looked at again later."""

    reason: str
    # Ids an upload that did finish left without any path (the version it replaced).
    freed: tuple[str, ...] = ()


UploadResult = Uploaded | Changed | Failed


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
        self._open_intents: dict[str, Intent] = {}
        self._out = Outcome()
        # Files listed before this run sent anything: none of them can be what one of
        # its uploads stored, whatever its name, size and time (a file uploaded by hand
        # a moment before, say).
        self._listed_before = remote.snapshot()
        self._listed_ids = frozenset(self._listed_before)
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
        # Ids found through intents are ours from now on, even if we crash next; one that
        # another project claimed first is not, and is not deleted.
        raced = set()
        for d in plan.deletes:
            if d.reason != "orphan":
                continue
            if self._claims.claim(d.file_id):
                self._state.add_garbage(d.file_id, d.path)
            else:
                raced.add(d.file_id)
        if raced:
            log.warning("another project claimed files first; not deleted", count=len(raced))
            plan.deletes = [d for d in plan.deletes if d.file_id not in raced]
        for lost in plan.note_lost:
            self._state.note_lost_copies(lost.path, lost.filename, lost.size, lost.window, 1)
        records = self._state.records()
        remote = self._remote.snapshot()
        for a in plan.adopts:
            if not self._claims.claim(a.file_id):
                log.warning("adoption lost a race", path=a.path, file_id=a.file_id)
                continue
            # Sent unhashed and never answered: its hash is the file's, if still as sent.
            try:
                sha = a.local.sha256 or hash_scanned(self._root, a.local)
            except Refused as exc:
                self._state.add_garbage(a.file_id, a.path)  # ours, but no longer its content
                if exc.status != "changing":  # a changed file is simply sent again
                    self._state.note(Note(a.path, exc.status, exc.reason))
                continue
            rec = records.get(a.path)
            # Like the planner, only an id still listed needs deleting; queueing one that
            # is already gone would cost the next run a DELETE that answers 404.
            old = rec.file_id if rec and rec.file_id in remote else None
            local = replace(a.local, sha256=sha)
            self._state.record_uploaded(local, remote[a.file_id], replaces=old, action="adopted")
            out.adopted += 1
            log.info("adopted", path=a.path, file_id=a.file_id, bytes=a.local.size)
            self._progress.done("adopt", a.path, a.local.size)
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
                log.info("not synced", path=note.path, status=note.status, reason=note.reason)
        left = {r.file_id for f in plan.forgets if (r := records.get(f.path)) and r.file_id}
        for f in plan.forgets:
            self._state.forget(f.path)
        # A remote copy left in place (delete_remote off, or rules that no longer select
        # the file) is the user's now: unclaimed, no later run deletes it as a stray.
        for file_id in left - self._owned() if left else ():
            self._claims.release(file_id)
        for path in plan.detaches:
            self._state.detach(path)
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
        self._open_intents = self._state.intents()

    # ---- uploads

    def _uploads(self, uploads: list[Upload], out: Outcome) -> list[Delete]:
        replaced: list[Delete] = []
        lock = threading.Lock()

        def one(up: Upload) -> None:
            if self._abort is not None or self._stopping.is_set():
                return
            try:
                result = self._upload(up)
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

    def _upload(self, up: Upload) -> UploadResult:
        # Opened once, inside the root, and only if it is still the file the scan saw:
        # whatever the path leads to later, the bytes hashed and sent are this file's.
        try:
            opened = open_scanned(self._root, up.local)
        except Refused as exc:
            return self._not_read(up, exc)
        except OSError:  # gone since the scan
            return self._not_read(up, Refused(CHANGED_SINCE_SCAN, "changing"))
        with opened:
            return self._upload_opened(up, opened)

    def _not_read(self, up: Upload, refused: Refused) -> UploadResult:
        """The file is not the one the scan saw, or cannot be read: nothing was sent."""
        self._state.note(Note(up.path, refused.status, refused.reason))
        if refused.status == "changing":
            return Changed(refused.reason)
        return Failed(refused.status, refused.reason, False)

    def _upload_opened(self, up: Upload, opened: Opened) -> UploadResult:
        local = up.local
        assert local.purpose is not None
        started = time.monotonic()
        with self._claims.name_lock(wire_name(local.name), local.size):
            earlier = self._open_intents.get(up.path)
            if earlier is not None:
                resolved = self._resolve_earlier(earlier, up, opened)
                if resolved is not None:
                    self._remote.add(resolved.remote)
                    return resolved
            # The fleet's quota ledger admits it before any byte is sent (single host:
            # always; the planner already fitted the run to the account).
            reservation = self._ledger.reserve(1, local.size)
            if reservation is None:
                return self._fail(up, Failed("quota", self._ledger.refusal(local.size), False))
            intent = self._state.begin_intent(local)
            try:
                remote, attempts = self._send(intent, opened, local)
            except APIError as exc:
                self._ledger.release(reservation)
                failed = failure_for(exc)
                refused_key = isinstance(exc, AuthenticationError)
                if refused_key or not failed.keep_intent:
                    self._state.clear_intent(up.path)
                if refused_key:
                    raise
                return self._fail(up, failed)
            except _MovedOn:
                # The intent stays: an attempt before may have stored it.
                self._ledger.release(reservation)
                reason = "gone or changed before it could be sent again; will look again"
                return self._fail(up, Failed("changing", reason, True))
            except OSError as exc:
                # Reading the open file failed (an I/O error): not a change, and not
                # passing. The intent stays: an attempt before may have stored it.
                self._ledger.release(reservation)
                return self._fail(up, Failed("error", cannot_read(exc), True))
            except BaseException:
                self._ledger.release(reservation)
                raise
            # Claimed and recorded before the name lock is released: until then another
            # upload of this name and size whose response is lost could take it for its own.
            self._claims.claim(remote.id)
            sent, moved_on = self._content_sent(local, remote, opened)
            # Changed while it was sent, or the path now leads to another file.
            changed = (
                moved_on or not still_as_opened(opened) or not same_as_scanned(self._root, local)
            )
            freed = self._record(replace(up, local=sent), remote, changed=changed)
            self._ledger.commit(reservation, remote.id)
        self._remote.add(remote)
        log.info(
            "uploaded",
            path=up.path,
            purpose=local.purpose,
            file_id=remote.id,
            bytes=local.size,
            kind=up.kind,
            duration_s=round(time.monotonic() - started, 3),
            attempts=attempts,
        )
        if changed:
            return Changed("changed while it was uploaded; will upload again", freed)
        return Uploaded(remote, freed)

    def _fail(self, up: Upload, failed: Failed) -> UploadResult:
        """Record why the upload (and the paths riding along) did not happen."""
        for path in (up.path, *(r.path for r in up.sharers)):
            self._state.note(Note(path, failed.status, failed.reason))
        return Changed(failed.reason) if failed.status == "changing" else failed

    def _record(self, up: Upload, remote: RemoteFile, *, changed: bool = False) -> tuple[str, ...]:
        """Record the path (and the paths riding along) as holding ``remote``; the ids
        no path holds any more are returned, to delete."""
        reason = "changed while it was uploaded; will upload again" if changed else None
        freed: list[str] = []
        status = "changing" if changed else "synced"
        action: Action = "refreshed" if up.kind == "refresh" else "uploaded"
        if self._state.record_uploaded(
            up.local, remote, replaces=up.replaces, status=status, reason=reason, action=action
        ):
            freed.append(up.replaces or "")
        # What was sent may not be what the riders hold if the lead changed meanwhile.
        for rider in () if changed else up.sharers:
            if self._state.record_uploaded(
                rider.local, remote, replaces=rider.replaces, action="shared"
            ):
                freed.append(rider.replaces or "")
        return tuple(i for i in freed if i)

    def _content_sent(
        self, local: LocalFile, remote: RemoteFile, opened: Opened
    ) -> tuple[LocalFile, bool]:
        """``local`` with the hash of what the upload sent, and whether that differs
        from what the scan saw. The client hashes the bytes as it streams them; a file
        the scan did not hash takes that hash (read once). Without it (a lost response
        adopted) the open file is hashed now if it is still as scanned; when even that
        fails, the record is left without a hash and replaced on the next run."""
        streamed = getattr(remote, "sha256", None)
        sent = streamed if isinstance(streamed, str) else None
        if local.sha256 is not None:
            if sent is not None and sent != local.sha256:
                return replace(local, sha256=sent), True
            return local, False
        sha = sent or _hash_if_unchanged(opened, local)
        return replace(local, sha256=sha), sha is None

    def _resolve_earlier(self, earlier: Intent, up: Upload, opened: Opened) -> Uploaded | None:
        """An earlier upload of this path never recorded its outcome: adopt what it made
        if it holds the current content, else keep its id as ours to delete."""
        if earlier.window is None:
            return None  # its body never left in full: it cannot have stored anything
        found = self._look_for(earlier.filename, earlier.size, earlier.window)
        if found is None:
            # The listing may have left it out: later full runs look for it again.
            self._state.note_lost_copies(
                up.path, earlier.filename, earlier.size, earlier.window, 1
            )
            return None
        if earlier.holds(up.local):
            # Matched by stat when either side was not hashed: the hash is then the
            # intent's, or the file's as it still is.
            sha = up.local.sha256 or earlier.sha256 or _hash_if_unchanged(opened, up.local)
            if sha is not None:
                freed = self._record(replace(up, local=replace(up.local, sha256=sha)), found)
                log.info("adopted earlier upload", path=up.path, file_id=found.id)
                return Uploaded(found, freed)
        self._state.add_garbage(found.id, up.path)
        return None

    def _send(self, intent: Intent, opened: Opened, local: LocalFile) -> tuple[RemoteFile, int]:
        name, purpose = local.name, local.purpose
        assert purpose is not None
        window: UploadWindow | None = None
        noted: int | None = None  # this upload's row of lost copies, once it has one

        def sent(w: UploadWindow) -> None:
            self._state.mark_sent(intent.path, w)

        for attempt in range(1, AMBIGUOUS_TRIES + 1):
            try:
                uploaded = self._client.upload(opened.file, purpose, filename=name, on_sent=sent)
            except AmbiguousUploadError as lost:
                # Every attempt so far may have stored the file: look across all of them.
                w = lost.window
                window = (
                    w
                    if window is None
                    else UploadWindow(
                        min(window.earliest, w.earliest), max(window.latest, w.latest)
                    )
                )
                try:
                    found = self._look_again(intent.filename, intent.size, window)
                except APIError:
                    # Could not look: the intent must stay, so report the lost upload.
                    raise lost from None
                if found is not None:
                    log.info("adopted after lost response", path=intent.path, file_id=found.id)
                    # One of the attempts is adopted; the others may have stored copies.
                    self._note_lost_copies(intent, window, attempt - 1, noted)
                    return found, attempt
                if attempt == AMBIGUOUS_TRIES or self._stopping.is_set():
                    # The intent stays: the next full run adopts one of them, if any.
                    self._note_lost_copies(intent, window, attempt - 1, noted)
                    raise
                # Sent again: each attempt so far may have stored a copy no listing
                # showed yet. Noted before the next send, so that neither a crash nor a
                # stop nor another failure of it loses them.
                noted = self._note_lost_copies(intent, window, attempt, noted)
                if not same_as_scanned(self._root, local):
                    raise _MovedOn from None  # not sent again: the path no longer holds it
                continue
            return uploaded, attempt
        raise AssertionError("unreachable")

    def _note_lost_copies(
        self, intent: Intent, window: UploadWindow, most: int, key: int | None
    ) -> int | None:
        """Up to ``most`` copies in ``window`` are ours to find and delete (later full
        runs look for them): this upload's row, written or brought up to date. Not when a
        file listed before the run, and not ours, could pass for one of them."""
        if key is not None:
            self._state.update_lost_copies(key, window, most)
            return key
        if most < 1:
            return None
        before = self._listed_before.values()
        if find_own_upload(intent.filename, intent.size, window, before, self._owned()):
            log.warning("lost copies not looked for: a listed file could pass for one",
                        path=intent.path)  # fmt: skip
            return None
        return self._state.note_lost_copies(
            intent.path, intent.filename, intent.size, window, most
        )

    def _look_again(self, filename: str, size: int, window: UploadWindow) -> RemoteFile | None:
        """Our upload whose response this run lost: looked for in ``LOOKS`` listings
        before it is sent again, since a listing may omit a file it has (an upload sent
        again after one omitted it is a copy nobody tracks)."""
        for look in range(LOOKS):
            if look and self._stopping.wait(LOOK_PAUSE_S * look):
                return None  # stopping: the caller gives up on the file
            found = self._look_for(filename, size, window, exclude=self._listed_ids)
            if found is not None:
                return found
        return None

    def _look_for(
        self,
        filename: str,
        size: int,
        window: UploadWindow,
        exclude: Collection[str] = frozenset(),
    ) -> RemoteFile | None:
        """Our lost upload among the files listed now (the planner's rule, on a fresh
        look), claimed for this project before it is returned. ``exclude``: ids that
        cannot be it."""
        files = list(self._client.find_uploaded(window))
        taken = self._owned() | self._claims.others() | set(exclude)
        while (found := find_own_upload(filename, size, window, files, taken)) is not None:
            if self._claims.claim(found.id):
                return found
            taken.add(found.id)  # another project claimed it meanwhile
        return None

    def _owned(self) -> set[str]:
        return self._state.owned_ids()

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
                        "delete: id unknown to the provider", file_id=d.file_id, error=str(exc)
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
                "deleted",
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


def _hash_if_unchanged(opened: Opened, local: LocalFile) -> str | None:
    """The sha256 of the open file, if it is still as the scan saw it."""
    try:
        sha, changed = hash_opened(opened, local)
    except Refused:
        return None
    return None if changed else sha
