"""The pacer's rules on a fake clock, and its shared file state."""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import multiprocessing as mp
import random
import threading
import time
from pathlib import Path

import pytest

from syncd.api.pacing import (
    DEFAULT_MARGIN,
    UNSENT_KEEP,
    AdaptiveTuning,
    ClassState,
    Held,
    MemoryStore,
    Pacer,
    await_send,
    effective_rate,
    is_implausible,
    note_sent,
    note_success,
    note_throttled,
    note_unsent,
    relax_idle,
    try_grant,
    window_count,
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


@pytest.mark.parametrize("seed", range(4))
def test_a_request_that_leaves_long_after_its_grant_never_crowds_a_window(seed: int) -> None:
    """A request may leave well after its grant (its connection takes seconds over a
    lossy link, or its thread waits for the interpreter): the grants made meanwhile
    count it as leaving then, so the server's sliding window never sees more than N."""
    rng = random.Random(seed)
    state, limiter = ClassState(), RateLimiter()
    events: list[tuple[float, int, str, float]] = [(0.0, w, "ready", 0.0) for w in range(8)]
    heapq.heapify(events)
    sends: list[float] = []
    refused = 0
    while len(sends) < 400:
        t, worker, kind, granted_at = heapq.heappop(events)
        if kind == "ready":
            wait = try_grant(state, t, 20, TUNING, MARGIN)
            if wait > 0:
                heapq.heappush(events, (t + wait, worker, "ready", 0.0))
                continue
            await_send(state, t)
            slow = rng.random() < 0.2
            delay = rng.uniform(0.5, 2.5) if slow else rng.uniform(0.0, 0.005)
            heapq.heappush(events, (t + delay, worker, "send", t))
        else:
            note_sent(state, granted_at, t)
            sends.append(t)
            refused += limiter.try_acquire("acct", "upload", 20, now=t) is not None
            heapq.heappush(events, (t + rng.uniform(0.0, 0.05), worker, "ready", 0.0))
    assert max_in_window(sends) <= 20
    assert refused == 0
    # A request on its way holds its place until it leaves: a fifth of them taking
    # 1.5 s on average costs a quarter of the pace (400 at 20/s would take 20.6 s).
    assert sends[-1] < 400 / 20 * (1 + MARGIN) * 1.4


def grant_at(state: ClassState, t: float) -> float:
    """The time of the next grant from ``t`` (the request then on its way)."""
    while (wait := try_grant(state, t, 20, TUNING, MARGIN)) > 0.0:
        t += wait
    await_send(state, t)
    return t


def test_a_grant_whose_request_never_left_gives_its_place_back() -> None:
    state = ClassState()
    t = 0.0
    grants = []
    for _ in range(20):
        t = grant_at(state, t)
        grants.append(t)
    for g in grants[:15]:
        note_sent(state, g, g)
    # Five still on their way count as leaving now: the window is full until the
    # first of the sent ones leaves it.
    assert try_grant(state, t + 0.1, 20, TUNING, MARGIN) == pytest.approx(
        grants[0] + 1 + MARGIN - (t + 0.1)
    )
    for g in grants[15:]:
        note_unsent(state, g)  # their connections failed: nothing reached the server
    assert try_grant(state, t + 0.1, 20, TUNING, MARGIN) == 0.0


def test_a_grant_of_a_process_that_died_before_sending_is_forgotten() -> None:
    state = ClassState()
    t = 0.0
    for _ in range(20):
        t = grant_at(state, t)
    # Never sent, never given back: they hold the window while they may still leave ...
    assert try_grant(state, t + UNSENT_KEEP / 2, 20, TUNING, MARGIN) > 0.0
    # ... and no longer once no connection could still be on its way.
    assert try_grant(state, UNSENT_KEEP + 1.0, 20, TUNING, MARGIN) == 0.0


def test_below_the_ceiling_grants_are_evenly_spaced() -> None:
    clock = FakeClock()
    pacer = Pacer({"upload": 20, "read": 20, "delete": 10}, clock=clock, sleep=clock.sleep)
    for _ in range(3):  # nothing proven: three 429s say we are too fast
        pacer.on_throttled("upload", 0.0)
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


def over_the_limit(state: ClassState, start: float, n: int, limit: int) -> tuple[float, list[str]]:
    """n requests sent 26 ms apart to a provider taking ``limit`` per window: the first
    ``limit`` succeed, the rest are refused, each answer 5 ms after it was sent.
    Returns the time after and the verdicts of the refusals."""
    sent = []
    for i in range(n):
        t = start + i * 0.026
        assert try_grant(state, t, 20, TUNING, MARGIN) == 0
        sent.append((t, window_count(state, t)))
    verdicts = []
    for i, (t, count) in enumerate(sent):
        if i < limit:
            note_success(state, t + 0.005, 20, TUNING, count=count, sent_at=t)
        else:
            verdicts.append(
                note_throttled(state, t + 0.005, 20, TUNING, None, count=count, sent_at=t)
            )
    return start + n * 0.026, verdicts


def test_429s_above_what_the_provider_just_accepted_lower_the_rate_once() -> None:
    state = ClassState()
    _t, verdicts = over_the_limit(state, 100.0, 10, limit=4)
    # Three refusals above the proven count make the verdict; the rest are the same burst.
    assert verdicts[:3] == ["evidence", "evidence", "lowered"]
    assert set(verdicts[3:]) == {"burst"}
    # Accepted at 4, refused at 5: the limit is pinned down, so no halving and no pause.
    assert state.target == 4 and state.rate == 4
    assert state.paused_until < 100.3


def test_isolated_429_at_an_accepted_count_changes_nothing() -> None:
    state = ClassState()
    t = 10.0
    for _ in range(40):  # 20/s, all accepted: counts up to 20 are proven
        assert try_grant(state, t, 20, TUNING, MARGIN) == 0
        note_success(state, t + 0.1, 20, TUNING, count=window_count(state, t), sent_at=t)
        t += 0.052
    assert state.proven >= 19
    for retry_after in (None, 1.0):
        assert try_grant(state, t, 20, TUNING, MARGIN) == 0
        count = window_count(state, t)
        verdict = note_throttled(state, t + 0.1, 20, TUNING, retry_after, count=count, sent_at=t)
        assert verdict == "isolated"
        t += 0.052
    # No lowered rate, no estimate, no pause of the class (the caller retries the request).
    assert (state.rate, state.target) == (None, None)
    assert try_grant(state, t, 20, TUNING, MARGIN) == 0


def test_a_success_at_a_higher_count_disproves_the_evidence() -> None:
    state = ClassState()
    # Ramp-up: 429s at counts 3 and 5 while later requests, at 6 and 7, go through.
    assert note_throttled(state, 1.0, 20, TUNING, None, count=3, sent_at=0.9) == "evidence"
    assert note_throttled(state, 1.1, 20, TUNING, None, count=5, sent_at=1.0) == "evidence"
    note_success(state, 1.2, 20, TUNING, count=7, sent_at=1.1)
    assert state.evidence == []
    assert note_throttled(state, 1.3, 20, TUNING, None, count=8, sent_at=1.2) == "evidence"
    assert state.rate is None and state.target is None


def test_a_success_sent_before_a_decrease_undoes_it() -> None:
    state = ClassState()
    for i, count in enumerate((9, 10, 11)):
        sent_at = 1.9 + i * 0.01
        note_throttled(state, 2.0 + i * 0.01, 20, TUNING, None, count=count, sent_at=sent_at)
    assert state.target is not None
    # A request sent before the verdict, as the 15th of its window (12th once the three
    # refused ones are left out), went through: the 429s at 9-11 were not about our rate.
    note_success(state, 2.1, 20, TUNING, count=15, sent_at=1.95)
    assert state.target == 12 and state.rate == 12
    assert state.paused_until <= 2.1


def test_retry_after_sets_the_pause_of_an_over_rate_verdict() -> None:
    state = ClassState()
    for i in range(3):
        note_throttled(state, 10.0 + i * 0.01, 20, TUNING, 3.0, count=1, sent_at=10.0)
    assert try_grant(state, 12.9, 20, TUNING, MARGIN) == pytest.approx(0.12)
    assert try_grant(state, 13.02, 20, TUNING, MARGIN) == 0


def test_repeated_over_rate_verdicts_double_the_pause() -> None:
    state = ClassState()
    t = 50.0
    pauses = []
    for _ in range(4):
        # Every request refused: nothing is proven, every 429 is evidence.
        for i in range(3):
            note_throttled(state, t + i * 0.01, 20, TUNING, None, count=1, sent_at=t)
        pauses.append(state.paused_until - (t + 0.02))
        t = state.paused_until + 0.1
    assert pauses == pytest.approx([1.0, 2.0, 4.0, 8.0])


def test_the_rate_never_goes_below_one_per_second() -> None:
    state = ClassState()
    t = 0.0
    for _ in range(12):
        for i in range(3):
            note_throttled(state, t + i * 0.01, 20, TUNING, None, count=1, sent_at=t)
        t = state.paused_until + 0.1
    assert effective_rate(state, 20, TUNING) == 1.0
    # A ceiling below the floor is obeyed.
    assert effective_rate(ClassState(rate=0.01), 0.5, TUNING) == 0.5


def test_recovery_to_estimate_then_slow_probe_that_stops_at_the_first_429() -> None:
    state = ClassState()
    t = 0.0
    # No proof yet: refused at 4, so at most 3 fit; the rate halves from there.
    for i in range(3):
        note_throttled(state, t + i * 0.01, 20, TUNING, None, count=4, sent_at=t)
    assert state.target == 3
    assert state.rate == pytest.approx(1.5)
    t = 0.02
    for _ in range(10):
        t += 0.5
        note_success(state, t, 20, TUNING, count=1, sent_at=t - 0.1)
    assert state.rate == pytest.approx(3.0)
    # Quiet but not yet for probe_quiet: stays at the estimate.
    t = 0.02 + TUNING.probe_quiet - 1
    note_success(state, t, 20, TUNING, count=3, sent_at=t - 0.1)
    assert state.rate == pytest.approx(3.0)
    t = 0.02 + TUNING.probe_quiet + 0.1
    note_success(state, t, 20, TUNING, count=3, sent_at=t - 0.1)
    assert state.rate == pytest.approx(3.0 * TUNING.probe_factor)
    # At most one probe step per probe_interval.
    note_success(state, t + 0.1, 20, TUNING, count=3, sent_at=t)
    assert state.rate == pytest.approx(3.0 * TUNING.probe_factor)
    # One 429 above the estimate ends the probe at the proven count, without a pause.
    t += 0.5
    assert note_throttled(state, t, 20, TUNING, None, count=4, sent_at=t - 0.01) == "lowered"
    assert state.target == 3 and state.rate == 3
    assert state.paused_until <= t
    # Long quiet and many successes: back to the configured ceiling, estimate forgotten.
    for k in range(200):
        now = t + TUNING.probe_quiet + k
        note_success(state, now, 20, TUNING, count=3, sent_at=now - 0.1)
    assert state.rate is None and state.target is None


def test_an_estimate_decays_with_idle_time() -> None:
    state = ClassState(target=4.0, rate=2.0, last_grant=100.0)
    # Within the grace period nothing changes.
    relax_idle(state, 100.0 + TUNING.idle_grace - 1, 20, TUNING)
    assert (state.target, state.rate) == (4.0, 2.0)
    # One half-life past the grace: half the gap to the ceiling is gone.
    relax_idle(state, 100.0 + TUNING.idle_grace + TUNING.idle_half_life, 20, TUNING)
    assert state.target == pytest.approx(12.0) and state.rate == pytest.approx(12.0)
    # Long idle: the ceiling again.
    state = ClassState(target=4.0, rate=2.0, last_grant=100.0)
    assert try_grant(state, 100.0 + 3600, 20, TUNING, MARGIN) == 0
    assert (state.target, state.rate) == (None, None)


def simulate(
    *,
    server_limit: int,
    ceiling: float,
    uploads: int,
    workers: int,
    fault: float = 0.0,
    latency: float = 0.1,
    seed: int = 0,
) -> tuple[int, int, float, ClassState]:
    """Discrete-event run of workers sharing one pacer against a sliding-window server
    that also refuses a share ``fault`` of the requests it admitted, at random (as the
    emulator's fault_429 does). A refused request is retried with full-jitter backoff.

    Returns (requests, throttled, duration, final state).
    """
    rng = random.Random(seed)
    state = ClassState()
    limiter = RateLimiter()
    events: list[tuple[float, int, str]] = [(0.0, w, "ready") for w in range(workers)]
    heapq.heapify(events)
    sent: dict[int, tuple[float, int]] = {}
    attempts: dict[int, int] = {}
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
            sent[worker] = (t, window_count(state, t))
            arrival = t + rng.uniform(0.001, 0.004)
            if limiter.try_acquire("acct", "upload", server_limit, now=arrival) is not None:
                heapq.heappush(events, (arrival + 0.002, worker, "throttled"))
            elif rng.random() < fault:
                heapq.heappush(events, (arrival + latency, worker, "throttled"))
            else:
                heapq.heappush(events, (arrival + latency, worker, "ok"))
        elif kind == "throttled":
            throttled += 1
            sent_at, count = sent.pop(worker)
            note_throttled(state, t, ceiling, TUNING, None, count=count, sent_at=sent_at)
            attempts[worker] = attempts.get(worker, 0) + 1
            backoff = rng.uniform(0, 0.5 * 2 ** (attempts[worker] - 1))
            heapq.heappush(events, (t + backoff, worker, "ready"))
        else:
            done += 1
            attempts[worker] = 0
            sent_at, count = sent.pop(worker)
            note_success(state, t, ceiling, TUNING, count=count, sent_at=sent_at)
            heapq.heappush(events, (t, worker, "ready"))
    return requests, throttled, t, state


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adapts_to_a_lower_provider_limit(seed: int) -> None:
    requests, throttled, duration, state = simulate(
        server_limit=3, ceiling=20, uploads=150, workers=8, seed=seed
    )
    assert throttled <= 0.05 * requests
    # At the provider's 3/s once adapted, within 10 %.
    assert duration < 150 / 3 / 0.9
    assert state.target == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("share", "at_least"), [(0.01, 0.9), (0.03, 0.85), (0.10, 0.8)])
