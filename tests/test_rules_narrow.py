"""Rules narrowed so they leave out files already synced: the root is not "empty", the
deletes go through the max_delete guard, and status tells what is leaving."""

from __future__ import annotations

from pathlib import Path

from syncd.config import RulesConfig
from syncd.engine.rules import Rules
from syncd.engine.scan import scan_root


def test_files_the_include_globs_leave_out_show_the_root_is_there(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    (root / ".hidden.md").write_text("h\n")
    scan = scan_root(root, Rules(RulesConfig(include=("*.md",))), {})
    assert not scan.files and not scan.root_empty
    # Hidden and temporary names alone still read as a vanished disk.
    (root / "a.txt").unlink()
    assert scan_root(root, Rules(RulesConfig(include=("*.md",))), {}).root_empty
