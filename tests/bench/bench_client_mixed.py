"""Mixed-call load through one FilesClient against a local emulator.

Runs THREADS threads x CALLS calls (uploads, retrieves, lists, deletes of each
thread's own tiny files) at the default seed limits and prints a table: calls,
wall time, calls/s, 429s, and the emulator's busiest 1-second window per class
against the limit.

    python tests/bench/bench_client_mixed.py [--threads 16] [--calls 300] [--margin 0.03]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import structlog

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from syncd.api.client import FilesClient  # noqa: E402
from syncd.api.key import ApiKey  # noqa: E402
from syncd.api.options import ClientOptions  # noqa: E402
from tests.emulator_fixture import EmulatorHandle  # noqa: E402
from tests.helpers_client import mixed_calls, run_threads  # noqa: E402

LIMITS = {"upload": 20, "read": 20, "delete": 10}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--margin", type=float, default=ClientOptions().pacing_margin)
    args = parser.parse_args()
    # Retry and pacer warnings to stderr, so stdout is just the table.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )

    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        work = Path(tmp)
        emulator = EmulatorHandle(work / "data", ["sk-bench"], [], work / "emulator.log")
        try:
            options = replace(ClientOptions(), pacing_margin=args.margin)
            start = time.monotonic()
            with FilesClient(emulator.url, ApiKey("sk-bench"), options) as client:
                counts = run_threads(
                    args.threads, lambda i: mixed_calls(client, work / "files", i, args.calls)
                )
            wall = time.monotonic() - start
            stats = emulator.stats()
        finally:
            emulator.stop()

    total = sum(counts, Counter())
    calls = sum(total.values())
    by_class = {
        "upload": total["upload"],
        "read": total["retrieve"] + total["list"],
        "delete": total["delete"],
    }
    print(f"threads={args.threads} calls/thread={args.calls} margin={args.margin}")
    print(f"{'class':<8}{'calls':>8}{'requests':>10}{'429s':>7}{'max/1s':>8}{'limit':>7}")
    ok = True
    for cls, limit in LIMITS.items():
        peak = stats["max_per_second"][cls]
        throttled = stats["throttled"][cls]
        ok = ok and peak <= limit and throttled == 0
        print(
            f"{cls:<8}{by_class[cls]:>8}{stats['requests'][cls]:>10}{throttled:>7}"
            f"{peak:>8}{limit:>7}"
        )
    print(
        f"total calls={calls} wall={wall:.1f}s calls/s={calls / wall:.1f} "
        f"429s={sum(stats['throttled'].values())} within_limits={ok}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
