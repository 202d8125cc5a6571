"""Storm: N files appear at once in a watched folder.

Measures how long the daemon takes to queue and release them all, how many
engine calls that takes, and the memory the queue holds at its peak. The engine
is a stand-in that takes a fixed time per file, so the number is about the
daemon, not the network.

    python tests/bench/bench_daemon_storm.py --files 10000 [--max-pending 20000] [--mode auto]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from syncd.config import Config, DaemonConfig, ReconcileConfig, SyncConfig, WatchConfig
from syncd.daemon.service import Daemon


@dataclass
class Report:
    changed_during_upload: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    exit_code: int = 0
    root_unavailable: bool = False
    remote_unavailable: bool = False
    aborted: str | None = None
    uploaded_bytes: int = 0

    def as_json(self) -> dict[str, object]:
        return {"exit_code": self.exit_code, "errors": self.errors}


class Engine:
    base_url = ""

    def __init__(self, per_file_s: float) -> None:
        self.per_file_s = per_file_s
        self.seen: set[str] = set()
        self.calls = 0
        self.reconciles = 0
        self.lock = threading.Lock()

    def reconcile(self, dry_run: bool = False) -> Report:
        with self.lock:
            self.reconciles += 1
        return Report()

    def sync_paths(self, paths: Iterable[str]) -> Report:
        batch = list(paths)
        time.sleep(self.per_file_s * len(batch))
        with self.lock:
            self.calls += 1
            self.seen.update(batch)
        return Report()

    def key_refused(self) -> None:
        return None

    def publish_mapping(self) -> None:
        pass

    def is_candidate(self, rel_path: str) -> bool:
        return not rel_path.endswith(".part")

    def can_hold(self, rel_dir: str) -> bool:
        return True

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"synced": len(self.seen)}

    def close(self) -> None:
        pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--max-pending", type=int, default=20_000)
    ap.add_argument("--mode", choices=("auto", "polling"), default="auto")
    ap.add_argument("--per-file-ms", type=float, default=0.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="syncd-storm-"))
    root = tmp / "root"
    root.mkdir()
    config = Config(
        project="bench",
        root=root,
        state_dir=tmp / "state",
        mapping_file=tmp / "state" / "mapping.json",
        sync=SyncConfig(settle_s=0.5, max_settle_s=30.0),
        watch=WatchConfig(mode=args.mode, poll_interval_s=1.0),
        reconcile=ReconcileConfig(interval_s=None),
        daemon=DaemonConfig(max_pending=args.max_pending),
    )
    engine = Engine(args.per_file_ms / 1000)
    tracemalloc.start()
    daemon = Daemon(tmp / "unused.yaml", config, engine)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        while not daemon.ready.is_set():
            time.sleep(0.01)
        began = time.monotonic()
        for i in range(args.files):
            (root / f"f{i:06d}.txt").write_bytes(b"x" * 100)
        written = time.monotonic() - began
        peak_queue = 0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            peak_queue = max(peak_queue, len(daemon.queue))
            with engine.lock:
                if len(engine.seen) >= args.files or engine.reconciles > 1:
                    break
            time.sleep(0.01)
        elapsed = time.monotonic() - began
        _, peak_mem = tracemalloc.get_traced_memory()
    finally:
        daemon.request_stop("bench done")
        runner.join(60)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"{args.files} files ({args.mode}, watching: {daemon.watcher.kind}): written in "
        f"{written:.2f}s, all released in {elapsed:.2f}s; {engine.calls} sync calls, "
        f"{engine.reconciles - 1} rescans; peak queue {peak_queue}; "
        f"peak traced memory {peak_mem / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
