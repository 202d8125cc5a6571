"""The pacer's rules on a fake clock, and its shared file state."""

from __future__ import annotations

import bisect
import heapq
import itertools
import multiprocessing as mp
import random
import threading
import time
from pathlib import Path

import pytest

from syncd.api.pacing import (
    DEFAULT_MARGIN,
    AdaptiveTuning,
    ClassState,
    Pacer,
    note_success,
    note_throttled,
    try_grant,
)
from syncd.emulator.limits import RateLimiter

TUNING = AdaptiveTuning()
MARGIN = DEFAULT_MARGIN


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """Most events in any half-open window (t - window, t], as the server counts."""
    times = sorted(times)
    best = 0
    for i, t in enumerate(times):
        first = bisect.bisect_right(times, t - window)
        best = max(best, i - first + 1)
    return best


def test_at_the_ceiling_a_widened_window_holds_at_most_n_grants() -> None:
    clock = FakeClock()
    pacer = Pacer({"upload": 20, "read": 20, "delete": 10}, clock=clock, sleep=clock.sleep)
    grants = []
    for _ in range(100):
        pacer.acquire("delete")
        grants.append(clock.now)
    # A quiet class starts with a burst at twice the rate, then every window of
    # 1 + margin s holds <= N.
    assert grants[9] - grants[0] == pytest.approx(9 * 0.5 / 10)
    assert max_in_window(grants) == 10
    assert max_in_window(grants, window=1 + MARGIN - 1e-6) == 10
    assert max_in_window(grants, window=1 + MARGIN + 1e-6) > 10
    # Throughput stays within the margin of the ceiling.
    assert len(grants) / (grants[-1] - grants[0] + (1 + MARGIN) - 9 * 0.05) == pytest.approx(
        10 / (1 + MARGIN)
    )


def test_late_wakeups_only_widen_gaps() -> None:
    clock = FakeClock()
    rng = random.Random(3)

    def sloppy_sleep(seconds: float) -> None:
        clock.now += seconds + rng.uniform(0, 0.03)

    pacer = Pacer({"upload": 20, "read": 20, "delete": 10}, clock=clock, sleep=sloppy_sleep)
    grants = []
    for _ in range(200):
        pacer.acquire("upload")
        grants.append(clock.now)
    assert max_in_window(grants, window=1 + MARGIN - 1e-6) <= 20


def test_below_the_ceiling_grants_are_evenly_spaced() -> None:
    clock = FakeClock()
    pacer = Pacer({"upload": 20, "read": 20, "delete": 10}, clock=clock, sleep=clock.sleep)
    pacer.on_throttled("upload", 0.0)  # rate drops below the ceiling
    rate = pacer.current_rate("upload")
    grants = []
    for _ in range(30):
        pacer.acquire("upload")
        grants.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(grants)]
    assert min(gaps) == pytest.approx((1 / rate) * (1 + MARGIN))


def test_classes_are_independent() -> None:
    clock = FakeClock()
    pacer = Pacer({"upload": 2, "read": 2, "delete": 1}, clock=clock, sleep=clock.sleep)
    assert pacer.acquire("upload") == 0
    assert pacer.acquire("read") == 0
    assert pacer.acquire("delete") == 0
    assert pacer.acquire("upload") == pytest.approx(0.25)
    assert pacer.acquire("upload") == pytest.approx(1 + MARGIN - 0.25)


def test_burst_of_429s_counts_as_one_decrease() -> None:
    state = ClassState()
    now = 100.0
    for i in range(10):
        assert try_grant(state, now + i * 0.06, 20, TUNING, MARGIN) == 0
    t = now + 0.6
    assert note_throttled(state, t, 20, TUNING, None) is True
    rate_after_first = state.rate
    # 10 requests went out in the window, so at most 9 fit: rate halves from there.
    assert state.target == 9
    assert rate_after_first == pytest.approx(4.5)
    for dt in (0.05, 0.2, 0.9):
        assert note_throttled(state, t + dt, 20, TUNING, None) is False
    assert state.rate == rate_after_first
    # Each 429 of the burst pushes the pause to 1 s after itself.
    assert state.paused_until == pytest.approx(t + 0.9 + 1.0)


def test_retry_after_sets_the_pause() -> None:
    state = ClassState()
    try_grant(state, 10.0, 20, TUNING, MARGIN)
    note_throttled(state, 10.0, 20, TUNING, 3.0)
    assert try_grant(state, 12.9, 20, TUNING, MARGIN) == pytest.approx(0.1)
    assert try_grant(state, 13.0, 20, TUNING, MARGIN) == 0


def test_repeated_throttling_doubles_the_pause() -> None:
    state = ClassState()
    t = 50.0
    pauses = []
    for _ in range(4):
        try_grant(state, t, 20, TUNING, MARGIN)
        note_throttled(state, t, 20, TUNING, None)
        pauses.append(state.paused_until - t)
        t = state.paused_until + 0.1
    assert pauses == pytest.approx([1.0, 2.0, 4.0, 8.0])


def test_recovery_to_estimate_then_slow_probe() -> None:
    state = ClassState()
    t = 0.0
    for i in range(4):
        assert try_grant(state, t + i * 0.06, 20, TUNING, MARGIN) == 0
    t = 0.2
    note_throttled(state, t, 20, TUNING, None)
    assert state.target == 3
    assert state.rate == pytest.approx(1.5)
    for _ in range(10):
        t += 0.5
        note_success(state, t, 20, TUNING)
    assert state.rate == pytest.approx(3.0)
    # Quiet but not yet for probe_quiet: stays at the estimate.
    t = 0.2 + TUNING.probe_quiet - 1
    note_success(state, t, 20, TUNING)
    assert state.rate == pytest.approx(3.0)
    t = 0.2 + TUNING.probe_quiet + 0.1
    note_success(state, t, 20, TUNING)
    assert state.rate == pytest.approx(3.0 * TUNING.probe_factor)
    # At most one probe step per probe_interval.
    note_success(state, t + 0.1, 20, TUNING)
    assert state.rate == pytest.approx(3.0 * TUNING.probe_factor)
    # Long quiet: back to the configured ceiling, estimate forgotten.
    for k in range(200):
        note_success(state, t + 1.0 * (k + 1), 20, TUNING)
    assert state.rate is None and state.target is None


