"""The systemd units (hardening score, syntax) and the sd_notify protocol.

The unit checks need ``systemd-analyze`` (Debian: ``apt-get install -y systemd``;
``.ci/run`` may install it) and are skipped without it. The notify checks use
real AF_UNIX datagram sockets and run everywhere on Linux.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.daemon.notify import Notifier
from syncd.exitcodes import ExitCode
from tests.install_helpers import OUTSIDE_PREFIX, code_lines, install_block, paths_outside_prefix

REPO = Path(__file__).resolve().parent.parent
UNITS = ("syncd.service", "syncd@.service")
MAX_EXPOSURE = 2.0

analyze = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(analyze is None, reason="systemd-analyze is not installed")


def unit_copy(tmp_path: Path, name: str) -> Path:
    """The unit with ExecStart pointing at a binary that exists here: `verify`
    rejects a unit whose command is missing, and syncd may not be installed."""
    text = (REPO / "systemd" / name).read_text()
    text = re.sub(
        r"^ExecStart=\S+", f"ExecStart={shutil.which('true') or '/bin/true'}", text, flags=re.M
    )
    path = tmp_path / name
    path.write_text(text)
    return path


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_exposure_score(tmp_path: Path, name: str) -> None:
    assert analyze is not None
    unit = unit_copy(tmp_path, name)
    out = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out.stdout)
    assert match, out.stdout + out.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, out.stdout


@needs_analyze
def test_units_verify(tmp_path: Path) -> None:
    assert analyze is not None
    units = [str(unit_copy(tmp_path, name)) for name in UNITS]
    out = subprocess.run(
        [analyze, "verify", "--no-pager", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # verify also warns without failing (unknown keys, bad values): treat as errors.
    noise = [
        line for line in (out.stdout + out.stderr).splitlines() if line.strip() and "syncd" in line
    ]
    assert noise == []


def _directives(text: str, section: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = line
        elif line and not line.startswith("#") and current == section:
            lines.append(line)
    return lines


def test_units_agree_and_carry_the_contract() -> None:
    single = (REPO / "systemd" / "syncd.service").read_text()
    template = (REPO / "systemd" / "syncd@.service").read_text()
    per_instance = ("ExecStart=", "StateDirectory=", "LoadCredential=")
    strip = lambda t: [d for d in _directives(t, "[Service]") if not d.startswith(per_instance)]  # noqa: E731
    assert strip(single) == strip(template), "the two units' sandboxes drifted apart"
    service = _directives(template, "[Service]")
    for required in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "StateDirectory=syncd/%i",
        # The credential keeps the key file's name, so that the documented
        # ${CREDENTIALS_DIRECTORY:-/etc/syncd}/NAME.key names one file in and out of the unit.
        "LoadCredential=%i.key:/etc/syncd/%i.key",
        # The venv the install steps in systemd/README.md build.
        "ExecStart=/opt/syncd/bin/syncd run -c /etc/syncd/%i.yaml",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "MemoryDenyWriteExecute=yes",
    ):
        assert required in service, required
    assert any(d.startswith("WatchdogSec=") for d in service)
    # The daemon exits 2 for a bad config or a refused key: restarting cannot help.
    # 4 (another syncd holds the state directory) is worth a restart later.
    assert "RestartPreventExitStatus=2" in service
    assert not any(d.startswith("RestartPreventExitStatus=") and "4" in d for d in service)
    # Stop must outlast the daemon's default shutdown_timeout_s (30 s).
    stop = next(d for d in service if d.startswith("TimeoutStopSec="))
    assert int(stop.split("=")[1].rstrip("s")) > 30


@pytest.mark.parametrize("name", UNITS)
def test_unit_comments_name_the_exit_codes_the_code_uses(name: str) -> None:
    text = (REPO / "systemd" / name).read_text()
    comment = " ".join(
        line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")
    )
    assert f"{int(ExitCode.USAGE)} = invalid configuration or a key the provider refuses" in comment
    assert f"{int(ExitCode.LOCKED)} = another syncd" in comment
    assert f"{int(ExitCode.UNREACHABLE)} (remote unreachable)" in comment
    service = _directives(text, "[Service]")
    assert f"RestartPreventExitStatus={int(ExitCode.USAGE)}" in service


# ---------------------------------------------------------------- the install block
# tests/test_install.py runs it; these are the rules it must keep to be run that way.


def test_install_block_stops_at_the_first_error() -> None:
    block = install_block()
    assert block.startswith("#!/usr/bin/env bash\n")
    code = [line for line in code_lines(block) if line.strip()]
    assert code[0] == "set -euo pipefail"
    assert not [line for line in code if re.search(r"\bsudo\b", line)], "run as root, no sudo"


def test_install_block_checks_before_it_starts_anything() -> None:
    code = code_lines(install_block())

    def at(pattern: str) -> int:
        found = [i for i, line in enumerate(code) if re.search(pattern, line)]
        assert len(found) == 1, (pattern, found)
        return found[0]

    check_config = at(r'^"\$VENV/bin/syncd" check-config -c ')
    steps = [
        at(r'^"\$VENV/bin/pip" install .*"\$WHEEL"$'),
        at(r"\$RUN useradd --system --user-group "),
        at(r"\$RUN runuser -u syncd -- test -r "),
        at(r"^\$RUN chown syncd:syncd "),
        check_config,
        at(r"^systemd-analyze verify "),
        at(r"^\$RUN systemctl daemon-reload$"),
        at(r"^\$RUN systemctl enable --now "),
    ]
    assert steps == sorted(steps)
    # The unit comes from the wheel: no checkout needed.
    assert at(r'"\$VENV/share/syncd/systemd/syncd@\.service"') < check_config


def test_install_block_dry_run_covers_accounts_and_services() -> None:
    """SYNCD_INSTALL_DRY=1 prints every step that changes accounts or services, so the
    test can run the rest of the block as root without touching this machine."""
    code = code_lines(install_block())
    changes = re.compile(r"\b(useradd|groupadd|usermod|chown|chgrp|runuser|systemctl)\b")
    changing = [line for line in code if changes.search(line)]
    bare = [line for line in changing if not re.match(r"\s*(if ! )?\$RUN ", line)]
    assert changing and not bare, bare
    assert "RUN=" in code and 'if [ "${SYNCD_INSTALL_DRY:-0}" = 1 ]; then RUN=echo; fi' in code
    assert "PREFIX=${PREFIX:-}" in code
    assert paths_outside_prefix(install_block()) <= OUTSIDE_PREFIX


# ---------------------------------------------------------------- sd_notify


class Listener:
    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5)

    def recv(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[str]:
    # sun_path holds 108 bytes; pytest's tmp_path may be longer.
    path = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="AF_UNIX datagrams, Linux")
def test_notify_filesystem_socket(short_dir: str) -> None:
    path = os.path.join(short_dir, "notify")
    listener = Listener(path)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": path})
        assert n.enabled and n.watchdog_interval_s is None
        assert n.ready("caught up; queue 0")
        assert listener.recv() == {"READY": "1", "STATUS": "caught up; queue 0"}
        assert n.status("queue 3; synced 10")
        assert listener.recv() == {"STATUS": "queue 3; synced 10"}
        assert n.watchdog()
        assert listener.recv() == {"WATCHDOG": "1"}
        assert n.extend_timeout(2.5)
        assert listener.recv() == {"EXTEND_TIMEOUT_USEC": "2500000"}
        assert n.stopping()
        assert listener.recv() == {"STOPPING": "1"}
        n.close()
    finally:
        listener.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_notify_abstract_socket() -> None:
    name = f"syncd-test-{uuid.uuid4().hex}"
    listener = Listener("\0" + name)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert listener.recv() == {"READY": "1"}
    finally:
        listener.close()


def test_notify_without_socket_is_a_noop() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False
    assert n.watchdog_interval_s is None


def test_notify_to_missing_socket_does_not_raise(short_dir: str) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": os.path.join(short_dir, "nobody")})
    assert n.ready() is False
    assert n.status("x") is False


def test_watchdog_interval_is_half_the_timeout() -> None:
    pid = str(os.getpid())
    n = Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": pid})
    assert n.watchdog_interval_s == 30.0
    other = Notifier.from_env(
        {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}
    )
    assert other.watchdog_interval_s is None  # meant for another process
    bad = Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "soon"})
    assert bad.watchdog_interval_s is None


# ---------------------------------------------------------------- MemoryDenyWriteExecute

MDWE_PROBE = r"""
import ctypes, mmap, sys, tempfile, time, pathlib
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X mapping was not refused")
except OSError:
    pass
import sqlite3, ssl, httpx, yaml, structlog
from syncd.daemon.settle import SettleQueue
from syncd.daemon.watch import QueueingHandler, Watcher
root = pathlib.Path(tempfile.mkdtemp())
q = SettleQueue(settle_s=0, max_settle_s=1, max_pending=10)
w = Watcher(root, QueueingHandler(root, q, lambda p: True), mode="inotify", poll_interval_s=1)
assert w.start() == "inotify"
(root / "a.txt").write_text("x")
deadline = time.monotonic() + 10
while len(q) == 0 and time.monotonic() < deadline:
    time.sleep(0.02)
w.stop()
assert len(q) == 1
sqlite3.connect(":memory:").execute("select 1")
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_runs_under_memory_deny_write_execute() -> None:
    """The kernel's PR_SET_MDWE is what MemoryDenyWriteExecute=yes enforces (via
    seccomp in systemd): watchdog's ctypes bindings, sqlite and ssl must work."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, env=env, timeout=60
    )
    if out.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
