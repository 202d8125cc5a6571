"""Decide what to do: a pure function of (local scan, state, remote listing).

Nothing here does I/O. Every decision a run makes — upload, replace, adopt,
delete, wait for quota, refuse to delete — is made in this file, so it can be
property-tested and printed by ``--dry-run`` exactly as it would run.

Ownership: only ids recorded in our state (records, garbage, or adopted from
our own upload intents) are ours. Any other file of the account is counted for
quota and otherwise never touched.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Collection, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from syncd.api.adoption import find_own_upload, wire_name
from syncd.api.models import RemoteFile
from syncd.config import LimitsConfig, MaxDelete, SyncConfig
from syncd.engine.model import (
    GUARDED,
    Adopt,
    Delete,
    Forget,
    Held,
    Intent,
    LocalFile,
    LostCopy,
    Note,
    Plan,
    Record,
    ScanResult,
    Share,
    Upload,
)
from syncd.engine.records import RecordTable
from syncd.units import human_bytes, iso_utc

# How long full runs look for a copy a lost attempt may have stored (see LostCopy).
LOST_COPY_KEEP_S = 86_400.0
# Guarded deletes made within this long, by any run of any process, count together
# against max_delete: a slow `rm -r`, or a mass delete split over several runs, is the
# one large delete it is.
DELETE_WINDOW_S = 600.0

# What a person said of deletes an earlier refusal holds: nothing yet ("none": they stay
# refused), a cap for this run ("capped": weighed with the others under it), or yes
# ("confirmed": made, outside the cap). Either answer starts a new delete window.
Consent = Literal["none", "capped", "confirmed"]


@dataclass(frozen=True)
class Policy:
    """The configuration a plan obeys; defaults are the config's own."""

    delete_remote: bool = SyncConfig.delete_remote
    # Largest number of "gone" deletes one run may make, and how many of the budget
    # runs just before took (targeted runs share one budget: a slow rm -r is one delete).
    max_delete: int | None = None
    deleted_recently: int = 0
    consent: Consent = "none"
    max_files: int = LimitsConfig.max_files
    max_bytes: int = LimitsConfig.max_bytes
    headroom_files: int = LimitsConfig.headroom_files
    headroom_bytes: int = LimitsConfig.headroom_bytes
    # Identical content of one purpose shares one remote file.
    dedupe: bool = SyncConfig.dedupe
    # The provider's clock now (and how far it is ahead of ours), and how long before its
    # expiry a file is uploaded anew.
    now: float = 0.0
    clock_offset: float = 0.0
    refresh_before_expiry_s: float = SyncConfig.refresh_before_expiry_s
    # Only these paths are looked at (targeted sync); None means the whole tree.
    scope: frozenset[str] | None = None


@dataclass(frozen=True)
class StateView:
    records: RecordTable
    intents: Mapping[str, Intent]
    garbage: Collection[str]
    # Ids other projects on this key have claimed: never adopted. Read only by a full
    # run's plan (intents, strays, lost copies): a targeted run's view may leave both
    # out, and a project of 100,000 files does not read its claims for every edit.
    claimed_elsewhere: Collection[str] = frozenset()
    # Ids this project claimed (uploaded or adopted) and has not released.
    claimed_here: Collection[str] = frozenset()
    lost_copies: Collection[LostCopy] = ()
    # Deletes an earlier run's guard refused, by file id (see model.Held).
    held: Mapping[str, Held] = field(default_factory=dict)

    def owned_ids(self) -> set[str]:
        ids = self.records.file_ids()
        ids.update(self.garbage)
        return ids


def in_scope(path: str, scope: frozenset[str] | None) -> bool:
    """Whether a run limited to ``scope`` (paths or folders; None = all) covers ``path``."""
    return scope is None or path in scope or path.startswith(_below(scope))


