"""A path as a person types it, read as the root-relative path syncd keys files by.

``syncd status``, ``syncd id`` and ``syncd log`` take a path relative to the root
(``notes/a.md``), relative to the current folder (``data/notes/a.md`` typed from the
project folder, or ``a.md`` from inside ``notes``), absolute, or through a symbolic
link to the root. Standard library only: ``syncd id`` starts fast.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Container
from pathlib import Path


class OutsideRoot(ValueError):
    """Raised for a path that names nothing inside the root."""


def root_relative(root: Path, typed: str, known: Container[str] = ()) -> str:
    """The root-relative form of ``typed``. A relative path that is a known path or
    names something under the root is taken as root-relative first; otherwise as
    relative to the current folder."""
    if not typed or "\0" in typed:
        raise OutsideRoot(f"{typed!r} is not a path")
    if not os.path.isabs(typed):
        plain = posixpath.normpath(typed)
        inside = plain not in (".", "..") and not plain.startswith("../")
        if inside and (plain in known or os.path.lexists(root / plain)):
            return plain
    absolute = os.path.abspath(typed)
    for base in _spellings(root):
        rel = os.path.relpath(absolute, base)
        if rel != "." and rel != ".." and not rel.startswith("../"):
            return Path(rel).as_posix()
    # Through a link somewhere on the way: compare where both really are.
    real = os.path.realpath(absolute)
    rel = os.path.relpath(real, os.path.realpath(root))
    if rel != "." and rel != ".." and not rel.startswith("../"):
        return Path(rel).as_posix()
    if not os.path.isabs(typed):
        plain = posixpath.normpath(typed)
        if plain not in (".", "..") and not plain.startswith("../"):
            return plain  # not on disk (a deleted file, say): as the root's
    raise OutsideRoot(f"{typed!r} is not inside the root {root}")


def _spellings(root: Path) -> list[str]:
    """The root as written and as it really is (they differ through a link)."""
    written = os.path.abspath(root)
    real = os.path.realpath(root)
    return [written] if written == real else [written, real]
