"""`syncd check-config` refuses what `reconcile` and `run` would refuse, in the same words:
a mapping file another project publishes, a state_dir bound to another project, a
metrics address that cannot be served."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import build_flat_tree, fast_emulator, run_syncd, write_config


def _first_project(tmp_path: Path, emu: EmulatorHandle) -> Path:
    root = tmp_path / "a-root"
    build_flat_tree(root, 2)
    cfg = write_config(tmp_path, root, emu, project="A", name="a.yaml")
    assert run_syncd("reconcile", cfg, key=emu.api_key).returncode == 0
    return root


def _second_project(tmp_path: Path, emu: EmulatorHandle, **clash: str) -> Path:
    """Project B's config, after project A synced, with one path of A's (``clash``)."""
    _first_project(tmp_path, emu)
    other = tmp_path / "b"
    other.mkdir()
    root = other / "root"
    build_flat_tree(root, 1)
    return write_config(other, root, emu, project="B", **clash)


def _refusals(cfg: Path, key: str, words: str) -> None:
    """check-config (offline and online) and reconcile all refuse with ``words``."""
    for extra in ((), ("--online",)):
        check = run_syncd("check-config", cfg, *extra, key=key)
        assert check.returncode == 2, check.output
        assert words in check.stderr and "ok (" not in check.stdout, check.output
    run = run_syncd("reconcile", cfg, key=key)
    assert run.returncode == 2 and words in run.stderr, run.output


def test_mapping_file_of_another_project(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    cfg = _second_project(tmp_path, emu, mapping_file=str(tmp_path / "mapping.json"))
    _refusals(cfg, emu.api_key, "is published by another project ('A')")
    assert f"{cfg}:" in run_syncd("check-config", cfg, key=emu.api_key).stderr


def test_state_dir_of_another_project(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    cfg = _second_project(tmp_path, emu, state_dir=str(tmp_path / "state"))
    _refusals(cfg, emu.api_key, "this state_dir belongs to another project")
    # The first project itself is still fine.
    ok = run_syncd("check-config", tmp_path / "a.yaml", key=emu.api_key)
    assert ok.returncode == 0, ok.output


def test_metrics_address_that_cannot_be_served(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build_flat_tree(root, 1)
    cfg = write_config(tmp_path, root, "http://127.0.0.1:9/compatible-mode/v1",
                       daemon={"metrics": "0.0.0.0:99999"})  # fmt: skip
    check = run_syncd("check-config", cfg, key="sk-test-1")
    assert check.returncode == 2, check.output
    line = next(i for i, text in enumerate(cfg.read_text().splitlines(), 1)
                if "metrics:" in text)  # fmt: skip
    assert f"{cfg}:{line}: daemon.metrics: expected HOST:PORT" in check.stderr, check.stderr
    assert "'0.0.0.0:99999'" in check.stderr
