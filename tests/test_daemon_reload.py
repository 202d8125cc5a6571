"""A SIGHUP applies a configuration whole, or not at all.

A reload that changes a key only a restart applies (``root`` first of all) changes
nothing: the daemon keeps watching and syncing the folder it runs on, and says which
keys wait for a restart (log, systemd STATUS, the control socket's status and
``syncd status``). A reload is compared with the running configuration, so putting a
running value back is no change. An invalid file changes nothing either.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

from syncd.config import load_config
from syncd.daemon.control import daemon_status
from syncd.daemon.service import Daemon
from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux daemon")


class QuietSyncer:
    """Just enough engine for a daemon that is never started."""

    base_url = ""
    # No client, listing or vector stores: the status leaves their parts out.
    client = None
    remote = None
    attacher = None

    def is_candidate(self, rel_path: str) -> bool:
        return True

    def can_hold(self, rel_dir: str) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        return {}


YAML = """\
project: test
root: {root}
state_dir: {state}
limits:
  workers: {workers}
sync:
  settle_s: {settle}
reconcile:
  interval_s: 3600
"""


def write(path: Path, root: Path, *, settle: float = 0.5, workers: int = 8) -> None:
    path.write_text(
        YAML.format(root=root, state=path.parent / "state", settle=settle, workers=workers)
    )


def daemon_on(tmp_path: Path) -> tuple[Daemon, Path, Path]:
    root = tmp_path / "root"
    root.mkdir()
    path = tmp_path / "syncd.yaml"
    write(path, root)
    return Daemon(path, load_config(path), QuietSyncer()), path, root  # type: ignore[arg-type]


def warnings(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["log_level"] in ("warning", "error")]


def test_a_new_root_with_other_changes_changes_nothing(tmp_path: Path) -> None:
    daemon, path, _root = daemon_on(tmp_path)
    running = daemon.config
    other = tmp_path / "other"
    other.mkdir()
    write(path, other, settle=7)
    with structlog.testing.capture_logs() as logs:
        assert daemon.reload() is False
    # Nothing applied, not even the key a SIGHUP could apply on its own.
    assert daemon.config is running
    assert daemon.worker.config is running
    assert daemon.queue.timing.settle_s == 0.5
    assert daemon.worker._reloaded is None
    (said,) = warnings(logs)
    assert said["keys"] == ["root"]
    assert f"{path}:2: root" in said["event"]
    assert "restart syncd to apply" in said["event"] and "sync.settle_s" in said["event"]
    assert f"still syncing {running.root}" in said["event"]
    status = daemon.status()
    assert status["config"]["restart_needed"] == ["root"]
    assert "restart syncd to apply" in status["last_error"]["message"]
    assert "restart needed to apply: root" in daemon.status_text()


def test_a_mistyped_root_is_named_and_changes_nothing(tmp_path: Path) -> None:
    daemon, path, root = daemon_on(tmp_path)
    write(path, tmp_path / "rooot")
    with structlog.testing.capture_logs() as logs:
        assert daemon.reload() is False
    assert daemon.config.root == root
    (said,) = warnings(logs)
    assert f"the new root {tmp_path / 'rooot'} is not a folder" in said["event"]


def test_putting_a_running_value_back_is_no_change(tmp_path: Path) -> None:
    daemon, path, root = daemon_on(tmp_path)
    write(path, root, workers=4)
    with structlog.testing.capture_logs() as logs:
        assert daemon.reload() is False
    assert [e["keys"] for e in warnings(logs)] == [["limits.workers"]]
    assert daemon.config.limits.workers == 8
    # workers back to the value the daemon runs with, and a reloadable change beside it.
    write(path, root, workers=8, settle=7)
    with structlog.testing.capture_logs() as logs:
        assert daemon.reload() is True
    assert warnings(logs) == []
    assert daemon.config.sync.settle_s == 7 and daemon.queue.timing.settle_s == 7
    assert daemon.status()["config"]["restart_needed"] == []
    assert "restart" not in daemon.status_text()


def test_an_invalid_value_is_named_at_its_line_and_changes_nothing(tmp_path: Path) -> None:
    daemon, path, _root = daemon_on(tmp_path)
    running = daemon.config
    path.write_text(path.read_text().replace("settle_s: 0.5", "settle_s: -1"))
    with structlog.testing.capture_logs() as logs:
        assert daemon.reload() is False
    assert daemon.config is running and daemon.queue.timing.settle_s == 0.5
    (said,) = warnings(logs)
    assert f"{path}:7: sync.settle_s" in said["event"]
    assert "nothing changed" in said["event"]
    assert daemon.status()["config"]["reload"] == "invalid"


# ------------------------------------------------------------------ syncd run


CONFIG = """\
project: reload
root: {root}
state_dir: {state}
sync:
  settle_s: 0.2
  max_settle_s: 5
