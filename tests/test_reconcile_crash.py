"""kill -9 during reconcile, with lost upload responses: one clean run afterwards leaves
every local file exactly once on the remote, and nothing there that the mapping lacks."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from pathlib import Path

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    account_files,
    assert_converged,
    build_flat_tree,
    fast_emulator,
    local_multiset,
    name_bytes,
    reconcile,
    remote_files,
    spawn_reconcile,
    write_config,
)
from tests.helpers import wait_for

FILES = 1000
KILLS = 5


def test_kill_9_at_random_moments_then_one_clean_run(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory, drop_after_store=0.1)
    root = tmp_path / "root"
    paths = build_flat_tree(root, FILES)
    cfg = write_config(tmp_path, root, emu, limits={"workers": 8})
    rng = random.Random(int(os.environ.get("SYNCD_CRASH_SEED", "20240607")))

    kills = 0
    seen: list[int] = []
    for _ in range(KILLS):
        start = account_files(emu)
        if start >= FILES:
            break
        grow = rng.randint(20, 140)
        proc = spawn_reconcile(cfg, emu.api_key)
        try:
            target = min(start + grow, FILES)
            wait_for(lambda p=proc, t=target: account_files(emu) >= t or p.poll() is not None,
                     timeout=60, what="uploads to happen")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=10)
        seen.append(account_files(emu))
    assert kills == KILLS, "reconcile finished before it could be killed"
    assert account_files(emu) < FILES
    assert emu.stats()["faults"]["drop_after_store"] > 0

    faults = emu.stats()["faults"]["drop_after_store"]
    print(f"remote files after each kill: {seen}; lost responses: {faults}")
    emu.configure(drop_after_store=0.0)
    run = reconcile(cfg, emu.api_key, timeout=240)
    assert run.returncode == 0, run.output

    remote = remote_files(emu)
    assert len(remote) == FILES
    assert name_bytes(remote) == local_multiset(root, paths)  # each file exactly once
    assert_converged(emu, root, tmp_path / "mapping.json", paths)

    emu.reset_stats()
    again = reconcile(cfg, emu.api_key)
    assert again.returncode == 0, again.output
    assert emu.stats()["requests"]["upload"] == emu.stats()["requests"]["delete"] == 0


def test_lost_responses_with_same_name_and_size_files(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    """Adoption after a lost response goes by filename and size: many files alike in both
    must still each get their own remote copy, exactly once."""
    emu = fast_emulator(emulator_factory, drop_after_store=0.3)
    root = tmp_path / "root"
    paths = []
    for i in range(60):
        rel = f"team-{i:02d}/notes.txt"
        (root / rel).parent.mkdir(parents=True)
        (root / rel).write_bytes(b"same size %02d\n" % i if i % 2 else b"identical text\n")
        paths.append(rel)
    cfg = write_config(tmp_path, root, emu, limits={"workers": 8})

    for _ in range(5):
        run = reconcile(cfg, emu.api_key)
        if run.returncode == 0:
            break
        assert run.returncode == 1, run.output
    assert run.returncode == 0, run.output
    assert emu.stats()["faults"]["drop_after_store"] > 0
    assert_converged(emu, root, tmp_path / "mapping.json", paths)
