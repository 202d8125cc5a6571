"""A path the scan looks for and finds no file at is gone, whatever the reason: removed
(ENOENT), or a folder on its way replaced by a file (ENOTDIR). Gone is not an error: scan
errors refuse every delete of the run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from syncd.config import RulesConfig
from syncd.engine.records import RecordTable
from syncd.engine.rules import Rules
from syncd.engine.scan import scan_paths
from syncd.engine.sync import Syncer
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import fast_emulator, read_mapping, remote_files


def _folder_and_files(root: Path) -> None:
    (root / "keep").mkdir(parents=True)
    for i in range(1, 11):
        (root / "keep" / f"k{i}.txt").write_text(f"keep {i}\n")
    (root / "dir2").mkdir()
    (root / "dir2" / "x1.txt").write_text("x1\n")
    (root / "dir2" / "x2.txt").write_text("x2\n")


def _folder_becomes_file(root: Path) -> None:
    for name in ("x1.txt", "x2.txt"):
        (root / "dir2" / name).unlink()
    (root / "dir2").rmdir()
    (root / "dir2").write_text("now a file\n")


def test_scoped_scan_takes_a_path_under_a_file_as_gone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _folder_and_files(root)
    _folder_becomes_file(root)

    scan = scan_paths(
        root, Rules(RulesConfig()), RecordTable(), ["dir2/x1.txt", "dir2/x2.txt", "dir2"]
    )

    assert scan.errors == []
    assert "dir2/x1.txt" not in scan.files and "dir2/x2.txt" not in scan.files


def test_folder_replaced_by_a_file_deletes_its_files_and_the_rest_of_the_batch(
    emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
    tmp_path: Path,
) -> None:
    emulator = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    _folder_and_files(root)
    syncer = syncer_on(emulator, root)
    assert syncer.reconcile().exit_code == 0
    before = read_mapping(tmp_path / "mapping.json")
    gone_ids = {before[p]["file_id"] for p in ("dir2/x1.txt", "dir2/x2.txt", "keep/k1.txt")}

    _folder_becomes_file(root)
    (root / "keep" / "k1.txt").unlink()
    # What the watcher queues for it: the folder, its files, and the other delete.
    report = syncer.sync_paths(["dir2", "dir2/x1.txt", "dir2/x2.txt", "keep/k1.txt"])

    assert report.scan_errors == []
    assert report.plan.refused is None
    mapping = read_mapping(tmp_path / "mapping.json")
    assert not {"dir2/x1.txt", "dir2/x2.txt", "keep/k1.txt"} & set(mapping)
    assert not gone_ids & set(remote_files(emulator))
    # The untouched files stay as they were.
    assert {p: e["file_id"] for p, e in mapping.items() if p.startswith("keep/")} == {
        p: e["file_id"] for p, e in before.items() if p.startswith("keep/") and p != "keep/k1.txt"
    }
