"""Throughput of `syncd reconcile` when the provider answers some requests with random 429s.

Each row is a fresh emulator (a subprocess, 100 ms latency) and a fresh `syncd reconcile`
(a subprocess) uploading N small files with the client configured at 20 uploads/s:

- 0 %, 1 %, 3 %, 10 % of requests answered 429 at random (the emulator's `fault_429`),
  unrelated to our rate: files/s, and the ratio to the 0 % row of this same run;
- the hidden lower limit: the emulator at `--rate-profile newer` (3 uploads/s) while the
  client is still configured for 20/s: files/s against the 3/s floor.

    python tests/bench/bench_pacer_429.py [--files 200] [--latency-ms 100] [--skip-limit]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.emulator_fixture import EmulatorHandle

KEY = "sk-bench-429"
CEILING = 20


@dataclass
class Row:
    name: str
    wall: float
    files: int
    remote: int
    requests: int
    random_429: int
    limit_429: int
    exit_code: int

    @property
    def rate(self) -> float:
        return self.files / self.wall


def make_tree(root: Path, n: int) -> None:
    for i in range(n):
        p = root / f"d{i % 10}" / f"doc-{i:05d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"document {i}\n" * 20)


def run_case(work: Path, name: str, files: int, latency_ms: int, emu_args: list[str]) -> Row:
    case = work / f"case{len(list(work.iterdir()))}"
    case.mkdir()
    root = case / "docs"
    make_tree(root, files)
    emu = EmulatorHandle(
        case / "emu", [KEY], ["--latency-ms", str(latency_ms), *emu_args], case / "emu.log"
    )
    try:
        cfg = case / "syncd.yaml"
        cfg.write_text(
            f"project: bench\nroot: {root}\nstate_dir: {case / 'state'}\n"
            f"api:\n  base_url: {emu.url}\n  api_key_env: BENCH_KEY\n"
            f"limits:\n  upload_qps: {CEILING}\n  pacing_dir: {case / 'pacing'}\n"
            "logging:\n  level: error\n"
        )
        env = {**os.environ, "BENCH_KEY": KEY}
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "syncd", "reconcile", "-c", str(cfg)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            print(f"[{name}] exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}", file=sys.stderr)
        stats = emu.stats()
        return Row(
            name, wall, files, len(emu.files()), stats["requests"]["upload"],
            stats["faults"]["429"], stats["throttled"]["upload"], proc.returncode,
        )  # fmt: skip
    finally:
        emu.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--latency-ms", type=int, default=100)
    ap.add_argument("--skip-limit", action="store_true", help="leave out the 3/s row")
    args = ap.parse_args()
    targets = {0.0: None, 0.01: 0.85, 0.03: 0.70, 0.10: 0.50}
    rows: list[tuple[Row, float, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base: Row | None = None
        for share, target in targets.items():
            row = run_case(work, f"random {share:.0%} 429s", args.files, args.latency_ms,
                           ["--fault-429", str(share)])  # fmt: skip
            base = base or row
            rows.append((row, row.rate / base.rate, target))
            print(f"  done: {row.name}: {row.rate:.1f} files/s", file=sys.stderr)
        if not args.skip_limit:
            row = run_case(work, "hidden limit 3/s, client at 20/s", args.files,
                           args.latency_ms, ["--rate-profile", "newer"])  # fmt: skip
            rows.append((row, row.rate / 3.0, 0.90))
    print(f"\n{args.files} files by `syncd reconcile`, client at {CEILING} uploads/s, "
          f"emulator latency {args.latency_ms} ms")  # fmt: skip
    print(f"{'case':<34} {'wall s':>7} {'files/s':>8} {'ratio':>6} {'target':>7} "
          f"{'requests':>9} {'rnd 429':>8} {'lim 429':>8} {'remote':>7} {'exit':>5}")  # fmt: skip
    for row, ratio, target in rows:
        against = "  (baseline)" if target is None else ""
        tgt = f">={target:.2f}" if target is not None else "base"
        ok = "" if target is None else ("  ok" if ratio >= target else "  MISS")
        print(f"{row.name:<34} {row.wall:>7.1f} {row.rate:>8.2f} {ratio:>6.2f} {tgt:>7} "
              f"{row.requests:>9} {row.random_429:>8} {row.limit_429:>8} {row.remote:>7} "
              f"{row.exit_code:>5}{ok}{against}")  # fmt: skip
    print("ratio: files/s over the 0 % row of this run; for the hidden limit, over its 3/s floor")


if __name__ == "__main__":
    main()
