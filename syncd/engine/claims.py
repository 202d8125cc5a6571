"""Which remote files belong to which project, across every syncd on this host.

Projects that share an API key share one account, so a lost upload of project A
could otherwise be "found" among project B's files: same name, same size, same
seconds. Two things prevent it:

- a registry of claimed ids per key: every id a project records or adopts is
  claimed first, atomically, and an id claimed by another project is never a
  candidate for adoption;
- a lock per (name as sent, size), held from an upload's intent until its
  outcome is recorded: two uploads that adoption could not tell apart never
  overlap on this host.

A third record keeps which ``state_dir`` holds each owner, so a copied state (its
owner file copied with it) is refused rather than run beside the original.

All three live in the shared folder beside the pacing state (private to the user that
runs syncd). Across hosts the same guarantee needs a shared store.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# Lock files are striped: unrelated names rarely share one, and the folder stays small.
_STRIPES = 256


class Claims:
    """Thread-safe; one per open project."""

    def __init__(self, folder: Path, key_fingerprint: str, owner: str) -> None:
        self._folder = folder
        self._prefix = f"{key_fingerprint}-"
        self.owner = owner
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        db_path = folder / f"{key_fingerprint}-claims.sqlite3"
        if db_path.is_symlink():
            raise OSError(f"refusing a symlink for the claims registry: {db_path}")
        self._db = sqlite3.connect(
            db_path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS claims "
            "(file_id TEXT PRIMARY KEY, owner TEXT NOT NULL, at REAL NOT NULL)"
        )
        # Where each owner's state lives: a copied state_dir carries its owner file, and
        # two folders with one owner would each take the other's uploads for strays.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS homes "
            "(owner TEXT PRIMARY KEY, state_dir TEXT NOT NULL, at REAL NOT NULL)"
        )
        with contextlib.suppress(OSError):
            os.chmod(db_path, 0o600)
        self._lock = threading.Lock()

    def settle_home(self, state_dir: str, holds_owner: Callable[[str], bool]) -> str | None:
        """Record ``state_dir`` as where this owner's state lives, unless another folder
        is recorded that ``holds_owner`` still (a copy of it, or it of this one): that
        folder is returned and nothing changes. A recorded folder that no longer holds
        the owner was moved: this one takes its place."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT state_dir FROM homes WHERE owner = ?", (self.owner,)
                ).fetchone()
                if row and row[0] != state_dir and holds_owner(row[0]):
                    return str(row[0])
                self._db.execute(
                    "INSERT OR REPLACE INTO homes VALUES (?, ?, ?)",
                    (self.owner, state_dir, time.time()),
                )
                return None
            finally:
                self._db.execute("COMMIT")

    def claim(self, file_id: str) -> bool:
        """Make ``file_id`` ours; False when another project already holds it."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO claims VALUES (?, ?, ?)", (file_id, self.owner, time.time())
            )
            row = self._db.execute(
                "SELECT owner FROM claims WHERE file_id = ?", (file_id,)
            ).fetchone()
        return bool(row) and row[0] == self.owner

    def claim_all(self, file_ids: Iterable[str]) -> None:
        """Register ids our state already owns (ids recorded before the registry existed)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR IGNORE INTO claims VALUES (?, ?, ?)",
                ((i, self.owner, now) for i in file_ids),
            )
            self._db.execute("COMMIT")

    def release(self, file_id: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM claims WHERE file_id = ? AND owner = ?", (file_id, self.owner)
            )

    def others(self) -> frozenset[str]:
        """Ids claimed by every other project on this key."""
        with self._lock:
            rows = self._db.execute("SELECT file_id FROM claims WHERE owner != ?", (self.owner,))
            return frozenset(r[0] for r in rows)

    def mine(self) -> frozenset[str]:
        """Ids this project created or adopted and has not released."""
        with self._lock:
            rows = self._db.execute("SELECT file_id FROM claims WHERE owner = ?", (self.owner,))
            # Interned, as the state's and the listing's ids are: a project of 100,000
            # files holds one object per id, not three.
            return frozenset(sys.intern(r[0]) for r in rows)

    @contextlib.contextmanager
    def name_lock(self, wire_name: str, size: int) -> Iterator[None]:
        digest = hashlib.sha256(f"{size}:{wire_name}".encode()).digest()
        stripe = int.from_bytes(digest[:4], "big") % _STRIPES
        path = self._folder / f"{self._prefix}name-{stripe:03d}.lock"
        # One open file description per holder: flock then excludes threads of this
        # process as well as other processes.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._db.close()
