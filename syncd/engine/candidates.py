"""The scan's candidate files by path, a file found as its record says held as a mark.

A tree of 100,000 unchanged files would otherwise be 100,000 ``LocalFile`` objects, each
with its own copy of the numbers and the hash its record already holds (about 380 bytes
a file). A file whose stat and purpose are as recorded, and whose record has its hash,
is the record's ``LocalFile`` exactly: it is kept as its path alone and made from the
record, which does not change (a ``RecordTable``), whenever it is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from syncd.engine.model import LocalFile, Record
from syncd.engine.records import RecordTable


class Candidates(MutableMapping[str, LocalFile]):
    """Path -> LocalFile, in the order found; a dict to its readers."""

    def __init__(self, records: RecordTable | None = None) -> None:
        self._records = records if records is not None else RecordTable()
        # None: as recorded (see ``as_recorded``).
        self._files: dict[str, LocalFile | None] = {}

    def as_recorded(self, record: Record) -> None:
        """The file at ``record.path`` is the record's (a record of this table): same
        size, mtime, inode and purpose, and the record's hash, which it must have."""
        if record.sha256 is None:
            raise ValueError(f"{record.path!r}: a record without a hash is no LocalFile")
        self._files[record.path] = None

    def found(self) -> Iterator[LocalFile]:
        """The candidates that are not as recorded: the only ones that may lack a hash."""
        return (f for f in self._files.values() if f is not None)

    def __getitem__(self, path: str) -> LocalFile:
        local = self._files[path]
        if local is not None:
            return local
        rec = self._records[path]
        return LocalFile(
            rec.path, rec.size, rec.mtime_ns, rec.inode, purpose=rec.purpose, sha256=rec.sha256
        )

    def __setitem__(self, path: str, local: LocalFile) -> None:
        self._files[path] = local

    def __delitem__(self, path: str) -> None:
        del self._files[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: object) -> bool:
        return path in self._files

    def __repr__(self) -> str:
        return f"Candidates({len(self._files)} files)"
