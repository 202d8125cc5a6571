"""The watch layer: event routing, overflow detection, watch-limit fallback, real observers."""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingEmitter
from watchdog.utils.dirsnapshot import DirectorySnapshot

from syncd.config import RulesConfig
from syncd.daemon.settle import Kind, SettleQueue
from syncd.daemon.watch import (
    OverflowMonitor,
    QueueingHandler,
    Watcher,
    pruned_listdir,
)
from syncd.engine.rules import Rules
from syncd.engine.walk import count_dirs
from tests.helpers import wait_for


class Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, Kind | str]] = []
        self.rescans: list[str] = []

    def touch(self, path: str, kind: Kind) -> None:
        with self.lock:
            self.events.append((path, kind))

    def touch_dir(self, path: str) -> None:
        with self.lock:
            self.events.append((path, "dir"))

    def move_dir(self, src: str, dest: str) -> None:
        with self.lock:
            self.events.append((f"{src} -> {dest}", "moved dir"))

    def request_rescan(self, reason: str) -> None:
        with self.lock:
            self.rescans.append(reason)


def candidate(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return not (name.endswith((".part", ".tmp")) or name.startswith((".", "~$")))


@pytest.fixture
def sink() -> Sink:
    return Sink()


def test_routing(tmp_path: Path, sink: Sink) -> None:
    h = QueueingHandler(tmp_path, sink, candidate)
    r = str(tmp_path)
    h.dispatch(FileCreatedEvent(f"{r}/a.txt"))
    h.dispatch(FileModifiedEvent(f"{r}/a.txt"))
    h.dispatch(FileClosedEvent(f"{r}/a.txt"))
    h.dispatch(FileDeletedEvent(f"{r}/sub/b.txt"))
    h.dispatch(FileMovedEvent(f"{r}/c.txt", f"{r}/d/c.txt"))
    h.dispatch(FileMovedEvent(f"{r}/doc.tmp", f"{r}/doc.txt"))  # atomic save
    h.dispatch(FileOpenedEvent(f"{r}/a.txt"))
    h.dispatch(FileClosedNoWriteEvent(f"{r}/a.txt"))
    h.dispatch(DirModifiedEvent(f"{r}/sub"))
    assert sink.events == [
        ("a.txt", Kind.CREATED),
        ("a.txt", Kind.MODIFIED),
        ("a.txt", Kind.CLOSED),
        ("sub/b.txt", Kind.DELETED),
        ("c.txt", Kind.DELETED),
        ("d/c.txt", Kind.CREATED),
        ("doc.txt", Kind.CREATED),
    ]
    assert sink.rescans == []


def test_excluded_and_outside_paths_cause_no_work(tmp_path: Path, sink: Sink) -> None:
    h = QueueingHandler(tmp_path / "root", sink, candidate)
    r = str(tmp_path / "root")
    for name in ("x.part", "x.tmp", "~$x.docx", ".hidden"):
        h.dispatch(FileCreatedEvent(f"{r}/{name}"))
        h.dispatch(FileModifiedEvent(f"{r}/{name}"))
    h.dispatch(FileCreatedEvent(f"{tmp_path}/rootx/a.txt"))  # shares the prefix only
    h.dispatch(FileCreatedEvent(f"{tmp_path}/elsewhere.txt"))
    assert sink.events == []


def test_folders(tmp_path: Path, sink: Sink) -> None:
    h = QueueingHandler(tmp_path, sink, candidate)
    r = str(tmp_path)
    h.dispatch(DirCreatedEvent(f"{r}/new"))
    h.dispatch(DirDeletedEvent(f"{r}/gone"))
    h.dispatch(DirMovedEvent(f"{r}/a", f"{r}/b"))
    h.dispatch(DirMovedEvent(f"{r}/out", f"{tmp_path.parent}/elsewhere"))
    h.dispatch(DirMovedEvent(f"{tmp_path.parent}/elsewhere", f"{r}/in"))
    assert sink.events == [
        ("new", "dir"),
        ("gone", Kind.DELETED),
        ("a -> b", "moved dir"),  # one change: both ends reach the engine together
        ("out", Kind.DELETED),
        ("in", "dir"),
    ]
    h.dispatch(DirDeletedEvent(r))
    assert sink.rescans == ["the watched folder disappeared"]


def test_handler_never_raises(tmp_path: Path, sink: Sink) -> None:
    def broken(_rel: str) -> bool:
        raise RuntimeError("boom")

    h = QueueingHandler(tmp_path, sink, broken)
    h.dispatch(FileCreatedEvent(f"{tmp_path}/a.txt"))
    assert sink.rescans == ["internal error while queueing an event"]


@pytest.mark.parametrize("root_level", [logging.NOTSET, logging.ERROR])
def test_overflow_monitor_catches_watchdog_warning(root_level: int) -> None:
    got: list[str] = []
    logger = logging.getLogger("watchdog.observers.inotify_c")
    old_level = logger.level
    logger.setLevel(root_level)
    monitor = OverflowMonitor(got.append)
    monitor.install()
    try:
        # Exactly what watchdog 7 logs (watchdog/observers/inotify_c.py).
        logger.warning("Inotify queue overflowed; filesystem events were lost")
        logger.warning("something else")
        logging.getLogger("watchdog.observers.inotify").exception(
            "Unable to rebuild recursive inotify watches below %r", b"/x"
        )
    finally:
        monitor.uninstall()
    assert logger.level == root_level
    logger.setLevel(old_level)
    assert len(got) == 2
    assert "overflowed" in got[0]
    logger.warning("Inotify queue overflowed; filesystem events were lost")
    assert len(got) == 2  # uninstalled


class FailingObserver(BaseObserver):
    """An observer whose inotify set-up fails as at the kernel's limits."""

    def __init__(self, err: int, at: str) -> None:
        super().__init__(PollingEmitter)
        self.err = err
        self.at = at

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        if self.at == "schedule":
            raise OSError(self.err, "inotify watch limit reached")
        return super().schedule(*args, **kwargs)

    def start(self) -> None:
        raise OSError(self.err, "inotify instance limit reached")


@pytest.mark.parametrize(
    ("err", "at", "sysctl"),
    [
        (errno.ENOSPC, "schedule", "fs.inotify.max_user_watches"),
        (errno.ENOSPC, "start", "fs.inotify.max_user_watches"),
        (errno.EMFILE, "start", "fs.inotify.max_user_instances"),
    ],
)
def test_watch_limit_falls_back_to_polling(
    tmp_path: Path, sink: Sink, err: int, at: str, sysctl: str
) -> None:
    w = Watcher(
        tmp_path,
        QueueingHandler(tmp_path, sink, candidate),
        mode="auto",
        poll_interval_s=0.1,
        inotify_factory=lambda: FailingObserver(err, at),
        watch_limit=lambda: None,
    )
    with capture_logs() as logs:
        assert w.start() == "polling"
    try:
        assert w.kind == "polling" and w.is_alive
        messages = [e["event"] for e in logs if e["log_level"] == "warning"]
        assert any(sysctl in m and "fs.inotify.max_user_watches" in m for m in messages)
        assert w.fallback_reason is not None
    finally:
        w.stop()


def test_other_errors_are_not_hidden(tmp_path: Path, sink: Sink) -> None:
    w = Watcher(
        tmp_path,
        QueueingHandler(tmp_path, sink, candidate),
        mode="auto",
        poll_interval_s=0.1,
        inotify_factory=lambda: FailingObserver(errno.EACCES, "schedule"),
        watch_limit=lambda: None,
    )
    with pytest.raises(PermissionError):
        w.start()


def test_tree_larger_than_watch_limit_polls(tmp_path: Path, sink: Sink) -> None:
    for i in range(5):
        (tmp_path / f"d{i}" / "x").mkdir(parents=True)
    def every(_rel_dir: str) -> bool:
        return True

    assert count_dirs(tmp_path, stop_after=100, can_hold=every) == 11
    assert count_dirs(tmp_path, stop_after=3, can_hold=every) == 4
    # Folders no candidate can be under need no watch: d0 and d1 and what they hold.
    assert count_dirs(tmp_path, 100, lambda d: d.split("/")[0] not in ("d0", "d1")) == 7

    def forbidden() -> BaseObserver:
        raise AssertionError("inotify must not be tried")

    w = Watcher(
        tmp_path,
        QueueingHandler(tmp_path, sink, candidate),
        mode="inotify",
        poll_interval_s=0.1,
        inotify_factory=forbidden,
        watch_limit=lambda: 8,
    )
    with capture_logs() as logs:
        assert w.start() == "polling"
    w.stop()
    assert any(
        e["log_level"] == "error" and "fs.inotify.max_user_watches" in e["event"] for e in logs
    )


def _queue() -> SettleQueue:
    return SettleQueue(settle_s=0.0, max_settle_s=10.0, max_pending=1000)


def _paths(q: SettleQueue) -> set[str]:
    with q._cond:
        return set(q._entries)


@pytest.mark.parametrize("mode", ["auto", "polling"])
def test_real_observer_end_to_end(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "root"
    (root / "old").mkdir(parents=True)
    (root / "old" / "moved.txt").write_text("m")
    q = _queue()
    handler = QueueingHandler(root, q, candidate)
    w = Watcher(root, handler, mode=mode, poll_interval_s=0.1)  # type: ignore[arg-type]
    expected_kind = "polling" if mode == "polling" else "inotify"
    assert w.start() == expected_kind
    try:
        assert w.is_alive
        (root / "a.txt").write_text("hello")
        (root / "b.part").write_text("partial")
        (root / "old").rename(root / "new")
        # A folder moved within the root is queued as its two ends, each one entry
        # that the files watchdog reports below them join.
        wait_for(lambda: {"a.txt", "new", "old"} <= _paths(q))
        assert not {"b.part", "new/moved.txt", "old/moved.txt"} & _paths(q)
        (root / "sub").mkdir()
        wait_for(lambda: "sub" in q.take_dirs())
    finally:
        w.stop()
    assert not w.is_alive


@pytest.mark.parametrize("mode", ["auto", "polling"])
def test_root_that_is_a_symlink_is_watched_through_it_and_after_a_swap(
    tmp_path: Path, mode: str
) -> None:
    """An atomic deploy: `root -> v1`, then `ln -sfn v2` and a rename over `root`."""
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
    root = tmp_path / "root"
    root.symlink_to("v1")
    q = _queue()
    w = Watcher(root, QueueingHandler(root, q, candidate), mode=mode, poll_interval_s=0.1)  # type: ignore[arg-type]
    w.start()
    try:
        (tmp_path / "v1" / "a.txt").write_text("in v1")
        wait_for(lambda: "a.txt" in _paths(q), what="a file written through the link")
        (tmp_path / "root.tmp").symlink_to("v2")
        (tmp_path / "root.tmp").rename(root)
        wait_for(lambda: not w.is_alive, what="the swap noticed")
        w.restart()  # as the worker does once the new target settled
        (tmp_path / "v2" / "b.txt").write_text("in v2")
        (tmp_path / "v1" / "stale.txt").write_text("no longer the root")
        wait_for(lambda: "b.txt" in _paths(q), what="a file written in the new target")
        assert "stale.txt" not in _paths(q)
        assert w.is_alive
    finally:
        w.stop()


def test_watcher_notices_root_removal(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    q = _queue()
    w = Watcher(root, QueueingHandler(root, q, candidate), mode="auto", poll_interval_s=0.1)
    w.start()
    try:
        root.rmdir()
        wait_for(lambda: not w.is_alive)
        reasons: list[str | None] = []
        wait_for(lambda: reasons.append(q.take_rescan()) or reasons[-1] is not None)
        assert reasons[-1] == "the watched folder disappeared"
    finally:
        w.stop()


def _inotify_watches() -> set[tuple[int, int]]:
    """What this process's inotify instances watch, as (device, inode) (from /proc)."""
    watched: set[tuple[int, int]] = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if "inotify" not in os.readlink(fd):
                continue
            info = (Path("/proc/self/fdinfo") / fd.name).read_text()
        except OSError:
            continue
        for line in info.splitlines():
            if line.startswith("inotify wd:"):
                fields = dict(f.split(":", 1) for f in line.split()[1:])
                # sdev is the kernel's device number: major << 20 | minor.
                sdev = int(fields["sdev"], 16)
                watched.add((os.makedev(sdev >> 20, sdev & 0xFFFFF), int(fields["ino"], 16)))
    return watched


def test_only_folders_that_can_hold_candidates_are_watched(tmp_path: Path) -> None:
    rules = Rules(RulesConfig(exclude=("photos/**", "**/node_modules/**")))
    root = tmp_path / "root"
    kept = [root, root / "docs", root / "docs" / "a"]
    pruned = [root / "photos", root / "photos" / "2024", root / "docs" / "node_modules"]
    for folder in kept + pruned:
        folder.mkdir(parents=True, exist_ok=True)
    q = _queue()
    w = Watcher(root, QueueingHandler(root, q, rules.is_candidate), mode="inotify",
                poll_interval_s=0.1, can_hold=rules.can_hold)
    before = _inotify_watches()
    w.start()
    try:
        def watched() -> set[Path]:
            ids = _inotify_watches() - before
            return {f for f in kept + pruned if f.exists() and _stat_id(f) in ids}

        wait_for(lambda: watched() == set(kept))
        # A folder created (with content) under a watched one is watched and its file
        # seen; one created under a pruned folder is not.
        (root / "docs" / "new" / "deep").mkdir(parents=True)
        (root / "docs" / "new" / "deep" / "n.txt").write_text("n")
        (root / "photos" / "2025").mkdir()
        (root / "photos" / "2025" / "p.txt").write_text("p")
        kept += [root / "docs" / "new", root / "docs" / "new" / "deep"]
        pruned.append(root / "photos" / "2025")
        wait_for(lambda: watched() == set(kept))
        (root / "docs" / "new" / "deep" / "m.txt").write_text("m")
        wait_for(lambda: "docs/new/deep/m.txt" in _paths(q))
        assert not any(p.startswith("photos/") for p in _paths(q))
        # A pruned folder moved to where candidates may be is watched from then on.
        (root / "docs" / "node_modules").rename(root / "docs" / "modules")
        kept.append(root / "docs" / "modules")
        wait_for(lambda: watched() == set(kept))
    finally:
        w.stop()


def _stat_id(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def test_polling_reads_only_folders_that_can_hold_candidates(tmp_path: Path) -> None:
    """Polling walks what the scan walks: not a folder the rules prune, nor a link to a
    folder. Every file here is a candidate by name, so any event under a pruned
    folder could only come from reading it."""
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "photos" / "2024").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    can_hold = Rules(RulesConfig(exclude=("photos/**",))).can_hold
    snapshot = DirectorySnapshot(str(root), listdir=pruned_listdir(root, can_hold))
    assert {os.path.relpath(p, root) for p in snapshot.paths} == {".", "docs"}

    q = _queue()
    w = Watcher(root, QueueingHandler(root, q, lambda _rel: True), mode="polling",
                poll_interval_s=0.1, can_hold=can_hold)  # fmt: skip
    assert w.start() == "polling"
    try:
        (root / "photos" / "2024" / "p.txt").write_text("p")
        (tmp_path / "elsewhere" / "e.txt").write_text("e")
        (root / "docs" / "d.txt").write_text("d")
        wait_for(lambda: "docs/d.txt" in _paths(q))
        # Written before d.txt, so a poll that read them would have reported them too.
        assert not any(p.startswith(("photos", "linked")) for p in _paths(q)), _paths(q)
    finally:
        w.stop()
