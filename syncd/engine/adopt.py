"""Whether a file our earlier upload created is taken for its path, or let go.

The planner finds the candidates (an intent's window, a name and a size); what is only
known when the run reaches the file, its hash now, decides the rest. Pure: the facts in,
the decision out; the executor reads the file and acts.
"""

from __future__ import annotations

from dataclasses import dataclass

from syncd.engine.model import Adopt, Note, Record, Status


@dataclass(frozen=True, slots=True)
class Taken:
    """The path holds the adopted file; ``replaces`` is the id it held that is still
    listed (queued for deletion if no other path holds it)."""

    sha256: str
    replaces: str | None


@dataclass(frozen=True, slots=True)
class LetGo:
    """The path no longer holds what was sent: the file is ours, to delete, and the
    path's status says why when it is not merely changed (a changed file is simply
    sent again)."""

    note: Note | None


def settle(
    adopt: Adopt, hashed: str | tuple[Status, str], record: Record | None, listed: frozenset[str]
) -> Taken | LetGo:
    """``hashed``: the file's sha256 now, or (status, reason) when it cannot be read as
    it was sent. Only an id still listed is replaced: queueing one already gone would
    cost the next run a DELETE that answers 404."""
    if not isinstance(hashed, str):
        status, reason = hashed
        return LetGo(None if status == "changing" else Note(adopt.path, status, reason))
    old = record.file_id if record is not None and record.file_id in listed else None
    return Taken(hashed, old)
