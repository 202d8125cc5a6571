"""Filesystem watching: turn watchdog events into queue entries, and keep watching
working when inotify cannot.

Three ways the watcher can fail silently, and what this module does about each:

* inotify's kernel queue overflows: watchdog logs a warning and sends no event to
  handlers, so :class:`OverflowMonitor` listens to watchdog's loggers and asks for
  a rescan.
* the watch limit (``fs.inotify.max_user_watches``) is hit: watchdog raises
  ``OSError`` ENOSPC (or EMFILE for ``max_user_instances``) only when the *root*
  cannot be watched; it silently skips sub-folders it cannot watch. So the tree is
  counted before starting, and both cases fall back to polling with a message
  naming the sysctl.
* network filesystems deliver no inotify events at all: ``watch.mode: polling``.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingEmitter
from watchdog.utils import UnsupportedLibcError

from syncd.daemon.settle import Kind
from syncd.engine.walk import CanHold, count_dirs

log = structlog.get_logger("syncd.daemon")

WatchKind = Literal["inotify", "polling"]

# Whether a folder (root-relative, "/"-separated) can hold a candidate.
# A folder's entries, as watchdog's polling walk reads them.
Listdir = Callable[[str | None], Iterator[os.DirEntry[str]]]

# Only what the daemon acts on. Leaving out opened/closed-without-write keeps
# IN_OPEN/IN_CLOSE_NOWRITE out of the inotify mask: the daemon reads every file it
# uploads, and those reads would otherwise flood the kernel queue.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]

# A folder moved out of the root arrives as one DirDeletedEvent with no events
# for the files it held. The folder's own path is queued, and the engine's
# sync_paths maps an absent folder path to the tracked files under it, so no
# rescan is needed; flip this if an engine cannot do that.
RESCAN_ON_FOLDER_REMOVAL = False

_WATCH_LIMIT_SYSCTL = "/proc/sys/fs/inotify/max_user_watches"


class EventSink(Protocol):
    def touch(self, path: str, kind: Kind) -> None: ...

    def touch_dir(self, path: str) -> None: ...

    def move_dir(self, src: str, dest: str) -> None: ...

    def request_rescan(self, reason: str) -> None: ...


class QueueingHandler(FileSystemEventHandler):
    """Maps events to root-relative posix paths and enqueues them; does nothing else.

    It runs on watchdog's single dispatch thread, so it must never block or raise:
    a slow handler backs up the kernel queue until it overflows.
    """

    def __init__(
        self,
        root: Path,
        sink: EventSink,
        is_candidate: Callable[[str], bool],
    ) -> None:
        super().__init__()
        self._root = os.path.abspath(root)
        self._prefix = self._root.rstrip(os.sep) + os.sep
        self._sink = sink
        self._is_candidate = is_candidate

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._route(event)
        except Exception:
            # An exception here would kill watchdog's dispatch thread and end all
            # watching; a rescan is the safe way to make up for one lost event.
            log.exception("failed to queue an event; scheduling a rescan", fs_event=repr(event))
            self._sink.request_rescan("internal error while queueing an event")

    def _rel(self, path: bytes | str) -> str | None:
        p = os.fsdecode(path)
        if not p.startswith(self._prefix):
            return None
        rel = p[len(self._prefix) :]
        if os.sep != "/":
            rel = rel.replace(os.sep, "/")
        return rel or None

    def _file(self, path: bytes | str, kind: Kind) -> None:
        rel = self._rel(path)
        if rel is not None and self._is_candidate(rel):
            self._sink.touch(rel, kind)

    def _dir_removed(self, path: bytes | str) -> None:
        if os.fsdecode(path).rstrip(os.sep) == self._root:
            self._sink.request_rescan("the watched folder disappeared")
            return
        rel = self._rel(path)
        if rel is None:
            return
        self._sink.touch(rel, Kind.DELETED)
        if RESCAN_ON_FOLDER_REMOVAL:
            self._sink.request_rescan(f"folder removed: {rel}")

    def _dir_moved(self, src: bytes | str, dest: bytes | str) -> None:
        # Within the root, both ends go to the engine as folder paths in one run, which
        # matches each moved file to its old path (files below them, which watchdog
        # reports too, join them in the queue). Into or out of the root, one end is all.
        src_rel = self._rel(src)
        dest_rel = self._rel(dest) if dest else None
        if src_rel is not None and dest_rel is not None:
            self._sink.move_dir(src_rel, dest_rel)
            return
        self._dir_removed(src)
        if dest:
            self._dir_added(dest)

    def _dir_added(self, path: bytes | str) -> None:
        rel = self._rel(path)
        if rel is not None:
            self._sink.touch_dir(rel)

    def _route(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent):
            self._file(event.src_path, Kind.DELETED)
            if event.dest_path:
                self._file(event.dest_path, Kind.CREATED)
        elif isinstance(event, FileCreatedEvent):
            self._file(event.src_path, Kind.CREATED)
        elif isinstance(event, FileClosedEvent):
            self._file(event.src_path, Kind.CLOSED)
        elif isinstance(event, (FileModifiedEvent, FileAttribEvent)):
            self._file(event.src_path, Kind.MODIFIED)
        elif isinstance(event, FileDeletedEvent):
            self._file(event.src_path, Kind.DELETED)
        elif isinstance(event, DirMovedEvent):
            self._dir_moved(event.src_path, event.dest_path)
        elif isinstance(event, DirCreatedEvent):
            self._dir_added(event.src_path)
        elif isinstance(event, DirDeletedEvent):
            self._dir_removed(event.src_path)


class OverflowMonitor(logging.Handler):
    """Turns watchdog's "queue overflowed" log records into a rescan request.

    watchdog 7 logs ``Inotify queue overflowed; filesystem events were lost`` at
    WARNING on ``watchdog.observers.inotify_c`` and, when rebuilding recursive
    watches fails afterwards, ``Unable to rebuild recursive inotify watches`` on
    ``watchdog.observers.inotify``; no event reaches the handler in either case.
    """

    LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")
    MARKERS = ("queue overflowed", "unable to rebuild recursive inotify watches")

    def __init__(self, on_overflow: Callable[[str], None]) -> None:
        super().__init__(level=logging.WARNING)
        self._on_overflow = on_overflow
        self._restore: list[tuple[logging.Logger, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            return
        if any(marker in message.lower() for marker in self.MARKERS):
            self._on_overflow(message)

    def install(self) -> None:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            # If logging was configured to hide watchdog's warnings, the records
            # would be dropped before reaching any handler, including this one.
            if not logger.isEnabledFor(logging.WARNING):
                self._restore.append((logger, logger.level))
                logger.setLevel(logging.WARNING)
            logger.addHandler(self)

    def uninstall(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)
        for logger, level in self._restore:
            logger.setLevel(level)
        self._restore.clear()


ObserverFactory = Callable[[], BaseObserver]


def read_watch_limit() -> int | None:
    try:
        with open(_WATCH_LIMIT_SYSCTL) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def watch_limit_message(root: Path, detail: str, poll_interval_s: float) -> str:
    return (
        f"cannot watch {root} with inotify: {detail}. Falling back to polling every "
        f"{poll_interval_s:g}s, which is slower to notice changes and reads the whole tree "
        "each time. To fix, raise the limit, e.g. `sysctl fs.inotify.max_user_watches=524288` "
        "(persist it in /etc/sysctl.d/), or set `watch.mode: polling` to silence this message."
    )


class Watcher:
    """Owns the observer: starts inotify or polling, and can restart either."""

    def __init__(
        self,
        root: Path,
        handler: FileSystemEventHandler,
        *,
        mode: Literal["auto", "inotify", "polling"],
        poll_interval_s: float,
        inotify_factory: ObserverFactory | None = None,
        polling_factory: Callable[[float], BaseObserver] | None = None,
        watch_limit: Callable[[], int | None] = read_watch_limit,
        can_hold: CanHold = lambda _rel_dir: True,
    ) -> None:
        self._root = root
        self._handler = handler
        self.mode = mode
        self.poll_interval_s = poll_interval_s
        # Folders no candidate can be under get no watch (and are not walked to count).
        self._can_hold = can_hold
        self._inotify_factory: ObserverFactory = inotify_factory or (
            lambda: native_observer(can_hold)
        )
        self._polling_factory = polling_factory or (
            lambda interval: pruned_polling_observer(root, can_hold, interval)
        )
        self._watch_limit = watch_limit
        self._observer: BaseObserver | None = None
        self._root_id: tuple[int, int] | None = None
        self.kind: WatchKind | None = None
        self.fallback_reason: str | None = None

    @property
    def is_alive(self) -> bool:
        # An emitter stops on its own when the watched root is deleted, while the
        # observer thread keeps running: both must be alive for events to flow.
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        emitters = observer.emitters
        if not emitters or not all(e.is_alive() for e in emitters):
            return False
        # inotify watches the folder, not its path: a root renamed away keeps its
        # watch (and watchdog ignores IN_MOVE_SELF), so check the path still leads
        # to the folder being watched.
        return self._root_id is None or root_identity(self._root) == self._root_id

    def start(self) -> WatchKind:
        """Start watching; on the watch limit, fall back to polling rather than fail."""
        self.fallback_reason = None
        self._root_id = root_identity(self._root)
        if self.mode == "polling":
            return self._start_polling()
        limit = self._watch_limit()
        if limit is not None:
            dirs = count_dirs(self._root, stop_after=limit, can_hold=self._can_hold)
            if dirs > limit:
                detail = (
                    f"the tree has more than {limit} folders to watch, the inotify watch limit "
                    "(fs.inotify.max_user_watches), and watchdog would skip the rest silently"
                )
                return self._fall_back(detail)
        observer = self._inotify_factory()
        try:
            self._schedule(observer)
        except OSError as exc:
            _discard(observer)
            if exc.errno == errno.ENOSPC:
                return self._fall_back(
                    f"{exc.strerror or exc} (errno {exc.errno}; limit fs.inotify.max_user_watches)"
                )
            if exc.errno == errno.EMFILE:
                return self._fall_back(
                    f"{exc.strerror or exc} (errno {exc.errno}; limits "
                    "fs.inotify.max_user_instances / fs.inotify.max_user_watches)"
                )
            raise
        self._observer = observer
        self.kind = "inotify"
        return self.kind

    def _fall_back(self, detail: str) -> WatchKind:
        message = watch_limit_message(self._root, detail, self.poll_interval_s)
        self.fallback_reason = message
        if self.mode == "inotify":
            log.error(message)
        else:
            log.warning(message)
        return self._start_polling()

    def _start_polling(self) -> WatchKind:
        observer = self._polling_factory(self.poll_interval_s)
        try:
            self._schedule(observer)
        except BaseException:
            _discard(observer)
            raise
        self._observer = observer
        self.kind = "polling"
        return self.kind

    def _schedule(self, observer: BaseObserver) -> None:
        # A root that is a symlink (an atomic deploy's `current -> v2`) is watched
        # through the link: without following it, inotify watches the link itself
        # (IN_DONT_FOLLOW) and no event for the files it leads to ever arrives. A link
        # re-pointed later changes the root's identity, and watching restarts.
        observer.schedule(
            self._handler,
            str(self._root),
            recursive=True,
            event_filter=EVENT_FILTER,
            follow_symlink=os.path.islink(self._root),
        )
        observer.start()

    def stop(self, timeout: float = 5.0) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout)
            if observer.is_alive():
                log.warning("the filesystem observer did not stop in time", timeout_s=timeout)

    def restart(self) -> WatchKind:
        self.stop()
        return self.start()


def root_identity(root: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder at ``root``, or None if there is none."""
    try:
        st = os.stat(root)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def native_observer(can_hold: CanHold) -> BaseObserver:
    """On Linux, inotify watching only the folders ``can_hold`` accepts; elsewhere the
    platform's own observer (it watches every folder)."""
    try:
        from syncd.daemon.inotify import PrunedInotifyObserver
    except (ImportError, UnsupportedLibcError):  # watchdog's inotify needs Linux's libc
        return Observer()
    return PrunedInotifyObserver(can_hold)


