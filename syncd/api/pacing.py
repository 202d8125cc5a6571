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

On top of that sits an adaptive pacer that tells two kinds of 429 apart:

- **We are too fast.** Every request carries the number of requests we sent in the
  one-second window it went out in, less those of them answered 429 (its *count*:
  what the provider surely counted). A success at count ``c`` proves the provider
  took ``c`` requests in a window (for ``proof_ttl`` seconds). A 429 at a count above
  that proof is *evidence* of a lower limit, until a later success at the same or a
  higher count disproves it. Three pieces of evidence within ``evidence_ttl`` (one,
  above a learned estimate) mean we are over the provider's rate: the rate drops (to
  the proven count when that pins the limit down, else by half), the class pauses
  (not when pinned down: the provider's window drains at that rate), and the
  estimate is remembered. A request sent before that verdict and accepted at a count
  that drew it proves the verdict wrong, and undoes it. Successes recover the rate
  up to the estimate quickly and probe above it only slowly after a quiet period.
- **The server sheds load.** A 429 at a count the provider has just accepted says
  nothing about our rate. It changes nothing here; the caller retries that one
  request with backoff (obeying Retry-After). A provider that throttles at random
  therefore costs the retries, not a ratcheting ceiling.

The rate never goes below ``min_rate`` (1/s, or the ceiling if that is lower). A
learned estimate decays with idle time: a state last used long ago returns towards
the configured ceiling (half the gap per ``idle_half_life`` seconds idle), so one
bad hour does not slow the next run.

The state of each class lives in a small JSON file in a private folder guarded by
``fcntl.flock`` on a separate lock file, so every process of this user on the host
using the same key paces and adapts together. Without a folder the state is in
memory, shared by the threads of one process. The folder must belong to this user
and must not be writable by group or others (it is created 0700); its files are
opened without following symlinks and replaced atomically (write a temporary file,
rename it over the old one). A state that cannot be parsed, or that is absurd
(non-finite or non-positive rates, times in the future, an endless pause), is
reset rather than obeyed. Times come from ``time.monotonic`` (CLOCK_MONOTONIC is
host-wide on Linux, so processes agree on it); state from before a reboot has times
in the future and is reset too.

Where the state lives is a small interface (:class:`StateStore`): one transaction
that yields a :class:`ClassState` under an exclusive lock and saves it afterwards.
The memory and file stores implement it; a store shared between hosts could too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import structlog

from syncd.api.models import CallClass

log = structlog.get_logger(__name__)

CALL_CLASSES: tuple[CallClass, ...] = ("upload", "read", "delete")

# 30 ms of arrival jitter is absorbed at any rate (the margin widens the 1 s window).
# Client-side delays do not count against it (a request is counted from when it was
# actually sent), so what remains is the server's own lag in stamping arrivals.
DEFAULT_MARGIN = 0.03
WINDOW = 1.0

# A stored state larger than this is not ours to parse (a window holds a few dozen times).
MAX_STATE_BYTES = 1 << 16
MAX_RECENT = 4096
# How long the send times of refused requests are kept (longer than any window they
# could matter for, short enough to stay small).
REFUSED_KEEP = 10.0
# Clock readings of different processes differ by scheduling noise, never by this much.
FUTURE_SLACK = 60.0
# A shared state remembers each host granted a request within this long: the hosts that
# may still be sending when the shared store is lost, and so share what is left of it.
HOSTS_KEEP = 600.0
MAX_HOSTS = 256

Verdict = Literal["isolated", "evidence", "burst", "lowered"]
T = TypeVar("T")


class PacingDirError(ValueError):
    """The shared pacing folder (or a file in it) is not safe to use; the message says
    which path and what to do."""


@dataclass(frozen=True)
class AdaptiveTuning:
    """Constants of the adaptive pacer (attack on over-rate 429s, recovery, decay)."""

    # Decrease on an over-rate verdict when the limit is not pinned down exactly.
    decrease_factor: float = 0.5
    # Over-rate verdicts within this long after a decrease belong to the same burst.
    dedupe_window: float = 1.0
    # Pause of the class after an over-rate verdict without Retry-After; doubles while
    # they keep coming (a fixed 1 s proved too short for some providers), up to max_pause.
    base_pause: float = 1.0
    max_pause: float = 16.0
    # A provider hint pauses the whole class; past this the call gives up instead
    # (its retry budget sees the full hint) rather than stalling every caller.
    max_hint_pause: float = 60.0
    # Per-success growth of the rate while below the ceiling estimate.
    recover_factor: float = 1.1
    # No over-rate verdict for this long before probing above the ceiling estimate ...
    probe_quiet: float = 30.0
    # ... and then raise the estimate by this factor at most once per probe_interval.
    probe_factor: float = 1.05
    probe_interval: float = 1.0
    # Never pace slower than this (or than the ceiling, if that is lower): below 1/s a
    # few unlucky 429s would turn a sync of minutes into hours.
    min_rate: float = 1.0
    # How long a success at count c proves that the provider takes c per window.
    proof_ttl: float = 5.0
    # 429s above the proven count (not disproved since) that mean "we are too fast",
    # and how long one such 429 stays evidence.
    evidence_needed: int = 3
    evidence_ttl: float = 5.0
    # Idle time after which a learned estimate starts returning to the ceiling, and the
    # idle time that halves the remaining gap.
    idle_grace: float = 30.0
    idle_half_life: float = 120.0


@dataclass
class ClassState:
    """Shared pacing state of one call class (serialised as JSON)."""

    last_grant: float = -math.inf
    # Grant times within the last window: the count of each new request, and of the
    # window a 429 came from.
    recent: list[float] = field(default_factory=list)
    # Currently allowed rate; None = the configured ceiling.
    rate: float | None = None
    # Highest rate believed safe after an over-rate verdict; None = trust the ceiling.
    target: float | None = None
    paused_until: float = -math.inf
    # Last over-rate verdict (isolated 429s do not move it).
    last_throttle: float = -math.inf
    last_decrease: float = -math.inf
    last_probe: float = -math.inf
    throttle_streak: int = 0
    # Highest count at which a request recently succeeded, and when.
    proven: int = 0
    proven_at: float = -math.inf
    # The highest count of the evidence behind the last decrease: a request sent
    # before it that succeeded at this count or above proves the decrease wrong.
    decided_on: int = 0
    # 429s above the proven count, as (time, count).
    evidence: list[tuple[float, int]] = field(default_factory=list)
    # Send times of recent requests answered 429: a provider need not count what it
    # refused, so a count that proves anything leaves them out.
    refused: list[float] = field(default_factory=list)
    # In a shared store: each budget (a host's local store) that was granted a request
    # lately, and when. Who may be sending when the shared store is lost.
    hosts: dict[str, float] = field(default_factory=dict)

    def copy(self) -> ClassState:
        return replace(
            self,
            recent=list(self.recent),
            evidence=list(self.evidence),
            refused=list(self.refused),
            hosts=dict(self.hosts),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                k: (None if isinstance(v, float) and math.isinf(v) else v)
                for k, v in asdict(self).items()
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ClassState:
        """Parse a stored state; raises ValueError on anything not finite and well typed."""
        raw = json.loads(text, parse_constant=_reject_constant)
        if not isinstance(raw, dict):
            raise ValueError("pacing state is not an object")
        state = cls()
        for name in (
            "last_grant",
            "paused_until",
            "last_throttle",
            "last_decrease",
            "last_probe",
            "proven_at",
        ):
            value = raw.get(name)
            if value is not None:
                setattr(state, name, _finite(value))
        for name in ("rate", "target"):
            value = raw.get(name)
            setattr(state, name, None if value is None else _finite(value))
        for name in ("throttle_streak", "proven", "decided_on"):
            setattr(state, name, _integer(raw.get(name) or 0))
        state.recent = [_finite(t) for t in _list(raw.get("recent"))]
        state.refused = [_finite(t) for t in _list(raw.get("refused"))]
        state.evidence = [_evidence(e) for e in _list(raw.get("evidence"))]
        state.hosts = _hosts(raw.get("hosts"))
        return state


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} in pacing state")


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("pacing state: not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("pacing state: not finite")
    return number


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("pacing state: not an integer")
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("pacing state: not a list")
    return value


def _hosts(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_HOSTS:
        raise ValueError("pacing state: bad hosts")
    if not all(isinstance(k, str) and 0 < len(k) <= 64 for k in value):
        raise ValueError("pacing state: bad host id")
    return {k: _finite(v) for k, v in value.items()}


def _evidence(value: Any) -> tuple[float, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("pacing state: bad evidence")
    return _finite(value[0]), _integer(value[1])


# The pure rules, on a state and a clock reading. The store decides where the
# state lives; these decide what happens to it.


def is_implausible(state: ClassState, now: float, tuning: AdaptiveTuning) -> bool:
    """True for a state that must be reset rather than obeyed: times in the future (it
    predates a reboot, or was tampered with), a pause longer than any we set, rates
    that are not positive, or lists longer than any window holds."""
    times = [
        state.last_grant,
        state.last_throttle,
        state.last_decrease,
        state.last_probe,
        state.proven_at,
        *state.recent,
        *state.refused,
        *(e[0] for e in state.evidence),
        *state.hosts.values(),
    ]
    if any(not math.isfinite(t) and t != -math.inf for t in times):
        return True
    if any(t > now + FUTURE_SLACK for t in times):
        return True
    if state.paused_until > now + max(tuning.max_pause, tuning.max_hint_pause) + 1.0:
        return True
    for rate in (state.rate, state.target):
        if rate is not None and not (math.isfinite(rate) and rate > 0.0):
            return True
    if max(len(state.recent), len(state.refused), len(state.evidence)) > MAX_RECENT:
        return True
    if len(state.hosts) > MAX_HOSTS:
        return True
    counters = (state.throttle_streak, state.proven, state.decided_on)
    return any(c < 0 or c > MAX_RECENT for c in counters)


def effective_rate(state: ClassState, ceiling: float, tuning: AdaptiveTuning) -> float:
    rate = ceiling if state.rate is None else min(state.rate, ceiling)
    return max(rate, min(tuning.min_rate, ceiling))


def window_count(state: ClassState, t: float) -> int:
    """Requests we sent in the one-second window ending at ``t`` (as the provider counts)."""
    return sum(1 for x in state.recent if t - WINDOW < x <= t)


def relax_idle(state: ClassState, now: float, ceiling: float, tuning: AdaptiveTuning) -> bool:
    """Let a learned estimate decay towards the ceiling with the time the class was idle.

    A state last used long ago describes a provider we no longer know about: half the
    gap to the ceiling goes per ``idle_half_life`` seconds past ``idle_grace``. Returns
    True when the state changed.
    """
    idle = now - max(state.last_grant, state.last_throttle)
    if not idle > tuning.idle_grace or (state.target is None and state.rate is None):
        return False
    target = ceiling if state.target is None else min(state.target, ceiling)
    keep = 0.5 ** ((idle - tuning.idle_grace) / tuning.idle_half_life)  # 0.0 when never used
    relaxed = ceiling - (ceiling - target) * keep
    if relaxed >= 0.95 * ceiling:
        state.target = state.rate = None
    else:
        # The provider's window has long drained: start at the estimate, not below it.
        state.target = state.rate = relaxed
    state.throttle_streak = 0
    state.evidence = []
    return True


def try_grant(
    state: ClassState, now: float, ceiling: float, tuning: AdaptiveTuning, margin: float
) -> float:
    """Grant a request now (return 0.0, state updated) or say how long to wait first."""
    relax_idle(state, now, ceiling, tuning)
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
        # Below the ceiling (after an over-rate verdict) the provider's real limit is
        # unknown: even spacing never bunches more into a window than the average allows.
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


def count_late(state: ClassState, sent_at: float) -> None:
    """Count a request that left at ``sent_at`` but was granted on another clock."""
    state.recent = sorted([*(t for t in state.recent if t > sent_at - 2.0 * WINDOW), sent_at])
    state.last_grant = max(state.last_grant, sent_at)


def _proven(state: ClassState, now: float, tuning: AdaptiveTuning) -> int:
    return state.proven if now - state.proven_at <= tuning.proof_ttl else 0


def net_count(state: ClassState, sent_at: float, count: int) -> int:
    """``count`` (our requests in the window a request went out in, itself included)
    less those of them since answered 429: what the provider surely counted."""
    return max(1, count - sum(1 for r in state.refused if sent_at - WINDOW < r < sent_at))


def note_throttled(
    state: ClassState,
    now: float,
    ceiling: float,
    tuning: AdaptiveTuning,
    retry_after: float | None,
    *,
    count: int | None = None,
    sent_at: float | None = None,
) -> Verdict:
    """Apply a 429 of a request sent at ``sent_at`` as the ``count``-th of its window
    (both default to now). Returns what it meant:

    ``isolated``: the provider recently accepted as many per window; nothing changes.
    ``evidence``: a hint of a lower limit, not yet enough to act on.
    ``lowered``: we are too fast: rate lowered, estimate remembered, class paused.
    ``burst``: too fast again within the same burst: estimate tightened, pause extended.
    """
    sent_at = now if sent_at is None else sent_at
    count = net_count(state, sent_at, window_count(state, now) if count is None else count)
    state.refused = [r for r in state.refused if r > now - REFUSED_KEEP]
    state.refused.append(sent_at)
    proven = _proven(state, now, tuning)
    state.evidence = [e for e in state.evidence if now - e[0] <= tuning.evidence_ttl]
    # Above a learned estimate (probing, or the limit moved down) one 429 is enough.
    above_target = state.target is not None and count > state.target
    if count > proven or above_target:
        state.evidence.append((now, count))
    needed = 1 if above_target else tuning.evidence_needed
    if len(state.evidence) < needed:
        return "evidence" if count > proven else "isolated"

    counts = [e[1] for e in state.evidence]
    state.evidence = []
    same_burst = now - state.last_decrease < tuning.dedupe_window
    if not same_burst:
        # Throttled again soon after the previous pause ended: the pause was too short.
        recent_pause_end = state.paused_until + 2.0 * tuning.dedupe_window
        state.throttle_streak = state.throttle_streak + 1 if now <= recent_pause_end else 0
    floor = min(tuning.min_rate, ceiling)
    current = effective_rate(state, ceiling, tuning)
    # The provider limits a count per window: refused at count c means at most c - 1 fit.
    limit = min(counts) - 1 if counts else 0
    # Pinned down: accepted at `proven` moments ago, refused just above it (a proof
    # may be one too high: a request at the window's edge may have arrived outside).
    exact = limit >= 1 and proven - 1 <= limit <= proven
    if retry_after is not None:
        pause = min(max(0.0, retry_after), tuning.max_hint_pause)
    elif exact:
        pause = 0.0  # at the proven rate the provider's window drains by itself
    else:
        pause = min(tuning.max_pause, tuning.base_pause * 2.0**state.throttle_streak)
    state.paused_until = max(state.paused_until, now + pause)
    state.last_throttle = now
    if same_burst:
        if limit >= 1 and state.target is not None and limit < state.target:
            state.target = max(floor, float(limit))
            state.rate = min(state.rate or state.target, state.target)
        return "burst"
    estimate = min(current, float(limit)) if limit >= 1 else current * tuning.decrease_factor
    state.target = max(floor, estimate)
    if exact:
        state.rate = state.target
    else:
        state.rate = max(floor, min(current, state.target) * tuning.decrease_factor)
    state.decided_on = max(counts) if counts else count
    state.last_decrease = now
    return "lowered"


def note_success(
    state: ClassState,
    now: float,
    ceiling: float,
    tuning: AdaptiveTuning,
    *,
    count: int | None = None,
    sent_at: float | None = None,
) -> bool:
    """Apply a success of a request sent at ``sent_at`` as the ``count``-th of its
    window: record the proof, drop the evidence it disproves, recover toward the
    estimate, or probe above it when quiet. Returns True when the rate changed.
    """
    sent_at = now if sent_at is None else sent_at
    count = net_count(state, sent_at, window_count(state, now) if count is None else count)
    if count >= _proven(state, now, tuning):
        state.proven = count
        state.proven_at = now
    if state.evidence:
        state.evidence = [e for e in state.evidence if e[1] > count]
    if (
        state.target is not None
        and sent_at < state.last_decrease
        and count >= max(state.decided_on, 1)
    ):
        # Sent before the decrease, at a count that drew the 429s behind it, and yet
        # accepted: those 429s were not about our rate. Undo the decrease.
        state.target = float(count) if count < ceiling else None
        state.rate = state.target
        state.paused_until = min(state.paused_until, now)
        state.throttle_streak = 0
        return True
    rate = effective_rate(state, ceiling, tuning)
    target = ceiling if state.target is None else min(state.target, ceiling)
    if rate < target:
        # Accepted at the estimated count itself: the estimate holds, go straight to it.
        proved = count >= math.floor(target)
        state.rate = target if proved else min(target, rate * tuning.recover_factor)
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


# Losing the shared store, and getting it back. While a shared store serves, every
# host's grants are in its window; when it goes away each host paces alone, and the
# window it starts from must be the one they shared, or the grants of the second
# before are counted twice over by the provider.


def note_host(state: ClassState, host: str, now: float) -> None:
    """Remember that ``host`` was granted a request at ``now``; forget hosts not seen
    for ``HOSTS_KEEP``."""
    hosts = {h: t for h, t in state.hosts.items() if now - HOSTS_KEEP < t <= now}
    hosts[host] = now
    if len(hosts) > MAX_HOSTS:
        hosts = dict(sorted(hosts.items(), key=lambda item: item[1])[-MAX_HOSTS:])
    state.hosts = hosts


def hosts_seen(state: ClassState, now: float, host: str) -> int:
    """Hosts granted a request within ``HOSTS_KEEP`` of ``now``, ``host`` among them."""
    return len({h for h, t in state.hosts.items() if t > now - HOSTS_KEEP} | {host})


@dataclass(frozen=True)
class Inheritance:
    """What a host last saw of a shared state, to start its local one from when the
    shared store is lost."""

    # The shared state as last seen, on the shared clock.
    state: ClassState
    # Shared time + shift = local time. Measured after the reading arrived, so a time
    # converted is never earlier than it was: an inherited grant leaves the window late.
    shift: float
    # When (local clock) it was seen, and when the shared store was found unreachable.
    seen_at: float
    lost_at: float
    # This host's share of the ceiling while the shared store is away.
    share: float


def inherit(state: ClassState, now: float, seen: Inheritance, ceiling: float, margin: float) -> int:
    """Start a local state (local clock) from the shared window last seen; ``ceiling``
    is the whole fleet's. Returns the grants it now holds that it did not.

    The window gets every grant seen (this host's and the others'), and the grants the
    others may have made between that look and the loss: no more than the shared
    spacing rule let through in that time nor than the window had room for, all counted
    at the loss (the latest they can have been made). Paced at ``share`` of the ceiling
    on top of that window, hosts that all do the same stay within the ceiling together
    in every window. The shared back-off (lowered rate, estimate, pause) carries over,
    scaled to the share.
    """
    window = WINDOW * (1.0 + margin)
    shared = seen.state
    grants = [min(now, t + seen.shift) for t in shared.recent if t + seen.shift > now - window]
    # When the shared store was surely gone: at the first failure, or (seen answering
    # after that, by a call already under way) now.
    gone = seen.lost_at if seen.lost_at >= seen.seen_at else now
    unseen = 0
    if gone > now - window:
        in_window = sum(1 for t in grants if gone - window < t <= gone)
        gap = max(0.0, gone - seen.seen_at)
        room = max(1, int(ceiling)) - in_window
        unseen = max(0, min(room, math.floor(2.0 * gap * ceiling) + 1))
    added = grants + [min(now, gone)] * unseen
    # Another process of this host already paces here: keep the stricter of the two.
    busy = state.last_grant > now - window
    if added:
        state.recent = sorted([*state.recent, *added])[-MAX_RECENT:]
        state.last_grant = max(state.last_grant, *added)
    for name in ("rate", "target"):
        theirs = getattr(shared, name)
        scaled = None if theirs is None else theirs * seen.share
        mine = getattr(state, name)
        if busy and mine is not None:
            scaled = mine if scaled is None else min(mine, scaled)
        setattr(state, name, scaled)
    state.paused_until = max(state.paused_until, shared.paused_until + seen.shift)
    state.last_throttle = max(state.last_throttle, shared.last_throttle + seen.shift)
    state.last_decrease = max(state.last_decrease, shared.last_decrease + seen.shift)
    return len(added)


def merge_grants(state: ClassState, now: float, grants: Sequence[float]) -> None:
    """Add grants this host made while the shared store was away (converted to the
    shared clock) to the shared window, so hosts back on it count them."""
    kept = [min(now, t) for t in grants if t > now - 2.0 * WINDOW]
    if kept:
        state.recent = sorted([*state.recent, *kept])[-MAX_RECENT:]
        state.last_grant = max(state.last_grant, *kept)


# Where the state lives.


@dataclass
class Held:
    """A class's state as a store hands it to an update, with the clock reading its
    times are compared with."""

    state: ClassState
    now: float
    # Share of the configured ceiling this host may use while this store serves:
    # 1.0, or less while a shared store is unreachable (and just after it returns).
    share: float = 1.0
    # Which clock ``now`` and the state's times are on: this host's monotonic clock
    # ("local") or the shared store's. A time remembered on one is meaningless on the other.
    clock: str = "local"
    # Set by a store that fails over (see :class:`Failover`): the budget to note on a
    # grant (shared state), the window to start from (local state, first use after the
    # shared store was lost) and this host's grants to bring back (shared state, first
    # use after it returned).
    host: str | None = None
    inherit: Inheritance | None = None
    returning: Returning | None = None
    inherited: int = 0


@dataclass(frozen=True)
class Returning:
    """Grants made on the local clock while the shared store was away, and a local
    clock reading taken before the shared store was asked (so a grant converted to the
    shared clock is never earlier than it was)."""

    asked_at: float
    grants: tuple[float, ...]


class StateStore(Protocol):
    """Storage of one class's state. ``update`` applies ``fn`` to the state under
    mutual exclusion with every pacer sharing the store, saves what it changed and
    returns its result. ``fn`` must act only on the state it is given: a store may
    run it again on a fresher state (optimistic concurrency)."""

    def update(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T: ...

    def close(self) -> None: ...


class StoreUnavailable(Exception):
    """A shared store cannot be reached (or answered nonsense); the pacer falls back."""


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = ClassState()

    def update(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T:
        with self._lock:
            return fn(Held(self._state, clock()))

    def close(self) -> None:
        pass


class Failover:
    """Health of a shared store, one for all classes of a pacer.

    While the store answers, it serves. When it fails, every call goes to the local
    store (a warning is logged once per outage), and one caller per ``retry_s`` tries
    the shared store again: a refused connection costs nothing, a dead host at most
    the client's connect timeout, paid by that one caller only. The first success
    switches back (logged once).

    The local store starts from the shared window as this host last saw it and paces
    at a share of the ceiling: ``1 / fleet_size``, or less when the shared state named
    more hosts lately (see :func:`inherit`). Back on the shared store, the grants made
    meanwhile join its window, and the share holds for ``retry_s`` and a window more:
    until the other hosts, still alone, have had their turn to come back.
    """

    def __init__(
        self,
        fleet_size: int,
        *,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "shared",
        event: str = "api.pacer.shared",
    ) -> None:
        if fleet_size < 1:
            raise ValueError("fleet_size must be >= 1")
        self.share = 1.0 / fleet_size
        self.name = name
        self._event = event
        self.retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_try = -math.inf
        self.outages = 0
        # When (this clock) the shared store last came back.
        self.restored_at = -math.inf
        # When the last outage began: the first failure (this clock).
        self.lost_at = -math.inf

    @property
    def mode(self) -> Literal["shared", "fallback"]:
        return "shared" if self._down_since is None else "fallback"

    @property
    def down_for(self) -> float | None:
        """Seconds since the shared store failed, or None while it serves."""
        since = self._down_since
        return None if since is None else max(0.0, self._clock() - since)

    def should_try(self) -> bool:
        with self._lock:
            if self._down_since is None:
                return True
            now = self._clock()
            if now < self._next_try:
                return False
            self._next_try = now + self.retry_s
            return True

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            first = self._down_since is None
            now = self._clock()
            if first:
                self._down_since = now
                self.lost_at = now
                self.outages += 1
            self._next_try = now + self.retry_s
        if first:
            log.warning(
                f"{self._event}_unavailable",
                store=self.name,
                error=type(exc).__name__,
                detail=str(exc)[:200],
                fallback_share=round(self.share, 4),
            )

    def succeeded(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            if since is not None:
                self.restored_at = self._clock()
        if since is not None:
            log.warning(
                f"{self._event}_restored",
                store=self.name,
                down_s=round(self._clock() - since, 3),
            )


class _BroughtBack(Exception):
    """Raised inside a local update that must not grant: the shared store took over."""


class _FailoverStore:
    """A shared store, and the local one that serves at a share of the ceiling while
    the shared one is unreachable (see :class:`Failover`)."""

    def __init__(
        self, shared: StateStore, local: StateStore, health: Failover, cls: str, host: str
    ) -> None:
        self._shared = shared
        self._local = local
        self._health = health
        self._cls = cls
        self._host = host
        self._lock = threading.Lock()
        # The shared state as last seen: (state, its time, the local time just after).
        self._seen: tuple[ClassState, float, float] | None = None
        # The outage this class went local in, and the last one whose grants it
        # brought back to the shared store.
        self._outage = 0
        self._brought_back = 0
        self._share = health.share

    def update(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T:
        while True:
            if self._health.should_try():
                try:
                    return self._from_shared(fn, clock)
                except StoreUnavailable as exc:
                    self._health.failed(exc)
            try:
                return self._from_local(fn, clock)
            except _BroughtBack:
                continue  # the shared store is back: ask it

    def _from_shared(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T:
        health = self._health
        share = 1.0
        if health.mode == "fallback" or clock() < health.restored_at + health.retry_s + 2 * WINDOW:
            # Back from an outage: other hosts may still be pacing alone for a while.
            share = self._fallback_share()
        with self._lock:
            outage = self._outage if self._outage > self._brought_back else 0
        seen: list[tuple[ClassState, float, float]] = []

        def shared(held: Held, returning: Returning | None = None) -> T:
            held.host, held.share, held.returning = self._host, share, returning
            result = fn(held)
            seen.append((held.state.copy(), held.now, clock()))
            return result

        if not outage:
            try:
                return self._shared.update(shared, clock)
            finally:
                self._saw(seen)

        def bring_back(local: Held) -> T:
            # Under the local store's lock, so no grant of this host is made on it
            # between reading its grants and the shared store counting them.
            grants = tuple(t for t in local.state.recent if t > health.lost_at)
            returning = Returning(clock(), grants)
            try:
                result = self._shared.update(lambda held: shared(held, returning), clock)
            finally:
                self._saw(seen)
            with self._lock:
                self._brought_back = max(self._brought_back, outage)
            health.succeeded()
            return result

        return self._local.update(bring_back, clock)

    def _from_local(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T:
        health = self._health
        with self._lock:
            start = self._outage != health.outages
            inheritance = None
            if start:
                self._outage = health.outages
                self._share = self._fallback_share_locked()
                if self._seen is not None:
                    state, shared_at, seen_at = self._seen
                    inheritance = Inheritance(
                        state, seen_at - shared_at, seen_at, health.lost_at, self._share
                    )
            share = self._share
        inherited: list[int] = []

        def local(held: Held) -> T:
            with self._lock:
                back = self._brought_back >= self._outage
            if back and health.mode == "shared":
                # This host's grants went back to the shared store after this caller
                # chose the local one: one granted here now would be counted by neither.
                raise _BroughtBack
            held.share, held.inherit = share, inheritance
            result = fn(held)
            inherited.append(held.inherited)
            return result

        result = self._local.update(local, clock)
        if start:
            log.info(
                "api.pacer.fallback",
                call_class=self._cls,
                share=round(share, 4),
                inherited=inherited[-1] if inherited else 0,
                last_seen_s=None
                if inheritance is None
                else round(max(0.0, clock() - inheritance.seen_at), 3),
            )
        return result

    def _saw(self, seen: list[tuple[ClassState, float, float]]) -> None:
        if not seen:
            return
        with self._lock:
            if self._seen is None or seen[-1][1] >= self._seen[1]:
                self._seen = seen[-1]

    def _fallback_share(self) -> float:
        with self._lock:
            return self._fallback_share_locked()

    def _fallback_share_locked(self) -> float:
        """``1 / fleet_size``, or less when the shared state named more hosts lately."""
        share = self._health.share
        if self._seen is not None:
            state, shared_at, _ = self._seen
            share = min(share, 1.0 / hosts_seen(state, shared_at, self._host))
        return share

    def close(self) -> None:
        try:
            self._shared.close()
        finally:
            self._local.close()


def budget_id(folder_fd: int) -> str:
    """The name of the budget a pacing folder holds: this machine and that folder."""
    try:
        with open("/etc/machine-id", "rb") as fh:
            machine = fh.read(64).strip()
    except OSError:
        machine = b""
    st = os.fstat(folder_fd)
    text = b"%s|%s|%d|%d" % (machine, socket.gethostname().encode(), st.st_dev, st.st_ino)
    return hashlib.sha256(text).hexdigest()[:16]


def default_pacing_dir() -> Path:
    """The per-user folder for shared pacing state, never a world-writable temp dir.

    In order: ``$RUNTIME_DIRECTORY/pacing`` (systemd's ``RuntimeDirectory=``, private
    to the service); ``$XDG_RUNTIME_DIR/syncd/pacing`` (the login session's 0700
    ``/run/user/UID``, used only if it belongs to this user); else
    ``$XDG_CACHE_HOME/syncd/pacing`` or ``~/.cache/syncd/pacing``. Every process of one
    user on the host finds the same folder, so they share one budget per key;
    different users do not share (each has its own folder), by design.
    """
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if os.path.isabs(runtime):
        return Path(runtime) / "pacing"
    xdg_runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg_runtime):
        try:
            st = os.stat(xdg_runtime)
        except OSError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
                return Path(xdg_runtime) / "syncd" / "pacing"
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(cache):
        return Path(cache) / "syncd" / "pacing"
    try:
        home = Path.home()
    except RuntimeError:
        raise PacingDirError(
            "no per-user folder for the shared pacing state (no runtime dir, no home); "
            "set limits.pacing_dir to a folder of this user"
        ) from None
    return home / ".cache" / "syncd" / "pacing"


def dir_problem(st: os.stat_result, euid: int) -> str | None:
    """Why a folder with this stat must not hold our pacing state, or None."""
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if st.st_uid != euid:
        return (
            f"belongs to uid {st.st_uid}, not to this user (uid {euid}): someone else could "
            "have prepared its files. Remove it, or set limits.pacing_dir to a folder of "
            "this user"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): they "
            "could plant files in it. Run `chmod go-w` on it, or set limits.pacing_dir to "
            "a folder of this user"
        )
    return None


def file_problem(st: os.stat_result, euid: int) -> str | None:
    """Why a file in the pacing folder must not be used, or None."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != euid:
        return f"belongs to uid {st.st_uid}, not to this user (uid {euid})"
    if st.st_nlink != 1:
        return "has other hard links"
    return None


class _PacingDir:
    """The checked pacing folder, held open: files are created relative to this
    descriptor, so the folder checked is the folder used even if a path component
    is swapped afterwards."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise PacingDirError(
                f"cannot create the pacing folder {path}: {exc.strerror}; "
                "set limits.pacing_dir to a folder this user can write"
            ) from None
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise PacingDirError(
                f"pacing folder {path} cannot be opened ({exc.strerror}); "
                "set limits.pacing_dir to a folder of this user"
            ) from None
        problem = dir_problem(os.fstat(self.fd), os.geteuid())
        if problem is not None:
            os.close(self.fd)
            raise PacingDirError(f"pacing folder {path} {problem}")

    def open_lock(self, name: str) -> int:
        """Open (creating it if new) a lock file, never through a symlink."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK
        for _ in range(3):
            try:
                fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=self.fd)
                break
            except FileExistsError:
                pass
            try:
                fd = os.open(name, flags, dir_fd=self.fd)
                break
            except FileNotFoundError:
                continue  # removed in between: create it
            except OSError as exc:
                raise PacingDirError(
                    f"pacing file {self.path / name} cannot be opened safely "
                    f"({exc.strerror}; a symlink?): remove it"
                ) from None
        else:
            raise PacingDirError(f"pacing file {self.path / name} keeps disappearing")
        problem = file_problem(os.fstat(fd), os.geteuid())
        if problem is not None:
            os.close(fd)
            raise PacingDirError(f"pacing file {self.path / name} {problem}: remove it")
        return fd

    def read(self, name: str) -> bytes:
        """The file's bytes, or b"" when it is missing or not a plain file of ours (it
        is then replaced on the next write, never followed)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self.fd)
        except OSError:
            return b""
        try:
            if file_problem(os.fstat(fd), os.geteuid()) is not None:
                return b""
            data = os.read(fd, MAX_STATE_BYTES + 1)
            return b"" if len(data) > MAX_STATE_BYTES else data
        finally:
            os.close(fd)

    def replace(self, name: str, data: bytes) -> None:
        """Atomically replace ``name`` with ``data``. Callers hold the lock, so one
        temporary name per file is enough; a leftover from a crash is removed first."""
        tmp = f".{name}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self.fd)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=self.fd
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _FileStore:
    """State in ``<name>.json``, under an exclusive ``flock`` of ``<name>.lock``.

    The lock lives in its own file because the state file is replaced on every write.
    The thread lock is needed too: flock is per open file description, so threads
    sharing this descriptor would not exclude each other through it.
    """

    def __init__(self, folder: _PacingDir, name: str) -> None:
        self._folder = folder
        self._name = f"{name}.json"
        self._lock = threading.Lock()
        self._fd: int | None = folder.open_lock(f"{name}.lock")

    def update(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T:
        with self._lock:
            fd = self._fd
            if fd is None:
                raise ValueError("pacer is closed")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = self._folder.read(self._name)
                try:
                    state = ClassState.from_json(raw.decode()) if raw else ClassState()
                except (ValueError, TypeError, UnicodeDecodeError):
                    # A writer died mid-write, or someone edited it: pacing state is cheap
                    # to rebuild, and not to be trusted.
                    state = ClassState()
                result = fn(Held(state, clock()))
                data = state.to_json().encode()
                if data != raw:
                    self._folder.replace(self._name, data)
                return result
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Pacer:
    """Adaptive per-class rate limiter.

    ``grant(cls)`` blocks until a request of that class may be sent; ``mark_sent``
    says when it actually left; report the outcome with ``on_throttled`` (a 429) or
    ``on_success``, from the same thread (the pacer remembers, per thread, the count
    each request went out with).

    The state lives in ``stores`` if given, else in files under ``state_dir`` (checked
    and created private; :class:`PacingDirError` if it is not safe), else in memory.
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
        stores: Mapping[CallClass, StateStore] | None = None,
        host: str | None = None,
    ) -> None:
        self._ceilings = {cls: float(ceilings[cls]) for cls in CALL_CLASSES}
        self._margin = margin
        self._tuning = tuning or AdaptiveTuning()
        self._clock = clock
        self._sleep = sleep
        self._local = threading.local()
        self._folder: _PacingDir | None = None
        self._health: Failover | None = None
        self._stores: dict[CallClass, StateStore] = {}
        if stores is not None:
            self._stores = {cls: stores[cls] for cls in CALL_CLASSES}
        elif state_dir is not None:
            self._folder = _PacingDir(state_dir)
            try:
                for cls in CALL_CLASSES:
                    self._stores[cls] = _FileStore(self._folder, f"{key_fingerprint}-{cls}")
            except BaseException:
                self.close()
                raise
        else:
            self._stores = {cls: MemoryStore() for cls in CALL_CLASSES}
        # Names this pacer's local budget in a shared state: every process pacing on
        # one folder is one budget (one host), a pacer in memory is its own.
        self.host = host or (
            budget_id(self._folder.fd) if self._folder is not None else secrets.token_hex(8)
        )

    def _apply(self, cls: CallClass, fn: Callable[[ClassState, float, float, str], T]) -> T:
        """Run ``fn(state, now, ceiling, clock)`` on the class's state in its store."""
        full = self._ceilings[cls]
        tuning = self._tuning

        def run(held: Held) -> T:
            state, now = held.state, held.now
            if is_implausible(state, now, tuning):
                state.__dict__.update(ClassState().__dict__)
            if held.inherit is not None:
                held.inherited = inherit(state, now, held.inherit, full, self._margin)
            if held.returning is not None:
                back = held.returning
                merge_grants(state, now, [t - back.asked_at + now for t in back.grants])
            last_grant = state.last_grant
            result = fn(state, now, full * held.share, held.clock)
            if held.host is not None and state.last_grant > last_grant:
                note_host(state, held.host, now)
            return result

        return self._stores[cls].update(run, self._clock)

    def _remember(self, cls: CallClass, sent_at: float, count: int, clock: str) -> None:
        self._local.__dict__[cls] = (sent_at, count, clock)

    def _recall(self, cls: CallClass) -> tuple[float, int, str] | None:
        sent: tuple[float, int, str] | None = self._local.__dict__.pop(cls, None)
        return sent

    @staticmethod
    def _on_clock(
        sent: tuple[float, int, str] | None, clock: str
    ) -> tuple[float | None, int | None]:
        """What a request remembered on ``clock`` says (nothing, on another clock)."""
        if sent is None or sent[2] != clock:
            return None, None
        return sent[0], sent[1]

    def grant(self, cls: CallClass) -> tuple[float, float]:
        """Block until a request of ``cls`` may go. Returns the grant time (to pass to
        :meth:`mark_sent` once the request has actually left) and the seconds waited."""
        tuning, margin = self._tuning, self._margin

        def attempt(
            state: ClassState, now: float, ceiling: float, clock: str
        ) -> tuple[float, float, int, str]:
            wait = try_grant(state, now, ceiling, tuning, margin)
            return wait, now, window_count(state, now) if wait <= 0.0 else 0, clock

        waited = 0.0
        while True:
            wait, now, count, clock = self._apply(cls, attempt)
            if wait <= 0.0:
                self._remember(cls, now, count, clock)
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
        sent = self._recall(cls)

        def note(
            state: ClassState, now: float, _ceiling: float, clock: str
        ) -> tuple[float, int, str] | None:
            if sent is not None and sent[2] != clock:
                # Granted on the other clock: the shared store went away (or came back)
                # since. The grant is in the other window, and in this one only at its
                # grant time if at all: count the request here too, from when it left.
                count_late(state, now)
                return now, window_count(state, now), clock
            note_sent(state, granted_at, now)
            if now > granted_at and now in state.recent:
                return now, window_count(state, now), clock
            return sent

        moved = self._apply(cls, note)
        if moved is not None:
            self._remember(cls, *moved)

    def on_throttled(self, cls: CallClass, retry_after: float | None = None) -> None:
        """A 429. It lowers the rate only when it says we are too fast; otherwise the
        caller's retry (with backoff, obeying ``retry_after``) is all that happens."""
        sent = self._recall(cls)
        tuning = self._tuning

        def note(
            state: ClassState, now: float, ceiling: float, clock: str
        ) -> tuple[Verdict, float | None, float | None, float, int | None]:
            sent_at, count = self._on_clock(sent, clock)
            verdict = note_throttled(
                state, now, ceiling, tuning, retry_after, count=count, sent_at=sent_at
            )
            return verdict, state.rate, state.target, state.paused_until - now, count

        verdict, rate, target, pause, count = self._apply(cls, note)
        if verdict == "lowered":
            log.warning(
                "api.pacer.slow_down",
                call_class=cls,
                rate=round(rate or 0.0, 3),
                ceiling_estimate=round(target or 0.0, 3),
                pause=round(max(pause, 0.0), 3),
            )
        else:
            log.debug("api.pacer.throttled", call_class=cls, verdict=verdict, count=count)

    def on_success(self, cls: CallClass) -> None:
        sent = self._recall(cls)
        tuning = self._tuning

        def note(
            state: ClassState, now: float, ceiling: float, clock: str
        ) -> tuple[bool, float | None]:
            sent_at, count = self._on_clock(sent, clock)
            changed = note_success(state, now, ceiling, tuning, count=count, sent_at=sent_at)
            return changed, state.rate

        changed, rate = self._apply(cls, note)
        if changed:
            log.debug(
                "api.pacer.recover", call_class=cls, rate=None if rate is None else round(rate, 3)
            )

    def snapshot(self, cls: CallClass) -> ClassState:
        """A copy of the class's current state (diagnostics and tests)."""
        return self._apply(cls, lambda state, *_: ClassState.from_json(state.to_json()))

    def current_rate(self, cls: CallClass) -> float:
        tuning = self._tuning
        return self._apply(
            cls, lambda state, _now, ceiling, _c: effective_rate(state, ceiling, tuning)
        )

    def share_through(
        self,
        shared: Mapping[CallClass, StateStore],
        *,
        fleet_size: int,
        retry_s: float = 1.0,
        name: str = "shared",
    ) -> Failover:
        """Pace through ``shared`` stores (one per class, common to every host on the
        key), keeping this pacer's own stores as the fallback while they are
        unreachable: from the shared window last seen, at ``1 / fleet_size`` of the
        ceiling or less (see :class:`Failover`). Returns the health, which
        :attr:`sharing` reports too."""
        health = Failover(fleet_size, retry_s=retry_s, clock=self._clock, name=name)
        self._stores = {
            cls: _FailoverStore(shared[cls], self._stores[cls], health, cls, self.host)
            for cls in CALL_CLASSES
        }
        self._health = health
        return health

    @property
    def sharing(self) -> Literal["local", "shared", "fallback"]:
        """Where the budget lives now: this host only ("local"), the shared store
        ("shared"), or this host at a share of the ceiling because the shared store is
        unreachable ("fallback")."""
        return "local" if self._health is None else self._health.mode

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        if self._folder is not None:
            self._folder.close()