def within(paths: Iterable[str], scope: frozenset[str] | None) -> Iterable[str]:
    """The ``paths`` a run limited to ``scope`` covers (``in_scope`` of each, in one
    pass without a call per path: a targeted run over 100,000 records asks often);
    all of them, as given, for a full run."""
    if scope is None:
        return paths
    below = _below(scope)
    return [p for p in paths if p in scope or p.startswith(below)]


def scoped(records: RecordTable, scope: frozenset[str] | None, statuses: Container[str]
           ) -> Iterator[Record]:  # fmt: skip
    """The records a run limited to ``scope`` covers whose status is one of ``statuses``:
    a full run reads the status column, not every record."""
    if scope is None:
        return records.with_status(statuses)
    return (rec for p in within(records, scope) if (rec := records[p]).status in statuses)


@functools.lru_cache(maxsize=8)
def _below(scope: frozenset[str]) -> tuple[str, ...]:
    """The prefixes of what lies below the scope's paths: one C-level startswith per
    path asked about, which a targeted run over 100,000 records asks 100,000 times."""
    return tuple(s + "/" for s in scope)


def tracked(records: RecordTable) -> int:
    """Remote files our records hold (paths sharing one count once)."""
    return len(records.file_ids())


def window_start(now: float, confirmed_at: float | None, consent: Consent) -> float:
    """Since when guarded deletes count against this run's cap: the delete window, cut
    at the last time a person answered for deletes (and at now when this run is one)."""
    if consent != "none":
        return now
    return max(now - DELETE_WINDOW_S, confirmed_at or 0.0)


def delete_budget(cap: MaxDelete, records: RecordTable, recently: int) -> int:
    """Guarded deletes this run may make: the cap, over the files tracked before the
    window began, less what the window already used."""
    return cap.limit(tracked(records) + recently) - recently


@dataclass(frozen=True, slots=True)
class _Release:
    """A path stops using its remote id; the id is deleted only if no path keeps it."""

    path: str
    file_id: str
    reason: Literal["gone", "stale", "replaced"]


def plan(
    scan: ScanResult,
    state: StateView,
    remote: Mapping[str, RemoteFile],
    policy: Policy,
) -> Plan:
    out = Plan()
    if not scan.root_ok:
        out.refused, out.halted = "root folder is missing or unreadable: nothing done", True
        return out
    if not scan.marker_ok:
        out.refused, out.halted = "marker file is missing from the root: nothing done", True
        return out

    owned = state.owned_ids()
    # Intents are resolved only against a fresh full listing; a targeted run leaves them
    # to the executor, which looks for the file itself before uploading again.
    adopted = _adopt_from_intents(scan, state, remote, owned, out) if policy.scope is None else {}

    scope = policy.scope
    paths = sorted({*within(scan.files, scope), *within(state.records, scope)})
    releases: list[_Release] = []
    for path in paths:
        rec = state.records.get(path)
        _decide(path, scan.files.get(path), rec, remote, adopted, policy, out, releases)
    if policy.scope is None:
        _adopt_strays(state, remote, policy, owned, out)
    if policy.dedupe:
        _share(state, remote, policy, out)
    _settle_releases(state, releases, out)

    if policy.scope is None:
        # An id already gone remotely is still "deleted": the executor takes 404 as done.
        out.deletes.extend(Delete(file_id, "garbage") for file_id in sorted(state.garbage))
        # A file we created that no path, intent or queue knows (a crash between claiming
        # and recording): ours, so cleaned up rather than left holding quota.
        known = owned | {d.file_id for d in out.deletes}
        strays = sorted(f for f in state.claimed_here if f in remote and f not in known)
        out.deletes.extend(Delete(file_id, "stray") for file_id in strays)
        _find_lost_copies(state, remote, policy, owned, out)

    _guard_deletes(scan, state, policy, out)
    _fit_quota(remote, policy, out)
    return out


