"""The pacing rules: what a grant, a send, a 429 or a success does to a class's state.

Pure functions of a :class:`~syncd.api.pacing_state.ClassState` and a clock reading
(``now``, injected: the caller's monotonic clock, or a shared store's): grant now or
wait (:func:`try_grant`, the provider's window mirrored at the ceiling), which 429
means we are too fast and what follows (:func:`note_throttled`: evidence, verdict,
lowered rate and estimate, Retry-After holds), what a success proves
(:func:`note_success`: recovery, probing, a verdict undone), the decay of an idle
estimate (:func:`relax_idle`), the reset of an absurd state (:func:`is_implausible`),
and, for a store shared between hosts, the window a host inherits when the shared
store is lost and the grants it brings back (:func:`inherit`, :func:`merge_grants`).
The stores (:mod:`syncd.api.pacing_store`) decide where the state lives; these decide
what happens to it. See :mod:`syncd.api.pacing` for the whole mechanism.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from syncd.api.pacing_state import (
    FUTURE_SLACK,
    HOSTS_KEEP,
    MAX_HOSTS,
    MAX_RECENT,
    REFUSED_KEEP,
    UNSENT_KEEP,
    WINDOW,
    AdaptiveTuning,
    ClassState,
)

Verdict = Literal["isolated", "evidence", "burst", "lowered"]


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
        *state.unsent,
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
    lengths = (len(state.recent), len(state.unsent), len(state.refused), len(state.evidence))
    if max(lengths) > MAX_RECENT:
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
    state.unsent = [t for t in state.unsent if t > now - UNSENT_KEEP]
    earliest = state.paused_until
    if ceiling >= 1.0:
        # Mirror the provider's own rule at the configured ceiling: at most N grants in
        # any window, the window widened by the margin for arrival jitter. Unlike even
        # spacing this lets a quiet class start with a burst, which buys the margin back.
        n = int(ceiling)
        window = n / ceiling * (1.0 + margin)
        recent = [t for t in _leaving(state, now) if t > now - window]
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
    unsent = set(state.unsent)
    state.recent = [t for t in state.recent if t > cutoff or t in unsent]
    state.recent.append(now)
    return 0.0


def await_send(state: ClassState, granted_at: float) -> None:
    """The request granted at ``granted_at`` is on its way, but may leave much later (a
    connection to make): until :func:`note_sent` or :func:`note_unsent`, every window
    reckoned counts it as leaving then."""
    state.unsent.append(granted_at)


def _leaving(state: ClassState, now: float) -> list[float]:
    """The grant times, sorted, each of a request not yet sent taken as ``now``: it
    leaves no earlier, so the window it falls in is not over yet."""
    if not state.unsent:
        return state.recent
    waiting = Counter(state.unsent)
    times = []
    for t in state.recent:
        if waiting[t] > 0:
            waiting[t] -= 1
            t = max(t, now)
        times.append(t)
    return sorted(times)


def note_sent(state: ClassState, granted_at: float, sent_at: float) -> None:
    """The request granted at ``granted_at`` left only at ``sent_at``: count it from
    then, so a thread held up between grant and send cannot bunch the next window."""
    if granted_at in state.unsent:
        state.unsent.remove(granted_at)
    if sent_at <= granted_at:
        return
    try:
        i = state.recent.index(granted_at)
    except ValueError:
        return
    state.recent[i] = sent_at
    state.recent.sort()
    state.last_grant = max(state.last_grant, sent_at)


def note_unsent(state: ClassState, granted_at: float) -> None:
    """The request granted at ``granted_at`` never left (its connection failed, or the
    call was cancelled): its place in the window is free again."""
    if granted_at in state.unsent:
        state.unsent.remove(granted_at)
        if granted_at in state.recent:
            state.recent.remove(granted_at)


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
    return _too_fast(state, now, ceiling, tuning, retry_after, count=count, proven=proven)


def _too_fast(
    state: ClassState,
    now: float,
    ceiling: float,
    tuning: AdaptiveTuning,
    retry_after: float | None,
    *,
    count: int,
    proven: int,
) -> Literal["burst", "lowered"]:
    """The verdict of :func:`note_throttled` once its evidence says we are too fast:
    pause the class, and lower the rate and the estimate (or tighten the estimate
    within the same burst). ``count`` is the 429's, ``proven`` the count proven lately."""
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
