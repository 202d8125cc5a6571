"""Upload throughput against the pacing floor.

Uploads N tiny files from T threads through one FilesClient at the default
20/s upload ceiling and compares the wall time with the floor N / 20 s.

    python tests/bench/bench_client_uploads.py [--files 1000] [--threads 8]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import structlog

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from syncd.api.client import FilesClient  # noqa: E402
from syncd.api.key import ApiKey  # noqa: E402
from syncd.api.options import ClientOptions  # noqa: E402
from tests.emulator_fixture import EmulatorHandle  # noqa: E402
from tests.helpers_client import run_threads, write_text_files  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    # Retry and pacer warnings to stderr, so stdout is just the table.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    options = ClientOptions()
    with tempfile.TemporaryDirectory(prefix="bench-uploads-") as tmp:
        work = Path(tmp)
        paths = write_text_files(work / "files", args.files)
        emulator = EmulatorHandle(work / "data", ["sk-bench"], [], work / "emulator.log")
        try:
            start = time.monotonic()
            with FilesClient(emulator.url, ApiKey("sk-bench"), options) as client:
                run_threads(
                    args.threads,
                    lambda i: [client.upload(p, "file-extract") for p in paths[i :: args.threads]],
                )
            wall = time.monotonic() - start
            stats = emulator.stats()
        finally:
            emulator.stop()
    floor = args.files / options.rates.upload
    print(f"files={args.files} threads={args.threads} margin={options.pacing_margin}")
    print(
        f"wall={wall:.2f}s floor={floor:.1f}s ratio={wall / floor:.3f} "
        f"429s={stats['throttled']['upload']} max/1s={stats['max_per_second']['upload']}"
    )
    return 0 if stats["throttled"]["upload"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
