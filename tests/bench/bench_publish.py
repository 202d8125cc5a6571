"""Publishing the mapping of a large project: syncd's publish beside an indented dump.

A state of ``--files`` synced records (100,000 by default: a project on a provider with
no file-count cap; DashScope's accounts stop at 10,000) is published as the engine does
it, ``Syncer.publish_mapping``'s ``Publisher``: the first publish of a process renders
every entry; later ones re-render only the entries whose row changed, and read nothing
when the state and the remote view have not changed at all. In the same run, the
baseline publishes the same mapping as syncd once did: a ``Record`` built per row, a
Python sort, ``json.dump(indent=1)`` (json's pure-Python encoder). Both outputs are
checked to say the same.

    python tests/bench/bench_publish.py [--files 100000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from syncd.engine import publish  # noqa: E402
from syncd.engine.state import State  # noqa: E402


def fill(state: State, n: int) -> set[str]:
    """``n`` synced records, straight into the state's table; returns their ids."""
    db = state._db  # a bench may reach in: building 100k records through uploads is not the point
    names = [row[1] for row in db.execute("PRAGMA table_info(files)")]
    ids = set()
    rows = []
    for i in range(n):
        file_id = f"file-fe-{i:024x}"
        ids.add(file_id)
        values: dict[str, Any] = {
            "path": f"folder-{i % 500:03d}/document {i:06d}.pdf", "status": "synced",
            "file_id": file_id, "purpose": "file-extract", "remote_name": f"document {i:06d}.pdf",
            "size": 10_000 + i, "mtime_ns": 1, "inode": i, "sha256": f"{i:064x}",
            "uploaded_at": 1_795_000_000.0 + i, "reason": None, "updated_at": 1_795_000_000.0,
        }  # fmt: skip
        rows.append(tuple(values.get(name) for name in names))
    marks = ",".join("?" * len(names))
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO files ({','.join(names)}) VALUES ({marks})", rows)
    db.execute("COMMIT")
    return ids


def before(state: State, ids: set[str], path: Path) -> dict[str, Any]:
    """The baseline, as syncd published before: every record built as a ``Record``,
    the mapping built from them in Python's sort, and ``json.dump(indent=1)``."""
    records = state.records()
    files = {
        p: {"file_id": r.file_id, "purpose": r.purpose, "bytes": r.size, "sha256": r.sha256,
            "uploaded_at": r.uploaded_at}
        for p, r in sorted(records.items())
        if r.status == "synced" and r.file_id and r.file_id in ids
    }  # fmt: skip
    data = {"version": 1, "project": "p", "owner": "o", "base_url": "u",
            "generated_at": time.time(), "files": files}  # fmt: skip
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return data


def update_one(state: State, i: int) -> None:
    """One record changes (a file edited and uploaded again), as the engine writes it."""
    with state._tx() as db:
        db.execute("UPDATE files SET sha256 = ?, uploaded_at = uploaded_at + 1 WHERE inode = ?",
                   (f"{i + 7:064x}", i))  # fmt: skip
        # The state's writers name the paths they write, so the records it keeps follow.
        state._dirty.add(f"folder-{i % 500:03d}/document {i:06d}.pdf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    state = State(work / "state")
    ids = fill(state, args.files)
    target = work / "mapping.json"
    rows = ("before: records, sort, indented dump", "syncd publish (first of a process)",
            "syncd publish, one entry changed", "syncd patch, one entry changed (what "
            "the state logged)", "syncd publish, the state written, "
            "nothing changed", "syncd publish, nothing written since")  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in rows}
    head = {"project": "p", "owner": "o", "base_url": "u"}
    for rep in range(args.reps):
        t = time.perf_counter()
        old = before(state, ids, target)
        times[rows[0]].append(time.perf_counter() - t)
        target.unlink()
        # As Syncer.publish_mapping does it: a Publisher per process.
        publisher = publish.Publisher(target)
        gen = (rep, state.generation)
        t = time.perf_counter()
        assert publisher.publish(state.synced, ids, head, gen)
        times[rows[1]].append(time.perf_counter() - t)
        assert json.loads(target.read_text("utf-8"))["files"] == old["files"]
        update_one(state, rep)
        t = time.perf_counter()
        assert publisher.publish(state.synced, ids, head, (rep, state.generation))
        times[rows[2]].append(time.perf_counter() - t)
        # As Syncer.publish_mapping does it between full runs: only the paths written since.
        since = state.generation
        update_one(state, rep + args.files // 2)
        t = time.perf_counter()
        changed = state.changed_since(since)
        assert changed is not None and len(changed) == 1
        assert publisher.patch(state.synced_of(changed), ids, head, (rep, state.generation))
        times[rows[3]].append(time.perf_counter() - t)
        (path,) = changed
        assert json.loads(target.read_text("utf-8"))["files"][path]["sha256"].endswith(
            f"{rep + args.files // 2 + 7:x}")
        mtime = target.stat().st_mtime_ns
        with state._tx():
            pass  # a write that changes nothing the mapping says (a status, a journal row)
        t = time.perf_counter()
        assert not publisher.publish(state.synced, ids, head, (rep, state.generation))
        times[rows[4]].append(time.perf_counter() - t)
        t = time.perf_counter()
        assert not publisher.publish(state.synced, ids, head, (rep, state.generation))
        times[rows[5]].append(time.perf_counter() - t)
        assert target.stat().st_mtime_ns == mtime, "an unchanged mapping was rewritten"
        print(f"run {rep + 1} done", file=sys.stderr)
    size = target.stat().st_size / 1e6
    print(f"{args.files:,} files, mapping {size:.1f} MB, {args.reps} runs (median), "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print()
    print("| publish | median s | × before | runs (s) |")
    print("|---|---|---|---|")
    base = statistics.median(times[rows[0]])
    for name, runs in times.items():
        shown = " / ".join(f"{r:.2f}" for r in runs)
        median = statistics.median(runs)
        print(f"| {name} | {median:.3f} | {median / base:.3f} | {shown} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
