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

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.engine.journal import Entry

PAGE_MAX = 1000  # rows of not_synced or of the journal in one answer
LOG_DEFAULT = 50


class BadQuery(ValueError):
    """A query parameter that is not what the endpoint takes (answered with 400)."""


class Documents:
    """The page's documents, built from the current config and the live status."""

    def __init__(self, config: Callable[[], Config], live: Callable[[], dict[str, Any]]) -> None:
        self._config = config
        self._live = live

    def status(self, query: Mapping[str, str]) -> dict[str, Any]:
        from syncd.daemon.status import combine

        config = self._config()
        data = combine(config, self._live())
        if data is None:  # unreachable with a live status, which always gives a document
            data = {"project": config.project, "root": str(config.root)}
        if query.keys() & {"offset", "limit", "q"}:
            narrow(data, query)
        return data

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
