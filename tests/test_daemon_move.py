"""A folder renamed under the running daemon keeps its files' remote copies.

The old folder's paths and the new folder's files must reach the engine as one run, so
that each moved file takes the file id of the path it was: no upload, no delete, and no
deletion-safety refusal however many files the folder holds (more than one batch).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import KEY_ENV, fast_emulator, read_mapping, reconcile, write_config
from tests.helpers import NotifySocket, wait_for

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux daemon")

KEEP = 300
# More than one batch (128 paths): the move must not be split across engine calls.
MOVED = 150


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[[Path, str], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    notify = NotifySocket()

    def start(config: Path, key: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(REPO), KEY_ENV: key, "NOTIFY_SOCKET": notify.path}
        for name in ("WATCHDOG_USEC", "WATCHDOG_PID", "DASHSCOPE_API_KEY"):
            env.pop(name, None)
        with (config.parent / "daemon.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), env=env,
            )
        procs.append(proc)
        wait_for(lambda: notify.caught_up() or proc.poll() is not None, 60, what="the catch-up")
        assert proc.poll() is None, (config.parent / "daemon.log").read_text()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    notify.close()


def mutations(emulator: EmulatorHandle) -> dict[str, int]:
    counts: dict[str, Any] = emulator.stats()["mutations"]
    return {"upload": int(counts.get("upload", 0)), "delete": int(counts.get("delete", 0))}


def ids(mapping_path: Path, prefix: str) -> dict[str, str]:
    """path below ``prefix`` -> file_id, as the published mapping says."""
    try:
        files = read_mapping(mapping_path)
    except (OSError, ValueError, KeyError):
        return {}
    return {p[len(prefix) :]: e["file_id"] for p, e in files.items() if p.startswith(prefix)}


@pytest.mark.parametrize("mode", ["auto", "polling"])
def test_folder_rename_uploads_and_deletes_nothing(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    daemon: Callable[[Path, str], subprocess.Popen[bytes]],
    mode: str,
) -> None:
    emulator = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    (root / "keep").mkdir(parents=True)
    (root / "C" / "sub").mkdir(parents=True)
    for i in range(KEEP):
        (root / "keep" / f"k{i}.txt").write_text(f"keep {i}\n")
    for i in range(MOVED):
        folder = root / "C" / ("sub" if i % 3 == 0 else "")
        (folder / f"c{i}.txt").write_text(f"move {i}\n")
    config = write_config(
        tmp_path, root, emulator,
        sync={"settle_s": 0.5, "max_settle_s": 30},
        daemon={"publish_interval_s": 0.5, "shutdown_timeout_s": 8},
        watch={"mode": mode, "poll_interval_s": 0.3},
    )
    run = reconcile(config, emulator.api_key)
    assert run.returncode == 0, run.output
    mapping_path = tmp_path / "mapping.json"
    before = ids(mapping_path, "C/")
    assert len(before) == MOVED
    daemon(config, emulator.api_key)
    counts = mutations(emulator)
    assert counts["upload"] == KEEP + MOVED

    for target in ("D", "E/deeper"):
        source = next(p for p in ("C", "D") if (root / p).exists())
        (root / target).parent.mkdir(exist_ok=True)
        (root / source).rename(root / target)
        wait_for(
            lambda src=source, dst=target: len(ids(mapping_path, f"{dst}/")) == MOVED
            and not ids(mapping_path, f"{src}/"),
            60,
            what=f"the mapping to follow {source} -> {target}",
        )
        # Each moved file took the id its old path had: nothing went up, nothing was deleted.
        assert ids(mapping_path, f"{target}/") == before
        assert mutations(emulator) == counts
    assert len(ids(mapping_path, "keep/")) == KEEP
