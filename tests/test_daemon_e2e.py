"""``syncd run`` as a real process: real engine, embedded emulator, real signals,
and a real notify socket standing in for systemd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import NotifySocket, free_port, wait_for

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux daemon")


CONFIG = """\
project: e2e
root: {root}
state_dir: {state}
sync:
  settle_s: 0.2
  max_settle_s: 5
watch:
  mode: {mode}
  poll_interval_s: 0.2
api:
  embedded_port: {port}
daemon:
  shutdown_timeout_s: 10
"""


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    s = NotifySocket()
    yield s
    s.close()


def start(config: Path, notify: NotifySocket | None, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "DASHSCOPE_API_KEY"):
        env.pop(key, None)
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.path
        env["WATCHDOG_USEC"] = "1000000"
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "-c", str(config)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO),
        )


def mapping(state: Path) -> dict[str, object]:
    try:
        files = json.loads((state / "mapping.json").read_text())["files"]
    except (OSError, ValueError, KeyError):
        return {}
    assert isinstance(files, dict)
    return files


@pytest.mark.parametrize("mode", ["auto", "polling"])
def test_run_watch_reload_and_stop(tmp_path: Path, notify: NotifySocket, mode: str) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    (root / "before.txt").write_text("present at start")
    config = tmp_path / "syncd.yaml"
    text = CONFIG.format(root=root, state=state, port=free_port(), mode=mode)
    config.write_text(text)
    log = tmp_path / "daemon.log"
    proc = start(config, notify, log)
    try:
        wait_for(lambda: notify.has("READY=1"), what="READY=1")
        wait_for(notify.caught_up, what="the catch-up")
        assert "before.txt" in mapping(state)
        wait_for(lambda: notify.has("WATCHDOG=1"), what="watchdog ping")

        (root / "new.txt").write_text("written after start")
        (root / "ignored.part").write_text("partial download")
        wait_for(lambda: "new.txt" in mapping(state), what="new file published")

        (root / "new.txt").rename(root / "renamed.txt")
        wait_for(
            lambda: "renamed.txt" in mapping(state) and "new.txt" not in mapping(state),
            what="rename published",
        )
        assert "ignored.part" not in mapping(state)

        second = subprocess.run(
            [sys.executable, "-m", "syncd", "run", "-c", str(config)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=str(REPO),
            timeout=60,
        )
        assert second.returncode == 4
        assert "another syncd process" in second.stderr and str(state) in second.stderr

        config.write_text("project: [broken\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in log.read_text(), what="reload failure logged")
        assert proc.poll() is None
        config.write_text(text)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert notify.has("STOPPING=1")
        assert set(mapping(state)) == {"before.txt", "renamed.txt"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()


def test_invalid_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "syncd.yaml"
    config.write_text(
        "project: x\nroot: /nonexistent\nstate_dir: /tmp/x\nreconcile:\n  cron: 'nope'\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "syncd", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=str(REPO),
        timeout=60,
    )
    assert out.returncode == 2
    assert "cron" in out.stderr


def test_reloaded_rules_apply_without_a_restart(tmp_path: Path) -> None:
    """SIGHUP with new rules: what they now select is synced by a rescan, the folders
    they open are watched from then on, and what they leave out leaves the mapping."""
    root, state = tmp_path / "root", tmp_path / "state"
    (root / "drafts").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "c.txt"):
        (root / name).write_text(f"kept {name}")
    (root / "drafts" / "one.txt").write_text("a draft")
    config = tmp_path / "syncd.yaml"
    base = CONFIG.format(root=root, state=state, port=free_port(), mode="auto")
    excluding = base + "rules:\n  exclude: ['drafts/**']\n"
    config.write_text(excluding)
    log = tmp_path / "daemon.log"
    proc = start(config, None, log)
    try:
        wait_for(lambda: {"a.txt", "b.txt", "c.txt"} <= set(mapping(state)), timeout=60,
                 what="the first reconcile")  # fmt: skip
        assert "drafts/one.txt" not in mapping(state)

        config.write_text(base)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "drafts/one.txt" in mapping(state), timeout=60,
                 what="a file the new rules select, synced by the rescan")  # fmt: skip
        # Written after the reload, in a folder the old rules kept unwatched; the next
        # scheduled reconcile is an hour away, so only a watch can find it.
        (root / "drafts" / "two.txt").write_text("another draft")
        wait_for(lambda: "drafts/two.txt" in mapping(state), timeout=60,
                 what="a file in a newly watched folder")  # fmt: skip

        config.write_text(excluding)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not any(p.startswith("drafts/") for p in mapping(state)), timeout=60,
                 what="the drafts out of the mapping")  # fmt: skip
        assert set(mapping(state)) == {"a.txt", "b.txt", "c.txt"}
        assert "after a restart" not in log.read_text()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
