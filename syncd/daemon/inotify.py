"""inotify watches only on the folders that can hold a file syncd syncs.

watchdog's recursive inotify watch adds one watch per folder of the tree: on a
NAS share or a home folder that is most of ``fs.inotify.max_user_watches``
spent on folders the rules exclude (``photos/**``, ``node_modules/**``), and a
walk of all of them at every start. Here the same watch group walks only into
folders :meth:`syncd.engine.rules.Rules.can_hold` accepts, when it starts, when
a folder appears or moves in, and when it rebuilds after a queue overflow.

It builds on watchdog's own inotify group (event decoding, move pairing, the
shared inotify descriptor), overriding the one method that decides which
folders get a watch; ``pyproject.toml`` pins the watchdog versions it was written
against.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT, BaseObserver
from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyFD

from syncd.engine.walk import CanHold, walk_folders


def _always(_rel_dir: str) -> bool:
    return True


@dataclass
class _PrunedWatchGroup(InotifyWatchGroup):
    can_hold: CanHold = field(default=_always)

    def _add_all_callbacks(self, path: bytes) -> None:
        # Called for the root at start, for a folder created or moved in, and for the
        # root again after a queue overflow: each walks only into wanted folders.
        rel = os.fsdecode(os.path.relpath(path, self.path)).replace(os.sep, "/")
        if rel == ".":
            rel = ""
        elif rel.startswith("..") or not self.can_hold(rel):
            return
        if not self.is_recursive:
            self._add_callback(path)
            return

        # Each folder's watch is added before it is listed (see walk_folders).
        def watch(folder: str) -> None:
            self._add_callback(os.fsencode(folder))

        for _folder in walk_folders(os.fsdecode(path), rel, self.can_hold, entering=watch):
            pass


class _PrunedEmitter(InotifyEmitter):
    def __init__(self, *args: Any, can_hold: CanHold = _always, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._can_hold = can_hold

    def on_thread_start(self) -> None:
        self._inotify = _PrunedWatchGroup(
            self._inotify_fd,
            os.fsencode(self.watch.path),
            is_recursive=self.watch.is_recursive,
            event_mask=self.get_event_mask_from_filter(),
            follow_symlink=self.watch.follow_symlink,
            can_hold=self._can_hold,
        )


class PrunedInotifyObserver(BaseObserver):
    """watchdog's inotify observer, watching only folders ``can_hold`` accepts."""

    def __init__(self, can_hold: CanHold, *, timeout: float = DEFAULT_OBSERVER_TIMEOUT) -> None:
        self._inotify_fd = InotifyFD()
        self._inotify_fd.start()
        super().__init__(
            _PrunedEmitter, timeout=timeout, inotify_fd=self._inotify_fd, can_hold=can_hold
        )

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._inotify_fd.stop()
        self._inotify_fd.join()
