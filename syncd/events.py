"""The names of the log events that something reads back.

A log line's event name is prose for a person, but a few are also keys: the console shows
per-file lines only for the daemon (:mod:`syncd.logs`), and tests and operators' alerts
match on them. Those names live here, once, so a reader imports the name instead of
repeating the words, and ``grep`` finds every place that emits one.
"""

from __future__ import annotations

from typing import Final

# One file changed on the remote, or could not be.
UPLOADED: Final = "uploaded"
ADOPTED: Final = "adopted"
DELETED: Final = "deleted"
NOT_SYNCED: Final = "not synced"
ADOPTED_EARLIER_UPLOAD: Final = "adopted earlier upload"
ADOPTED_AFTER_LOST_RESPONSE: Final = "adopted after lost response"
DELETE_ID_UNKNOWN: Final = "delete: id unknown to the provider"
API_DELETE_ALREADY_GONE: Final = "api.delete.already_gone"
API_UPLOAD_ADOPTED: Final = "api.upload.adopted"
API_UPLOAD_NOT_STORED: Final = "api.upload.not_stored"

# Events about one file: info lines for the daemon and in JSON, debug on the console of a
# one-off command, whose summary says the same in one line.
PER_FILE: Final = frozenset({
    UPLOADED, ADOPTED, DELETED, NOT_SYNCED, ADOPTED_EARLIER_UPLOAD,
    ADOPTED_AFTER_LOST_RESPONSE, DELETE_ID_UNKNOWN, API_DELETE_ALREADY_GONE,
    API_UPLOAD_ADOPTED, API_UPLOAD_NOT_STORED,
})  # fmt: skip

# A store shared between hosts (Redis) stopped answering, and came back.
PACER_SHARED_UNAVAILABLE: Final = "api.pacer.shared_unavailable"
PACER_SHARED_RESTORED: Final = "api.pacer.shared_restored"
LEDGER_UNAVAILABLE: Final = "engine.ledger_unavailable"
LEDGER_RESTORED: Final = "engine.ledger_restored"

# The daemon's first full run after READY reached the remote: the mapping reflects the
# folder as the daemon found it (READY comes before, as soon as it watches).
CAUGHT_UP: Final = "caught up"
