"""What a SIGHUP can change in a running daemon, and what needs a restart."""

from __future__ import annotations

from syncd.config import Config

# SIGHUP applies sync.settle_s/max_settle_s, watch, reconcile, daemon and logging
# live. These need a restart: the engine (client, rules, state) was built from them.
RESTART_SECTIONS = ("project", "root", "state_dir", "mapping_file", "api", "limits", "rules")


def needs_restart(old: Config, new: Config) -> list[str]:
    """The sections that differ between ``old`` and ``new`` but cannot change live."""
    names = [name for name in RESTART_SECTIONS if getattr(old, name) != getattr(new, name)]
    old_sync = (old.sync.delete_remote, old.sync.max_delete, old.sync.marker)
    if old_sync != (new.sync.delete_remote, new.sync.max_delete, new.sync.marker):
        names.append("sync")
    if old.daemon.metrics != new.daemon.metrics:
        names.append("daemon.metrics")  # the server was bound at start
    return names
