"""The upload bandwidth cap: two ``syncd reconcile`` processes on one host and one key,
4 workers each, ``limits.upload_bytes_per_s`` set, uploading a mixed tree (a few big
files, many small) to one emulator, beside the same two processes without a cap.

The bytes are counted where they arrive: the emulator's count of upload body bytes
read (``upload_body_bytes`` in ``/_emulator/stats``), sampled every 0.1 s. The
table gives each consecutive 10 s window of the capped run (its rate and deviation
from the cap), the worst sliding 10 s window (0.1 s steps) within the transfer, the
mean rate, and the small files' upload time (``uploaded`` log lines) while a big one
was in flight. The uncapped run shows how fast the same work goes without a cap (the
cap must be what binds).

    python tests/bench/bench_bwlimit.py [--cap 20MB] [--mb 400] [--tolerance 0.05]

Exits 1 when a full 10 s window of the capped run is off the cap by more than
``--tolerance``, or a file was not synced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from syncd.units import parse_size  # noqa: E402
from tests.emulator_fixture import EmulatorHandle  # noqa: E402

MiB = 1024 * 1024
KEY = "sk-bench"
KEY_ENV = "SYNCD_BENCH_API_KEY"
WINDOW = 10.0
BIG = 40 * MiB
SMALL = 256 * 1024


def make_tree(root: Path, total: int, tag: str) -> dict[str, int]:
    """Four fifths of ``total`` in big files, the rest in small ones, the big ones spread
    among the small in name order (so one is in flight most of the time); distinct
    contents."""
    root.mkdir(parents=True)
    bigs = max(1, total * 4 // 5 // BIG)
    smalls = (total - bigs * BIG) // SMALL
    every = (bigs + smalls) // bigs
    sizes = {f"f-{i:04}.txt": BIG if i % every == 0 and i // every < bigs else SMALL
             for i in range(bigs + smalls)}  # fmt: skip
    for n, (name, size) in enumerate(sizes.items()):
        line = f"{tag} {name} {n}\n".encode()
        (root / name).write_bytes((line * (size // len(line) + 1))[:size])
    return sizes


def config(where: Path, root: Path, url: str, pacing: Path, cap: int | None) -> Path:
    limits: dict[str, Any] = {"upload_qps": 500, "read_qps": 500, "delete_qps": 500,
                              "workers": 4, "pacing_dir": str(pacing)}  # fmt: skip
    if cap is not None:
        limits["upload_bytes_per_s"] = cap
    data = {
        "project": where.name,
        "root": str(root),
        "state_dir": str(where / "state"),
        "mapping_file": str(where / "mapping.json"),
        "api": {"base_url": url, "api_key_env": KEY_ENV},
        "limits": limits,
        "logging": {"level": "info"},
    }
    path = where / "syncd.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sample(emu: EmulatorHandle, stop: threading.Event, into: list[tuple[float, int]]) -> None:
    while not stop.is_set():
        asked = time.monotonic()
        received = int(emu.stats()["upload_body_bytes"])
        # Stamped between asking and the answer: the count is of that moment.
        into.append(((asked + time.monotonic()) / 2, received))
        time.sleep(max(0.0, asked + 0.1 - time.monotonic()))


def run(work: Path, total: int, cap: int | None) -> dict[str, Any]:
    """Two processes on one key and pacing folder; the samples, logs and wall time."""
    work.mkdir(parents=True)
    emu = EmulatorHandle(work / "emu", [KEY], ["--rate-limit", "off"], work / "emu.log")
    env = {**os.environ, KEY_ENV: KEY, "PYTHONPATH": str(REPO)}
    try:
        hosts = []
        for i in range(2):
            where = work / f"p{i}"
            where.mkdir()
            sizes = make_tree(where / "root", total // 2, f"p{i}")
            hosts.append((config(where, where / "root", emu.url, work / "pacing", cap), sizes))
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(emu, stop, samples), daemon=True)
        sampler.start()
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "syncd", "reconcile", "-c", str(cfg), "--json",
                 "--log-format", "json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
            )
            for cfg, _ in hosts
        ]
        outs = [p.communicate(timeout=1800) for p in procs]
        wall = time.monotonic() - started
        stop.set()
        sampler.join()
        for p, (_, err), (cfg, sizes) in zip(procs, outs, hosts, strict=True):
            mapping = json.loads((cfg.parent / "mapping.json").read_text())["files"]
            if p.returncode != 0 or sorted(mapping) != sorted(sizes):
                raise SystemExit(f"{cfg}: exit {p.returncode}, {len(mapping)} of {len(sizes)} "
                                 f"files mapped\n{err[-2000:]}")  # fmt: skip
        logs = [json.loads(line) for _, err in outs for line in err.splitlines()
                if line.startswith("{")]  # fmt: skip
        return {"samples": samples, "wall": wall, "logs": logs}
    finally:
        emu.stop()


def active(samples: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The samples from the first to the last that moved by more than a MiB."""
    moved = [i for i in range(1, len(samples)) if samples[i][1] - samples[i - 1][1] > 0]
    first = next(i for i in moved if samples[-1][1] - samples[i - 1][1] > MiB) - 1
    last = moved[-1]
    return samples[first : last + 1]