def test_random_429s_cost_their_retries_not_the_rate(
    share: float, at_least: float, seed: int
) -> None:
    _r, _t, clean, _s = simulate(server_limit=20, ceiling=20, uploads=300, workers=8, seed=seed)
    _r, throttled, duration, state = simulate(
        server_limit=20, ceiling=20, uploads=300, workers=8, fault=share, seed=seed
    )
    assert throttled > 0
    assert clean / duration >= at_least
    assert state.target is None


def test_no_throttling_when_configured_at_the_limit() -> None:
    _requests, throttled, duration, _s = simulate(
        server_limit=20, ceiling=20, uploads=400, workers=16
    )
    assert throttled == 0
    assert duration < 400 / 20 * 1.05


def test_stale_state_from_before_a_reboot_is_reset() -> None:
    clock = FakeClock(start=5.0)
    stores = {cls: MemoryStore() for cls in ("upload", "read", "delete")}

    def plant(held: Held) -> None:
        held.state.last_grant = 1e6
        held.state.paused_until = 1e7

    stores["upload"].update(plant, clock)
    pacer = Pacer(
        {"upload": 1, "read": 1, "delete": 1}, clock=clock, sleep=clock.sleep, stores=stores
    )
    assert pacer.acquire("upload") == 0


@pytest.mark.parametrize(
    "tampered",
    [
        {"rate": -5.0},
        {"rate": 0.0},
        {"target": -1.0},
        {"paused_until": 1000.0 + 3000},  # longer than any pause we set
        {"recent": [1000.0 + 120]},  # in the future
        {"last_throttle": 1000.0 + 1e9},
        {"throttle_streak": -1},
        {"proven": 10**9},
    ],
)
def test_absurd_state_is_reset_not_obeyed(tampered: dict[str, object]) -> None:
    state = ClassState.from_json(json.dumps({"last_grant": 999.0, **tampered}))
    assert is_implausible(state, 1000.0, TUNING)
    assert not is_implausible(ClassState.from_json('{"last_grant": 999.0}'), 1000.0, TUNING)


