"""``syncd run`` as systemd sees it when things go wrong: a refused key, a root that is
missing at start or comes back gradually, a remote that is down. Real processes, the
emulator over HTTP, a real notify socket; checked from the outside only."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import KEY_ENV, read_mapping
from tests.helpers import NotifySocket, wait_for
from tests.test_daemon_mustshow import (  # noqa: F401  (run_daemon is a fixture)
    FAST,
    REPO,
    RunningDaemon,
    daemon_env,
    fast_config,
    run_daemon,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux daemon")

UNAVAILABLE = "the folder is unavailable; nothing will be synced or deleted until it is back"


def statuses(notify: NotifySocket) -> list[str]:
    return [line[len("STATUS=") :] for line in notify.lines if line.startswith("STATUS=")]


def test_refused_key_is_never_ready_and_exits_2(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emulator = emulator_factory(**FAST)
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    config = fast_config(tmp_path, root, emulator)
    wrong = "sk-not-a-key-of-this-account"
    notify = NotifySocket()
    try:
        log = tmp_path / "daemon.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(config)],
                stdout=fh, stderr=subprocess.STDOUT, cwd=str(REPO),
                env=daemon_env(wrong, notify, None),
            )  # fmt: skip
        code = proc.wait(timeout=60)
        text = log.read_text()
        assert code == 2, text
        assert not notify.has("READY=1")
        assert any(s.startswith("failed: ") and "refused the key" in s
                   for s in statuses(notify))  # fmt: skip
        refused = [line for line in text.splitlines() if "refused the key" in line]
        assert len(refused) == 1 and f"environment variable {KEY_ENV}" in refused[0], text
        assert "Traceback" not in text and wrong not in text
    finally:
        notify.close()


def test_missing_root_at_start_is_waited_for_then_synced(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],  # noqa: F811
) -> None:
    emulator = emulator_factory(**FAST)
    root = tmp_path / "not-mounted-yet"
    config = fast_config(tmp_path, root, emulator)
    daemon = run_daemon(config, emulator.api_key)  # returns once READY=1 arrived
    wait_for(lambda: any(s.startswith(f"waiting for root {root}") for s in statuses(daemon.notify)),
             15, what="STATUS naming the missing root")
    assert len(daemon.logged(UNAVAILABLE, root=str(root))) == 1
    root.mkdir()
    (root / "hello.txt").write_text("hello\n")
    wait_for(lambda: "hello.txt" in daemon.mapping(), 30, what="file synced once the root appeared")
    code, _ = daemon.stop()
    assert code == 0
    assert "Traceback" not in daemon.log.read_text()


def test_root_restored_file_by_file_deletes_and_uploads_nothing(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],  # noqa: F811
) -> None:
    emulator = emulator_factory(**FAST)
    root = tmp_path / "root"
    names = [f"d{i % 2}/doc-{i:02d}.txt" for i in range(20)]
    for i, rel in enumerate(names):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"document {i}\n" * (i + 1))
    backup = tmp_path / "backup"
    shutil.copytree(root, backup)
    # max_delete allows everything: only the daemon's patience can keep the files.
    config = fast_config(tmp_path, root, emulator, sync={"settle_s": 2.0, "max_delete": "100%"})
    daemon = run_daemon(config, emulator.api_key)
    before = {path: entry["file_id"] for path, entry in daemon.mapping().items()}
    assert sorted(before) == sorted(names)
    emulator.reset_stats()

    reconciles = len(daemon.logged("reconciled"))
    shutil.rmtree(root)
    wait_for(lambda: daemon.logged(UNAVAILABLE), 15, what="root-unavailable error logged")
    root.mkdir()
    started = time.monotonic()
    for rel in names:  # a copy restoring the folder over ~10 s
        (root / rel).parent.mkdir(exist_ok=True)
        shutil.copyfile(backup / rel, root / rel)
        time.sleep(0.5)
    copy_s = time.monotonic() - started
    wait_for(lambda: len(daemon.logged("reconciled")) > reconciles, 30,
             what="a reconcile once the root is back")
    stats = emulator.stats()
    assert stats["requests"]["delete"] == 0, stats
    assert stats["mutations"]["upload"] == 0, stats
    after = {path: entry["file_id"] for path, entry in read_mapping(daemon.mapping_path).items()}
    assert after == before
    code, _ = daemon.stop()
    assert code == 0
    print(f"\n[root restored] 20 files over {copy_s:.1f}s: 0 deletes, 0 uploads, ids unchanged")


def test_remote_down_status_says_so_and_sigterm_acts_within_2s(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],  # noqa: F811
) -> None:
    emulator = emulator_factory(**FAST)
    root = tmp_path / "root"
    root.mkdir()
    (root / "before.txt").write_text("before\n")
    config = fast_config(tmp_path, root, emulator)
    daemon = run_daemon(config, emulator.api_key)
    emulator.stop()
    (root / "while-down.txt").write_text("written while the remote is down\n")
    wait_for(lambda: any(s.startswith("remote unreachable since") for s in statuses(daemon.notify)),
             30, what="STATUS saying the remote is unreachable")
    assert daemon.alive()
    code, took = daemon.stop(timeout=10)
    print(f"\n[remote down] SIGTERM -> exit {code} in {took:.2f}s")
    assert code == 0, daemon.log.read_text()[-3000:]
    assert took <= 2.0, took
