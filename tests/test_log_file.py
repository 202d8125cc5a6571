"""logging.file: log lines go to a file rotated by size, for hosts without journald."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import build_flat_tree, fast_emulator, run_syncd, write_config


def test_log_lines_go_to_a_rotated_file_and_not_to_stderr(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 60)
    log = tmp_path / "logs" / "syncd.log"
    cfg = write_config(tmp_path, root, emu, logging={
        "format": "auto", "level": "debug", "file": str(log), "file_max_bytes": "4KiB",
        "file_backups": 2})  # fmt: skip
    run = run_syncd("reconcile", cfg, key=emu.api_key)
    assert run.returncode == 0, run.output
    assert run.stderr == "", run.stderr  # nothing on stderr: it all went to the file
    files = sorted(log.parent.iterdir())
    assert [f.name for f in files] == ["syncd.log", "syncd.log.1", "syncd.log.2"]
    assert all(f.stat().st_size <= 4096 + 2048 for f in files)  # a line may overshoot
    text = "".join(f.read_text() for f in files)
    assert "uploaded" in text and not text.lstrip().startswith("{")  # lines for people
    assert emu.api_key not in text
