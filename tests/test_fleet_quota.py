"""Three hosts on one account through one Redis never send an upload the quota cannot
take: the ledger admits exactly the free space, the rest wait with status ``quota``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.emulator_fixture import EmulatorHandle
from tests.fleet_helpers import KEY, make_host, mapping_ids, start_reconcile
from tests.redis_fixture import RedisServer, redis_server

__all__ = ["redis_server"]

HOST_FILES = 300


def test_three_hosts_fill_the_quota_exactly_and_wait_for_space(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    redis_server: RedisServer,
) -> None:
    emu = emulator_factory(api_keys=[KEY], max_files=1000, upload_rate=200, read_rate=200,
                           delete_rate=200, rate_limit="off")
    foreign = []
    with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        for i in range(400):
            r = http.post("/files", data={"purpose": "file-extract"},
                          files={"file": (f"foreign-{i}.txt", f"not ours {i}\n".encode())})
            r.raise_for_status()
            foreign.append(r.json()["id"])
    cfgs = [make_host(tmp_path, f"host{i}", HOST_FILES, emu.url, redis_server.url)
            for i in range(3)]
    # The account's quota as the hosts know it; fast pacing: the quota is under test.
    extra = "  max_files: 1000\n  upload_qps: 200\n  read_qps: 200\n  delete_qps: 200\n"
    for cfg in cfgs:
        cfg.write_text(cfg.read_text().replace("limits:\n", "limits:\n" + extra))
    emu.reset_stats()
    procs = [start_reconcile(c) for c in cfgs]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 1, err[-3000:]  # some files wait for space
        reports.append(json.loads(out) if out.startswith("{") else None)
    stats = emu.stats()
    assert stats["mutations"]["upload"] == 600, stats
    assert stats["requests"]["upload"] == 600, "an upload was sent that the quota refused"
    assert len(emu.truth_files(KEY)) == 1000
    waiting = []
    for cfg in cfgs:
        db = sqlite3.connect(cfg.parent / "state" / "state.sqlite3")
        waiting += db.execute("SELECT reason FROM files WHERE status = 'quota'").fetchall()
        db.close()
    assert len(waiting) == 300
    assert all("quota" in reason or "space" in reason for (reason,) in waiting), waiting[:3]
    assert sum(len(mapping_ids(c)) for c in cfgs) == 600

    # Space freed: the waiting files go through, nothing twice.
    with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        for file_id in foreign[:300]:
            http.delete(f"/files/{file_id}").raise_for_status()
    for cfg in cfgs:
        p = start_reconcile(cfg)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    assert sum(len(mapping_ids(c)) for c in cfgs) == 900
    names = [f["filename"] for f in emu.truth_files(KEY)]
    assert len(names) == len(set(names)) == 1000
