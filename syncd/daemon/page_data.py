"""What the status page's JSON endpoints answer: the status document and the journal.

``/api/status`` is the document of ``syncd status --json`` (:func:`status.combine` of
the state file and the daemon's live status), so a script reading the page's endpoint
and a person running the command see the same thing. Asked with ``offset``, ``limit``
or ``q``, its ``not_synced`` list is narrowed to the rows that hold ``q`` (in the path,
the status or the reason) and to one page of them, with ``not_synced_total`` saying
how many matched: a page showing ten thousand failures fetches a hundred at a time.

Both are read on request only: nobody asking costs the daemon nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.engine.journal import Entry

PAGE_MAX = 1000  # rows of not_synced or of the journal in one answer
LOG_DEFAULT = 50
# A state read is kept at most this long even if its files look unchanged: a safety net
# for a write that left size and time alike (within the file system's time resolution).
STORED_MAX_AGE_S = 30.0


class BadQuery(ValueError):
    """A query parameter that is not what the endpoint takes (answered with 400)."""


class Documents:
    """The page's documents, built from the current config and the live status."""

    def __init__(self, config: Callable[[], Config], live: Callable[[], dict[str, Any]]) -> None:
        self._config = config
        self._live = live
        self._lock = threading.Lock()
        self._stored: tuple[tuple[Any, ...], dict[str, Any] | None] | None = None

    def status(self, query: Mapping[str, str]) -> dict[str, Any]:
        from syncd.daemon.status import merge

        config = self._config()
        data = merge(config, self._from_state(config), self._live())
        if data is None:  # unreachable with a live status, which always gives a document
            data = {"project": config.project, "root": str(config.root)}
        if query.keys() & {"offset", "limit", "q"}:
            narrow(data, query)
        return data

    def _from_state(self, config: Config) -> dict[str, Any] | None:
        """What the state file says, read again only once its files changed: a page left
        open on a big tree asks every second, and an idle daemon writes nothing."""
        from syncd.daemon.status import from_state

        key = (id(config), int(time.monotonic() // STORED_MAX_AGE_S), *_stamps(config))
        with self._lock:
            if self._stored is not None and self._stored[0] == key:
                stored = self._stored[1]
                return None if stored is None else dict(stored)
        data = from_state(config)
        with self._lock:
            self._stored = (key, data)
        return None if data is None else dict(data)

    def log(self, query: Mapping[str, str]) -> dict[str, Any]:
        """The newest journal rows (``syncd log --json``'s rows), newest first."""
        from syncd.engine.state import State
        from syncd.units import iso_utc

        limit = _count(query, "limit", LOG_DEFAULT, 1, PAGE_MAX)
        config = self._config()
        if not State.exists(config.state_dir):
            return {"entries": []}
        state = State(config.state_dir)
        try:
            entries = state.journal(limit=limit)
        finally:
            state.close()
        return {"entries": [_row(e, iso_utc(e.at)) for e in reversed(entries)]}


def _row(e: Entry, at: str | None) -> dict[str, Any]:
    """One journal row as ``syncd log --json`` prints it."""
    return {"at": at, "action": e.action, "path": e.path, "file_id": e.file_id,
            "bytes": e.bytes, "status": e.status, "reason": e.reason,
            "run": e.run, "run_kind": e.run_kind}  # fmt: skip


def _stamps(config: Config) -> list[tuple[int, int, int] | None]:
    """Size, change time and inode of each file the state is read from: a commit grows
    the write-ahead log or rewrites it, a checkpoint writes the database."""
    from syncd.engine.batches import STORE_NAME
    from syncd.engine.state import State

    main = config.state_dir / State.FILE
    out: list[tuple[int, int, int] | None] = []
    for path in (main, main.with_name(main.name + "-wal"), config.state_dir / STORE_NAME):
        try:
            st = path.stat()
        except OSError:
            out.append(None)
            continue
        out.append((st.st_size, st.st_mtime_ns, st.st_ino))
    return out


def narrow(data: dict[str, Any], query: Mapping[str, str]) -> None:
    """Keep one page of the not-synced rows that match ``q`` (case-insensitive)."""
    offset = _count(query, "offset", 0, 0, 10**9)
    limit = _count(query, "limit", 100, 1, PAGE_MAX)
    needle = query.get("q", "").casefold()
    rows = data.get("not_synced") or []
    if needle:
        rows = [r for r in rows if needle in _haystack(r)]
    data["not_synced_total"] = len(rows)
    data["not_synced_offset"] = offset
    data["not_synced"] = rows[offset : offset + limit]


def _haystack(row: Mapping[str, Any]) -> str:
    return " ".join(str(row.get(k) or "") for k in ("path", "status", "reason")).casefold()


def _count(query: Mapping[str, str], name: str, default: int, least: int, most: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit():
        raise BadQuery(f"{name} must be a whole number, not {text[:40]!r}")
    return max(least, min(most, int(text)))
