"""What ``syncd status`` shows: the state file, plus the running daemon's own words.

The state file (read without a key and without the state lock) says what is
synced and why the rest is not. When a daemon answers on the control socket, its
live fields are added (phase, queue, pid, pacer, reachability) and ``source`` says
"daemon"; otherwise ``source`` is "state". Every time is ISO 8601 in UTC; sizes
are in binary units spelled as such (KiB, MiB, GiB).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from syncd.config import Config
from syncd.daemon.control import ControlError, NotRunning, daemon_status
from syncd.textsafe import visible
from syncd.units import human_bytes, iso_utc

if TYPE_CHECKING:
    from syncd.engine.model import Held, Record

# Fields the daemon adds to the state file's.
LIVE = (
    "alive", "pid", "started_at", "uptime_s", "phase", "activity", "queue", "watch_mode",
    "remote", "last_success_at", "requests", "retries", "upload_bytes", "pacer", "quota",
    "next_reconcile",
)  # fmt: skip


def from_state(config: Config) -> dict[str, Any] | None:
    """The status as the state file tells it; None when there is no state yet."""
    from syncd.engine.state import State

    if not State.exists(config.state_dir):
        return None
    state = State(config.state_dir)
    try:
        records = state.records()
        account = state.get_meta("account") or {}
        last = state.get_meta("last_reconcile")
        scan = state.get_meta("scan") or {}
        # Read from the records, not kept beside them: it cannot go stale.
        sharing = state.sharing()
        held = state.held()
    finally:
        state.close()
    # A record the rules no longer select is on its way out (the next run deletes its
    # remote copy, or a guard such as max_delete holds it back): it is not "synced".
    unselected = _unselected(config, records)
    held_ids = set(held)
    counts, not_synced = _tally(records, unselected, held_ids)
    synced = [r for r in records.values() if r.status == "synced" and r.file_id]
    if account:
        account = {**account, "at": iso_utc(account.get("at"))}
    last_error = _last_error(last)
    if last:
        last = {**last, "at": iso_utc(last.get("at"))}
    return {
        "source": "state",
        "project": config.project,
        "root": str(config.root),
        "counts": counts,
        # Paths, and the remote files they hold (identical content shares one).
        "ours": {
            "files": len(synced),
            "remote_files": len({r.file_id for r in synced}),
            "bytes": sum(r.size for r in synced),
        },
        "account": account,
        "limits": {"max_files": config.limits.max_files, "max_bytes": config.limits.max_bytes},
        "last_reconcile": last,
        "last_error": last_error,
        "not_synced": [
            {
                "path": r.path,
                "status": _shown_status(r, r.path in unselected, held_ids),
                "reason": _reason(config, r, unselected, held),
            }
            for r in not_synced
        ]
        + _skipped_examples(scan),
        "held_deletes": _held(config, held),
        "batches": _batches(config),
        "vector_stores": _vector_stores(config),
        # Files the rules leave out are counted per rule, not recorded one by one.
        "skipped": scan.get("skipped", []),
        "scan": {k: v for k, v in scan.items() if k != "skipped"} or None,
        "sharing": sharing,
    }


def _tally(records: Mapping[str, Record], unselected: Collection[str], held_ids: set[str]
           ) -> tuple[dict[str, int], list[Record]]:  # fmt: skip
    """Paths by shown status, and the records not synced (by path)."""
    counts: dict[str, int] = {}
    not_synced: list[Record] = []
    for path, rec in records.items():
        shown = _shown_status(rec, path in unselected, held_ids)
        counts[shown] = counts.get(shown, 0) + 1
        if rec.status != "synced" or path in unselected or rec.file_id in held_ids:
            not_synced.append(rec)
    not_synced.sort(key=lambda r: r.path)
    return counts, not_synced


def _last_error(last: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last reconcile's failure, as the running daemon would report it."""
    if not last or not last.get("exit_code"):
        return None
    why = last.get("refused") or f"the last reconcile exited {last['exit_code']}"
    return {"message": why, "at": iso_utc(last.get("at")), "since": None}


