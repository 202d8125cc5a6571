"""What the journal costs: a first sync of ``--files`` files with the journal written (as
syncd runs) beside the same sync with journal writes turned off, in the same run.

Each repetition syncs a fresh tree into a fresh state against the emulator (a real
server on loopback, limits high enough not to pace), alternating the two; the table
gives the medians and syncd's cost over the baseline (target: at most 5 %).

    python tests/bench/bench_journal.py [--files 1000] [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from syncd.bootstrap import open_syncer  # noqa: E402
from syncd.config import load_config  # noqa: E402
from syncd.engine import journal  # noqa: E402
from tests.emulator_fixture import EmulatorHandle  # noqa: E402
from tests.engine_helpers import KEY_ENV, build_flat_tree, write_config  # noqa: E402

RATE = 2000


def first_sync(emu: EmulatorHandle, where: Path, files: int) -> float:
    root = where / "root"
    build_flat_tree(root, files)
    config = load_config(write_config(where, root, emu, rate=RATE, limits={"workers": 8}))
    syncer = open_syncer(config)
    try:
        started = time.perf_counter()
        report = syncer.reconcile()
        elapsed = time.perf_counter() - started
    finally:
        syncer.close()
    assert report.uploaded == files, report.as_json()["errors"]
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-journal-"))
    key = "sk-bench-journal"
    os.environ[KEY_ENV] = key
    rates = [f"--upload-rate={RATE}", f"--read-rate={RATE}", f"--delete-rate={RATE}",
             "--max-files=1000000"]  # fmt: skip
    emu = EmulatorHandle(tmp / "emu", [key], rates, tmp / "emu.log")
    real_add = journal.add
    times: dict[str, list[float]] = {"without the journal (baseline)": [], "syncd": []}
    try:
        for rep in range(args.reps):
            for name in (list(times) if rep % 2 == 0 else list(reversed(times))):
                journal.add = real_add if name == "syncd" else (lambda *a, **k: None)  # type: ignore[assignment]
                times[name].append(first_sync(emu, tmp / f"{rep}-{name[:7]}", args.files))
            print(f"run {rep + 1} done", file=sys.stderr)
    finally:
        journal.add = real_add  # type: ignore[assignment]
        emu.stop()
    base = statistics.median(times["without the journal (baseline)"])
    print(f"first sync of {args.files} files, {args.reps} runs each (median), "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print()
    print("| run | median s | × baseline | runs (s) |")
    print("|---|---|---|---|")
    for name, runs in times.items():
        median = statistics.median(runs)
        shown = " / ".join(f"{r:.2f}" for r in runs)
        print(f"| {name} | {median:.2f} | {median / base:.3f} | {shown} |")
    return 0 if statistics.median(times["syncd"]) <= base * 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