def _adopt_from_intents(
    scan: ScanResult,
    state: StateView,
    remote: Mapping[str, RemoteFile],
    owned: set[str],
    out: Plan,
) -> dict[str, str]:
    """Uploads whose outcome was never recorded: find what they created.

    The rule is :func:`syncd.api.adoption.find_own_upload`: name as sent, size, and
    the provider-clock window recorded when the body left. An intent whose body
    never left in full has no window and created nothing. Oldest intents claim
    first; ids owned here or claimed by another project are never taken.
    """
    adopted: dict[str, str] = {}
    taken = owned | set(state.claimed_elsewhere)
    for intent in sorted(state.intents.values(), key=lambda i: (i.started_at, i.path)):
        out.clear_intents.append(intent.path)
        if intent.window is None:
            continue
        keep = find_own_upload(intent.filename, intent.size, intent.window, remote.values(), taken)
        if keep is None:
            w = intent.window
            out.note_lost.append(LostCopy(0, intent.path, intent.filename, intent.size, w, 0.0))
            continue
        taken.add(keep.id)
        owned.add(keep.id)
        local = scan.files.get(intent.path)
        if local is not None and local.syncable and intent.holds(local):
            # Unhashed by the scan, it takes the intent's hash when the intent had one;
            # else the executor hashes it before recording it.
            known = local if local.sha256 else replace(local, sha256=intent.sha256 or None)
            out.adopts.append(Adopt(known, keep.id, keep.created_at))
            adopted[intent.path] = keep.id
        else:  # the file moved on since: what we uploaded is ours but stale
            out.deletes.append(Delete(keep.id, "orphan", intent.path))
    return adopted


# A remote copy is taken for a file only if created no earlier than this before the
# file's last change (created_at is whole seconds, and clocks are measured, not exact).
_STRAY_SLACK_S = 2.0


def _adopt_strays(
    state: StateView,
    remote: Mapping[str, RemoteFile],
    policy: Policy,
    owned: set[str],
    out: Plan,
) -> None:
    """Files this project uploaded (its claims say so) that its state does not know —
    the state was lost or reset — are taken back for the new files they match instead
    of being uploaded again: same name as sent, same size, created after the file last
    changed, and the match unique on both sides. Anything less certain is uploaded
    anew, and the stray is left to the guarded stray deletes."""
    strays: dict[tuple[str, int], list[RemoteFile]] = defaultdict(list)
    for fid in state.claimed_here:
        f = remote.get(fid)
        if f is not None and fid not in owned:
            strays[(f.filename, f.bytes)].append(f)
    if not strays:
        return
    news: dict[tuple[str, int], list[Upload]] = defaultdict(list)
    for up in out.uploads:
        if up.kind == "new":
            news[(wire_name(up.local.name), up.local.size)].append(up)
    taken: set[str] = set()
    for key, ups in news.items():
        found = strays.get(key, [])
        if len(ups) != 1 or len(found) != 1:
            continue
        (up,), (f,) = ups, found
        changed_at = up.local.mtime_ns / 1e9 + policy.clock_offset
        if f.created_at + _STRAY_SLACK_S < changed_at:
            continue  # the file changed after this copy was sent: not its content
        out.adopts.append(Adopt(up.local, f.id, f.created_at))
        owned.add(f.id)
        taken.add(up.path)
    if taken:
        out.uploads = [u for u in out.uploads if u.path not in taken]


def _find_lost_copies(
    state: StateView,
    remote: Mapping[str, RemoteFile],
    policy: Policy,
    owned: set[str],
    out: Plan,
) -> None:
    """Copies that attempts with a lost response may have stored before the file was
    sent again: found by the intents' rule, they are ours and not wanted. They are
    looked for until ``LOST_COPY_KEEP_S`` after they were noted: a listing that lagged
    has long caught up by then."""
    taken = owned | set(state.claimed_elsewhere) | {d.file_id for d in out.deletes}
    for lost in sorted(state.lost_copies, key=lambda c: c.key):
        # Each lost attempt may have stored one, and a listing may show some of them now
        # and the others later: the earliest matches, up to the attempts' count.
        found = 0
        while lost.found + found < lost.most and (
            f := find_own_upload(lost.filename, lost.size, lost.window, remote.values(), taken)
        ):
            taken.add(f.id)
            out.deletes.append(Delete(f.id, "orphan", lost.path))
            found += 1
        if found:
            out.found_lost[lost.key] = found
        if lost.found + found >= lost.most or lost.noted_at < policy.now - LOST_COPY_KEEP_S:
            out.clear_lost.append(lost.key)


