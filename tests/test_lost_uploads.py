"""An upload whose response is lost is found again, and never confused with a file
someone else put there, nor sent twice because one listing left it out."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    build_flat_tree,
    fast_emulator,
    name_bytes,
    read_mapping,
    reconcile,
    remote_files,
    spawn_reconcile,
    write_config,
)
from tests.helpers import wait_for


def _upload_by_hand(emu: EmulatorHandle, name: str, data: bytes) -> str:
    with httpx.Client(base_url=emu.url, timeout=30,
                      headers={"Authorization": f"Bearer {emu.api_key}"}) as client:  # fmt: skip
        for _ in range(20):  # the emulator drops responses here too: until one comes back
            before = {f["id"] for f in emu.truth_files()}
            try:
                response = client.post("/files", data={"purpose": "file-extract"},
                                        files={"file": (name, data)})  # fmt: skip
                return str(response.json()["id"])
            except httpx.TransportError:
                made = [f["id"] for f in emu.truth_files() if f["id"] not in before]
                if made:
                    return str(made[0])
    raise AssertionError("could not upload by hand")


def test_a_file_uploaded_by_hand_is_never_taken_for_a_lost_upload(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    # Every upload's response is lost after the file is stored: syncd must find its own
    # among the files listed, where one of the same name and size, uploaded by someone
    # a second before, sits inside the same time window (and is the earlier of the two).
    emu = fast_emulator(emulator_factory, drop_after_store=1.0)
    root = tmp_path / "root"
    root.mkdir()
    names = [f"doc-{i}.txt" for i in range(3)]
    theirs = {name: _upload_by_hand(emu, name, b"THEIRS") for name in names}
    for name in names:
        (root / name).write_bytes(b"OURS!\n")
    (root / "keep.txt").write_bytes(b"kept, so the folder is never empty")
    cfg = write_config(tmp_path, root, emu)
    stamped = max(int(f["created_at"]) for f in emu.truth_files())
    wait_for(lambda: time.time() >= stamped + 1, timeout=5, what="the next second")

    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 0, run.output
    mapped = read_mapping(tmp_path / "mapping.json")
    ours = {name: mapped[name]["file_id"] for name in names}
    assert not set(ours.values()) & set(theirs.values()), "a hand-uploaded file was adopted"
    kept = mapped["keep.txt"]["file_id"]
    assert set(remote_files(emu)) == {*ours.values(), *theirs.values(), kept}

    # Deleting the local files deletes our copies, never theirs.
    for name in names:
        (root / name).unlink()
    run = reconcile(cfg, emu.api_key, "--max-delete", "100%")
    assert run.returncode == 0, run.output
    assert set(remote_files(emu)) == {*theirs.values(), kept}


def test_lost_responses_and_a_listing_that_omits_files_make_no_copies(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    # Half the responses lost after the file is stored, and every listing leaving out
    # 30 % of what it has. One upload at a time, so the seeded faults fall alike on
    # every run of this test.
    emu = fast_emulator(emulator_factory, drop_after_store=0.5, fault_list_omit=0.3)
    root = tmp_path / "root"
    paths = build_flat_tree(root, 40)
    cfg = write_config(tmp_path, root, emu, limits={"workers": 1})

    first = reconcile(cfg, emu.api_key)
    assert first.returncode in (0, 1), first.output  # 1: a file lost every try, left to retry
    assert emu.stats()["faults"]["drop_after_store"] >= 10
    emu.configure(drop_after_store=0, fault_list_omit=0)
    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 0, run.output

    stored = name_bytes(remote_files(emu))
    twice = sorted(name for (name, _size), n in stored.items() if n > 1)
    assert twice == [], f"stored more than once: {twice}"
    assert sum(stored.values()) == len(paths)
    assert sorted(read_mapping(tmp_path / "mapping.json")) == sorted(paths)


def test_a_copy_no_listing_showed_in_time_is_deleted_by_the_next_run(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    # Listings that leave out 95 % of what they have: a lost upload is often not seen in
    # five looks and is sent again. The copy the lost attempt stored is ours; the next
    # run, with listings whole again, finds it and deletes it.
    emu = fast_emulator(emulator_factory, drop_after_store=0.5, fault_list_omit=0.95)
    root = tmp_path / "root"
    paths = build_flat_tree(root, 6)
    cfg = write_config(tmp_path, root, emu, limits={"workers": 1})
    first = reconcile(cfg, emu.api_key)
    assert first.returncode in (0, 1), first.output
    emu.configure(drop_after_store=0, fault_list_omit=0)
    copies = sum(n - 1 for n in name_bytes(remote_files(emu)).values())
    assert copies >= 1, "the faults made no copy: this test shows nothing"

    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 0, run.output
    stored = name_bytes(remote_files(emu))
    assert max(stored.values()) == 1, f"copies left: {stored}"
    assert sorted(read_mapping(tmp_path / "mapping.json")) == sorted(paths)
    assert set(remote_files(emu)) == {e["file_id"] for e in
                                      read_mapping(tmp_path / "mapping.json").values()}  # fmt: skip


def test_every_copy_of_a_file_whose_responses_were_all_lost_is_cleaned_up(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    # Every response lost and no listing showing anything new: each of the attempts
    # stores a copy, and the run gives up on the file. Once the provider is well, the
    # next run adopts one copy and deletes the others: one file on the remote.
    emu = fast_emulator(emulator_factory, drop_after_store=1.0, fault_list_omit=1.0)
    root = tmp_path / "root"
    root.mkdir()
    (root / "keep.txt").write_text("keep\n")
    cfg = write_config(tmp_path, root, emu)
    assert reconcile(cfg, emu.api_key).returncode == 1  # the file is left to the next run
    assert len(emu.truth_files()) >= 2
    emu.configure(drop_after_store=0, fault_list_omit=0)

    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 0, run.output
    assert run.json["adopted"] == 1
    mapped = read_mapping(tmp_path / "mapping.json")["keep.txt"]["file_id"]
    assert set(remote_files(emu)) == {mapped}


def test_a_file_deleted_while_its_lost_upload_is_retried_is_not_a_crash(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    # The first attempt's response is lost and no listing shows the file: while syncd
    # looks (seconds), the file is deleted, so the next attempt finds nothing to send.
    emu = fast_emulator(emulator_factory, drop_after_store=1.0, fault_list_omit=1.0)
    root = tmp_path / "root"
    root.mkdir()
    (root / "doomed.txt").write_text("doomed\n")
    (root / "keep.txt").write_text("keep\n")
    cfg = write_config(tmp_path, root, emu, limits={"workers": 1})
    proc = spawn_reconcile(cfg, emu.api_key, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: any(f["filename"] == "doomed.txt" for f in emu.truth_files()),
             timeout=60, what="the first attempt stored")  # fmt: skip
    (root / "doomed.txt").unlink()
    out, err = proc.communicate(timeout=120)
    assert b"upload crashed" not in err and b"Traceback" not in err, err.decode()[-2000:]
    report = json.loads(out)
    doomed = [n for n in report["not_synced"] if n["path"] == "doomed.txt"]
    assert doomed and doomed[0]["status"] == "changing", report["not_synced"]

    emu.configure(drop_after_store=0, fault_list_omit=0)
    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 0, run.output
    assert sorted(read_mapping(tmp_path / "mapping.json")) == ["keep.txt"]
    assert [f["filename"] for f in remote_files(emu).values()] == ["keep.txt"]


def test_a_copy_made_before_a_send_that_failed_otherwise_is_still_cleaned_up(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    # An account of 2 files holding 1. x.txt's first attempt is stored but its response
    # lost, and no listing shows it; the attempt sent again is refused: the account is
    # full, of that very copy. The copy must not stay behind, untracked, holding the
    # slot: the next run finds it, deletes it, and x.txt goes up.
    emu = fast_emulator(emulator_factory, max_files=2)
    root = tmp_path / "root"
    root.mkdir()
    (root / "keep.txt").write_text("keep\n")
    cfg = write_config(tmp_path, root, emu)
    assert reconcile(cfg, emu.api_key).returncode == 0
    emu.configure(drop_after_store=1.0, fault_list_omit=1.0)
    (root / "x.txt").write_text("x\n")
    assert reconcile(cfg, emu.api_key).returncode == 1
    assert len(emu.truth_files()) == 2  # the copy took the last slot
    emu.configure(drop_after_store=0, fault_list_omit=0)

    for _ in range(2):  # the first run frees the slot, the same or the next one uploads
        run = reconcile(cfg, emu.api_key)
        if run.returncode == 0:
            break
    assert run.returncode == 0, run.output
    mapped = {e["file_id"] for e in read_mapping(tmp_path / "mapping.json").values()}
    assert sorted(read_mapping(tmp_path / "mapping.json")) == ["keep.txt", "x.txt"]
    assert set(remote_files(emu)) == mapped
