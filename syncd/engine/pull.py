"""Provider-made files come home: which to mirror into the outbox, under what name, and
the writing of them.

:func:`plan_pull` decides, without I/O, from the remote listing, the batch jobs we know
of and the inputs that are ours: a result whose job ran over one of our files is named
after it (``a/requests.jsonl`` -> ``a/requests.output.jsonl`` and
``a/requests.errors.jsonl``), any other by its id. When two jobs' results claim one
name, the newest job's win it and the others are named by id.

:func:`run_pull` writes each one: downloaded into a temp file beside its destination,
fsynced, checked against the remote size, then renamed into place and the folder
fsynced. A file already in the outbox is replaced only when it is what syncd pulled
there and nobody changed it since; otherwise the new content goes to a conflict copy,
recorded with the reason. Every step is noted in a ledger first, so a crash at any point
is resumed by :func:`recover`: a half-written temp is discarded, a rename that happened
is recognised by its hash. The remote copy is deleted (optionally) only after all that.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal, Protocol

import structlog

from syncd.api.errors import APIError, DownloadRefusedError, NotFoundError
from syncd.api.models import BATCH_OUTPUT, Batch, Downloaded, RemoteFile

log = structlog.get_logger(__name__)

Kind = Literal["output", "errors", "by_id"]
TEMP_PREFIX = ".syncd-pull-"
TEMP_SUFFIX = ".tmp"
_HASH_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class PullConfig:
    """``pull:`` of the config: where provider-made files go, and which."""

    outbox: Path
    purposes: tuple[str, ...] = (BATCH_OUTPUT,)
    # Delete the remote copy once the local one is safe (results of jobs over our own
    # inputs only: syncd never deletes what it cannot call its own).
    delete_remote_after_pull: bool = False


@dataclass(frozen=True)
class PullItem:
    """One file to pull, and where to."""

    file_id: str
    bytes: int
    name: str  # outbox-relative, "/"-separated
    kind: Kind
    batch_id: str | None = None
    batch_created_at: int = 0
    # The input (root-relative path) the result is named after.
    input_path: str | None = None

    @property
    def ours(self) -> bool:
        """A result of a job over one of our inputs: deletable after the pull."""
        return self.input_path is not None


@dataclass(frozen=True)
class Pulled:
    """A file pulled into the outbox, as the ledger keeps it."""

    file_id: str
    name: str  # where it was written (a conflict copy's name when it is one)
    bytes: int
    sha256: str
    mtime_ns: int
    inode: int
    pulled_at: float
    batch_id: str | None = None
    batch_created_at: int = 0
    # Why the file went to a conflict copy instead of its name; None when it did not.
    conflict: str | None = None
    ours: bool = False
    remote_deleted: bool = False


@dataclass(frozen=True)
class InFlight:
    """A pull a crash may have interrupted: its temp, and once downloaded, where it was
    going and what it held."""

    file_id: str
    temp: str  # outbox-relative
    dest: str | None = None
    sha256: str | None = None
    item: PullItem | None = None
    conflict: str | None = None


class PullLedger(Protocol):
    """What a pull records (``syncd.engine.batch_store.BatchStore`` is one)."""

    def pulled_ids(self) -> set[str]: ...

    def holder(self, name: str) -> Pulled | None: ...

    def note_downloading(self, file_id: str, temp: str, item: PullItem) -> None: ...

    def note_placing(self, file_id: str, dest: str, sha256: str, conflict: str | None) -> None: ...

    def in_flight(self) -> list[InFlight]: ...

    def forget_in_flight(self, file_id: str) -> None: ...

    def record_pulled(self, pulled: Pulled) -> None: ...

    def record_refused(self, file_id: str, reason: str) -> None: ...

    def pending_remote_deletes(self) -> list[Pulled]: ...

    def record_remote_deleted(self, file_id: str) -> None: ...

    def record_removed(self, file_id: str) -> None: ...


class PullRemote(Protocol):
    def download(
        self, file_id: str, dest: BinaryIO, *, size: int | None = None, purpose: str | None = None
    ) -> Downloaded: ...

    def delete(self, file_id: str) -> None: ...


# ---- deciding ------------------------------------------------------------------------------


def result_name(input_path: str, kind: Kind) -> str:
    """``a/requests.jsonl`` -> ``a/requests.output.jsonl`` (or ``.errors.jsonl``)."""
    path = PurePosixPath(input_path)
    label = "output" if kind == "output" else "errors"
    return str(path.with_name(f"{path.stem}.{label}.jsonl"))


def by_id_name(remote: RemoteFile) -> str:
    suffix = PurePosixPath(remote.filename).suffix.lower()
    return remote.id + (suffix if suffix in (".jsonl", ".json", ".txt") else "")


def conflict_name(name: str, file_id: str, taken: int = 0) -> str:
    """Where content goes when ``name`` holds a file the user changed: beside it,
    ``requests.output.conflict-<id tail>.jsonl`` (and ``-2``, ``-3`` … if taken)."""
    path = PurePosixPath(name)
    tail = file_id[-12:]
    extra = f"-{taken + 1}" if taken else ""
    return str(path.with_name(f"{path.stem}.conflict-{tail}{extra}{path.suffix}"))


def safe_name(name: str) -> bool:
    """A relative path without ``..``, empty parts or a leading ``/``: stays in the outbox."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and all(
        part not in ("", ".", "..") for part in name.split("/"))  # fmt: skip


