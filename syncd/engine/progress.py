"""What a run tells whoever shows its progress: its totals, then each action done.

Typed calls rather than log lines to listen for: a display (the live bar of a one-off
reconcile, or a client of the running daemon's control socket) learns names and sizes
without reading any message the engine wrote.
"""

from __future__ import annotations

from typing import Literal, Protocol

Action = Literal["upload", "adopt", "delete"]


class Progress(Protocol):
    def planned(self, files: int, size: int) -> None:
        """The plan about to run: how many files it sends or takes over, and their bytes."""

    def done(self, action: Action, path: str, size: int) -> None:
        """One action ended; ``size`` is the bytes it moved (0 when it failed)."""


class Silent:
    """No display."""

    def planned(self, files: int, size: int) -> None:
        pass

    def done(self, action: Action, path: str, size: int) -> None:
        pass
