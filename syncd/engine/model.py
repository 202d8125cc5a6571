"""The values the engine passes between scan, state, plan and execute."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Literal

from syncd.api.adoption import UploadWindow

# What a path's record says about it; ``synced`` is the only one that publishes.
Status = Literal["synced", "invalid", "skipped", "quota", "error", "changing", "pending"]


@dataclass(frozen=True, slots=True)
class LocalFile:
    """One candidate file as the scan found it (paths are root-relative, posix)."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    purpose: str | None = None
    # None when the scan did not hash it: no other file could share its content (see
    # scan.py), so its hash is taken from the bytes as they are uploaded.
    sha256: str | None = None
    # Why the file cannot be synced, and which status that gives it.
    problem: str | None = None
    problem_status: Status | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def syncable(self) -> bool:
        return self.problem is None and self.purpose is not None


@dataclass
class ScanResult:
    # Path -> candidate: a scan's own are ``candidates.Candidates``.
    files: MutableMapping[str, LocalFile] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    root_ok: bool = True
    root_empty: bool = False
    marker_ok: bool = True
    hashed: int = 0
    # Files the rules leave out, counted by the rule's label (never stored one by one),
    # with the first few paths of each as examples.
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    # Folders read, folders the rules let the scan pass by, and entries looked at.
    folders: int = 0
    pruned: int = 0
    entries: int = 0


# Not frozen, unlike the other values here: a state's records are made anew from its
# table at each read (see records.py), 100,000 of them per pass over a big tree, and a
# frozen dataclass is made six times slower (2.3 us against 0.4). No one keeps a Record
# that the state reads: changing one changes nothing but itself.
@dataclass(slots=True)
class Record:
    """What the state remembers of one path."""

    path: str
    status: Status
    file_id: str | None = None
    purpose: str | None = None
    remote_name: str | None = None
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    sha256: str | None = None
    uploaded_at: float | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LostCopy:
    """An attempt whose response was lost, made before an upload that succeeded.

    Each of ``most`` attempts may have stored a copy that no listing showed in time:
    later full runs look for them in ``window`` and delete them as ours, no more than
    ``most`` in all (``found`` so far), until ``LOST_COPY_KEEP_S`` after they were noted.
    """

    key: int
    path: str
    filename: str
    size: int
    window: UploadWindow
    noted_at: float
    most: int = 1
    found: int = 0


@dataclass(frozen=True, slots=True)
class Intent:
    """Written before an upload starts, cleared when its outcome is recorded.

    ``window`` is set just before the body's last byte leaves: until then the
    provider cannot have stored anything, so an intent without one is simply
    dropped. It is in the provider's clock, measured when the upload was sent.
    """

    path: str
    filename: str
    size: int
    # "" when the file was not hashed before it was sent: then the stat it had
    # (mtime_ns, inode; None for intents of older states) says whether it still holds
    # what was sent, as the scan trusts an unchanged stat.
    sha256: str
    started_at: float
    window: UploadWindow | None = None
    mtime_ns: int | None = None
    inode: int | None = None

    def holds(self, local: LocalFile) -> bool:
        """Whether ``local`` still holds what this intent sent: by content when both
        hashes are known, else by an unchanged stat."""
        if self.sha256 and local.sha256:
            return self.sha256 == local.sha256
        if self.mtime_ns is None:
            return False
        return (self.size, self.mtime_ns, self.inode) == (local.size, local.mtime_ns, local.inode)


# ------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class Share:
    """Point a path at a remote file that already holds its content (dedupe): no upload.

    ``file_id`` is None for a path that shares the upload it rides along with."""

    local: LocalFile
    file_id: str | None
    replaces: str | None = None

    @property
    def path(self) -> str:
        return self.local.path