@dataclass
class Attribution:
    """What the jobs we can see say of result files: file id -> (job, kind)."""

    results: dict[str, tuple[Batch, Kind]] = field(default_factory=dict)

    def add(self, batch: Batch) -> None:
        if batch.output_file_id:
            self.results[batch.output_file_id] = (batch, "output")
        if batch.error_file_id:
            self.results[batch.error_file_id] = (batch, "errors")


def plan_pull(
    remote: Iterable[RemoteFile],
    attribution: Attribution,
    inputs: Mapping[str, str],
    pulled: Iterable[str],
    held: Mapping[str, int],
    config: PullConfig,
    current: Collection[str] = (),
) -> list[PullItem]:
    """The files to pull now, oldest first.

    ``remote``: the account's files; only those of ``config.purposes`` not in ``pulled``
    (ids already pulled, or refused) are candidates. ``inputs``: input file id -> the
    path it was synced from (ours). ``held``: outbox names already holding a pulled result
    -> the ``created_at`` of the job it came from: an older job's result never takes a
    name from a newer one's. ``current``: the input ids the paths hold now: a job over
    what a file holds now wins its name over one over what it held before, whatever
    their times (two jobs can start within the same second)."""
    done = set(pulled)
    wanted = set(config.purposes)
    candidates = sorted(
        (r for r in remote if r.purpose in wanted and r.id not in done),
        key=lambda r: (r.created_at, r.id),
    )
    # First what each file would be called, then one file per name: the newest job's.
    items: list[PullItem] = []
    inputs_of: dict[str, str] = {}  # batch id -> its input file id
    claims: dict[str, list[int]] = {}
    for r in candidates:
        found = attribution.results.get(r.id)
        if found is None:
            items.append(PullItem(r.id, r.bytes, by_id_name(r), "by_id"))
            continue
        batch, kind = found
        inputs_of[batch.id] = batch.input_file_id
        input_path = inputs.get(batch.input_file_id)
        name = result_name(input_path, kind) if input_path is not None else None
        if name is None or not safe_name(name):
            items.append(PullItem(r.id, r.bytes, by_id_name(r), "by_id", batch.id,
                                  batch.created_at, input_path))  # fmt: skip
            continue
        claims.setdefault(name, []).append(len(items))
        items.append(PullItem(r.id, r.bytes, name, kind, batch.id, batch.created_at, input_path))
    for name, indices in claims.items():
        ranked = sorted(indices, key=lambda i: (
            inputs_of.get(items[i].batch_id or "") in current,
            items[i].batch_created_at, items[i].batch_id or ""))  # fmt: skip
        winner = ranked[-1]
        # Results over what the file holds now take the name; others only from an older
        # job's (a tie in whole seconds keeps what is there).
        current_wins = inputs_of.get(items[winner].batch_id or "") in current
        newer = held.get(name, -1) < items[winner].batch_created_at
        losers = ranked[:-1] if current_wins or newer or name not in held else ranked
        for i in losers:
            item = items[i]
            items[i] = PullItem(item.file_id, item.bytes, item.file_id + ".jsonl", "by_id",
                                item.batch_id, item.batch_created_at, item.input_path)
    return items


