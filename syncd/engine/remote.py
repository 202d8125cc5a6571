"""What the engine needs of a Files API: the seam between engine and client.

The engine depends on this protocol, never on a concrete client, so a provider
is a client that satisfies it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from syncd.api.adoption import UploadWindow
from syncd.api.clock import ServerClock
from syncd.api.models import RemoteFile, Sent
from syncd.api.options import ClientOptions
from syncd.api.pacer import Pacer
from syncd.engine.changes import ChangeLog


class RemoteFiles(Protocol):
    # ``source``: a path, or a file the caller opened (sent from its first byte on each
    # attempt, left open).
    def send(
        self,
        source: Path | BinaryIO,
        purpose: str,
        *,
        filename: str | None = None,
        on_sent: Callable[[UploadWindow], None] | None = None,
    ) -> Sent: ...

    def retrieve(self, file_id: str) -> RemoteFile: ...

    def iter_files(self) -> Iterator[RemoteFile]: ...

    def check_key(self) -> None: ...

    def find_uploaded(self, window: UploadWindow) -> Iterator[RemoteFile]: ...

    def delete(self, file_id: str) -> None: ...

    def close(self) -> None: ...

    # Bounds on the provider's clock minus ours, measured from its responses.
    @property
    def clock(self) -> ServerClock: ...

    # Identifies the credentials (never reveals them): binds a state to its key.
    @property
    def key_fingerprint(self) -> str: ...

    # How calls are paced and bounded (shown by the daemon's status).
    @property
    def pacer(self) -> Pacer: ...

    @property
    def options(self) -> ClientOptions: ...


class RemoteView:
    """The account's files as last listed, kept current by our own calls."""

    def __init__(self, files: Iterable[RemoteFile] = ()) -> None:
        self._files = {f.id: f for f in files}
        self._lock = threading.Lock()
        self.listed_at: float | None = None
        # Counts changes, as State.generation does, and notes the ids each one touched.
        self.generation = 0
        self._changes = ChangeLog()

    def replace_all(self, files: Iterable[RemoteFile]) -> None:
        """The view becomes ``files`` (a listing, taken page by page: never a list of
        the whole account beside the view); left as it was when they fail midway."""
        fresh = {f.id: f for f in files}
        with self._lock:
            self._files = fresh
            self.listed_at = time.time()
            self.generation += 1
            self._changes.everything(self.generation)

    def add(self, f: RemoteFile) -> None:
        with self._lock:
            self._files[f.id] = f
            self.generation += 1
            self._changes.noted(self.generation, (f.id,))

    def remove(self, file_id: str) -> RemoteFile | None:
        with self._lock:
            self.generation += 1
            self._changes.noted(self.generation, (file_id,))
            return self._files.pop(file_id, None)

    def changed_since(self, generation: int) -> set[str] | None:
        """The ids added or removed after ``generation``; None when not known (a full
        listing came since)."""
        with self._lock:
            return self._changes.since(generation)

    def __contains__(self, file_id: object) -> bool:
        return file_id in self._files

    def __iter__(self) -> Iterator[str]:
        """The ids in the view (as it was when asked)."""
        with self._lock:
            return iter(list(self._files))

    def __len__(self) -> int:
        return len(self._files)

    def totals(self) -> tuple[int, int]:
        """Files and bytes in the view."""
        with self._lock:
            return len(self._files), sum(f.bytes for f in self._files.values())

    def snapshot(self) -> dict[str, RemoteFile]:
        with self._lock:
            return dict(self._files)
