"""The pruned walk of a folder tree the daemon's watches and new-folder look use: by
name, not following symlinks, entering only the folders the rules can hold files in.
Below the daemon and the watchdog adapter alike, so neither imports the other."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

# Whether a root-relative folder can hold a file the rules select (see engine/rules.py).
CanHold = Callable[[str], bool]


def walk_folders(
    top: str, rel_top: str, can_hold: CanHold, entering: Callable[[str], None] | None = None
) -> Iterator[tuple[str, str, list[os.DirEntry[str]]]]:
    """(path, root-relative path, its files) of ``top`` and every folder below it that
    ``can_hold`` accepts, as the scan walks: by name, not following symlinks. The one
    pruned walk behind the watch count, the watches themselves and the daemon's look
    at new folders. ``entering(folder)`` runs before a folder is listed: a watch added
    there sees whatever appears in it after the listing (one added after would miss
    a folder created in between, and everything ever written into it)."""
    stack = [(top, rel_top)]
    while stack:
        folder, rel_dir = stack.pop()
        if entering is not None:
            entering(folder)
        files: list[os.DirEntry[str]] = []
        try:
            with os.scandir(folder) as listing:
                for entry in listing:
                    if not entry.is_dir(follow_symlinks=False):
                        files.append(entry)
                        continue
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    if can_hold(rel):
                        stack.append((entry.path, rel))
        except OSError:
            pass  # gone or unreadable meanwhile: the scan reports it; still watched if it can be
        yield folder, rel_dir, files


def count_dirs(root: Path, stop_after: int, can_hold: CanHold) -> int:
    """Folders the watch will need, one inotify watch each (``root`` included): those
    ``can_hold`` accepts, not below a symlink. Counts no further than ``stop_after``."""
    count = 0
    for _folder in walk_folders(os.fspath(root), "", can_hold):
        count += 1
        if count > stop_after:
            break
    return count


def walk_candidates(
    root: Path, under: str, is_candidate: Callable[[str], bool], can_hold: CanHold
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """The candidate files below ``root/under`` ("" for all) as the scan finds them."""
    top = os.path.join(root, under) if under else os.fspath(root)
    for _folder, rel_dir, files in walk_folders(top, under, can_hold):
        for entry in files:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if is_candidate(rel):
                yield rel, entry