@pytest.mark.parametrize(
    "text",
    [
        '{"rate": NaN}',
        '{"rate": Infinity}',
        '{"paused_until": 1e400}',
        '{"recent": [1, "x"]}',
        '{"throttle_streak": 1.5}',
        "[1, 2]",
        "{not json",
    ],
)
def test_unparsable_state_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        ClassState.from_json(text)


def test_a_tampered_state_file_does_not_stall_the_pacer(tmp_path: Path) -> None:
    clock = FakeClock(start=1000.0)
    (tmp_path / "k-upload.json").write_text(
        json.dumps({"rate": 1e-9, "target": 1e-9, "paused_until": 1000.0 + 50_000})
    )
    pacer = Pacer(
        {"upload": 5, "read": 5, "delete": 5},
        state_dir=tmp_path,
        key_fingerprint="k",
        clock=clock,
        sleep=clock.sleep,
    )
    try:
        assert pacer.acquire("upload") == 0
        assert pacer.current_rate("upload") == 5
    finally:
        pacer.close()


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
        for _ in range(3):  # nothing proven: three 429s say a is too fast
            a.on_throttled("upload", 0.5)
        seen = b.snapshot("upload")
        assert (seen.target, seen.rate) == pytest.approx((2.5, 1.25))
        assert seen.paused_until > time.monotonic()
        states = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock")
        assert states == ["k1-read.json", "k1-upload.json", "k2-read.json"]
        assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o600}
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
            granted_at, _waited = pacer.grant("upload")
            pacer.mark_sent("upload", granted_at)
            with lock:
                grants.append(granted_at)

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
    # CLOCK_MONOTONIC is host-wide, so the processes' readings are comparable; the grant
    # times are those the pacer recorded under the shared lock, so the widened window
    # holds exactly, however loaded the machine.
    assert max_in_window(grants, window=1 + MARGIN - 1e-6) <= 20
