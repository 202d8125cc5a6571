"""A burst under the daemon: ``--files`` files written ``--gap-s`` apart into an idle
``syncd run``; how long after its last write each file reaches the mapping.

The floor beside the figure is ``settle_s`` (a file is released only once it has been
quiet that long); the target is ``settle_s`` + 0.5 s at the 95th percentile. The
emulator and the daemon are real processes on loopback.

    python tests/bench/bench_burst.py [--files 100] [--gap-s 0.1] [--settle-s 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.bench_daemon import KEY, RATE, Daemon, mapping, pct, write_config  # noqa: E402
from tests.emulator_fixture import EmulatorHandle  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--gap-s", type=float, default=0.1)
    ap.add_argument("--settle-s", type=float, default=1.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    rates = [f"--upload-rate={RATE}", f"--read-rate={RATE}", f"--delete-rate={RATE}"]
    emu = EmulatorHandle(tmp / "emu", [KEY], rates, tmp / "emu.log")

    root = tmp / "root"
    root.mkdir()
    cfg = write_config(tmp, root, emu.url, settle_s=args.settle_s, mode="auto")
    daemon = Daemon(cfg, tmp / "daemon.log")
    written: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            now = time.monotonic()
            for path in mapping(tmp / "mapping.json"):
                seen.setdefault(path, now)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for i in range(args.files):
            name = f"burst-{i:04d}.txt"
            (root / name).write_text(f"file {i}\n")
            written[name] = time.monotonic()
            time.sleep(args.gap_s)
        deadline = time.monotonic() + 120
        while len(seen) < args.files and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        daemon.stop()
        emu.stop()
    lags = [seen[p] - written[p] for p in written if p in seen]
    last = max(written.values())
    print(f"{args.files} files {args.gap_s} s apart, settle_s {args.settle_s}, "
          f"load {os.getloadavg()[0]:.1f}; {len(lags)} mapped")  # fmt: skip
    print()
    print("| measure | floor (settle_s) | target | syncd |")
    print("|---|---|---|---|")
    target = args.settle_s + 0.5
    print(f"| per file, p50 | {args.settle_s:.2f} s | | {pct(lags, 0.5):.2f} s |")
    print(f"| per file, p95 | {args.settle_s:.2f} s | ≤ {target:.2f} s | {pct(lags, 0.95):.2f} s |")
    print(f"| per file, max | {args.settle_s:.2f} s | | {max(lags):.2f} s |")
    print(f"| last write to full mapping | {args.settle_s:.2f} s | ≤ {target:.2f} s | "
          f"{max(seen.values()) - last:.2f} s |")  # fmt: skip
    return 0 if len(lags) == args.files and pct(lags, 0.95) <= target else 1


if __name__ == "__main__":
    sys.exit(main())
