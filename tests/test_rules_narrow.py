"""Rules narrowed so they leave out files already synced: the root is not "empty", the
deletes go through the max_delete guard, and status tells what is leaving."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from syncd.config import RulesConfig
from syncd.engine.records import RecordTable
from syncd.engine.rules import Rules
from syncd.engine.scan import scan_root
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import fast_emulator, read_mapping, reconcile, status, write_config


def test_files_the_include_globs_leave_out_show_the_root_is_there(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    (root / ".hidden.md").write_text("h\n")
    scan = scan_root(root, Rules(RulesConfig(include=("*.md",))), RecordTable())
    assert not scan.files and not scan.root_empty
    # Hidden and temporary names alone still read as a vanished disk.
    (root / "a.txt").unlink()
    assert scan_root(root, Rules(RulesConfig(include=("*.md",))), RecordTable()).root_empty


def test_narrowed_include_deletes_through_max_delete_and_status_tells(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emulator = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    config = write_config(tmp_path, root, emulator)
    mapping_path = tmp_path / "mapping.json"
    first = reconcile(config, emulator.api_key)
    assert first.returncode == 0, first.output
    assert set(read_mapping(mapping_path)) == {"a.txt"}

    write_config(tmp_path, root, emulator, rules={"include": ["*.md"]})
    for _ in range(2):  # with no file left selected, then with one
        narrowed = reconcile(config, emulator.api_key)
        # The folder is plainly there: only the delete guard (max_delete) holds a.txt.
        assert "root folder is empty" not in narrowed.output
        assert "max_delete" in narrowed.output, narrowed.output
        (root / "b.md").write_text("md\n")
    assert {f["filename"] for f in emulator.files()} == {"a.txt", "b.md"}
    assert set(read_mapping(mapping_path)) == {"a.txt", "b.md"}
    shown = status(config)
    # Refused, its delete is held until a person answers, and status says why.
    assert shown["counts"] == {"synced": 1, "held": 1}
    [entry] = [e for e in shown["not_synced"] if e["path"] == "a.txt"]
    assert entry["status"] == "held" and "not matched by rules.include" in entry["reason"]
    assert "max_delete" in entry["reason"]

    allowed = reconcile(config, emulator.api_key, "--max-delete", "1")
    assert allowed.returncode == 0, allowed.output
    assert {f["filename"] for f in emulator.files()} == {"b.md"}
    assert set(read_mapping(mapping_path)) == {"b.md"}
    shown = status(config)
    assert shown["counts"] == {"synced": 1}
    assert all(e["status"] == "skipped" for e in shown["not_synced"])
