"""Timing rules of the settle queue, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from syncd.daemon.settle import Kind, SettleQueue, stat_probe


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeFiles:
    """Ages by path; missing paths are absent files."""

    def __init__(self) -> None:
        self.age: dict[str, float] = {}

    def __call__(self, path: str) -> float | None:
        return self.age.get(path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def files() -> FakeFiles:
    return FakeFiles()


def make(
    clock: FakeClock, *, settle: float = 2.0, max_settle: float = 60.0, cap: int = 100
) -> SettleQueue:
    return SettleQueue(settle_s=settle, max_settle_s=max_settle, max_pending=cap, clock=clock)


def test_released_after_settle_when_quiet(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    q.touch("a.txt", Kind.CREATED)
    files.age["a.txt"] = 10.0
    assert q.pop_ready(files, limit=10) == []
    clock.advance(1.9)
    assert q.pop_ready(files, limit=10) == []
    clock.advance(0.2)
    assert q.pop_ready(files, limit=10) == ["a.txt"]
    assert len(q) == 0


def test_create_and_modify_coalesce_into_one(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    q.touch("a.txt", Kind.CREATED)
    for _ in range(50):
        clock.advance(0.5)
        q.touch("a.txt", Kind.MODIFIED)
    files.age["a.txt"] = 100.0
    clock.advance(1.0)
    assert q.pop_ready(files, limit=10) == []
    clock.advance(1.0)
    assert q.pop_ready(files, limit=10) == ["a.txt"]
    assert q.pop_ready(files, limit=10) == []


def test_create_then_delete_before_release_is_no_work(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    q.touch("a.txt", Kind.CREATED)
    q.touch("a.txt", Kind.MODIFIED)
    q.touch("a.txt", Kind.DELETED)
    assert len(q) == 0
    clock.advance(100)
    assert q.pop_ready(files, limit=10) == []


def test_delete_of_existing_file_is_delivered(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    q.touch("old.txt", Kind.DELETED)
    clock.advance(2.0)
    assert q.pop_ready(files, limit=10) == ["old.txt"]


def test_delete_recreate_delete_is_still_a_delete(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    q.touch("x", Kind.DELETED)
    q.touch("x", Kind.CREATED)
    q.touch("x", Kind.DELETED)
    clock.advance(2.0)
    assert q.pop_ready(files, limit=10) == ["x"]


def test_close_after_write_releases_immediately(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    q.touch("a.txt", Kind.CREATED)
    q.touch("a.txt", Kind.MODIFIED)
    files.age["a.txt"] = 0.0  # just written: the probe alone would make it wait
    q.touch("a.txt", Kind.CLOSED)
    assert q.pop_ready(files, limit=10) == ["a.txt"]


def test_write_after_close_waits_again(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    q.touch("a.txt", Kind.CLOSED)
    q.touch("a.txt", Kind.MODIFIED)
    files.age["a.txt"] = 0.0
    assert q.pop_ready(files, limit=10) == []
    clock.advance(2.0)
    files.age["a.txt"] = 2.0
    assert q.pop_ready(files, limit=10) == ["a.txt"]


def test_recent_timestamps_defer_even_without_events(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    q.touch("a.txt", Kind.CREATED)
    clock.advance(2.0)
    files.age["a.txt"] = 0.5  # changed 0.5 s ago although no event reached us
    assert q.pop_ready(files, limit=10) == []
    assert q.next_due() == pytest.approx(clock.now + 1.5)
    clock.advance(1.4)
    files.age["a.txt"] = 1.9
    assert q.pop_ready(files, limit=10) == []
    clock.advance(0.1)
    files.age["a.txt"] = 2.0
    assert q.pop_ready(files, limit=10) == ["a.txt"]


def test_never_settling_file_released_after_max(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock, settle=2.0, max_settle=10.0)
    q.touch("log.txt", Kind.CREATED)
    released_at = None
    for _ in range(100):
        clock.advance(0.5)
        q.touch("log.txt", Kind.MODIFIED)
        files.age["log.txt"] = 0.0
        if q.pop_ready(files, limit=10) == ["log.txt"]:
            released_at = clock.now
            break
    assert released_at == pytest.approx(1000.0 + 10.0)


def test_clock_skew_bounded_by_max_settle(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock, settle=2.0, max_settle=10.0)
    q.touch("nfs.txt", Kind.CREATED)
    files.age["nfs.txt"] = -3600.0  # mtime in the future (server clock ahead)
    clock.advance(2.0)
    assert q.pop_ready(files, limit=10) == []
    assert q.next_due() == pytest.approx(1010.0)
    clock.advance(8.0)
    assert q.pop_ready(files, limit=10) == ["nfs.txt"]


def test_requeue_after_changed_during_upload(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    q.touch("a.txt", Kind.CLOSED)
    assert q.pop_ready(files, limit=10) == ["a.txt"]
    q.requeue(["a.txt"])
    files.age["a.txt"] = 0.0
    assert q.pop_ready(files, limit=10) == []
    clock.advance(2.0)
    files.age["a.txt"] = 2.0
    assert q.pop_ready(files, limit=10) == ["a.txt"]


def test_limit_and_order_by_due(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    for i in range(5):
        q.touch(f"f{i}", Kind.CREATED)
        files.age[f"f{i}"] = 99.0
        clock.advance(0.1)
    clock.advance(2.0)
    assert q.pop_ready(files, limit=2) == ["f0", "f1"]
    assert q.pop_ready(files, limit=10) == ["f2", "f3", "f4"]


def test_folder_move_is_released_whole(clock: FakeClock, files: FakeFiles) -> None:
    """Both ends of a folder move leave in one batch, past the limit if need be; the
    file events watchdog sends for what moved (before or after the folder's) join them."""
    q = make(clock)
    q.touch("C/early.txt", Kind.MODIFIED)  # pending when the folder moves
    for i in range(3):
        q.touch(f"a{i}", Kind.MODIFIED)
        files.age[f"a{i}"] = 99.0
    clock.advance(0.1)
    q.move_dir("C", "D")
    for name in ("x.txt", "sub/y.txt"):
        q.touch(f"C/{name}", Kind.DELETED)
        q.touch(f"D/{name}", Kind.CREATED)
    q.move_dir("C/sub", "D/sub")
    assert len(q) == 5  # a0..a2, C, D
    files.age["D"] = 99.0
    clock.advance(2.0)
    assert q.pop_ready(files, limit=4) == ["a0", "a1", "a2", "C", "D"]
    assert len(q) == 0
    # Once released, events below the new folder are files of their own again.
    q.touch("D/x.txt", Kind.MODIFIED)
    files.age["D/x.txt"] = 99.0
    clock.advance(2.0)
    assert q.pop_ready(files, limit=10) == ["D/x.txt"]


def test_events_below_a_moved_folder_make_it_wait(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    q.move_dir("C", "D")
    files.age["D"] = 99.0
    clock.advance(1.5)
    q.touch("D/new.txt", Kind.CLOSED)
    clock.advance(1.0)
    assert q.pop_ready(files, limit=10) == []
    clock.advance(1.0)
    assert sorted(q.pop_ready(files, limit=10)) == ["C", "D"]


def test_a_folder_moved_twice_leaves_with_its_first_name(
    clock: FakeClock, files: FakeFiles
) -> None:
    q = make(clock)
    q.move_dir("C", "D")
    clock.advance(0.5)
    q.move_dir("D", "E")  # D appeared and left before release: only C and E matter
    files.age["E"] = 99.0
    q.touch("z", Kind.MODIFIED)
    files.age["z"] = 99.0
    clock.advance(2.0)
    assert q.pop_ready(files, limit=1) == ["C", "E"]


def test_a_requeued_batch_stays_whole(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    for name in ("b", "a", "c"):
        files.age[name] = 99.0
    q.requeue(["b", "a", "c"])
    clock.advance(2.0)
    assert q.pop_ready(files, limit=1) == ["a", "b", "c"]


def test_overflow_drops_pending_and_requests_rescan(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock, cap=100)
    for i in range(10_000):
        q.touch(f"storm/{i}.txt", Kind.CREATED)
    assert q.overflowed
    assert len(q) == 0
    reason = q.take_rescan()
    assert reason is not None and "100" in reason
    assert not q.overflowed
    # Events after the rescan was taken are queued again.
    q.touch("after.txt", Kind.CREATED)
    assert len(q) == 1
    assert q.take_rescan() is None


def test_memory_stays_bounded_under_repeated_events(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock)
    for _ in range(10_000):
        q.touch("hot.txt", Kind.MODIFIED)
        q.touch("hot.txt", Kind.CLOSED)
        clock.advance(0.001)
    assert len(q._heap) <= 2


def test_dirs_are_collected_for_expansion(clock: FakeClock) -> None:
    q = make(clock)
    q.touch_dir("b")
    q.touch_dir("a")
    q.touch_dir("a")
    assert q.next_due() == clock.now
    assert q.take_dirs() == ["a", "b"]
    assert q.take_dirs() == []


def test_reconfigure_shortens_settle(clock: FakeClock, files: FakeFiles) -> None:
    q = make(clock, settle=30.0)
    q.touch("a", Kind.CREATED)
    files.age["a"] = 100.0
    clock.advance(1.0)
    assert q.pop_ready(files, limit=10) == []
    q.reconfigure(settle_s=0.5, max_settle_s=60.0, max_pending=100)
    assert q.pop_ready(files, limit=10) == ["a"]


def test_wait_wakes_on_touch() -> None:
    q = SettleQueue(settle_s=0.0, max_settle_s=1.0, max_pending=10)
    woke = threading.Event()

    def waiter() -> None:
        q.wait(timeout=30)
        woke.set()

    t = threading.Thread(target=waiter)
    t.start()
    # The waiter may not be waiting yet; keep poking until it wakes.
    for _ in range(300):
        q.touch("a", Kind.CREATED)
        if woke.wait(0.01):
            break
    t.join(timeout=5)
    assert woke.is_set()


def test_stat_probe(tmp_path: Path) -> None:
    root = str(tmp_path)
    probe = stat_probe(root)
    assert probe("missing.txt") is None
    (tmp_path / "a.txt").write_text("x")
    age = probe("a.txt")
    assert age is not None and -1.0 < age < 5.0
