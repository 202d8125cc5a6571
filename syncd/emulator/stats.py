"""Counters exposed by GET /_emulator/stats."""

from __future__ import annotations

import threading
import time
from typing import Any

from .limits import PeakMeter

CLASSES = ("upload", "read", "delete")
# `list_omit` counts entries left out of list pages, not requests.
FAULTS = ("5xx", "429", "drop_before", "drop_after_store", "list_omit")


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.meter = PeakMeter()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = dict.fromkeys(CLASSES, 0)
            # Batch jobs created and cancel requests that changed one; jobs that ended
            # completed, failed, expired or cancelled; content responses cut off.
            self.mutations = {"upload": 0, "delete": 0, "batch_create": 0, "batch_cancel": 0,
                              "batch_completed": 0, "batch_failed": 0, "batch_expired": 0,
                              "batch_cancelled": 0, "truncated_content": 0,
                              # Vector stores: created, files attached one by one or in
                              # batches, batches cancelled, files detached.
                              "vs_create": 0, "vs_attach": 0, "vs_batch": 0, "vs_cancel": 0,
                              "vs_detach": 0}
            self.throttled = dict.fromkeys(CLASSES, 0)
            self.faults = dict.fromkeys(FAULTS, 0)
        self.meter.reset()

    def received(self, cls: str) -> None:
        with self._lock:
            self.requests[cls] += 1
        self.meter.record(cls)

    def bump(self, table: str, key: str, amount: int = 1) -> None:
        with self._lock:
            getattr(self, table)[key] += amount

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "mutations": dict(self.mutations),
                "throttled": dict(self.throttled),
                "faults": dict(self.faults),
                "max_per_second": {c: self.meter.peak(c) for c in CLASSES},
                "uptime_s": round(time.monotonic() - self.started, 3),
            }
