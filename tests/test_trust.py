"""What syncd promises when the provider, the clock, the names or a neighbour misbehave.

Every scenario runs the real CLI against the emulator over HTTP and checks the
account's true contents (the emulator's control API, which no fault touches)
against the local tree and the published mapping.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.api.adoption import same_name
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    build_flat_tree,
    read_mapping,
    reconcile,
    run_syncd,
    spawn_reconcile,
    write_config,
)

KEY = "sk-trust-3f9a"


def truth(emu: EmulatorHandle, key: str = KEY) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in emu.truth_files(key)}


def emulator(factory: Callable[..., EmulatorHandle], **flags: Any) -> EmulatorHandle:
    rates = {"upload_rate": 200, "read_rate": 200, "delete_rate": 200}
    return factory(api_keys=[KEY, "sk-other-1"], seed=7, **{**rates, **flags})


def assert_exactly_once(emu: EmulatorHandle, root: Path, mapping_path: Path) -> None:
    """Each local file once remotely under its mapped id; no other file in the account."""
    remote = truth(emu)
    mapping = read_mapping(mapping_path)
    local = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert sorted(mapping) == local
    ids = [m["file_id"] for m in mapping.values()]
    assert len(set(ids)) == len(ids), "two paths share one id"
    orphans = set(remote) - set(ids)
    assert not orphans, f"{len(orphans)} orphan(s) or duplicate(s) on the remote"
    for path, entry in mapping.items():
        f = remote[entry["file_id"]]
        assert same_name(f["filename"], path.rsplit("/", 1)[-1])
        assert f["bytes"] == (root / path).stat().st_size


def upload_foreign(emu: EmulatorHandle, name: str, data: bytes, key: str = KEY) -> str:
    with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {key}"}) as http:
        r = http.post("/files", data={"purpose": "file-extract"}, files={"file": (name, data)})
        r.raise_for_status()
        file_id: str = r.json()["id"]
        return file_id


# ------------------------------------------------------------------ one state per project


def test_a_state_dir_shared_by_two_projects_is_refused(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    c_root, d_root = tmp_path / "c", tmp_path / "d"
    build_flat_tree(c_root, 2, prefix="c")
    build_flat_tree(d_root, 10, prefix="d")
    shared = tmp_path / "shared"
    shared.mkdir()
    c = write_config(shared, c_root, emu, name="c.yaml", project="c")
    d = write_config(shared, d_root, emu, name="d.yaml", project="d",
                     mapping_file=str(tmp_path / "d-mapping.json"))
    assert reconcile(c, KEY).returncode == 0
    c_ids = set(truth(emu))
    assert len(c_ids) == 2

    refused = reconcile(d, KEY)
    assert refused.returncode == 2, refused.output
    assert "belongs to another project" in refused.stderr
    assert "'c'" in refused.stderr and "'d'" in refused.stderr
    assert "Traceback" not in refused.output
    assert set(truth(emu)) == c_ids
    assert sorted(m["file_id"] for m in read_mapping(shared / "mapping.json").values()) == sorted(
        c_ids
    )

    # A shared mapping_file with separate state is refused the same way.
    e_root = tmp_path / "e"
    build_flat_tree(e_root, 3, prefix="e")
    e_dir = tmp_path / "e-state"
    e_dir.mkdir()
    e = write_config(e_dir, e_root, emu, project="e", mapping_file=str(shared / "mapping.json"))
    refused = reconcile(e, KEY)
    assert refused.returncode == 2, refused.output
    assert "mapping_file" in refused.stderr
    assert set(truth(emu)) == c_ids

    # A deliberate move of the root is accepted once, by rebind.
    moved = tmp_path / "c-moved"
    c_root.rename(moved)
    c2 = write_config(shared, moved, emu, name="c.yaml", project="c")
    assert reconcile(c2, KEY).returncode == 2
    assert run_syncd("rebind", c2, key=KEY).returncode == 0
    assert reconcile(c2, KEY).returncode == 0
    assert set(truth(emu)) == c_ids


# ------------------------------------------------------------------ listings and unknown ids


def test_a_listing_that_omits_files_is_not_proof_of_absence(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 500)
    cfg = write_config(tmp_path, root, emu)
    assert reconcile(cfg, KEY).returncode == 0
    before = truth(emu)
    assert len(before) == 500

    emu.configure(fault_list_omit=0.2)
    emu.reset_stats()
    for _ in range(5):
        run = reconcile(cfg, KEY, "--json")
        assert run.returncode == 0, run.output
    stats = emu.stats()
    assert stats["requests"]["upload"] == 0 and stats["requests"]["delete"] == 0
    assert stats["faults"]["list_omit"] > 0
    assert truth(emu) == before
    status = run_syncd("status", cfg, "--json", key=KEY).json
    assert status["last_reconcile"]["inconsistent_listing"] > 0

    # Ten files really deleted on the remote: exactly those come back.
    gone = sorted(before)[:10]
    with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        for file_id in gone:
            http.delete(f"/files/{file_id}").raise_for_status()
    emu.reset_stats()
    assert reconcile(cfg, KEY).returncode == 0
    assert emu.stats()["mutations"]["upload"] == 10
    after = truth(emu)
    assert len(after) == 500
    assert Counter(f["filename"] for f in after.values()) == Counter(
        f["filename"] for f in before.values()
    )
    assert_exactly_once(emu, root, tmp_path / "mapping.json")


def test_an_id_answered_400_is_forgotten_not_retried_forever(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory, unknown_id_status=400)
    root = tmp_path / "root"
    build_flat_tree(root, 6)
    cfg = write_config(tmp_path, root, emu)
    assert reconcile(cfg, KEY).returncode == 0
    mapping = read_mapping(tmp_path / "mapping.json")
    # Someone else deletes two of our files; one of them is gone locally too.
    (kept, dropped) = sorted(mapping)[:2]
    with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        for path in (kept, dropped):
            http.delete(f"/files/{mapping[path]['file_id']}").raise_for_status()
    (root / dropped).unlink()
    first = reconcile(cfg, KEY)
    assert first.returncode == 0, first.output
    second = reconcile(cfg, KEY)
    assert second.returncode == 0, second.output
    assert_exactly_once(emu, root, tmp_path / "mapping.json")
    state = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    assert state.execute("SELECT COUNT(*) FROM garbage").fetchone() == (0,)
    assert state.execute("SELECT 1 FROM files WHERE path = ?", (dropped,)).fetchone() is None


# ------------------------------------------------------------------ exactly once


@pytest.mark.parametrize("skew", [-5.0, 5.0, -600.0])
def test_lost_responses_under_clock_skew_are_adopted_not_duplicated(
    skew: float, tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory, drop_after_store=0.25, clock_offset_s=skew,
                   latency_ms=20)
    root = tmp_path / "root"
    build_flat_tree(root, 120)
    cfg = write_config(tmp_path, root, emu)
    for _ in range(4):
        if reconcile(cfg, KEY).returncode == 0:
            break
    assert reconcile(cfg, KEY).returncode == 0
    assert emu.stats()["faults"]["drop_after_store"] >= 20
    assert_exactly_once(emu, root, tmp_path / "mapping.json")


def test_twin_projects_on_one_key_never_share_or_strand_a_file(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory, drop_after_store=0.3, latency_ms=10)
    pacing = tmp_path / "pacing"
    configs = []
    for name in ("a", "b"):
        where = tmp_path / name
        where.mkdir()
        build_flat_tree(where / "root", 80)  # same names, same sizes in both
        configs.append(write_config(where, where / "root", emu, project=name,
                                    limits={"pacing_dir": str(pacing)}))
    for _ in range(4):
        procs = [spawn_reconcile(c, KEY) for c in configs]
        codes = [p.wait(timeout=240) for p in procs]
        if codes == [0, 0]:
            break
    assert [reconcile(c, KEY).returncode for c in configs] == [0, 0]
    maps = [read_mapping(tmp_path / n / "mapping.json") for n in ("a", "b")]
    ids = [{m["file_id"] for m in mp.values()} for mp in maps]
    assert len(ids[0]) == len(ids[1]) == 80
    assert not ids[0] & ids[1], "an id is in both projects' mappings"
    assert set(truth(emu)) == ids[0] | ids[1], "orphans on the remote"
    assert emu.stats()["faults"]["drop_after_store"] >= 10


def test_a_foreign_look_alike_is_never_adopted_nor_deleted(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(20 * 1024 * 1024)
    (root / "big.txt").write_bytes(data)
    cfg = write_config(tmp_path, root, emu)
    # The state a kill -9 leaves mid-upload: the intent is recorded, the body never left.
    assert reconcile(cfg, KEY, "--dry-run").returncode == 0
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    db.execute(
        "INSERT INTO intents VALUES ('big.txt', 'big.txt', ?, 'x', strftime('%s','now'),"
        " NULL, NULL)",
        (len(data),),
    )
    db.commit()
    db.close()
    # Meanwhile another tool uploads a file of the same name and size.
    foreign = upload_foreign(emu, "big.txt", os.urandom(len(data)))

    assert reconcile(cfg, KEY).returncode == 0
    mapped = read_mapping(tmp_path / "mapping.json")["big.txt"]["file_id"]
    assert mapped != foreign
    (root / "big.txt").write_bytes(os.urandom(len(data)))
    assert reconcile(cfg, KEY).returncode == 0
    assert foreign in truth(emu)
    assert set(truth(emu)) == {foreign, read_mapping(tmp_path / "mapping.json")["big.txt"][
        "file_id"]}


# ------------------------------------------------------------------ names


def test_odd_names_sync_once_or_are_explained(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 5)
    odd = ['say "hi".txt', "two\nlines.txt", "bell\x07.txt", "back\\slash.txt"]
    for name in odd:
        (root / name).write_text(f"content of {name!r}\n", "utf-8")
    bad = os.fsencode(root) + b"/caf\xe9.txt"
    with open(bad, "wb") as fh:
        fh.write(b"latin-1 name\n")
    cfg = write_config(tmp_path, root, emu)

    first = reconcile(cfg, KEY)
    assert first.returncode == 1, first.output  # one file could not be synced: says which
    assert "Traceback" not in first.output
    mapping = read_mapping(tmp_path / "mapping.json")
    assert set(odd) <= set(mapping)
    assert len(mapping) == 5 + len(odd)
    status = run_syncd("status", cfg, "--json", key=KEY).json
    text = repr(status)
    assert "not valid UTF-8" in text and "caf\\\\xe9.txt" in text
    ids = {p: m["file_id"] for p, m in mapping.items()}

    emu.reset_stats()
    for _ in range(3):
        again = reconcile(cfg, KEY)
        assert again.returncode == 1
    assert emu.stats()["requests"]["upload"] == 0
    assert emu.stats()["requests"]["delete"] == 0
    assert {p: m["file_id"] for p, m in read_mapping(tmp_path / "mapping.json").items()} == ids
    remote = truth(emu)
    # Stored as sent (percent-encoded) or decoded again: either way it is the same name.
    assert all(same_name(remote[ids[n]]["filename"], n) for n in odd)
    assert len(remote) == 5 + len(odd)


# ------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_publishes_what_was_confirmed_and_exits_130(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator(emulator_factory, latency_ms=100, upload_rate=20)
    root = tmp_path / "root"
    build_flat_tree(root, 200)
    cfg = write_config(tmp_path, root, emu, rate=20)
    proc = spawn_reconcile(cfg, KEY, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    from tests.helpers import wait_for

    wait_for(lambda: emu.stats()["mutations"]["upload"] >= 20, timeout=60)
    proc.send_signal(2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert b"interrupted" in out + err
    mapping = read_mapping(tmp_path / "mapping.json")
    remote = truth(emu)
    assert 20 <= len(mapping) < 200
    # Everything uploaded is mapped (in-flight calls finished and were recorded).
    assert {m["file_id"] for m in mapping.values()} == set(remote)
    assert reconcile(cfg, KEY).returncode == 0
    assert_exactly_once(emu, root, tmp_path / "mapping.json")
