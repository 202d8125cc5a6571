"""A state belongs to one project: the name, the root, the endpoint and the key.

A copied config that still names another project's ``state_dir`` would otherwise
read that project's records as its own and delete its files. The state records
whom it belongs to; a run whose config disagrees is refused until the change is
confirmed (``syncd rebind``). The mapping file records its owner the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from syncd.config import Config
from syncd.engine.state import State

_META = "identity"
_FIELDS = {
    "project": "project",
    "root": "root",
    "base_url": "api.base_url",
    "key": "API key (fingerprint)",
}


class Mismatch(ValueError):
    """Raised when the state or the mapping file belongs to another project."""


def of_config(config: Config, key_fingerprint: str) -> dict[str, str]:
    return {
        "project": config.project,
        "root": str(config.root.resolve()),
        "base_url": config.api.base_url,
        "key": key_fingerprint,
    }


def check(state: State, mine: dict[str, str]) -> None:
    """Refuse a state bound to another project, endpoint, root or key."""
    stored: Any = state.get_meta(_META)
    if not isinstance(stored, dict):
        return
    differ = [k for k in _FIELDS if stored.get(k) != mine[k]]
    if differ:
        lines = [
            f"  {_FIELDS[k]}: state has {stored.get(k)!r}, config has {mine[k]!r}" for k in differ
        ]
        raise Mismatch(
            "this state_dir belongs to another project or setup:\n"
            + "\n".join(lines)
            + "\nGive each project its own state_dir (and mapping_file). If this change "
            "is deliberate (the root moved, the key was rotated), run "
            "`syncd rebind -c CONFIG` once."
        )


def record(state: State, mine: dict[str, str]) -> None:
    """Bind the state to ``mine``: done once the remote accepted the key, so a first
    run with a mistyped key does not bind the state to it."""
    if state.get_meta(_META) != mine:
        state.set_meta(_META, mine)


def check_mapping_file(path: Path, owner: str, project: str) -> None:
    """Refuse to publish over a mapping file another project writes."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # absent or unreadable: ours to write
    if not isinstance(data, dict):
        return
    theirs = data.get("owner")
    if theirs == owner or (theirs is None and data.get("project") in (project, None)):
        return
    raise Mismatch(
        f"mapping_file {path} is published by another project "
        f"({data.get('project')!r}); give each project its own mapping_file"
    )