def _unselected(config: Config, records: Mapping[str, Record]) -> dict[str, str]:
    """Recorded paths the rules leave out now, with the label of the rule (by name: no
    disk access)."""
    from syncd.engine.rules import Rules

    rules = Rules(config.rules)
    return {
        path: verdict
        for path in records
        if isinstance(verdict := rules.verdict(path), str)
    }


def _shown_status(rec: Record, unselected: bool, held: Collection[str]) -> str:
    if rec.file_id in held:
        return "held"
    if not unselected:
        return rec.status
    return "leaving" if rec.file_id else "skipped"


def _reason(
    config: Config, rec: Record, unselected: Mapping[str, str], held: Mapping[str, Held]
) -> str | None:
    h = held.get(rec.file_id or "")
    if h is not None:
        label = f"{unselected[rec.path]}: no longer selected; " if rec.path in unselected else ""
        return f"{label}delete held since {iso_utc(h.since)}: {h.guard}"
    if rec.path in unselected:
        return _leaving_reason(config, rec, unselected[rec.path])
    return rec.reason


def release_command(config: Config) -> str:
    """The command that makes the deletes a guard holds, for this config."""
    where = f" -c {config.source}" if config.source else ""
    return f"syncd reconcile{where} --confirm-deletes"


def _batches(config: Config) -> dict[str, Any] | None:
    """Batch jobs and pulled files (when the project has any), read from their store."""
    from syncd.engine.batches import STORE_NAME, BatchStore, summary

    path = config.state_dir / STORE_NAME
    if not path.is_file():
        return None
    store = BatchStore(path)
    try:
        return summary(store)
    finally:
        store.close()


def _vector_stores(config: Config) -> dict[str, Any] | None:
    """The stores and attachments (when the config attaches files), from their record."""
    from syncd.engine.attach_store import STORE_NAME, AttachStore, summary

    path = config.state_dir / STORE_NAME
    if not config.vector_stores.rules or not path.is_file():
        return None
    store = AttachStore(path)
    try:
        return summary(store)
    finally:
        store.close()


def _held(config: Config, held: Mapping[str, Held]) -> dict[str, Any] | None:
    """Deletes earlier refusals hold: how many, since when, why, and what releases them."""
    if not held:
        return None
    first = min(held.values(), key=lambda h: h.since)
    return {
        "count": len(held),
        "since": iso_utc(first.since),
        "guard": first.guard,
        "release": release_command(config),
        "files": [
            {"path": h.path, "file_id": h.file_id, "reason": h.reason, "since": iso_utc(h.since)}
            for h in sorted(held.values(), key=lambda h: (h.path or "", h.file_id))
        ],
    }


def _leaving_reason(config: Config, rec: Record, label: str) -> str:
    if not rec.file_id:
        return label
    if not config.sync.delete_remote:
        return (
            f"{label}: no longer selected; in the mapping until a run lets it go "
            "(sync.delete_remote is off: the remote copy stays)"
        )
    return (
        f"{label}: no longer selected; still on the remote and in the mapping until a run "
        "deletes it (max_delete may hold such deletes back)"
    )


def _skipped_examples(scan: dict[str, Any]) -> list[dict[str, Any]]:
    """A few files of each rule that leaves files out (hidden and temporary names,
    filtered by design, are not worth a line each)."""
    return [
        {"path": path, "status": "skipped", "reason": rule["rule"]}
        for rule in scan.get("skipped", [])
        if not rule.get("filtered")
        for path in rule.get("examples", [])
    ]


def gather(config: Config) -> tuple[dict[str, Any] | None, str | None]:
    """(status, a note for stderr); the status is None when there is nothing to show."""
    note = None
    live: dict[str, Any] | None = None
    try:
        live = daemon_status(config.state_dir)
    except NotRunning:
        pass
    except ControlError as exc:
        note = f"the daemon did not answer ({exc}); showing the state file"
    return combine(config, live), note


def combine(config: Config, live: dict[str, Any] | None) -> dict[str, Any] | None:
    """The document of ``syncd status --json``: the state file's, with the daemon's live
    fields (``live``, its answer on the control socket) when it answered."""
    return merge(config, from_state(config), live)