def pruned_listdir(root: Path, can_hold: CanHold) -> Listdir:
    """The folder listing a poll walks by: without the folders ``can_hold`` rejects and
    without symlinks to folders, so polling reads what the scan reads and nothing more
    (watchdog's own walk reads every folder, following links, each poll)."""
    top = os.fspath(root)

    def listdir(path: str | None) -> Iterator[os.DirEntry[str]]:
        folder = os.fspath(path if path is not None else top)
        rel_dir = os.path.relpath(folder, top).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        with os.scandir(folder) as listing:
            for entry in listing:
                if entry.is_dir():  # follows a link: a link to a folder is left out too
                    if entry.is_symlink():
                        continue
                    if not can_hold(f"{rel_dir}/{entry.name}" if rel_dir else entry.name):
                        continue
                yield entry

    return listdir


def pruned_polling_observer(root: Path, can_hold: CanHold, poll_interval_s: float) -> BaseObserver:
    """Polling that walks only the folders ``can_hold`` accepts."""
    listdir = pruned_listdir(root, can_hold)

    class PrunedPollingEmitter(PollingEmitter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, listdir=listdir, **kwargs)

    return BaseObserver(PrunedPollingEmitter, timeout=poll_interval_s)


def _discard(observer: BaseObserver) -> None:
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(2.0)
    except Exception:  # the observer failed half-way; nothing left to release
        log.debug("error while discarding a failed observer", exc_info=True)
