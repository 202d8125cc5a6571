"""What a failed upload means for its file: one table, next to the error hierarchy.

Each row: the error class (first match wins, so subclasses come first), the status
the file gets, and whether the upload's intent stays so the next run looks for a
file the request may have created. Only a definite refusal clears it: the
provider said no, so nothing was stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from syncd.api.errors import (
    AmbiguousUploadError,
    APIError,
    InvalidRequestError,
    QuotaExceededError,
    SourceChangedError,
)
from syncd.engine.model import Status

_TABLE: tuple[tuple[type[APIError], Status, bool], ...] = (
    (QuotaExceededError, "quota", False),
    (InvalidRequestError, "invalid", False),
    (SourceChangedError, "changing", False),
    (AmbiguousUploadError, "error", True),
    (APIError, "error", True),
)


@dataclass(frozen=True, slots=True)
class Failed:
    """An upload that did not produce a usable remote file."""

    status: Status
    reason: str
    keep_intent: bool


def failure_for(exc: APIError) -> Failed:
    for cls, status, keep in _TABLE:
        if isinstance(exc, cls):
            return Failed(status, _reason(exc, status), keep)
    raise AssertionError("APIError is the last row")


def _reason(exc: APIError, status: Status) -> str:
    if status == "quota":
        return f"provider: {exc.message}"
    if status == "invalid":
        return f"rejected by the provider: {exc.code or exc.status}: {exc.message}"
    if status == "changing":
        return f"{exc.message}; will retry once it is stable"
    return str(exc)