@dataclass(frozen=True, slots=True)
class Upload:
    local: LocalFile
    # refresh: the remote copy is about to expire (OpenAI expires batch files).
    kind: Literal["new", "replace", "reupload", "refresh"]
    replaces: str | None = None
    # Paths of identical content that take this upload's id once it is recorded.
    sharers: tuple[Share, ...] = ()

    @property
    def path(self) -> str:
        return self.local.path


@dataclass(frozen=True, slots=True)
class Adopt:
    """A remote file our earlier upload created (lost response, crash): take it as ours."""

    local: LocalFile
    file_id: str
    created_at: int

    @property
    def path(self) -> str:
        return self.local.path


@dataclass(frozen=True, slots=True)
class Delete:
    file_id: str
    # gone: deleted locally; stale: no longer a valid file; replaced: an older version;
    # orphan: our own upload found through an intent, not wanted any more;
    # garbage: an id of ours queued for deletion by an earlier run.
    # orphan: an intent's upload found but no longer wanted; stray: an id this project
    # claimed that no record, intent or queue knows (a crash between claim and record).
    reason: Literal["gone", "stale", "replaced", "orphan", "stray", "garbage"]
    path: str | None = None


# Deletes that deletion safety weighs: files gone locally, files no longer valid, and
# ids this project's claims say it uploaded that its state does not know.
GUARDED = ("gone", "stale", "stray")


@dataclass(frozen=True, slots=True)
class Held:
    """A delete a guard refused, kept in the state until a person confirms it or the
    file comes back: no later run of any kind, in any process, carries it out unasked."""

    file_id: str
    path: str | None
    # The delete's own reason (one of GUARDED) and the guard's refusal, as it said it.
    reason: str
    guard: str
    since: float


@dataclass(frozen=True, slots=True)
class Note:
    """Record a status without any remote call (invalid, quota, refreshed stat, ...)."""

    path: str
    status: Status
    reason: str | None = None
    local: LocalFile | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A path (or, for a delete of no path, an id) a run could not bring where it
    should be: its status and why. Carried as such to the report, metrics and status."""

    path: str
    status: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.status}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Forget:
    """Drop the record of a path that is gone locally and owns nothing remote."""

    path: str


@dataclass
class Plan:
    uploads: list[Upload] = field(default_factory=list)
    adopts: list[Adopt] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    forgets: list[Forget] = field(default_factory=list)
    shares: list[Share] = field(default_factory=list)
    # Paths that stop using their remote id while other paths keep it (no delete).
    detaches: list[str] = field(default_factory=list)
    clear_intents: list[str] = field(default_factory=list)
    # Lost copies (their keys) all found, or looked for long enough: no longer looked for.
    clear_lost: list[int] = field(default_factory=list)
    # Lost copies (their keys) -> how many of their copies this plan deletes.
    found_lost: dict[int, int] = field(default_factory=dict)
    # Intents whose upload no listing showed now: what they may have stored is looked
    # for by later runs as a lost copy (a listing may have left it out).
    note_lost: list[LostCopy] = field(default_factory=list)
    # Run deletes before uploads: only when the account is short of space.
    deletes_first: bool = False
    # Why deletes (or the whole run) were refused; None when nothing was.
    refused: str | None = None
    # The deletes the refusal held back (shown by --dry-run and the report).
    refused_deletes: list[Delete] = field(default_factory=list)
    # This run's own guard refusal (without what earlier refusals hold): the reason its
    # refused deletes are held with.
    guard_refusal: str | None = None
    # Held deletes that no longer apply (the file came back, or a person confirmed them
    # and they are made in this run): their file ids.
    unhold: list[str] = field(default_factory=list)
    halted: bool = False

    @property
    def mutating(self) -> int:
        return len(self.uploads) + len(self.deletes)


@dataclass
class Outcome:
    """What carrying out a plan did: counts, and the paths it could not bring where
    they should be."""

    uploaded: int = 0
    adopted: int = 0
    deleted: int = 0
    failures: dict[str, Failure] = field(default_factory=dict)
    changed_during_upload: list[str] = field(default_factory=list)
