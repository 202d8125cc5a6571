"""`syncd log`: what syncd did, when and why, kept in the state across restarts and
`kill -9`, bounded by count and age; `syncd status PATH` and `syncd id PATH` take a
path in any form a person types it."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syncd.engine import journal
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    build_flat_tree,
    fast_emulator,
    read_mapping,
    reconcile,
    remote_files,
    run_syncd,
)
from tests.helpers import wait_for
from tests.test_daemon_mustshow import RunningDaemon, fast_config, run_daemon

__all__ = ["run_daemon"]


def log(cfg: Path, *args: str) -> list[dict[str, Any]]:
    run = run_syncd("log", cfg, "--json", *args, key=None)
    assert run.returncode == 0, run.output
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_every_action_is_in_the_log_with_its_id_and_reason_and_survives_kill_9(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    emu = fast_emulator(emulator_factory)
    key = emu.api_key
    root = tmp_path / "root"
    paths = build_flat_tree(root, 200)
    (root / "setup.exe").write_bytes(b"MZ")  # left out by the rules: no journal row
    (root / "bad.jsonl").write_text("not json\n")  # invalid: one status row
    cfg = fast_config(tmp_path, root, emu, sync={"max_delete": "50%"})
    assert reconcile(cfg, key).returncode == 1  # bad.jsonl is not synced

    edited, deleted, moved = paths[:20], paths[20:30], paths[30]
    for rel in edited:
        (root / rel).write_text(f"edited {rel}\n")
    for rel in deleted:
        (root / rel).unlink()
    (root / moved).rename(root / "moved.txt")
    assert reconcile(cfg, key).returncode == 1
    mapping = read_mapping(tmp_path / "mapping.json")

    rows = log(cfg)
    by_path: dict[str, Counter[str]] = {}
    for r in rows:
        by_path.setdefault(r["path"], Counter())[r["action"]] += 1
        assert r["at"].endswith("Z") and r["run_kind"] == "one-off reconcile"
    assert sum(c["uploaded"] for c in by_path.values()) >= 200 + 20
    for rel in edited:  # uploaded, uploaded again, the old version deleted
        assert by_path[rel] == Counter(uploaded=2, deleted=1), (rel, by_path[rel])
    for rel in deleted:
        gone = [r for r in rows if r["path"] == rel and r["action"] == "deleted"]
        assert [r["reason"] for r in gone] == ["gone"] and gone[0]["file_id"]
    # A move keeps the file's id: the new path shares it, nothing is uploaded.
    [moved_row] = [r for r in rows if r["path"] == "moved.txt"]
    assert moved_row["action"] == "shared"
    assert moved_row["file_id"] == mapping["moved.txt"]["file_id"]
    [invalid] = [r for r in rows if r["path"] == "bad.jsonl"]
    assert invalid["action"] == "status" and invalid["status"] == "invalid" and invalid["reason"]
    assert "setup.exe" not in by_path

    # One path, and a time window.
    one = log(cfg, str(root / edited[0]))
    assert {r["path"] for r in one} == {edited[0]} and len(one) == 3
    assert log(cfg, "--since", "1h") == rows
    assert log(cfg, "--since", time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                               time.gmtime(time.time() + 60))) == []  # fmt: skip

    # A daemon session whose mass delete is refused: the held deletes are journaled, and
    # what was written survives a kill -9.
    daemon = run_daemon(cfg, key)
    for rel in paths[40:160]:
        (root / rel).unlink()
    wait_for(lambda: any(r["action"] == "held" for r in log(cfg)), 60, what="a held delete")
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(10)
    after = log(cfg)
    held = [r for r in after if r["action"] == "held"]
    assert held and all("max_delete" in r["reason"] for r in held)
    assert all(r["run_kind"].startswith("daemon") for r in held)
    daemon_deletes = [r for r in after if r["action"] == "deleted" and r["reason"] == "gone"
                      and r["run_kind"].startswith("daemon")]  # fmt: skip
    assert len(daemon_deletes) + len(held) <= 120
    assert len(remote_files(emu)) == 200 - 10 - len(daemon_deletes)  # moved.txt kept its id
    assert after[: len(rows)] == rows


def test_status_and_id_take_a_path_as_a_person_types_it(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    key = emu.api_key
    project = tmp_path / "proj"
    root = project / "data"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.md").write_text("same\n")
    (root / "notes" / "b.md").write_text("same\n")
    (root / "setup.exe").write_bytes(b"MZ")
    (root / "bad.jsonl").write_text("{\n")
    (root / "wait.md").write_text("no room for me\n")  # the account holds one file
    link = tmp_path / "link-to-data"
    link.symlink_to(root)
    cfg = fast_config(project, root, emu, limits={"max_files": 1}, rules={
        "purposes": [{"match": "*.jsonl", "purpose": "batch"}, {"match": "*.md",
                                                                  "purpose": "file-extract"}]})
    assert reconcile(cfg, key).returncode == 1
    a_id = read_mapping(project / "mapping.json")["notes/a.md"]["file_id"]

    forms = ["notes/a.md", str(root / "notes" / "a.md"), str(link / "notes" / "a.md")]
    for typed in forms:
        run = run_syncd("status", cfg, "--json", typed, key=None)
        assert run.returncode == 0, run.output
        [answer] = run.json
        assert answer["path"] == "notes/a.md" and answer["status"] == "synced"
        assert answer["file_id"] == a_id and answer["shared_with"] == ["notes/b.md"]
        assert answer["purpose"] == "file-extract" and answer["journal"]
        got = run_syncd("id", cfg, typed, key=None)
        assert got.stdout.strip() == a_id, got.output
    # Relative to the current folder (the project folder, or a folder in the root).
    for cwd, typed in ((project, "data/notes/a.md"), (root / "notes", "a.md")):
        run = _run_in(cwd, "status", cfg, "--json", typed)
        assert json.loads(run.stdout)[0]["path"] == "notes/a.md", run.stderr

    run = run_syncd("status", cfg, "--json", "setup.exe", "bad.jsonl", "wait.md", "../x",
                    key=None)  # fmt: skip
    assert run.returncode == 1
    exe, bad, wait, outside = run.json
    assert exe["status"] == "skipped" and not exe["selected"] and ".exe" in exe["rule"]
    assert bad["status"] == "invalid" and bad["selected"] and bad["purpose"] == "batch"
    assert wait["status"] == "quota" and "waiting for account space" in wait["reason"]
    assert wait["selected"] and wait["purpose"] == "file-extract"
    assert bad["reason"] and "error" in outside
    text = run_syncd("status", cfg, "setup.exe", key=None).stdout
    assert "left out" in text and ".exe" in text


def _run_in(cwd: Path, command: str, cfg: Path, *args: str) -> Any:
    import subprocess
    import sys

    from tests.engine_helpers import syncd_env

    return subprocess.run([sys.executable, "-m", "syncd", command, "-c", str(cfg), *args],
                          cwd=cwd, env=syncd_env(None), capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def test_the_journal_stays_within_its_bound(tmp_path: Path) -> None:
    """100,000 recorded actions and more, as the State writes them (its own pruning
    every few thousand rows), on a bound of 20,000 entries."""
    from syncd.engine.state import State

    state = State(tmp_path / "state")
    state.journal_rows = 20_000
    state.begin_run("test")
    db = state._db  # rows written in bulk: 150,000 transactions would take minutes
    now = time.time()
    db.execute("BEGIN")
    for i in range(150_000):
        state._journal(db, "uploaded", now, path=f"p{i}", file_id=f"file-{i}", size=i)
        if i % 10_000 == 0:
            (n,) = db.execute("SELECT COUNT(*) FROM journal").fetchone()
            assert n <= 20_000
    db.execute("COMMIT")
    (n,) = db.execute("SELECT COUNT(*) FROM journal").fetchone()
    assert 20_000 - journal.PRUNE_EVERY <= n <= 20_000
    assert state.journal(limit=1)[0].path == "p149999"  # the oldest went first
    # And by age: rows older than the bound go at the next run's pruning.
    with state._tx() as db:
        state._journal(db, "uploaded", now - 100, path="old")
    state.journal_age_s = 50
    state.begin_run("later")
    kept = state.journal()
    assert len(kept) == n and "old" not in {e.path for e in kept}
    state.close()
