"""The account's file quota: syncd uploads what fits, never runs into the provider's
quota error, reports the rest as ``quota``, and catches up once space frees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    assert_converged,
    build_flat_tree,
    fast_emulator,
    read_mapping,
    reconcile,
    remote_files,
    status,
    write_config,
)

LOCAL = 40
QUOTA = 30
FOREIGN = 2


def _no_quota_error(emu: EmulatorHandle) -> None:
    stats = emu.stats()
    # Every upload request that reached the emulator stored a file: none was refused.
    assert stats["requests"]["upload"] == stats["mutations"]["upload"], stats
    assert stats["throttled"]["upload"] == 0


def test_uploads_what_fits_then_the_rest_when_space_frees(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory, max_files=QUOTA)
    # Another tool's files count against the same quota.
    src = tmp_path / "other"
    foreign = build_flat_tree(src, FOREIGN, prefix="other")
    sdk_ids = set()
    sdk = openai.OpenAI(api_key=emu.api_key, base_url=emu.url)
    for rel in foreign:
        sdk_ids.add(sdk.files.create(file=src / rel, purpose="file-extract").id)

    root = tmp_path / "root"
    paths = build_flat_tree(root, LOCAL)
    cfg = write_config(tmp_path, root, emu, limits={"max_files": QUOTA})

    emu.reset_stats()
    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 1, run.output
    fits = QUOTA - FOREIGN
    assert run.json["uploaded"] == fits
    _no_quota_error(emu)
    assert len(remote_files(emu)) == QUOTA

    st = status(cfg)
    waiting = {e["path"]: e for e in st["not_synced"]}
    assert len(waiting) == LOCAL - fits
    assert {e["status"] for e in waiting.values()} == {"quota"}
    assert all("account space" in e["reason"] for e in waiting.values())
    mapping = read_mapping(tmp_path / "mapping.json")
    assert len(mapping) == fits and not set(mapping) & set(waiting)

    # A second run changes nothing and still does not hit the quota.
    emu.reset_stats()
    assert reconcile(cfg, emu.api_key).returncode == 1
    assert emu.stats()["requests"]["upload"] == 0

    # Free space by removing synced files locally: their remote copies go first,
    # then the waiting files fill the account to the brim.
    removed = sorted(mapping)[: LOCAL - fits]
    for rel in removed:
        (root / rel).unlink()
    remaining = sorted(set(paths) - set(removed))
    emu.reset_stats()
    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 0, run.output
    _no_quota_error(emu)
    assert run.json["uploaded"] == LOCAL - fits
    assert run.json["deleted"] == len(removed)
    assert_converged(emu, root, tmp_path / "mapping.json", remaining, foreign=sdk_ids)
    assert sdk_ids <= set(remote_files(emu))
    assert len(remote_files(emu)) == QUOTA
    assert status(cfg)["not_synced"] == []