def simulate(
    *, server_limit: int, ceiling: float, uploads: int, workers: int, seed: int = 0
) -> tuple[int, int, float]:
    """Discrete-event run of workers sharing one pacer against a sliding-window server.

    Returns (requests, throttled, duration).
    """
    rng = random.Random(seed)
    state = ClassState()
    limiter = RateLimiter()
    events: list[tuple[float, int, str]] = [(0.0, w, "ready") for w in range(workers)]
    heapq.heapify(events)
    done = requests = throttled = 0
    t = 0.0
    while done < uploads:
        t, worker, kind = heapq.heappop(events)
        if kind == "ready":
            wait = try_grant(state, t, ceiling, TUNING, MARGIN)
            if wait > 0:
                heapq.heappush(events, (t + wait + rng.uniform(0, 0.002), worker, "ready"))
                continue
            requests += 1
            arrival = t + rng.uniform(0.001, 0.004)
            refused = limiter.try_acquire("acct", "upload", server_limit, now=arrival)
            outcome = "throttled" if refused is not None else "ok"
            heapq.heappush(events, (arrival + rng.uniform(0.005, 0.03), worker, outcome))
        elif kind == "throttled":
            throttled += 1
            note_throttled(state, t, ceiling, TUNING, None)
            backoff = rng.uniform(0, 0.5)
            heapq.heappush(events, (t + backoff, worker, "ready"))
        else:
            done += 1
            note_success(state, t, ceiling, TUNING)
            heapq.heappush(events, (t, worker, "ready"))
    return requests, throttled, t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adapts_to_a_lower_provider_limit(seed: int) -> None:
    requests, throttled, duration = simulate(
        server_limit=3, ceiling=20, uploads=150, workers=8, seed=seed
    )
    assert throttled <= 0.1 * requests
    # Close to the provider's 3/s once adapted.
    assert duration < 150 / 3 * 1.35


def test_no_throttling_when_configured_at_the_limit() -> None:
    _requests, throttled, duration = simulate(server_limit=20, ceiling=20, uploads=400, workers=16)
    assert throttled == 0
    assert duration < 400 / 20 * 1.05


def test_stale_state_from_before_a_reboot_is_reset() -> None:
    clock = FakeClock(start=5.0)
    pacer = Pacer({"upload": 1, "read": 1, "delete": 1}, clock=clock, sleep=clock.sleep)
    with pacer._state("upload") as (state, _now):
        state.last_grant = 1e6
        state.paused_until = 1e7
    assert pacer.acquire("upload") == 0


def test_file_state_is_shared_between_pacers(tmp_path: Path) -> None:
    a = Pacer({"upload": 5, "read": 5, "delete": 5}, state_dir=tmp_path, key_fingerprint="k1")
    b = Pacer({"upload": 5, "read": 5, "delete": 5}, state_dir=tmp_path, key_fingerprint="k1")
    other = Pacer({"upload": 5, "read": 5, "delete": 5}, state_dir=tmp_path, key_fingerprint="k2")
    try:
        for _ in range(5):  # the whole window's budget, taken by a
            a.acquire("read")
        start = time.monotonic()
        b.acquire("read")
        # The fifth grant came 4 half-spacings after the first; the sixth waits for
        # the first to leave the widened window.
        assert time.monotonic() - start >= (1 + MARGIN) - 4 * 0.1 - 0.05
        start = time.monotonic()
        other.acquire("read")
        assert time.monotonic() - start < 0.05
        a.on_throttled("upload", 0.5)
        seen = b.snapshot("upload")
        assert (seen.target, seen.rate) == pytest.approx((2.5, 1.25))
        assert seen.paused_until > time.monotonic()
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "k1-read.json",
            "k1-upload.json",
            "k2-read.json",
        ]
    finally:
        for p in (a, b, other):
            p.close()


def test_corrupt_state_file_is_rebuilt(tmp_path: Path) -> None:
    (tmp_path / "k-upload.json").write_text("{not json")
    pacer = Pacer({"upload": 5, "read": 5, "delete": 5}, state_dir=tmp_path, key_fingerprint="k")
    try:
        assert pacer.acquire("upload") == 0
        assert ClassState.from_json((tmp_path / "k-upload.json").read_text()).last_grant > 0
    finally:
        pacer.close()


def _grant_worker(state_dir: str, count: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    pacer = Pacer(
        {"upload": 20, "read": 20, "delete": 10},
        state_dir=Path(state_dir),
        key_fingerprint="shared",
    )
    grants = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(count):
            pacer.acquire("upload")
            with lock:
                grants.append(time.monotonic())

    threads = [threading.Thread(target=run) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    out.put(grants)


def test_processes_and_threads_share_one_budget(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_grant_worker, args=(str(tmp_path), 10, out)) for _ in range(3)]
    for p in procs:
        p.start()
    grants = [t for _ in procs for t in out.get(timeout=60)]
    for p in procs:
        p.join(timeout=10)
    assert len(grants) == 120
    # CLOCK_MONOTONIC is host-wide, so the processes' readings are comparable.
    assert max_in_window(grants) <= 20
    # Read after acquire() returned, so a few ms of scheduling noise on each side.
    assert max_in_window(grants, window=1 + MARGIN - 0.02) <= 20
