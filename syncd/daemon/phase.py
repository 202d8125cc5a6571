"""What the daemon is doing: one value the worker sets and everyone else reads.

The worker's activity is finer than what status and metrics report (a reconcile and a batch
of events are both "syncing" to an operator); `Phase.reported` makes that reduction in one
place, so no reader has to recover the phase from a sentence.
"""

from __future__ import annotations

from enum import Enum


class Phase(Enum):
    """The worker's current activity. The value is the words status shows for it."""

    STARTING = "starting"
    CATCHING_UP = "catching up"
    IDLE = "idle"
    SYNCING = "syncing"
    RECONCILING = "reconciling"
    BATCHES = "batches"
    WAITING_FOR_ROOT = "waiting for root"
    ROOT_SETTLING = "root is back; waiting for it to settle"
    STOPPING = "stopping"

    def reported(self, unreachable: bool) -> str:
        """One of `REPORTED`: the phase status and metrics show, given reachability."""
        if self is Phase.STOPPING:
            return "stopping"
        if self in (Phase.WAITING_FOR_ROOT, Phase.ROOT_SETTLING):
            return "waiting for root"
        if unreachable:
            return "remote unreachable"
        if self in (Phase.STARTING, Phase.CATCHING_UP, Phase.IDLE):
            return str(self.value)
        return "syncing"


# Every value `Phase.reported` returns: the label set of the `syncd_phase` gauge.
REPORTED = ("starting", "catching up", "idle", "syncing", "waiting for root",
            "remote unreachable", "stopping")  # fmt: skip
