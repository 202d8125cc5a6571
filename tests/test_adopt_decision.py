"""The adopt-or-let-go decision for a file an earlier upload created (engine/adopt.py)."""

from __future__ import annotations

from syncd.engine.adopt import LetGo, Taken, settle
from syncd.engine.model import Adopt, LocalFile, Note, Record


def _adopt(path: str = "a.txt") -> Adopt:
    local = LocalFile(path, 3, 1, 1, "file-extract", None)
    return Adopt(local, "file-new", 100)


def _record(file_id: str | None) -> Record:
    return Record("a.txt", "synced", file_id, "file-extract", "a.txt", 3, 1, 1, "x", 1.0, None)


def test_the_file_as_sent_is_taken_and_a_still_listed_old_id_replaced() -> None:
    assert settle(_adopt(), "h", _record("file-old"), frozenset({"file-old"})) == Taken(
        "h", "file-old"
    )


def test_an_old_id_the_listing_lacks_is_not_queued_for_a_delete_that_would_404() -> None:
    assert settle(_adopt(), "h", _record("file-old"), frozenset()) == Taken("h", None)
    assert settle(_adopt(), "h", None, frozenset({"file-old"})) == Taken("h", None)


def test_a_changed_file_is_let_go_quietly_and_sent_again() -> None:
    assert settle(_adopt(), ("changing", "changed"), None, frozenset()) == LetGo(None)


def test_an_unreadable_file_is_let_go_with_its_status() -> None:
    decision = settle(_adopt(), ("error", "permission denied"), None, frozenset())
    assert decision == LetGo(Note("a.txt", "error", "permission denied"))