# ---- writing -------------------------------------------------------------------------------


@dataclass
class PullOutcome:
    pulled: list[Pulled] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file id, reason)
    deleted_remote: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (file id, message)
    recovered: list[str] = field(default_factory=list)  # file ids finished after a crash


def temp_name(dest_name: str, file_id: str) -> str:
    """The temp a pull writes, beside its destination (the same file system)."""
    return str(PurePosixPath(dest_name).with_name(f"{TEMP_PREFIX}{file_id}{TEMP_SUFFIX}"))


def recover(ledger: PullLedger, outbox: Path, outcome: PullOutcome) -> None:
    """Finish or undo what a crash interrupted. A download never noted as complete is
    discarded (its temp removed; it is pulled again); one whose rename happened (the
    destination holds its hash) is recorded; one downloaded but not renamed is renamed now."""
    for flight in ledger.in_flight():
        temp = outbox / flight.temp
        if flight.dest is None or flight.sha256 is None or flight.item is None:
            temp.unlink(missing_ok=True)
            ledger.forget_in_flight(flight.file_id)
            continue
        dest = outbox / flight.dest
        if temp.exists() and _sha256(temp) == flight.sha256:
            os.replace(temp, dest)
            _fsync_dir(dest.parent)
        temp.unlink(missing_ok=True)
        if dest.exists() and _sha256(dest) == flight.sha256:
            pulled = _record(ledger, flight.item, flight.dest, dest, flight.sha256,
                             flight.conflict)  # fmt: skip
            outcome.pulled.append(pulled)
            outcome.recovered.append(flight.file_id)
        else:
            ledger.forget_in_flight(flight.file_id)


def run_pull(
    client: PullRemote,
    ledger: PullLedger,
    config: PullConfig,
    items: Sequence[PullItem],
    outcome: PullOutcome,
) -> None:
    """Pull ``items`` one by one; a failure of one is noted in ``outcome`` and the next
    goes on. Then delete the remote copies that are due (with delete_remote_after_pull)."""
    outbox = config.outbox
    outbox.mkdir(parents=True, exist_ok=True)
    for item in items:
        try:
            outcome.pulled.append(pull_one(client, ledger, outbox, item))
        except DownloadRefusedError as exc:
            reason = exc.message
            ledger.record_refused(item.file_id, reason)
            outcome.refused.append((item.file_id, reason))
            log.warning("pull.refused", file_id=item.file_id, reason=reason)
        except (APIError, OSError) as exc:
            outcome.errors.append((item.file_id, str(exc)))
            log.warning("pull.failed", file_id=item.file_id, error=str(exc))
    if config.delete_remote_after_pull:
        for pulled in ledger.pending_remote_deletes():
            try:
                client.delete(pulled.file_id)
            except NotFoundError:
                pass
            except APIError as exc:
                outcome.errors.append((pulled.file_id, f"delete after pull: {exc}"))
                continue
            ledger.record_remote_deleted(pulled.file_id)
            outcome.deleted_remote.append(pulled.file_id)


