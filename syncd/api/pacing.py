"""Request pacing: one adaptive limiter per call class, shared by threads and processes.

The provider counts requests per account in sliding one-second windows, per call
class. At the configured ceiling ``N`` per second the pacer mirrors that rule with
a wider window: at most ``N`` grants in any ``1 + margin`` seconds, where the grant
time recorded is the moment the grant was actually made (a thread that is not yet
allowed sleeps and asks again, so a late wake-up can only widen a gap). The
``N + 1``-th request then reaches the server more than one second after the first
as long as the delay between our grant and the server's arrival timestamp varies by
less than ``margin`` seconds. A quiet class may start with a burst, which buys the
margin back in throughput.

On top of that sits an rclone-style adaptive pacer: a 429 lowers the class's rate
(multiplicative decrease, a burst of 429s counting once), pauses the class, and
remembers a ceiling estimate; successes recover the rate up to that estimate
quickly and probe above it only slowly after a quiet period.

The state of each class lives in a small JSON file under ``state_dir`` guarded by
``fcntl.flock``, so every process on the host using the same key paces and adapts
together. Without ``state_dir`` the state is in memory, shared by the threads of
one process. Times come from ``time.monotonic`` (CLOCK_MONOTONIC is host-wide on
Linux, so processes agree on it); state from before a reboot is detected and reset.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from syncd.api.models import CallClass

log = structlog.get_logger(__name__)

CALL_CLASSES: tuple[CallClass, ...] = ("upload", "read", "delete")

# 30 ms of arrival jitter is absorbed at any rate (the margin widens the 1 s window).
# Client-side delays do not count against it (a request is counted from when it was
# actually sent), so what remains is the server's own lag in stamping arrivals.
DEFAULT_MARGIN = 0.03
WINDOW = 1.0


@dataclass(frozen=True)
class AdaptiveTuning:
    """Constants of the adaptive pacer (attack on 429, decay on success)."""

    # Multiplicative decrease on a 429.
    decrease_factor: float = 0.5
    # 429s within this long after a decrease belong to the same burst.
    dedupe_window: float = 1.0
    # Pause of the class after a 429 without Retry-After; doubles while 429s keep
    # coming (a fixed 1 s proved too short for some providers), up to max_pause.
    base_pause: float = 1.0
    max_pause: float = 16.0
    # A provider hint pauses the whole class; past this the call gives up instead
    # (its retry budget sees the full hint) rather than stalling every caller.
    max_hint_pause: float = 60.0
    # Per-success growth of the rate while below the ceiling estimate.
    recover_factor: float = 1.1
    # No 429 for this long before probing above the ceiling estimate ...
    probe_quiet: float = 30.0
    # ... and then raise the estimate by this factor at most once per probe_interval.
    probe_factor: float = 1.05
    probe_interval: float = 1.0
    # Never pace slower than this.
    min_rate: float = 0.2


@dataclass
class ClassState:
    """Shared pacing state of one call class (serialised as JSON)."""

    last_grant: float = -math.inf
    # Grant times within the last window, to know how many we sent when a 429 came.
    recent: list[float] = field(default_factory=list)
    # Currently allowed rate; None = the configured ceiling.
    rate: float | None = None
    # Highest rate believed safe after a 429; None = no estimate (trust the ceiling).
    target: float | None = None
    paused_until: float = -math.inf
    last_throttle: float = -math.inf
    last_decrease: float = -math.inf
    last_probe: float = -math.inf
    throttle_streak: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                k: (None if isinstance(v, float) and math.isinf(v) else v)
                for k, v in asdict(self).items()
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ClassState:
        raw: dict[str, Any] = json.loads(text)
        state = cls()
        for name in ("last_grant", "paused_until", "last_throttle", "last_decrease", "last_probe"):
            value = raw.get(name)
            if value is not None:
                setattr(state, name, float(value))
        for name in ("rate", "target"):
            value = raw.get(name)
            setattr(state, name, None if value is None else float(value))
        state.recent = [float(t) for t in raw.get("recent") or []]
        state.throttle_streak = int(raw.get("throttle_streak") or 0)
        return state

    def looks_stale(self, now: float) -> bool:
        """True when times lie in the future: the state predates a reboot."""
        times = (self.last_grant, self.last_throttle, self.last_decrease, self.last_probe)
        return any(t > now + 60.0 for t in times) or self.paused_until > now + 3600.0


# The pure rules, on a state and a clock reading. The store decides where the
# state lives; these decide what happens to it.


def effective_rate(state: ClassState, ceiling: float, tuning: AdaptiveTuning) -> float:
    rate = ceiling if state.rate is None else min(state.rate, ceiling)
    return max(rate, min(tuning.min_rate, ceiling))


def try_grant(
    state: ClassState, now: float, ceiling: float, tuning: AdaptiveTuning, margin: float
) -> float:
    """Grant a request now (return 0.0, state updated) or say how long to wait first."""
    earliest = state.paused_until
    if ceiling >= 1.0:
        # Mirror the provider's own rule at the configured ceiling: at most N grants in
        # any window, the window widened by the margin for arrival jitter. Unlike even
        # spacing this lets a quiet class start with a burst, which buys the margin back.
        n = int(ceiling)
        window = n / ceiling * (1.0 + margin)
        recent = [t for t in state.recent if t > now - window]
        if len(recent) >= n:
            earliest = max(earliest, recent[-n] + window)
        # Half the even spacing: the burst is spread enough that the server's load stays
        # smooth (its arrival stamps lag under bursts), yet short enough to gain time.
        earliest = max(earliest, state.last_grant + 0.5 / ceiling)
    if state.rate is not None or ceiling < 1.0:
        # Below the ceiling (after a 429) the provider's real limit is unknown: even
        # spacing never bunches more into a window than the average rate allows.
        interval = (1.0 / effective_rate(state, ceiling, tuning)) * (1.0 + margin)
        earliest = max(earliest, state.last_grant + interval)
    if now < earliest:
        return earliest - now
    state.last_grant = now
    cutoff = now - WINDOW * (1.0 + margin)
    state.recent = [t for t in state.recent if t > cutoff]
    state.recent.append(now)
    return 0.0


def note_sent(state: ClassState, granted_at: float, sent_at: float) -> None:
    """The request granted at ``granted_at`` left only at ``sent_at``: count it from
    then, so a thread held up between grant and send cannot bunch the next window."""
    if sent_at <= granted_at:
        return
    try:
        i = state.recent.index(granted_at)
    except ValueError:
        return
    state.recent[i] = sent_at
    state.recent.sort()
    state.last_grant = max(state.last_grant, sent_at)


def note_throttled(
    state: ClassState,
    now: float,
    ceiling: float,
    tuning: AdaptiveTuning,
    retry_after: float | None,
) -> bool:
    """Apply a 429. Returns True when it lowered the rate (first of a burst)."""
    same_burst = now - state.last_decrease < tuning.dedupe_window
    if not same_burst:
        # Throttled again soon after the previous pause ended: the pause was too short.
        recent_pause_end = state.paused_until + 2.0 * tuning.dedupe_window
        state.throttle_streak = state.throttle_streak + 1 if now <= recent_pause_end else 0
    if retry_after is not None:
        pause = min(max(0.0, retry_after), tuning.max_hint_pause)
    else:
        pause = min(tuning.max_pause, tuning.base_pause * 2.0**state.throttle_streak)
    state.paused_until = max(state.paused_until, now + pause)
    state.last_throttle = now
    if same_burst:
        return False
    current = effective_rate(state, ceiling, tuning)
    # The provider limits a count per window: if it refused us with `sent` requests
    # in the last window, at most `sent - 1` fit.
    sent = sum(1 for t in state.recent if t > now - WINDOW)
    estimate = min(current, float(sent - 1)) if sent >= 2 else current * tuning.decrease_factor
    floor = min(tuning.min_rate, ceiling)
    state.target = max(floor, estimate)
    state.rate = max(floor, min(current, state.target) * tuning.decrease_factor)
    state.last_decrease = now
    return True


def note_success(state: ClassState, now: float, ceiling: float, tuning: AdaptiveTuning) -> bool:
    """Apply a success: recover toward the estimate, or probe above it when quiet.

    Returns True when the state changed.
    """
    rate = effective_rate(state, ceiling, tuning)
    target = ceiling if state.target is None else min(state.target, ceiling)
    if rate < target:
        state.rate = min(target, rate * tuning.recover_factor)
        return True
    if state.target is None and state.rate is None:
        return False
    quiet = now - state.last_throttle >= tuning.probe_quiet
    if quiet and now - state.last_probe >= tuning.probe_interval:
        new_target = min(ceiling, target * tuning.probe_factor)
        state.last_probe = now
        if new_target >= ceiling:
            state.target = None
            state.rate = None
        else:
            state.target = new_target
            state.rate = new_target
        return True
    if state.rate is not None and state.rate > ceiling:
        state.rate = ceiling
        return True
    return False


class _Store:
    """Where the state of one class lives; ``transaction`` yields it under a lock."""

    def transaction(self) -> contextlib.AbstractContextManager[ClassState]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _MemoryStore(_Store):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = ClassState()

    @contextlib.contextmanager
    def _txn(self) -> Iterator[ClassState]:
        with self._lock:
            yield self._state

    def transaction(self) -> contextlib.AbstractContextManager[ClassState]:
        return self._txn()


class _FileStore(_Store):
    """State in a file under an exclusive ``flock``.

    The thread lock is needed too: flock is per open file description, so threads
    sharing this descriptor would not exclude each other through it.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    @contextlib.contextmanager
    def _txn(self) -> Iterator[ClassState]:
        with self._lock:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, 1 << 16, 0)
                try:
                    state = ClassState.from_json(raw.decode()) if raw else ClassState()
                except (ValueError, TypeError, UnicodeDecodeError):
                    # A writer died mid-write; pacing state is cheap to rebuild.
                    state = ClassState()
                before = raw
                yield state
                data = state.to_json().encode()
                if data != before:
                    os.pwrite(fd, data, 0)
                    if len(data) < len(before):
                        os.ftruncate(fd, len(data))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def transaction(self) -> contextlib.AbstractContextManager[ClassState]:
        return self._txn()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Pacer:
    """Adaptive per-class rate limiter.

    ``acquire(cls)`` blocks until a request of that class may be sent; report the
    outcome with ``on_throttled`` (a 429) or ``on_success``.
    """

    def __init__(
        self,
        ceilings: Mapping[CallClass, float],
        *,
        state_dir: Path | None = None,
        key_fingerprint: str = "default",
        margin: float = DEFAULT_MARGIN,
        tuning: AdaptiveTuning | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._ceilings = {cls: float(ceilings[cls]) for cls in CALL_CLASSES}
        self._margin = margin
        self._tuning = tuning or AdaptiveTuning()
        self._clock = clock
        self._sleep = sleep
        self._stores: dict[CallClass, _Store] = {}
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for cls in CALL_CLASSES:
            if state_dir is None:
                self._stores[cls] = _MemoryStore()
            else:
                self._stores[cls] = _FileStore(state_dir / f"{key_fingerprint}-{cls}.json")

    @contextlib.contextmanager
    def _state(self, cls: CallClass) -> Iterator[tuple[ClassState, float]]:
        with self._stores[cls].transaction() as state:
            now = self._clock()
            if state.looks_stale(now):
                fresh = ClassState()
                state.__dict__.update(fresh.__dict__)
            yield state, now

    def grant(self, cls: CallClass) -> tuple[float, float]:
        """Block until a request of ``cls`` may go. Returns the grant time (to pass to
        :meth:`mark_sent` once the request has actually left) and the seconds waited."""
        ceiling = self._ceilings[cls]
        waited = 0.0
        while True:
            with self._state(cls) as (state, now):
                wait = try_grant(state, now, ceiling, self._tuning, self._margin)
            if wait <= 0.0:
                return now, waited
            # Sleep and re-check rather than grant-then-sleep: the grant time must be
            # the time the request actually leaves.
            self._sleep(wait)
            waited += wait

    def acquire(self, cls: CallClass) -> float:
        """Block until a request of ``cls`` may go; return the seconds waited."""
        return self.grant(cls)[1]

    def mark_sent(self, cls: CallClass, granted_at: float) -> None:
        """The request granted at ``granted_at`` has just been written to the socket."""
        with self._state(cls) as (state, now):
            note_sent(state, granted_at, now)

    def on_throttled(self, cls: CallClass, retry_after: float | None = None) -> None:
        with self._state(cls) as (state, now):
            lowered = note_throttled(state, now, self._ceilings[cls], self._tuning, retry_after)
            rate, target, pause = state.rate, state.target, state.paused_until - now
        if lowered:
            log.warning(
                "api.pacer.slow_down",
                call_class=cls,
                rate=round(rate or 0.0, 3),
                ceiling_estimate=round(target or 0.0, 3),
                pause=round(pause, 3),
            )

    def on_success(self, cls: CallClass) -> None:
        with self._state(cls) as (state, now):
            if state.rate is None and state.target is None:
                return
            changed = note_success(state, now, self._ceilings[cls], self._tuning)
            rate = state.rate
        if changed:
            log.debug(
                "api.pacer.recover", call_class=cls, rate=None if rate is None else round(rate, 3)
            )

    def snapshot(self, cls: CallClass) -> ClassState:
        """A copy of the class's current state (diagnostics and tests)."""
        with self._state(cls) as (state, _now):
            return ClassState.from_json(state.to_json())

    def current_rate(self, cls: CallClass) -> float:
        with self._state(cls) as (state, _now):
            return effective_rate(state, self._ceilings[cls], self._tuning)

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
