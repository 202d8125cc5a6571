"""A state belongs to one project: the name, the root, the endpoint and the key.

A copied config that still names another project's ``state_dir`` would otherwise
read that project's records as its own and delete its files. The state records
whom it belongs to; a run whose config disagrees is refused until the change is
confirmed (``syncd rebind``). The mapping file records its owner the same way.

The owner (the project's name in the claims registry and in the mapping file) is
written once into ``state_dir/owner`` and travels with the folder: a project moved
whole, config, state and mapping together, is still itself after ``syncd rebind``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

from syncd.config import Config
from syncd.engine.claims import Claims
from syncd.engine.publish import head_of
from syncd.engine.state import State

_META = "identity"
_FIELDS = {
    "project": "project",
    "root": "root",
    "base_url": "api.base_url",
    "key": "API key (fingerprint)",
}


OWNER_FILE = "owner"


class Mismatch(ValueError):
    """Raised when the state or the mapping file belongs to another project."""


def _first_owner(state_dir: Path) -> str:
    # Derived from where the state was first opened, as every state before the owner
    # file was: their claims and mappings already carry this name.
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


def stored_owner(state_dir: Path) -> str | None:
    """The owner written in ``state_dir``, if any (nothing is created)."""
    try:
        text = (state_dir / OWNER_FILE).read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    return text if text.isalnum() else None


def owner(state_dir: Path, *, create: bool = True) -> str:
    """The project's owner name: the one written in ``state_dir``, else (first open)
    one derived from the folder, written there when ``create``."""
    found = stored_owner(state_dir)
    if found is not None:
        return found
    name = _first_owner(state_dir)
    if create:
        tmp = state_dir / f".{OWNER_FILE}.{os.getpid()}"
        tmp.write_text(name + "\n", encoding="ascii")
        try:
            os.link(tmp, state_dir / OWNER_FILE)  # never over one written meanwhile
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return stored_owner(state_dir) or name
    return name


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
        blocked = rebind_problem(state, Path(mine["root"]))
        advice = (
            f"\nFix the config first: {blocked}; a rebind would be refused."
            if blocked
            else "\nGive each project its own state_dir (and mapping_file). If this change "
            "is deliberate (the project or its root moved, the key was rotated), run "
            "`syncd rebind -c CONFIG` once."
        )
        raise Mismatch(
            "this state_dir belongs to another project or setup:\n" + "\n".join(lines) + advice
        )


def rebind_problem(state: State, root: Path) -> str | None:
    """Why binding the state to ``root`` would be wrong, if it would: a root that is
    not there, or an empty one while the state has files on the remote (a typo, or a
    disk not mounted yet: binding to it would read as "every file deleted")."""
    if not root.is_dir():
        return f"the root {root} does not exist or is not a folder"
    tracked = len(state.owned_ids())
    if tracked and not any(os.scandir(root)):
        return f"the root {root} is empty while the state has {tracked} file(s) on the remote"
    return None


def record(state: State, mine: dict[str, str]) -> None:
    """Bind the state to ``mine``: done once the remote accepted the key, so a first
    run with a mistyped key does not bind the state to it."""
    if state.get_meta(_META) != mine:
        state.set_meta(_META, mine)


def check_home(claims: Claims, state_dir: Path) -> None:
    """Refuse a state_dir whose owner another existing folder holds too: a copy of a
    project's state (``cp -a``) would take the original's uploads for its own strays,
    and the two would delete each other's files on every run."""
    here = state_dir.resolve()

    def elsewhere_holds(path: str) -> bool:
        # The same folder under another name (a bind mount) is not a copy.
        with contextlib.suppress(OSError):
            if os.path.samefile(path, here):
                return False
        return stored_owner(Path(path)) == claims.owner

    other = claims.settle_home(str(here), elsewhere_holds)
    if other is not None:
        raise Mismatch(
            f"this state_dir ({here}) holds the same owner ({claims.owner}) as {other}, "
            "which still exists: one is a copy of the other, and two folders with one owner "
            "would delete each other's files. Give this project a new, empty state_dir (its "
            f"files are then uploaded under an owner of its own), or remove {other} if "
            "nothing uses it any more"
        )


def check_mapping_file(path: Path, owner: str, project: str) -> None:
    """Refuse to publish over a mapping file another project writes."""
    data = head_of(path)
    if data is None:
        return  # absent or unreadable: ours to write
    theirs = data.get("owner")
    if theirs == owner or (theirs is None and data.get("project") in (project, None)):
        return
    raise Mismatch(
        f"mapping_file {path} is published by another project "
        f"({data.get('project')!r}); give each project its own mapping_file"
    )
