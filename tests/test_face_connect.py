"""A one-off command and a remote it cannot use: fail fast, name the URL, say what to
check, exit with the documented code."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from syncd.exitcodes import ExitCode
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import KEY_ENV, build_flat_tree, fast_emulator, run_syncd, write_config

# The promise, process start included, on a busy machine.
BUDGET_S = 5.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("command", ["reconcile", "ls-remote"])
def test_closed_port_fails_fast_with_the_url_and_its_exit_code(
    tmp_path: Path, command: str
) -> None:
    root = tmp_path / "root"
    build_flat_tree(root, 3)
    url = f"http://127.0.0.1:{_closed_port()}/compatible-mode/v1"
    cfg = write_config(tmp_path, root, url)
    started = time.monotonic()
    run = run_syncd(command, cfg, key="sk-test-closed-port", timeout=60)
    took = time.monotonic() - started
    assert run.returncode == ExitCode.UNREACHABLE == 5, run.output
    assert took <= BUDGET_S, f"{took:.1f}s"
    assert f"cannot reach {url}" in run.stderr
    assert "nothing is listening there" in run.stderr and "api.base_url" in run.stderr
    assert "Traceback" not in run.stderr and "sk-test-closed-port" not in run.output
    assert not (tmp_path / "mapping.json").exists()


def test_unresolvable_host_names_dns(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build_flat_tree(root, 1)
    url = "http://no-such-host.invalid/compatible-mode/v1"
    cfg = write_config(tmp_path, root, url)
    started = time.monotonic()
    run = run_syncd("reconcile", cfg, key="sk-test-dns", timeout=60)
    assert run.returncode == ExitCode.UNREACHABLE, run.output
    assert time.monotonic() - started <= BUDGET_S
    assert f"cannot reach {url}" in run.stderr and "does not resolve" in run.stderr


def test_tls_to_a_plain_http_server_names_tls(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 1)
    url = emu.url.replace("http://", "https://")
    cfg = write_config(tmp_path, root, url)
    run = run_syncd("reconcile", cfg, key=emu.api_key, timeout=60)
    assert run.returncode == ExitCode.UNREACHABLE, run.output
    assert f"cannot reach {url}" in run.stderr and "TLS handshake failed" in run.stderr


def test_wrong_path_hints_at_the_providers_base_url(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 1)
    cfg = write_config(tmp_path, root, emu.root_url + "/v1")
    run = run_syncd("reconcile", cfg, key=emu.api_key, timeout=60)
    assert run.returncode == ExitCode.USAGE, run.output
    assert f"{emu.root_url}/v1/files does not exist" in run.stderr
    assert "/compatible-mode/v1" in run.stderr


def test_refused_key_names_the_variable_it_came_from(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 1)
    cfg = write_config(tmp_path, root, emu)
    run = run_syncd("reconcile", cfg, key="sk-wrong-key-123", timeout=60)
    assert run.returncode == ExitCode.USAGE, run.output
    assert f"environment variable {KEY_ENV}" in run.stderr and "refused the key" in run.stderr
    assert "sk-wrong-key-123" not in run.output

    key_file = tmp_path / "key"
    key_file.write_text("sk-wrong-key-456\n")
    cfg = write_config(tmp_path, root, emu, api={"api_key_file": str(key_file)})
    data = yaml.safe_load(cfg.read_text("utf-8"))
    del data["api"]["api_key_env"]
    cfg.write_text(yaml.safe_dump(data), "utf-8")
    run = run_syncd("ls-remote", cfg, key=None, timeout=60)
    assert run.returncode == ExitCode.USAGE, run.output
    assert f"file {key_file}" in run.stderr and "sk-wrong-key-456" not in run.output
