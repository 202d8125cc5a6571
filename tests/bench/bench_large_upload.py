"""One large upload: syncd beside curl and the openai SDK, to the same emulator, in one run.

A ``.txt`` file of ``--mb`` MiB (printable, incompressible-ish text) is uploaded by
four contenders, each as its own process, start-up included, ``--reps`` times in
turn (so a busy moment of the machine hits all of them alike) after one untimed
warm-up round (page cache, compiled bytecode):

- ``curl -F file=@… -F purpose=file-extract`` (the floor: C, no hashing);
- the openai SDK, ``client.files.create`` in a fresh ``python``;
- a fresh ``python`` that imports nothing but the standard library and sends the
  multipart body over a plain socket while hashing it, as syncd does (the floor of
  any Python client: the interpreter, the upload and the hash, no start-up beyond);
- ``syncd reconcile`` of a folder holding just that file, with a fresh state each
  time (so it scans, plans, uploads and publishes the mapping);
- syncd's upload alone: ``FilesClient.send`` timed inside a process that has
  already started and imported syncd (where the rest of the reconcile's time goes:
  start-up, not the transfer).

The table shows the median wall time, MiB/s, the ratio of curl's throughput
reached, the median CPU time (user + system: steadier than wall time on a busy
machine), the CPU time a fresh ``python`` spends importing what the contender
imports (``openai``; syncd's modules for a reconcile; the interpreter's own start and
exit not counted), and the peak RSS of each
process (``/usr/bin/time``'s max RSS of the command itself, or its VmHWM polled
from /proc where that tool is missing). The emulator runs with rate limits off;
uploaded files are deleted between runs.

    python tests/bench/bench_large_upload.py [--mb 147] [--reps 3] [--target 0.80]
                                             [--baseline REV] [--bandwidth 50MB]

``--baseline REV`` adds syncd as of a git revision to the same run (before and after a
change, under the same load).

``--bandwidth 50MB`` shapes the emulator's link (``syncd emulate --bandwidth``: upload
bodies read at that rate, one link for every connection), a link like a real one
rather than loopback; the targets then default to the issue's: the whole reconcile
≥ 0.90× curl's throughput, the upload call alone ≥ 0.97×, and a reconcile's peak RSS
≤ 60 MiB (``--call-target``, ``--max-rss``).

Exits 1 when syncd stays under ``--target`` of curl's throughput (or, where set, the
call alone under ``--call-target``, a reconcile's peak RSS over ``--max-rss``), or an
upload failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.emulator_fixture import EmulatorHandle  # noqa: E402

MB = 1024 * 1024
KEY = "sk-bench"
KEY_ENV = "SYNCD_BENCH_API_KEY"
TIME = "/usr/bin/time"
PRINTABLE = bytes(range(0x20, 0x7F))

SDK = """
import sys
from openai import OpenAI
client = OpenAI(api_key=sys.argv[1], base_url=sys.argv[2], max_retries=0)
with open(sys.argv[3], "rb") as fh:
    created = client.files.create(file=fh, purpose="file-extract")
print(created.id)
"""

# The upload a Python client cannot beat: no library, 1 MiB blocks hashed as they are sent.
BARE = r"""
import hashlib, os, socket, sys
from urllib.parse import urlsplit
key, url, path = sys.argv[1:4]
u, size, b = urlsplit(url), os.path.getsize(path), "bench-boundary-7d1f"
head = (f'--{b}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfile-extract\r\n'
        f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="large.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\n").encode()
tail = f"\r\n--{b}--\r\n".encode()
s = socket.create_connection((u.hostname, u.port))
s.sendall((f"POST {u.path}/files HTTP/1.1\r\nHost: {u.netloc}\r\n"
           f"Authorization: Bearer {key}\r\nContent-Type: multipart/form-data; boundary={b}\r\n"
           f"Content-Length: {len(head) + size + len(tail)}\r\n\r\n").encode() + head)
