"""Initial sync of N small files against the emulator at 20 uploads/s with 100 ms latency.

Prints one table: the floor (N / 20 s), syncd reconcile, a sequential openai-SDK
loop, and an 8-thread openai-SDK loop without pacing, each against a fresh
emulator, all in this run.

    python tests/bench/bench_reconcile.py [--files 1000] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.emulator_fixture import EmulatorHandle

KEY = "sk-bench"


def make_tree(root: Path, n: int) -> list[Path]:
    root.mkdir(parents=True)
    paths = []
    for i in range(n):
        p = root / f"d{i % 10}" / f"doc-{i:05d}.txt"
        p.parent.mkdir(exist_ok=True)
        p.write_text(f"document {i}\n" * 20)
        paths.append(p)
    return paths


def emulator(work: Path, name: str, latency_ms: int) -> EmulatorHandle:
    return EmulatorHandle(
        work / f"emu-{name}", [KEY], ["--latency-ms", str(latency_ms)], work / f"emu-{name}.log"
    )


def run_syncd(work: Path, root: Path, latency_ms: int) -> tuple[float, int, int]:
    emu = emulator(work, "syncd", latency_ms)
    try:
        cfg = work / "syncd.yaml"
        cfg.write_text(
            f"project: bench\nroot: {root}\nstate_dir: {work / 'state'}\n"
            f"api:\n  base_url: {emu.url}\n  api_key_env: BENCH_KEY\n"
            f"limits:\n  pacing_dir: {work / 'pacing'}\n"
            "logging:\n  level: warning\n"
        )
        env = {**os.environ, "BENCH_KEY": KEY}
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "syncd", "reconcile", "-c", str(cfg)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
        stats = emu.stats()
        return wall, stats["throttled"]["upload"] + stats["faults"]["429"], len(emu.files())
    finally:
        emu.stop()


def run_sdk(work: Path, paths: list[Path], latency_ms: int, threads: int) -> tuple[float, int, int]:
    import openai

    emu = emulator(work, f"sdk{threads}", latency_ms)
    try:
        client = openai.OpenAI(api_key=KEY, base_url=emu.url, max_retries=10)
        t0 = time.monotonic()

        def one(p: Path) -> None:
            client.files.create(file=p, purpose="file-extract")

        if threads == 1:
            for p in paths:
                one(p)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, paths))
        wall = time.monotonic() - t0
        stats = emu.stats()
        return wall, stats["throttled"]["upload"], len(emu.files())
    finally:
        emu.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--latency-ms", type=int, default=100)
    ap.add_argument("--skip-sdk", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = make_tree(work / "docs", args.files)
        floor = args.files / 20
        rows = [("floor (files / 20 per s)", floor, 0, args.files)]
        rows.append(("syncd reconcile", *run_syncd(work, work / "docs", args.latency_ms)))
        if not args.skip_sdk:
            rows.append(("openai SDK, sequential", *run_sdk(work, paths, args.latency_ms, 1)))
            rows.append(("openai SDK, 8 threads, no pacing",
                         *run_sdk(work, paths, args.latency_ms, 8)))  # fmt: skip
    print(f"\ninitial sync of {args.files} files, emulator at 20 uploads/s, "
          f"{args.latency_ms} ms latency")  # fmt: skip
    print(f"{'contender':<36} {'wall s':>8} {'x floor':>8} {'429s':>6} {'remote files':>13}")
    for name, wall, throttled, remote in rows:
        print(f"{name:<36} {wall:>8.1f} {wall / floor:>8.3f} {throttled:>6} {remote:>13}")


if __name__ == "__main__":
    main()
