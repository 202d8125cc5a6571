"""``syncd run`` against the emulator, both as real processes: latency, idle cost, restart.

(a) event-to-mapping latency for single files dropped one at a time into an idle
    daemon (the floor is settle_s: a file is released only once it is that old);
(b) CPU use of an idle daemon holding ``--files`` synced files, inotify and polling;
(c) restart time on the unchanged tree: spawn to READY=1 (read from a real
    NOTIFY_SOCKET), and how many files the catch-up reconcile hashed;
(d) storm: ``--storm`` tiny files created at once with the emulator and syncd at their
    default limits (20 uploads/s): time to sync all, peak rate per class, 429s.

    python tests/bench/bench_daemon.py [--files 10000] [--idle-s 60] [--drops 30]
                                       [--storm 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.emulator_fixture import EmulatorHandle  # noqa: E402
from tests.helpers import NotifySocket  # noqa: E402

KEY_ENV = "SYNCD_BENCH_API_KEY"
KEY = "sk-bench"
RATE = 500


def wait_for(cond: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def write_config(where: Path, root: Path, url: str, *, settle_s: float, mode: str) -> Path:
    data = {
        "project": "bench",
        "root": str(root),
        "state_dir": str(where / "state"),
        "mapping_file": str(where / "mapping.json"),
        "api": {"base_url": url, "api_key_env": KEY_ENV},
        "limits": {"upload_qps": RATE, "read_qps": RATE, "delete_qps": RATE,
                   "pacing_dir": str(where / "pacing"), "max_files": 100_000},
        "sync": {"settle_s": settle_s, "max_settle_s": 30},
        "watch": {"mode": mode, "poll_interval_s": 5},
        "logging": {"format": "json", "level": "info"},
    }
    path = where / f"syncd-{mode}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Daemon:
    def __init__(self, config: Path, log: Path, timeout: float = 900) -> None:
        self.notify = NotifySocket()
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(REPO), KEY_ENV: KEY,
               "NOTIFY_SOCKET": self.notify.path}
        env.pop("WATCHDOG_USEC", None)
        self.started = time.monotonic()
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(config)],
                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        wait_for(lambda: self.notify.has("READY=1") or self.proc.poll() is not None, timeout,
                 "READY=1")
        if self.proc.poll() is not None:
            raise SystemExit(log.read_text()[-3000:])
        self.ready_s = time.monotonic() - self.started
        # READY comes once watching; the catch-up reconcile is done when systemd's line
        # stops saying "catching up".
        wait_for(lambda: self.notify.caught_up() or self.proc.poll() is not None, timeout,
                 "the catch-up")
        if self.proc.poll() is not None:
            raise SystemExit(log.read_text()[-3000:])
        self.caught_up_s = time.monotonic() - self.started

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.notify.close()

    def reconciled(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "reconciled":
                out.append(rec)
        return out


def mapping(path: Path) -> dict[str, Any]:
    try:
        files: dict[str, Any] = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return {}
    return files


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(tmp: Path, url: str, drops: int, settle_s: float, gap_s: float) -> list[float]:
    where = tmp / "latency"
    root = where / "root"
    root.mkdir(parents=True)
    config = write_config(where, root, url, settle_s=settle_s, mode="auto")
    daemon = Daemon(config, where / "daemon.log")
    out = []
    try:
        for i in range(drops):
            rel = f"drop-{i:03d}.txt"
            time.sleep(gap_s)  # idle between drops
            (root / rel).write_text(f"dropped file {i}\n")
            t0 = time.monotonic()
            wait_for(lambda rel=rel: rel in mapping(where / "mapping.json"), 30, rel, 0.005)
            out.append(time.monotonic() - t0)
    finally:
        daemon.stop()
    return out


def storm(tmp: Path, count: int) -> tuple[float, dict[str, Any], int]:
    where = tmp / "storm"
    root = where / "root"
    root.mkdir(parents=True)
    emulator = EmulatorHandle(where / "emulator", [KEY], [], where / "emulator.log")
    try:
        config = write_config(where, root, emulator.url, settle_s=1.0, mode="auto")
        text = yaml.safe_load(config.read_text())
        text["limits"].update({"upload_qps": 20, "read_qps": 20, "delete_qps": 10})
        config.write_text(yaml.safe_dump(text, sort_keys=False))
        daemon = Daemon(config, where / "daemon.log")
        emulator.reset_stats()
        t0 = time.monotonic()
        for i in range(count):
            path = root / f"s{i % 50:02d}" / f"storm-{i:05d}.txt"
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"storm {i}\n")
        wait_for(lambda: len(mapping(where / "mapping.json")) >= count, count / 10 + 120,
                 "storm synced", 0.5)
        took = time.monotonic() - t0
        stats = emulator.stats()
        daemon.stop()
        return took, stats, len(mapping(where / "mapping.json"))
    finally:
        emulator.stop()


def idle_cpu(pid: int, seconds: float) -> float:
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    t0 = time.monotonic()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / (time.monotonic() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--idle-s", type=float, default=60.0)
    ap.add_argument("--drops", type=int, default=30)
    ap.add_argument("--settle-s", type=float, default=1.0)
    ap.add_argument("--storm", type=int, default=5000, help="0 skips the storm")
    ap.add_argument("--gap-s", type=float, default=2.5,
                    help="idle time between drops (daemon.publish_interval_s is 2)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-daemon-"))
    emulator = EmulatorHandle(tmp / "emulator", [KEY],
                              ["--upload-rate", str(RATE), "--read-rate", str(RATE),
                               "--delete-rate", str(RATE), "--max-files", "100000"],
                              tmp / "emulator.log")
    rows: list[tuple[str, str, str]] = []
    try:
        # (a) latency
        lat = latency(tmp, emulator.url, args.drops, args.settle_s, args.gap_s)
        rows += [
            ("latency p50", f"{statistics.median(lat):.2f} s",
             f"settle_s={args.settle_s:g} (released on close-after-write, not waited), "
             f"{len(lat)} drops "
             f"{args.gap_s:g} s apart"),
            ("latency p95", f"{pct(lat, 0.95):.2f} s", f"max {max(lat):.2f} s"),
        ]

        # initial sync of the big tree
        where = tmp / "big"
        root = where / "root"
        for i in range(args.files):
            path = root / f"d{i % 100:02d}" / f"f-{i:05d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"file {i}\n")
        config = write_config(where, root, emulator.url, settle_s=2.0, mode="auto")
        first = Daemon(config, where / "daemon-first.log")
        synced = len(mapping(where / "mapping.json"))
        rows.append(("initial sync", f"{first.caught_up_s:.1f} s",
                     f"{synced} files, spawn to caught up at {RATE}/s; "
                     f"READY=1 at {first.ready_s:.2f} s"))

        # (b) idle CPU, inotify
        time.sleep(3)
        cpu_inotify = idle_cpu(first.proc.pid, args.idle_s)
        rows.append(("idle CPU, inotify", f"{cpu_inotify:.2f} %",
                     f"of one core over {args.idle_s:g} s, {synced} files"))
        first.stop()

        # (c) restart on the unchanged tree
        second = Daemon(config, where / "daemon-restart.log")
        catch_up = [r for r in second.reconciled() if r.get("reason") == "catch-up"]
        hashed = catch_up[-1].get("hashed") if catch_up else "?"
        rows.append(("restart to READY=1", f"{second.ready_s:.2f} s",
                     f"unchanged tree of {synced}; caught up at {second.caught_up_s:.2f} s, "
                     f"hashed {hashed}, "
                     f"catch-up {catch_up[-1].get('duration_s') if catch_up else '?'} s"))
        second.stop()

        # (b') idle CPU, polling
        poll_config = write_config(where, root, emulator.url, settle_s=2.0, mode="polling")
        polling = Daemon(poll_config, where / "daemon-polling.log")
        time.sleep(3)
        cpu_polling = idle_cpu(polling.proc.pid, args.idle_s)
        rows.append(("idle CPU, polling 5 s", f"{cpu_polling:.2f} %",
                     f"of one core over {args.idle_s:g} s, {synced} files"))
        polling.stop()

        if args.storm:
            took, stats, done = storm(tmp, args.storm)
            rows.append(("storm, default limits", f"{took:.1f} s",
                         f"{done}/{args.storm} files, {done / took:.1f}/s; "
                         f"peak/s {stats['max_per_second']}; throttled {stats['throttled']}; "
                         f"429 faults {stats['faults']['429']}"))
    finally:
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  notes")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