def _decide(
    path: str,
    local: LocalFile | None,
    rec: Record | None,
    remote: Mapping[str, RemoteFile],
    adopted: Mapping[str, str],
    policy: Policy,
    out: Plan,
    releases: list[_Release],
) -> None:
    has_remote = rec is not None and rec.file_id is not None and rec.file_id in remote
    if path in adopted:
        # The adopted id becomes current; a different id recorded before is replaced.
        if rec is not None and rec.file_id and rec.file_id != adopted[path] and has_remote:
            releases.append(_Release(path, rec.file_id, "replaced"))
        return

    if local is None:
        if rec is None:
            return
        if has_remote and policy.delete_remote:
            assert rec.file_id is not None
            releases.append(_Release(path, rec.file_id, "gone"))
        else:
            out.forgets.append(Forget(path))
        return

    if local.problem is not None:
        status = local.problem_status or "skipped"
        if status in ("changing", "error"):
            # Transient: leave any remote copy alone and look again next time.
            out.notes.append(Note(path, status, local.problem))
            return
        if has_remote:
            assert rec is not None and rec.file_id is not None
            releases.append(_Release(path, rec.file_id, "stale"))
        if rec is None or rec.status != status or rec.reason != local.problem or has_remote:
            out.notes.append(Note(path, status, local.problem, local))
        return

    if rec is not None and has_remote and _same(rec, local):
        assert rec.file_id is not None
        if _expiring(remote[rec.file_id], policy):
            out.uploads.append(Upload(local, "refresh", rec.file_id))
        elif (rec.mtime_ns, rec.inode, rec.status) != (local.mtime_ns, local.inode, "synced"):
            out.notes.append(Note(path, "synced", None, local))
        return
    if has_remote:
        assert rec is not None
        out.uploads.append(Upload(local, "replace", rec.file_id))
    elif rec is not None and rec.file_id is not None:
        out.uploads.append(Upload(local, "reupload"))
    else:
        out.uploads.append(Upload(local, "new"))


def _same(rec: Record, local: LocalFile) -> bool:
    # The name is not compared: the path is the same, and a remote file shared by
    # identical copies carries the first one's name. A file the scan did not hash is
    # new or changed, and no record had its size: never the same.
    return (
        local.sha256 is not None
        and rec.sha256 == local.sha256
        and rec.size == local.size
        and rec.purpose == local.purpose
    )


def _expiring(f: RemoteFile, policy: Policy) -> bool:
    return policy.now > 0 and f.expired(policy.now, policy.refresh_before_expiry_s)


