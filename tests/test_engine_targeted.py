"""Targeted syncs (what the daemon runs per batch of events) through the Syncer API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from syncd.engine.sync import Syncer
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    build_flat_tree,
    fast_emulator,
    read_mapping,
    remote_files,
)


def test_slow_mass_delete_in_small_batches_hits_max_delete(
    emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
    tmp_path: Path,
) -> None:
    emulator = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    paths = build_flat_tree(root, 20)
    syncer = syncer_on(emulator, root)
    assert syncer.reconcile().exit_code == 0
    assert len(remote_files(emulator)) == 20

    # An `rm -r` seen by the watcher as four batches of four: each batch alone is far
    # under max_delete (50% of 20), together 16 files are not.
    reports = []
    for i in range(4):
        batch = paths[i * 4 : (i + 1) * 4]
        for rel in batch:
            (root / rel).unlink()
        reports.append(syncer.sync_paths(batch))

    assert [r.plan.refused is None for r in reports] == [True, True, False, False]
    # The refusal says why four files were too many.
    assert "8 deleted by the runs just before count against it" in (reports[2].plan.refused or "")
    assert 20 - len(remote_files(emulator)) <= 10
    # What was refused is still tracked and still remote: nothing was lost.
    mapping = read_mapping(tmp_path / "mapping.json")
    assert all(rel in mapping for rel in paths[8:16])


def test_targeted_sync_uploads_replaces_and_deletes(
    emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
    tmp_path: Path,
) -> None:
    emulator = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    paths = build_flat_tree(root, 6)
    syncer = syncer_on(emulator, root)
    syncer.reconcile()
    before = read_mapping(tmp_path / "mapping.json")

    (root / paths[0]).write_text("changed\n")
    (root / paths[1]).unlink()
    (root / "new.md").write_text("# new\n")
    report = syncer.sync_paths([paths[0], paths[1], "new.md"])

    assert report.exit_code == 0
    after = read_mapping(tmp_path / "mapping.json")
    remote = remote_files(emulator)
    assert set(after) == {*paths[2:], paths[0], "new.md"}
    assert after[paths[0]]["file_id"] != before[paths[0]]["file_id"]
    assert before[paths[0]]["file_id"] not in remote
    assert before[paths[1]]["file_id"] not in remote
    assert set(remote) == {entry["file_id"] for entry in after.values()}


def test_a_targeted_sync_never_reaches_outside_the_root(
    emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
    tmp_path: Path,
) -> None:
    """Whoever asks (the daemon's queue, a client of its socket), a path that escapes
    the root, or leads through a link to a folder outside it, syncs nothing."""
    emulator = fast_emulator(emulator_factory)
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("not in the tree\n")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "a.txt").write_text("a\n")
    syncer = syncer_on(emulator, root)
    report = syncer.sync_paths(
        ["sub/../../outside/secret.txt", str(outside / "secret.txt"), "linked/secret.txt", "a.txt"]
    )
    assert [f["filename"] for f in remote_files(emulator).values()] == ["a.txt"]
    refused = [e for e in report.errors if "outside the root" in e or "absolute" in e]
    assert len(refused) == 2, report.errors


def test_an_edit_through_one_name_updates_the_file_s_other_names(
    emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
    tmp_path: Path,
) -> None:
    """A hard link and a link inside the root are the same file under other names; the
    watcher reports an edit under the name it was made through only."""
    emulator = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("first\n")
    (root / "sub" / "hard.txt").hardlink_to(root / "a.txt")
    (root / "sub" / "link.txt").symlink_to("../a.txt")
    syncer = syncer_on(emulator, root)
    assert syncer.reconcile().exit_code == 0
    names = ["a.txt", "sub/hard.txt", "sub/link.txt"]
    before = read_mapping(tmp_path / "mapping.json")
    assert len({before[n]["file_id"] for n in names}) == 1  # one content, one remote file

    with (root / "a.txt").open("a") as fh:  # in place: the inode stays
        fh.write("second\n")
    assert syncer.sync_paths(["a.txt"]).exit_code == 0
    after = read_mapping(tmp_path / "mapping.json")
    ids = {after[n]["file_id"] for n in names}
    assert len(ids) == 1 and ids != {before["a.txt"]["file_id"]}, after
    assert all(after[n]["bytes"] == len("first\nsecond\n") for n in names)
    assert set(remote_files(emulator)) == ids  # the old version deleted, once
