"""A big tree with a few documents in it: syncd beside a plain walk of the same tree.

The tree (issue 14): FOLDERS folders x 500 files no rule selects (``.bin``), plus 50
``.txt`` documents; ``--million`` makes it 2,000 folders (1,000,050 entries). In one
run, each as its own process, wall time and peak RSS of:

- a plain Python walk, ``os.scandir`` with one ``stat`` per file (the baseline);
- ``syncd reconcile``: the first run (uploads the 50), then no-op runs;
- ``syncd status`` (counts per skip rule, with examples);
- ``syncd run``: spawn to ``READY=1`` (read from a real NOTIFY_SOCKET), and the
  inotify watches it placed; then again with the data folders excluded by a rule
  (``data*/**``), where only the root and ``docs/`` may hold candidates: 2 watches.

Budgets: no-op reconcile <= 2.5x the walk, first run <= 5x, RSS <= 80 MB for both,
READY <= 3 s, status < 2 s. Exits 1 when one is missed.

    python tests/bench/bench_big_tree.py [--folders 200] [--million] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.emulator_fixture import EmulatorHandle  # noqa: E402
from tests.helpers import NotifySocket  # noqa: E402

KEY_ENV = "SYNCD_BENCH_API_KEY"
KEY = "sk-bench"
PER_FOLDER = 500
DOCS = 50

WALK = """
import os, sys
files = 0
stack = [sys.argv[1]]
while stack:
    with os.scandir(stack.pop()) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                entry.stat(follow_symlinks=False)
                files += 1
print(files)
"""


def build(root: Path, folders: int) -> float:
    started = time.monotonic()
    # Hard links of one file per folder (filesystems cap links per file): a million names
    # without a million writes. The walk stats each name like any file; syncd never opens
    # a file no rule selects.
    for d in range(folders):
        folder = root / f"data{d:04d}"
        folder.mkdir(parents=True)
        seed = folder / "blob000.bin"
        seed.write_bytes(b"x")
        for i in range(1, PER_FOLDER):
            os.link(seed, folder / f"blob{i:03d}.bin")
    docs = root / "docs"
    docs.mkdir()
    for i in range(DOCS):
        (docs / f"doc{i:02d}.txt").write_text(f"document {i}\n")
    return time.monotonic() - started


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB, and stdout of one process.

    The peak is the process's own VmHWM, polled while it runs: ``ru_maxrss`` would
    also count the forked copy of this (larger) process before it exec'ed.
    """
    started = time.monotonic()
    peak_kb = 0
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env,
                                cwd=str(REPO))  # fmt: skip
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_kb = max(peak_kb, _hwm_kb(proc.pid))
            time.sleep(0.01)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{text[-2000:]}")
    return wall, peak_kb / 1024, text


