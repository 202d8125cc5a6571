"""Pulling provider-made files into the outbox against the emulator over HTTP: 200 files
through 5xx, drops and cut-off bodies, each once and byte-exact within the read rate; a
crash at every point of a pull (simulated in the ledger, and kill -9 of a real process)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.api.client import FilesClient
from syncd.api.models import Batch, RemoteFile
from syncd.api.options import RetryPolicy
from syncd.engine.batches import BatchesConfig, BatchStore, KnownInput, Report, step
from syncd.engine.pull import (
    Attribution,
    PullConfig,
    PullItem,
    conflict_name,
    plan_pull,
    result_name,
    safe_name,
    temp_name,
)
from tests.emulator_fixture import REPO_ROOT, EmulatorHandle
from tests.helpers import wait_for
from tests.helpers_client import assert_paced, make_client

Factory = Callable[..., EmulatorHandle]
CHAT = "/v1/chat/completions"
RETRY = RetryPolicy(max_attempts=20, max_elapsed=180, initial_backoff=0.05, max_backoff=0.5)
WAIT_S = 180.0


def requests_text(tag: str, lines: int, pad: int = 0) -> str:
    """``lines`` requests, the second with no messages (so each job has an error file)."""
    out = []
    for i in range(lines):
        messages = [] if i == 1 else [{"role": "user", "content": f"{tag} {i} " + "x" * pad}]
        out.append(json.dumps({"custom_id": f"{tag}-{i}", "method": "POST", "url": CHAT,
                               "body": {"model": "qwen-plus", "messages": messages}}))
    return "\n".join(out) + "\n"


def make_results(client: FilesClient, root: Path, jobs: int, lines: int = 3,
                 pad: int = 0) -> dict[str, KnownInput]:
    """``jobs`` inputs under ``root``, each uploaded and run once: 2 x ``jobs``
    provider-made files (outputs and error files). Returns path -> input."""
    known: dict[str, KnownInput] = {}
    batch_ids = []
    for n in range(jobs):
        rel = f"set{n % 4}/in-{n:03d}.jsonl"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(requests_text(f"j{n}", lines, pad))
        sent = client.send(path, "batch")
        assert sent.sha256 is not None
        known[rel] = KnownInput(sent.file.id, sent.sha256)
        batch_ids.append(client.create_batch(sent.file.id, CHAT).id)
    wait_for(lambda: client.retrieve_batch(batch_ids[-1]).terminal, 60, "the last job")
    return known


def outbox_files(outbox: Path) -> dict[str, bytes]:
    return {p.relative_to(outbox).as_posix(): p.read_bytes()
            for p in outbox.rglob("*") if p.is_file()}


def expected(emu: EmulatorHandle) -> dict[str, bytes]:
    """file id -> content of every provider-made file, read from the emulator's disk."""
    return {f["id"]: (emu.data_dir / "blobs" / f["id"]).read_bytes()
            for f in emu.truth_files() if f["purpose"] == "batch_output"}


def pull_until_done(client: FilesClient, store: BatchStore, config: BatchesConfig,
                    known: dict[str, KnownInput]) -> list[Report]:
    reports: list[Report] = []

    def once() -> bool:
        report = step(client, store, config, known)
        reports.append(report)
        return not report.pulled and not report.errors

    wait_for(once, WAIT_S, "every file to be pulled", interval=0.05)
    return reports


def test_200_files_come_home_once_and_byte_exact_through_faults(
        emulator_factory: Factory, tmp_path: Path) -> None:
    emu = emulator_factory(batch_step_s=0, content_download="provider", seed=11)
    client = make_client(emu.url, emu.api_key, retry=RETRY)
    known = make_results(client, tmp_path / "root", 100)
    truth = expected(emu)
    assert len(truth) == 200
    # Half the inputs are ours (their results are named after them), half not (by id).
    ours = dict(sorted(known.items())[:50])
    emu.configure(fault_5xx=0.2, drop_before=0.05, fault_truncate_content=0.1)
    emu.reset_stats()
    store = BatchStore.open(tmp_path / "state")
    config = BatchesConfig(pull=PullConfig(tmp_path / "outbox"))
    reports = pull_until_done(client, store, config, ours)
    stats = emu.stats()
    client.close()

    files = outbox_files(tmp_path / "outbox")
    pulled = [fid for r in reports for fid, _ in r.pulled]
    assert sorted(pulled) == sorted(truth)  # each once
    names = {fid: name for r in reports for fid, name in r.pulled}
    assert sorted(files) == sorted(names.values())  # nothing else: no temp, no copy
    for file_id, content in truth.items():
        assert files[names[file_id]] == content, names[file_id]
    for rel in ours:
        stem = rel.removesuffix(".jsonl")
        assert f"{stem}.output.jsonl" in files and f"{stem}.errors.jsonl" in files
    by_id = [n for n in files if n.startswith("file-batch_")]
    assert len(by_id) == 100
    # Faults were met and survived; reads stayed within the provider's rate.
    assert stats["faults"]["5xx"] > 10 and stats["mutations"]["truncated_content"] > 5
    assert_paced(stats, {"read": 20})
    assert len(store.pulls()) == 200


