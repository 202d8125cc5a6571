"""What a plan decided that needs no remote call, carried out on the state and the
claims: orphans claimed, earlier uploads adopted (as :mod:`.adopt` decides), records of
gone paths dropped. Called by the executor before any upload or delete."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import structlog

from syncd import events
from syncd.api.models import RemoteFile
from syncd.engine.adopt import LetGo, settle
from syncd.engine.claims import Claims
from syncd.engine.localopen import Refused
from syncd.engine.model import Adopt, Outcome, Plan
from syncd.engine.progress import Progress
from syncd.engine.records import RecordTable
from syncd.engine.scan import hash_scanned
from syncd.engine.state import State

log = structlog.get_logger("syncd.engine")


def claim_orphans(plan: Plan, state: State, claims: Claims) -> None:
    """Ids found through intents are ours from now on, even if we crash next; one
    that another project claimed first is not, and is not deleted."""
    raced = set()
    for d in plan.deletes:
        if d.reason != "orphan":
            continue
        if claims.claim(d.file_id):
            state.add_garbage(d.file_id, d.path)
        else:
            raced.add(d.file_id)
    if raced:
        log.warning("another project claimed files first; not deleted", count=len(raced))
        plan.deletes = [d for d in plan.deletes if d.file_id not in raced]


def adopt_all(
    adopts: list[Adopt],
    root: Path,
    state: State,
    claims: Claims,
    progress: Progress,
    records: RecordTable,
    remote: dict[str, RemoteFile],
    out: Outcome,
) -> None:
    """Take the files earlier uploads created, as :func:`adopt.settle` decides."""
    listed = frozenset(remote)
    for a in adopts:
        if not claims.claim(a.file_id):
            log.warning("adoption lost a race", path=a.path, file_id=a.file_id)
            continue
        # Sent unhashed and never answered: its hash is the file's, if still as sent.
        hashed: str | tuple[str, str]
        try:
            hashed = a.local.sha256 or hash_scanned(root, a.local)
        except Refused as exc:
            hashed = (exc.status, exc.reason)
        decision = settle(a, hashed, records.get(a.path), listed)
        if isinstance(decision, LetGo):
            state.add_garbage(a.file_id, a.path)  # ours, but no longer its content
            if decision.note is not None:
                state.note(decision.note)
            continue
        local = replace(a.local, sha256=decision.sha256)
        state.record_uploaded(
            local, remote[a.file_id], replaces=decision.replaces, action="adopted"
        )
        out.adopted += 1
        log.info(events.ADOPTED, path=a.path, file_id=a.file_id, bytes=a.local.size)
        progress.done("adopt", a.path, a.local.size)


def forget_all(plan: Plan, records: RecordTable, state: State, claims: Claims) -> None:
    """Drop the records of paths that are gone and own nothing remote."""
    left = {r.file_id for f in plan.forgets if (r := records.get(f.path)) and r.file_id}
    for f in plan.forgets:
        state.forget(f.path)
    # A remote copy left in place (delete_remote off, or rules that no longer select
    # the file) is the user's now: unclaimed, no later run deletes it as a stray.
    for file_id in left - state.owned_ids() if left else ():
        claims.release(file_id)
    for path in plan.detaches:
        state.detach(path)
