"""What a run reads is the file the scan approved, opened once, inside the root.

A neighbour who can write into the root may re-point a link, swap a folder for a link
or put a named pipe where a file was, between the scan and the read. Each scenario
runs the real CLI against the emulator over HTTP and checks what the account really
holds (every remote file's bytes, through the emulator's control listing) and what the
mapping says. The window after the scan is made deterministic by the emulator's
latency: a run lists the account after its scan, and the change is made while that
listing is held.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.config import DEFAULT_EXCLUDE
from tests.crash_helpers import kill9
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    read_mapping,
    reconcile,
    spawn_reconcile,
    syncd_cmd,
    syncd_env,
    write_config,
)
from tests.helpers import wait_for

KEY = "sk-open-once-5c1e"
SECRET = b"the neighbour's private key: 0123456789abcdef\n"
# A run that reads a pipe blocks forever; one that does not is done well within this.
BUDGET_S = 20.0


def emulator(factory: Callable[..., EmulatorHandle], **flags: Any) -> EmulatorHandle:
    rates = {"upload_rate": 200, "read_rate": 200, "delete_rate": 200}
    return factory(api_keys=[KEY], **{**rates, **flags})


def remote_contents(emu: EmulatorHandle) -> dict[str, bytes]:
    """Every file of the account (the control listing, past any fault), with its bytes."""
    out = {}
    with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=30) as http:  # fmt: skip
        for f in emu.truth_files(KEY):
            response = http.get(f"/files/{f['id']}/content")
            response.raise_for_status()
            out[f["id"]] = response.content
    return out


def same_mtime(path: Path, like: Path) -> None:
    st = like.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def repoint(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` in one step (a new link renamed over it)."""
    tmp = link.with_name(".relink")
    tmp.symlink_to(target)
    os.rename(tmp, link)


def become_fifo(path: Path) -> None:
    """Replace ``path`` in one step by a named pipe with its size (0) and mtime."""
    tmp = path.with_name(".pipe")
    os.mkfifo(tmp)
    same_mtime(tmp, path)
    os.rename(tmp, path)


def start_held(emu: EmulatorHandle, cfg: Path, latency_ms: float) -> subprocess.Popen[bytes]:
    """A reconcile whose scan is over and whose listing the emulator holds."""
    emu.configure(latency_ms=latency_ms)
    emu.reset_stats()
    proc = spawn_reconcile(cfg, KEY, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # A one-off run reads the account once to see it answers, scans, then lists it.
    wait_for(lambda: emu.stats()["requests"]["read"] >= 2 or proc.poll() is not None,
             timeout=30, what="the run's listing (its scan is over by then)")  # fmt: skip
    assert proc.poll() is None, "the run ended before its listing"
    return proc


def finish(proc: subprocess.Popen[bytes], budget: float = 60) -> tuple[int, dict[str, Any]]:
    """The run's exit code and JSON report; a run still going after ``budget`` fails."""
    try:
        out, err = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        kill9(proc)
        proc.communicate()
        raise AssertionError(f"the run was still going after {budget:.0f} s") from None
    assert out, err.decode(errors="replace")
    return proc.returncode, json.loads(out)


def skipped(report: dict[str, Any]) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in report["skipped"]}


# ------------------------------------------------------------------ nothing from outside


