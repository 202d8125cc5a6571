"""A per-path coalescing queue that releases a path only once its file has settled.

Filesystem events are hints: a ``created`` event fires when a file appears, not
when it is complete, and a busy file produces a stream of ``modified`` events.
The queue therefore keeps at most one entry per path and releases it when one of
these holds:

* the writer closed the file (inotify close-after-write, ``FileClosedEvent``);
* no event arrived for ``settle_s`` *and* a stat confirms that the file's mtime
  and ctime are at least ``settle_s`` old (events can be coalesced or lost, and
  polling reports changes late, so the stat is the final word);
* ``max_settle_s`` passed since the path was first queued: a file that never
  stops changing (a log, a growing capture) must still be synced eventually.

A path created and deleted before it was released produces no work at all.

Memory stays bounded: past ``max_pending`` entries the queue drops everything,
raises the rescan flag and ignores further events until the rescan is taken; a
full reconcile then catches up with whatever happened, which is cheaper and more
correct than tracking an unbounded storm event by event.

Timing is pure: the clock and the file probe are injected, so the rules can be
tested with a fake clock and no sleeping.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections.abc import Callable, Iterable
from enum import Enum

import structlog

from syncd.daemon.settle_rules import Entry, Timing, folder_above, group_due, merge_group

log = structlog.get_logger("syncd.daemon")


class Kind(Enum):
    CREATED = "created"
    MODIFIED = "modified"
    CLOSED = "closed"
    DELETED = "deleted"


Clock = Callable[[], float]
# Seconds since the file last changed (by its own timestamps), or None when the
# path is absent or cannot be stat'ed: nothing to wait for then.
Probe = Callable[[str], float | None]


def stat_probe(root: str) -> Probe:
    """A probe reading mtime/ctime against the wall clock.

    ctime is included because tools such as ``cp -p`` and ``tar`` set an old mtime on a
    file they have just written, while ctime cannot be set from user space.
    """

    def probe(rel_path: str) -> float | None:
        try:
            st = os.stat(os.path.join(root, rel_path), follow_symlinks=False)
        except OSError:
            return None
        return time.time() - max(st.st_mtime, st.st_ctime)

    return probe


class SettleQueue:
    """Thread-safe: the watch handler calls :meth:`touch`; one worker drains it."""

    def __init__(
        self,
        *,
        settle_s: float,
        max_settle_s: float,
        max_pending: int,
        clock: Clock = time.monotonic,
    ) -> None:
        self._timing = Timing(settle_s, max(max_settle_s, settle_s))
        self._max_pending = max_pending
        self._clock = clock
        self._cond = threading.Condition()
        self._entries: dict[str, Entry] = {}
        # One heap item per entry at most: when an entry's due time moves later, its
        # item is re-pushed lazily at pop time instead of on every event, so a file
        # written a thousand times a second does not grow the heap.
        self._heap: list[tuple[float, str]] = []
        self._dirs: set[str] = set()
        # Paths of the pending folder entries (see :meth:`move_dir`).
        self._folders: set[str] = set()
        self._rescan_reason: str | None = None
        self._overflowed = False
        self._dropped = 0
        self._last_event: float | None = None

    # ------------------------------------------------------------- producers

    def touch(self, path: str, kind: Kind) -> None:
        with self._cond:
            self._last_event = self._clock()
            if self._overflowed:
                self._dropped += 1
                return
            now = self._clock()
            holder = folder_above(path, self._folders)
            if holder is not None:
                self._refresh_locked(holder, now)
                return
            entry = self._entries.get(path)
            if entry is None:
                born = kind is Kind.CREATED
                if len(self._entries) >= self._max_pending:
                    self._overflow_locked(f"more than {self._max_pending} paths pending")
                    return
                entry = Entry(first_seen=now, last_event=now, due=0.0, born=born)
                self._entries[path] = entry
            elif kind is Kind.DELETED and entry.born:
                self._drop_locked(path)
                return
            entry.last_event = now
            # A write after close means someone reopened the file: wait again.
            entry.closed = kind is Kind.CLOSED
            self._schedule_locked(path, entry)
            self._cond.notify_all()

    def touch_dir(self, path: str) -> None:
        """Queue a folder for expansion (walked by the worker, never by the handler)."""
        with self._cond:
            self._last_event = self._clock()
            if self._overflowed:
                self._dropped += 1
                return
            if len(self._dirs) >= self._max_pending:
                self._overflow_locked(f"more than {self._max_pending} folders pending")
                return
            self._dirs.add(path)
            self._cond.notify_all()

    def move_dir(self, src: str, dest: str) -> None:
        """A folder moved within the root: its old path and its new one go to the engine
        in one batch, each as one folder path the engine expands. Seen together, each
        moved file takes the remote copy its old path had; split over batches, the old
        paths would be deleted remotely and the new ones uploaded again."""
        with self._cond:
            now = self._last_event = self._clock()
            if self._overflowed:
                self._dropped += 1
                return
            group: set[str] = set()
            for path, kind in ((src, Kind.DELETED), (dest, Kind.CREATED)):
                if not self._join_folder_locked(path, kind, group, now):
                    return
            self._cond.notify_all()

    def request_rescan(self, reason: str) -> None:
        with self._cond:
            if self._rescan_reason is None:
                self._rescan_reason = reason
            self._cond.notify_all()

    def requeue(self, paths: Iterable[str]) -> None:
        """Queue paths again, e.g. those that changed while being uploaded. They are
        released together again: a batch taken whole (a folder move) stays whole."""
        paths = list(paths)
        for path in paths:
            self.touch(path, Kind.MODIFIED)
        with self._cond:
            group: set[str] = set()
            for path in paths:
                entry = self._entries.get(path)
                if entry is not None:
                    merge_group(path, entry, group, self._entries)

    # ------------------------------------------------------------- consumer

    def take_rescan(self) -> str | None:
        """Return and clear the rescan reason; events after this call are queued again.

        The caller must start its scan after this call, so that anything changed
        while the queue was overflowed is seen by the scan, and anything changed
        during the scan is queued here.
        """
        with self._cond:
            reason = self._rescan_reason
            self._rescan_reason = None
            if self._overflowed:
                if self._dropped:
                    log.info("events dropped while waiting for the rescan", count=self._dropped)
                self._overflowed = False
                self._dropped = 0
            return reason

    def take_dirs(self) -> list[str]:
        with self._cond:
            dirs = sorted(self._dirs)
            self._dirs.clear()
            return dirs

    def pop_ready(
        self, probe: Probe, *, limit: int, first_seen: dict[str, float] | None = None
    ) -> list[str]:
        """Remove and return up to ``limit`` settled paths.

        ``first_seen``, if given, receives when each was first queued (the queue's
        clock), from which the event-to-mapping latency is measured.

        ``probe`` runs under the lock; it is one stat per due path, and the handler
        thread waiting on it briefly is fine (it only appends to this queue).
        """
        ready: list[str] = []
        with self._cond:
            now = self._clock()
            while self._heap and len(ready) < limit:
                due, path = self._heap[0]
                if due > now:
                    break
                heapq.heappop(self._heap)
                entry = self._entries.get(path)
                if entry is None or entry.queued != due:
                    continue
                entry.queued = None
                if entry.due > now:
                    self._push_locked(path, entry)
                    continue
                wait = self._timing.wait_until(entry, now, probe(path))
                if wait is None:
                    later = group_due(path, entry, self._entries)
                    if later > now:  # waits for the rest of its group
                        entry.due = later
                        self._push_locked(path, entry)
                        continue
                    # The rest of its group comes along, past the limit if need be: a
                    # folder move is one change.
                    for taken in [path, *sorted((entry.group or set()) - {path})]:
                        member = self._entries.get(taken)
                        if member is None:
                            continue
                        self._drop_locked(taken)
                        ready.append(taken)
                        if first_seen is not None:
                            first_seen[taken] = member.first_seen
                else:
                    entry.due = wait
                    self._schedule_locked(path, entry)
            return ready

    def next_due(self) -> float | None:
        """When the earliest entry may become ready (by the queue's clock), if any."""
        with self._cond:
            if self._rescan_reason is not None or self._dirs:
                return self._clock()
            return self._heap[0][0] if self._heap else None

    def last_event(self) -> float | None:
        """When (by the queue's clock) the last event arrived, dropped ones included."""
        with self._cond:
            return self._last_event

    def wait(self, timeout: float) -> None:
        """Block until something changes or ``timeout`` seconds pass."""
        with self._cond:
            self._cond.wait(timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def reconfigure(self, *, settle_s: float, max_settle_s: float, max_pending: int) -> None:
        with self._cond:
            self._timing = Timing(settle_s, max(max_settle_s, settle_s))
            self._max_pending = max_pending
            for path, entry in self._entries.items():
                entry.due = 0.0
                self._schedule_locked(path, entry)
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries) + len(self._dirs)

    @property
    def timing(self) -> Timing:
        return self._timing

    @property
    def overflowed(self) -> bool:
        with self._cond:
            return self._overflowed

    # ------------------------------------------------------------- internals

    def _schedule_locked(self, path: str, entry: Entry) -> None:
        entry.due = self._timing.due(entry)
        self._push_locked(path, entry)

    def _push_locked(self, path: str, entry: Entry) -> None:
        if entry.queued is None or entry.due < entry.queued:
            heapq.heappush(self._heap, (entry.due, path))
            entry.queued = entry.due

    def _overflow_locked(self, reason: str) -> None:
        log.warning("queue full: dropping it and scheduling a full rescan", reason=reason)
        self._overflowed = True
        self._dropped = 0
        self._entries.clear()
        self._heap.clear()
        self._dirs.clear()
        self._folders.clear()
        if self._rescan_reason is None:
            self._rescan_reason = reason
        self._cond.notify_all()

    def _drop_locked(self, path: str) -> None:
        """Forget an entry; its heap item, if any, is skipped when it comes up."""
        entry = self._entries.pop(path, None)
        if entry is not None:
            entry.queued = None
        self._folders.discard(path)

    def _refresh_locked(self, path: str, now: float) -> None:
        """An event below a folder entry: the folder waits to settle again."""
        entry = self._entries[path]
        entry.last_event = now
        entry.closed = False
        self._schedule_locked(path, entry)
        self._cond.notify_all()

    def _join_folder_locked(self, path: str, kind: Kind, group: set[str], now: float) -> bool:
        """Make ``path`` a folder entry in ``group`` (see :meth:`move_dir`); False on
        overflow."""
        holder = folder_above(path, self._folders)
        if holder is not None:  # inside a folder already queued whole (nested moves)
            merge_group(holder, self._entries[holder], group, self._entries)
            self._refresh_locked(holder, now)
            return True
        # Paths below it are covered by the folder from now on; a move they were part
        # of joins this one.
        inner = path + "/"
        for below in [p for p in self._entries if p.startswith(inner)]:
            merge_group(below, self._entries[below], group, self._entries)
            self._drop_locked(below)
        entry = self._entries.get(path)
        if entry is None:
            if len(self._entries) >= self._max_pending:
                self._overflow_locked(f"more than {self._max_pending} paths pending")
                return False
            entry = Entry(first_seen=now, last_event=now, due=0.0, born=kind is Kind.CREATED)
            self._entries[path] = entry
        elif kind is Kind.DELETED and entry.born:
            # Appeared (moved in) and left again before release: only its group cares.
            merge_group(path, entry, group, self._entries)
            self._drop_locked(path)
            return True
        entry.folder = True
        self._folders.add(path)
        merge_group(path, entry, group, self._entries)
        entry.last_event = now
        entry.closed = False
        self._schedule_locked(path, entry)
        return True
