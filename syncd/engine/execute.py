"""Carry out a plan: the only place the engine mutates the remote.

Order matters for the guarantees:
- an upload's intent is committed before the request, its outcome after, so a
  crash or lost response can be resolved by adoption instead of a second upload;
- replaced ids are deleted only after the mapping that pointed at them has been
  republished, so the published mapping never names a deleted id;
- deletes of files gone locally run last, unless the account is short of space.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import structlog

from syncd.api.client import FilesClient
from syncd.api.errors import (
    AmbiguousUploadError,
    APIError,
    AuthenticationError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    QuotaExceededError,
    RetryableError,
)
from syncd.api.models import RemoteFile
from syncd.engine.model import Delete, Intent, Note, Plan, Upload
from syncd.engine.plan import INTENT_WINDOW_S
from syncd.engine.scan import same_as_scanned
from syncd.engine.state import State

log = structlog.get_logger("syncd.execute")
A = TypeVar("A")

# Lost responses to one upload before it is left to the next run (its intent stays).
AMBIGUOUS_TRIES = 5


class RemoteView:
    """The account's files as last listed, kept current by our own calls."""

    def __init__(self, files: Iterable[RemoteFile] = ()) -> None:
        self._files = {f.id: f for f in files}
        self._lock = threading.Lock()
        self.listed_at: float | None = None

    def replace_all(self, files: Iterable[RemoteFile]) -> None:
        with self._lock:
            self._files = {f.id: f for f in files}
            self.listed_at = time.time()

    def add(self, f: RemoteFile) -> None:
        with self._lock:
            self._files[f.id] = f

    def remove(self, file_id: str) -> None:
        with self._lock:
            self._files.pop(file_id, None)

    def snapshot(self) -> dict[str, RemoteFile]:
        with self._lock:
            return dict(self._files)


class Aborted(Exception):
    """Raised when the run cannot go on at all (the key was refused)."""


@dataclass
class Outcome:
    uploaded: int = 0
    adopted: int = 0
    deleted: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    changed_during_upload: list[str] = field(default_factory=list)


