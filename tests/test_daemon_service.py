"""The daemon's control flow against a fake engine: catch-up, READY, watching,
re-queueing, rescans, reload and graceful shutdown."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from syncd.config import (
    ApiConfig,
    Config,
    DaemonConfig,
    ReconcileConfig,
    SyncConfig,
    WatchConfig,
)
from syncd.daemon.notify import Notifier
from syncd.daemon.service import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, Daemon
from tests.helpers import NotifySocket, wait_for


@dataclass
class FakeReport:
    changed_during_upload: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed_paths: set[str] = field(default_factory=set)
    exit_code: int = 0
    root_unavailable: bool = False
    remote_unavailable: bool = False
    aborted: str | None = None
    uploaded_bytes: int = 0
    uploaded: int = 0
    deleted: int = 0
    hashed: int = 0
    duration_s: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {"exit_code": self.exit_code, "errors": self.errors}


class FakeSyncer:
    base_url = ""
    publish_cost_s = 0.0
    batches_config = None  # neither pull nor batch configured
    # No client, listing or vector stores: the status leaves their parts out.
    client = None
    remote = None
    attacher = None

    def batches_step(self, dry_run: bool = False) -> None:
        return None

    def batch_summary(self) -> None:
        return None

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, list[str]]] = []
        self.reconcile_gate: threading.Event | None = None
        self.sync_gate: threading.Event | None = None
        self.in_sync = threading.Event()
        self.changed_once: set[str] = set()
        self.fail_next_sync = 0
        self.fail_next_reconcile = 0
        self.closed = False
        # An engine run stops short with this reason when the key is refused.
        self.refuse_key: str | None = None
        self.published = 0
        self.published_after_sync = False

    def reconcile(
        self, dry_run: bool = False, *, max_delete: object = None, confirm_deletes: bool = False
    ) -> FakeReport:
        with self.lock:
            self.calls.append(("reconcile", []))
            fail = self.fail_next_reconcile > 0
            if fail:
                self.fail_next_reconcile -= 1
        if fail:
            raise ConnectionError("provider unreachable")
        if self.reconcile_gate is not None:
            assert self.reconcile_gate.wait(30)
            self.reconcile_gate = None
        return FakeReport(aborted=self.refuse_key, exit_code=2 if self.refuse_key else 0)

    def sync_paths(
        self, paths: Iterable[str], *, max_delete: object = None, confirm_deletes: bool = False
    ) -> FakeReport:
        batch = list(paths)
        with self.lock:
            self.calls.append(("sync", batch))
            fail = self.fail_next_sync > 0
            if fail:
                self.fail_next_sync -= 1
        self.in_sync.set()
        if self.sync_gate is not None:
            self.sync_gate.wait(30)
        if fail:
            raise ConnectionError("network down")
        if self.refuse_key:
            return FakeReport(aborted=self.refuse_key, exit_code=2)
        changed = [p for p in batch if p in self.changed_once]
        self.changed_once -= set(changed)
        return FakeReport(changed_during_upload=changed)

    def key_refused(self) -> str | None:
        with self.lock:
            self.calls.append(("key", []))
        return self.refuse_key

    def publish_mapping(self) -> None:
        self.published += 1
        self.published_after_sync = not self.in_sync.is_set() or (
            self.sync_gate is None or self.sync_gate.is_set()
        )

    def is_candidate(self, rel_path: str) -> bool:
        name = rel_path.rsplit("/", 1)[-1]
        return not (name.endswith((".part", ".tmp")) or name.startswith("."))

    def can_hold(self, rel_dir: str) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"synced": sum(len(b) for k, b in self.calls if k == "sync")}

    def close(self) -> None:
        self.closed = True

    def waiting_for_space(self) -> list[str]:
        return []

    def stop_soon(self) -> None:
        pass  # its runs are single calls, gated by the test

    # helpers for tests
    def synced(self) -> list[str]:
        with self.lock:
            return [p for k, b in self.calls if k == "sync" for p in b]

    def reconciles(self) -> int:
        with self.lock:
            return sum(1 for k, _ in self.calls if k == "reconcile")


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    s = NotifySocket()
    yield s
    s.close()


def make_config(tmp_path: Path, **overrides: object) -> Config:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    config = Config(
        project="test",
        root=root,
        state_dir=tmp_path / "state",
        mapping_file=tmp_path / "state" / "mapping.json",
        sync=SyncConfig(settle_s=0.05, max_settle_s=2.0),
        watch=WatchConfig(mode="auto", poll_interval_s=0.1),
        reconcile=ReconcileConfig(interval_s=None, cron=None),
        daemon=DaemonConfig(shutdown_timeout_s=5.0, max_pending=1000, publish_interval_s=0.1),
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


class Running:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.daemon.run()

    def stop(self, timeout: float = 15.0) -> int | None:
        self.daemon.request_stop("test")
        self.thread.join(timeout)
        return self.code


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    running: list[Running] = []

    def _start(config: Config, syncer: FakeSyncer, **kwargs: object) -> Running:
        daemon = Daemon(Path("unused.yaml"), config, syncer, **kwargs)  # type: ignore[arg-type]
        r = Running(daemon)
        running.append(r)
        return r

    yield _start
    for r in running:
        if r.thread.is_alive():
            r.stop()


def test_watch_starts_before_catch_up_ends(
    tmp_path: Path, start: Callable[..., Running], notify_socket: NotifySocket
) -> None:
    config = make_config(tmp_path)
    syncer = FakeSyncer()
    syncer.reconcile_gate = threading.Event()
    r = start(config, syncer, notifier=Notifier(notify_socket.path, watchdog_usec=200_000))
    wait_for(lambda: syncer.reconciles() == 1 and r.daemon.watcher.kind is not None)
    # Written while the catch-up scan runs: must not be missed.
    (config.root / "during.txt").write_text("x")
    (config.root / "skip.part").write_text("x")
    wait_for(lambda: len(r.daemon.queue) == 1)
    # READY while the catch-up runs (watching, the key checked first), and saying so.
    wait_for(lambda: notify_socket.has("READY=1"))
    assert syncer.calls[0] == ("key", [])
    assert r.daemon.status_text().startswith("catching up")
    assert not r.daemon.caught_up.is_set()
    assert syncer.reconcile_gate is not None
    syncer.reconcile_gate.set()
    wait_for(lambda: "during.txt" in syncer.synced())
    wait_for(r.daemon.caught_up.is_set)
    # systemd's line leaves "catching up" as soon as it is done, not at the next tick.
    wait_for(notify_socket.caught_up, timeout=5)
    wait_for(lambda: notify_socket.has("WATCHDOG=1"))
    assert notify_socket.has("EXTEND_TIMEOUT_USEC=")
    assert "skip.part" not in syncer.synced()
    assert r.stop() == EXIT_OK
    assert syncer.closed and syncer.published >= 1
    wait_for(lambda: notify_socket.has("STOPPING=1"))
    status = [m for m in notify_socket.messages if "STATUS=" in m]
    assert any("queue" in m and "synced" in m for m in status)


def test_coalesced_and_requeued_after_change_during_upload(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    config = make_config(tmp_path)
    syncer = FakeSyncer()
    syncer.changed_once = {"big.bin"}
    r = start(config, syncer)
    wait_for(lambda: r.daemon.ready.is_set())
    with open(config.root / "big.bin", "wb") as fh:
        for _ in range(20):
            fh.write(b"x" * 1000)
            fh.flush()
    wait_for(lambda: syncer.synced().count("big.bin") == 2)
    # One upload for the whole write, one more for the change reported mid-upload.
    time.sleep(0.3)  # negative check: nothing further arrives
    assert syncer.synced().count("big.bin") == 2
    assert r.stop() == EXIT_OK


def test_folder_moved_in_is_scanned_and_removed_folder_delivered(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    config = make_config(tmp_path)
    outside = tmp_path / "outside" / "batch"
    (outside / "deep").mkdir(parents=True)
    for name in ("a.txt", "deep/b.txt", ".hidden", "c.tmp"):
        (outside / name).write_text(name)
    syncer = FakeSyncer()
    r = start(config, syncer)
    wait_for(lambda: r.daemon.ready.is_set())
    os.rename(outside, config.root / "batch")
    wait_for(lambda: {"batch/a.txt", "batch/deep/b.txt"} <= set(syncer.synced()))
    assert not {"batch/.hidden", "batch/c.tmp"} & set(syncer.synced())
    os.rename(config.root / "batch", tmp_path / "outside" / "gone")
    wait_for(lambda: "batch" in syncer.synced())
    assert r.stop() == EXIT_OK


def test_overflow_switches_to_rescan(tmp_path: Path, start: Callable[..., Running]) -> None:
    config = make_config(tmp_path, daemon=DaemonConfig(shutdown_timeout_s=5.0, max_pending=10))
    syncer = FakeSyncer()
    r = start(config, syncer)
    wait_for(lambda: r.daemon.ready.is_set())
    # Block the worker so that events pile up beyond the cap.
    syncer.sync_gate = threading.Event()
    (config.root / "first.txt").write_text("x")
    wait_for(syncer.in_sync.is_set)
    for i in range(200):
        (config.root / f"f{i}.txt").write_text("x")
    wait_for(lambda: r.daemon.queue.overflowed)
    syncer.sync_gate.set()
    wait_for(lambda: syncer.reconciles() >= 2)
    assert len(syncer.synced()) < 50
    assert r.stop() == EXIT_OK


def test_scheduled_reconcile_runs(tmp_path: Path, start: Callable[..., Running]) -> None:
    config = make_config(tmp_path, reconcile=ReconcileConfig(interval_s=0.2, cron=None))
    syncer = FakeSyncer()
    r = start(config, syncer)
    wait_for(lambda: syncer.reconciles() >= 3)
    assert r.stop() == EXIT_OK


def test_sync_error_is_retried(tmp_path: Path, start: Callable[..., Running]) -> None:
    config = make_config(tmp_path)
    syncer = FakeSyncer()
    syncer.fail_next_sync = 1
    r = start(config, syncer)
    wait_for(lambda: r.daemon.ready.is_set())
    (config.root / "a.txt").write_text("x")
    wait_for(lambda: syncer.synced().count("a.txt") == 2, timeout=20)
    assert r.stop() == EXIT_OK


def test_failed_catch_up_is_retried(tmp_path: Path, start: Callable[..., Running]) -> None:
    config = make_config(tmp_path)
    syncer = FakeSyncer()
    syncer.fail_next_reconcile = 1
    r = start(config, syncer)
    wait_for(lambda: r.daemon.ready.is_set())
    (config.root / "a.txt").write_text("x")
    wait_for(lambda: syncer.reconciles() == 2 and "a.txt" in syncer.synced(), timeout=20)
    assert r.stop() == EXIT_OK


def test_shutdown_lets_in_flight_call_finish(tmp_path: Path, start: Callable[..., Running]) -> None:
    config = make_config(tmp_path)
    syncer = FakeSyncer()
    syncer.sync_gate = threading.Event()
    r = start(config, syncer)
    wait_for(lambda: r.daemon.ready.is_set())
    (config.root / "a.txt").write_text("x")
    wait_for(syncer.in_sync.is_set)
    stopper = threading.Thread(target=r.stop)
    stopper.start()
    wait_for(lambda: r.daemon.watcher.kind is not None and not r.daemon.watcher.is_alive)
    assert r.code is None and not syncer.closed
    syncer.sync_gate.set()
    stopper.join(15)
    assert r.code == EXIT_OK
    assert syncer.closed and syncer.published >= 1 and syncer.published_after_sync


def test_shutdown_timeout_is_bounded(tmp_path: Path, start: Callable[..., Running]) -> None:
    config = make_config(tmp_path, daemon=DaemonConfig(shutdown_timeout_s=0.3))
    syncer = FakeSyncer()
    syncer.sync_gate = threading.Event()
    r = start(config, syncer)
    wait_for(lambda: r.daemon.ready.is_set())
    (config.root / "a.txt").write_text("x")
    wait_for(syncer.in_sync.is_set)
    began = time.monotonic()
    assert r.stop() == EXIT_FAILED
    assert time.monotonic() - began < 5
    assert not syncer.closed  # never close the engine under a running call
    syncer.sync_gate.set()


CONFIG_YAML = """\
project: test
root: {root}
state_dir: {state}
sync:
  settle_s: {settle}