def _share(state: StateView, remote: Mapping[str, RemoteFile], policy: Policy, out: Plan) -> None:
    """Uploads whose content a remote file of ours already holds become shares; uploads
    of identical content in this plan go once, the others ride along."""
    if not out.uploads:
        return  # nothing to share (and no pass over 100,000 records to find it out)
    holding: dict[tuple[str, str], str] = {}
    # A lost upload adopted in this run holds its content (recorded before shares). The id
    # its path held until now is being let go, so it is no home for more paths: sharing it
    # would leave a path mapped to an id the adoption just made garbage.
    for a in out.adopts:
        if a.local.sha256 and a.local.purpose:
            holding.setdefault((a.local.sha256, a.local.purpose), a.file_id)
    adopting = {a.path for a in out.adopts}
    # Only records of the content being uploaded can hold it: the others are not sorted.
    wanted = {(u.local.sha256, u.local.purpose) for u in out.uploads}
    homes = (r for r in state.records.values() if (r.sha256, r.purpose) in wanted)
    for rec in sorted(homes, key=lambda r: r.path):
        fid = rec.file_id
        if not (fid and fid in remote and rec.sha256 and rec.purpose) or rec.path in adopting:
            continue
        # A file about to expire is no home for more paths.
        if rec.status == "synced" and not _expiring(remote[fid], policy):
            holding.setdefault((rec.sha256, rec.purpose), fid)
    leads: dict[tuple[str, str], Upload] = {}
    riders: dict[tuple[str, str], list[Share]] = defaultdict(list)
    going: list[Upload] = []  # leads and uploads no other can share, in plan order
    for up in out.uploads:
        if not (up.local.sha256 and up.local.purpose):
            # Not hashed by the scan: no other file of its size could share it.
            going.append(up)
            continue
        key = (up.local.sha256, up.local.purpose)
        if key in holding:
            out.shares.append(Share(up.local, holding[key], up.replaces))
        elif key in leads:
            riders[key].append(Share(up.local, None, up.replaces))
        else:
            leads[key] = up
            going.append(up)
    out.uploads = [_with_riders(up, riders) for up in going]


def _with_riders(up: Upload, riders: Mapping[tuple[str, str], list[Share]]) -> Upload:
    key = (up.local.sha256 or "", up.local.purpose or "")
    return Upload(up.local, up.kind, up.replaces, tuple(riders[key])) if key in riders else up


def _settle_releases(state: StateView, releases: list[_Release], out: Plan) -> None:
    """Delete an id only when no path keeps it; a path leaving a shared id just lets go."""
    if not releases:
        return
    leaving = {r.path for r in releases}
    kept = {f for p, _, f in state.records.statuses() if f and p not in leaving} | {
        s.file_id for s in out.shares if s.file_id
    }
    deleted: set[str] = set()
    for rel in releases:
        if rel.file_id not in kept and rel.file_id not in deleted:
            deleted.add(rel.file_id)
            out.deletes.append(Delete(rel.file_id, rel.reason, rel.path))
        elif rel.reason == "gone":
            out.forgets.append(Forget(rel.path))
        elif rel.reason == "stale":
            out.detaches.append(rel.path)
        # "replaced" by adoption: the record takes the adopted id; nothing else to do.


def _held_text(held: Held) -> str:
    return f"since {iso_utc(held.since)}: {held.guard}"


def _guard_deletes(scan: ScanResult, state: StateView, policy: Policy, out: Plan) -> None:
    """Never read a vanished or broken source, or a reset state, as "the user deleted
    everything"; and never carry out unasked a delete an earlier run refused.

    Strays (ids our claims hold that the state does not know) are weighed too: one or
    two after a crash is normal, many mean the state was reset or a new project took
    over a retired one's state_dir, and those files are not this state's to delete.
    """
    gone = [d for d in out.deletes if d.reason in GUARDED]
    # A hold lapses when its delete is no longer wanted: the file came back, or was
    # deleted by a confirmed run (in this run's scope; strays only in full runs).
    wanted = {d.file_id for d in gone}
    out.unhold = sorted(
        fid
        for fid, h in state.held.items()
        if fid not in wanted and (policy.scope is None or in_scope(h.path or "", policy.scope))
    )
    # Forgetting a record that still has a remote copy (delete_remote off, or a copy of
    # shared content) gives its mapping up: a broken scan must not do that either.
    letting_go = {
        f.path for f in out.forgets if (r := state.records.get(f.path)) is not None and r.file_id
    }
    if not gone and not letting_go and not out.detaches:
        return
    held = [d for d in gone if d.file_id in state.held]
    # Held deletes stay refused until a person answers; confirmed ones are not weighed.
    sticky = held if policy.consent == "none" else []
    weighed = [d for d in gone if policy.consent == "capped" or d.file_id not in state.held]
    reason, refuse = _guard(scan, state, policy, gone, weighed, sticky, letting_go)
    refused_now = reason is not None
    out.guard_refusal = reason
    if sticky:
        first = min((state.held[d.file_id] for d in sticky), key=lambda h: h.since)
        text = (
            f"{len(sticky)} delete(s) held by an earlier refusal ({_held_text(first)}); "
            "`syncd reconcile --confirm-deletes` releases them"
            # No consent makes a delete while the scan misses something: say so.
            + (" once a scan reads every folder" if scan.errors else "")
        )
        reason = f"{reason}; {text}" if refused_now else text
    if reason is None:
        return
    refused = {d.file_id for d in refuse}
    out.refused = reason
    out.refused_deletes = [d for d in out.deletes if d.file_id in refused]
    out.deletes = [d for d in out.deletes if d.file_id not in refused]
    if refused_now:  # a guard refused this run, not only earlier refusals
        out.forgets = [f for f in out.forgets if f.path not in letting_go]
        out.detaches = []


