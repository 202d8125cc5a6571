"""A state database deleted under syncd is noticed, and what the project uploaded is
taken back from the claims registry instead of being uploaded a second time."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    build_flat_tree,
    fast_emulator,
    read_mapping,
    reconcile,
    remote_files,
    run_syncd,
)
from tests.helpers import wait_for
from tests.test_daemon_mustshow import RunningDaemon, fast_config, run_daemon

__all__ = ["run_daemon"]


def delete_state(state_dir: Path) -> None:
    for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
        (state_dir / name).unlink(missing_ok=True)


def uploads(emu: EmulatorHandle) -> int:
    return int(emu.stats()["mutations"].get("upload", 0))


def test_a_state_deleted_between_runs_adopts_what_the_project_uploaded(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    paths = build_flat_tree(root, 10)
    cfg = fast_config(tmp_path, root, emu)
    assert reconcile(cfg, emu.api_key).returncode == 0
    before = read_mapping(tmp_path / "mapping.json")

    delete_state(tmp_path / "state")
    emu.reset_stats()
    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 0, run.output
    assert run.json["adopted"] == 10 and run.json["uploaded"] == 0
    assert uploads(emu) == 0
    logged = run_syncd("log", cfg, "--json", key=None).stdout.splitlines()
    assert [json.loads(line)["action"] for line in logged] == ["adopted"] * 10
    assert len(remote_files(emu)) == 10
    assert read_mapping(tmp_path / "mapping.json") == before
    assert sorted(before) == sorted(paths)


def test_a_state_deleted_under_the_daemon_is_noticed_and_nothing_is_uploaded_twice(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 10)
    cfg = fast_config(tmp_path, root, emu)
    daemon = run_daemon(cfg, emu.api_key)
    wait_for(lambda: len(daemon.mapping()) == 10, 60, what="10 files mapped")
    ids = {p: e["file_id"] for p, e in daemon.mapping().items()}

    delete_state(tmp_path / "state")
    emu.reset_stats()
    (root / "new.txt").write_text("written after the state was lost\n")
    wait_for(lambda: len(daemon.mapping()) == 11, 60, what="the new file mapped")
    assert uploads(emu) == 1
    assert len(remote_files(emu)) == 11
    assert {p: e["file_id"] for p, e in daemon.mapping().items() if p != "new.txt"} == ids
    assert (tmp_path / "state" / "state.sqlite3").exists()

    # A restart reads the new state: nothing to upload, nothing refused.
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0
    delete_state(tmp_path / "state")  # and once more while stopped
    run_daemon(cfg, emu.api_key)
    again = reconcile(cfg, emu.api_key)
    assert again.returncode == 0, again.output
    assert uploads(emu) == 1
    assert len(remote_files(emu)) == 11


def test_a_damaged_state_says_how_to_recover_and_recovery_uploads_nothing(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 6)
    cfg = fast_config(tmp_path, root, emu)
    assert reconcile(cfg, emu.api_key).returncode == 0
    db = tmp_path / "state" / "state.sqlite3"
    with db.open("r+b") as fh:
        fh.truncate(5000)
    shown = run_syncd("status", cfg, key=None)
    assert shown.returncode == 1
    assert str(db) in shown.stderr and "move the file aside" in shown.stderr
    assert "Traceback" not in shown.stderr

    db.rename(tmp_path / "state.damaged")
    emu.reset_stats()
    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 0, run.output
    assert run.json["adopted"] == 6 and uploads(emu) == 0
    assert len(remote_files(emu)) == 6
