"""``syncd run`` end to end against the emulator as a separate process: what the daemon
must show before it ships.

Each test starts the emulator and ``syncd run`` as real subprocesses, changes the
folder the way a user would, and checks the outcome from the outside only: the remote
listing and content, the published mapping, the emulator's request counters, the
daemon's log and the sd_notify datagrams it sends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from syncd import events
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    KEY_ENV,
    assert_converged,
    files_under,
    read_mapping,
    remote_files,
    spawn_reconcile,
    write_config,
)
from tests.helpers import NotifySocket, wait_for
from tests.helpers_client import assert_paced

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux daemon")

FAST = {"upload_rate": 200, "read_rate": 200, "delete_rate": 100}
FAST_LIMITS = {"upload_qps": 200, "read_qps": 200, "delete_qps": 100}
# The emulator's and syncd's defaults (the provider's documented ceilings).
DEFAULT_RATES = {"upload": 20, "read": 20, "delete": 10}
STORM_FILES = 1500
SECOND_PROJECT_FILES = 150


# ------------------------------------------------------------------ harness


@dataclass
class RunningDaemon:
    proc: subprocess.Popen[bytes]
    log: Path
    notify: NotifySocket
    mapping_path: Path
    started: float = field(default_factory=time.monotonic)

    def mapping(self) -> dict[str, dict[str, Any]]:
        try:
            return read_mapping(self.mapping_path)
        except (OSError, ValueError, KeyError):
            return {}

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text("utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def logged(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in self.log_records()
            if r.get("event") == event and all(r.get(k) == v for k, v in fields.items())
        ]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started


def daemon_env(key: str, notify: NotifySocket | None, watchdog_usec: int | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), KEY_ENV: key}
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "DASHSCOPE_API_KEY"):
        env.pop(name, None)
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.path
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
    return env


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[..., RunningDaemon]]:
    started: list[RunningDaemon] = []
    sockets: list[NotifySocket] = []

    def start(config: Path, key: str, *, ready_timeout: float = 60.0,
              watchdog_usec: int | None = 2_000_000) -> RunningDaemon:
        notify = NotifySocket()
        sockets.append(notify)
        log = config.parent / "daemon.log"
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(config)],
                stdout=fh, stderr=subprocess.STDOUT, cwd=str(REPO),
                env=daemon_env(key, notify, watchdog_usec),
            )
        daemon = RunningDaemon(proc, log, notify, config.parent / "mapping.json")
        started.append(daemon)
        wait_for(lambda: notify.has("READY=1") or proc.poll() is not None, ready_timeout,
                 what="READY=1")
        assert proc.poll() is None, log.read_text()
        wait_for(lambda: notify.caught_up() or proc.poll() is not None, ready_timeout,
                 what="the catch-up")
        assert proc.poll() is None, log.read_text()
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
    for notify in sockets:
        notify.close()


def fast_config(where: Path, root: Path, emulator: EmulatorHandle, **sections: Any) -> Path:
    sync = {"settle_s": 1.0, "max_settle_s": 30, **sections.pop("sync", {})}
    daemon = {"shutdown_timeout_s": 8, "publish_interval_s": 0.5, **sections.pop("daemon", {})}
    limits = {**FAST_LIMITS, **sections.pop("limits", {})}
    return write_config(where, root, emulator, limits=limits, sync=sync, daemon=daemon,
                        **sections)


def content(emulator: EmulatorHandle, file_id: str) -> bytes:
    response = httpx.get(f"{emulator.url}/files/{file_id}/content",
                         headers={"Authorization": f"Bearer {emulator.api_key}"}, timeout=30)
    response.raise_for_status()
    return response.content


def remote_delete(emulator: EmulatorHandle, file_id: str) -> None:
    response = httpx.delete(f"{emulator.url}/files/{file_id}",
                            headers={"Authorization": f"Bearer {emulator.api_key}"}, timeout=30)
    response.raise_for_status()


def assert_unthrottled(stats: dict[str, Any]) -> None:
    """Light traffic, far below the limits: not one request may be refused."""
    assert all(v == 0 for v in stats["throttled"].values()), stats
    assert stats["faults"]["429"] == 0, stats


class MappingWatcher:
    """Polls the mapping file and records when each (path, file_id) first appears."""

    def __init__(self, path: Path, interval: float = 0.05) -> None:
        self.path = path
        self.interval = interval
        self.seen: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                files = read_mapping(self.path)
            except (OSError, ValueError, KeyError):
                files = {}
            now = time.monotonic()
            for path, entry in files.items():
                self.seen.setdefault((path, entry["file_id"]), now)
            self._stop.wait(self.interval)

    def first_seen(self, path: str, file_id: str) -> float:
        return self.seen[(path, file_id)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


# ------------------------------------------------------------------ 1. lifecycle


def test_create_modify_delete_move_and_stop(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    emulator = emulator_factory(**FAST)
    root = tmp_path / "root"
    (root / "pre").mkdir(parents=True)
    for i in range(5):
        (root / "pre" / f"p-{i}.txt").write_text(f"present before start {i}\n")
    config = fast_config(tmp_path, root, emulator)
    settle_s = 1.0

    daemon = run_daemon(config, emulator.api_key)
    # Once caught up, what was there at start is published.
    assert sorted(daemon.mapping()) == [f"pre/p-{i}.txt" for i in range(5)]
    watcher = MappingWatcher(daemon.mapping_path)
    emulator.reset_stats()
    try:
        # --- 200 files: 180 at once, 20 written slowly in chunks over ~3 s.
        last_write: dict[str, float] = {}
        fast = [f"docs/d{i % 6}/f-{i:03d}.txt" for i in range(150)]
        fast += [f"moveme/sub{i % 3}/m-{i:02d}.md" for i in range(30)]
        for i, rel in enumerate(fast):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"file {rel}\n".encode() * (1 + i % 5))
            last_write[rel] = time.monotonic()
        slow = [f"slow/s-{i:02d}.txt" for i in range(20)]
        (root / "slow").mkdir()
        handles = {rel: (root / rel).open("wb") for rel in slow}
        for chunk in range(8):
            for i, rel in enumerate(slow):
                fh = handles[rel]
                fh.write(f"{rel} chunk {chunk} ".encode() * (50 + i))
                fh.flush()
                last_write[rel] = time.monotonic()
            time.sleep(0.4)
        for fh in handles.values():
            fh.close()
        created = fast + slow
        assert len(created) == 200

        wait_for(lambda: set(created) <= set(daemon.mapping()), 30, what="200 files mapped")
        mapped = daemon.mapping()
        # The watcher polls on its own thread: let it catch up with what we just read.
        wait_for(lambda: all((rel, mapped[rel]["file_id"]) in watcher.seen for rel in created),
                 5, what="mapping watcher caught up")
        lag = {rel: watcher.first_seen(rel, mapped[rel]["file_id"]) - last_write[rel]
               for rel in created}
        worst = max(lag.values())
        # The mapping is published after each batch (up to 128 files), so the first file
        # of the burst waits for its whole batch: ~0.3 s on an idle machine, 6.4 s once with
        # both cores hogged and three test workers. The budget still fails a daemon that
        # leaves settled files to a rescan or to the scheduled reconcile.
        assert worst <= settle_s + 10, sorted(lag.items(), key=lambda kv: -kv[1])[:5]
        # Never half-written: exactly one upload per file, of its final bytes.
        stats = emulator.stats()
        assert stats["mutations"]["upload"] == 200, stats
        remote = remote_files(emulator)
        for rel in created:
            fid = mapped[rel]["file_id"]
            data = (root / rel).read_bytes()
            assert int(remote[fid]["bytes"]) == len(data), rel
            assert content(emulator, fid) == data, rel
        print(f"\n[create] 200 files, settle_s={settle_s}: lag max {worst:.2f}s, "
              f"slow-file lag max {max(lag[r] for r in slow):.2f}s")

        # --- 20 modified: replaced, old ids gone.
        modified = fast[:20]
        old_ids = {rel: mapped[rel]["file_id"] for rel in modified}
        for rel in modified:
            (root / rel).write_bytes(f"modified {rel}\n".encode() * 3)
        wait_for(lambda: all(daemon.mapping().get(r, {}).get("file_id") not in (None, old_ids[r])
                             for r in modified), 20, what="modified files replaced")
        wait_for(lambda: not set(old_ids.values()) & set(remote_files(emulator)), 10,
                 what="replaced ids deleted")
        mapped = daemon.mapping()
        for rel in modified:
            assert content(emulator, mapped[rel]["file_id"]) == (root / rel).read_bytes()

        # --- 20 deleted: deleted remotely.
        deleted = fast[20:40]
        gone_ids = {mapped[rel]["file_id"] for rel in deleted}
        for rel in deleted:
            (root / rel).unlink()
        wait_for(lambda: not set(deleted) & set(daemon.mapping()), 20, what="deletes unmapped")
        wait_for(lambda: not gone_ids & set(remote_files(emulator)), 10, what="deletes remote")

        # --- a folder of 30 files renamed within the root: remapped; an old id is either
        # kept by its moved path (dedupe, when the move is seen as one batch) or deleted.
        moved_old = {rel: mapped[rel]["file_id"] for rel in fast[150:]}
        (root / "moveme").rename(root / "moved")
        moved_new = [rel.replace("moveme/", "moved/", 1) for rel in moved_old]
        wait_for(lambda: set(moved_new) <= set(daemon.mapping())
                 and not set(moved_old) & set(daemon.mapping()), 20, what="folder remapped")
        wait_for(lambda: set(remote_files(emulator))
                 == {e["file_id"] for e in daemon.mapping().values()}, 10,
                 what="no id but the mapped ones left on the remote")
        expected = files_under(root)
        assert len(expected) == 5 + 200 - 20
        assert_converged(emulator, root, daemon.mapping_path, expected)
        assert_unthrottled(emulator.stats())

        # --- SIGTERM: exit 0 within 10 s, mapping complete.
        code, took = daemon.stop(timeout=10)
        assert code == 0, daemon.log.read_text()[-3000:]
        assert_converged(emulator, root, daemon.mapping_path, expected)
        print(f"[stop] exit {code} in {took:.2f}s")

        # sd_notify on a real AF_UNIX datagram socket.
        lines = list(daemon.notify.lines)
        assert "READY=1" in lines and "STOPPING=1" in lines and "WATCHDOG=1" in lines
        statuses = [line for line in lines if line.startswith("STATUS=")]
        assert any("synced" in s and "watching: inotify" in s for s in statuses), statuses
        assert lines.index("READY=1") < lines.index("STOPPING=1")
    finally:
        watcher.close()


# ------------------------------------------------------------------ 2. storm at default limits


def test_sigterm_starts_no_more_uploads_and_publishes_what_finished(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    """A stop in the middle of a batch: the uploads in flight finish and are published,
    the ones not started are left to the next start, and the daemon exits in time."""
    emulator = emulator_factory(**FAST, latency_ms=1000)
    root = tmp_path / "root"
    root.mkdir()
    config = fast_config(tmp_path, root, emulator, limits={"workers": 4},
                         daemon={"shutdown_timeout_s": 10})
    daemon = run_daemon(config, emulator.api_key)
    for i in range(120):
        (root / f"f-{i:03d}.txt").write_text(f"file {i}\n")
    wait_for(lambda: emulator.stats()["requests"]["upload"] >= 4, timeout=60,
             what="the batch under way")  # fmt: skip
    code, took = daemon.stop(timeout=60)
    assert code == 0, daemon.log.read_text()
    assert took < 10 + 5, f"stopped in {took:.1f} s, shutdown_timeout_s is 10"
    stored = remote_files(emulator)
    # At 1 s an upload and 4 at a time, a batch let run would take half a minute.
    assert len(stored) < 60, f"{len(stored)} uploads went on after the stop"
    mapped = {e["file_id"] for e in daemon.mapping().values()}
    assert mapped == set(stored), "an upload that finished is not in the mapping"

    emulator.configure(latency_ms=0)
    again = run_daemon(config, emulator.api_key)
    wait_for(lambda: len(again.mapping()) == 120, timeout=60, what="the rest after a restart")
    assert again.stop()[0] == 0
    assert_converged(emulator, root, again.mapping_path, files_under(root))


def test_storm_at_default_limits_with_a_second_project(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    emulator = emulator_factory()  # provider-shaped limits: 20 upload, 20 read, 10 delete /s
    pacing = tmp_path / "pacing"
    defaults = {"upload_qps": 20, "read_qps": 20, "delete_qps": 10, "pacing_dir": str(pacing)}
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    root = one / "root"
    root.mkdir()
    config = write_config(one, root, emulator, limits=defaults, sync={"settle_s": 1.0},
                          daemon={"shutdown_timeout_s": 8})
    root2 = two / "root"
    for i in range(SECOND_PROJECT_FILES):
        path = root2 / f"b{i % 5}" / f"second-{i:04d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"second project {i}\n")
    config2 = write_config(two, root2, emulator, limits=defaults, project="second")

    daemon = run_daemon(config, emulator.api_key)
    emulator.reset_stats()
    started = time.monotonic()
    created = []
    for i in range(STORM_FILES):
        rel = f"s{i % 20}/storm-{i:05d}.txt"
        path = root / rel
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"storm {i}\n")
        created.append(rel)

    # The second project reconciles once, with the same key and pacing folder, mid-storm.
    wait_for(lambda: len(daemon.mapping()) >= 200, 60, interval=0.5, what="storm under way")
    second = spawn_reconcile(config2, emulator.api_key, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    out, err = second.communicate(timeout=200)
    assert second.returncode == 0, err.decode()[-3000:]
    second_report = json.loads(out)
    assert second_report["uploaded"] == SECOND_PROJECT_FILES, second_report
    print(f"\n[storm] second project reconciled {SECOND_PROJECT_FILES} files in "
          f"{second_report['duration_s']:.1f}s during the storm")
    assert len(daemon.mapping()) < STORM_FILES, "the second project did not overlap the storm"

    wait_for(lambda: len(daemon.mapping()) == STORM_FILES, 200, interval=0.5, what="storm synced")
    took = time.monotonic() - started
    stats = emulator.stats()
    print(f"\n[storm] {STORM_FILES} + {SECOND_PROJECT_FILES} files in {took:.1f}s; "
          f"max_per_second={stats['max_per_second']} requests={stats['requests']} "
          f"throttled={stats['throttled']}")
    assert_paced(stats, DEFAULT_RATES)
    assert stats["mutations"]["upload"] == STORM_FILES + SECOND_PROJECT_FILES, stats
    assert stats["requests"]["delete"] == 0, stats

    code, _ = daemon.stop(timeout=15)
    assert code == 0
    second_ids = {e["file_id"] for e in read_mapping(two / "mapping.json").values()}
    assert len(second_ids) == SECOND_PROJECT_FILES
    assert_converged(emulator, root, daemon.mapping_path, created, foreign=second_ids)
    first_ids = {e["file_id"] for e in daemon.mapping().values()}
    assert_converged(emulator, root2, two / "mapping.json", files_under(root2), foreign=first_ids)


# ------------------------------------------------------------------ 3. remote deletes by others


def test_scheduled_reconcile_restores_remote_deletes_and_leaves_foreign_files(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    emulator = emulator_factory(**FAST)
    root = tmp_path / "root"
    root.mkdir()
    local = []
    for i in range(20):
        (root / f"doc-{i:02d}.txt").write_text(f"document {i}\n")
        local.append(f"doc-{i:02d}.txt")
    interval = 5
    config = fast_config(tmp_path, root, emulator, reconcile={"interval_s": interval})

    sdk = OpenAI(api_key=emulator.api_key, base_url=emulator.url)
    # Foreign files: one with a name of its own, one with the name (and size) of ours.
    foreign = {
        sdk.files.create(file=("notes-from-elsewhere.txt", b"not syncd's\n"),
                         purpose="file-extract").id,
        sdk.files.create(file=("doc-03.txt", (root / "doc-03.txt").read_bytes()),
                         purpose="file-extract").id,
    }
    daemon = run_daemon(config, emulator.api_key)
    mapped = daemon.mapping()
    assert sorted(mapped) == local

    victims = local[:5]
    for rel in victims:
        sdk.files.delete(mapped[rel]["file_id"])
    emulator.reset_stats()
    removed = time.monotonic()
    wait_for(lambda: all(daemon.mapping().get(r, {}).get("file_id") not in (None,
                                                                            mapped[r]["file_id"])
                         for r in victims), interval + 15, what="remote deletes restored")
    restored_after = time.monotonic() - removed
    assert daemon.logged("reconcile", reason="scheduled"), "restored by something else"
    # One more scheduled reconcile, then nothing of the foreign files may have changed.
    count = len(daemon.logged("reconcile", reason="scheduled"))
    wait_for(lambda: len(daemon.logged("reconcile", reason="scheduled")) > count, interval + 10,
             what="another scheduled reconcile")
    remote = remote_files(emulator)
    assert foreign <= set(remote)
    stats = emulator.stats()
    assert stats["requests"]["delete"] == 0, stats
    assert stats["mutations"]["upload"] == len(victims), stats
    assert_unthrottled(stats)
    assert daemon.stop()[0] == 0
    assert_converged(emulator, root, daemon.mapping_path, local, foreign=foreign)
    print(f"\n[remote deletes] {len(victims)} restored {restored_after:.1f}s after the delete "
          f"(reconcile.interval_s={interval})")


# ------------------------------------------------------------------ 4. root away / emptied


def test_root_moved_away_and_back_then_emptied_deletes_nothing(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    emulator = emulator_factory(**FAST)
    root = tmp_path / "root"
    root.mkdir()
    for i in range(30):
        (root / f"d{i % 3}").mkdir(exist_ok=True)
        (root / f"d{i % 3}" / f"f-{i:02d}.txt").write_text(f"file {i}\n")
    config = fast_config(tmp_path, root, emulator)
    daemon = run_daemon(config, emulator.api_key)
    assert len(daemon.mapping()) == 30
    emulator.reset_stats()

    away = tmp_path / "root-away"
    root.rename(away)
    gone = "the folder is unavailable; nothing will be synced or deleted until it is back"
    wait_for(lambda: daemon.logged(gone), 15,
             what="root-unavailable error logged")
    (away / "added-while-away.txt").write_text("new while the root was elsewhere\n")
    time.sleep(0.5)  # let the daemon see the moved tree for a moment
    assert daemon.alive()
    away.rename(root)
    wait_for(lambda: "added-while-away.txt" in daemon.mapping(), 30,
             what="file added while away synced after the root returned")
    assert len(daemon.mapping()) == 31
    stats = emulator.stats()
    assert stats["requests"]["delete"] == 0, stats

    # Root emptied: every file removed, nothing deleted remotely.
    for path in list(root.rglob("*.txt")):
        path.unlink()
    wait_for(lambda: daemon.logged(events.NOT_SYNCED) or daemon.logged("deletion safety"), 15,
             what="deletion refusal logged")
    time.sleep(2)  # a few more settle periods: still nothing deleted
    stats = emulator.stats()
    assert stats["requests"]["delete"] == 0, stats
    assert len(remote_files(emulator)) == 31
    assert daemon.stop()[0] == 0
