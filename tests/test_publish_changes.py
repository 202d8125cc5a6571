"""The daemon's mapping after targeted syncs: published from what changed alone, it says
what a mapping made from the whole state and listing says."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syncd.engine.publish import Publisher
from syncd.engine.sync import Syncer
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import fast_emulator, read_mapping, remote_files


def _said(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    data.pop("generated_at")
    return data


def _as_made_whole(syncer: Syncer, where: Path) -> dict[str, Any]:
    fresh = Publisher(where / "whole.json")
    head = {"project": syncer.config.project, "owner": syncer.claims.owner,
            "base_url": syncer.base_url}  # fmt: skip
    (where / "whole.json").unlink(missing_ok=True)
    assert fresh.publish(syncer.state.synced, syncer.remote, head, object())
    return _said(fresh.path)


def test_targeted_syncs_publish_what_the_whole_state_says(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
) -> None:  # fmt: skip
    emulator = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    for name in ("a.txt", "b.txt", 'q"uote.txt', "d/c.txt", "é.txt"):
        (root / name).write_text(f"{name} v1\n")
    syncer = syncer_on(emulator, root)
    mapping = syncer.config.mapping_file
    assert syncer.reconcile().exit_code == 0
    assert _said(mapping) == _as_made_whole(syncer, tmp_path)

    steps: list[tuple[str, Callable[[], None]]] = [
        ("b.txt", lambda: (root / "b.txt").write_text("b v2\n")),
        ("0-first.txt", lambda: (root / "0-first.txt").write_text("new, sorts first\n")),
        ("z-last.txt", lambda: (root / "z-last.txt").write_text("new, sorts last\n")),
        ('q"uote.txt', lambda: (root / 'q"uote.txt').unlink()),
        ("z-last.txt", lambda: (root / "z-last.txt").unlink()),
        ("d/c.txt", lambda: (root / "d" / "c.txt").rename(root / "d" / "c2.txt")),
        ("d/c2.txt", lambda: None),
    ]
    for rel, change in steps:
        change()
        report = syncer.sync_paths([rel])
        assert report.exit_code == 0, report.as_json()
        assert _said(mapping) == _as_made_whole(syncer, tmp_path), rel

    # What the mapping names is what the account holds, path by path.
    files = read_mapping(mapping)
    remote = remote_files(emulator)
    assert sorted(files) == sorted(["0-first.txt", "a.txt", "b.txt", "d/c2.txt", "é.txt"])
    assert all(entry["file_id"] in remote for entry in files.values())
    assert remote[files["b.txt"]["file_id"]]["bytes"] == len("b v2\n")


def _two_files_synced(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
) -> Syncer:  # fmt: skip
    """A Syncer whose first reconcile uploaded a.txt and b.txt."""
    emulator = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    for name in ("a.txt", "b.txt"):
        (root / name).write_text(f"{name}\n")
    syncer = syncer_on(emulator, root)
    assert syncer.reconcile().exit_code == 0
    return syncer


def test_a_write_by_another_connection_is_published_too(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
) -> None:  # fmt: skip
    """What the publisher was not told of (another connection's commit) has the whole
    mapping made again, not a patch of what this process wrote."""
    syncer = _two_files_synced(tmp_path, emulator_factory, syncer_on)
    with sqlite3.connect(syncer.config.state_dir / "state.sqlite3") as db:
        db.execute("UPDATE files SET status = 'error', reason = 'set by hand' WHERE path = 'a.txt'")
    (syncer.config.root / "b.txt").write_text("b v2\n")
    assert syncer.sync_paths(["b.txt"]).exit_code == 0
    assert sorted(read_mapping(syncer.config.mapping_file)) == ["b.txt"]
    assert _said(syncer.config.mapping_file) == _as_made_whole(syncer, tmp_path)


def test_an_id_the_listing_loses_or_regains_leaves_or_rejoins_the_mapping(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
) -> None:  # fmt: skip
    """The mapping names only ids the account is known to hold: when the remote view
    loses one (found gone) or gains it back (a listing that omitted it, confirmed), the
    line of the path holding it follows, though the state did not change."""
    syncer = _two_files_synced(tmp_path, emulator_factory, syncer_on)
    mapping = syncer.config.mapping_file
    a_id = read_mapping(mapping)["a.txt"]["file_id"]
    gone = syncer.remote.remove(a_id)
    assert gone is not None
    syncer.publish_mapping()
    assert sorted(read_mapping(mapping)) == ["b.txt"]
    syncer.remote.add(gone)
    syncer.publish_mapping()
    assert read_mapping(mapping)["a.txt"]["file_id"] == a_id
    assert _said(mapping) == _as_made_whole(syncer, tmp_path)
