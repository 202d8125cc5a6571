"""What the engine needs of a Files API: the seam between engine and client.

The engine depends on this protocol, never on a concrete client, so a provider
is a client that satisfies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from syncd.api.adoption import UploadWindow
from syncd.api.clock import ServerClock
from syncd.api.models import RemoteFile


class RemoteFiles(Protocol):
    # ``source``: a path, or a file the caller opened (sent from its first byte on each
    # attempt, left open).
    def upload(
        self,
        source: Path | BinaryIO,
        purpose: str,
        *,
        filename: str | None = None,
        on_sent: Callable[[UploadWindow], None] | None = None,
    ) -> RemoteFile: ...

    def retrieve(self, file_id: str) -> RemoteFile: ...

    def list_files(self) -> list[RemoteFile]: ...

    def find_uploaded(self, window: UploadWindow) -> Iterator[RemoteFile]: ...

    def delete(self, file_id: str) -> None: ...

    def close(self) -> None: ...

    # Bounds on the provider's clock minus ours, measured from its responses.
    @property
    def clock(self) -> ServerClock: ...

    # Identifies the credentials (never reveals them): binds a state to its key.
    @property
    def key_fingerprint(self) -> str: ...
