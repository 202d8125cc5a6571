"""Files waiting for account space go up as soon as the daemon frees some."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import account_files, fast_emulator, read_mapping, write_config
from tests.helpers import wait_for
from tests.test_daemon_move import daemon

__all__ = ["daemon"]  # the fixture, shared with the move tests

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux daemon")

QUOTA = 6


def synced(mapping_path: Path) -> set[str]:
    try:
        return set(read_mapping(mapping_path))
    except (OSError, ValueError, KeyError):
        return set()


def test_files_waiting_for_space_go_up_when_a_delete_frees_it(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    daemon: Callable[[Path, str], subprocess.Popen[bytes]],
) -> None:
    emulator = fast_emulator(emulator_factory, max_files=QUOTA)
    root = tmp_path / "root"
    root.mkdir()
    for i in range(QUOTA + 2):
        (root / f"q{i}.txt").write_text(f"q {i}\n")
    config = write_config(
        tmp_path, root, emulator,
        limits={"max_files": QUOTA},
        sync={"settle_s": 0.3, "max_settle_s": 5},
        daemon={"publish_interval_s": 0.5, "shutdown_timeout_s": 8},
    )
    mapping_path = tmp_path / "mapping.json"
    daemon(config, emulator.api_key)  # READY after the catch-up: the account is full
    first = wait_for(lambda: synced(mapping_path), what="the catch-up's mapping")
    assert len(first) == QUOTA and account_files(emulator) == QUOTA
    waiting = {p.name for p in root.iterdir()} - first

    freed = sorted(first)[:2]
    for name in freed:
        (root / name).unlink()
    # Well before any scheduled reconcile (hourly): the delete's own run frees the space.
    wait_for(
        lambda: synced(mapping_path) == (first - set(freed)) | waiting,
        30,
        what=f"{sorted(waiting)} uploaded once {freed} were deleted",
    )
    assert account_files(emulator) == QUOTA