class Executor:
    def __init__(
        self,
        root: Path,
        client: FilesClient,
        state: State,
        remote: RemoteView,
        *,
        workers: int,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self._root = root
        self._client = client
        self._state = state
        self._remote = remote
        self._workers = workers
        self._progress = progress or (lambda _kind: None)
        self._name_locks: dict[tuple[str, int], threading.Lock] = {}
        self._guard = threading.Lock()
        self._abort: AuthenticationError | None = None
        self._open_intents: dict[str, Intent] = {}

    def run(self, plan: Plan, publish: Callable[[], None]) -> Outcome:
        out = Outcome()
        # Ids found through intents are ours from now on, even if we crash next.
        for d in plan.deletes:
            if d.reason == "orphan":
                self._state.add_garbage(d.file_id, d.path)
        records = self._state.records()
        remote = self._remote.snapshot()
        for a in plan.adopts:
            rec = records.get(a.path)
            # Like the planner, only an id still listed needs deleting; queueing one that
            # is already gone would cost the next run a DELETE that answers 404.
            old = rec.file_id if rec and rec.file_id in remote else None
            self._state.record_uploaded(a.local, remote[a.file_id], replaces=old)
            out.adopted += 1
            log.info("adopted", path=a.path, file_id=a.file_id, bytes=a.local.size)
            self._progress("adopt")
        for path in plan.clear_intents:
            self._state.clear_intent(path)
        for note in plan.notes:
            self._state.note(note)
            if note.status not in ("synced",):
                log.info("not synced", path=note.path, status=note.status, reason=note.reason)
        for f in plan.forgets:
            self._state.forget(f.path)
        # Out of the mapping before its id is deleted (the record keeps the id, so it
        # stays ours if the delete fails).
        for d in plan.deletes:
            if d.reason == "gone" and d.path is not None:
                self._state.note(Note(d.path, "pending", "deleting: gone locally"))
        # Intents a targeted run left open: each upload looks for its file first.
        self._open_intents = self._state.intents()

        if plan.deletes_first:
            publish()
            self._deletes(plan.deletes, out)
        late = [] if plan.deletes_first else plan.deletes
        replaced = self._uploads(plan.uploads, out)
        if self._abort is not None:
            raise Aborted(str(self._abort))
        publish()
        self._deletes([*late, *replaced], out)
        if self._abort is not None:
            raise Aborted(str(self._abort))
        return out

    # ---- uploads

    def _uploads(self, uploads: list[Upload], out: Outcome) -> list[Delete]:
        replaced: list[Delete] = []
        lock = threading.Lock()

        def one(up: Upload) -> None:
            if self._abort is not None:
                return
            try:
                result = self._upload(up)
            except AuthenticationError as exc:
                self._abort = exc
                return
            except Exception as exc:  # one file's failure never stops the others
                log.exception("upload crashed", path=up.path)
                result = f"error: {type(exc).__name__}: {exc}"
                self._state.note(Note(up.path, "error", result))
            with lock:
                if isinstance(result, RemoteFile):
                    out.uploaded += 1
                    if up.replaces and up.replaces != result.id:
                        replaced.append(Delete(up.replaces, "replaced", up.path))
                elif result == "changed":
                    out.changed_during_upload.append(up.path)
                else:
                    out.failures[up.path] = result
            self._progress("upload")

        self._pool(one, uploads)
        return replaced

    def _upload(self, up: Upload) -> RemoteFile | str:
        local = up.local
        assert local.purpose is not None
        if not same_as_scanned(self._root, local):
            self._state.note(Note(up.path, "changing", "changed since the scan; will retry"))
            return "changed"
        started = time.monotonic()
        with self._name_lock(local.name, local.size):
            earlier = self._open_intents.get(up.path)
            if earlier is not None:
                found = self._resolve_earlier(earlier, up)
                if found is not None:
                    self._remote.add(found)
                    return found
            intent = self._state.begin_intent(local)
            try:
                remote, attempts = self._send(intent, local.purpose)
            except QuotaExceededError as exc:
                self._state.clear_intent(up.path)
                self._state.note(Note(up.path, "quota", f"provider: {exc.message}"))
                return f"quota: {exc.message}"
            except InvalidRequestError as exc:
                self._state.clear_intent(up.path)
                reason = f"rejected by the provider: {exc.code or exc.status}: {exc.message}"
                self._state.note(Note(up.path, "invalid", reason))
                return reason
            except NetworkError as exc:
                self._state.clear_intent(up.path)
                self._state.note(Note(up.path, "error", str(exc)))
                return f"error: {exc}"
            except (RetryableError, AmbiguousUploadError) as exc:
                # The request may have created the file: the intent stays, so the next
                # run looks for it before uploading again.
                self._state.note(Note(up.path, "error", str(exc)))
                return f"error: {exc}"
            # Recorded before the name lock is released: until then a same-name, same-size
            # upload whose response is lost would take this file for its own.
            changed = not same_as_scanned(self._root, local)
            self._state.record_uploaded(
                local, remote, replaces=up.replaces, status="changing" if changed else "synced"
            )
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
        return "changed" if changed else remote

    def _resolve_earlier(self, earlier: Intent, up: Upload) -> RemoteFile | None:
        """An earlier upload of this path never recorded its outcome: adopt what it made
        if it holds the current content, else keep its id as ours to delete."""
        found = self._find_own_upload(earlier)  # errors propagate: the intent stays
        if found is None:
            return None
        if earlier.sha256 == up.local.sha256:
            self._state.record_uploaded(up.local, found, replaces=up.replaces)
            log.info("adopted earlier upload", path=up.path, file_id=found.id)
            return found
        self._state.add_garbage(found.id, up.path)
        return None

    def _send(self, intent: Intent, purpose: str) -> tuple[RemoteFile, int]:
        path = self._root / intent.path
        for attempt in range(1, AMBIGUOUS_TRIES + 1):
            try:
                return self._client.upload(path, purpose, filename=intent.filename), attempt
            except AmbiguousUploadError as lost:
                try:
                    found = self._find_own_upload(intent)
                except APIError:
                    # Could not look: the intent must stay, so report the lost upload.
                    raise lost from None
                if found is not None:
                    log.info("adopted after lost response", path=intent.path, file_id=found.id)
                    return found, attempt
                if attempt == AMBIGUOUS_TRIES:
                    raise
        raise AssertionError("unreachable")

    def _find_own_upload(self, intent: Intent) -> RemoteFile | None:
        """The earliest unowned file of the intent's name and size created in its window
        (the planner's rule, on a fresh look)."""
        owned = {r.file_id for r in self._state.records().values() if r.file_id}
        owned |= self._state.garbage()
        latest = intent.started_at + INTENT_WINDOW_S
        candidates = [
            f
            for f in self._client.find_uploaded(intent.filename, intent.size, intent.started_at)
            if f.id not in owned and f.created_at <= latest
        ]
        return min(candidates, key=lambda f: (f.created_at, f.id)) if candidates else None

    def _name_lock(self, name: str, size: int) -> threading.Lock:
        # Two uploads with the same name and size at once would make adoption ambiguous.
        with self._guard:
            return self._name_locks.setdefault((name, size), threading.Lock())

    # ---- deletes

    def _deletes(self, deletes: list[Delete], out: Outcome) -> None:
        lock = threading.Lock()

        def one(d: Delete) -> None:
            if self._abort is not None:
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
                with lock:
                    out.failures[d.path or d.file_id] = f"delete of {d.file_id} failed: {exc}"
                if d.reason == "gone":
                    # The id stays ours: the next run deletes it.
                    pass
                else:
                    self._state.add_garbage(d.file_id, d.path)
                return
            self._state.record_deleted(d.file_id, d.path, forget_path=d.reason == "gone")
            self._remote.remove(d.file_id)
            with lock:
                out.deleted += 1
            log.info(
                "deleted",
                path=d.path,
                file_id=d.file_id,
                reason=d.reason,
                duration_s=round(time.monotonic() - started, 3),
            )
            self._progress("delete")

        self._pool(one, deletes)

    def _pool(self, fn: Callable[[A], None], items: Sequence[A]) -> None:
        if not items:
            return
        if len(items) == 1 or self._workers == 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(self._workers, thread_name_prefix="syncd-worker") as pool:
            for _ in pool.map(fn, items):
                pass