def merge(
    config: Config, data: dict[str, Any] | None, live: dict[str, Any] | None
) -> dict[str, Any] | None:
    """``data`` (what :func:`from_state` read, changed in place at its top level only)
    with the live fields."""
    if live is None:
        if data is not None:
            data["daemon"] = {"running": False}
        return data
    if data is None:
        data = {"project": config.project, "root": str(config.root), "counts": {},
                "not_synced": [], "last_reconcile": None}  # fmt: skip
    data["source"] = "daemon"
    data.update({k: live[k] for k in LIVE if k in live})
    if live.get("last_reconcile"):
        data["last_reconcile"] = {**(data.get("last_reconcile") or {}), **live["last_reconcile"]}
    if live.get("last_error"):
        data["last_error"] = live["last_error"]
    return data


def exit_code(data: dict[str, Any]) -> int:
    """1 while some file is not synced (or nothing is known yet), else 0."""
    if data.get("source") == "daemon" and not (data.get("remote") or {}).get("reachable", True):
        return 1
    waiting = [e for e in data.get("not_synced", []) if e["status"] != "skipped"]
    last = data.get("last_reconcile") or {}
    # Nothing known and no clean run: the first reconcile failed (say the remote was down).
    unknown = not data.get("counts") and last.get("exit_code", 1) != 0
    return 1 if waiting or unknown else 0


def render(data: dict[str, Any]) -> list[str]:
    """The text of ``syncd status``: each section's lines, in order."""
    return [line for section in SECTIONS for line in section(data)]


def _head_lines(data: dict[str, Any]) -> list[str]:
    out = [f"project {visible(data['project'])}: root {visible(data['root'])}"]
    if data.get("source") == "daemon":
        remote = data.get("remote") or {}
        reach = (
            "reachable"
            if remote.get("reachable", True)
            else f"unreachable since {remote.get('unreachable_since')}"
        )
        out.append(
            f"daemon: running (pid {data.get('pid')}, up {_duration(data.get('uptime_s', 0))}),"
            f" {data.get('phase')}, queue {data.get('queue', 0)},"
            f" watching by {data.get('watch_mode') or 'nothing yet'}; remote {reach}"
        )
        for cls, p in sorted((data.get("pacer") or {}).items()):
            out.append(
                f"  pacer {cls:<6} {p['rate_per_s']:g}/s now, limit estimate"
                f" {p['ceiling_estimate_per_s']:g}/s of {p['ceiling_per_s']:g}/s,"
                f" {p['throttled_total']} throttled (429)"
            )
    else:
        out.append("daemon: not running (from the state file)")
    return out


def _files_lines(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    counts = data.get("counts") or {}
    out.append(
        "files: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none known yet")
    )
    ours = data.get("ours")
    if ours:
        held_in = ours.get("remote_files", ours["files"])
        out.append(
            f"ours: {ours['files']} paths synced in {held_in} remote files, "
            f"{human_bytes(ours['bytes'])}"
        )
    return out


