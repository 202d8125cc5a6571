"""Typed results of the Files API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

CallClass = Literal["upload", "read", "delete"]


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file object as the provider returns it."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    # When the provider will drop the file (unix seconds, its clock); None: never.
    # OpenAI's batch files expire 30 days after upload by default.
    expires_at: int | None = None

    def expired(self, now: float, margin_s: float = 0.0) -> bool:
        """Whether the file has expired by ``now`` (provider clock), or will within
        ``margin_s``: then it must be uploaded again to stay present."""
        return self.expires_at is not None and self.expires_at <= now + margin_s

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RemoteFile:
        return cls(
            id=str(data["id"]),
            bytes=int(data.get("bytes") or 0),
            created_at=int(data.get("created_at") or 0),
            filename=str(data.get("filename") or ""),
            purpose=str(data.get("purpose") or ""),
            status=str(data.get("status") or "processed"),
            expires_at=_seconds(data.get("expires_at")),
        )


@dataclass(frozen=True, slots=True)
class Sent:
    """What an upload created, with the sha256 of the bytes it sent (read once for
    both); None when the body was not read through (an earlier attempt's file adopted)."""

    file: RemoteFile
    sha256: str | None = None


def _seconds(value: Any) -> int | None:
    """Unix seconds from an int, float or numeric string; None when absent or not a number
    (a malformed expiry must not make the file unreadable)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


# ---- the Batch API ------------------------------------------------------------------------

# A job in one of these statuses changes no more.
BATCH_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# Purpose of the files a batch job writes (its output and its error file).
BATCH_OUTPUT = "batch_output"


@dataclass(frozen=True, slots=True)
class RequestCounts:
    """How many of a job's requests there are, and how many succeeded or failed so far."""

    total: int = 0
    completed: int = 0
    failed: int = 0

    @classmethod
    def from_json(cls, data: Any) -> RequestCounts:
        if not isinstance(data, dict):
            return cls()
        return cls(total=_count(data.get("total")), completed=_count(data.get("completed")),
                    failed=_count(data.get("failed")))  # fmt: skip


@dataclass(frozen=True, slots=True)
class BatchError:
    """One reason a job failed validation (the provider's ``errors.data[]``)."""

    code: str | None
    message: str | None
    line: int | None = None
    param: str | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch job as the provider returns it."""

    id: str
    status: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: RequestCounts = field(default_factory=RequestCounts)
    # Key-value pairs given at create time (strings); empty when none were.
    metadata: tuple[tuple[str, str], ...] = ()
    errors: tuple[BatchError, ...] = ()
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    expires_at: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in BATCH_TERMINAL

    def meta(self, key: str) -> str | None:
        for k, v in self.metadata:
            if k == key:
                return v
        return None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Batch:
        meta = data.get("metadata")
        metadata = tuple(
            (str(k), str(v)) for k, v in meta.items() if v is not None
        ) if isinstance(meta, dict) else ()
        raw_errors = data.get("errors")
        items = raw_errors.get("data") if isinstance(raw_errors, dict) else raw_errors
        errors = tuple(
            BatchError(
                code=_text(e.get("code")),
                message=_text(e.get("message")),
                line=_seconds(e.get("line")),
                param=_text(e.get("param")),
            )
            for e in (items if isinstance(items, list) else [])
            if isinstance(e, dict)
        )
        return cls(
            id=str(data["id"]),
            status=str(data.get("status") or ""),
            endpoint=str(data.get("endpoint") or ""),
            input_file_id=str(data.get("input_file_id") or ""),
            completion_window=str(data.get("completion_window") or ""),
            created_at=int(data.get("created_at") or 0),
            output_file_id=_text(data.get("output_file_id")) or None,
            error_file_id=_text(data.get("error_file_id")) or None,
            request_counts=RequestCounts.from_json(data.get("request_counts")),
            metadata=metadata,
            errors=errors,
            in_progress_at=_seconds(data.get("in_progress_at")),
            finalizing_at=_seconds(data.get("finalizing_at")),
            completed_at=_seconds(data.get("completed_at")),
            failed_at=_seconds(data.get("failed_at")),
            expired_at=_seconds(data.get("expired_at")),
            cancelling_at=_seconds(data.get("cancelling_at")),
            cancelled_at=_seconds(data.get("cancelled_at")),
            expires_at=_seconds(data.get("expires_at")),
        )


@dataclass(frozen=True, slots=True)
class Downloaded:
    """What a download wrote: its size and the sha256 of its bytes."""

    bytes: int
    sha256: str


def _count(value: Any) -> int:
    number = _seconds(value)
    return max(0, number) if number is not None else 0


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