def test_a_pull_resumes_from_wherever_a_crash_left_it(emulator_factory: Factory,
                                                      tmp_path: Path) -> None:
    emu = emulator_factory(batch_step_s=0, content_download="provider")
    client = make_client(emu.url, emu.api_key, retry=RETRY)
    known = make_results(client, tmp_path / "root", 2)
    truth = expected(emu)
    outbox = tmp_path / "outbox"
    store = BatchStore.open(tmp_path / "state")
    config = BatchesConfig(pull=PullConfig(outbox))
    plan = step(client, store, config, known, dry_run=True)
    assert len(plan.pulled) == 4
    items = {fid: name for fid, name in plan.pulled}
    (half, placed, unplaced, _) = sorted(items)

    def item(file_id: str) -> PullItem:
        return PullItem(file_id, len(truth[file_id]), items[file_id], "output")

    def temp(file_id: str) -> Path:
        path = outbox / temp_name(items[file_id], file_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # Killed mid-download: half the bytes in the temp.
    store.note_downloading(half, temp_name(items[half], half), item(half))
    temp(half).write_bytes(truth[half][: len(truth[half]) // 2])
    # Killed after the rename, before the record.
    sha = hashlib.sha256(truth[placed]).hexdigest()
    store.note_downloading(placed, temp_name(items[placed], placed), item(placed))
    store.note_placing(placed, items[placed], sha, None)
    temp(placed)  # its folder
    (outbox / items[placed]).write_bytes(truth[placed])
    # Killed between the fsync and the rename.
    sha2 = hashlib.sha256(truth[unplaced]).hexdigest()
    store.note_downloading(unplaced, temp_name(items[unplaced], unplaced), item(unplaced))
    temp(unplaced).write_bytes(truth[unplaced])
    store.note_placing(unplaced, items[unplaced], sha2, None)

    emu.reset_stats()
    reports = pull_until_done(client, store, config, known)
    client.close()
    files = outbox_files(outbox)
    assert sorted(files) == sorted(items.values())
    for file_id, name in items.items():
        assert files[name] == truth[file_id]
    pulled = [fid for r in reports for fid, _ in r.pulled]
    assert sorted(pulled) == sorted(items)
    # What was already safe on disk was recorded, not downloaded again.
    assert emu.stats()["requests"]["read"] < 2 + 2 + 4  # lists, and two downloads


KILLED_SCRIPT = """
import json, sys
from pathlib import Path
from syncd.engine.batches import BatchStore, BatchesConfig, KnownInput, step
from syncd.engine.pull import PullConfig
from syncd.api.options import RetryPolicy
from tests.helpers_client import make_client

url, key, state, outbox, known_file = sys.argv[1:6]
client = make_client(url, key, retry=RetryPolicy(max_attempts=20, initial_backoff=0.05,
                                                 max_backoff=0.5))
store = BatchStore.open(Path(state))
known = {k: KnownInput(**v) for k, v in json.loads(Path(known_file).read_text()).items()}
config = BatchesConfig(pull=PullConfig(Path(outbox)))
while True:
    report = step(client, store, config, known)
    if not report.pulled and not report.errors:
        break
print("done", flush=True)
"""


@pytest.mark.slow
def test_kill_9_mid_pull_then_restart(emulator_factory: Factory, tmp_path: Path) -> None:
    emu = emulator_factory(batch_step_s=0, content_download="provider", latency_ms=40)
    client = make_client(emu.url, emu.api_key, retry=RETRY)
    known = make_results(client, tmp_path / "root", 20, lines=60, pad=2000)
    client.close()
    truth = expected(emu)
    outbox, state = tmp_path / "outbox", tmp_path / "state"
    known_file = tmp_path / "known.json"
    known_file.write_text(json.dumps({k: {"file_id": v.file_id, "sha256": v.sha256}
                                      for k, v in known.items()}))
    script = tmp_path / "pull.py"
    script.write_text(KILLED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, str(script), emu.url, emu.api_key, str(state), str(outbox),
            str(known_file)]

    def landed() -> int:
        return sum(1 for p in outbox.rglob("*.jsonl")) if outbox.exists() else 0

    kills = 0
    for target in (5, 15, 25):
        proc = subprocess.Popen(args, env=env, cwd=str(REPO_ROOT), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda t=target, p=proc: landed() >= t or p.poll() is not None,
                     WAIT_S, f"{target} files pulled")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
            assert proc.stdout is not None
            proc.stdout.close()
    assert kills >= 2
    final = subprocess.run(args, env=env, cwd=str(REPO_ROOT), capture_output=True,
                           timeout=WAIT_S, text=True)
    assert final.returncode == 0 and "done" in final.stdout, final.stderr[-2000:]

    files = outbox_files(outbox)
    assert not [n for n in files if ".syncd-pull-" in n]  # no temp survives
    assert sorted(files.values()) == sorted(truth.values())  # each once, byte-exact
    with BatchStore.open(state) as store:
        assert sorted(p.file_id for p in store.pulls()) == sorted(truth)
        assert not store.in_flight()


# ---- the pure part ---------------------------------------------------------------------------


def _file(file_id: str, created: int, purpose: str = "batch_output") -> RemoteFile:
    return RemoteFile(file_id, 10, created, f"{file_id}.jsonl", purpose)


def _job(batch_id: str, created: int, input_id: str, out: str | None,
         err: str | None = None) -> Batch:
    return Batch(batch_id, "completed", CHAT, input_id, "24h", created, out, err)


def test_names_follow_the_input_and_the_newest_job_wins() -> None:
    config = PullConfig(Path("/outbox"))
    seen = Attribution()
    for job in (_job("b-old", 100, "in-1", "o-old", "e-old"), _job("b-new", 200, "in-1", "o-new"),
                _job("b-foreign", 150, "in-x", "o-foreign")):
        seen.add(job)
    remote = [_file(i, c) for i, c in (("o-old", 101), ("e-old", 101), ("o-new", 201),
                                       ("o-foreign", 151), ("o-orphan", 90))]
    remote.append(_file("file-doc", 50, purpose="file-extract"))
    items = {i.file_id: i for i in plan_pull(remote, seen, {"in-1": "a/b/req.jsonl"},
                                             pulled=["o-orphan"], held={}, config=config)}
    assert set(items) == {"o-old", "e-old", "o-new", "o-foreign"}
    assert (items["o-new"].name, items["o-new"].kind) == ("a/b/req.output.jsonl", "output")
    assert items["e-old"].name == "a/b/req.errors.jsonl"
    assert (items["o-old"].name, items["o-old"].kind) == ("o-old.jsonl", "by_id")
    assert items["o-foreign"].name == "o-foreign.jsonl" and not items["o-foreign"].ours
    assert items["o-new"].ours and items["o-old"].ours
    # A name already holding a newer job's result is not taken by an older one.
    late = plan_pull([_file("o-old", 101)], seen, {"in-1": "a/b/req.jsonl"}, pulled=[],
                     held={"a/b/req.output.jsonl": 200}, config=config)
    assert [(i.name, i.kind) for i in late] == [("o-old.jsonl", "by_id")]


def test_name_helpers() -> None:
    assert result_name("x/requests.jsonl", "output") == "x/requests.output.jsonl"
    assert result_name("requests.jsonl", "errors") == "requests.errors.jsonl"
    name = conflict_name("x/requests.output.jsonl", "file-batch_output-0123456789abcdef")
    assert name == "x/requests.output.conflict-456789abcdef.jsonl"
    assert conflict_name("a.jsonl", "f-123456789012", 1).endswith("-2.jsonl")
    assert not safe_name("../x") and not safe_name("/x") and not safe_name("a//b")
    assert safe_name("a/b.jsonl")
    assert temp_name("a/b.jsonl", "f1") == "a/.syncd-pull-f1.tmp"


def test_outbox_must_be_outside_the_root(tmp_path: Path) -> None:
    """The config refuses an outbox inside the root (pulled files would be synced) or
    holding it, naming the key and its line."""
    from syncd.config import ConfigError, parse_config

    root = tmp_path / "root"
    root.mkdir()

    def problem(outbox: Path, where: Path = root) -> str | None:
        text = (f"project: p\nroot: {where}\nstate_dir: {tmp_path / 'state'}\n"
                f"pull:\n  outbox: {outbox}\n")
        try:
            parse_config(text, source="c.yaml")
        except ConfigError as exc:
            return str(exc)
        return None

    for inside in (root / "outbox", root):
        assert "c.yaml:5: pull.outbox" in (problem(inside) or ""), inside
    assert "c.yaml:5: pull.outbox: holds the root" in (problem(tmp_path, root) or "")
    assert problem(tmp_path / "outbox") is None