def _account_lines(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    account, limits = data.get("account"), data.get("limits") or {}
    if account:
        last = data.get("last_reconcile") or {}
        omitted = last.get("inconsistent_listing") or 0
        at_least = "at least " if omitted else ""
        out.append(
            f"account: {at_least}{account.get('files')} of {limits.get('max_files')} remote "
            f"files, {human_bytes(account.get('bytes', 0))} of "
            f"{human_bytes(limits.get('max_bytes', 0))} (listed {account.get('at')})"
        )
        if omitted:
            out.append(
                f"  the provider's listing is incomplete: it omitted {omitted} of our files "
                "(each was asked for directly); the account holds more than it lists"
            )
    return out


def _last_run_lines(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    last = data.get("last_reconcile")
    if last:
        out.append(
            f"last reconcile: {last.get('at')}, exit {last.get('exit_code')}"
            + (
                f", uploaded {last['uploaded']}, deleted {last['deleted']}"
                if "uploaded" in last
                else ""
            )
        )
        if last.get("refused"):
            out.append(f"  refused: {visible(last['refused'])}")
        if last.get("inconsistent_listing"):
            out.append(
                f"  the listing omitted {last['inconsistent_listing']} file(s) the provider"
                " still has (asked for each directly; nothing was uploaded again)"
            )
    return out


def _sharing_lines(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    sharing = data.get("sharing")
    if sharing and sharing.get("saved_files"):
        out.append(
            f"dedupe: {sharing['paths']} paths in {sharing['remote_files']} remote files, "
            f"saved {sharing['saved_files']} uploads and {human_bytes(sharing['saved_bytes'])}"
        )
    return out


def _skipped_lines(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    skipped = data.get("skipped") or []
    if skipped:
        out.append("skipped by the rules (syncd status --skipped lists them all):")
        for rule in skipped:
            examples = ", ".join(visible(e) for e in rule.get("examples", [])[:3])
            out.append(f"  {rule['files']:>9,}  {visible(rule['rule'])}  e.g. {examples}")
    return out


def _scan_lines(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    scan = data.get("scan")
    if scan and scan.get("entries") is not None:
        out.append(
            f"scan: {scan['entries']:,} entries in {scan.get('folders', 0):,} folders, "
            f"{scan.get('pruned_folders', 0):,} not entered, {scan.get('seconds', 0):.1f} s"
        )
        if scan.get("errors"):
            out.append(f"  not read: {scan['errors']:,} (no delete is made while any remain)")
            out.extend(f"    {visible(e)}" for e in scan.get("error_examples", []))
    return out


def _batches_lines(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    batches = data.get("batches")
    if batches:
        jobs = ", ".join(f"{k} {v}" for k, v in sorted(batches["jobs"].items())) or "none"
        out.append(f"batch jobs: {jobs}; pulled {batches['pulled']} file(s), "
                   f"{human_bytes(batches['pulled_bytes'])}")  # fmt: skip
        for j in batches["job_list"][-10:]:
            counts = f"{j['completed']}/{j['total']} done, {j['failed']} failed"
            why = f": {visible(j['reason'])}" if j["reason"] else ""
            job = visible(j["batch_id"] or "-")
            out.append(f"  {j['status']:<11} {visible(j['path'])}: {job} ({counts}){why}")
        for c in batches["conflicts"]:
            out.append(f"  conflict {visible(c['name'])}: {visible(c['reason'])}")
    return out


def _scan_errors(data: dict[str, Any]) -> int:
    return int((data.get("scan") or {}).get("errors") or 0)


def _held_lines(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    held = data.get("held_deletes")
    if held:
        out.append(
            f"deletes held: {held['count']} remote file(s) whose local file is gone or "
            f"invalid, held since {held['since']} ({visible(held['guard'])})"
        )
        # While a scan cannot read everything, no consent makes a delete: say what does.
        once = " once the scan reads everything (see `not read`)" if _scan_errors(data) else ""
        out.append(
            f"  `{visible(held['release'])}` makes them{once}; restoring the files lets them go"
        )
    return out


def _error_lines(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    error = data.get("last_error")
    if error:
        since = f" since {error['since']}" if error.get("since") else ""
        out.append(f"last error: {visible(error['message'])} (at {error.get('at')}{since})")
    return out


def _not_synced_lines(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for e in data.get("not_synced", []):
        out.append(f"  {e['status']:<8} {visible(e['path'])}: {visible(e['reason'] or '')}")
    return out


Section = Callable[[dict[str, Any]], list[str]]
SECTIONS: tuple[Section, ...] = (
    _head_lines, _files_lines, _account_lines, _last_run_lines, _sharing_lines,
    _skipped_lines, _scan_lines, _batches_lines,
    lambda data: _vector_lines(data.get("vector_stores")),
    _held_lines, _error_lines, _not_synced_lines,
)


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def explain(config: Config, typed: list[str]) -> list[dict[str, Any]]:
    """Why each path is as it is: the rule that selects it (its purpose) or leaves it
    out, its status and reason, its remote copy, the paths sharing it, a held delete
    and its latest journal entries. Paths as a person types them (see userpath)."""
    from syncd.engine.rules import Rules
    from syncd.engine.state import State
    from syncd.userpath import OutsideRoot, root_relative

    rules = Rules(config.rules)
    state = State(config.state_dir) if State.exists(config.state_dir) else None
    try:
        records = state.records() if state else {}
        held = state.held() if state else {}
        out: list[dict[str, Any]] = []
        for text in typed:
            try:
                path = root_relative(config.root, text, records)
            except OutsideRoot as exc:
                out.append({"path": text, "error": str(exc)})
                continue
            out.append(_explain_one(config, rules, path, records, held, state))
        return out
    finally:
        if state:
            state.close()


def _explain_one(
    config: Config,
    rules: Any,
    path: str,
    records: Mapping[str, Record],
    held: Mapping[str, Held],
    state: Any,
) -> dict[str, Any]:
    verdict = rules.verdict(path)
    rule = (
        {"selected": False, "rule": verdict}
        if isinstance(verdict, str)
        else {"selected": True, "purpose": verdict.purpose, "rule": ", ".join(verdict.patterns)}
    )
    on_disk = (config.root / path).is_file()
    rec = records.get(path)
    answer: dict[str, Any] = {"path": path, "on_disk": on_disk, **rule}
    if rec is None:
        if isinstance(verdict, str):
            answer["status"], answer["reason"] = "skipped", verdict
        elif on_disk:
            answer["status"], answer["reason"] = "unknown", "not seen by a run yet"
        else:
            answer["status"], answer["reason"] = "absent", "no such file, and no record of it"
    else:
        h = held.get(rec.file_id or "")
        answer["status"] = "held" if h else rec.status
        answer["reason"] = (
            f"delete held since {iso_utc(h.since)}: {h.guard}" if h else rec.reason
        )
        answer.update(file_id=rec.file_id, remote_name=rec.remote_name, bytes=rec.size,
                      uploaded_at=iso_utc(rec.uploaded_at))  # fmt: skip
        answer["shared_with"] = sorted(
            p for p, r in records.items() if r.file_id and r.file_id == rec.file_id and p != path
        )
    if state is not None:
        answer["journal"] = [
            {
                "at": iso_utc(e.at),
                "action": e.action,
                "file_id": e.file_id,
                "status": e.status,
                "reason": e.reason,
            }
            for e in state.journal([path], limit=5)
        ]
    return answer


def render_explained(answers: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for a in answers:
        if "error" in a:
            out.append(f"{visible(a['path'])}: {visible(a['error'])}")
            continue
        out.append(f"{visible(a['path'])}: {a['status']}")
        if a["selected"]:
            out.append(f"  rule: selected as {a['purpose']} (by {visible(a['rule'])})")
        else:
            out.append(f"  rule: left out ({visible(a['rule'])})")
        if a.get("reason"):
            out.append(f"  why: {visible(a['reason'])}")
        if a.get("file_id"):
            out.append(
                f"  remote: {visible(a['file_id'])} as {visible(a.get('remote_name') or '')}"
                f", {human_bytes(a.get('bytes') or 0)}, uploaded {a.get('uploaded_at')}"
            )
        if a.get("shared_with"):
            out.append("  shares its content with: " + ", ".join(map(visible, a["shared_with"])))
        for e in a.get("journal", []):
            why = ": ".join(visible(x) for x in (e["status"], e["reason"]) if x)
            line = f"  {e['at']}  {e['action']:<9} {visible(e['file_id'] or '')}  {why}"
            out.append(line.rstrip())
    return out



def _vector_lines(stores: Mapping[str, Any] | None) -> list[str]:
    """Each store and the attachments by status; each failure with the provider's reason."""
    if not stores:
        return []
    named = ", ".join(f"{visible(n)} {visible(i)}" for n, i in sorted(stores["stores"].items()))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(stores["attachments"].items())) or "none"
    out = [f"vector stores: {named or 'by id only'}; attachments {counts}"]
    for f in stores["failed"]:
        paths = ", ".join(visible(p) for p in f["paths"]) or visible(f["file_id"])
        out.append(f"  failed  {paths} in {visible(f['store_id'])}: {visible(f['reason'] or '')}")
    return out
