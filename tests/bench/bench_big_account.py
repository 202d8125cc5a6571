"""A converged OpenAI account of FILES synced files: a no-op reconcile beside the SDK's listing.

The account is seeded through the emulator's own store and syncd's own state (one real
reconcile of the first file binds the state to its project; the rest are written as
rows), so 100,000 files take seconds, not 100,000 uploads. The emulator runs
``--flavor openai --max-files 1000000`` with rate limits off: both contenders pay the
listing, not the limiter. In one run, each contender its own process, in turn:

- the openai SDK listing the account (``client.files.list(limit=10000)``, every page),
  the whole process (import included) and, in the row below it, the listing alone;
- ``syncd reconcile`` on the unchanged tree (a no-op: nothing uploaded, deleted or
  hashed), wall time and peak RSS (the process's VmHWM);
- ``syncd run``: spawn to READY=1 (and to the end of its catch-up), idle CPU and RSS,
  and one edited file to the mapping.

Targets (issue 24): no-op reconcile <= 1.1x the SDK's listing + 0.3 s, <= 150 MB;
daemon READY <= 5 s, idle CPU <= 1 % of a core, RSS <= 200 MB, an edit in the mapping
within settle_s + 0.5 s. Exits 1 when one is missed.

    python tests/bench/bench_big_account.py [--files 100000] [--reps 3] [--idle-s 20]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from syncd.emulator.store import Store, account_of  # noqa: E402
from tests.bench.bench_big_tree import timed  # noqa: E402
from tests.bench.bench_daemon import Daemon, idle_cpu  # noqa: E402
from tests.emulator_fixture import EmulatorHandle  # noqa: E402
from tests.helpers import wait_for  # noqa: E402

KEY_ENV = "SYNCD_BENCH_API_KEY"
KEY = "sk-bench"
SETTLE_S = 1.0
EMULATOR_FLAGS = ["--flavor", "openai", "--max-files", "1000000", "--rate-limit", "off"]

SDK_LIST = """
import os, sys, time
t0 = time.monotonic()
from openai import OpenAI
client = OpenAI(api_key=os.environ["SYNCD_BENCH_API_KEY"], base_url=sys.argv[1])
t1 = time.monotonic()
n = sum(1 for _ in client.files.list(limit=10000))
print(n, time.monotonic() - t1)
"""

# (path, size, mtime_ns, inode, sha256) of one local file.
Row = tuple[str, int, int, int, str]


def write_tree(root: Path, start: int, stop: int) -> list[Row]:
    rows = []
    for i in range(start, stop):
        rel = f"d{i % 100:02d}/doc-{i:06d}.txt"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = f"document {i}\n".encode() * 4
        path.write_bytes(body)
        st = path.stat()
        rows.append((rel, st.st_size, st.st_mtime_ns, st.st_ino, hashlib.sha256(body).hexdigest()))
    return rows


def write_config(work: Path, root: Path, url: str) -> Path:
    data = {
        "project": "bench-big-account",
        "root": str(root),
        "state_dir": str(work / "state"),
        "mapping_file": str(work / "mapping.json"),
        "api": {"provider": "openai", "base_url": url, "api_key_env": KEY_ENV},
        "limits": {"upload_qps": 500, "read_qps": 500, "delete_qps": 500,
                   "pacing_dir": str(work / "pacing")},
        "sync": {"settle_s": SETTLE_S, "max_delete": "1%"},
        "logging": {"format": "json", "level": "warning"},
    }  # fmt: skip
    path = work / "syncd.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def seed(work: Path, rows: list[Row], purpose: str) -> None:
    """The files of ``rows`` as synced: in the emulator's store (stopped), in the state
    and in the claims registry, with ids and times like the provider's."""
    now = int(time.time()) - 3600
    ids = [f"file-bench{i:019d}" for i in range(len(rows))]
    store = Store(work / "emu")  # its schema, then rows the way commit_upload writes them
    store.close()
    with sqlite3.connect(work / "emu" / "meta.sqlite3") as db:
        db.executemany(
            "INSERT INTO files (id, account, bytes, created_at, filename, purpose)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            ((fid, account_of(KEY), r[1], now + i // 1000, r[0].rsplit("/", 1)[1], purpose)
             for i, (fid, r) in enumerate(zip(ids, rows, strict=True))),
        )  # fmt: skip
    with sqlite3.connect(work / "state" / "state.sqlite3") as db:
        db.executemany(
            "INSERT INTO files (path, status, file_id, purpose, remote_name, size, mtime_ns,"
            " inode, sha256, uploaded_at, updated_at) VALUES (?, 'synced', ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?)",
            ((r[0], fid, purpose, r[0].rsplit("/", 1)[1], r[1], r[2], r[3], r[4],
              float(now), float(now)) for fid, r in zip(ids, rows, strict=True)),
        )  # fmt: skip
    owner = (work / "state" / "owner").read_text().strip()
    (claims,) = (work / "pacing").glob("*-claims.sqlite3")
    with sqlite3.connect(claims) as db:
        db.executemany("INSERT INTO claims VALUES (?, ?, ?)", ((f, owner, now) for f in ids))


def build(work: Path, files: int) -> tuple[EmulatorHandle, Path]:
    """The tree, the emulator and a converged state of ``files`` files."""
    root = work / "root"
    write_tree(root, 0, 1)
    emu = EmulatorHandle(work / "emu", [KEY], EMULATOR_FLAGS, work / "emulator.log")
    config = write_config(work, root, emu.url)
    run_syncd(["reconcile", "-c", str(config), "--json"])
    with sqlite3.connect(work / "state" / "state.sqlite3") as db:
        (purpose,) = db.execute("SELECT purpose FROM files").fetchone()
    emu.stop()
    started = time.monotonic()
    rows = write_tree(root, 1, files)
    seed(work, rows, purpose)
    print(f"seeded {files:,} files in {time.monotonic() - started:.1f} s", flush=True)
    emu.start()
    config = write_config(work, root, emu.url)  # the same port, but say so
    return emu, config


