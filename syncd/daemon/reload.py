"""What a SIGHUP may change: a reload is applied whole, or not at all.

The file is read and checked completely (every key with its line, the reconcile
schedule) before anything changes, and it is compared with the configuration the
daemon runs, not with the file as last read. Then exactly one of:

* **invalid**: nothing is applied; the error names the file, the line and the key.
* **restart**: some key that only a restart applies (``root``, ``state_dir``, the API,
  the limits, ...) differs from the running value. Nothing is applied, not even the
  keys a SIGHUP could apply: watching one folder while the engine syncs another, or
  new rules over an old root, would be a configuration nobody wrote. The daemon goes
  on as it ran, says which keys (at which lines) wait for a restart, and says so in
  its status until a reload brings the file back to the running values or a restart
  applies it.
* **unchanged**: the file holds the running values (a value put back after a reload
  that could not apply it is no change).
* **apply**: only keys marked ``[SIGHUP]`` differ; they are applied together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from syncd.config import Config, changed_keys, needs_restart
from syncd.daemon.schedule import build_trigger
from syncd.textsafe import visible

Outcome = Literal["invalid", "restart", "unchanged", "apply"]


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    # The file as read (None when it could not be read or was invalid).
    config: Config | None
    # Keys whose value differs from the running configuration, in table order.
    changed: tuple[str, ...] = ()
    # Those of them that only a restart applies.
    restart: tuple[str, ...] = ()
    # Where each of those is written: "file:line: key".
    where: tuple[str, ...] = ()
    message: str = ""
    at: float = 0.0

    @property
    def applies(self) -> bool:
        return self.outcome in ("apply", "unchanged")


def judge(running: Config, path: Path, load: Callable[[Path], Config]) -> Verdict:
    """Read ``path`` and decide what a reload of it does to ``running``; changes nothing."""
    now = time.time()
    try:
        new = load(path)
        build_trigger(new.reconcile)
    except Exception as exc:  # ConfigError, ScheduleError and anything unexpected alike
        message = f"reload failed, nothing changed; keeping the running configuration: {exc}"
        return Verdict("invalid", None, message=message, at=now)
    changed = tuple(changed_keys(running, new))
    restart = tuple(needs_restart(running, new))
    if restart:
        where = tuple(new.origin.at(key) for key in restart)
        return Verdict(
            "restart",
            new,
            changed,
            restart,
            where,
            message=_restart_message(running, new, restart, where),
            at=now,
        )
    if not changed:
        return Verdict("unchanged", new, message="configuration reloaded, no change", at=now)
    return Verdict(
        "apply", new, changed, message=f"configuration reloaded: {', '.join(changed)}", at=now
    )


def _restart_message(
    running: Config, new: Config, restart: tuple[str, ...], where: tuple[str, ...]
) -> str:
    also = [key for key in changed_keys(running, new) if key not in restart]
    parts = [
        f"reload not applied, nothing changed: {', '.join(restart)} ({'; '.join(where)}) "
        "can change only with a restart; restart syncd to apply"
    ]
    if also:
        parts.append(f"the other changes ({', '.join(also)}) wait for it too")
    if "root" in restart:
        parts.append(f"still syncing {visible(str(running.root))}")
        if not new.root.is_dir():
            shown = visible(new.origin.shown("root", new.root))
            parts.append(f"the new root {shown} is not a folder")
    return "; ".join(parts)
