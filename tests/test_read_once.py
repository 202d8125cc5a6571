"""A file no other file could share content with is read once: hashed as it is uploaded.

The scan hashes a new or changed file only when another candidate, or a record holding
a remote file, has its size and purpose. Any other is uploaded unhashed and the state
records the sha256 of the bytes that were sent. These tests run the real CLI against the
emulator and check the remote's bytes, the mapping and the state.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.crash_helpers import kill9
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import read_mapping, reconcile, spawn_reconcile, write_config
from tests.helpers import wait_for

KEY = "sk-read-once"
MB = 1024 * 1024


def emulator(factory: Callable[..., EmulatorHandle], **flags: object) -> EmulatorHandle:
    return factory(api_keys=[KEY], upload_rate=200, read_rate=200, delete_rate=200, **flags)


def text(size: int, seed: int) -> bytes:
    """Printable text of ``size`` bytes, different for each seed."""
    letters = b"abcdefghijklmnopqrstuvwxyz \n"
    table = bytes(letters[b % len(letters)] for b in range(256))
    return random.Random(seed).randbytes(size).translate(table)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def remote_sha(emu: EmulatorHandle, file_id: str) -> str:
    response = httpx.get(f"{emu.url}/files/{file_id}/content",
                         headers={"Authorization": f"Bearer {KEY}"}, timeout=30)  # fmt: skip
    response.raise_for_status()
    return sha(response.content)


def open_intents(state_dir: Path) -> tuple[int, int]:
    db = sqlite3.connect(state_dir / "state.sqlite3")
    try:
        intents = db.execute("SELECT COUNT(*) FROM intents").fetchone()[0]
        stats = db.execute("SELECT COUNT(*) FROM intent_stats").fetchone()[0]
    finally:
        db.close()
    return intents, stats


def test_a_file_of_unique_size_is_hashed_while_it_is_uploaded(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    big = text(3 * MB, 1)
    (root / "big.txt").write_bytes(big)
    # Two copies of one content: their hashes decide sharing, so the scan takes them.
    (root / "a.txt").write_bytes(b"same words\n" * 50)
    (root / "b.txt").write_bytes(b"same words\n" * 50)
    cfg = write_config(tmp_path, root, emu)

    run = reconcile(cfg, KEY)
    assert run.returncode == 0, run.output
    assert run.json["hashed"] == 2, "the scan read the file that nothing could share"
    mapping = read_mapping(tmp_path / "mapping.json")
    entry = mapping["big.txt"]
    assert entry["sha256"] == sha(big) == remote_sha(emu, entry["file_id"])
    assert mapping["a.txt"]["file_id"] == mapping["b.txt"]["file_id"]
    assert len(emu.truth_files(KEY)) == 2
    assert open_intents(tmp_path / "state") == (0, 0)

    # Unchanged: nothing read, nothing sent.
    again = reconcile(cfg, KEY)
    assert again.returncode == 0, again.output
    assert (again.json["hashed"], again.json["uploaded"]) == (0, 0)

    # Touched, same bytes: its record has its size, so it is hashed and found unchanged.
    os.utime(root / "big.txt", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    touched = reconcile(cfg, KEY)
    assert touched.returncode == 0, touched.output
    assert (touched.json["hashed"], touched.json["uploaded"]) == (1, 0)
    assert read_mapping(tmp_path / "mapping.json")["big.txt"]["file_id"] == entry["file_id"]

    # Changed to a size nothing has: sent unhashed, recorded with the new bytes' hash.
    edited = text(3 * MB + 7, 2)
    (root / "big.txt").write_bytes(edited)
    changed = reconcile(cfg, KEY)
    assert changed.returncode == 0, changed.output
    assert (changed.json["hashed"], changed.json["uploaded"]) == (0, 1)
    now = read_mapping(tmp_path / "mapping.json")["big.txt"]
    assert now["file_id"] != entry["file_id"]
    assert now["sha256"] == sha(edited) == remote_sha(emu, now["file_id"])
    assert {f["id"] for f in emu.truth_files(KEY)} == {now["file_id"],
                                                       mapping["a.txt"]["file_id"]}
    # A copy of it made later is found by size and shares its remote file.
    (root / "copy.txt").write_bytes(edited)
    copied = reconcile(cfg, KEY)
    assert copied.returncode == 0, copied.output
    assert (copied.json["hashed"], copied.json["uploaded"]) == (1, 0)
    assert read_mapping(tmp_path / "mapping.json")["copy.txt"]["file_id"] == now["file_id"]


def test_a_lost_response_for_an_unhashed_file_is_adopted_not_sent_again(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory, drop_after_store=1.0)
    root = tmp_path / "root"
    root.mkdir()
    data = text(2 * MB, 3)
    (root / "big.txt").write_bytes(data)
    cfg = write_config(tmp_path, root, emu)

    run = reconcile(cfg, KEY)
    assert run.returncode == 0, run.output
    assert emu.stats()["faults"]["drop_after_store"] == 1
    assert run.json["hashed"] == 0
    (stored,) = emu.truth_files(KEY)
    entry = read_mapping(tmp_path / "mapping.json")["big.txt"]
    assert entry["file_id"] == stored["id"]
    assert entry["sha256"] == sha(data) == remote_sha(emu, stored["id"])
    assert open_intents(tmp_path / "state") == (0, 0)

    emu.configure(drop_after_store=0)
    again = reconcile(cfg, KEY)
    assert (again.returncode, again.json["uploaded"], again.json["hashed"]) == (0, 0, 0)


def _killed_after_the_body_left(emu: EmulatorHandle, cfg: Path) -> str:
    """A run killed once its upload was stored, before it heard back: its intent (with a
    window, no hash) is all the next run has."""
    proc = spawn_reconcile(cfg, KEY)
    try:
        wait_for(lambda: emu.truth_files(KEY) or proc.poll() is not None, timeout=60,
                 what="the upload to be stored")  # fmt: skip
    finally:
        assert kill9(proc), "the run ended before it could be killed"
    (stored,) = emu.truth_files(KEY)
    emu.configure(latency_ms=0, drop_after_store=0)
    return str(stored["id"])


def test_an_unhashed_upload_cut_off_by_a_kill_is_adopted_by_the_next_run(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    # Slow answers and lost responses: the killed run cannot have recorded the outcome.
    emu = emulator(emulator_factory, latency_ms=1000, drop_after_store=1.0)
    root = tmp_path / "root"
    root.mkdir()
    data = text(2 * MB, 4)
    (root / "big.txt").write_bytes(data)
    cfg = write_config(tmp_path, root, emu)
    stored = _killed_after_the_body_left(emu, cfg)
    assert open_intents(tmp_path / "state") == (1, 1)

    run = reconcile(cfg, KEY)
    assert run.returncode == 0, run.output
    assert run.json["uploaded"] == 0
    assert [f["id"] for f in emu.truth_files(KEY)] == [stored]
    entry = read_mapping(tmp_path / "mapping.json")["big.txt"]
    assert entry["file_id"] == stored
    assert entry["sha256"] == sha(data) == remote_sha(emu, stored)
    assert open_intents(tmp_path / "state") == (0, 0)


def test_an_unhashed_upload_cut_off_by_a_kill_is_not_adopted_for_a_changed_file(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory, latency_ms=1000, drop_after_store=1.0)
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.txt").write_bytes(text(2 * MB, 5))
    cfg = write_config(tmp_path, root, emu)
    stored = _killed_after_the_body_left(emu, cfg)
    # Same name and size, other bytes: only the stat the intent kept tells them apart.
    edited = text(2 * MB, 6)
    (root / "big.txt").write_bytes(edited)

    run = reconcile(cfg, KEY)
    assert run.returncode == 0, run.output
    entry = read_mapping(tmp_path / "mapping.json")["big.txt"]
    assert entry["file_id"] != stored
    assert [f["id"] for f in emu.truth_files(KEY)] == [entry["file_id"]], "stale upload kept"
    assert entry["sha256"] == sha(edited) == remote_sha(emu, entry["file_id"])
