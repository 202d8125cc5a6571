"""Walk the root, apply the rules, validate and hash what changed.

Hashing is the expensive part, so a file whose size, mtime and inode match its
record keeps the record's hash (and its earlier verdict). A file that changes
while it is read is reported ``changing`` and retried later, never uploaded.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from syncd.engine.model import LocalFile, Record, ScanResult
from syncd.engine.rules import Rules
from syncd.engine.validate import check_batch_content, check_size

_CHUNK = 1024 * 1024


def scan_root(
    root: Path,
    rules: Rules,
    records: Mapping[str, Record],
    *,
    marker: str | None = None,
) -> ScanResult:
    """A full scan of ``root``."""
    result = _root_check(root, marker)
    if not result.root_ok:
        return result
    for rel, path, st in _walk(root, rules, result):
        _add(result, root, rel, path, st, rules, records.get(rel))
    # Folders without a single file look the same as a tree whose disk went away
    # underneath its mount points: treat it as empty, whatever max_delete allows.
    result.root_empty = result.root_empty or (not result.files and not result.errors)
    return result


def scan_paths(
    root: Path,
    rules: Rules,
    records: Mapping[str, Record],
    paths: Iterable[str],
    *,
    marker: str | None = None,
) -> ScanResult:
    """Look at just these root-relative paths (a folder path expands to its files)."""
    result = _root_check(root, marker)
    if not result.root_ok:
        return result
    for rel in sorted(set(paths)):
        path = root / rel
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            result.errors.append(f"{rel}: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(st.st_mode):
            for sub_rel, sub_path, sub_st in _walk(path, rules, result, prefix=rel + "/"):
                _add(result, root, sub_rel, sub_path, sub_st, rules, records.get(sub_rel))
        elif rules.is_candidate(rel):
            _add(result, root, rel, path, st, rules, records.get(rel))
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
    top: Path, rules: Rules, result: ScanResult, prefix: str = ""
) -> Iterable[tuple[str, Path, os.stat_result]]:
    stack = [(top, prefix)]
    while stack:
        folder, rel_prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            result.errors.append(f"{rel_prefix or '.'}: {exc.strerror or exc}")
            continue
        for entry in entries:
            rel = rel_prefix + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                result.errors.append(f"{rel}: {exc.strerror or exc}")
                continue
            if stat.S_ISDIR(st.st_mode):
                if not rules.excludes_dir(rel):
                    stack.append((Path(entry.path), rel + "/"))
            elif rules.is_candidate(rel):
                yield rel, Path(entry.path), st


def _add(
    result: ScanResult,
    root: Path,
    rel: str,
    path: Path,
    st: os.stat_result,
    rules: Rules,
    record: Record | None,
) -> None:
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
        # The provider takes names as UTF-8 text; a name that is not cannot be sent
        # faithfully. It is recorded under a visible spelling, with what to do.
        shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
        result.files[shown] = LocalFile(
            shown, st.st_size, st.st_mtime_ns, st.st_ino,
            problem="file name is not valid UTF-8: rename it to sync it",
            problem_status="invalid",
        )  # fmt: skip
        return

    if stat.S_ISLNK(st.st_mode):
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            problem("broken symlink")
            return
        if not target.is_relative_to(root.resolve()):
            problem("symlink points outside the root")
            return
        try:
            st = target.stat()
        except OSError as exc:
            problem(f"cannot read: {exc.strerror or exc}", "error")
            return
        if stat.S_ISDIR(st.st_mode):
            return  # the folder itself is scanned where it really lives
    if not stat.S_ISREG(st.st_mode):
        problem("not a regular file")
        return

    rule = rules.purpose(rel)
    if rule is None:
        ext = rel.rsplit(".", 1)[-1] if "." in rel.rsplit("/", 1)[-1] else "(none)"
        problem(f"unsupported extension .{ext}: no purpose rule matches")
        return
    if rule.purpose == "skip":
        problem("skipped by a purpose rule")
        return

    unchanged = (
        record is not None
        and record.size == st.st_size
        and record.mtime_ns == st.st_mtime_ns
        and record.inode == st.st_ino
        and record.purpose == rule.purpose
    )
    if unchanged and record is not None and record.status in ("invalid", "skipped"):
        problem(record.reason or "invalid", record.status, rule.purpose)
        return
    reason = check_size(rel, rule.purpose, st.st_size)
    if reason is None and rule.purpose == "batch" and not (unchanged and record and record.sha256):
        try:
            reason = check_batch_content(path)
        except OSError as exc:
            problem(f"cannot read: {exc.strerror or exc}", "error")
            return
    if reason is not None:
        problem(reason, "invalid", rule.purpose)
        return

    sha = record.sha256 if unchanged and record is not None else None
    if sha is None:
        try:
            sha, changed = hash_file(path, st)
        except OSError as exc:
            problem(f"cannot read: {exc.strerror or exc}", "error")
            return
        result.hashed += 1
        if changed:
            problem("changed while being read; will retry", "changing")
            return
    result.files[rel] = LocalFile(
        rel, st.st_size, st.st_mtime_ns, st.st_ino, purpose=rule.purpose, sha256=sha
    )


def _is_text(rel: str) -> bool:
    """Whether the name decoded from the filesystem is real text (no smuggled bytes)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def hash_file(path: Path, before: os.stat_result) -> tuple[str, bool]:
    """sha256 of the file, and whether it changed while being read."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    after = path.stat()
    changed = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
    return digest.hexdigest(), changed


def same_as_scanned(root: Path, local: LocalFile) -> bool:
    """Re-stat before and after an upload: has the file moved on since the scan?"""
    try:
        st = (root / local.path).stat()
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (local.size, local.mtime_ns)
