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
from syncd.engine.scan import same_as_scanned
from syncd.engine.state import State

log = structlog.get_logger("syncd.execute")
A = TypeVar("A")

AMBIGUOUS_TRIES = 3


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

    def run(self, plan: Plan, publish: Callable[[], None]) -> Outcome:
        out = Outcome()
        # Ids found through intents are ours from now on, even if we crash next.
        for d in plan.deletes:
            if d.reason in ("duplicate", "stale"):
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

        early = plan.deletes if plan.deletes_first else []
        late = [] if plan.deletes_first else plan.deletes
        self._deletes(early, out)
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

    def _send(self, intent: Intent, purpose: str) -> tuple[RemoteFile, int]:
        path = self._root / intent.path
        for attempt in range(1, AMBIGUOUS_TRIES + 1):
            try:
                return self._client.upload(path, purpose, filename=intent.filename), attempt
            except AmbiguousUploadError:
                found = self._find_own_upload(intent)
                if found is not None:
                    log.info("adopted after lost response", path=intent.path, file_id=found.id)
                    return found, attempt
                if attempt == AMBIGUOUS_TRIES:
                    raise
        raise AssertionError("unreachable")

    def _find_own_upload(self, intent: Intent) -> RemoteFile | None:
        owned = {r.file_id for r in self._state.records().values() if r.file_id}
        owned |= self._state.garbage()
        candidates = [
            f
            for f in self._client.find_uploaded(intent.filename, intent.size, intent.started_at)
            if f.id not in owned
        ]
        if not candidates:
            return None
        keep, *extra = candidates  # newest first
        for dup in extra:
            self._state.add_garbage(dup.id, intent.path)
        return keep

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
