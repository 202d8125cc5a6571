"""The API key appears in 0 bytes of anything syncd writes: stdout, stderr, state,
mapping, pacing files, the embedded emulator's data, file names, across normal runs,
a refused key, the daemon, the ways a config file can point at the key wrongly, and
a provider or gateway that echoes the Authorization header in every field of its errors."""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    KEY_ENV,
    Run,
    build_flat_tree,
    fast_emulator,
    read_mapping,
    run_syncd,
    syncd_cmd,
    syncd_env,
    write_config,
)
from tests.helpers import free_port, wait_for

KEY = "sk-Sec7ret0Distinct1ve4a9e5d"
WRONG = "sk-Wr0ngS3cretDistinct77b1c"
# A partial leak counts too: the middle, or the tail a careless proxy shows.
NEEDLES = (KEY, WRONG, KEY[3:-3], WRONG[3:-3], KEY[-10:], WRONG[-10:])


def _leaks(text: str) -> list[str]:
    return [n for n in NEEDLES if n in text]


def _leaks_in_tree(where: Path) -> list[str]:
    out = []
    for p in where.rglob("*"):
        out += [f"{p}: name" for n in NEEDLES if n in p.name]
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            out += [f"{p}: content" for n in NEEDLES if n.encode() in data]
    return out


@pytest.fixture
def outputs() -> Iterator[list[tuple[str, Run]]]:
    """Every run of a test; checked for the key once the test is done."""
    runs: list[tuple[str, Run]] = []
    yield runs
    assert runs, "no scenario ran"
    for what, run in runs:
        assert _leaks(run.output) == [], f"{what} leaked the key:\n{run.output}"


def test_normal_runs_a_refused_key_and_the_daemon(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    outputs: list[tuple[str, Run]],
) -> None:
    emu = fast_emulator(emulator_factory, api_key=[KEY])
    project = tmp_path / "project"
    project.mkdir()
    paths = build_flat_tree(tmp_path / "root", 20)
    cfg = write_config(project, tmp_path / "root", emu, logging={"format": "json",
                                                                 "level": "debug"})  # fmt: skip

    def run(command: str, *extra: str, key: str = KEY, code: int | None = 0) -> None:
        got = run_syncd(command, cfg, *extra, key=key)
        outputs.append((f"{command} {' '.join(extra)} key={key[:6]}", got))
        assert got.returncode == code if code is not None else got.returncode, got.output

    run("reconcile", "--json", key=WRONG, code=2)
    run("ls-remote", key=WRONG, code=None)  # refused, however it is reported
    run("check-config", "--online", key=WRONG, code=2)
    run("check-config")
    run("check-config", "--online")
    run("reconcile", "--json")
    assert set(read_mapping(project / "mapping.json")) == set(paths)
    run("reconcile")
    run("reconcile", "--dry-run")
    run("status")
    run("status", "--json")
    run("ls-remote")
    run("ls-remote", "--json")

    # The daemon, at debug level, through a change and a stop.
    log = project / "daemon.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(syncd_cmd("run", cfg), env=syncd_env(KEY), stdout=sink,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        (tmp_path / "root" / "late.txt").write_text("late\n")
        wait_for(lambda: "late.txt" in read_mapping(project / "mapping.json"), timeout=60,
                 what="the daemon to sync a new file")  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    outputs.append(("run", Run(0, log.read_text(), "")))
    assert _leaks_in_tree(project) == []