def _guard(scan: ScanResult, state: StateView, policy: Policy, gone: list[Delete],
           weighed: list[Delete], sticky: list[Delete], letting_go: set[str]
           ) -> tuple[str | None, list[Delete]]:  # fmt: skip
    """Which guard refuses this run's deletes, and which deletes it refuses (the held
    ones, ``sticky``, stay refused either way): a scan with errors, an empty root while
    files are tracked, or more deletes than max_delete allows."""
    if scan.errors:
        return f"scan had {len(scan.errors)} error(s): deletes refused", gone
    if scan.root_empty and tracked(state.records) > 0 and (weighed or letting_go):
        empty = "root folder is empty while files are tracked: deletes refused"
        return empty, [*sticky, *weighed]
    if policy.max_delete is None or len(weighed) <= policy.max_delete:
        return None, sticky
    strays = sum(1 for d in weighed if d.reason == "stray")
    unknown = (
        f" ({strays} of them uploaded under this state_dir but unknown to its state: "
        "was the state reset, or the state_dir reused by another project?)"
        if strays
        else ""
    )
    used = (
        f"; {policy.deleted_recently} deleted by the runs just before count against it"
        if policy.deleted_recently
        else ""
    )
    reason = (
        f"plan would delete {len(weighed)} files{unknown}, over max_delete "
        f"({policy.max_delete}{used}): deletes refused"
    )
    return reason, [*sticky, *weighed]


def _fit_quota(remote: Mapping[str, RemoteFile], policy: Policy, out: Plan) -> None:
    """Keep only the uploads that fit; the rest wait with status ``quota``."""
    if not out.uploads:
        return
    free_files = policy.max_files - policy.headroom_files - len(remote)
    free_bytes = policy.max_bytes - policy.headroom_bytes - sum(f.bytes for f in remote.values())
    need_files = len(out.uploads)
    need_bytes = sum(u.local.size for u in out.uploads)
    if need_files > free_files or need_bytes > free_bytes:
        freed = [remote[d.file_id] for d in out.deletes if d.file_id in remote]
        if freed:
            out.deletes_first = True
            free_files += len(freed)
            free_bytes += sum(f.bytes for f in freed)
    fitting: list[Upload] = []
    for up in sorted(out.uploads, key=lambda u: (u.kind == "new", u.path)):
        if up.local.size <= free_bytes and free_files >= 1:
            fitting.append(up)
            free_files -= 1
            free_bytes -= up.local.size
        else:
            waiting_paths: list[Upload | Share] = [up, *up.sharers]
            for waiting in waiting_paths:
                out.notes.append(
                    Note(
                        waiting.path,
                        "quota",
                        f"waiting for account space: needs 1 file and "
                        f"{human_bytes(up.local.size)}, {max(free_files, 0)} files and "
                        f"{human_bytes(max(free_bytes, 0))} free (limits {policy.max_files} "
                        f"files, {human_bytes(policy.max_bytes)}, headroom "
                        f"{policy.headroom_files} files, {human_bytes(policy.headroom_bytes)})",
                        waiting.local,
                    )
                )
    out.uploads = fitting
