"""Finding the file a lost upload created: the one rule, used wherever it is needed.

A POST whose response is lost (or answered 5xx, or whose process was killed)
may still have created the file. What identifies it is what the provider
saw: the name as it travelled on the wire, the size, and a ``created_at``
inside the attempt's window, expressed in the provider's clock. Files some
owner already claims are never candidates; among the rest the earliest wins,
so two lost uploads of the same name and size pair up in order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from syncd.api.models import RemoteFile

# Multipart form parameters are quoted as HTML5 forms do (httpx follows it): '"' and
# control characters other than ESC are percent-encoded, '\\' doubled. Servers store
# the value as it arrived, so that is the name to compare with.
_WIRE = {'"': "%22", "\\": "\\\\"} | {chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}
_WIRE_RE = re.compile("|".join(re.escape(c) for c in _WIRE))


def wire_name(name: str) -> str:
    """The filename as the provider receives it in the multipart header."""
    return _WIRE_RE.sub(lambda m: _WIRE[m.group(0)], name)


def same_name(remote_name: str | None, local_name: str) -> bool:
    """Whether a remote filename is this local name, stored raw or as sent."""
    return remote_name is not None and remote_name in (local_name, wire_name(local_name))


@dataclass(frozen=True, slots=True)
class UploadWindow:
    """Provider-clock seconds within which an upload attempt could have stored its file."""

    earliest: float
    latest: float

    @classmethod
    def of_attempt(cls, sent_at: float, until: float, offset: tuple[float, float]) -> UploadWindow:
        """``sent_at``: host time just before the body's last byte left (nothing can
        be stored earlier); ``until``: host time by which the provider must have
        answered; ``offset``: bounds of provider minus host clock."""
        lo, hi = offset
        # created_at is truncated to whole seconds; one more second of margin covers a
        # provider whose stamping node is not the one that wrote the Date header.
        return cls(math.floor(sent_at + lo) - 1.0, math.ceil(until + hi) + 1.0)

    def covers(self, created_at: float) -> bool:
        return self.earliest <= created_at <= self.latest


def find_own_upload(
    filename: str,
    size: int,
    window: UploadWindow,
    files: Iterable[RemoteFile],
    claimed: Collection[str],
) -> RemoteFile | None:
    """The earliest unclaimed file of this name and size created within the window."""
    matches = [
        f
        for f in files
        if f.id not in claimed
        and f.bytes == size
        and same_name(f.filename, filename)
        and window.covers(f.created_at)
    ]
    return min(matches, key=lambda f: (f.created_at, f.id)) if matches else None
