"""A folder created while the watches are being added is watched too.

The pruned inotify watch walks the tree and adds one watch per folder. A folder that
appears in a parent after the parent was listed but before its watch was added used
to be neither listed nor reported by the kernel: nothing written into it was ever
seen (a burst of mkdir + writes on a busy machine lost a whole folder's files).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler

from syncd.daemon.inotify import PrunedInotifyObserver
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")


class Seen(FileSystemEventHandler):
    def __init__(self) -> None:
        self.paths: set[str] = set()
        self._lock = threading.Lock()

    def dispatch(self, event: FileSystemEvent) -> None:
        with self._lock:
            self.paths.add(os.fsdecode(event.src_path))


def test_a_folder_made_while_its_parent_is_listed_is_watched(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "docs" / "d0").mkdir(parents=True)
    late = root / "docs" / "late"

    def can_hold(rel: str) -> bool:
        # Asked while docs is being listed: the moment a racing mkdir lands in.
        if rel == "docs/d0" and not late.exists():
            late.mkdir()
        return True

    seen = Seen()
    observer = PrunedInotifyObserver(can_hold)
    observer.schedule(seen, str(root), recursive=True)
    observer.start()
    try:
        assert late.is_dir()
        for i in range(5):
            (late / f"f-{i}.txt").write_text("x")
        want = {str(late / f"f-{i}.txt") for i in range(5)}
        wait_for(lambda: want <= seen.paths, 10, what="the new folder's files seen")
    finally:
        observer.stop()
        observer.join()
