"""Upload one file, exactly once, whatever the network does.

The file is opened once, inside the root, and what is hashed and sent is that open
file. Before the request an *intent* is committed; just before the body's last byte
leaves, its provider-clock *window*; after, the outcome. A response lost on the way
back is resolved by looking for what the attempt stored (``LOOKS`` listings) before
the file is sent again, and the attempts that may have stored copies are noted, so
later full runs find and delete them: the upload is adopted, never duplicated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from syncd import events
from syncd.api.adoption import UploadWindow, find_own_upload, wire_name
from syncd.api.errors import AmbiguousUploadError, APIError, AuthenticationError
from syncd.api.models import RemoteFile, Sent
from syncd.engine.claims import Claims
from syncd.engine.failures import Failed, failure_for
from syncd.engine.journal import Action
from syncd.engine.ledger import Ledger, Reservation
from syncd.engine.localopen import Opened, Refused, cannot_read
from syncd.engine.model import Intent, LocalFile, Note, Upload
from syncd.engine.remote import RemoteFiles, RemoteView
from syncd.engine.scan import (
    CHANGED_SINCE_SCAN,
    hash_opened,
    open_scanned,
    same_as_scanned,
    still_as_opened,
)
from syncd.engine.state import State

log = structlog.get_logger("syncd.execute")

# Lost responses to one upload before it is left to the next run (its intent stays).
AMBIGUOUS_TRIES = 5
# Listings searched for an upload whose response was lost before it is sent again, and
# the pause before the second look (growing by as much before each next one: 5 s in all).
# A listing that omits a file at random is then wrong five times in a row for the
# copy to be made (1 in 400 at a 30 % omission rate); one that lags catches up.
LOOKS = 5
LOOK_PAUSE_S = 0.5


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


class _MovedOn(Exception):
    """The file went, or changed, before an upload whose response was lost could be
    sent again."""


class Uploader:
    """Uploads the files of one run; thread-safe (the run's workers share it)."""

    def __init__(
        self,
        root: Path,
        client: RemoteFiles,
        state: State,
        remote: RemoteView,
        claims: Claims,
        ledger: Ledger,
        stopping: threading.Event,
    ) -> None:
        self._root = root
        self._client = client
        self._state = state
        self._remote = remote
        self._claims = claims
        self._ledger = ledger
        self._stopping = stopping
        # Intents earlier runs left open: each upload looks for its file first.
        self.open_intents: dict[str, Intent] = {}
        # Files listed before this run sent anything: none of them can be what one of
        # its uploads stored, whatever its name, size and time (a file uploaded by hand
        # a moment before, say).
        self._listed_before = remote.snapshot()
        self._listed_ids = frozenset(self._listed_before)

    def upload(self, up: Upload) -> UploadResult:
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
            earlier = self.open_intents.get(up.path)
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
            outcome = self._send_or_fail(up, intent, opened, reservation)
            if not isinstance(outcome, tuple):
                return outcome
            sent_file, attempts = outcome
            # Claimed and recorded before the name lock is released: until then another
            # upload of this name and size whose response is lost could take it for its own.
            remote = sent_file.file
            self._claims.claim(remote.id)
            sent, moved_on = self._content_sent(local, sent_file, opened)
            # Changed while it was sent, or the path now leads to another file.
            changed = (
                moved_on or not still_as_opened(opened) or not same_as_scanned(self._root, local)
            )
            freed = self._record(replace(up, local=sent), remote, changed=changed)
            self._ledger.commit(reservation, remote.id)
        self._remote.add(remote)
        log.info(
            events.UPLOADED,
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

    def _send_or_fail(self, up: Upload, intent: Intent, opened: Opened,
                      reservation: Reservation) -> tuple[Sent, int] | UploadResult:  # fmt: skip
        """The file sent (and the attempts it took), or why not: the ledger's reservation
        is given back then, and the intent kept while an attempt may have stored it."""
        try:
            return self._send(intent, opened, up.local)
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
        self, local: LocalFile, uploaded: Sent, opened: Opened
    ) -> tuple[LocalFile, bool]:
        """``local`` with the hash of what the upload sent, and whether that differs
        from what the scan saw. The client hashes the bytes as it streams them; a file
        the scan did not hash takes that hash (read once). Without it (a lost response
        adopted) the open file is hashed now if it is still as scanned; when even that
        fails, the record is left without a hash and replaced on the next run."""
        sent = uploaded.sha256
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
                log.info(events.ADOPTED_EARLIER_UPLOAD, path=up.path, file_id=found.id)
                return Uploaded(found, freed)
        self._state.add_garbage(found.id, up.path)
        return None

    def _send(self, intent: Intent, opened: Opened, local: LocalFile) -> tuple[Sent, int]:
        name, purpose = local.name, local.purpose
        assert purpose is not None
        window: UploadWindow | None = None
        noted: int | None = None  # this upload's row of lost copies, once it has one

        def sent(w: UploadWindow) -> None:
            self._state.mark_sent(intent.path, w)

        for attempt in range(1, AMBIGUOUS_TRIES + 1):
            try:
                uploaded = self._client.send(opened.file, purpose, filename=name, on_sent=sent)
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
                    log.info(events.ADOPTED_AFTER_LOST_RESPONSE, path=intent.path, file_id=found.id)
                    # One of the attempts is adopted; the others may have stored copies.
                    self._note_lost_copies(intent, window, attempt - 1, noted)
                    return Sent(found), attempt
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


def _hash_if_unchanged(opened: Opened, local: LocalFile) -> str | None:
    """The sha256 of the open file, if it is still as the scan saw it."""
    try:
        sha, changed = hash_opened(opened, local)
    except Refused:
        return None
    return None if changed else sha
