"""Identical content shares one remote file: quota economy (issue: dedupe).

Real CLI runs and a real daemon against the emulator; the account's true contents
come from the emulator's control API.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    read_mapping,
    reconcile,
    spawn_reconcile,
    status,
    syncd_cmd,
    syncd_env,
    write_config,
)
from tests.helpers import wait_for

KEY = "sk-dedupe-51c2"


def emulator(factory: Callable[..., EmulatorHandle], **flags: Any) -> EmulatorHandle:
    rates = {"upload_rate": 200, "read_rate": 200, "delete_rate": 200}
    return factory(api_keys=[KEY], seed=11, **{**rates, **flags})


def truth(emu: EmulatorHandle) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in emu.truth_files(KEY)}


def copies(root: Path, paths: int, contents: int, *, folder: str = "") -> list[str]:
    """``paths`` files spread over ``contents`` distinct contents."""
    out = []
    for i in range(paths):
        rel = f"{folder}d{i % 7}/copy-{i:04d}.txt"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"shared content number {i % contents}\n" * 3)
        out.append(rel)
    return out


def assert_mapping_matches(emu: EmulatorHandle, root: Path, mapping_path: Path) -> None:
    remote = truth(emu)
    mapping = read_mapping(mapping_path)
    local = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert sorted(mapping) == local
    contents: dict[str, bytes] = {}
    for path, entry in mapping.items():
        assert entry["file_id"] in remote, path
        data = (root / path).read_bytes()
        # Two paths share an id only if they hold the same bytes.
        assert contents.setdefault(entry["file_id"], data) == data
    assert set(contents) == set(remote), "remote files no path holds (orphans)"


def sharing(config: Path) -> dict[str, int]:
    """What dedupe saves, as `syncd status --json` tells it."""
    result: dict[str, int] = status(config)["sharing"]
    return result


def test_copies_share_one_remote_file_and_go_with_their_last_path(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    paths = copies(root, 100, 10)
    cfg = write_config(tmp_path, root, emu, sync={"max_delete": "100%"})

    dry = reconcile(cfg, KEY, "--dry-run").json
    assert len(dry["planned"]["upload"]) == 10 and len(dry["planned"]["share"]) == 90
    assert truth(emu) == {}

    run = reconcile(cfg, KEY)
    assert run.returncode == 0, run.output
    assert run.json["uploaded"] == 10 and run.json["shared"] == 90
    assert len(truth(emu)) == 10
    assert len(read_mapping(tmp_path / "mapping.json")) == 100
    assert_mapping_matches(emu, root, tmp_path / "mapping.json")
    saved = sharing(cfg)
    assert saved["saved_files"] == 90 and saved["remote_files"] == 10
    assert saved["saved_bytes"] == sum((root / p).stat().st_size for p in paths[10:])

    # Keep the 5 paths of one content; 9 contents lose their last path.
    keep = [p for i, p in enumerate(paths) if i % 10 == 3][:5]
    for p in paths:
        if p not in keep:
            (root / p).unlink()
    emu.reset_stats()
    run = reconcile(cfg, KEY)
    assert run.returncode == 0, run.output
    assert emu.stats()["mutations"]["delete"] == 9
    assert emu.stats()["requests"]["upload"] == 0
    assert len(truth(emu)) == 1
    assert sorted(read_mapping(tmp_path / "mapping.json")) == sorted(keep)
    assert_mapping_matches(emu, root, tmp_path / "mapping.json")


def test_a_changed_copy_leaves_its_group(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    paths = copies(root, 20, 2)
    cfg = write_config(tmp_path, root, emu)
    assert reconcile(cfg, KEY).returncode == 0
    before = truth(emu)
    assert len(before) == 2
    # One copy gets new content; another takes the content of the other group.
    (root / paths[0]).write_text("something new\n")
    (root / paths[2]).write_bytes((root / paths[1]).read_bytes())
    emu.reset_stats()
    assert reconcile(cfg, KEY).returncode == 0
    assert emu.stats()["mutations"]["upload"] == 1
    assert emu.stats()["requests"]["delete"] == 0  # both old contents still have paths
    assert set(before) < set(truth(emu)) and len(truth(emu)) == 3
    assert_mapping_matches(emu, root, tmp_path / "mapping.json")


def test_a_crash_while_copies_go_leaves_the_counts_right(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory, latency_ms=150)
    root = tmp_path / "root"
    paths = copies(root, 100, 10)
    cfg = write_config(tmp_path, root, emu, rate=10, sync={"max_delete": "100%"})
    # One delete a second: the kill lands mid-run even on a slow, busy machine.
    slow = write_config(tmp_path, root, emu, rate=10, name="slow.yaml",
                        sync={"max_delete": "100%"}, limits={"delete_qps": 1})
    assert reconcile(cfg, KEY).returncode == 0
    keep = [p for i, p in enumerate(paths) if i % 10 == 3][:5]
    for p in paths:
        if p not in keep:
            (root / p).unlink()
    emu.reset_stats()
    proc = spawn_reconcile(slow, KEY)
    wait_for(lambda: emu.stats()["mutations"]["delete"] >= 2, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 2 <= emu.stats()["mutations"]["delete"] < 9
    run = reconcile(cfg, KEY)
    assert run.returncode == 0, run.output
    assert emu.stats()["mutations"]["delete"] == 9
    assert len(truth(emu)) == 1
    assert sorted(read_mapping(tmp_path / "mapping.json")) == sorted(keep)
    assert_mapping_matches(emu, root, tmp_path / "mapping.json")
    assert sharing(cfg)["saved_files"] == 4


def test_dedupe_fits_more_paths_than_the_quota_has_files(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory, max_files=100)
    root = tmp_path / "root"
    copies(root, 300, 90)
    cfg = write_config(tmp_path, root, emu, limits={"max_files": 100})
    run = reconcile(cfg, KEY)
    assert run.returncode == 0, run.output
    assert run.json["not_synced"] == []
    assert len(read_mapping(tmp_path / "mapping.json")) == 300
    assert len(truth(emu)) == 90
    assert emu.stats()["requests"]["upload"] == 90  # no quota error, no retry
    assert_mapping_matches(emu, root, tmp_path / "mapping.json")


def test_switched_off_every_path_gets_its_own_file(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    copies(root, 12, 3)
    cfg = write_config(tmp_path, root, emu, sync={"dedupe": False})
    assert reconcile(cfg, KEY).returncode == 0
    assert len(truth(emu)) == 12
    assert_mapping_matches(emu, root, tmp_path / "mapping.json")


def test_the_daemon_maps_a_copied_folder_without_uploading(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    copies(root, 200, 200, folder="orig/")
    cfg = write_config(tmp_path, root, emu, sync={"settle_s": 0.5})
    assert reconcile(cfg, KEY).returncode == 0
    assert len(truth(emu)) == 200
    daemon = subprocess.Popen(syncd_cmd("run", cfg), env=syncd_env(KEY),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: emu.stats()["requests"]["read"] >= 1, timeout=30)
        emu.reset_stats()
        shutil.copytree(root / "orig", root / "copy")

        def mapped() -> int:
            try:
                return len(read_mapping(tmp_path / "mapping.json"))
            except (OSError, ValueError):
                return 0

        wait_for(lambda: mapped() == 400, timeout=90)
        assert emu.stats()["requests"]["upload"] == 0
        assert len(truth(emu)) == 200
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert_mapping_matches(emu, root, tmp_path / "mapping.json")


def test_what_dedupe_saves_follows_a_copy_that_goes_without_any_remote_call(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (root / name).write_text("the same words\n")
    cfg = write_config(tmp_path, root, emu)
    assert reconcile(cfg, KEY).returncode == 0
    assert sharing(cfg) == {"paths": 3, "remote_files": 1, "saved_files": 2,
                            "saved_bytes": 30}  # fmt: skip
    (root / "c.txt").unlink()  # the others keep the remote file: nothing is deleted
    emu.reset_stats()
    assert reconcile(cfg, KEY).returncode == 0
    assert emu.stats()["mutations"].get("delete", 0) == 0
    assert sharing(cfg)["paths"] == 2 and sharing(cfg)["saved_files"] == 1
