"""The running daemon's control socket and metrics, against a real ``syncd run`` process
and a real emulator: status and reconcile through the socket, SIGUSR1, Prometheus
metrics scraped over HTTP, the remote going away and coming back."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.emulator_fixture import EmulatorHandle
from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux daemon")

CONFIG = """\
project: control
root: {root}
state_dir: {state}
api:
  base_url: {url}
limits:
  pacing_dir: {pacing}
sync:
  settle_s: 0.2
  max_settle_s: 5
watch:
  mode: {mode}
  poll_interval_s: {poll}
reconcile:
  interval_s: 3600
daemon:
  shutdown_timeout_s: 10
{metrics}"""


class Project:
    def __init__(self, base: Path, emulator: EmulatorHandle, *, mode: str = "auto",
                 poll: float = 0.2, metrics_port: int | None = None) -> None:
        self.root, self.state = base / "root", base / "state"
        self.root.mkdir()
        self.key = emulator.api_key
        self.metrics_port = metrics_port
        metrics = f"  metrics: 127.0.0.1:{metrics_port}\n" if metrics_port else ""
        self.config = base / "syncd.yaml"
        self.config.write_text(CONFIG.format(
            root=self.root, state=self.state, url=emulator.url, pacing=base / "pacing",
            mode=mode, poll=poll, metrics=metrics))
        self.log = base / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "DASHSCOPE_API_KEY": self.key}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        return env

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(self.config)],
                stdout=fh, stderr=subprocess.STDOUT, env=self.env(), cwd=str(REPO))
        wait_for(lambda: self.live_status().get("phase") == "idle", timeout=40,
                 what=f"daemon idle; log:\n{self.log_text()}")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def syncd(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args, "-c", str(self.config)],
            capture_output=True, text=True, env=self.env(), cwd=str(REPO), timeout=timeout)

    def status(self) -> dict[str, Any]:
        run = self.syncd("status", "--json")
        assert run.returncode in (0, 1), run.stderr
        data: dict[str, Any] = json.loads(run.stdout)
        return data

    def live_status(self) -> dict[str, Any]:
        """The daemon's status, or {} while it does not answer yet."""
        sock = self.state / "control.sock"
        if not sock.exists():
            return {}
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=5) as c:
                data: dict[str, Any] = c.get("http://syncd/v1/status").json()
                return data
        except httpx.HTTPError:
            return {}

    def mapping(self) -> dict[str, Any]:
        try:
            files: dict[str, Any] = json.loads((self.state / "mapping.json").read_text())["files"]
            return files
        except (OSError, ValueError, KeyError):
            return {}

    def scrape(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Samples by name, then by sorted labels, parsed by prometheus_client's parser."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        return samples


@pytest.fixture
def project_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its 0700 parents would refuse another user before the
    # socket's own mode is ever consulted.
    base = Path(tempfile.mkdtemp(prefix="syncd-ctl-"))
    os.chmod(base, 0o755)
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture
def running(project_dir: Path, emulator: EmulatorHandle) -> Iterator[Project]:
    # Polling once an hour: files appear to the daemon only through a reconcile, so what
    # a reconcile (or a dry run) does is seen alone.
    project = Project(project_dir, emulator, mode="polling", poll=3600)
    for i in range(6):
        (project.root / f"f{i}.txt").write_text(f"file {i}")
    project.start()
    yield project
    if project.proc is not None and project.proc.poll() is None:
        project.proc.kill()
        project.proc.wait()


def connect_as(uid: int, path: Path) -> str:
    """Connect to ``path`` from a child process running as ``uid``."""
    pid = os.fork()
    if pid == 0:  # the child: only os-level calls, then _exit
        code = 3
        try:
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
            code = 0
        except PermissionError:
            code = 1
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    return {0: "connected", 1: "refused"}.get(os.waitstatus_to_exitcode(status), "error")


def by_class(samples: dict[tuple[tuple[str, str], ...], float], label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in samples.items():
        key = dict(labels)[label]
        out[key] = out.get(key, 0.0) + value
    return out


def test_status_and_reconcile_go_through_the_daemon(
    running: Project, emulator: EmulatorHandle
) -> None:
    p = running
    assert p.proc is not None
    sock = p.state / "control.sock"
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()

    status = p.status()
    assert status["source"] == "daemon" and status["pid"] == p.proc.pid
    assert status["phase"] == "idle" and status["queue"] == 0
    assert status["watch_mode"] == "polling"
    assert set(status["pacer"]) == {"upload", "read", "delete"}
    assert status["pacer"]["upload"]["ceiling_per_s"] == 20.0
    assert status["counts"] == {"synced": 6}
    assert status["quota"]["files"] == 6 and status["quota"]["max_files"] == 10_000
    assert status["remote"]["reachable"] is True
    text = p.syncd("status")
    assert text.returncode == 0 and f"daemon: running (pid {p.proc.pid}" in text.stdout

    # A dry run returns the daemon's plan and changes nothing.
    (p.root / "new.txt").write_text("new")
    mutations = emulator.stats()["mutations"]
    dry = p.syncd("reconcile", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["source"] == "daemon" and plan["dry_run"] is True
    assert [u["path"] for u in plan["planned"]["upload"]] == ["new.txt"]
    assert emulator.stats()["mutations"] == mutations and "new.txt" not in p.mapping()

    done = p.syncd("reconcile")
    assert done.returncode == 0, done.stderr
    assert "uploaded 1" in done.stdout and "running daemon" in done.stderr
    assert "new.txt" in p.mapping()

    # Deleting most files: the daemon's deletion guard refuses, and the CLI says so (exit 3).
    for i in range(6):
        (p.root / f"f{i}.txt").unlink()
    refused = p.syncd("reconcile", "--json")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert json.loads(refused.stdout)["refused"]
    assert len(emulator.truth_files()) == 7

    # SIGUSR1 reconciles too; the refused plan still deletes nothing, an added file syncs.
    for i in range(6):
        (p.root / f"f{i}.txt").write_text(f"file {i}")
    (p.root / "usr1.txt").write_text("signalled")
    p.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "usr1.txt" in p.mapping(), timeout=20, what="SIGUSR1 reconcile")

    # Another user cannot connect: the socket's mode refuses (the folder lets them reach it).
    if os.geteuid() == 0:
        os.chmod(p.state, 0o755)
        assert connect_as(65534, sock) == "refused"
        assert connect_as(0, sock) == "connected"  # the same probe can succeed

    assert p.stop() == 0
    assert not sock.exists()
    after = p.status()
    assert after["source"] == "state" and after["daemon"] == {"running": False}
    assert after["counts"] == {"synced": 8}
    assert "daemon: not running" in p.syncd("status").stdout


def test_metrics_during_a_storm_match_the_emulator(
    project_dir: Path, emulator: EmulatorHandle
) -> None:
    files = 1000
    p = Project(project_dir, emulator, metrics_port=free_port())
    (p.root / "seed.txt").write_text("seed")
    p.start()
    try:
        before = p.scrape()
        assert before["syncd_phase"][(("phase", "idle"),)] == 1.0
        assert before["syncd_watch_mode"][(("mode", "inotify"),)] == 1.0
        total = 0
        for i in range(files):
            body = f"storm file {i}\n" * (1 + i % 7)
            (p.root / f"storm/{i:04d}.txt").parent.mkdir(exist_ok=True)
            (p.root / f"storm/{i:04d}.txt").write_text(body)
            total += len(body)
        # Mid-storm: the exposition parses and shows the work in progress.
        mid = wait_for(lambda: (s := p.scrape())["syncd_api_requests_total"] and s
                       if len(p.mapping()) > 10 else None, timeout=30, what="storm under way")
        assert by_class(mid["syncd_api_requests_total"], "call_class")["upload"] > 1
        wait_for(lambda: len(p.mapping()) == files + 1, timeout=180, what="storm synced")
        wait_for(lambda: p.live_status().get("phase") == "idle", timeout=15, what="idle")

        samples = p.scrape()
        stats = emulator.stats()
        ours = by_class(samples["syncd_api_requests_total"], "call_class")
        assert {c: int(ours.get(c, 0)) for c in ("upload", "read", "delete")} == stats["requests"]
        throttled = {
            dict(k)["call_class"]: int(v)
            for k, v in samples["syncd_api_requests_total"].items() if dict(k)["outcome"] == "429"
        }
        assert throttled == stats["throttled"]
        files_by_status = {dict(k)["status"]: int(v) for k, v in samples["syncd_files"].items()}
        assert files_by_status == p.status()["counts"] == {"synced": files + 1}
        assert samples["syncd_upload_bytes_total"][()] == total + len("seed")
        assert samples["syncd_queue_length"][()] == 0
        assert samples["syncd_account_used_files"][()] == files + 1
        assert samples["syncd_account_limit_files"][()] == 10_000
        latency = samples["syncd_event_to_mapping_seconds_count"][()]
        assert latency >= files
        assert samples["syncd_reconcile_duration_seconds_count"][()] >= 1
        assert samples["syncd_last_successful_reconcile_timestamp_seconds"][()] > 0
        for name in ("syncd_pacer_rate_per_second", "syncd_pacer_ceiling_estimate_per_second"):
            assert set(by_class(samples[name], "call_class")) == {"upload", "read", "delete"}
        # Never a path as a label.
        for series in samples.values():
            for labels in series:
                assert not any("storm/" in v or v.endswith(".txt") for _k, v in labels)
    finally:
        p.stop()


def test_remote_down_and_back(project_dir: Path, emulator: EmulatorHandle) -> None:
    p = Project(project_dir, emulator, metrics_port=free_port())
    (p.root / "before.txt").write_text("before")
    p.start()
    try:
        emulator.stop()
        wait_for(lambda: p.status().get("phase") == "remote unreachable", timeout=10,
                 interval=0.2, what="status says remote unreachable")
        samples = p.scrape()
        assert samples["syncd_remote_up"][()] == 0.0
        assert samples["syncd_phase"][(("phase", "remote unreachable"),)] == 1.0
        down = p.syncd("status")
        assert down.returncode == 1 and "remote unreachable since" in down.stdout

        # Written while the remote is away: queued, and synced once it is back.
        for name in ("during-1.txt", "during-2.txt"):
            (p.root / name).write_text(name)
        emulator.start()
        wait_for(lambda: p.status().get("phase") == "idle"
                 and {"during-1.txt", "during-2.txt"} <= set(p.mapping()),
                 timeout=10, interval=0.2, what="idle again, nothing lost")
        names = {f["filename"] for f in emulator.truth_files()}
        assert {"before.txt", "during-1.txt", "during-2.txt"} <= names
        assert p.scrape()["syncd_remote_up"][()] == 1.0
    finally:
        p.stop()


def post_reconcile(p: Project, body: Any) -> httpx.Response:
    """POST /v1/reconcile as any client of the socket would, not through syncd's CLI."""
    sock = p.state / "control.sock"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=60) as c:
        return c.post("http://syncd/v1/reconcile", json=body)


def test_paths_outside_the_root_are_refused(running: Project, emulator: EmulatorHandle) -> None:
    p = running
    outside = p.root.parent / "outside.txt"
    outside.write_text("not in the root")
    (p.root / "sub").mkdir()
    before = sorted(f["filename"] for f in emulator.truth_files())

    for bad in ("sub/../../outside.txt", "../outside.txt", str(outside)):
        run = p.syncd("reconcile", "--path", bad)
        assert run.returncode == 2, run.stdout + run.stderr
        assert repr(bad) in run.stderr and "root" in run.stderr, run.stderr
        # Any client of the socket is refused the same way, before anything runs.
        answer = post_reconcile(p, {"paths": ["a.txt", bad]})
        assert answer.status_code == 400, answer.text
        assert repr(bad) in answer.json()["error"]
    assert sorted(f["filename"] for f in emulator.truth_files()) == before
    assert not any("outside" in path for path in p.mapping())

    # A path that stays inside is taken in its plain form.
    (p.root / "sub" / "a.txt").write_text("inside")
    done = p.syncd("reconcile", "--path", "./sub/./a.txt")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "uploaded 1" in done.stdout
    assert "sub/a.txt" in p.mapping() and "outside.txt" not in p.mapping()
    assert p.stop() == 0


def test_max_delete_in_a_request_is_checked_like_the_flag(running: Project) -> None:
    p = running
    for i in range(5):
        (p.root / f"f{i}.txt").unlink()
    for bad in ("lots", "150%", -1, True):
        answer = post_reconcile(p, {"max_delete": bad})
        assert answer.status_code == 400, answer.text
        assert "max_delete: expected a count" in answer.json()["error"]
        assert repr(bad) in answer.json()["error"]
    flag = p.syncd("reconcile", "--max-delete", "lots")
    assert flag.returncode == 2 and "expected a count" in flag.stderr, flag.stderr
    # Nothing ran: every file is still tracked and on the remote.
    assert len(p.mapping()) == 6
    assert p.stop() == 0


def test_max_delete_reaches_the_daemons_run_for_that_run_only(
    running: Project, emulator: EmulatorHandle
) -> None:
    p = running
    (p.root / "f6.txt").write_text("file 6")
    assert p.syncd("reconcile").returncode == 0
    assert len(emulator.truth_files()) == 7
    for i in range(5):
        (p.root / f"f{i}.txt").unlink()

    refused = p.syncd("reconcile")  # 5 of 7 is over the default 50%
    assert refused.returncode == 3, refused.stdout + refused.stderr
    done = p.syncd("reconcile", "--max-delete", "100%")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "running daemon" in done.stderr and "deleted 5" in done.stdout
    assert sorted(f["filename"] for f in emulator.truth_files()) == ["f5.txt", "f6.txt"]
    assert sorted(p.mapping()) == ["f5.txt", "f6.txt"]

    # The override was for that run only: the config's 50% holds again.
    for i in range(4):
        (p.root / f"g{i}.txt").write_text(f"g {i}")
    assert p.syncd("reconcile").returncode == 0
    for name in ("f5.txt", "f6.txt", "g0.txt", "g1.txt"):
        (p.root / name).unlink()
    again = p.syncd("reconcile")
    assert again.returncode == 3, again.stdout + again.stderr
    assert len(emulator.truth_files()) == 6
    assert p.stop() == 0
