"""Where a class's pacing state lives on one host: the store interface, memory, files.

A store is one transaction (:class:`StateStore`): it hands an update the class's
state under an exclusive lock (:class:`Held`, with the clock reading its times are
compared with) and saves what the update changed. :class:`MemoryStore` keeps the
state for the threads of one process. :class:`FileStore` keeps it in a small JSON
file per class in a private folder, under ``fcntl.flock`` on a separate lock file, so
every process of this user on the host paces together; :class:`PacingDir` decides
whether that folder (and each file in it) is safe to use: it must belong to this user
and not be writable by group or others (it is created 0700), files are opened
without following symlinks and replaced atomically, and an unsafe one is refused
with :class:`PacingDirError` saying what to do. :func:`default_pacing_dir` picks the
per-user folder. The store shared between hosts is in :mod:`syncd.api.pacing_redis`,
and the switch between it and these in :mod:`syncd.api.pacing_failover`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from syncd.api.pacing_rules import Inheritance
from syncd.api.pacing_state import MAX_STATE_BYTES, ClassState
from syncd.userdirs import cache_folder

T = TypeVar("T")


class PacingDirError(ValueError):
    """The shared pacing folder (or a file in it) is not safe to use; the message says
    which path and what to do."""


@dataclass
class Held:
    """A class's state as a store hands it to an update, with the clock reading its
    times are compared with."""

    state: ClassState
    now: float
    # Share of the configured ceiling this host may use while this store serves:
    # 1.0, or less while a shared store is unreachable (and just after it returns).
    share: float = 1.0
    # Which clock ``now`` and the state's times are on: this host's monotonic clock
    # ("local") or the shared store's. A time remembered on one is meaningless on the other.
    clock: str = "local"
    # Set by a store that fails over (see :class:`Failover`): the budget to note on a
    # grant (shared state), the window to start from (local state, first use after the
    # shared store was lost) and this host's grants to bring back (shared state, first
    # use after it returned).
    host: str | None = None
    inherit: Inheritance | None = None
    returning: Returning | None = None
    inherited: int = 0


@dataclass(frozen=True)
class Returning:
    """Grants made on the local clock while the shared store was away, and a local
    clock reading taken before the shared store was asked (so a grant converted to the
    shared clock is never earlier than it was)."""

    asked_at: float
    grants: tuple[float, ...]


class StateStore(Protocol):
    """Storage of one class's state. ``update`` applies ``fn`` to the state under
    mutual exclusion with every pacer sharing the store, saves what it changed and
    returns its result. ``fn`` must act only on the state it is given: a store may
    run it again on a fresher state (optimistic concurrency)."""

    def update(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T: ...

    def close(self) -> None: ...


class StoreUnavailable(Exception):
    """A shared store cannot be reached (or answered nonsense); the pacer falls back."""


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = ClassState()

    def update(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T:
        with self._lock:
            return fn(Held(self._state, clock()))

    def close(self) -> None:
        pass


def budget_id(folder_fd: int) -> str:
    """The name of the budget a pacing folder holds: this machine and that folder."""
    try:
        with open("/etc/machine-id", "rb") as fh:
            machine = fh.read(64).strip()
    except OSError:
        machine = b""
    st = os.fstat(folder_fd)
    text = b"%s|%s|%d|%d" % (machine, socket.gethostname().encode(), st.st_dev, st.st_ino)
    return hashlib.sha256(text).hexdigest()[:16]


def default_pacing_dir() -> Path:
    """The per-user folder for shared pacing state, never a world-writable temp dir.

    In order: ``$RUNTIME_DIRECTORY/pacing`` (systemd's ``RuntimeDirectory=``, private
    to the service); ``$XDG_RUNTIME_DIR/syncd/pacing`` (the login session's 0700
    ``/run/user/UID``, used only if it belongs to this user); else
    ``$XDG_CACHE_HOME/syncd/pacing`` or ``~/.cache/syncd/pacing``. Every process of one
    user on the host finds the same folder, so they share one budget per key;
    different users do not share (each has its own folder), by design.
    """
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if os.path.isabs(runtime):
        return Path(runtime) / "pacing"
    xdg_runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg_runtime):
        try:
            st = os.stat(xdg_runtime)
        except OSError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
                return Path(xdg_runtime) / "syncd" / "pacing"
    cache = cache_folder()
    if cache is None:
        raise PacingDirError(
            "no per-user folder for the shared pacing state (no runtime dir, no home); "
            "set limits.pacing_dir to a folder of this user"
        )
    return cache / "pacing"


def dir_problem(st: os.stat_result, euid: int) -> str | None:
    """Why a folder with this stat must not hold our pacing state, or None."""
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if st.st_uid != euid:
        return (
            f"belongs to uid {st.st_uid}, not to this user (uid {euid}): someone else could "
            "have prepared its files. Remove it, or set limits.pacing_dir to a folder of "
            "this user"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): they "
            "could plant files in it. Run `chmod go-w` on it, or set limits.pacing_dir to "
            "a folder of this user"
        )
    return None


def file_problem(st: os.stat_result, euid: int) -> str | None:
    """Why a file in the pacing folder must not be used, or None."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != euid:
        return f"belongs to uid {st.st_uid}, not to this user (uid {euid})"
    if st.st_nlink != 1:
        return "has other hard links"
    return None


