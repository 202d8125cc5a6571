"""When a root that was missing may be trusted again.

A root that disappears (unmounted disk, folder moved away, ``rm -r`` and restore)
often comes back gradually: a copy restores it file by file, a mount shows an
empty folder for a moment. A reconcile at that point sees most files as deleted
locally and deletes their remote copies, only to upload them again seconds later
with new ids. So a returning root is reconciled only once it is quiet: no
filesystem event for ``settle_s`` *and* two scans ``settle_s`` apart that agree
(same paths, sizes and mtimes).

A folder holding a file that never stops changing (a log) would never agree with
itself; after ``max_settle_s`` only the set of paths must agree, since which
paths exist is what decides deletes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from syncd.engine.walk import CanHold, walk_candidates

# (path, size, mtime_ns) of every candidate file under the root.
Signature = frozenset[tuple[str, int, int]]


def tree_signature(
    root: Path, is_candidate: Callable[[str], bool], can_hold: CanHold
) -> Signature | None:
    """What a scan of ``root`` sees, by stat only; None when ``root`` is not a folder."""
    if not root.is_dir():
        return None
    entries: set[tuple[str, int, int]] = set()
    for rel, entry in walk_candidates(root, "", is_candidate, can_hold):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone between listing and stat: the next scan tells
        entries.add((rel, st.st_size, st.st_mtime_ns))
    return frozenset(entries) if root.is_dir() else None


def _paths(signature: Signature) -> frozenset[str]:
    return frozenset(path for path, _size, _mtime in signature)


@dataclass
class RootReturn:
    """Pure decision for one return of the root; the clock is passed in.

    Feed it a scan with :meth:`step` until it answers None (settled); any other
    answer is how many seconds to wait before the next scan.
    """

    settle_s: float
    max_settle_s: float
    _back_at: float | None = None
    _seen: Signature | None = None
    # Since when scans have agreed with ``_seen``.
    _stable_since: float = 0.0

    def step(
        self, now: float, signature: Signature | None, last_event: float | None
    ) -> float | None:
        if signature is None:
            # Gone again: everything seen so far is void.
            self._back_at = None
            self._seen = None
            return self.settle_s
        if self._back_at is None:
            self._back_at = now
        patient = now - self._back_at < self.max_settle_s
        seen, self._seen = self._seen, signature
        same = seen is not None and (
            seen == signature if patient else _paths(seen) == _paths(signature)
        )
        if not same:
            self._stable_since = now
            return self.settle_s
        wait = self.settle_s - (now - self._stable_since)
        if patient and last_event is not None:
            wait = max(wait, self.settle_s - (now - last_event))
        return wait if wait > 0 else None
