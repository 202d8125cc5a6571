"""A refused delete stays refused, and the delete window spans runs and processes.

Every run here is a real `syncd` process (one-off, or a daemon and the runs it makes)
against the emulator over HTTP; what counts is what the account holds afterwards, what
the mapping names and what `syncd status` says.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    build_flat_tree,
    fast_emulator,
    read_mapping,
    reconcile,
    remote_files,
    run_syncd,
    status,
    write_config,
)
from tests.helpers import wait_for
from tests.test_daemon_mustshow import RunningDaemon, fast_config, run_daemon

__all__ = ["run_daemon"]

REFUSED = 3


def test_a_mass_delete_split_over_one_off_runs_is_one_mass_delete(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    key = emu.api_key
    root = tmp_path / "root"
    paths = build_flat_tree(root, 100)
    cfg = write_config(tmp_path, root, emu, sync={"max_delete": "50%"})
    assert reconcile(cfg, key).returncode == 0
    assert len(remote_files(emu)) == 100

    for rel in paths[:40]:
        (root / rel).unlink()
    first = reconcile(cfg, key)
    assert first.returncode == 0, first.output
    assert len(remote_files(emu)) == 60

    # A minute later, in another process: 30 more is 70 % of the project in all.
    for rel in paths[40:70]:
        (root / rel).unlink()
    second = reconcile(cfg, key)
    assert second.returncode == REFUSED, second.output
    assert "40 deleted by the runs just before count against it" in second.json["refused"]
    assert len(remote_files(emu)) == 60
    assert set(read_mapping(tmp_path / "mapping.json")) >= set(paths[40:70])

    # Held, not forgotten: status names them and the command that releases them.
    held = status(cfg)["held_deletes"]
    assert held["count"] == 30
    assert held["release"] == f"syncd reconcile -c {cfg} --confirm-deletes"
    assert sorted(f["path"] for f in held["files"]) == sorted(paths[40:70])
    text = run_syncd("status", cfg, key=None)
    assert "deletes held: 30" in text.stdout and "--confirm-deletes" in text.stdout

    # Another plain run deletes nothing; one confirmation makes exactly those deletes.
    assert reconcile(cfg, key).returncode == REFUSED
    assert len(remote_files(emu)) == 60
    confirmed = reconcile(cfg, key, "--confirm-deletes")
    assert confirmed.returncode == 0, confirmed.output
    assert confirmed.json["deleted"] == 30
    assert len(remote_files(emu)) == 30
    assert sorted(read_mapping(tmp_path / "mapping.json")) == sorted(paths[70:])
    assert status(cfg)["held_deletes"] is None


def test_a_refused_delete_is_not_carried_out_by_a_later_run_under_the_cap(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    key = emu.api_key
    root = tmp_path / "root"
    paths = build_flat_tree(root, 20)
    saved = tmp_path / "saved"
    shutil.copytree(root, saved)
    cfg = write_config(tmp_path, root, emu, sync={"max_delete": "50%"})
    assert reconcile(cfg, key).returncode == 0
    before = set(remote_files(emu))

    for rel in paths[:12]:
        (root / rel).unlink()
    refused = reconcile(cfg, key)
    assert refused.returncode == REFUSED, refused.output
    assert "over max_delete" in refused.json["refused"]

    # Four come back: eight missing is under the cap, but was refused once already.
    for rel in paths[:4]:
        shutil.copy2(saved / rel, root / rel)
    again = reconcile(cfg, key)
    assert again.returncode == REFUSED, again.output
    assert "8 delete(s) held by an earlier refusal" in again.json["refused"]
    assert set(remote_files(emu)) == before
    assert status(cfg)["held_deletes"]["count"] == 8

    # The dry run shows what is held; a cap a person gives weighs the held deletes.
    dry = run_syncd("reconcile", cfg, "--dry-run", key=key)
    assert dry.returncode == REFUSED
    assert dry.stdout.count("  refuse  gone") == 8
    assert reconcile(cfg, key, "--max-delete", "5").returncode == REFUSED
    assert set(remote_files(emu)) == before
    allowed = reconcile(cfg, key, "--max-delete", "8")
    assert allowed.returncode == 0, allowed.output
    assert len(remote_files(emu)) == 12
    assert sorted(read_mapping(tmp_path / "mapping.json")) == sorted(paths[:4] + paths[12:])


def test_a_mass_delete_refused_under_the_daemon_stays_refused(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    """The daemon deletes an `rm -r` batch by batch until the window's budget is used,
    then holds the rest: a one-off reconcile (through the daemon), the scheduled
    reconcile and a restart delete nothing more; one confirmation releases them."""
    emu = fast_emulator(emulator_factory)
    key = emu.api_key
    root = tmp_path / "root"
    total = 586
    paths = [f"d{i % 6}/f{i:04d}.txt" for i in range(total)]
    for i, rel in enumerate(paths):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"file {i}\n")
    cfg = fast_config(
        tmp_path, root, emu, sync={"max_delete": "50%"}, reconcile={"interval_s": 4}
    )
    assert reconcile(cfg, key).returncode == 0
    assert len(remote_files(emu)) == total

    daemon = run_daemon(cfg, key)
    removed = [p for p in paths if not p.startswith(("d0/", "d1/"))][:400]
    for rel in removed:
        (root / rel).unlink()
    cap = total // 2

    def held() -> int:
        data = status(cfg).get("held_deletes") or {}
        return int(data.get("count", 0))

    # Settled: every removed file is deleted or held, and no more than the cap is gone.
    wait_for(lambda: total - len(remote_files(emu)) + held() == len(removed), 120,
             what="every removed file deleted or held")
    deleted = total - len(remote_files(emu))
    assert 0 < deleted <= cap
    assert held() == len(removed) - deleted

    # Scheduled reconciles come every 4 s: two of them, and a one-off run, delete nothing.
    runs_before = status(cfg).get("last_reconcile", {}).get("at")
    wait_for(lambda: status(cfg).get("last_reconcile", {}).get("at") != runs_before, 60,
             what="a scheduled reconcile")
    through_daemon = reconcile(cfg, key)
    assert through_daemon.returncode == REFUSED, through_daemon.output
    assert total - len(remote_files(emu)) == deleted

    # A restart remembers the refusal.
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0
    run_daemon(cfg, key)
    runs_before = status(cfg).get("last_reconcile", {}).get("at")
    wait_for(lambda: status(cfg).get("last_reconcile", {}).get("at") != runs_before, 60,
             what="a scheduled reconcile after the restart")
    assert total - len(remote_files(emu)) == deleted
    assert held() == len(removed) - deleted

    # One confirmation, through the running daemon, releases them all.
    confirmed = reconcile(cfg, key, "--confirm-deletes")
    assert confirmed.returncode == 0, confirmed.output
    assert len(remote_files(emu)) == total - len(removed)
    assert held() == 0
    kept = sorted(set(paths) - set(removed))
    wait_for(lambda: sorted(read_mapping(tmp_path / "mapping.json")) == kept, 30,
             what="the mapping without the removed files")