def env() -> dict[str, str]:
    return {**os.environ, KEY_ENV: KEY, "PYTHONPATH": str(REPO)}


def run_syncd(args: list[str]) -> tuple[float, float, dict[str, Any]]:
    wall, mb, out = timed([sys.executable, "-m", "syncd", *args], env())
    return wall, mb, json.loads(out)


def sdk_list(url: str, files: int) -> tuple[float, float, float]:
    wall, mb, out = timed([sys.executable, "-c", SDK_LIST, url], env())
    count, listing = out.split()
    assert int(count) == files, out
    return wall, mb, float(listing)


def noop(config: Path) -> tuple[float, float]:
    wall, mb, report = run_syncd(["reconcile", "-c", str(config), "--json"])
    assert report["uploaded"] == report["deleted"] == report["hashed"] == 0, report
    return wall, mb


def mapped_id(mapping: Path, rel: str) -> str | None:
    try:
        text = mapping.read_text()
    except OSError:
        return None
    at = text.find(json.dumps(rel) + ":")  # one file per line: no need to parse 100,000
    if at < 0:
        return None
    line = text[at:text.index("\n", at)].rstrip(",")
    entry: dict[str, Any] = json.loads("{" + line + "}")[rel]
    return str(entry["file_id"])


def daemon(work: Path, config: Path, idle_s: float) -> dict[str, float]:
    cfg = yaml.safe_load(config.read_text())
    cfg["logging"]["level"] = "info"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    d = Daemon(config, work / "daemon.log", timeout=300)
    try:
        time.sleep(2)  # past the catch-up's tail (vector and batch steps)
        cpu = idle_cpu(d.proc.pid, idle_s)
        rss = psutil.Process(d.proc.pid).memory_info().rss / 2**20
        rel = "d07/doc-000007.txt"
        mapping = work / "mapping.json"
        before = mapped_id(mapping, rel)
        (work / "root" / rel).write_text(f"edited at {time.time_ns()}\n")
        t0 = time.monotonic()
        wait_for(lambda: mapped_id(mapping, rel) not in (None, before), timeout=60, interval=0.01)
        edit = time.monotonic() - t0
        hwm = psutil.Process(d.proc.pid).memory_full_info().rss / 2**20
        return {"ready": d.ready_s, "caught_up": d.caught_up_s, "cpu": cpu,
                "rss": max(rss, hwm), "edit": edit}
    finally:
        d.stop()


def verdict(failed: list[str]) -> Callable[[bool, str], str]:
    def check(ok: bool, what: str) -> str:
        if not ok:
            failed.append(what)
        return "ok" if ok else "MISSED"

    return check


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--no-daemon", action="store_true")
    ap.add_argument("--keep", type=Path, help="build under this folder and keep it")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-big-account-", dir=args.keep))
    failed: list[str] = []
    check = verdict(failed)
    emu, config = build(work, args.files)
    try:
        sdk_list(emu.url, args.files)  # warm the server's cache and the disk alike for both
        noop(config)
        sdk: list[tuple[float, float, float]] = []
        ours: list[tuple[float, float]] = []
        for _ in range(args.reps):
            sdk.append(sdk_list(emu.url, args.files))
            ours.append(noop(config))
        ds = None if args.no_daemon else daemon(work, config, args.idle_s)
    finally:
        emu.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    sdk_s = statistics.median(s[0] for s in sdk)
    our_s = statistics.median(o[0] for o in ours)
    our_mb = max(o[1] for o in ours)
    budget = 1.1 * sdk_s + 0.3
    print(f"\n{args.files:,} synced files, api.provider openai, emulator on loopback "
          f"(rate limits off); median of {args.reps}, each its own process")  # fmt: skip
    print(f"{'contender':<40} {'wall s':>7} {'peak MB':>8}  runs (s)")
    print(f"{'openai SDK: import + list every page':<40} {sdk_s:>7.2f} "
          f"{max(s[1] for s in sdk):>8.0f}  {' / '.join(f'{s[0]:.2f}' for s in sdk)}")
    print(f"{'  the listing alone':<40} {statistics.median(s[2] for s in sdk):>7.2f}")
    print(f"{'syncd reconcile, no-op':<40} {our_s:>7.2f} {our_mb:>8.0f}  "
          f"{' / '.join(f'{o[0]:.2f}' for o in ours)}")
    print(f"  target <= {budget:.2f} s (1.1x SDK + 0.3 s): "
          f"{check(our_s <= budget, 'no-op time')}; <= 150 MB: {check(our_mb <= 150, 'no-op RSS')}")
    if ds is not None:
        print(f"syncd run: READY {ds['ready']:.2f} s ({check(ds['ready'] <= 5, 'READY')}; "
              f"caught up at {ds['caught_up']:.2f} s), "
              f"idle CPU {ds['cpu']:.2f} % ({check(ds['cpu'] <= 1, 'idle CPU')}), "
              f"RSS {ds['rss']:.0f} MB ({check(ds['rss'] <= 200, 'daemon RSS')}), "
              f"one edit to the mapping {ds['edit']:.2f} s "
              f"({check(ds['edit'] <= SETTLE_S + 0.5, 'edit latency')}; settle_s {SETTLE_S})")
    if failed:
        print("missed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
