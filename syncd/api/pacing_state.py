"""What the pacing state of one call class holds, and which stored state is read at all.

:class:`ClassState` is everything the pacer knows about one class (grant times, the
lowered rate and the estimate, the pause, the 429 evidence and the proofs, the hosts
seen lately); :class:`AdaptiveTuning` holds the constants the rules apply to it. A
state is stored as JSON (a file, or a Redis hash) and parsed strictly: anything not
finite and well typed is refused (``ValueError``), and the store then starts afresh
rather than obey it. What the rules do with a state is in :mod:`syncd.api.pacing_rules`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from syncd.api.models import CallClass

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
# A grant whose request has not left after this long is forgotten: its process died
# between the grant and the send (a connection gives up sooner: 10 s by default), or
# the shared store it was granted from went away in between.
UNSENT_KEEP = 30.0
# A shared state remembers each host granted a request within this long: the hosts that
# may still be sending when the shared store is lost, and so share what is left of it.
HOSTS_KEEP = 600.0
MAX_HOSTS = 256


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
    # Those of them whose request has not left yet (its connection is being made):
    # each counts as leaving now in every window reckoned until it leaves or is given
    # up, however long ago it was granted.
    unsent: list[float] = field(default_factory=list)
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
    # In the store of a byte bucket (upload bytes per second): when the bytes granted so
    # far would have left at the cap (see syncd.api.bandwidth).
    bytes_due: float = -math.inf

    def copy(self) -> ClassState:
        return replace(
            self,
            recent=list(self.recent),
            unsent=list(self.unsent),
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
            "bytes_due",
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
        state.unsent = [_finite(t) for t in _list(raw.get("unsent"))]
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