def test_a_link_pointed_outside_after_the_scan_uploads_nothing_from_outside(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    # A decoy no purpose rule takes, with the secret's size and mtime (anyone can copy
    # those without reading it), and a link to it that the scan accepts.
    decoy = root / "decoy.dat"
    decoy.write_bytes(b"x" * len(SECRET))
    same_mtime(decoy, secret)
    (root / "a.txt").write_text("an ordinary file\n")
    link = root / "zz.txt"
    link.symlink_to("decoy.dat")
    cfg = write_config(tmp_path, root, emu)

    proc = start_held(emu, cfg, latency_ms=1500)
    repoint(link, secret)
    code, report = finish(proc)
    emu.configure(latency_ms=0)

    held = remote_contents(emu)
    assert SECRET not in held.values(), "a file from outside the root was uploaded"
    assert sorted(held.values()) == [b"an ordinary file\n"]
    mapping = read_mapping(tmp_path / "mapping.json")
    assert sorted(mapping) == ["a.txt"]
    assert "outside the root" in skipped(report)["zz.txt"], report
    assert code == 0, report

    again = reconcile(cfg, KEY)
    assert again.returncode == 0, again.output
    assert "outside the root" in skipped(again.json)["zz.txt"]
    assert SECRET not in remote_contents(emu).values()


def test_a_folder_swapped_for_a_link_after_the_scan_uploads_nothing_from_outside(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "notes").mkdir(parents=True)
    outside.mkdir()
    secret = outside / "plan.txt"
    secret.write_bytes(SECRET)
    # No link anywhere at scan time: a plain file with the secret's size and mtime.
    decoy = root / "notes" / "plan.txt"
    decoy.write_bytes(b"y" * len(SECRET))
    same_mtime(decoy, secret)
    (root / "a.txt").write_text("an ordinary file\n")
    cfg = write_config(tmp_path, root, emu)

    proc = start_held(emu, cfg, latency_ms=1500)
    (root / "notes").rename(tmp_path / "notes-moved")
    (root / "notes").symlink_to(outside)
    code, report = finish(proc)
    emu.configure(latency_ms=0)

    held = remote_contents(emu)
    assert SECRET not in held.values(), "a file from outside the root was uploaded"
    assert sorted(held.values()) == [b"an ordinary file\n"]
    assert sorted(read_mapping(tmp_path / "mapping.json")) == ["a.txt"]
    assert "symbolic link" in skipped(report).get("notes/plan.txt", ""), report
    assert code == 0, report

    again = reconcile(cfg, KEY)
    assert again.returncode == 0, again.output
    assert SECRET not in remote_contents(emu).values()
    assert sorted(read_mapping(tmp_path / "mapping.json")) == ["a.txt"]


def test_a_link_to_a_file_the_rules_leave_out_or_to_a_folder_is_refused_with_a_reason(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    (root / "private").mkdir(parents=True)
    (root / "cache" / ".tokens").mkdir(parents=True)
    (root / "docs").mkdir()
    hidden = {
        ".decoy": b"a hidden file\n",
        "private/notes.txt": b"an excluded folder's file\n",
        "cache/.tokens/t.txt": b"a file in a hidden folder\n",
        "draft.tmp": b"a temporary file\n",
    }
    for rel, data in hidden.items():
        (root / rel).write_bytes(data)
    (root / "a.txt").write_text("an ordinary file\n")
    links = {"zz.txt": ".decoy", "yy.txt": "private/notes.txt",
             "ww.txt": "cache/.tokens/t.txt", "vv.txt": "draft.tmp"}  # fmt: skip
    for name, target in links.items():
        (root / name).symlink_to(target)
    # A link to a file the rules take still syncs, with its target's content.
    (root / "docs" / "current.txt").symlink_to("../a.txt")
    # A link to a folder is not followed: the folder's files sync where they live.
    (root / "dirlink.md").symlink_to("docs")
    (root / "selflink.txt").symlink_to(".")
    cfg = write_config(tmp_path, root, emu,
                       rules={"exclude": [*DEFAULT_EXCLUDE, "private/**"]})  # fmt: skip

    run = reconcile(cfg, KEY)
    assert run.returncode == 0, run.output
    held = remote_contents(emu)
    leaked = set(hidden.values()) & set(held.values())
    assert not leaked, f"content the rules leave out was uploaded: {leaked}"
    assert sorted(held.values()) == [b"an ordinary file\n"]
    mapping = read_mapping(tmp_path / "mapping.json")
    assert sorted(mapping) == ["a.txt", "docs/current.txt"]
    assert mapping["docs/current.txt"]["file_id"] == mapping["a.txt"]["file_id"]
    reasons = skipped(run.json)
    for name, target in links.items():
        assert f"symlink to {target}" in reasons[name], reasons
        assert "rules leave out" in reasons[name], reasons
    for name in ("dirlink.md", "selflink.txt"):
        assert reasons.get(name, "").startswith("symlink to a folder: not followed"), reasons


# ------------------------------------------------------------------ no hang on a pipe


def test_a_file_become_a_pipe_before_its_hash_does_not_hang_the_run(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    # A run killed once its upload was stored, before it heard back: the next run must
    # hash the file to adopt that upload, after its scan and listing.
    emu = emulator(emulator_factory, latency_ms=1000, drop_after_store=1.0)
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.txt").write_bytes(b"some words\n" * 100_000)
    cfg = write_config(tmp_path, root, emu)
    first = spawn_reconcile(cfg, KEY)
    try:
        wait_for(lambda: emu.truth_files(KEY) or first.poll() is not None, timeout=60,
                 what="the upload to be stored")  # fmt: skip
    finally:
        assert kill9(first), "the run ended before it could be killed"
    (stored,) = emu.truth_files(KEY)
    emu.configure(drop_after_store=0)

    proc = start_held(emu, cfg, latency_ms=1500)
    become_fifo(root / "big.txt")
    code, report = finish(proc, BUDGET_S)
    emu.configure(latency_ms=0)
    assert code in (0, 1), report
    assert skipped(report)["big.txt"] == "not a regular file", report
    assert "big.txt" not in read_mapping(tmp_path / "mapping.json")

    # Its upload no longer holds a file of the root: it goes.
    again = reconcile(cfg, KEY, timeout=BUDGET_S)
    assert again.returncode == 0, again.output
    assert stored["id"] not in {f["id"] for f in emu.truth_files(KEY)}
    assert emu.truth_files(KEY) == []


def _generic_with_an_empty_file(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> tuple[EmulatorHandle, Path, Path]:
    """The generic provider takes empty files, so an empty one is uploaded (a pipe has
    its size), next to an ordinary file (two uploads: they run on the worker threads)."""
    emu = emulator(emulator_factory, flavor="openai")
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("an ordinary file\n")
    (root / "empty.txt").write_bytes(b"")
    cfg = write_config(tmp_path, root, emu, api={"provider": "generic"},
                       rules={"purposes": [{"match": "**", "purpose": "assistants"}]})  # fmt: skip
    return emu, root, cfg


def test_a_file_become_a_pipe_before_its_upload_does_not_hang_the_run(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu, root, cfg = _generic_with_an_empty_file(tmp_path, emulator_factory)

    proc = start_held(emu, cfg, latency_ms=1500)
    become_fifo(root / "empty.txt")
    code, report = finish(proc, BUDGET_S)
    emu.configure(latency_ms=0)
    assert code == 0, report
    assert skipped(report)["empty.txt"] == "not a regular file", report
    assert sorted(remote_contents(emu).values()) == [b"an ordinary file\n"]
    assert sorted(read_mapping(tmp_path / "mapping.json")) == ["a.txt"]


def test_a_sigint_ends_a_run_whose_file_became_a_pipe(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu, root, cfg = _generic_with_an_empty_file(tmp_path, emulator_factory)

    proc = start_held(emu, cfg, latency_ms=3000)
    become_fifo(root / "empty.txt")
    # Both uploads have started by the time one reaches the emulator (held 3 s there).
    wait_for(lambda: emu.stats()["requests"]["upload"] >= 1 or proc.poll() is not None,
             timeout=30, what="the first upload")  # fmt: skip
    proc.send_signal(signal.SIGINT)
    code, report = finish(proc, 10)
    emu.configure(latency_ms=0)
    assert code in (0, 130), report
    held = remote_contents(emu)
    assert set(held.values()) <= {b"an ordinary file\n"}
    # What it confirmed is published; the next run finishes the rest.
    assert set(read_mapping(tmp_path / "mapping.json")) <= {"a.txt"}
    again = reconcile(cfg, KEY, timeout=BUDGET_S)
    assert again.returncode == 0, again.output
    assert sorted(read_mapping(tmp_path / "mapping.json")) == ["a.txt"]
    assert skipped(again.json)["empty.txt"] == "not a regular file"


# ------------------------------------------------------------------ an unreadable file


def _unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` as a process that permissions apply to (root without its overrides)."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv to run without root's file permission overrides")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]


def test_an_unreadable_file_is_an_error_that_says_so_not_a_change(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("an ordinary file\n")
    locked = root / "locked.txt"
    locked.write_text("nobody may read this yet\n")
    locked.chmod(0)
    cfg = write_config(tmp_path, root, emu)

    def run() -> tuple[int, dict[str, Any]]:
        proc = subprocess.run(_unprivileged(syncd_cmd("reconcile", cfg, "--json")),
                              env=syncd_env(KEY), capture_output=True, timeout=120)  # fmt: skip
        assert proc.stdout, proc.stderr.decode(errors="replace")
        return proc.returncode, json.loads(proc.stdout)

    code, report = run()
    not_synced = {n["path"]: (n["status"], n["reason"]) for n in report["not_synced"]}
    assert not_synced == {"locked.txt": ("error", "cannot read: Permission denied")}, report
    assert code == 1
    assert sorted(read_mapping(tmp_path / "mapping.json")) == ["a.txt"]
    assert sorted(remote_contents(emu).values()) == [b"an ordinary file\n"]

    # Looked at again on every run: readable, it syncs.
    locked.chmod(0o644)
    code, report = run()
    assert code == 0, report
    assert sorted(read_mapping(tmp_path / "mapping.json")) == ["a.txt", "locked.txt"]


def test_a_folder_it_cannot_read_is_named_with_why_and_deletes_nothing(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    (root / "shut").mkdir(parents=True)
    (root / "a.txt").write_text("an ordinary file\n")
    (root / "shut" / "x.txt").write_text("synced, then its folder is shut\n")
    cfg = write_config(tmp_path, root, emu)

    def run(command: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(_unprivileged(syncd_cmd(command, cfg, *extra)), env=syncd_env(KEY),
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    assert run("reconcile").returncode == 0
    synced = read_mapping(tmp_path / "mapping.json")
    assert sorted(synced) == ["a.txt", "shut/x.txt"]

    (root / "shut").chmod(0)
    try:
        for extra in ((), ("--confirm-deletes",)):  # no consent deletes what was not read
            refused = run("reconcile", *extra)
            assert refused.returncode == 3, refused.stderr
        shown = run("status").stdout
        assert "not read: 1" in shown and "shut/: Permission denied" in shown, shown
        assert "once the scan reads everything" in shown, shown
        data = json.loads(run("status", "--json").stdout)
        assert data["scan"]["error_examples"] == ["shut/: Permission denied"], data["scan"]
        assert {f["id"] for f in emu.files()} == {e["file_id"] for e in synced.values()}
    finally:
        (root / "shut").chmod(0o755)
    assert run("reconcile").returncode == 0
    assert read_mapping(tmp_path / "mapping.json") == synced
    assert "not read" not in run("status").stdout
