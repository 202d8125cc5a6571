"""`syncd reconcile` end to end on a large mixed tree: what lands remotely, what is refused
and why, and that a converged tree costs no mutating call."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import openai

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    assert_converged,
    build_fixture_tree,
    fast_emulator,
    read_mapping,
    reconcile,
    remote_files,
    status,
    write_config,
)


def test_mixed_tree_reconciles_to_exactly_the_valid_files(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    tree = build_fixture_tree(tmp_path / "root", tmp_path / "outside")
    assert len(tree.valid) + len(tree.unsynced) >= 500
    cfg = write_config(tmp_path, tree.root, emu)

    run = reconcile(cfg, emu.api_key)

    assert run.returncode == 1, run.output  # some files are not synced
    report = run.json
    # Identical copies (a symlink to a file in the root, say) share one upload.
    distinct = {(tree.root / p).read_bytes() for p in tree.valid}
    assert report["uploaded"] == len(distinct)
    assert report["uploaded"] + report["shared"] == len(tree.valid)
    remote = remote_files(emu)
    assert_converged(emu, tree.root, tmp_path / "mapping.json", tree.valid)
    mapping = read_mapping(tmp_path / "mapping.json")
    for path, entry in mapping.items():
        want = "batch" if path.endswith(".jsonl") else "file-extract"
        assert entry["purpose"] == remote[entry["file_id"]]["purpose"] == want

    not_synced = {e["path"]: e for e in status(cfg)["not_synced"]}
    assert set(not_synced) == set(tree.unsynced)
    for path, needle in tree.unsynced.items():
        assert needle in (not_synced[path]["reason"] or ""), (path, not_synced[path])
    # The report of the run agrees with the status.
    reported = {e["path"] for e in report["not_synced"]} | {e["path"] for e in report["skipped"]}
    assert reported == set(tree.unsynced)
    # Nothing the rules exclude was recorded or uploaded.
    assert not any(".part" in p or "/." in p or p.startswith(".") for p in not_synced)


def test_second_run_is_free_and_changes_converge_without_touching_foreign(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    tree = build_fixture_tree(tmp_path / "root", tmp_path / "outside")
    cfg = write_config(tmp_path, tree.root, emu)
    # A file of another tool on the same account, named like one of ours.
    sdk = openai.OpenAI(api_key=emu.api_key, base_url=emu.url, max_retries=5)
    foreign_src = tmp_path / "elsewhere" / "my notes.txt"
    foreign_src.parent.mkdir()
    foreign_src.write_bytes(b"not from syncd, and a different size\n")
    foreign = sdk.files.create(file=foreign_src, purpose="file-extract")

    assert reconcile(cfg, emu.api_key).returncode == 1
    before = read_mapping(tmp_path / "mapping.json")

    emu.reset_stats()
    again = reconcile(cfg, emu.api_key)
    assert again.returncode == 1, again.output
    stats = emu.stats()
    assert stats["requests"]["upload"] == 0
    assert stats["requests"]["delete"] == 0
    assert again.json["hashed"] == 0  # unchanged files are not even read again

    docs = sorted(p for p in tree.valid if p.startswith("docs/"))
    changed, deleted, renamed = docs[:20], docs[20:40], docs[40:50]
    for rel in changed:
        with (tree.root / rel).open("ab") as fh:
            fh.write(b"changed\n")
    for rel in deleted:
        (tree.root / rel).unlink()
    new_names = {}
    for rel in renamed:
        target = rel.replace("file-", "renamed-")
        shutil.move(tree.root / rel, tree.root / target)
        new_names[rel] = target
    expected = sorted(
        {*tree.valid} - set(deleted) - set(renamed) | set(new_names.values())
    )

    emu.reset_stats()
    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 1, run.output
    report = run.json
    # A renamed file holds the same content: it keeps its remote file (dedupe).
    assert report["uploaded"] == len(changed)
    assert report["deleted"] == len(changed) + len(deleted)
    assert_converged(emu, tree.root, tmp_path / "mapping.json", expected, foreign={foreign.id})

    remote = remote_files(emu)
    old_ids = {before[p]["file_id"] for p in (*changed, *deleted)}
    assert len(old_ids) == 40
    assert not old_ids & set(remote), "an old id survived"
    assert foreign.id in remote
    assert remote[foreign.id]["filename"] == "my notes.txt"
    assert sdk.files.retrieve(foreign.id).bytes == foreign_src.stat().st_size
    # Unchanged files kept their ids.
    after = read_mapping(tmp_path / "mapping.json")
    for path in set(before) - set(changed) - set(deleted) - set(renamed):
        assert after[path]["file_id"] == before[path]["file_id"]
    for old, new in new_names.items():
        assert after[new]["file_id"] == before[old]["file_id"]
    stats = emu.stats()
    assert stats["mutations"]["upload"] == 20
    assert stats["mutations"]["delete"] == 40
