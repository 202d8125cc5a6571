"""Walk the root, apply the rules, validate and hash what changed.

The cost of a scan follows what syncs, not what the folder holds: the rules
decide by name first (:meth:`Rules.verdict`), so a file no rule selects costs no
``stat``, no hash and no record, only a count under the rule that left it out
(with a few example paths, for ``syncd status``), and a folder no candidate can
be under is not read at all (:meth:`Rules.can_hold`). Folders are read one at a
time, as a stream: memory holds the candidates, not the entries walked.

Hashing is the expensive part, so a file whose size, mtime and inode match its
record keeps the record's hash (and its earlier verdict). A new or changed file
is hashed only when its hash can matter to the plan: when another candidate, or
a record holding a remote file, has its size and purpose (identical content
could be shared, or a touched file found unchanged). Any other is left with no
hash: the upload computes it from the bytes as they are sent, so a large file is
read once. A file that changes while it is read is reported ``changing`` and
retried later, never uploaded.

Every read of a file's bytes (its hash, a batch file's lines, its upload) is from one
descriptor opened by :func:`syncd.engine.localopen.open_in_root`: inside the root,
never blocking, a regular file, and the very file (inode, size, mtime) the scan saw.
A link is followed only to a file inside the root whose own path the rules take.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import os
import posixpath
import stat
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from syncd.config import DEFAULT_EXCLUDE, PurposeRule
from syncd.engine.accepts import check_file, check_file_content, reads_content
from syncd.engine.candidates import Candidates
from syncd.engine.localopen import Opened, Refused, cannot_read, open_in_root
from syncd.engine.model import LocalFile, Record, ScanResult, Status
from syncd.engine.records import RecordTable
from syncd.engine.rules import EXCLUDED, NOT_INCLUDED, Rules

_CHUNK = 1024 * 1024
CHANGED_SINCE_SCAN = "changed since the scan; will retry"
CHANGED_WHILE_READ = "changed while being read; will retry"
# Example paths kept per skip label, and labels kept apart (a tree of random
# extensions must not grow the summary without bound).
EXAMPLES = 5
MAX_LABELS = 50
OTHER_LABEL = "other files no rule selects"
PRUNED = "folder not entered: no rule can select a file below it"
# What could not be read, shown by `syncd status` (the count is whole).
ERROR_EXAMPLES = 20


def walk_skipped(root: Path, rules: Rules) -> Iterator[tuple[str, str]]:
    """Every file the rules leave out, and every folder the scan does not enter, with
    its label: the long form of a scan's counts, walked again on demand (the scan
    itself keeps only counts and a few examples). Folders end in ``/``."""
    result = ScanResult()
    for rel, _entry, verdict in _walk(root, rules, result, every=True):
        if isinstance(verdict, str):
            yield record_key(rel), verdict
    for error in result.errors:
        yield error, "not read"


def summary(scan: ScanResult, seconds: float) -> dict[str, Any]:
    """What a full scan saw, for ``syncd status``: sizes, and the skipped files by rule
    (most first), each with a few examples."""
    return {
        "at": time.time(),
        "seconds": round(seconds, 3),
        "folders": scan.folders,
        "pruned_folders": scan.pruned,
        "entries": scan.entries,
        "candidates": len(scan.files),
        "hashed": scan.hashed,
        "errors": len(scan.errors),
        # What could not be read and why (a folder's files are not listed one by one).
        "error_examples": scan.errors[:ERROR_EXAMPLES],
        "skipped": [
            {
                "rule": label,
                "files": count,
                "examples": scan.skipped_examples.get(label, []),
                # Left out by include/exclude (hidden, temporary...) rather than by purpose.
                "filtered": _filtered(label),
            }
            for label, count in sorted(scan.skipped.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }


def unselected_examples(scan: ScanResult) -> dict[str, str]:
    """The example paths of files no purpose rule takes, with their label (what a run
    reports as skipped; hidden and temporary files never were)."""
    return {
        path: label
        for label, paths in scan.skipped_examples.items()
        if not _filtered(label)
        for path in paths
    }


def scan_root(
    root: Path,
    rules: Rules,
    records: RecordTable,
    *,
    marker: str | None = None,
) -> ScanResult:
    """A full scan of ``root``."""
    result = _root_check(root, marker)
    if not result.root_ok:
        return result
    result.files = Candidates(records)
    for rel, entry, rule in _walk(root, rules, result):
        assert not isinstance(rule, str)  # only candidates without ``every``
        _stat_and_add(result, root, rules, rel, entry.path, rule, records.get(rel))
    _hash_where_it_matters(result, root, records)
    # Folders without a single file look the same as a tree whose disk went away
    # underneath its mount points: treat it as empty, whatever max_delete allows.
    # Hidden and temporary files do not count (a bare mount point can hold some);
    # any other file the rules leave out does: the disk is there, and the rules
    # merely stopped selecting what was synced (max_delete weighs those deletes).
    held = any(_shows_the_disk(label) for label in result.skipped)
    result.root_empty = result.root_empty or not (result.files or held or result.errors)
    return result


def root_relative(path: str) -> str:
    """``path`` in its plain form (``./a``, ``a/./b`` and ``a/../b`` are fine), or
    ValueError naming it when it does not stay inside the root: the engine joins it
    to the root, and an absolute or escaping path would sync a file outside."""
    if "\0" in path:
        raise ValueError(f"{path!r} is not a path")
    if path.startswith("/"):
        raise ValueError(f"{path!r} is absolute: give a path relative to the root")
    plain = posixpath.normpath(path)
    if plain == ".." or plain.startswith("../"):
        raise ValueError(f"{path!r} is outside the root")
    if plain == ".":
        raise ValueError(f"{path!r} is the root itself: leave out paths to sync it all")
    return plain


def same_file_elsewhere(
    root: Path, paths: Iterable[str], records: RecordTable
) -> set[str]:
    """Recorded paths that are the same file as one of ``paths`` (a hard link, or a
    link to it inside the root: the scan records a link under its target's inode).

    A change is reported for the path it was made through only; the others would keep
    the old content's id until the next full scan. Matched by the inode each path has
    now and the one its record has, so a file its editor replaced (a new inode) still
    takes along the links recorded with the old one.
    """
    inodes: set[int] = set()
    for rel in paths:
        rec = records.get(rel)
        if rec is not None and rec.inode:
            inodes.add(rec.inode)
        try:
            inodes.add(os.stat(root / rel).st_ino)
        except OSError:
            continue
    if not inodes:
        return set()
    return records.paths_with_inodes(inodes) - set(paths)


def scan_paths(
    root: Path,
    rules: Rules,
    records: RecordTable,
    paths: Iterable[str],
    *,
    marker: str | None = None,
) -> ScanResult:
    """Look at just these root-relative paths (a folder path expands to its files)."""
    result = _root_check(root, marker)
    if not result.root_ok:
        return result
    result.files = Candidates(records)
    real_root = os.path.realpath(root)
    for rel in sorted(set(paths)):
        path = root / rel
        parent = posixpath.dirname(rel)
        if parent and os.path.realpath(root / parent) != os.path.join(real_root, parent):
            # Reached through a link to a folder (or ".."): the tree as the scan walks
            # it has no such path, and it may lead outside the root.
            continue
        try:
            st = path.lstat()
        except OSError as exc:
            if not _gone(exc):
                result.errors.append(f"{rel}: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(st.st_mode):
            if not rules.can_hold(rel):
                result.pruned += 1
                continue
            for sub_rel, entry, rule in _walk(path, rules, result, prefix=rel + "/"):
                assert not isinstance(rule, str)
                _stat_and_add(result, root, rules, sub_rel, entry.path, rule, records.get(sub_rel))
            continue
        verdict = rules.verdict(rel)
        if isinstance(verdict, str):
            count_skipped(result, verdict, rel)
        else:
            _add(result, root, rules, rel, st, verdict, records.get(rel))
    _hash_where_it_matters(result, root, records)
    return result


def _root_check(root: Path, marker: str | None) -> ScanResult:
    result = ScanResult()
    try:
        with os.scandir(root) as it:
            result.root_empty = next(it, None) is None
    except OSError as exc:
        result.root_ok = False
        result.errors.append(f"root {root} is not readable: {exc.strerror or exc}")
        return result
    if marker and not (root / marker).exists():
        result.marker_ok = False
    return result


def _walk(
    top: Path, rules: Rules, result: ScanResult, prefix: str = "", *, every: bool = False
) -> Iterator[tuple[str, os.DirEntry[str], PurposeRule | str]]:
    """The candidates under ``top``, decided by name: nothing here touches a file.

    Whether an entry is a folder comes from the directory listing itself (d_type),
    so skipped files are not even stat'ed. One folder is open at a time. Skipped files
    are counted; with ``every`` they, and the folders not entered, are yielded too,
    with their label instead of a rule.
    """
    stack = [(os.fspath(top), prefix)]
    while stack:
        folder, rel_prefix = stack.pop()
        try:
            listing = os.scandir(folder)
        except OSError as exc:
            # A folder below the top gone since it was listed is as if never there; the
            # top itself (the root) going away stays an error, never an empty tree.
            if not (rel_prefix and _gone(exc)):
                result.errors.append(f"{rel_prefix or '.'}: {exc.strerror or exc}")
            continue
        result.folders += 1
        skipped = result.skipped
        try:
            with listing:
                for entry in listing:
                    result.entries += 1
                    rel = rel_prefix + entry.name
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError as exc:
                        if not _gone(exc):
                            result.errors.append(f"{rel}: {exc.strerror or exc}")
                        continue
                    if is_dir:
                        if rules.can_hold(rel):
                            stack.append((entry.path, rel + "/"))
                        else:
                            result.pruned += 1
                            if every:
                                yield rel + "/", entry, PRUNED
                        continue
                    verdict = rules.verdict(rel, walked=True)
                    if every or not isinstance(verdict, str):
                        yield rel, entry, verdict
                    elif skipped.get(verdict, 0) >= EXAMPLES:
                        skipped[verdict] += 1  # the common case, kept short
                    else:
                        count_skipped(result, verdict, rel)
        except OSError as exc:  # the listing failed part way: like an unreadable folder
            result.errors.append(f"{rel_prefix or '.'}: {exc.strerror or exc}")


def count_skipped(result: ScanResult, label: str, rel: str) -> None:
    """Count a file the rules leave out under its rule, keeping the first few paths."""
    if label not in result.skipped and len(result.skipped) >= MAX_LABELS:
        label = OTHER_LABEL
    result.skipped[label] = result.skipped.get(label, 0) + 1
    examples = result.skipped_examples.setdefault(label, [])
    if len(examples) < EXAMPLES:
        examples.append(record_key(rel))


def _gone(exc: OSError) -> bool:
    """No file at the path any more: removed (ENOENT), or a folder on its way replaced
    by a file (ENOTDIR). The same as a path the scan never found, not a scan error."""
    return exc.errno in (errno.ENOENT, errno.ENOTDIR)


def _shows_the_disk(label: str) -> bool:
    """Whether a file left out under ``label`` shows the root is the real folder: any
    file but one the default excludes leave out (hidden and temporary names)."""
    return not label.startswith(EXCLUDED) or label[len(EXCLUDED) + 1 :] not in DEFAULT_EXCLUDE


def _filtered(label: str) -> bool:
    """Left out by include/exclude (hidden, temporary, outside the include globs)."""
    return label == NOT_INCLUDED or label.startswith(EXCLUDED)


def record_key(rel: str) -> str:
    """The path a scan records ``rel`` under, ``rel`` as the filesystem decodes it
    (the watcher's spelling): itself, or for a name that is not UTF-8 a visible
    spelling with its bytes escaped (``bad\\xfe.txt``). A run limited to some paths
    must look for their records, and their notes, under these keys."""
    return rel if _is_text(rel) else _visible_name(rel)


def _visible_name(rel: str) -> str:
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _stat_and_add(
    result: ScanResult,
    root: Path,
    rules: Rules,
    rel: str,
    path: str,
    rule: PurposeRule,
    record: Record | None,
) -> None:
    try:
        st = os.lstat(path)
    except OSError as exc:
        if not _gone(exc):  # gone since the folder was listed: as if never there
            result.errors.append(f"{rel}: {exc.strerror or exc}")
        return
    _add(result, root, rules, rel, st, rule, record)


def _add(
    result: ScanResult,
    root: Path,
    rules: Rules,
    rel: str,
    st: os.stat_result,
    rule: PurposeRule,
    record: Record | None,
) -> None:
    """One candidate: its record, validated and hashed when its stat changed."""

    def problem(reason: str, status: str = "skipped", purpose: str | None = None) -> None:
        result.files[rel] = LocalFile(
            rel,
            st.st_size,
            st.st_mtime_ns,
            st.st_ino,
            purpose=purpose,
            problem=reason,
            problem_status=status,  # type: ignore[arg-type]
        )

    if not _is_text(rel):
        _add_unreadable_name(result, rel, st)
        return
    if stat.S_ISLNK(st.st_mode):
        # Resolved inside the root only, to a file the rules would take on its own
        # path; the scan keeps the target's stat (and inode: what is read later must
        # be this very file).
        found = _through_link(root, rules, rel)
        if not isinstance(found, os.stat_result):
            if found is not None:
                problem(*found)
            return
        st = found
    if not stat.S_ISREG(st.st_mode):
        problem("not a regular file")
        return
    unchanged = record is not None and _as_recorded(record, st, rule)
    if unchanged and record is not None and record.status in ("invalid", "skipped"):
        problem(record.reason or "invalid", record.status, rule.purpose)
        return
    known = bool(unchanged and record and record.sha256)
    verdict = _validity(root, rel, rule, st, known)
    if verdict is not None:
        if verdict is not _GONE:
            reason, status, judged = verdict
            problem(reason, status, rule.purpose if judged else None)
        return
    # Without a hash for now: whether it needs one is known once every candidate's size
    # is (see _hash_where_it_matters).
    if unchanged and record is not None and record.sha256 is not None:
        # A mark, not a copy: a tree of 100,000 unchanged files is its records.
        cast(Candidates, result.files).as_recorded(record)
        return
    result.files[rel] = LocalFile(rel, st.st_size, st.st_mtime_ns, st.st_ino, purpose=rule.purpose)


def _add_unreadable_name(result: ScanResult, rel: str, st: os.stat_result) -> None:
    """The provider takes names as UTF-8 text; a name that is not cannot be sent
    faithfully. It is recorded under a visible spelling, with what to do."""
    shown = _visible_name(rel)
    result.files[shown] = LocalFile(
        shown, st.st_size, st.st_mtime_ns, st.st_ino,
        problem="file name is not valid UTF-8: rename it to sync it",
        problem_status="invalid",
    )  # fmt: skip


def _as_recorded(record: Record, st: os.stat_result, rule: PurposeRule) -> bool:
    """The file is as the state recorded it (same stat, same purpose): not read again."""
    return (
        record.size == st.st_size
        and record.mtime_ns == st.st_mtime_ns
        and record.inode == st.st_ino
        and record.purpose == rule.purpose
    )


# A file gone since it was listed: as if never there (nothing recorded).
_GONE = ("", "", False)


def _through_link(root: Path, rules: Rules, rel: str) -> os.stat_result | tuple[str, str] | None:
    """The stat of a symlink's target, or (reason, status) of why it is not synced, or
    None when nothing is to be recorded (gone)."""
    try:
        with open_in_root(root, rel, target_ok=link_check(rules)) as opened:
            return opened.stat
    except Refused as exc:
        return exc.reason, exc.status
    except OSError as exc:
        return None if _gone(exc) else (cannot_read(exc), "error")


def _validity(root: Path, rel: str, rule: PurposeRule, st: os.stat_result, known: bool
              ) -> tuple[str, str, bool] | None:  # fmt: skip
    """Why the file is not synced (reason, status, whether the provider's rules judged
    it: recorded with its purpose then), None when it would be taken, ``_GONE`` when it
    went meanwhile. Its content is read only where the
    purpose's rules need it and the content is not ``known`` already."""
    reason = check_file(rel, rule, st.st_size)
    if reason is None and reads_content(rule) and not known:
        try:
            with _open_as_seen(root, rel, (st.st_size, st.st_mtime_ns, st.st_ino)) as opened:
                reason = check_file_content(opened.file, rule)
        except Refused as exc:
            return exc.reason, exc.status, False
        except OSError as exc:
            return _GONE if _gone(exc) else (cannot_read(exc), "error", False)
    return None if reason is None else (reason, "invalid", True)


def shareable(files: Iterable[LocalFile], recorded: Collection[tuple[int, str]]
              ) -> set[tuple[int, str]]:  # fmt: skip
    """The (size, purpose) pairs whose content may be shared or found unchanged: held by
    two candidates, or by a candidate and a record with a remote file. Content of any
    other size cannot match anything, so hashing it before the upload buys nothing.
    ``recorded``: the (size, purpose) of each record with a remote file."""
    held = Counter((f.size, f.purpose) for f in files if f.syncable and f.purpose)
    return {key for key, n in held.items() if n > 1 or key in recorded}


def _hash_where_it_matters(result: ScanResult, root: Path, records: RecordTable) -> None:
    """Hash the unhashed candidates whose hash the plan can use (see :func:`shareable`)."""
    found = cast(Candidates, result.files).found()  # as recorded: hashed
    unhashed = [f for f in found if f.syncable and f.sha256 is None]
    if not unhashed:
        return
    wanted = shareable(result.files.values(), records.held_sizes())
    for local in unhashed:
        if (local.size, local.purpose) not in wanted:
            continue
        try:
            with open_scanned(root, local) as opened:
                sha, changed = hash_opened(opened, local)
        except Refused as exc:
            result.files[local.path] = _unsyncable(local, exc.reason, exc.status)
            continue
        except OSError as exc:
            if _gone(exc):
                del result.files[local.path]
            else:
                result.files[local.path] = _unsyncable(local, cannot_read(exc), "error")
            continue
        result.hashed += 1
        result.files[local.path] = (
            _unsyncable(local, CHANGED_WHILE_READ, "changing")
            if changed
            else dataclasses.replace(local, sha256=sha)
        )


def _unsyncable(local: LocalFile, reason: str, status: Status) -> LocalFile:
    return dataclasses.replace(local, purpose=None, problem=reason, problem_status=status)


def _is_text(rel: str) -> bool:
    """Whether the name decoded from the filesystem is real text (no smuggled bytes)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def link_check(rules: Rules) -> Callable[[str], str | None]:
    """What a link's target must pass: the rules, on the target's own path."""
    return functools.partial(link_refusal, rules)


def link_refusal(rules: Rules, target: str) -> str | None:
    """Why a link may not stand for ``target`` (root-relative), or None: a file the
    rules leave out on its own path (hidden, temporary, excluded, outside the include
    globs), or one in a folder the scan does not enter, is not synced through a link."""
    shown = record_key(target)
    folder = posixpath.dirname(target)
    parts = folder.split("/") if folder else []
    for depth in range(1, len(parts) + 1):
        if not rules.can_hold("/".join(parts[:depth])):
            return f"symlink to {shown}, in a folder the rules leave out"
    verdict = rules.verdict(target)
    if isinstance(verdict, str) and _filtered(verdict):
        return f"symlink to {shown}, a file the rules leave out ({verdict})"
    return None


def _open_as_seen(root: Path, rel: str, seen: tuple[int, int, int]) -> Opened:
    """``rel`` opened (see :func:`open_in_root`) if it is still the file seen with this
    (size, mtime_ns, inode); Refused with status ``changing`` if it is another by now."""
    opened = open_in_root(root, rel)
    st = opened.stat
    if (st.st_size, st.st_mtime_ns, st.st_ino) != seen:
        opened.close()
        raise Refused(CHANGED_SINCE_SCAN, "changing")
    return opened


def open_scanned(root: Path, local: LocalFile) -> Opened:
    """The file the scan saw as ``local``, open: the one descriptor its hash and its
    upload read. Refused (status ``changing``) if the path holds another file, or this
    one with another size or mtime, by now; OSError ENOENT/ENOTDIR if it is gone."""
    return _open_as_seen(root, local.path, (local.size, local.mtime_ns, local.inode))


def still_as_opened(opened: Opened) -> bool:
    """Whether the open file still has the size and mtime it was opened with."""
    try:
        st = os.fstat(opened.file.fileno())
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (opened.stat.st_size, opened.stat.st_mtime_ns)


def hash_opened(opened: Opened, local: LocalFile) -> tuple[str, bool]:
    """sha256 of the open file from its first byte, and whether it changed while being
    read (or since it was seen as ``local``). Read errors are Refused, status ``error``."""
    digest = hashlib.sha256()
    fh = opened.file
    try:
        fh.seek(0)
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    except OSError as exc:
        raise Refused(cannot_read(exc), "error") from None
    seen = (opened.stat.st_size, opened.stat.st_mtime_ns)
    changed = seen != (local.size, local.mtime_ns) or not still_as_opened(opened)
    return digest.hexdigest(), changed


def hash_scanned(root: Path, local: LocalFile) -> str:
    """The sha256 of a file still as the scan saw it, for the rare paths (an adopted
    lost upload) where no hash came with the upload. Refused otherwise, with the status
    and reason its record should show: ``changing`` when it moved on or went."""
    try:
        with open_scanned(root, local) as opened:
            sha, changed = hash_opened(opened, local)
    except OSError as exc:
        if not _gone(exc):
            raise Refused(cannot_read(exc), "error") from None
        raise Refused(CHANGED_SINCE_SCAN, "changing") from None
    if changed:
        raise Refused(CHANGED_WHILE_READ, "changing")
    return sha


def same_as_scanned(root: Path, local: LocalFile) -> bool:
    """Does the path still lead, inside the root, to the file the scan saw, with its
    size and mtime? (Before and after an upload: has the file moved on?)"""
    try:
        with open_scanned(root, local):
            return True
    except (Refused, OSError):
        return False