def pull_one(client: PullRemote, ledger: PullLedger, outbox: Path, item: PullItem) -> Pulled:
    if not safe_name(item.name):
        raise OSError(f"refusing to write outside the outbox: {item.name!r}")
    temp_rel = temp_name(item.name, item.file_id)
    temp = outbox / temp_rel
    temp.parent.mkdir(parents=True, exist_ok=True)
    ledger.note_downloading(item.file_id, temp_rel, item)
    try:
        with open(temp, "wb") as fh:
            got = client.download(item.file_id, fh, size=item.bytes)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        ledger.forget_in_flight(item.file_id)
        raise
    dest_rel, conflict = choose_destination(ledger, outbox, item)
    ledger.note_placing(item.file_id, dest_rel, got.sha256, conflict)
    dest = outbox / dest_rel
    os.replace(temp, dest)
    _fsync_dir(dest.parent)
    if conflict:
        log.warning("pull.conflict", file_id=item.file_id, name=item.name, written=dest_rel,
                    reason=conflict)  # fmt: skip
    pulled = _record(ledger, item, dest_rel, dest, got.sha256, conflict)
    log.info("pull.done", file_id=item.file_id, name=dest_rel, bytes=got.bytes)
    return pulled


def remove_stale(ledger: PullLedger, outbox: Path, name: str, newer: Batch) -> str | None:
    """Remove ``name`` when it holds, unchanged, a result of a job older than ``newer``
    (the job that replaced it, and has no file of that kind): a newer run's results must
    not sit beside an older run's. Returns the file id removed, if one was."""
    holder = ledger.holder(name)
    if holder is None or holder.conflict is not None or holder.batch_id in (None, newer.id):
        return None
    if holder.batch_created_at > newer.created_at:
        return None
    path = outbox / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        ledger.record_removed(holder.file_id)
        return None
    if not _regular(st.st_mode) or not _unchanged(path, st, holder):
        return None
    path.unlink()
    _fsync_dir(path.parent)
    ledger.record_removed(holder.file_id)
    log.info("pull.stale_removed", name=name, file_id=holder.file_id, replaced_by=newer.id)
    return holder.file_id


def choose_destination(ledger: PullLedger, outbox: Path, item: PullItem) -> tuple[str, str | None]:
    """``item.name`` when it is free or holds what syncd pulled there unchanged; else a
    conflict copy's name, with why."""
    dest = outbox / item.name
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return item.name, None
    holder = ledger.holder(item.name)
    reason: str
    if holder is None:
        reason = "a file syncd did not pull is in the way"
    elif not _regular(st.st_mode):
        reason = "something other than a file syncd pulled is in the way"
    elif _unchanged(dest, st, holder):
        return item.name, None
    else:
        reason = "the file was changed in the outbox since syncd pulled it"
    taken = 0
    while True:
        name = conflict_name(item.name, item.file_id, taken)
        if not os.path.lexists(outbox / name):
            return name, f"{reason} ({item.name})"
        taken += 1


def _record(
    ledger: PullLedger, item: PullItem, name: str, dest: Path, sha256: str, conflict: str | None
) -> Pulled:
    st = os.stat(dest)
    pulled = Pulled(
        file_id=item.file_id,
        name=name,
        bytes=st.st_size,
        sha256=sha256,
        mtime_ns=st.st_mtime_ns,
        inode=st.st_ino,
        pulled_at=time.time(),
        batch_id=item.batch_id,
        batch_created_at=item.batch_created_at,
        conflict=conflict,
        ours=item.ours,
    )
    ledger.record_pulled(pulled)
    return pulled


def _unchanged(path: Path, st: os.stat_result, holder: Pulled) -> bool:
    """Whether ``path`` still holds what was pulled there (its stat, else its hash)."""
    if (st.st_size, st.st_mtime_ns, st.st_ino) == (holder.bytes, holder.mtime_ns, holder.inode):
        return True
    return st.st_size == holder.bytes and _sha256(path) == holder.sha256


def _regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
