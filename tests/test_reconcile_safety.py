"""Deletion safety: a vanished, emptied or unmarked root, or a plan deleting too much,
makes no remote delete and exits 3."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    Run,
    build_flat_tree,
    fast_emulator,
    read_mapping,
    reconcile,
    remote_files,
    status,
    write_config,
)

FILES = 40
MARKER = ".syncd-root"


@dataclass
class Synced:
    emu: EmulatorHandle
    root: Path
    cfg: Path
    paths: list[str]
    ids: set[str]
    where: Path

    def refused_run(self) -> Run:
        """Reconcile again; assert it deleted nothing remotely and exited 3."""
        self.emu.reset_stats()
        run = reconcile(self.cfg, self.emu.api_key)
        stats = self.emu.stats()
        assert stats["requests"]["delete"] == 0, run.output
        assert run.returncode == 3, run.output
        assert self.ids <= set(remote_files(self.emu)), "a remote file was lost"
        return run


def _synced(tmp_path: Path, factory: Callable[..., EmulatorHandle], **sections: Any) -> Synced:
    emu = fast_emulator(factory)
    root = tmp_path / "root"
    paths = build_flat_tree(root, FILES)
    (root / MARKER).write_text("")
    cfg = write_config(tmp_path, root, emu, **sections)
    first = reconcile(cfg, emu.api_key)
    assert first.returncode == 0, first.output
    ids = set(remote_files(emu))
    assert len(ids) == FILES
    return Synced(emu, root, cfg, paths, ids, tmp_path)


@pytest.fixture
def synced(tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]) -> Iterator[Synced]:
    yield _synced(tmp_path, emulator_factory)


def test_root_missing(synced: Synced) -> None:
    synced.root.rename(synced.root.with_name("moved-away"))
    run = synced.refused_run()
    assert run.json["refused"] and "missing" in run.json["refused"]
    assert run.json["planned"]["delete"] == []
    # The published mapping still names every file, and status still counts them synced.
    assert len(read_mapping(synced.where / "mapping.json")) == FILES
    assert status(synced.cfg)["counts"].get("synced") == FILES


def test_root_emptied(synced: Synced) -> None:
    for child in synced.root.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    run = synced.refused_run()
    assert "empty" in run.json["refused"]
    assert len(read_mapping(synced.where / "mapping.json")) == FILES
    # Files come back (a remount): nothing to do, nothing lost.
    build_flat_tree(synced.root, FILES)
    synced.emu.reset_stats()
    back = reconcile(synced.cfg, synced.emu.api_key)
    assert back.returncode == 0, back.output
    assert synced.emu.stats()["requests"]["upload"] == 0


def test_all_files_deleted_but_folders_left(synced: Synced) -> None:
    for rel in synced.paths:
        (synced.root / rel).unlink()
    (synced.root / MARKER).unlink()
    run = synced.refused_run()
    assert "empty" in run.json["refused"]


def test_marker_missing(tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]) -> None:
    s = _synced(tmp_path, emulator_factory, sync={"marker": MARKER})
    (s.root / MARKER).unlink()
    (s.root / s.paths[0]).unlink()  # a real deletion must wait too
    run = s.refused_run()
    assert "marker" in run.json["refused"]


def test_over_max_delete(synced: Synced) -> None:
    gone = synced.paths[: int(FILES * 0.6)]
    for rel in gone:
        (synced.root / rel).unlink()
    (synced.root / "new.txt").write_text("a new file still gets uploaded\n")
    run = synced.refused_run()
    report = run.json
    assert "max_delete" in report["refused"] and f"{len(gone)} files" in report["refused"]
    assert report["uploaded"] == 1
    mapping = read_mapping(synced.where / "mapping.json")
    assert "new.txt" in mapping
    # Refused deletes are held: raising the cap in the config does not release them,
    # a person's answer on the command line does.
    cfg = write_config(synced.where, synced.root, synced.emu, sync={"max_delete": "100%"})
    synced.emu.reset_stats()
    held = reconcile(cfg, synced.emu.api_key)
    assert held.returncode == 3 and "held by an earlier refusal" in held.json["refused"]
    assert synced.emu.stats()["mutations"].get("delete", 0) == 0
    ok = reconcile(cfg, synced.emu.api_key, "--max-delete", "100%")
    assert ok.returncode == 0, ok.output
    assert synced.emu.stats()["mutations"]["delete"] == len(gone)
    assert len(remote_files(synced.emu)) == FILES - len(gone) + 1


def test_a_new_project_on_a_retired_projects_state_dir_deletes_none_of_its_files(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    """The claims registry (beside the pacing state) outlives a state_dir: a project
    that takes over the path, or a state that was reset, must not read the files the
    old state uploaded as its own leftovers and delete them."""
    emu = fast_emulator(emulator_factory)
    shared = {"pacing_dir": str(tmp_path / "pacing")}
    old_root, new_root = tmp_path / "old", tmp_path / "new"
    build_flat_tree(old_root, 10)
    old = write_config(tmp_path, old_root, emu, name="old.yaml", project="old", limits=shared)
    assert reconcile(old, emu.api_key).returncode == 0
    old_files = set(remote_files(emu))
    assert len(old_files) == 10

    shutil.rmtree(tmp_path / "state")
    (tmp_path / "mapping.json").unlink()
    (new_root / "n.txt").parent.mkdir(parents=True)
    (new_root / "n.txt").write_text("new project")
    new = write_config(tmp_path, new_root, emu, name="new.yaml", project="new", limits=shared)
    run = reconcile(new, emu.api_key)
    assert run.returncode == 3, run.output  # deletes refused, and said why
    assert "unknown to its state" in run.json["refused"]
    assert old_files <= set(remote_files(emu))
    assert list(read_mapping(tmp_path / "mapping.json")) == ["n.txt"]


def test_claims_on_ids_someone_else_deleted_are_released(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    """Every run reads the claims registry: an id deleted on the remote by someone else
    (or expired) is released once the provider says it is gone, not kept forever."""
    import sqlite3

    import httpx

    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 3)
    cfg = write_config(tmp_path, root, emu)
    assert reconcile(cfg, emu.api_key).returncode == 0
    gone = sorted(remote_files(emu))[0]
    httpx.delete(f"{emu.url}/files/{gone}", timeout=30,
                 headers={"Authorization": f"Bearer {emu.api_key}"}).raise_for_status()  # fmt: skip

    def claimed() -> set[str]:
        (registry,) = (tmp_path / "pacing").glob("*-claims.sqlite3")
        with sqlite3.connect(registry) as db:
            return {row[0] for row in db.execute("SELECT file_id FROM claims")}

    assert gone in claimed()
    assert reconcile(cfg, emu.api_key).returncode == 0  # uploads the file again
    assert gone not in claimed()
    assert claimed() == set(remote_files(emu))


def test_a_remote_copy_kept_by_delete_remote_off_is_never_deleted_later(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    """With sync.delete_remote off, a file removed locally leaves its remote copy to the
    user: later runs must not take it for a leftover of their own."""
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 3)
    cfg = write_config(tmp_path, root, emu, sync={"delete_remote": False})
    assert reconcile(cfg, emu.api_key).returncode == 0
    before = set(remote_files(emu))
    mapped = read_mapping(tmp_path / "mapping.json")
    gone = sorted(mapped)[0]
    (root / gone).unlink()
    for _ in range(3):
        run = reconcile(cfg, emu.api_key)
        assert run.returncode == 0, run.output
    assert set(remote_files(emu)) == before, "a copy the user kept was deleted"
    assert gone not in read_mapping(tmp_path / "mapping.json")
