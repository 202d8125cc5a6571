"""An atomic deploy under the running daemon: the root is a symlink re-pointed to a new
version (`ln -sfn v2 root.tmp && mv -T root.tmp root`); changes in the new version made
afterwards are synced like any other."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import fast_emulator, read_mapping, write_config
from tests.helpers import wait_for
from tests.test_daemon_move import daemon

__all__ = ["daemon"]  # the fixture, shared with the move tests

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux daemon")


def mapped(mapping_path: Path) -> dict[str, str]:
    """path -> sha256, as the published mapping says."""
    try:
        return {p: e["sha256"] for p, e in read_mapping(mapping_path).items()}
    except (OSError, ValueError, KeyError):
        return {}


def on_disk(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_changes_after_the_root_link_is_swapped_are_synced(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    daemon: Callable[[Path, str], subprocess.Popen[bytes]],
) -> None:
    emulator = fast_emulator(emulator_factory)
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
        for i in (1, 2):
            (tmp_path / version / f"f{i}.txt").write_text(f"{version} {i}\n")
    root = tmp_path / "root"
    root.symlink_to("v1")
    config = write_config(
        tmp_path, root, emulator,
        sync={"settle_s": 0.3, "max_settle_s": 5},
        daemon={"publish_interval_s": 0.5, "shutdown_timeout_s": 8},
    )
    mapping_path = tmp_path / "mapping.json"
    daemon(config, emulator.api_key)
    wait_for(lambda: mapped(mapping_path) == on_disk(tmp_path / "v1"), what="v1 published")

    (tmp_path / "v1" / "f1.txt").write_text("v1 edited through the link\n")
    wait_for(lambda: mapped(mapping_path) == on_disk(tmp_path / "v1"), 30, what="v1 edit")

    (tmp_path / "root.tmp").symlink_to("v2")
    (tmp_path / "root.tmp").rename(root)
    wait_for(lambda: mapped(mapping_path) == on_disk(tmp_path / "v2"), 30, what="the switch")

    (tmp_path / "v2" / "f1.txt").write_text("v2 edited\n")
    (tmp_path / "v2" / "new.txt").write_text("new in v2\n")
    wait_for(
        lambda: mapped(mapping_path) == on_disk(tmp_path / "v2"),
        30,
        what="changes in the new target published",
    )
