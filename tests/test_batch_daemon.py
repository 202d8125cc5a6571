"""The batch round trip under the daemon, with no command typed: a `.jsonl` dropped into
the batch folder is uploaded once, runs as exactly one job, and its results come home to
the outbox named after it; `kill -9` at any step and a restart change none of that."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import run_syncd
from tests.helpers import wait_for
from tests.test_batch_step import requests_text
from tests.test_daemon_mustshow import RunningDaemon, fast_config, run_daemon

__all__ = ["run_daemon"]


def jobs(emu: EmulatorHandle) -> list[dict[str, Any]]:
    """Every batch job of the account, as the emulator knows them (no fault touches it)."""
    r = httpx.get(f"{emu.root_url}/_emulator/batches", timeout=30)
    r.raise_for_status()
    return [b for account in r.json()["accounts"].values() for b in account]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def setup(tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle],
          step_s: float) -> tuple[EmulatorHandle, Path, Path, Path]:  # fmt: skip
    emu = emulator_factory(batch_step_s=step_s, content_download="provider",
                           upload_rate=200, read_rate=200, delete_rate=100)  # fmt: skip
    root, outbox = tmp_path / "root", tmp_path / "outbox"
    (root / "jobs").mkdir(parents=True)
    cfg = fast_config(
        tmp_path, root, emu,
        rules={"purposes": [{"match": "*.jsonl", "purpose": "batch"},
                            {"match": "*.txt", "purpose": "file-extract"}]},
        pull={"outbox": str(outbox)},
        batch={"submit": ["jobs/*.jsonl"], "poll_interval_s": 1},
    )  # fmt: skip
    return emu, root, outbox, cfg


def test_a_batch_file_dropped_in_comes_back_as_results_with_no_command_typed(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    emu, root, outbox, cfg = setup(tmp_path, emulator_factory, step_s=0.3)
    daemon = run_daemon(cfg, emu.api_key)
    (root / "jobs" / "requests.jsonl").write_text(requests_text(10, bad=(3,)))

    out, err = outbox / "jobs" / "requests.output.jsonl", outbox / "jobs" / "requests.errors.jsonl"
    wait_for(lambda: out.exists() and err.exists(), 90, what="results in the outbox")
    assert sorted(r["custom_id"] for r in lines(out)) == sorted(
        f"req-{i}" for i in range(10) if i != 3)  # fmt: skip
    assert [r["custom_id"] for r in lines(err)] == ["req-3"]
    uploads = [f for f in emu.files() if f["filename"] == "requests.jsonl"]
    assert len(uploads) == 1 and len(jobs(emu)) == 1
    assert jobs(emu)[0]["input_file_id"] == uploads[0]["id"]

    # Touched without a change: no second job. Edited: one new job, results replaced.
    os.utime(root / "jobs" / "requests.jsonl")
    (root / "jobs" / "other.txt").write_text("a sync happens meanwhile\n")
    wait_for(lambda: "jobs/other.txt" in daemon.mapping(), 60, what="a later sync")
    assert len(jobs(emu)) == 1
    (root / "jobs" / "requests.jsonl").write_text(requests_text(4, bad=(), tag="edited"))
    wait_for(lambda: len(jobs(emu)) == 2 and not err.exists()
             and len(lines(out)) == 4, 90, what="the edited input's results")  # fmt: skip
    assert all("edited" in json.dumps(r) for r in lines(out))

    logged = [json.loads(x) for x in run_syncd("log", cfg, "--json", key=None).stdout.split("\n")
              if x]  # fmt: skip
    assert [r["path"] for r in logged if r["action"] == "submitted"] == ["jobs/requests.jsonl"] * 2
    assert {r["path"] for r in logged if r["action"] == "pulled"} >= {
        "jobs/requests.output.jsonl", "jobs/requests.errors.jsonl"}  # fmt: skip
    shown = run_syncd("status", cfg, "--json", key=None).json
    assert shown["batches"]["jobs"].get("completed", 0) >= 1
    assert shown["batches"]["pulled"] >= 2 and shown["batches"]["conflicts"] == []
    current = daemon.mapping()["jobs/requests.jsonl"]["file_id"]
    [newest] = [b for b in jobs(emu) if b["input_file_id"] == current]
    cat = run_syncd("cat", cfg, newest["output_file_id"], key=emu.api_key)
    assert cat.returncode == 0 and len(cat.stdout.splitlines()) == 4, cat.output
    refused = run_syncd("cat", cfg, "jobs/other.txt", key=emu.api_key)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    daemon.stop()


def test_kill_9_at_each_step_leaves_exactly_one_job_and_a_complete_outbox(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    run_daemon: Callable[..., RunningDaemon],
) -> None:
    emu, root, outbox, cfg = setup(tmp_path, emulator_factory, step_s=1.5)
    text = requests_text(10, bad=(3,))
    daemon = run_daemon(cfg, emu.api_key)
    (root / "jobs" / "requests.jsonl").write_text(text)
    store = tmp_path / "state" / "batches.sqlite3"
    # Before the create call (the upload recorded, no job yet), after it (a job exists,
    # running), and while results come home: each time kill -9, then start again.
    checkpoints: list[Callable[[], bool]] = [
        lambda: "jobs/requests.jsonl" in daemon.mapping(),
        lambda: len(jobs(emu)) == 1,
        lambda: jobs(emu)[0]["status"] in ("finalizing", "completed"),
    ]
    for reached in checkpoints:
        wait_for(reached, 90, what="the next step of the round trip")
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(10)
        daemon = run_daemon(cfg, emu.api_key)
    out, err = outbox / "jobs" / "requests.output.jsonl", outbox / "jobs" / "requests.errors.jsonl"
    wait_for(lambda: out.exists() and err.exists(), 90, what="results in the outbox")
    assert len(jobs(emu)) == 1, jobs(emu)
    [job] = jobs(emu)
    for path, file_id in ((out, job["output_file_id"]), (err, job["error_file_id"])):
        remote = httpx.get(f"{emu.url}/files/{file_id}/content", timeout=30,
                           headers={"Authorization": f"Bearer {emu.api_key}"})  # fmt: skip
        assert path.read_bytes() == remote.content  # byte-exact
    assert store.exists()
    assert not [p for p in outbox.rglob("*") if p.name.startswith(".")], "temp files left"
    daemon.stop()


def test_a_dry_run_shows_the_job_it_would_submit_and_submits_none(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu, root, _outbox, cfg = setup(tmp_path, emulator_factory, step_s=0.3)
    text = cfg.read_text()
    # Synced first with no batch rule: the input is on the remote, no job for it yet.
    cfg.write_text(text.replace("submit:\n  - jobs/*.jsonl", "submit: []"))
    (root / "jobs" / "requests.jsonl").write_text(requests_text(3, bad=()))
    first = run_syncd("reconcile", cfg, key=emu.api_key)
    assert first.returncode == 0 and jobs(emu) == [], first.output
    cfg.write_text(text)
    dry = run_syncd("reconcile", cfg, "--dry-run", key=emu.api_key)
    assert dry.returncode == 0, dry.output
    assert "batches: would submit 1 job(s)" in dry.stdout and "jobs/requests.jsonl" in dry.stdout
    assert jobs(emu) == []
    run = run_syncd("reconcile", cfg, key=emu.api_key)
    assert run.returncode == 0, run.output
    assert "batches: submitted 1 job(s)" in run.stdout and len(jobs(emu)) == 1