reconcile:
  interval_s: 3600
"""


def test_reload_applies_valid_and_keeps_old_on_invalid(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    from syncd.config import load_config

    root = tmp_path / "root"
    root.mkdir()
    path = tmp_path / "syncd.yaml"
    path.write_text(CONFIG_YAML.format(root=root, state=tmp_path / "state", settle=0.05))
    config = load_config(path)
    syncer = FakeSyncer()
    daemon = Daemon(path, config, syncer)
    path.write_text("project: [unclosed\n")
    assert daemon.reload() is False
    assert daemon.config is config
    path.write_text(CONFIG_YAML.format(root=root, state=tmp_path / "state", settle=7))
    assert daemon.reload() is True
    assert daemon.config.sync.settle_s == 7
    assert daemon.queue.timing.settle_s == 7
    path.write_text(
        CONFIG_YAML.format(root=root, state=tmp_path / "state", settle=1).replace(
            "interval_s: 3600", "cron: 'not a cron'"
        )
    )
    assert daemon.reload() is False
    assert daemon.config.sync.settle_s == 7


# ------------------------------------------------------------------ health: key and root


def test_refused_key_at_start_is_never_ready_and_exits_2(
    tmp_path: Path, start: Callable[..., Running], notify_socket: NotifySocket
) -> None:
    key_file = tmp_path / "dashscope-api-key"
    api = ApiConfig(base_url="https://example.invalid/v1", api_key_file=key_file)
    config = make_config(tmp_path, api=api)
    syncer = FakeSyncer()
    syncer.refuse_key = "Incorrect API key provided status=401"
    r = start(config, syncer, notifier=Notifier(notify_socket.path))
    r.thread.join(15)
    assert r.code == EXIT_REFUSED
    assert not notify_socket.has("READY=1")
    status = [line for line in notify_socket.lines if line.startswith("STATUS=failed")]
    said = f"api.api_key_file: the remote refused the key, which came from file {key_file}"
    assert status and said in status[-1], status
    assert syncer.closed


def test_key_refused_later_exits_2_with_a_status_saying_so(
    tmp_path: Path, start: Callable[..., Running], notify_socket: NotifySocket
) -> None:
    api = ApiConfig(base_url="https://example.invalid/v1", api_key_env="DASHSCOPE_API_KEY")
    config = make_config(tmp_path, api=api)
    syncer = FakeSyncer()
    r = start(config, syncer, notifier=Notifier(notify_socket.path))
    wait_for(lambda: notify_socket.has("READY=1"))
    syncer.refuse_key = "Incorrect API key provided status=401"
    (config.root / "a.txt").write_text("x")
    r.thread.join(15)
    assert r.code == EXIT_REFUSED
    status = [line for line in notify_socket.lines if line.startswith("STATUS=failed")]
    assert status and "environment variable DASHSCOPE_API_KEY" in status[-1], status


def test_missing_root_at_start_is_waited_for_then_synced(
    tmp_path: Path, start: Callable[..., Running], notify_socket: NotifySocket
) -> None:
    config = make_config(tmp_path, sync=SyncConfig(settle_s=0.3, max_settle_s=5.0))
    config.root.rmdir()
    syncer = FakeSyncer()
    r = start(config, syncer, notifier=Notifier(notify_socket.path))
    # Up and doing its job, which is waiting: READY, a status naming the path, no engine call.
    wait_for(lambda: notify_socket.has("READY=1"))
    wait_for(lambda: notify_socket.has(f"STATUS=waiting for root {config.root}"))
    assert r.thread.is_alive() and syncer.reconciles() == 0
    config.root.mkdir()
    (config.root / "a.txt").write_text("x")
    wait_for(lambda: syncer.reconciles() == 1, timeout=15)
    (config.root / "b.txt").write_text("x")
    wait_for(lambda: "b.txt" in syncer.synced())
    assert r.stop() == EXIT_OK


def test_returning_root_is_reconciled_only_once_settled(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    settle_s = 0.5
    config = make_config(tmp_path, sync=SyncConfig(settle_s=settle_s, max_settle_s=30.0))
    syncer = FakeSyncer()
    r = start(config, syncer)
    wait_for(lambda: r.daemon.ready.is_set())
    away = tmp_path / "away"
    config.root.rename(away)
    wait_for(lambda: r.daemon.status_text().startswith("waiting for root"))
    away.rename(config.root)
    # Files keep arriving faster than settle_s: no reconcile while they do.
    for i in range(12):
        (config.root / f"copied-{i}.txt").write_text("x")
        time.sleep(settle_s / 3)
        assert syncer.reconciles() == 1, f"reconciled during the copy, after file {i}"
    wait_for(lambda: syncer.reconciles() == 2, timeout=15)
    assert r.stop() == EXIT_OK
