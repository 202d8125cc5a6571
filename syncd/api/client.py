"""The Files API client: syncd's only way to the provider (or the emulator).

INTERFACE STUB - to be implemented. Signatures are the contract the engine uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from syncd.api.models import CallClass, RemoteFile


class ApiKey:
    """The API key. Its str/repr never shows the secret; ``reveal()`` does, for the header only."""

    def __init__(self, value: str) -> None: ...
    def reveal(self) -> str: ...
    def fingerprint(self) -> str:
        """Short stable hash of the key, to name shared pacing files without leaking it."""
        ...

    @classmethod
    def load(cls, *, env: str | None = None, file: Path | None = None) -> ApiKey:
        """From an env var name or a file (systemd credentials); raises ConfigError-free ValueError naming the source, never the value."""
        ...


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 60.0
    write: float = 60.0
    pool: float = 10.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    max_elapsed: float = 300.0
    initial_backoff: float = 0.5
    max_backoff: float = 30.0


@dataclass(frozen=True)
class Rates:
    """Ceilings per call class, in requests per second (seed page defaults)."""

    upload: float = 20.0
    read: float = 20.0  # retrieve + list + content
    delete: float = 10.0

    def for_class(self, cls: CallClass) -> float: ...


@dataclass
class ClientOptions:
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rates: Rates = field(default_factory=Rates)
    # Directory for file-locked pacing buckets shared by every process on this host
    # using the same key; None = in-process only.
    pacing_dir: Path | None = None


class FilesClient:
    def __init__(self, base_url: str, api_key: ApiKey, options: ClientOptions | None = None) -> None: ...

    def upload(self, path: Path, purpose: str, *, filename: str | None = None) -> RemoteFile:
        """Stream ``path`` (re-read from the start on each retry). Raises AmbiguousUploadError
        when the request may have reached the server but no response came."""
        ...

    def retrieve(self, file_id: str) -> RemoteFile: ...

    def iter_files(self, *, purpose: str | None = None, page_size: int = 2000) -> Iterator[RemoteFile]:
        """Every file of the account, newest first, following the ``after`` cursor."""
        ...

    def list_files(self, *, purpose: str | None = None) -> list[RemoteFile]: ...

    def delete(self, file_id: str) -> None:
        """Raises NotFoundError when the id does not exist."""
        ...

    def content(self, file_id: str) -> bytes: ...

    def find_uploaded(self, filename: str, size: int, since: float) -> list[RemoteFile]:
        """Remote files named ``filename`` of ``size`` bytes created at or after ``since``
        (unix seconds, with 2 s of slack for clock skew), newest first. Stops listing
        as soon as pages are older than ``since``."""
        ...

    def close(self) -> None: ...
    def __enter__(self) -> FilesClient: ...
    def __exit__(self, *exc: object) -> None: ...
