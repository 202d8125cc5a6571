"""Sliding one-second windows: the rate limiter and the observed-rate meter."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

WINDOW_S = 1.0


class RateLimiter:
    """Admits a request unless `limit` requests were already accepted in (now - 1s, now].

    Only accepted requests enter the window, so a client hammering a full bucket does not
    push its own recovery further away (the provider's observable behaviour).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], deque[float]] = {}

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()

    def try_acquire(self, account: str, bucket: str, limit: int,
                    now: float | None = None) -> float | None:
        """Return None if admitted, else the seconds until a slot frees."""
        now = time.monotonic() if now is None else now
        with self._lock:
            window = self._windows.setdefault((account, bucket), deque())
            while window and window[0] <= now - WINDOW_S:
                window.popleft()
            if len(window) >= limit:
                return window[len(window) - limit] + WINDOW_S - now
            window.append(now)
            return None


def retry_after_header(wait_s: float) -> int:
    return max(1, math.ceil(wait_s))


class PeakMeter:
    """Tracks the largest number of events seen inside any sliding one-second window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._peaks: dict[str, int] = {}

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self._peaks.clear()

    def record(self, name: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            window = self._windows.setdefault(name, deque())
            while window and window[0] <= now - WINDOW_S:
                window.popleft()
            window.append(now)
            self._peaks[name] = max(self._peaks.get(name, 0), len(window))

    def peak(self, name: str) -> int:
        with self._lock:
            return self._peaks.get(name, 0)
