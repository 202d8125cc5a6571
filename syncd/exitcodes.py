"""The process exit codes of every syncd command, in one place.

An IntEnum, so a code compares equal to its number and can be returned from
``main`` or passed to ``SystemExit`` as is.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # Some files could not be synced; each is listed with its reason.
    UNSYNCED = 1
    # Configuration, usage or authentication error: running again will not help.
    USAGE = 2
    # Deletion safety refused the deletes of the plan.
    REFUSED = 3
    # Another syncd process holds the state directory.
    LOCKED = 4
    # A one-off command could not reach the remote (refused, DNS, TLS): the message
    # names the URL and what to check.
    UNREACHABLE = 5
    # Ctrl-C: in-flight calls finished, what was confirmed is published.
    INTERRUPTED = 130
