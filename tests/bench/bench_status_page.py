"""What the status page costs an idle daemon: CPU of ``syncd run`` holding ``--files``
synced files, with ``daemon.metrics`` off (the baseline), on with nobody asking (the
listener waits in accept: this should cost nothing measurable), and on with the page
open (its script asks ``/api/status`` and ``/api/log`` once a second), in one run.

    python tests/bench/bench_status_page.py [--files 10000] [--idle-s 60] [--rounds 1]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.bench_daemon import KEY, RATE, Daemon, idle_cpu, write_config  # noqa: E402
from tests.emulator_fixture import EmulatorHandle  # noqa: E402
from tests.helpers import free_port  # noqa: E402


def with_listener(config: Path, port: int | None) -> Path:
    data = yaml.safe_load(config.read_text())
    if port is not None:
        data.setdefault("daemon", {})["metrics"] = f"127.0.0.1:{port}"
    out = config.with_name(f"{config.stem}-{port or 'off'}.yaml")
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def viewer(origin: str, stop: threading.Event, answered: list[float]) -> None:
    """What the page's script asks, once a second."""
    with httpx.Client(base_url=origin, timeout=10) as client:
        while not stop.wait(1.0):
            t0 = time.monotonic()
            for path in ("/api/status?offset=0&limit=100&q=", "/api/log?limit=30"):
                response = client.get(path)
                if not response.headers.get("content-type", "").startswith("application/json"):
                    return  # a build without the page (its metrics server answers any path)
            answered.append(time.monotonic() - t0)


def measure(config: Path, where: Path, idle_s: float, port: int | None, page_open: bool
            ) -> tuple[float, list[float]]:  # fmt: skip
    daemon = Daemon(with_listener(config, port), where / f"daemon-{port or 'off'}.log")
    stop, answered = threading.Event(), list[float]()
    try:
        time.sleep(3)  # the catch-up's tail (publish, first scrape of nothing)
        if page_open and port is not None:
            thread = threading.Thread(
                target=viewer, args=(f"http://127.0.0.1:{port}", stop, answered), daemon=True
            )
            thread.start()
        return idle_cpu(daemon.proc.pid, idle_s), answered
    finally:
        stop.set()
        daemon.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000, help="synced files the daemon holds")
    ap.add_argument("--idle-s", type=float, default=60.0, help="seconds each figure is taken over")
    ap.add_argument("--rounds", type=int, default=1,
                    help="listener off, then on with the page closed, this many times: "
                         "their spread is the noise a difference must beat")  # fmt: skip
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-page-"))
    emulator = EmulatorHandle(tmp / "emulator", [KEY],
                              ["--upload-rate", str(RATE), "--read-rate", str(RATE),
                               "--delete-rate", str(RATE), "--max-files", "100000"],
                              tmp / "emulator.log")  # fmt: skip
    rows: list[tuple[str, str, str]] = []
    try:
        root = tmp / "root"
        for i in range(args.files):
            path = root / f"d{i % 100:02d}" / f"f-{i:05d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"file {i}\n")
        config = write_config(tmp, root, emulator.url, settle_s=2.0, mode="auto")
        Daemon(config, tmp / "daemon-first.log").stop()  # the first sync, out of the way
        note = f"of one core over {args.idle_s:g} s, {args.files} files, inotify"
        for n in range(1, args.rounds + 1):
            tag = f" #{n}" if args.rounds > 1 else ""
            off, _ = measure(config, tmp, args.idle_s, None, False)
            rows.append((f"idle CPU, listener off (baseline){tag}", f"{off:.2f} %", note))
            on, _ = measure(config, tmp, args.idle_s, free_port(), False)
            rows.append((f"idle CPU, listener on, page closed{tag}", f"{on:.2f} %", note))
        opened, answered = measure(config, tmp, args.idle_s, free_port(), True)
        if answered:
            took = sorted(answered)[len(answered) // 2]
            rows.append(("CPU, page open (1 poll/s)", f"{opened:.2f} %",
                         f"{note}; {len(answered)} polls, median {took * 1000:.0f} ms each"))
        else:
            rows.append(("CPU, page open (1 poll/s)", "n/a", "no /api/status on this build"))
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