class PacingDir:
    """The checked pacing folder, held open: files are created relative to this
    descriptor, so the folder checked is the folder used even if a path component
    is swapped afterwards."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(parents=True, mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise PacingDirError(
                f"cannot create the pacing folder {path}: {exc.strerror}; "
                "set limits.pacing_dir to a folder this user can write"
            ) from None
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise PacingDirError(
                f"pacing folder {path} cannot be opened ({exc.strerror}); "
                "set limits.pacing_dir to a folder of this user"
            ) from None
        problem = dir_problem(os.fstat(self.fd), os.geteuid())
        if problem is not None:
            os.close(self.fd)
            raise PacingDirError(f"pacing folder {path} {problem}")

    def open_lock(self, name: str) -> int:
        """Open (creating it if new) a lock file, never through a symlink."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK
        for _ in range(3):
            try:
                fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=self.fd)
                break
            except FileExistsError:
                pass
            try:
                fd = os.open(name, flags, dir_fd=self.fd)
                break
            except FileNotFoundError:
                continue  # removed in between: create it
            except OSError as exc:
                raise PacingDirError(
                    f"pacing file {self.path / name} cannot be opened safely "
                    f"({exc.strerror}; a symlink?): remove it"
                ) from None
        else:
            raise PacingDirError(f"pacing file {self.path / name} keeps disappearing")
        problem = file_problem(os.fstat(fd), os.geteuid())
        if problem is not None:
            os.close(fd)
            raise PacingDirError(f"pacing file {self.path / name} {problem}: remove it")
        return fd

    def read(self, name: str) -> bytes:
        """The file's bytes, or b"" when it is missing or not a plain file of ours (it
        is then replaced on the next write, never followed)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self.fd)
        except OSError:
            return b""
        try:
            if file_problem(os.fstat(fd), os.geteuid()) is not None:
                return b""
            data = os.read(fd, MAX_STATE_BYTES + 1)
            return b"" if len(data) > MAX_STATE_BYTES else data
        finally:
            os.close(fd)

    def replace(self, name: str, data: bytes) -> None:
        """Atomically replace ``name`` with ``data``. Callers hold the lock, so one
        temporary name per file is enough; a leftover from a crash is removed first."""
        tmp = f".{name}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self.fd)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=self.fd
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileStore:
    """State in ``<name>.json``, under an exclusive ``flock`` of ``<name>.lock``.

    The lock lives in its own file because the state file is replaced on every write.
    The thread lock is needed too: flock is per open file description, so threads
    sharing this descriptor would not exclude each other through it.
    """

    def __init__(self, folder: PacingDir, name: str) -> None:
        self._folder = folder
        self._name = f"{name}.json"
        self._lock = threading.Lock()
        self._fd: int | None = folder.open_lock(f"{name}.lock")

    def update(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T:
        with self._lock:
            fd = self._fd
            if fd is None:
                raise ValueError("pacer is closed")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = self._folder.read(self._name)
                try:
                    state = ClassState.from_json(raw.decode()) if raw else ClassState()
                except (ValueError, TypeError, UnicodeDecodeError):
                    # A writer died mid-write, or someone edited it: pacing state is cheap
                    # to rebuild, and not to be trusted.
                    state = ClassState()
                result = fn(Held(state, clock()))
                data = state.to_json().encode()
                if data != raw:
                    self._folder.replace(self._name, data)
                return result
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
