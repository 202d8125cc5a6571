"""The published ``path -> file_id`` mapping other programs read.

Replaced atomically (temp file, fsync, rename, fsync of the folder) so a reader
sees the old mapping or the new one, never half of either.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Container, Iterable, Mapping
from pathlib import Path
from typing import Any

from syncd.engine.state import Synced

VERSION = 1
_swept: set[Path] = set()


def build(
    synced: Iterable[Synced],
    confirmed: Container[str],
    *,
    project: str,
    base_url: str,
    owner: str,
) -> dict[str, Any]:
    """The mapping of the synced records (in path order) whose id the remote has."""
    files = {
        path: {
            "file_id": file_id,
            "purpose": purpose,
            "bytes": size,
            "sha256": sha256,
            "uploaded_at": uploaded_at,
        }
        for path, file_id, purpose, size, sha256, uploaded_at in synced
        if file_id in confirmed
    }
    return {
        "version": VERSION,
        "project": project,
        # Which state publishes this file: two projects must never share one.
        "owner": owner,
        "base_url": base_url,
        "generated_at": time.time(),
        "files": files,
    }


_encode = json.JSONEncoder(ensure_ascii=False).encode


def _files(data: Mapping[str, Any]) -> str:
    """The mapping's files as JSON, one file per line: as easy to read and grep as an
    indented file, and written by the C encoder (an indented dump runs json's
    pure-Python one, twice as slow on a tree of 100,000 files)."""
    entries = data["files"].items()
    return ",\n".join(f"{_encode(path)}: {_encode(entry)}" for path, entry in entries)


def _digest(data: Mapping[str, Any], files: str) -> str:
    """What a mapping says, all but ``generated_at``, in 32 hex digits."""
    said = _encode({k: v for k, v in data.items() if k not in ("files", "generated_at")})
    return hashlib.blake2b(f"{said}\n{files}".encode(), digest_size=16).hexdigest()


def published(path: Path) -> str | None:
    """The digest of the mapping file at ``path`` as written, None if there is none."""
    try:
        data = json.loads(path.read_text("utf-8"))
        return _digest(data, _files(data))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def write_atomic(path: Path, data: dict[str, Any], *, unless: str | None = None) -> str:
    """Write the mapping; returns its digest (see :func:`published`). When ``unless``
    is that digest and the file is there, nothing is written: readers that watch the
    file see a change only when there is one."""
    files = _files(data)
    digest = _digest(data, files)
    if digest == unless and path.exists():
        return digest
    head = _encode({k: v for k, v in data.items() if k != "files"})
    body = f"\n{files}\n" if files else ""
    text = f'{head[:-1]}, "files": {{{body}}}}}\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    if path not in _swept:
        # A process killed between creating its temp file and the rename leaves it
        # behind; one process publishes a mapping (the state lock), so at its first
        # publish any such file is debris.
        for debris in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            debris.unlink(missing_ok=True)
        _swept.add(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return digest
