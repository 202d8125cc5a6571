"""Read the ``path -> file_id`` mapping syncd publishes: the consumer's side.

>>> from syncd import mapping
>>> m = mapping.load("/srv/docs/mapping.json")
>>> m["notes/read me.md"].file_id
'file-fe-…'
>>> m["notes/read me.md"].fileid          # the form Qwen-Long takes
'fileid://file-fe-…'
>>> m.system_message(["a.pdf", "b.docx"])  # several documents, one system message
'fileid://file-fe-…,fileid://file-fe-…'

Only files a chat model reads (purpose ``file-extract``) have a ``fileid``: a batch
input is for Batch jobs (``Entry.file_id``), and asking for its ``fileid`` raises
:class:`NotForChat` rather than give a model a file it cannot use.

The file is replaced atomically by syncd, so a reader sees the old mapping or the
new one, never half of either; :func:`load` reads it once (load again to see later
changes). Standard library only: a consumer needs nothing else of syncd.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Entry", "FileMapping", "MappingError", "NotForChat", "UnknownPath", "load"]

SUPPORTED_VERSION = 1
# Purposes whose files a chat model (Qwen-Long, Qwen-Doc) reads as ``fileid://``.
CHAT_PURPOSES = ("file-extract",)


class MappingError(Exception):
    """The mapping file cannot be read as a syncd mapping."""


class UnknownPath(MappingError, KeyError):
    """No file of the mapping has this path (not synced, excluded, or misspelled)."""

    def __init__(self, path: str, source: str) -> None:
        super().__init__(path)
        self.path = path
        self.source = source

    def __str__(self) -> str:
        # KeyError would show only the repr of the key.
        return (
            f"{self.path!r} is not in the mapping {self.source}: not synced (yet), excluded "
            "by the rules, or not a path relative to the synced folder "
            "(`syncd status` says why a file is not synced)"
        )


class NotForChat(MappingError, ValueError):
    """Raised when a file of another purpose (a batch input) is asked for as a chat
    model's ``fileid://``."""

    def __init__(self, entry: Entry) -> None:
        super().__init__(entry.path)
        self.entry = entry

    def __str__(self) -> str:
        return (
            f"{self.entry.path!r} has purpose {self.entry.purpose!r}, which chat models do "
            f"not read (they take {', '.join(CHAT_PURPOSES)}); use its file_id "
            f"{self.entry.file_id} where that purpose is meant (a Batch job's input)"
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """One synced file: its path relative to the synced folder and its remote copy."""

    path: str
    file_id: str
    purpose: str
    bytes: int
    sha256: str
    uploaded_at: float | None = None
    # The vector stores the file is attached to (store id -> the provider's status:
    # completed when file_search reads it, in_progress, failed...); empty when none.
    vector_stores: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def searchable_in(self) -> list[str]:
        """The ids of the vector stores in which file_search can find this file now."""
        return sorted(s for s, status in self.vector_stores.items() if status == "completed")

    @property
    def fileid(self) -> str:
        """``fileid://ID``, as a Qwen-Long system message names a document. NotForChat
        for a file of another purpose."""
        if self.purpose not in CHAT_PURPOSES:
            raise NotForChat(self)
        return f"fileid://{self.file_id}"


class FileMapping(Mapping[str, Entry]):
    """The mapping as published: entries by path, plus where the files live."""

    def __init__(
        self,
        entries: dict[str, Entry],
        *,
        project: str,
        base_url: str,
        generated_at: float,
        source: str,
    ) -> None:
        self._entries = entries
        self.project = project
        self.base_url = base_url
        self.generated_at = generated_at
        self.source = source

    def __getitem__(self, path: str) -> Entry:
        try:
            return self._entries[_normal(path)]
        except KeyError:
            raise UnknownPath(path, self.source) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"FileMapping(project={self.project!r}, files={len(self)}, source={self.source!r})"

    def system_message(self, paths: Iterable[str]) -> str:
        """The content of the one system message that gives a Qwen-Long chat several
        documents: their ``fileid://`` forms, comma-separated, in the order given.
        UnknownPath or NotForChat names the first path that cannot be one of them."""
        return ",".join(self[p].fileid for p in paths)

    def under(self, folder: str) -> list[Entry]:
        """Entries whose path is ``folder`` itself or inside it, sorted by path."""
        prefix = _normal(folder)
        if not prefix:
            return [self._entries[p] for p in sorted(self._entries)]
        return [
            e for p, e in sorted(self._entries.items()) if p == prefix or p.startswith(prefix + "/")
        ]


def _normal(path: str) -> str:
    """A path as the mapping spells it: relative, ``/``-separated, no ``./`` or slashes
    at either end."""
    p = path.replace(os.sep, "/").strip("/")
    while p.startswith("./"):
        p = p[2:]
    return p


def load(path: str | os.PathLike[str]) -> FileMapping:
    """Read a mapping file. Raises MappingError if it is missing or not a syncd mapping."""
    source = str(path)
    try:
        raw: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(
            f"no mapping at {source}: syncd has not published one yet (run `syncd reconcile`),"
            " or mapping_file in its config names another place"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MappingError(f"cannot read the mapping {source}: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("files"), dict):
        raise MappingError(f"{source} is not a syncd mapping (no 'files' object)")
    version = raw.get("version")
    if version != SUPPORTED_VERSION:
        raise MappingError(
            f"{source} is mapping version {version!r}; this reader knows version "
            f"{SUPPORTED_VERSION}"
        )
    entries: dict[str, Entry] = {}
    for rel, item in raw["files"].items():
        try:
            entries[rel] = Entry(
                path=rel,
                file_id=str(item["file_id"]),
                purpose=str(item["purpose"]),
                bytes=int(item["bytes"]),
                sha256=str(item["sha256"]),
                uploaded_at=item.get("uploaded_at"),
                vector_stores={str(k): str(v) for k, v in
                               (item.get("vector_stores") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MappingError(f"{source}: entry {rel!r} is malformed ({exc})") from None
    return FileMapping(
        entries,
        project=str(raw.get("project", "")),
        base_url=str(raw.get("base_url", "")),
        generated_at=float(raw.get("generated_at") or 0.0),
        source=source,
    )