def windows(samples: list[tuple[float, int]]) -> tuple[list[float], float, float]:
    """Rates of consecutive 10 s windows, and the lowest and highest sliding one."""
    t0 = samples[0][0]
    consecutive = []
    at = 0
    for j, (t, b) in enumerate(samples):
        if t - samples[at][0] >= WINDOW - 1e-6:
            consecutive.append((b - samples[at][1]) / (t - samples[at][0]))
            at = j
    sliding = []
    k = 0
    for j, (t, b) in enumerate(samples):
        while k < j and t - samples[k + 1][0] >= WINDOW - 1e-6:
            k += 1
        if t - samples[k][0] >= WINDOW - 1e-6 and samples[k][0] >= t0:
            sliding.append((b - samples[k][1]) / (t - samples[k][0]))
    return consecutive, min(sliding, default=0.0), max(sliding, default=0.0)


def small_latency(logs: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Upload times of small files that overlapped a big one's upload, and the big ones'."""

    def span(e: dict[str, Any]) -> tuple[float, float]:
        end = dt.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        return end - float(e["duration_s"]), end

    up = [e for e in logs if e.get("event") == "uploaded" and "duration_s" in e]
    bigs = [span(e) for e in up if e["bytes"] >= BIG]
    small = [float(e["duration_s"]) for e in up if e["bytes"] < BIG
             and any(a < span(e)[0] < b for a, b in bigs)]  # fmt: skip
    return small, [b - a for a, b in bigs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", default="20MB", help="limits.upload_bytes_per_s")
    parser.add_argument("--mb", type=int, default=400, help="MiB of files, both processes")
    parser.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args()
    cap = parse_size(args.cap)
    total = args.mb * MiB
    work = Path(tempfile.mkdtemp(prefix="bench-bwlimit-"))
    try:
        free = run(work / "free", total, None)
        capped = run(work / "capped", total, cap)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    span = active(capped["samples"])
    consecutive, low, high = windows(span)
    moved = span[-1][1] - span[0][1]
    mean = moved / (span[-1][0] - span[0][0])
    small, bigs = small_latency(capped["logs"])
    free_span = active(free["samples"])
    free_rate = (free_span[-1][1] - free_span[0][1]) / (free_span[-1][0] - free_span[0][0])
    print(f"{args.mb} MiB (4/5 in {BIG // MiB} MiB files, the rest in {SMALL // 1024} KiB files),"
          " 2 processes"
          f" × 4 workers on one key and pacing folder, cap {args.cap}/s = {cap / MiB:.1f} MiB/s,"
          f" {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print()
    print("| run | wall s | MiB/s (mean) | × cap |")
    print("|---|---|---|---|")
    print(f"| no cap | {free['wall']:.1f} | {free_rate / MiB:.1f} | {free_rate / cap:.2f} |")
    print(f"| upload_bytes_per_s {args.cap} | {capped['wall']:.1f} | {mean / MiB:.1f} |"
          f" {mean / cap:.3f} |")  # fmt: skip
    print()
    print("| 10 s window | MiB/s | deviation from the cap |")
    print("|---|---|---|")
    for i, rate in enumerate(consecutive):
        print(f"| {i * 10}–{i * 10 + 10} s | {rate / MiB:.2f} | {rate / cap - 1:+.1%} |")
    print(f"| any 10 s (sliding): lowest | {low / MiB:.2f} | {low / cap - 1:+.1%} |")
    print(f"| any 10 s (sliding): highest | {high / MiB:.2f} | {high / cap - 1:+.1%} |")
    print()
    if small:
        q = statistics.quantiles(small, n=20) if len(small) > 1 else small * 19
        print(f"small files ({SMALL // 1024} KiB) uploaded while a big one was in flight: "
              f"{len(small)}, upload time p50 {statistics.median(small):.2f} s, "
              f"p95 {q[18]:.2f} s, max {max(small):.2f} s (alone at the cap: "
              f"{SMALL / cap:.3f} s); big files ({BIG // MiB} MiB) took "
              f"{', '.join(f'{b:.1f}' for b in bigs)} s")  # fmt: skip
    print(f"bytes counted at the emulator: {moved / MiB:.1f} MiB of {args.mb} MiB of files")
    worst = max((abs(r / cap - 1) for r in consecutive), default=1.0)
    return 0 if consecutive and worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
