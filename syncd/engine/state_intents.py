"""Uploads under way: the intent recorded before each upload, and the attempts whose
response was lost (a copy they may have stored is looked for by later runs)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping

from syncd.api.adoption import UploadWindow, wire_name
from syncd.engine.model import Intent, LocalFile, LostCopy
from syncd.engine.state_db import StateDb


class IntentRecords(StateDb):
    """The intents and lost_copies tables."""

    def intents(self) -> dict[str, Intent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT i.path, filename, size, sha256, started_at, earliest, latest, "
                "s.mtime_ns, s.inode FROM intents i LEFT JOIN intent_stats s USING (path)"
            ).fetchall()
        return {
            row[0]: Intent(
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                UploadWindow(row[5], row[6]) if row[5] is not None else None,
                row[7],
                row[8],
            )
            for row in rows
        }

    def begin_intent(self, local: LocalFile) -> Intent:
        intent = Intent(
            local.path, wire_name(local.name), local.size, local.sha256 or "", time.time(),
            mtime_ns=local.mtime_ns, inode=local.inode,
        )  # fmt: skip
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO intents VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                (intent.path, intent.filename, intent.size, intent.sha256, intent.started_at),
            )
            db.execute(
                "INSERT OR REPLACE INTO intent_stats VALUES (?, ?, ?)",
                (intent.path, intent.mtime_ns, intent.inode),
            )
        return intent

    def mark_sent(self, path: str, window: UploadWindow) -> None:
        """The body's last byte is about to leave: from now on the provider may store the
        file, within ``window``. A later attempt widens the window, never narrows it."""
        with self._tx() as db:
            db.execute(
                "UPDATE intents SET earliest = MIN(COALESCE(earliest, ?), ?), "
                "latest = MAX(COALESCE(latest, ?), ?) WHERE path = ?",
                (window.earliest, window.earliest, window.latest, window.latest, path),
            )

    def note_lost_copies(
        self, path: str, filename: str, size: int, window: UploadWindow, most: int
    ) -> int:
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO lost_copies (path, filename, size, earliest, latest, noted_at, most)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (path, filename, size, window.earliest, window.latest, time.time(), most),
            )
            return int(cursor.lastrowid or 0)

    def update_lost_copies(self, key: int, window: UploadWindow, most: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE lost_copies SET earliest = ?, latest = ?, most = ? WHERE key = ?",
                (window.earliest, window.latest, most, key),
            )

    def lost_copies(self) -> list[LostCopy]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, path, filename, size, earliest, latest, noted_at, most, found "
                "FROM lost_copies"
            ).fetchall()
        return [
            LostCopy(k, p, f, s, UploadWindow(lo, hi), at, most, found)
            for k, p, f, s, lo, hi, at, most, found in rows
        ]

    def found_lost_copies(self, found: Mapping[int, int]) -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE lost_copies SET found = found + ? WHERE key = ?",
                ((n, key) for key, n in found.items()),
            )

    def clear_lost_copies(self, keys: Iterable[int]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM lost_copies WHERE key = ?", ((k,) for k in keys))

    def clear_intent(self, path: str) -> None:
        with self._tx() as db:
            _drop_intent(db, path)


def _drop_intent(db: sqlite3.Connection, path: str) -> None:
    db.execute("DELETE FROM intents WHERE path = ?", (path,))
    db.execute("DELETE FROM intent_stats WHERE path = ?", (path,))
