"""Typed results of the Files API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Purpose = Literal["file-extract", "batch"]
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


def _seconds(value: Any) -> int | None:
    """Unix seconds from an int, float or numeric string; None when absent or not a number
    (a malformed expiry must not make the file unreadable)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass(frozen=True, slots=True)
class Deleted:
    id: str
    deleted: bool
