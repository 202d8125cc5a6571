"""The settle queue's rules, pure: when a queued path may be released (``Timing``), and
how paths released together (both ends of a folder move) are grouped. The queue
(:mod:`syncd.daemon.settle`) holds the entries and the lock and only applies these."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Entry:
    first_seen: float
    last_event: float
    due: float
    # The first event we saw made the path appear; a deletion before release
    # then means there is nothing to tell the engine.
    born: bool
    closed: bool = False
    # Due time of the heap item standing for this entry, None when it has none.
    queued: float | None = None
    # A folder path (an end of a folder move): the engine expands it, and events
    # below it join it instead of queueing paths of their own.
    folder: bool = False
    # Paths released together with this one, in one batch (both ends of a move).
    group: set[str] | None = None


@dataclass(frozen=True)
class Timing:
    settle_s: float
    max_settle_s: float

    def due(self, entry: Entry) -> float:
        """When ``entry`` may be released by its last event: at once after a close,
        else ``settle_s`` after the event, never past ``max_settle_s`` since first seen."""
        deadline = entry.first_seen + self.max_settle_s
        due = entry.last_event if entry.closed else max(entry.due, entry.last_event + self.settle_s)
        return min(due, deadline)

    def wait_until(self, entry: Entry, now: float, age: float | None) -> float | None:
        """None when ``entry`` is settled at ``now``; else when to look again. ``age``:
        seconds since the file last changed by its own timestamps (None: gone)."""
        if now >= entry.first_seen + self.max_settle_s:
            return None
        if entry.closed or age is None:
            return None
        if now < entry.last_event + self.settle_s:
            return entry.due
        if age >= self.settle_s:
            return None
        # Changed without an event we saw (lost, coalesced, or polled late): wait until
        # the file's own timestamps are settle_s old.
        return min(now + (self.settle_s - age), entry.first_seen + self.max_settle_s)


def group_due(path: str, entry: Entry, entries: dict[str, Entry]) -> float:
    """When the last other pending member of ``entry``'s group is due (0 if none)."""
    dues = [
        member.due
        for other in entry.group or ()
        if other != path and (member := entries.get(other)) is not None
    ]
    return max(dues, default=0.0)


def folder_above(path: str, folders: set[str]) -> str | None:
    """The pending folder entry ``path`` lies below, if any."""
    if not folders:
        return None
    cut = path.rfind("/")
    while cut > 0:
        if path[:cut] in folders:
            return path[:cut]
        cut = path.rfind("/", 0, cut)
    return None


def merge_group(path: str, entry: Entry, group: set[str], entries: dict[str, Entry]) -> None:
    """Put ``path`` (and the group it was in) into ``group``."""
    group.add(path)
    old, entry.group = entry.group, group
    if old is None or old is group:
        return
    for member in old:
        group.add(member)
        other = entries.get(member)
        if other is not None:
            other.group = group