def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def write_config(where: Path, root: Path, url: str, exclude: list[str] | None = None) -> Path:
    data: dict[str, object] = {
        "project": "bench-big-tree",
        "root": str(root),
        "state_dir": str(where / "state"),
        "mapping_file": str(where / "mapping.json"),
        "api": {"base_url": url, "api_key_env": KEY_ENV},
        "limits": {"upload_qps": 500, "read_qps": 500, "delete_qps": 500,
                   "pacing_dir": str(where / "pacing")},
        "sync": {"settle_s": 1.0},
        "logging": {"format": "json", "level": "warning"},
    }  # fmt: skip
    if exclude:
        data["rules"] = {"exclude": exclude}
    path = where / "syncd.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def inotify_watches(pid: int) -> int:
    """Watches held by the process's inotify instances (from /proc fdinfo)."""
    count = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            if "inotify" not in os.readlink(fd):
                continue
            info = (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
        except OSError:
            continue
        count += sum(1 for line in info.splitlines() if line.startswith("inotify wd:"))
    return count


def daemon_ready(config: Path, env: dict[str, str], log: Path) -> tuple[float, int]:
    notify = NotifySocket()
    try:
        started = time.monotonic()
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(config)],
                stdout=fh, stderr=subprocess.STDOUT, cwd=str(REPO),
                env={**env, "NOTIFY_SOCKET": notify.path},
            )  # fmt: skip
        deadline = started + 120
        while not notify.has("READY=1"):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"daemon never READY:\n{log.read_text()[-2000:]}")
            time.sleep(0.01)
        ready = time.monotonic() - started
        watches = inotify_watches(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        return ready, watches
    finally:
        notify.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=200)
    parser.add_argument("--million", action="store_true", help="2,000 folders: 1,000,050 files")
    parser.add_argument("--noop-runs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="build the tree here and keep it")
    args = parser.parse_args()
    folders = 2000 if args.million else args.folders

    work = Path(tempfile.mkdtemp(prefix="bench-big-tree-", dir=args.keep))
    root = work / "root"
    rows: list[tuple[str, str, str, str]] = []
    failed: list[str] = []

    def check(ok: bool, what: str) -> str:
        if not ok:
            failed.append(what)
        return "ok" if ok else "MISSED"

    emulator = EmulatorHandle(work / "emu", [KEY], ["--upload-rate", "500", "--read-rate", "500",
                              "--delete-rate", "500"], work / "emulator.log")  # fmt: skip
    try:
        built = build(root, folders)
        entries = folders * PER_FOLDER + DOCS
        print(f"tree: {entries:,} files in {folders + 1} folders, built in {built:.1f} s",
              flush=True)  # fmt: skip
        config = write_config(work, root, emulator.url)
        env = {**os.environ, KEY_ENV: KEY, "PYTHONPATH": str(REPO)}
        syncd = [sys.executable, "-m", "syncd"]

        timed([sys.executable, "-c", WALK, str(root)])  # warm the cache alike for all
        walk_s, walk_mb, out = timed([sys.executable, "-c", WALK, str(root)])
        assert int(out) == entries, out
        rows.append(("plain walk (scandir + stat)", f"{walk_s:.2f}", f"{walk_mb:.0f}", "1.0x"))

        first_s, first_mb, out = timed([*syncd, "reconcile", "-c", str(config), "--json"], env)
        report = json.loads(out)
        assert report["uploaded"] == DOCS, report
        ok = check(first_s <= 5 * walk_s and first_mb <= 80, "first reconcile")
        rows.append(("syncd reconcile, first run", f"{first_s:.2f}", f"{first_mb:.0f}",
                     f"{first_s / walk_s:.1f}x (<= 5x, 80 MB) {ok}"))  # fmt: skip
        for n in range(args.noop_runs):
            noop_s, noop_mb, out = timed([*syncd, "reconcile", "-c", str(config), "--json"], env)
            report = json.loads(out)
            assert report["uploaded"] == report["deleted"] == report["hashed"] == 0, report
            ok = check(noop_s <= 2.5 * walk_s and noop_mb <= 80, f"no-op reconcile {n + 1}")
            rows.append((f"syncd reconcile, no-op #{n + 1}", f"{noop_s:.2f}", f"{noop_mb:.0f}",
                         f"{noop_s / walk_s:.1f}x (<= 2.5x, 80 MB) {ok}"))  # fmt: skip

        status_s, status_mb, _out = timed([*syncd, "status", "-c", str(config)], env)
        ok = check(status_s < 2, "status")
        rows.append(("syncd status", f"{status_s:.2f}", f"{status_mb:.0f}", f"< 2 s {ok}"))

        ready_s, watches = daemon_ready(config, env, work / "daemon.log")
        ok = check(ready_s <= 3, "daemon READY")
        rows.append(("syncd run: spawn to READY=1", f"{ready_s:.2f}", "",
                     f"<= 3 s {ok}; {watches} inotify watches"))  # fmt: skip

        # The data folders excluded by a rule: neither walked nor watched.
        pruned_dir = work / "pruned"
        pruned_dir.mkdir()
        pruned = write_config(pruned_dir, root, emulator.url, ["data*/**", "*.part", ".*"])
        ready_s, watches = daemon_ready(pruned, env, work / "daemon-pruned.log")
        ok = check(ready_s <= 3 and watches == 2, "daemon READY, data folders excluded")
        rows.append(("syncd run, data*/** excluded", f"{ready_s:.2f}", "",
                     f"<= 3 s, 2 watches {ok}; {watches} inotify watches"))  # fmt: skip

        again_s, _mb, _out = timed([sys.executable, "-c", WALK, str(root)])
        rows.append(("plain walk, again", f"{again_s:.2f}", "", f"{again_s / walk_s:.1f}x"))
    finally:
        emulator.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'wall s':>7}  {'RSS MB':>6}  vs walk")
    for name, wall, rss, note in rows:
        print(f"{name:<{width}}  {wall:>7}  {rss:>6}  {note}")
    if failed:
        print("missed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
