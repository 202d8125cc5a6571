"""Open a file of the root without leaving the root, and without blocking.

Every read of a candidate's bytes (its hash, a batch file's validation, the body of
its upload) starts here. The path is walked one component at a time from a
descriptor of the root (``openat``), each folder opened with ``O_NOFOLLOW``: a folder
replaced by a link after the scan leads nowhere. The file is opened ``O_NONBLOCK``
(a named pipe put in its place cannot hang the run) and kept only when ``fstat``
says it is a regular file. A symbolic link as the last component is followed the
same way, one component at a time, and only while it stays inside the root;
``target_ok`` says whether the file it leads to may stand for the link (the scan
passes its rules). What was checked is the descriptor handed back: the bytes hashed
and the bytes sent are read from it, never from the path again.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from syncd.engine.model import Status

# Links followed for one path, as the kernel allows: more is a loop.
MAX_LINKS = 40

OUTSIDE = "symlink points outside the root"
BROKEN = "broken symlink"
NOT_REGULAR = "not a regular file"
LINKED_FOLDER = "a folder on its path is a symbolic link"
LOOP = "too many levels of symbolic links"
# A link is never walked into: the folder it leads to is scanned where it lives.
LINK_TO_FOLDER = "symlink to a folder: not followed (its files are synced where they are)"

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# What an open answers when the entry changed kind since its lstat: look again.
_RACED = (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)


class Refused(Exception):
    """The path cannot be read as a file of the root: ``reason`` and ``status`` are what
    its record shows."""

    def __init__(self, reason: str, status: Status = "skipped") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status: Status = status


@dataclass(frozen=True, slots=True)
class Opened:
    """A regular file of the root, open for reading, with its ``fstat``."""

    file: BinaryIO
    stat: os.stat_result
    # Root-relative path of the file opened: the link's target when ``linked``.
    target: str
    linked: bool

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cannot_read(exc: OSError) -> str:
    return f"cannot read: {exc.strerror or exc}"


def open_in_root(
    root: Path, rel: str, *, target_ok: Callable[[str], str | None] | None = None
) -> Opened:
    """Open ``rel`` (root-relative, plain) as a regular file of ``root``.

    Raises :class:`Refused` (outside the root, a broken link or a loop, a folder on the
    path turned into a link, not a regular file, a link ``target_ok`` refuses, or
    unreadable: status ``error``), or OSError ENOENT/ENOTDIR when the path itself is
    gone."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _Walk(root, root_fd).open(rel, target_ok)
    finally:
        os.close(root_fd)


class _Walk:
    def __init__(self, root: Path, root_fd: int) -> None:
        self._root = root
        self._root_fd = root_fd
        # Folders below the root, each held open: ``..`` goes back to the one before,
        # whatever was renamed meanwhile.
        self._held: list[tuple[str, int]] = []
        self._links = 0

    def open(self, rel: str, target_ok: Callable[[str], str | None] | None) -> Opened:
        try:
            opened = self._walk(rel)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                if self._links:
                    raise Refused(BROKEN) from None
                raise
            raise Refused(cannot_read(exc), "error") from None
        finally:
            for _name, fd in self._held:
                os.close(fd)
        if opened.linked and target_ok is not None:
            why = target_ok(opened.target)
            if why is not None:
                opened.close()
                raise Refused(why)
        return opened

    def _walk(self, rel: str) -> Opened:
        todo = rel.split("/")[::-1]  # a stack: the next component last
        retries = 0
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if not self._held:
                    raise Refused(OUTSIDE)
                os.close(self._held.pop()[1])
                continue
            here = self._held[-1][1] if self._held else self._root_fd
            st = os.stat(name, dir_fd=here, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                if todo and not self._links:
                    # The scan never enters a linked folder: it became one since.
                    raise Refused(LINKED_FOLDER)
                todo.extend(self._follow(name, here)[::-1])
                continue
            if not stat.S_ISDIR(st.st_mode):
                if todo:
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)
                if not stat.S_ISREG(st.st_mode):
                    raise Refused(NOT_REGULAR)  # never opened: a device, a pipe, a socket
            try:
                if stat.S_ISDIR(st.st_mode):
                    self._held.append((name, os.open(name, _DIR, dir_fd=here)))
                else:
                    return self._file(name, here)
            except OSError as exc:
                # Replaced by another kind of entry between the lstat and the open.
                if exc.errno not in _RACED or retries >= MAX_LINKS:
                    raise
                retries += 1
                todo.append(name)
        # The path ends at a folder: the root, or one of its folders.
        raise Refused(LINK_TO_FOLDER if self._links else NOT_REGULAR)

    def _follow(self, name: str, here: int) -> list[str]:
        """The components a link stands for, from the folder it is in (an absolute
        target is taken from the root, if it names a path under it)."""
        self._links += 1
        if self._links > MAX_LINKS:
            raise Refused(LOOP)
        try:
            target = os.readlink(name, dir_fd=here)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # no longer a link: look at it again
                return [name]
            raise
        if not target.startswith("/"):
            return target.split("/")
        inside = self._under_root(target)
        if inside is None:
            raise Refused(OUTSIDE)
        for _name, fd in self._held:
            os.close(fd)
        self._held = []
        return inside

    def _under_root(self, target: str) -> list[str] | None:
        parts = _plain(target)
        for base in {os.path.abspath(self._root), os.path.realpath(self._root)}:
            prefix = _plain(base)
            if parts[: len(prefix)] == prefix:
                return parts[len(prefix) :]
        return None

    def _file(self, name: str, here: int) -> Opened:
        fd = os.open(name, _FILE, dir_fd=here)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(NOT_REGULAR)
            os.set_blocking(fd, True)
            file = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        target = "/".join([*(n for n, _fd in self._held), name])
        return Opened(file, st, target, bool(self._links))


def _plain(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]