def test_embedded_emulator_keeps_no_key_on_disk(
    tmp_path: Path, outputs: list[tuple[str, Run]]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    build_flat_tree(tmp_path / "root", 5)
    cfg = write_config(project, tmp_path / "root", "embedded",
                       api={"embedded_port": free_port()})  # fmt: skip
    for command, extra in (("reconcile", ()), ("status", ()), ("ls-remote", ()),
                           ("check-config", ("--online",))):  # fmt: skip
        got = run_syncd(command, cfg, *extra, key=KEY)
        outputs.append((command, got))
        assert got.returncode == 0, got.output
    assert (project / "state" / "emulator").exists()
    assert _leaks_in_tree(project) == []


Answer = Callable[[str, str], tuple[int, Any]]


@contextlib.contextmanager
def _server(answer: Answer, heard: list[str]) -> Iterator[int]:
    """A real HTTP server on loopback that answers every request with ``answer(method,
    path)`` as JSON and notes each path with its Authorization header in ``heard``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def handle_any(self) -> None:
            heard.append(f"{self.path} {self.headers.get('Authorization')}")
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, data = answer(self.command, self.path)
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = handle_any

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_embedded_port_is_never_sent_a_real_key(
    tmp_path: Path, outputs: list[tuple[str, Run]]
) -> None:
    """Whoever binds the embedded emulator's port first (any local user can) gets the
    requests of ``base_url: embedded``: with the key exported, as on a host that also
    talks to the provider, they carry the emulator's key, never the real one."""
    heard: list[str] = []

    def squatter(_method: str, path: str) -> tuple[int, Any]:
        if path == "/_emulator/health":
            return 200, {}
        return 401, {"error": {"message": "no", "code": "invalid_api_key"}}

    project = tmp_path / "project"
    project.mkdir()
    build_flat_tree(tmp_path / "root", 2)
    with _server(squatter, heard) as port:
        cfg = write_config(project, tmp_path / "root", "embedded", api={"embedded_port": port})
        got = run_syncd("reconcile", cfg, key=KEY, env={"DASHSCOPE_API_KEY": KEY})
        outputs.append(("reconcile", got))
    asked = [h for h in heard if not h.startswith("/_emulator/health")]
    assert asked, heard  # the squatter was reached, as the real emulator would be
    assert all(h.endswith("Bearer sk-emulator") for h in asked), asked


def test_ids_and_names_that_spell_the_key_are_refused_not_stored(
    tmp_path: Path, outputs: list[tuple[str, Run]]
) -> None:
    """A provider (or what poses as one) that puts the key in a file's id or name in a
    successful answer: the id would go to the state and the mapping that consumers
    read. Such a file object is refused."""
    foreign = {"id": f"file-{KEY}", "object": "file", "bytes": 5, "created_at": 1,
               "filename": f"foreign-{KEY}.txt", "purpose": "file-extract"}  # fmt: skip

    def hostile(method: str, path: str) -> tuple[int, Any]:
        if method == "POST":
            return 200, {**foreign, "id": f"file-fe-{KEY}", "filename": "a.txt"}
        return 200, {"object": "list", "data": [foreign], "has_more": False}

    project = tmp_path / "project"
    project.mkdir()
    build_flat_tree(tmp_path / "root", 2)
    with _server(hostile, []) as port:
        cfg = write_config(project, tmp_path / "root", f"http://127.0.0.1:{port}/v1")
        for command in ("reconcile", "ls-remote", "status", "map"):
            got = run_syncd(command, cfg, key=KEY)
            outputs.append((command, got))
        assert run_syncd("reconcile", cfg, key=KEY).returncode != 0
    assert _leaks_in_tree(project) == []


# Config mistakes that put the key where a name or a path belongs. The key is in both
# variables, as on a host where DASHSCOPE_API_KEY is exported.
MISTAKES = {
    "api_key_env: ${DASHSCOPE_API_KEY}": {"api": {"api_key_env": "${DASHSCOPE_API_KEY}"}},
    "api_key_env: ${KEY_ENV}": {"api": {"api_key_env": "${" + KEY_ENV + "}"}},
    "api_key_file: ${DASHSCOPE_API_KEY}": {"api": {"api_key_env": None,
                                                   "api_key_file": "${DASHSCOPE_API_KEY}"}},
    "api_key_file: ${KEY_ENV}": {"api": {"api_key_env": None,
                                         "api_key_file": "${" + KEY_ENV + "}"}},
    "api_key_file: dir/${KEY_ENV}/key": {"api": {"api_key_env": None,
                                                 "api_key_file": "creds/${" + KEY_ENV + "}/k"}},
    # Only the variable the file path names holds the key: nothing tells it is one.
    "api_key_file: ${KEY_ENV}, key only there": {"api": {"api_key_env": None,
                                                         "api_key_file": "${" + KEY_ENV + "}"}},
    "api_key_env: the key itself": {"api": {"api_key_env": KEY}},
    # A key that happens to spell a variable name (letters, digits, _): only its case
    # tells it is no name anyone exports.
    "api_key_env: a key made of name characters": {"api": {"api_key_env": KEY[3:]}},
    "api_key_file: the key itself": {"api": {"api_key_env": None, "api_key_file": KEY}},
    "root: ${DASHSCOPE_API_KEY}": {"root": "${DASHSCOPE_API_KEY}"},
    "upload_qps: ${KEY_ENV}": {"limits": {"upload_qps": "${" + KEY_ENV + "}"}},
}  # fmt: skip


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_config_mistakes_never_echo_the_key(
    tmp_path: Path, mistake: str, outputs: list[tuple[str, Run]]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    build_flat_tree(tmp_path / "root", 3)
    # The config file lives outside the project folder: one mistake writes the key in it.
    configs = tmp_path / "configs"
    configs.mkdir()
    base = write_config(configs, tmp_path / "root", "http://127.0.0.1:9/compatible-mode/v1")
    data = yaml.safe_load(base.read_text("utf-8"))
    data["state_dir"] = str(project / "state")
    data["mapping_file"] = str(project / "mapping.json")
    data["limits"]["pacing_dir"] = str(project / "pacing")
    for section, value in MISTAKES[mistake].items():
        if isinstance(value, dict):
            data[section].update(value)
            data[section] = {k: v for k, v in data[section].items() if v is not None}
        else:
            data[section] = value
    cfg = configs / "syncd.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")

    commands = [("reconcile", "--json"), ("check-config",), ("check-config", "--online"),
                ("ls-remote",), ("status",)]  # fmt: skip
    exported = "" if "key only there" in mistake else KEY
    for command, *extra in commands:
        got = run_syncd(command, cfg, *extra, key=KEY, env={"DASHSCOPE_API_KEY": exported})
        outputs.append((f"{mistake}: {command}", got))
        if command in ("reconcile", "check-config"):
            assert got.returncode == 2, got.output
            assert got.stderr.startswith("syncd: "), got.stderr  # one clean message
        elif command == "ls-remote":
            assert got.returncode != 0, got.output
        # status needs no key: some of these mistakes touch only the key.
    assert _leaks_in_tree(project) == []


def test_check_config_errors_with_the_key_set(
    tmp_path: Path, outputs: list[tuple[str, Run]]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "project: p\nroot: ./nowhere\nstate_dir: ./state\napi:\n  base_url: ftp://x\n"
        "  api_key_env: SYNCD_TEST_API_KEY\nlimits:\n  upload_qps: nan\n",
        "utf-8",
    )
    got = run_syncd("check-config", bad, key=KEY, env={"DASHSCOPE_API_KEY": KEY})
    outputs.append(("check-config with errors", got))
    assert got.returncode == 2
    assert "api.base_url" in got.stderr and "limits.upload_qps" in got.stderr


def test_a_variable_copying_the_key_file_is_refused_like_the_key_variable(
    tmp_path: Path, outputs: list[tuple[str, Run]]
) -> None:
    """The key read from api.api_key_file and also copied in through another variable
    is refused at that value's line, by every command that loads the config."""
    project = tmp_path / "project"
    project.mkdir()
    build_flat_tree(tmp_path / "root", 2)
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n", "utf-8")
    cfg = write_config(project, tmp_path / "root", "http://127.0.0.1:9/v1",
                       api={"api_key_env": None, "api_key_file": str(key_file)})  # fmt: skip
    data = yaml.safe_load(cfg.read_text("utf-8"))
    data["api"] = {k: v for k, v in data["api"].items() if v is not None}
    data["project"] = "docs-${DEPLOY_TOKEN}"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    line = next(i for i, t in enumerate(cfg.read_text("utf-8").splitlines(), 1)
                if t.startswith("project:"))  # fmt: skip

    for command, *extra in (("check-config",), ("check-config", "--online"),
                            ("reconcile", "--json"), ("status",), ("ls-remote",)):  # fmt: skip
        got = run_syncd(command, cfg, *extra, key=None, env={"DEPLOY_TOKEN": KEY})
        outputs.append((f"key file copied: {command}", got))
        assert got.returncode == 2, got.output
        assert f"{cfg}:{line}: project: ${{DEPLOY_TOKEN}} holds the API key" in got.stderr, (
            got.output
        )
    assert not (project / "mapping.json").exists()
    assert _leaks_in_tree(project) == []


def _state_bytes(project: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((project / "state").rglob("*")) if p.is_file())


def test_error_bodies_that_echo_the_key_in_every_field(
    tmp_path: Path,
    emulator_factory: Callable[..., EmulatorHandle],
    outputs: list[tuple[str, Run]],
) -> None:
    """Every error answers with the request's Authorization header in its message, type,
    param, code, request_id, a nested object and the x-request-id header: as sent, the
    key alone, URL-encoded, and its tail. A refused key, uploads refused as invalid and
    over quota, a listing refused with a Retry-After: nothing shown or stored has it,
    in one-off runs (report, stderr), `status` and `status --json` (with and without the
    daemon), `check-config --online`, `ls-remote`, and the state database's bytes."""
    emu = fast_emulator(emulator_factory, api_key=[KEY], fault_echo_auth=True)
    project = tmp_path / "project"
    project.mkdir()
    root = tmp_path / "root"
    build_flat_tree(root, 6)
    cfg = write_config(project, root, emu, logging={"format": "json", "level": "debug"})

    def run(command: str, *extra: str, key: str = KEY, code: int | None = 0) -> Run:
        got = run_syncd(command, cfg, *extra, key=key)
        outputs.append((f"{command} {' '.join(extra)} key={key[:6]}", got))
        if code is not None:
            assert got.returncode == code, got.output
        return got

    # The emulator does echo it (else this test would prove nothing).
    probe = httpx.get(f"{emu.url}/files", headers={"Authorization": f"Bearer {WRONG}"})
    assert probe.status_code == 401 and WRONG in probe.text and WRONG in probe.headers[
        "x-request-id"] and WRONG[-12:] in probe.text  # fmt: skip

    # A refused key: the 401 echoes the wrong one everywhere.
    run("reconcile", "--json", key=WRONG, code=2)
    run("reconcile", key=WRONG, code=2)
    run("ls-remote", key=WRONG, code=None)
    run("check-config", "--online", key=WRONG, code=2)

    # Every upload refused as invalid: the reason is kept in the state and shown.
    emu.configure(fault_reject_upload=1.0)
    report = run("reconcile", "--json", code=1)
    assert "rejected by the provider" in report.output and "The file is invalid." in (
        report.output), report.output  # fmt: skip
    run("reconcile", code=1)
    shown = run("status", code=None)
    assert "The file is invalid." in shown.output, shown.output
    run("status", "--json", code=None)

    # Over quota: the provider's refusal is the reason.
    emu.configure(fault_reject_upload=0.0, max_files=0)
    (root / "more.txt").write_text("one more\n")
    quota = run("reconcile", "--json", code=1)
    assert "Upload file number exceed limit." in quota.output, quota.output
    run("status", code=None)
    run("status", "--json", code=None)

    # The daemon records and reports the same refusals (its status comes from it).
    emu.configure(fault_reject_upload=1.0, max_files=10_000)
    (root / "late.txt").write_text("late\n")
    log = project / "daemon.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(syncd_cmd("run", cfg), env=syncd_env(KEY), stdout=sink,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: "late.txt" in run("status", "--json", code=None).stdout, timeout=60,
                 what="the daemon to report the refused file")  # fmt: skip
        run("status", code=None)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    outputs.append(("run", Run(0, log.read_text(), "")))

    # A listing refused (429) with a Retry-After longer than any call waits.
    emu.configure(fault_reject_upload=0.0, fault_429=1.0, fault_429_retry_after=3600)
    listing = run("reconcile", "--json", code=None)
    assert listing.returncode != 0 and "cannot list remote files" in listing.output, (
        listing.output)  # fmt: skip
    run("ls-remote", code=None)
    run("check-config", "--online", code=2)
    run("status", code=None)
    run("status", "--json", code=None)

    assert _leaks_in_tree(project) == []
    state = _state_bytes(project)
    assert state and not [n for n in NEEDLES if n.encode() in state]
