"""Losing the shared pacing store, and getting it back, within the account's rate.

Hosts pacing through Redis share one window. When Redis goes, each host goes on from
the window it last saw (its own grants and the others'), at a share of the rate split
between the hosts it knew; when Redis returns, each brings back the grants it made
meanwhile. In no second, before, during or after, do the hosts together exceed the
ceiling.

The pacers here run on the wall clock, the clock of Redis's TIME on this machine, so
every grant time, shared or local, is on one clock and can be counted per second.
"""

from __future__ import annotations

import bisect
import threading
import time

import pytest

from syncd.api.pacing import (
    AdaptiveTuning,
    ClassState,
    Inheritance,
    Pacer,
    hosts_seen,
    inherit,
    note_host,
    try_grant,
)
from syncd.api.pacing_redis import connect, share_pacer
from tests.helpers import wait_for
from tests.redis_fixture import RedisServer, redis_server

__all__ = ["redis_server"]

LIMIT = 20
CEILINGS = {"upload": float(LIMIT), "read": 20.0, "delete": 10.0}


def busiest(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(
        (i - bisect.bisect_right(times, t - window) + 1 for i, t in enumerate(times)), default=0
    )


class Fleet:
    """Hosts (pacers with their own local stores) granting uploads flat out."""

    def __init__(self, server: RedisServer, hosts: int, fleet_size: int) -> None:
        self.pacers = []
        for _ in range(hosts):
            pacer = Pacer(CEILINGS, clock=time.time)
            share_pacer(pacer, connect(server.url), "fp", fleet_size=fleet_size, retry_s=0.3)
            self.pacers.append(pacer)
        self.grants: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._grant, args=(p,), daemon=True)
            for p in self.pacers
            for _ in range(2)
        ]

    def _grant(self, pacer: Pacer) -> None:
        while not self._stop.is_set():
            at, _ = pacer.grant("upload")
            pacer.mark_sent("upload", at)
            pacer.on_success("upload")
            with self._lock:
                self.grants.append(at)

    def count(self, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for t in self.grants if t >= since)

    def __enter__(self) -> Fleet:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


@pytest.mark.parametrize("fleet_size", [2, 1])
def test_losing_and_regaining_redis_stays_within_the_ceiling(
    redis_server: RedisServer, fleet_size: int
) -> None:
    with Fleet(redis_server, 2, fleet_size) as fleet:
        wait_for(lambda: fleet.count() >= 3 * LIMIT, timeout=60, what="shared grants")
        assert redis_server.process is not None
        redis_server.process.kill()  # dies: refused from this instant
        redis_server.stop()
        lost = time.time()
        wait_for(
            lambda: (
                all(p.sharing == "fallback" for p in fleet.pacers)
                and fleet.count(lost) >= 2 * LIMIT
            ),
            timeout=60,
            what="grants while Redis is away",
        )
        redis_server.start()
        back = time.time()
        wait_for(
            lambda: (
                all(p.sharing == "shared" for p in fleet.pacers) and fleet.count(back) >= 3 * LIMIT
            ),
            timeout=60,
            what="grants with Redis back",
        )
    grants = sorted(fleet.grants)
    # Before, across the loss, while away (the two split the rate), across the return.
    assert busiest(grants) <= LIMIT, busiest(grants)
    # The budget is still used while Redis is away: about half the rate each.
    away = [t for t in grants if lost + 1.5 <= t < back]
    if len(away) >= 4:
        rate = (len(away) - 1) / (away[-1] - away[0])
        assert rate >= 0.6 * LIMIT, rate


# ------------------------------------------------------------------ the pure rules


def full_window(now: float, count: int, spacing: float) -> ClassState:
    state = ClassState()
    state.recent = [now - i * spacing for i in reversed(range(count))]
    state.last_grant = state.recent[-1]
    return state


def test_the_local_window_starts_from_the_shared_one() -> None:
    tuning = AdaptiveTuning()
    shared = full_window(1000.0, LIMIT, 0.04)  # 20 grants in the last 0.76 s, shared clock
    # Seen at local 50.0 (shared 1000.0), lost at once.
    seen = Inheritance(shared, shift=-950.0, seen_at=50.0, lost_at=50.0, share=0.5)
    local = ClassState()
    added = inherit(local, 50.0, seen, float(LIMIT), 0.03)
    assert added >= LIMIT
    # A window already full: nothing more until the shared grants leave it.
    ceiling = LIMIT * seen.share
    assert try_grant(local, 50.0, ceiling, tuning, 0.03) > 0.0
    granted = []
    now = 50.0
    while now < 53.0:
        wait = try_grant(local, now, ceiling, tuning, 0.03)
        if wait <= 0.0:
            granted.append(now)
        now += max(wait, 0.001)
    assert granted, "the fallback never granted"
    # Two hosts doing the same, on top of the window they shared: never above the ceiling.
    before = [t - 950.0 for t in shared.recent]
    assert busiest(before + granted + granted) <= LIMIT
    assert busiest(granted) <= ceiling


def test_grants_the_others_may_have_made_unseen_are_counted() -> None:
    shared = ClassState()  # nobody granted anything when this host last looked ...
    seen = Inheritance(shared, shift=0.0, seen_at=10.0, lost_at=10.5, share=0.5)
    local = ClassState()
    # ... but half a second passed before the loss: the others may have filled it.
    assert inherit(local, 10.6, seen, float(LIMIT), 0.03) == LIMIT
    assert try_grant(local, 10.6, LIMIT * 0.5, AdaptiveTuning(), 0.03) > 0.0
    # Seen just before the loss: at most the one grant the spacing lets through.
    fresh = Inheritance(shared, shift=0.0, seen_at=10.5, lost_at=10.5, share=0.5)
    assert inherit(ClassState(), 10.6, fresh, float(LIMIT), 0.03) == 1


def test_a_lowered_shared_rate_is_split_too() -> None:
    shared = ClassState(rate=8.0, target=10.0, paused_until=1001.0)
    seen = Inheritance(shared, shift=-950.0, seen_at=50.0, lost_at=50.0, share=0.5)
    local = ClassState(rate=2.0, last_grant=-100.0)  # an old outage's, long idle
    inherit(local, 50.0, seen, float(LIMIT), 0.03)
    assert local.rate == 4.0 and local.target == 5.0
    assert local.paused_until == pytest.approx(51.0)


def test_hosts_seen_lately_are_counted() -> None:
    state = ClassState()
    note_host(state, "a", 100.0)
    note_host(state, "b", 400.0)
    note_host(state, "c", 800.0)
    # "a" was last seen longer than HOSTS_KEEP ago: forgotten, unless it is me.
    assert hosts_seen(state, 800.0, "b") == 2
    assert hosts_seen(state, 800.0, "a") == 3
    assert set(ClassState.from_json(state.to_json()).hosts) == {"b", "c"}
