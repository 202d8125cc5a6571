"""A folder made searchable: N files uploaded and attached to one vector store, until every
attachment is completed, against the openai-flavour emulator (uploads and other writes
at --rate per second, reads 20/s, 100 ms latency, --vs-step-s of processing).

Prints one table, all in this run, each contender on a fresh emulator: the floor the
rate limit allows (N uploads at --rate, then one processing step), syncd reconcile, and
the openai SDK uploading each file then attaching it (``vector_stores.files.create``, as
folder-to-store scripts do), sequentially. The busiest second of each request class comes
from the emulator's stats; the bench exits 1 when syncd converges at less than 0.9x the
floor's rate, leaves a file unattached, or goes over a limit.

``--crash`` instead runs the kill -9 scenario of tests/test_attach_crash.py at the
issue's size: 10 kills during attachment of 300 files, then one clean run and the check.

    python tests/bench/bench_vector_stores.py [--files 1000] [--rate 20] [--crash]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.emulator_fixture import EmulatorHandle, _flags

KEY = "sk-bench-vs"
READ_RATE = 20


def make_tree(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        p = root / "docs" / f"d{i % 10}" / f"doc-{i:05d}.md"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"# document {i}\n" + "text " * 40 + "\n")
        paths.append(p)
    return paths


def emulator(work: Path, name: str, rate: int, step: float) -> EmulatorHandle:
    work.mkdir(parents=True, exist_ok=True)
    flags = _flags({"flavor": "openai", "upload_rate": rate, "read_rate": READ_RATE,
                    "delete_rate": 10, "latency_ms": 100, "vs_step_s": step})
    return EmulatorHandle(work / f"emu-{name}", [KEY], flags, work / f"emu-{name}.log")


def attached(emu: EmulatorHandle) -> dict[str, int]:
    import httpx

    with httpx.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60) as http:
        store = http.get("/vector_stores").json()["data"][0]
    return dict(store["file_counts"])


def run_syncd(work: Path, root: Path, rate: int, step: float) -> dict[str, Any]:
    emu = emulator(work, "syncd", rate, step)
    try:
        cfg = work / "syncd.yaml"
        cfg.write_text(
            f"project: bench\nroot: {root}\nstate_dir: {work / 'state'}\n"
            f"api:\n  provider: openai\n  base_url: {emu.url}\n  api_key_env: BENCH_KEY\n"
            f"limits:\n  pacing_dir: {work / 'pacing'}\n  upload_qps: {rate}\n"
            f"  read_qps: {READ_RATE}\n"
            "vector_stores:\n  rules:\n    - globs: ['docs/**']\n      store: docs\n"
            "logging:\n  level: warning\n")
        env = {**os.environ, "BENCH_KEY": KEY}
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "syncd", "reconcile", "-c", str(cfg)],
                              env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
        return {"wall": wall, "stats": emu.stats(), "counts": attached(emu)}
    finally:
        emu.stop()


def run_sdk(work: Path, paths: list[Path], rate: int, step: float) -> dict[str, Any]:
    import openai

    emu = emulator(work, "sdk", rate, step)
    try:
        client = openai.OpenAI(api_key=KEY, base_url=emu.url, max_retries=20)
        t0 = time.monotonic()
        store = client.vector_stores.create(name="docs")
        for p in paths:
            fid = client.files.create(file=p, purpose="assistants").id
            client.vector_stores.files.create(vector_store_id=store.id, file_id=fid)
        while attached(emu).get("in_progress"):
            time.sleep(0.2)
        wall = time.monotonic() - t0
        return {"wall": wall, "stats": emu.stats(), "counts": attached(emu)}
    finally:
        emu.stop()


def row(name: str, wall: float, floor: float, r: dict[str, Any] | None) -> str:
    if r is None:
        return f"| {name} | {wall:.1f} | 1.000 | – | – | – |"
    s = r["stats"]
    busiest = "/".join(str(s["max_per_second"][c]) for c in ("upload", "read", "delete"))
    throttled = sum(s["throttled"].values())
    done = r["counts"].get("completed", 0)
    return (f"| {name} | {wall:.1f} | {floor / wall:.3f} | {done} | {busiest} | "
            f"{throttled} |")


def load() -> str:
    """The machine's 1-minute load average (the bench shares it with whatever runs)."""
    return f"{os.getloadavg()[0]:.1f}"


def converge(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = make_tree(work / "root", args.files)
        floor = args.files / args.rate + args.vs_step_s
        loads = [load()]
        mine = run_syncd(work / "s", work / "root", args.rate, args.vs_step_s)
        loads.append(load())
        sdk = run_sdk(work / "o", paths, args.rate, args.vs_step_s) if args.sdk else None
    print(f"{args.files} files to one vector store, writes at {args.rate}/s, reads at "
          f"{READ_RATE}/s, 100 ms latency, {args.vs_step_s} s processing; load average "
          f"{loads[0]} before syncd's run, {loads[1]} after it, {load()} at the end\n")
    print("| contender | wall s | × floor rate | completed | busiest s up/read/del | 429s |")
    print("|---|---|---|---|---|---|")
    print(row(f"floor ({args.files} / {args.rate} per s + {args.vs_step_s} s)", floor, floor,
              None))
    print(row("syncd reconcile", mine["wall"], floor, mine))
    if sdk is not None:
        print(row("openai SDK, upload then attach each", sdk["wall"], floor, sdk))
    s = mine["stats"]["max_per_second"]
    within = s["upload"] <= args.rate and s["read"] <= READ_RATE and s["delete"] <= 10
    ok = (floor / mine["wall"] >= 0.9 and within
          and mine["counts"].get("completed") == args.files)
    print(f"\nsyncd at {floor / mine['wall']:.3f}x the floor's rate; within limits: {within}")
    return 0 if ok else 1


def crash() -> int:
    from tests.test_attach_crash import crash_rounds

    handles: list[EmulatorHandle] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)

        def factory(**o: Any) -> EmulatorHandle:
            keys, seed = o.pop("api_keys"), o.pop("seed")
            handle = EmulatorHandle(base / "emu", keys, _flags(o), base / "emu.log", seed=seed)
            handles.append(handle)
            return handle

        before = load()
        try:
            figures = crash_rounds(factory, base / "w", files=300, kills=10)
        finally:
            for h in handles:
                h.stop()
    print(f"10 kills during attachment of 300 files; load average {before} before, "
          f"{load()} after\n")
    print("| kills | rounds | wall s | lost answers | duplicates | strays | missing |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {figures['kills']} | {figures['rounds']} | {figures['elapsed_s']} | "
          f"{figures['lost_answers']} | {figures['duplicates']} | {figures['strays']} | "
          f"{figures['missing']} |")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--rate", type=int, default=20)
    p.add_argument("--vs-step-s", type=float, default=1.0)
    p.add_argument("--no-sdk", dest="sdk", action="store_false",
                   help="leave out the openai SDK contender")
    p.add_argument("--crash", action="store_true", help="the kill -9 scenario instead")
    args = p.parse_args()
    return crash() if args.crash else converge(args)


if __name__ == "__main__":
    sys.exit(main())