watch:
  mode: auto
  poll_interval_s: {poll}
api:
  embedded_port: {port}
daemon:
  shutdown_timeout_s: 10
"""


def env() -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(REPO)}
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "DASHSCOPE_API_KEY"):
        out.pop(key, None)
    return out


def mapping(state: Path) -> dict[str, Any]:
    try:
        files = json.loads((state / "mapping.json").read_text())["files"]
    except (OSError, ValueError, KeyError):
        return {}
    assert isinstance(files, dict)
    return files


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def syncd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        env=env(),
        cwd=str(REPO),
        timeout=120,
    )


class Running:
    """``syncd run`` on the embedded emulator, its output in a log file."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.old, self.new, self.state = tmp_path / "old", tmp_path / "new", tmp_path / "state"
        self.old.mkdir()
        self.new.mkdir()
        (self.old / "a.txt").write_text("first")
        (self.new / "b.txt").write_text("in the new root")
        self.config = tmp_path / "syncd.yaml"
        self.port = free_port()
        self.running = self.text(self.old)
        self.config.write_text(self.running)
        self.log = tmp_path / "daemon.log"
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(self.config)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env(),
                cwd=str(REPO),
            )
        wait_for(lambda: "a.txt" in self.mapping(), timeout=90, what="the catch-up")

    def text(self, root: Path, poll: float = 0.2) -> str:
        return CONFIG.format(root=root, state=self.state, poll=poll, port=self.port)

    def mapping(self) -> dict[str, Any]:
        return mapping(self.state)

    def logged(self) -> str:
        return self.log.read_text()

    def reload(self, text: str) -> None:
        self.config.write_text(text)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_sighup_with_a_new_root_keeps_syncing_the_old_one(tmp_path: Path) -> None:
    run = Running(tmp_path)
    try:
        # A new root, and a watch setting a SIGHUP could apply on its own.
        run.reload(run.text(run.new, poll=0.3))
        wait_for(lambda: "restart" in run.logged(), timeout=60, what="the reload handled")
        # The old root is still the one watched and synced: new and edited files go up,
        # also once any rescan the reload may have started is over (the next scheduled
        # one is an hour away, so only a watch can find them).
        (run.old / "a2.txt").write_text("new in the old root")
        wait_for(lambda: "a2.txt" in run.mapping(), timeout=60, what="a2.txt synced")
        (run.old / "a4.txt").write_text("newer in the old root")
        (run.old / "a.txt").write_text("edited in the old root")
        wait_for(
            lambda: (
                "a4.txt" in run.mapping()
                and run.mapping()["a.txt"]["sha256"] == sha("edited in the old root")
            ),
            timeout=60,
            what="the old root's new and edited files synced",
        )
        assert "b.txt" not in run.mapping()
        assert "restart syncd to apply" in run.logged()
        live = daemon_status(run.state)
        assert live["config"]["restart_needed"] == ["root"], live
        shown = syncd("status", "-c", str(run.config))
        assert "restart syncd to apply" in shown.stdout, shown.stdout + shown.stderr

        # The running values back: nothing waits for a restart any more.
        run.reload(run.running)
        wait_for(
            lambda: daemon_status(run.state)["config"]["restart_needed"] == [],
            timeout=60,
            what="the pending restart cleared",
        )
        assert set(run.mapping()) == {"a.txt", "a2.txt", "a4.txt"}
        assert run.stop() == 0
    finally:
        run.kill()


def test_sighup_with_a_mistyped_root_changes_nothing(tmp_path: Path) -> None:
    run = Running(tmp_path)
    try:
        run.reload(run.text(tmp_path / "nwe"))
        wait_for(lambda: "restart" in run.logged(), timeout=60, what="the reload handled")
        (run.old / "a3.txt").write_text("after the typo")
        wait_for(lambda: "a3.txt" in run.mapping(), timeout=60, what="syncing after the typo")
        # A reconcile asked of the daemon runs on the folder it syncs.
        done = syncd("reconcile", "-c", str(run.config))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "reconciled by the running daemon" in done.stderr
        assert set(run.mapping()) == {"a.txt", "a3.txt"}
        assert daemon_status(run.state)["phase"] != "waiting for root"
        assert f"the new root {tmp_path / 'nwe'} is not a folder" in run.logged()
        assert run.stop() == 0
    finally:
        run.kill()
