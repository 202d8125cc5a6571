"""A file whose name is not UTF-8 is explained the same way whether a full scan or the
watcher's targeted run finds it: recorded under its visible spelling, status invalid."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from syncd.config import RulesConfig
from syncd.engine.records import RecordTable
from syncd.engine.rules import Rules
from syncd.engine.scan import record_key, scan_paths, scan_root
from syncd.engine.sync import Syncer
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import fast_emulator, remote_files

BAD = b"bad\xfe.txt"
# The name as the watcher queues it: decoded from the filesystem, bytes smuggled.
QUEUED = os.fsdecode(BAD)
SHOWN = "bad\\xfe.txt"




def _bad_name(root: Path) -> None:
    with open(os.path.join(os.fsencode(root), BAD), "wb") as fh:
        fh.write(b"x\n")


def test_scoped_scan_records_a_non_utf8_name_as_a_full_scan_does(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _bad_name(root)
    rules = Rules(RulesConfig())

    full = scan_root(root, rules, RecordTable())
    scoped = scan_paths(root, rules, RecordTable(), [QUEUED])

    assert set(full.files) == set(scoped.files) == {SHOWN} == {record_key(QUEUED)}
    assert scoped.files[SHOWN] == full.files[SHOWN]
    assert scoped.files[SHOWN].problem_status == "invalid"
    assert record_key("notes/read me.md") == "notes/read me.md"


def test_non_utf8_name_seen_by_the_watcher_is_reported_invalid(
    emulator_factory: Callable[..., EmulatorHandle],
    syncer_on: Callable[..., Syncer],
    tmp_path: Path,
) -> None:
    emulator = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    syncer = syncer_on(emulator, root)
    assert syncer.reconcile().exit_code == 0

    _bad_name(root)
    report = syncer.sync_paths([QUEUED])

    assert report.unsynced.get(SHOWN, ("", ""))[0] == "invalid"
    assert report.exit_code == 1
    assert syncer.state.records()[SHOWN].status == "invalid"
    assert [f["filename"] for f in remote_files(emulator).values()] == ["a.txt"]
