"""A project is itself wherever its folder is: moved whole (config, state, mapping and
files together) it is rebound once and then uploads and deletes nothing; a rebind to a
root that is not there, or is empty while the state has files, is refused and changes
nothing."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    build_flat_tree,
    fast_emulator,
    read_mapping,
    reconcile,
    run_syncd,
    write_config,
)


def project(where: Path, emu: EmulatorHandle, root: Path | None = None) -> Path:
    """A project folder as people keep one: the config, the files, the state, the
    mapping and the pacing folder all under ``where``."""
    return write_config(where, root or where / "data", emu, project="p2")


def mutations(emu: EmulatorHandle) -> dict[str, Any]:
    counts: dict[str, Any] = emu.stats()["mutations"]
    return {"upload": counts.get("upload", 0), "delete": counts.get("delete", 0)}


def test_a_project_moved_whole_is_rebound_and_then_changes_nothing(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    key = emu.api_key
    p2 = tmp_path / "p2"
    build_flat_tree(p2 / "data", 12)
    assert reconcile(project(p2, emu), key).returncode == 0
    before = read_mapping(p2 / "mapping.json")
    assert len(before) == 12

    moved = tmp_path / "p2moved"
    p2.rename(moved)  # what `mv p2 p2moved` does
    cfg = project(moved, emu)  # the config's paths updated to the new place
    emu.reset_stats()
    refused = reconcile(cfg, key)
    assert refused.returncode == 2, refused.output
    assert "syncd rebind" in refused.stderr

    rebound = run_syncd("rebind", cfg, key=key)
    assert rebound.returncode == 0, rebound.output
    for _ in range(2):
        run = reconcile(cfg, key)
        assert run.returncode == 0, run.output
    assert mutations(emu) == {"upload": 0, "delete": 0}
    assert read_mapping(moved / "mapping.json") == before
    assert run_syncd("check-config", cfg, key=key).returncode == 0


def test_a_rebind_to_a_root_that_is_not_there_is_refused_and_changes_nothing(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    key = emu.api_key
    p2 = tmp_path / "p2"
    build_flat_tree(p2 / "data", 5)
    good = project(p2, emu)
    assert reconcile(good, key).returncode == 0
    before = read_mapping(p2 / "mapping.json")

    typo = project(p2, emu, root=p2 / "dta")
    checked = run_syncd("check-config", typo, key=key)
    assert checked.returncode == 2
    assert "does not exist" in checked.stderr
    assert "syncd rebind" not in checked.stderr  # following the advice must work

    refused = run_syncd("rebind", typo, key=key)
    assert refused.returncode == 2, refused.output
    assert "rebind refused" in refused.stderr and "dta" in refused.stderr

    # An empty folder where the state has files (a disk not mounted yet) is refused too.
    (p2 / "dta").mkdir()
    empty = run_syncd("rebind", typo, key=key)
    assert empty.returncode == 2, empty.output
    assert "is empty while the state has 5 file(s)" in empty.stderr

    # The binding is as it was: the right config runs at once, with nothing to do.
    emu.reset_stats()
    good = project(p2, emu)
    run = reconcile(good, key)
    assert run.returncode == 0, run.output
    assert mutations(emu) == {"upload": 0, "delete": 0}
    assert read_mapping(p2 / "mapping.json") == before
    shutil.rmtree(p2 / "dta")


def test_a_copied_project_is_refused_until_it_has_a_state_of_its_own(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    """``cp -a`` of a project folder copies the owner its state carries: the copy and
    the original, on one host's claims registry, would each take the other's uploads
    for strays and delete them on every run. The copy is refused, rebind included."""
    emu = fast_emulator(emulator_factory)
    key = emu.api_key
    host = {"limits": {"pacing_dir": str(tmp_path / "host-pacing")}}  # one per host
    pa = tmp_path / "pa"
    build_flat_tree(pa / "data", 6)
    cfg_a = write_config(pa, pa / "data", emu, project="pa", **host)
    assert reconcile(cfg_a, key).returncode == 0
    ours = read_mapping(pa / "mapping.json")

    pe = tmp_path / "pe"
    shutil.copytree(pa, pe, symlinks=True)
    first = sorted(f for f in (pe / "data").rglob("*") if f.is_file())[0]
    first.unlink()
    (pe / "data" / "e-only.txt").write_text("only in the copy\n")
    cfg_e = write_config(pe, pe / "data", emu, project="pe", **host)
    for attempt in (("rebind",), ("reconcile", "--json"), ("rebind",)):
        refused = run_syncd(*attempt[:1], cfg_e, *attempt[1:], key=key)
        assert refused.returncode == 2, refused.output
        assert "same owner" in refused.stderr and str(pa / "state") in refused.stderr

    for _ in range(2):  # the original is untouched and runs on as before
        run = reconcile(cfg_a, key)
        assert run.returncode == 0, run.output
    assert read_mapping(pa / "mapping.json") == ours
    on_remote = {f["id"] for f in emu.files()}
    assert {entry["file_id"] for entry in ours.values()} <= on_remote

    # Following the advice: the copy with a state of its own uploads its own files.
    shutil.rmtree(pe / "state")
    (pe / "mapping.json").unlink()
    assert reconcile(cfg_e, key).returncode == 0
    assert reconcile(cfg_a, key).returncode == 0
    theirs = read_mapping(pe / "mapping.json")
    assert len(theirs) == 6 and "e-only.txt" in theirs
    on_remote = {f["id"] for f in emu.files()}
    assert {e["file_id"] for e in [*ours.values(), *theirs.values()]} <= on_remote
    assert read_mapping(pa / "mapping.json") == ours
