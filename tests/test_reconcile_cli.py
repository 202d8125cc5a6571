"""`syncd reconcile` as a command: dry runs, configuration errors, secrets, the state lock."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    KEY_ENV,
    assert_converged,
    build_fixture_tree,
    build_flat_tree,
    fast_emulator,
    read_mapping,
    reconcile,
    remote_files,
    run_syncd,
    spawn_reconcile,
    status,
    write_config,
)
from tests.helpers import wait_for

# ------------------------------------------------------------------ dry run


def test_dry_run_changes_nothing_and_prints_the_plan(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    paths = build_flat_tree(root, 30)
    cfg = write_config(tmp_path, root, emu)

    emu.reset_stats()
    dry = reconcile(cfg, emu.api_key, "--dry-run")
    assert dry.returncode == 0, dry.output
    plan = dry.json
    assert plan["dry_run"] is True
    assert sorted(u["path"] for u in plan["planned"]["upload"]) == sorted(paths)
    assert {u["kind"] for u in plan["planned"]["upload"]} == {"new"}
    assert plan["uploaded"] == plan["deleted"] == 0
    stats = emu.stats()
    assert stats["requests"]["upload"] == stats["requests"]["delete"] == 0
    assert remote_files(emu) == {}
    assert not (tmp_path / "mapping.json").exists()

    assert reconcile(cfg, emu.api_key).returncode == 0
    before = read_mapping(tmp_path / "mapping.json")
    (root / paths[0]).write_text("changed\n")
    (root / paths[1]).unlink()
    emu.reset_stats()
    dry = reconcile(cfg, emu.api_key, "--dry-run")
    plan = dry.json["planned"]
    assert [(u["path"], u["kind"]) for u in plan["upload"]] == [(paths[0], "replace")]
    assert [(d["path"], d["file_id"], d["reason"]) for d in plan["delete"]] == [
        (paths[1], before[paths[1]]["file_id"], "gone")
    ]
    stats = emu.stats()
    assert stats["requests"]["upload"] == stats["requests"]["delete"] == 0
    assert read_mapping(tmp_path / "mapping.json") == before

    # A copy of a synced file would take its remote file (dedupe): the text says so.
    (root / "copy.txt").write_bytes((root / paths[2]).read_bytes())
    text = run_syncd("reconcile", cfg, "--dry-run", key=emu.api_key)
    assert "1 upload(s)" in text.stdout and "1 delete(s)" in text.stdout
    assert paths[1] in text.stdout
    assert f"share   copy.txt -> {before[paths[2]]['file_id']}" in text.stdout, text.stdout
    assert emu.stats()["requests"]["delete"] == 0


# ------------------------------------------------------------------ configuration errors


def _config_error(cfg: Path, key: str = "sk-test-1") -> str:
    run = run_syncd("reconcile", cfg, "--json", key=key)
    assert run.returncode == 2, run.output
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    return run.stderr


def test_bad_value_names_key_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "project: p\nroot: ./root\nstate_dir: ./state\n"
        "limits:\n  workers: 4\n  upload_qps: fast\n",
        "utf-8",
    )
    err = _config_error(cfg)
    assert f"{cfg}:6: limits.upload_qps:" in err
    assert "expected a number" in err and "'fast'" in err


def test_unknown_key_names_key_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.yaml"
    cfg.write_text(
        "project: p\nroot: ./root\nstate_dir: ./state\nsync:\n  max_delete: 10\n"
        "  delete_remtoe: false\n",
        "utf-8",
    )
    err = _config_error(cfg)
    assert f"{cfg}:6: sync.delete_remtoe: unknown key" in err


def test_unset_variable_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCD_TEST_UNSET_ROOT", raising=False)
    cfg = tmp_path / "vars.yaml"
    cfg.write_text(
        "project: p\nroot: ${SYNCD_TEST_UNSET_ROOT}/docs\nstate_dir: ./state\n", "utf-8"
    )
    err = _config_error(cfg)
    assert f"{cfg}:2: root:" in err
    assert "environment variable SYNCD_TEST_UNSET_ROOT is not set" in err
    # With the variable set (or a default given) the same file is fine.
    (tmp_path / "docs").mkdir()
    ok = run_syncd("check-config", cfg, key=None, env={"SYNCD_TEST_UNSET_ROOT": str(tmp_path)})
    assert ok.returncode == 0, ok.output


def test_invalid_yaml_and_missing_required_key(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("project: p\nroot: [unclosed\nstate_dir: s\n", "utf-8")
    assert f"{cfg}:" in _config_error(cfg)
    cfg.write_text("project: p\nroot: ./r\n", "utf-8")
    assert "state_dir: required" in _config_error(cfg)


def test_missing_api_key_is_a_usage_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build_flat_tree(root, 1)
    cfg = write_config(tmp_path, root, "http://127.0.0.1:9/compatible-mode/v1")
    err = _config_error(cfg, key="")
    assert KEY_ENV in err


def test_path_outside_the_root_is_a_usage_error_without_a_daemon(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build_flat_tree(root, 1)
    (tmp_path / "outside.txt").write_text("not in the root")
    cfg = write_config(tmp_path, root, "http://127.0.0.1:9/compatible-mode/v1")
    for bad in ("../outside.txt", str(tmp_path / "outside.txt")):
        run = run_syncd("reconcile", cfg, "--path", bad, key="sk-test-1")
        assert run.returncode == 2, run.output
        assert f"--path {bad!r} is" in run.stderr and str(root) in run.stderr, run.stderr
        assert not (tmp_path / "state").exists()


# ------------------------------------------------------------------ secrets


def _grep_tree(where: Path, needle: bytes) -> list[Path]:
    return [p for p in where.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_api_key_never_leaks(tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
                             ) -> None:
    key = "sk-Zq7dist1nctive-9c41e8b2f0"
    wrong = "sk-Wr0ngdist1nctive-77aa31c"
    emu = fast_emulator(emulator_factory, api_key=[key])
    tree = build_fixture_tree(tmp_path / "root", tmp_path / "outside", count=60)
    state = tmp_path / "project"
    state.mkdir()
    cfg = write_config(state, tree.root, emu, logging={"format": "json", "level": "debug"})

    refused = reconcile(cfg, wrong)
    assert refused.returncode == 2, refused.output
    assert "Incorrect API key" in refused.output
    assert remote_files(emu) == {}
    normal = reconcile(cfg, key)
    assert normal.returncode == 1, normal.output
    assert_converged(emu, tree.root, state / "mapping.json", tree.valid)
    text = run_syncd("reconcile", cfg, key=key)
    listing = run_syncd("ls-remote", cfg, key=key)
    st = run_syncd("status", cfg, key=key)

    for secret in (key, wrong):
        for run in (refused, normal, text, listing, st):
            assert secret not in run.output
        # Neither the middle of the key (a partial leak).
        for run in (refused, normal):
            assert secret[3:-3] not in run.output
        assert _grep_tree(state, secret.encode()) == []
        assert _grep_tree(state, secret[3:-3].encode()) == []
    assert (state / "state" / "state.sqlite3").exists()
    assert (state / "mapping.json").exists()


# ------------------------------------------------------------------ one process per state_dir


def test_second_reconcile_on_same_state_dir_exits_4_naming_the_pid(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = emulator_factory(upload_rate=20, read_rate=200, delete_rate=200)
    root = tmp_path / "root"
    paths = build_flat_tree(root, 200)
    # Slow uploads keep the first run busy for a while.
    cfg = write_config(tmp_path, root, emu, rate=200, limits={"upload_qps": 10})
    first = spawn_reconcile(cfg, emu.api_key, stdout=subprocess.PIPE)
    try:
        lock = tmp_path / "state" / "lock"
        wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid),
                 timeout=30, what="the first run to take the lock")
        wait_for(lambda: remote_files(emu), timeout=30, what="the first upload")
        second = reconcile(cfg, emu.api_key, timeout=60)
        assert second.returncode == 4, second.output
        assert f"pid {first.pid}" in second.stderr
        assert second.stdout == ""
        assert first.poll() is None, "the first run should still be going"
        dry = reconcile(cfg, emu.api_key, "--dry-run")
        assert dry.returncode == 4, dry.output
    finally:
        first.terminate()
        first.wait(timeout=30)
        if first.stdout is not None:
            first.stdout.close()
    # The lock dies with its holder; the next run finishes the job.
    fast = write_config(tmp_path, root, emu, name="fast.yaml")
    emu.configure(rates={"upload": 200})
    done = reconcile(fast, emu.api_key)
    assert done.returncode == 0, done.output
    assert_converged(emu, root, tmp_path / "mapping.json", paths)
    assert status(fast)["counts"] == {"synced": len(paths)}


def test_a_corrupt_state_is_named(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 2)
    cfg = write_config(tmp_path, root, emu)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.sqlite3").write_bytes(b"not sqlite at all " * 40)
    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 1
    assert f"{tmp_path / 'state' / 'state.sqlite3'}: file is not a database" in run.stderr
    assert "Traceback" not in run.stderr
    assert remote_files(emu) == {}
