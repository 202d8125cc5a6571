"""Remote ids to delete: queued (no path holds them), held (a guard refused them until
a person answers) and made (counted against the delete window by every run)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from syncd.engine.model import GUARDED, Delete, Held
from syncd.engine.state_db import StateDb

# Guarded deletes older than this are forgotten (far beyond any delete window).
_GUARDED_KEEP_S = 7 * 86_400.0


class DeleteRecords(StateDb):
    """The garbage, held_deletes and guarded_deletes tables."""

    def garbage(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT file_id FROM garbage")}

    def held(self) -> dict[str, Held]:
        with self._lock:
            rows = self._db.execute(
                "SELECT file_id, path, reason, guard, since FROM held_deletes"
            ).fetchall()
        return {row[0]: Held(*row) for row in rows}

    def guarded_deletes_since(self, since: float) -> int:
        """Guarded deletes made at or after ``since``, by any run of any process."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM guarded_deletes WHERE at >= ?", (since,)
            ).fetchone()
        return int(n)

    def add_garbage(self, file_id: str, path: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO garbage VALUES (?, ?, ?)", (file_id, path, time.time())
            )

    def record_deleted(
        self, file_id: str, path: str | None, *, forget_path: bool, reason: str = "garbage"
    ) -> None:
        """After a remote delete: the id is no longer ours anywhere, no longer held, and a
        guarded delete is counted for the delete window, all in one transaction."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT size FROM files WHERE file_id = ?", (file_id,)).fetchone()
            self._journal(
                db, "deleted", now, path=path, file_id=file_id,
                size=row[0] if row else None, reason=reason,
            )  # fmt: skip
            db.execute("DELETE FROM garbage WHERE file_id = ?", (file_id,))
            db.execute("DELETE FROM held_deletes WHERE file_id = ?", (file_id,))
            if reason in GUARDED:
                db.execute("INSERT INTO guarded_deletes VALUES (?, ?)", (now, file_id))
                db.execute("DELETE FROM guarded_deletes WHERE at < ?", (now - _GUARDED_KEEP_S,))
            # Every path holding the id is written below: their kept records are read back.
            self._dirty.update(
                r[0] for r in db.execute("SELECT path FROM files WHERE file_id = ?", (file_id,))
            )
            if forget_path and path is not None:
                db.execute("DELETE FROM files WHERE path = ? AND file_id = ?", (path, file_id))
            db.execute(
                "UPDATE files SET file_id = NULL, uploaded_at = NULL, updated_at = ? "
                "WHERE file_id = ?",
                (time.time(), file_id),
            )

    def hold(self, deletes: Iterable[Delete], guard: str) -> None:
        """Keep refused deletes refused; a delete already held keeps its first refusal."""
        now = time.time()
        with self._tx() as db:
            for d in deletes:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO held_deletes VALUES (?, ?, ?, ?, ?)",
                    (d.file_id, d.path, d.reason, guard, now),
                )
                if cursor.rowcount:
                    self._journal(
                        db, "held", now, path=d.path, file_id=d.file_id,
                        status=d.reason, reason=guard,
                    )  # fmt: skip

    def unhold(self, file_ids: Iterable[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM held_deletes WHERE file_id = ?", ((f,) for f in file_ids))
