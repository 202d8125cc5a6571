"""The provider's clock, measured from the ``Date`` header of its responses.

A file's ``created_at`` is stamped by the provider's clock, which may be minutes
off ours. Each response bounds the offset (provider minus host): the header was
written between our send and our receipt, and is truncated to whole seconds, so

    date - received <= offset <= date + 1 - sent

Intersecting these bounds over recent responses narrows them to about a round
trip, as NTP does with its four timestamps. No guess about the skew is needed.
"""

from __future__ import annotations

import email.utils
import threading
from collections import deque

# Bounds assumed before any response carried a Date header.
UNMEASURED = (-2.0, 2.0)
_SAMPLES = 32


def parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def intersect(samples: list[tuple[float, float]]) -> tuple[float, float] | None:
    """The tightest bounds all samples agree on; None if they contradict each other
    (the provider's or our clock was stepped)."""
    if not samples:
        return None
    lo = max(s[0] for s in samples)
    hi = min(s[1] for s in samples)
    return (lo, hi) if lo <= hi else None


class ServerClock:
    """Thread-safe bounds on (provider clock - host clock), in seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=_SAMPLES)
        self._lock = threading.Lock()

    def observe(self, date_header: str | None, sent: float, received: float) -> None:
        date = parse_http_date(date_header)
        if date is None or received < sent:
            return
        sample = (date - received, date + 1.0 - sent)
        with self._lock:
            self._samples.append(sample)
            if intersect(list(self._samples)) is None:
                # A clock was stepped: only the newest evidence counts.
                self._samples.clear()
                self._samples.append(sample)

    def offset(self) -> tuple[float, float]:
        """(low, high) bounds of the offset; wide defaults until a Date header was seen."""
        with self._lock:
            bounds = intersect(list(self._samples))
        return bounds if bounds is not None else UNMEASURED
