"""Figures that agree, and one voice for every mode: what a run, status and the daemon's
console say about the same files."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import fast_emulator, reconcile, remote_files, run_syncd, status
from tests.helpers import wait_for
from tests.test_daemon_mustshow import RunningDaemon, fast_config, run_daemon

__all__ = ["run_daemon"]


def mixed_tree(root: Path) -> None:
    (root / "d").mkdir(parents=True)
    (root / "node_modules").mkdir()
    (root / "a.txt").write_text("a\n")
    for i in range(4):
        (root / "d" / f"b{i}.exe").write_bytes(b"MZ")
    (root / "keep.log").write_text("log\n")
    (root / "x.tmp").write_text("t\n")
    (root / "node_modules" / "m.js").write_text("m\n")
    (root / "bad.jsonl").write_text("not json\n")


def test_a_run_and_status_count_the_skipped_files_alike_and_a_dry_run_exits_as_the_run(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    mixed_tree(root)
    cfg = fast_config(tmp_path, root, emu, rules={"exclude": ["*.log", "node_modules/**"]})
    dry = reconcile(cfg, emu.api_key, "--dry-run")
    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 1, run.output  # bad.jsonl cannot be synced
    assert dry.returncode == run.returncode, dry.output

    by_rule = {r["rule"]: r["files"] for r in run.json["skipped_by_rule"]}
    shown = {r["rule"]: r["files"] for r in status(cfg)["skipped"]}
    assert by_rule == shown and sum(by_rule.values()) >= 6
    text = run_syncd("reconcile", cfg, key=emu.api_key)
    total = sum(by_rule.values())
    assert f"{total} file(s) skipped by {len(by_rule)} rule(s)" in text.stdout, text.output


def test_the_daemon_says_what_it_did_file_by_file_on_a_console_too(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    for i in range(5):
        (root / f"f{i}.txt").write_text(f"{i}\n")
    cfg = fast_config(tmp_path, root, emu, logging={"format": "console", "level": "info"})
    daemon = run_daemon(cfg, emu.api_key)
    wait_for(lambda: len(daemon.mapping()) == 5, 60, what="5 files mapped")
    (root / "f0.txt").unlink()
    wait_for(lambda: len(remote_files(emu)) == 4, 60, what="f0.txt's remote copy deleted")
    code, _ = daemon.stop()
    assert code == 0
    text = daemon.log.read_text()
    uploads = [ln for ln in text.splitlines() if re.search(r"\buploaded\b", ln)]
    assert all(any(f"f{i}.txt" in ln for ln in uploads) for i in range(5)), text
    assert any("deleted" in ln and "f0.txt" in ln for ln in text.splitlines()), text
    # Where the mapping is, said once at start.
    mapping_path = tmp_path / "mapping.json"
    assert [ln for ln in text.splitlines() if "ready" in ln and f"mapping={mapping_path}" in ln]
    # Values as people read them: numbers and ISO times, never a Python repr.
    assert "<ExitCode" not in text and "ExitCode." not in text
    [scheduled] = [ln for ln in text.splitlines() if "scheduled reconcile" in ln][:1]
    assert re.search(r"next_at=\S*\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", scheduled), scheduled


def test_an_incomplete_listing_is_said_to_be_so_wherever_its_counts_are_shown(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    for i in range(40):
        (root / f"f{i:02d}.txt").write_text(f"{i}\n")
    (root / "copy.txt").write_text("0\n")  # the content of f00.txt: one remote file, 2 paths
    cfg = fast_config(tmp_path, root, emu)
    assert reconcile(cfg, emu.api_key).returncode == 0

    listing = run_syncd("ls-remote", cfg, key=emu.api_key)
    assert listing.returncode == 0, listing.output
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:2] == ["whose", "file_id"] and "local path(s)" in lines[0]
    [shared] = [ln for ln in lines if "copy.txt" in ln]
    assert "f00.txt" in shared  # each remote file names the paths it holds
    assert lines[-1] == "40 remote file(s), 40 ours"
    shown = run_syncd("status", cfg, key=None).stdout
    assert "ours: 41 paths synced in 40 remote files" in shown, shown

    emu.configure(fault_list_omit=0.3)
    again = reconcile(cfg, emu.api_key)
    assert again.returncode == 0 and again.json["inconsistent_listing"] > 0, again.output
    shown = run_syncd("status", cfg, key=None).stdout
    assert "account: at least" in shown and "listing is incomplete" in shown, shown
    partial = run_syncd("ls-remote", cfg, key=emu.api_key)
    assert partial.returncode == 1, partial.output
    assert "the listing lacks" in partial.stderr and "of the 40 remote files" in partial.stderr
