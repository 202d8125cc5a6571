"""What changed since a reader last looked: the keys written at each generation.

The state (paths) and the remote view (file ids) count their writes in a generation;
each also notes here which keys a write touched, so a reader that remembers the
generation it last read (the mapping's publisher) asks for those keys only, and an edit
in a 100,000-file tree costs what the edit touched. The log is bounded: a reader too far
behind, or one from before a change of everything (a full listing, the state read anew),
is told so (None) and reads everything.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

# Keys remembered in all; past this the oldest generations are forgotten. A publish that
# would patch more lines than this rewrites the mapping anyway.
MOST_KEYS = 4096


class ChangeLog:
    """Keys changed per generation, the last ``MOST_KEYS`` of them. Not thread-safe: the
    owner calls it under its own lock."""

    def __init__(self) -> None:
        self._log: deque[tuple[int, frozenset[str]]] = deque()
        self._count = 0
        # Readers of generations before this one must read everything.
        self._floor = 0
        self._now = 0

    def noted(self, generation: int, keys: Iterable[str]) -> None:
        """``keys`` changed at ``generation`` (above every generation noted before)."""
        changed = frozenset(keys)
        self._now = generation
        self._log.append((generation, changed))
        self._count += len(changed)
        while self._count > MOST_KEYS and self._log:
            gone, old = self._log.popleft()
            self._count -= len(old)
            self._floor = gone

    def everything(self, generation: int) -> None:
        """Anything may have changed at ``generation``."""
        self._log.clear()
        self._count = 0
        self._floor = self._now = generation

    def since(self, generation: int) -> set[str] | None:
        """The keys changed after ``generation``; None when that is not known (the
        reader is too far behind, or read before a change of everything)."""
        if generation < self._floor or generation > self._now:
            return None
        out: set[str] = set()
        for at, keys in reversed(self._log):
            if at <= generation:
                break
            out |= keys
        return out
