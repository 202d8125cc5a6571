"""Start-up cost: the methods dataclasses writes for each class, compiled once per user.

For every dataclass, Python writes the source of its ``__init__``, ``__repr__`` and
``__eq__`` (and, frozen, ``__hash__``, ``__setattr__`` and ``__delattr__``) and compiles
it, each time the class is defined: about 440 small compilations before a one-off
``syncd reconcile`` can start, a fifth of its start-up (Python 3.13 compiles a class's
methods together; syncd runs on 3.11 as well). The command keeps the compiled code in
a cache keyed by the source text itself, so an entry is exactly what compiling that
text gives, whichever version of syncd or of its packages wrote it.

The cache is code the process runs, so it is trusted as Python trusts ``__pycache__``,
and no further: the file is read only if it and its folder belong to this user and
neither is writable by anyone else, without following a symlink; anything else, or
a file that does not read back, is ignored. It is written (atomically, 0600 in a 0700
folder, ``$XDG_CACHE_HOME/syncd`` or ``~/.cache/syncd``) when a run compiled code it
lacked, and never when Python was told not to write bytecode
(``PYTHONDONTWRITEBYTECODE``, ``-B``).

dataclasses passes each source to ``exec`` by name (Python 3.8 to 3.13), and a global
``exec`` in its module takes the builtin's place there. Were that to change, the cache
would go unused, and nothing else.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import marshal
import os
import stat
import sys
from importlib.util import MAGIC_NUMBER
from pathlib import Path
from types import CodeType
from typing import Any

from syncd.userdirs import cache_folder

# Entries kept across runs: every command's classes, and a few versions of them.
# Past this, a write keeps only what its run used.
MOST_ENTRIES = 5000


class MethodCache:
    """Compiled sources, read from ``folder`` and written back when a run added any."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = f"dataclass-methods.{sys.implementation.cache_tag}.opt{sys.flags.optimize}"
        self.known = _read(folder, self.name)
        self.used: dict[str, CodeType] = {}
        self.compiled = 0

    def exec(self, source: Any, globals: Any = None, locals: Any = None, /) -> None:
        if isinstance(source, str):
            code = self.known.get(source)
            if code is None:
                # As exec would compile it from dataclasses, whose source has no
                # __future__ imports: none are inherited from this module.
                code = compile(source, "<string>", "exec", dont_inherit=True)
                self.known[source] = code
                self.compiled += 1
            self.used[source] = code
            source = code
        builtins.exec(source, globals, locals)

    def save(self) -> None:
        if not self.compiled or sys.dont_write_bytecode:
            return
        kept = self.known if len(self.known) <= MOST_ENTRIES else self.used
        # A read-only home, a full disk: the next run compiles, as Python would.
        with contextlib.suppress(OSError):
            _write(self.folder, self.name, MAGIC_NUMBER + marshal.dumps(kept))


def cache_dataclass_methods(folder: Path | None = None) -> MethodCache | None:
    """From now on, the classes dataclasses makes take their methods from the cache in
    ``folder`` (the default: :func:`syncd.userdirs.cache_folder`); it is written back at exit."""
    import dataclasses

    folder = folder or cache_folder()
    if folder is None or "exec" in vars(dataclasses):
        return None
    cache = MethodCache(folder)
    dataclasses.exec = cache.exec  # type: ignore[attr-defined]
    atexit.register(cache.save)
    return cache


def _ours(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read(folder: Path, name: str) -> dict[str, CodeType]:
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return {}
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not (_ours(os.fstat(dir_fd)) and _ours(st) and stat.S_ISREG(st.st_mode)):
                return {}
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
        finally:
            os.close(fd)
    except OSError:
        return {}
    finally:
        os.close(dir_fd)
    if not data.startswith(MAGIC_NUMBER):
        return {}  # another Python's bytecode
    try:
        table = marshal.loads(memoryview(data)[len(MAGIC_NUMBER) :])
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if type(k) is str and type(v) is CodeType}


def _write(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not _ours(os.fstat(dir_fd)):
            return  # it would not be read back
        tmp = f".{name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                     dir_fd=dir_fd)  # fmt: skip
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)
