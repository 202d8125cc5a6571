"""When to list the account again for files waiting for space (status ``quota``).

The daemon's own deletes re-queue those files at once; only a listing sees space freed
by anyone else (another project or host on the key, a person, the provider expiring a
file). A minute between listings keeps the wait far below the hourly reconcile, while
one listing and one walk of the root a minute stay small next to the read limits. A
listing that frees nothing doubles the interval (up to an hour): a file larger than the
account's free space can wait for days. Nothing is listed while no file waits.

Pure: a state and the time in, a state out; the worker only acts on ``due``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

QUOTA_RECHECK_S = 60.0
MAX_SPACE_RECHECK_S = 3600.0


@dataclass(frozen=True)
class SpaceRecheck:
    """The schedule of account listings for files waiting for space."""

    base_s: float = QUOTA_RECHECK_S
    # When (the caller's clock) to list again; None while no file waits.
    due: float | None = None
    # The interval now, doubled by each listing that freed nothing.
    every_s: float = QUOTA_RECHECK_S
    # How many files waited after the last listing (None: none listed yet).
    waiting: int | None = None

    @classmethod
    def starting(cls, base_s: float = QUOTA_RECHECK_S) -> SpaceRecheck:
        return cls(base_s=base_s, every_s=base_s)

    def after_run(self, waiting: int, *, listed: bool, now: float) -> SpaceRecheck:
        """The schedule after a run that left ``waiting`` files waiting for space;
        ``listed``: the run listed the account (a reconcile, not a targeted sync)."""
        if not waiting:
            return SpaceRecheck.starting(self.base_s)
        if listed:
            freed = self.waiting is None or waiting < self.waiting
            every = self.base_s if freed else min(self.every_s * 2, MAX_SPACE_RECHECK_S)
            return replace(self, every_s=every, waiting=waiting, due=now + every)
        if self.due is None:
            return replace(self, due=now + self.every_s)
        return self

    def is_due(self, now: float) -> bool:
        return self.due is not None and now >= self.due

    def taken(self) -> SpaceRecheck:
        """The listing was asked for; the next run's outcome arms the schedule again."""
        return replace(self, due=None)
