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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RemoteFile:
        return cls(
            id=str(data["id"]),
            bytes=int(data.get("bytes") or 0),
            created_at=int(data.get("created_at") or 0),
            filename=str(data.get("filename") or ""),
            purpose=str(data.get("purpose") or ""),
            status=str(data.get("status") or "processed"),
        )


@dataclass(frozen=True, slots=True)
class Deleted:
    id: str
    deleted: bool
