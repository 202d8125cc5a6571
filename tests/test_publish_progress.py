"""A long run of uploads names its files in the mapping as it goes, not only at its end."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    assert_converged,
    build_flat_tree,
    fast_emulator,
    spawn_reconcile,
    write_config,
)

FILES = 40


def _mapped(path: Path) -> dict[str, str] | None:
    try:
        files = json.loads(path.read_text("utf-8"))["files"]
    except (OSError, ValueError):  # not there yet
        return None
    return {rel: entry["file_id"] for rel, entry in files.items()}


def test_a_long_reconcile_publishes_the_mapping_while_it_uploads(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    # Each upload takes 150 ms at the server and two go at a time: the run lasts about
    # 3 s (longer on a busy machine), against a publish interval of 0.3 s.
    emu = fast_emulator(emulator_factory, latency_ms=150)
    root = tmp_path / "root"
    paths = build_flat_tree(root, FILES)
    cfg = write_config(
        tmp_path, root, emu, limits={"workers": 2}, daemon={"publish_interval_s": 0.3}
    )
    mapping_path = tmp_path / "mapping.json"
    partial: list[dict[str, str]] = []
    proc = spawn_reconcile(cfg, emu.api_key)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        seen = _mapped(mapping_path)
        if seen and len(seen) < FILES and (not partial or seen != partial[-1]):
            partial.append(seen)
            # What a reader sees mid-run names only files that are on the remote.
            live = {f["id"] for f in emu.truth_files()}
            assert set(seen.values()) <= live, "the mapping named an id the remote lacks"
        time.sleep(0.02)
    assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
    assert partial, "the mapping was published only once the run was over"
    # Each publish names what the previous one did, and more.
    for before, after in itertools.pairwise(partial):
        assert before.items() <= after.items()
    assert_converged(emu, root, mapping_path, paths)
