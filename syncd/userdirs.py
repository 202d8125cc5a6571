"""The per-user folder syncd keeps outside any project (standard library only: the
command reads it before anything else is loaded)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_folder() -> Path | None:
    """``$XDG_CACHE_HOME/syncd`` (an absolute one), else ``~/.cache/syncd``; None
    without a home to speak of."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(base):
        return Path(base) / "syncd"
    try:
        return Path.home() / ".cache" / "syncd"
    except (RuntimeError, KeyError):
        return None