digest = hashlib.sha256()
with open(path, "rb") as fh:
    while block := fh.read(1 << 20):
        digest.update(block)
        s.sendall(block)
s.sendall(tail)
status = s.recv(65536).split(b"\r\n", 1)[0]
sys.exit(0 if b" 200 " in status else f"{status!r}")
"""

# syncd's client, the upload call alone (send: the file and the hash of what it sent):
# prints its wall and CPU seconds.
CLIENT = """
import sys, time
from syncd.api.client import FilesClient
from syncd.api.key import ApiKey
client = FilesClient(sys.argv[2], ApiKey(sys.argv[1]))
wall, cpu = time.perf_counter(), time.process_time()
sent = client.send(sys.argv[3], "file-extract")
assert sent.sha256, "the upload did not hash what it sent"
print(time.perf_counter() - wall, time.process_time() - cpu)
"""

# What a reconcile imports (httpcore: when its client is built), after what the command
# trims first (a revision without trim_start_up trimmed httpx and structlog in main).
SYNCD_IMPORTS = ("import syncd.__main__ as m, syncd._startup as s; "
                 "(m.trim_start_up if hasattr(m, 'trim_start_up') else lambda: "
                 "(s.load_without('httpx', 'httpx._main'), "
                 "s.load_without('structlog', 'rich')))(); "
                 "import syncd.cli, syncd.bootstrap, syncd.remote_problem, syncd.daemon.control, "
                 "syncd.engine.publish, httpcore")  # fmt: skip


@dataclass
class Contender:
    name: str
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    peaks_mb: list[float] = field(default_factory=list)
    imports: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, wall: float, cpu: float, peak_mb: float) -> None:
        self.walls.append(wall)
        self.cpus.append(cpu)
        self.peaks_mb.append(peak_mb)

    def reset(self) -> None:
        self.walls, self.cpus, self.peaks_mb, self.imports, self.notes = [], [], [], [], []

    def import_cpu(self, code: str, env: dict[str, str], cwd: Path = REPO) -> None:
        """CPU time of ``code`` (imports) in a fresh ``python``, start-up and exit excluded."""
        timed = f"import time; t = time.process_time(); {code}; print(time.process_time() - t)"
        self.imports.append(float(run_measured([sys.executable, "-c", timed], env, cwd)[3]))


def make_file(path: Path, size: int) -> None:
    """Printable text that does not compress or repeat: random letters, lines of 100."""
    rng = random.Random(147)
    table = bytes(PRINTABLE[b % len(PRINTABLE)] for b in range(256))
    with path.open("wb") as fh:
        left = size
        while left:
            block = bytearray(rng.randbytes(min(left, MB)).translate(table))
            block[99::100] = b"\n" * len(block[99::100])
            fh.write(block)
            left -= len(block)


def run_measured(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path = REPO
) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (MiB) of the command's own
    process, and its stdout. On a busy machine CPU time varies far less than wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.NamedTemporaryFile(suffix=".rss") as rss:
        timed = [TIME, "-f", "%M", "-o", rss.name, *cmd] if Path(TIME).exists() else cmd
        started = time.monotonic()
        proc = subprocess.Popen(timed, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                cwd=str(cwd))  # fmt: skip
        peak_kb = 0
        if timed is cmd:
            while proc.poll() is None:
                peak_kb = max(peak_kb, _hwm_kb(proc.pid))
                time.sleep(0.005)
        out, err = proc.communicate()
        wall = time.monotonic() - started
        if timed is not cmd:
            lines = Path(rss.name).read_text().split()
            peak_kb = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{out.decode()[-2000:]}\n"
            f"{err.decode()[-2000:]}"
        )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, peak_kb / 1024, out.decode()


def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def wipe(emu: EmulatorHandle) -> int:
    """Delete every file of the account, so runs do not fill the disk; returns the count."""
    headers = {"Authorization": f"Bearer {KEY}"}
    gone = 0
    with httpx.Client(base_url=emu.url, headers=headers, timeout=30) as client:
        for f in emu.files():
            client.delete(f"/files/{f['id']}").raise_for_status()
            gone += 1
    return gone


def expect_one(emu: EmulatorHandle, size: int, who: str) -> None:
    files = emu.files()
    if len(files) != 1 or files[0]["bytes"] != size:
        shown = [(f["filename"], f["bytes"]) for f in files]
        raise SystemExit(f"{who}: expected one file of {size} bytes, found {shown}")


def syncd_config(where: Path, root: Path, url: str) -> Path:
    data = {
        "project": "bench-large",
        "root": str(root),
        "state_dir": str(where / "state"),
        "mapping_file": str(where / "mapping.json"),
        "api": {"base_url": url, "api_key_env": KEY_ENV},
        "limits": {"upload_qps": 500, "read_qps": 500, "delete_qps": 500,
                   "pacing_dir": str(where / "pacing")},
        "logging": {"level": "warning"},
    }  # fmt: skip
    path = where / "syncd.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def syncd_once(
    contender: Contender, where: Path, root: Path, emu: EmulatorHandle, env: dict[str, str],
    source: Path,
) -> None:
    """One ``syncd reconcile`` (of the code in ``source``) with a fresh state, pacing
    folder and mapping."""
    where.mkdir()
    config = syncd_config(where, root, emu.url)
    wall, cpu, peak, out = run_measured(
        [sys.executable, "-m", "syncd", "reconcile", "-c", str(config), "--json"],
        {**env, "PYTHONPATH": str(source)}, source,
    )  # fmt: skip
    expect_one(emu, root.joinpath("large.txt").stat().st_size, "syncd")
    mapping = json.loads((where / "mapping.json").read_text())["files"]
    if list(mapping) != ["large.txt"]:
        raise SystemExit(f"syncd mapping: {mapping}")
    wipe(emu)
    contender.add(wall, cpu, peak)
    contender.notes.append(str(json.loads(out).get("hashed")))


def export(rev: str, into: Path) -> Path:
    """The ``syncd`` package as of ``rev``, to run beside the working tree's."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "syncd"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=147, help="file size in MiB")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--target", type=float, help="syncd / curl throughput (default 0.80;"
                        " 0.90 with --bandwidth)")
    parser.add_argument("--bandwidth", metavar="SIZE",
                        help="the emulator's link, e.g. 50MB (default: loopback, unshaped)")
    parser.add_argument("--call-target", type=float,
                        help="the upload call alone / curl (default 0.97 with --bandwidth)")
    parser.add_argument("--max-rss", type=float, metavar="MIB",
                        help="a reconcile's peak RSS (default 60 with --bandwidth)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run syncd as of this git revision (before/after in one run)")
    args = parser.parse_args()
    shaped = args.bandwidth is not None
    target = args.target if args.target is not None else (0.90 if shaped else 0.80)
    call_target = args.call_target if args.call_target is not None else (0.97 if shaped else 0)
    max_rss = args.max_rss if args.max_rss is not None else (60.0 if shaped else float("inf"))
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed")
    size = args.mb * MB
    work = Path(tempfile.mkdtemp(prefix="bench-large-upload-"))
    root = work / "root"
    root.mkdir()
    big = root / "large.txt"
    make_file(big, size)
    # Python processes start as an installed program would: from compiled bytecode (kept
    # out of the repository), after one untimed warm-up round.
    env = {**os.environ, KEY_ENV: KEY, "PYTHONPATH": str(REPO),
           "PYTHONPYCACHEPREFIX": str(work / "pycache")}  # fmt: skip
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    curl = Contender("curl -F")
    sdk = Contender("openai SDK (files.create)")
    bare = Contender("python, socket + sha256, no imports")
    syncd = Contender("syncd reconcile")
    call = Contender("syncd FilesClient.upload, the call alone")
    sources = [(syncd, REPO)]
    if args.baseline:
        sources.append((Contender(f"syncd reconcile @ {args.baseline}"),
                        export(args.baseline, work / "baseline")))  # fmt: skip
    everyone = (curl, sdk, bare, *(c for c, _ in sources), call)
    link = ["--bandwidth", args.bandwidth] if shaped else []
    emu = EmulatorHandle(work / "emu", [KEY], ["--rate-limit", "off", *link],
                         work / "emulator.log")  # fmt: skip
    try:
        for rep in range(-1, args.reps):
            wall, cpu, peak, _ = run_measured([
                "curl", "-sS", "--fail-with-body", "-o", "/dev/null",
                "-H", f"Authorization: Bearer {KEY}",
                "-F", f"file=@{big}", "-F", "purpose=file-extract", f"{emu.url}/files",
            ])  # fmt: skip
            expect_one(emu, size, "curl")
            curl.add(wall, cpu, peak)
            wipe(emu)

            wall, cpu, peak, _ = run_measured(
                [sys.executable, "-c", SDK, KEY, emu.url, str(big)], env
            )
            expect_one(emu, size, "sdk")
            sdk.add(wall, cpu, peak)
            wipe(emu)
            sdk.import_cpu("import openai", env)

            wall, cpu, peak, _ = run_measured(
                [sys.executable, "-c", BARE, KEY, emu.url, str(big)], env
            )
            expect_one(emu, size, "bare python")
            bare.add(wall, cpu, peak)
            wipe(emu)

            _, _, peak, out = run_measured(
                [sys.executable, "-c", CLIENT, KEY, emu.url, str(big)], env
            )
            expect_one(emu, size, "syncd's client")
            call.add(*map(float, out.split()), peak)
            wipe(emu)

            for i, (contender, source) in enumerate(sources):
                syncd_once(contender, work / f"syncd-{rep}-{i}", root, emu, env, source)
                contender.import_cpu(SYNCD_IMPORTS, {**env, "PYTHONPATH": str(source)}, source)
            if rep < 0:  # the warm-up round
                for c in everyone:
                    c.reset()
                continue
            shown = ", ".join(f"{c.name} {c.walls[-1]:.2f} s" for c in everyone)
            print(f"run {rep + 1}: {shown}", file=sys.stderr, flush=True)
    finally:
        emu.stop()
        shutil.rmtree(work, ignore_errors=True)

    floor = statistics.median(curl.walls)
    where = f"link shaped to {args.bandwidth}/s" if shaped else "loopback"
    print(f"{args.mb} MiB .txt, {args.reps} runs each (median), emulator on {where}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print()
    print("| contender | wall s | MiB/s | × curl throughput | CPU s | import CPU s "
          "| peak RSS MiB | runs (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for c in everyone:
        wall = statistics.median(c.walls)
        runs = " / ".join(f"{w:.2f}" for w in c.walls)
        imports = f"{statistics.median(c.imports):.2f}" if c.imports else "–"
        print(f"| {c.name} | {wall:.2f} | {args.mb / wall:.0f} | {floor / wall:.2f} | "
              f"{statistics.median(c.cpus):.2f} | {imports} | {max(c.peaks_mb):.0f} | "
              f"{runs} |")  # fmt: skip
    print()
    for c, _ in sources:
        print(f"{c.name}: files hashed by the scan, per run: {', '.join(c.notes)}")
    ratio = floor / statistics.median(syncd.walls)
    alone = floor / statistics.median(call.walls)
    rss = max(syncd.peaks_mb)
    print(f"targets: reconcile {ratio:.2f}× curl (≥ {target}), the call alone {alone:.2f}× "
          f"(≥ {call_target}), reconcile peak RSS {rss:.0f} MiB (≤ {max_rss})")
    return 0 if ratio >= target and alone >= call_target and rss <= max_rss else 1


if __name__ == "__main__":
    sys.exit(main())
