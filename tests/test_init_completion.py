"""`syncd init` writes a config that works as written; `syncd completion` completes the
commands and options the parser has; every command's --help has examples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from syncd.cli import EXAMPLES, build_parser
from tests.engine_helpers import read_mapping, syncd_env
from tests.helpers import free_port

REPO = Path(__file__).resolve().parent.parent


def syncd(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", *args], cwd=cwd,
                          env={**syncd_env(None), "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_init_writes_a_config_that_checks_and_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "docs" / "notes").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("a\n")
    (tmp_path / "docs" / "notes" / "b.md").write_text("# b\n")
    made = syncd(tmp_path, "init", "./docs")
    assert made.returncode == 0, made.stderr
    cfg = tmp_path / "syncd.yaml"
    text = cfg.read_text()
    assert "project: docs" in text and "root: ./docs" in text
    checked = syncd(tmp_path, "check-config", "-c", "syncd.yaml")
    assert checked.returncode == 0, checked.stderr

    # Never overwritten, and a second project beside it gets a state of its own.
    again = syncd(tmp_path, "init", "./docs")
    assert again.returncode == 2 and "exists" in again.stderr
    assert cfg.read_text() == text
    # Its own emulator port, so tests running side by side do not share one.
    port = f"  base_url: embedded\n  embedded_port: {free_port()}\n"
    cfg.write_text(text.replace("  base_url: embedded\n", port))
    run = syncd(tmp_path, "reconcile", "-c", "syncd.yaml")
    assert run.returncode == 0, run.stderr
    mapping = tmp_path / ".syncd" / "docs" / "mapping.json"
    assert f"mapping: {mapping}" in run.stdout
    assert sorted(read_mapping(mapping)) == ["a.txt", "notes/b.md"]
    for command in (["status", "-c", "syncd.yaml"], ["map", "-c", "syncd.yaml"]):
        assert syncd(tmp_path, *command).returncode == 0

    other = syncd(tmp_path, "init", "./docs", "-c", "second.yaml", "--project", "docs")
    assert other.returncode == 0, other.stderr
    assert "state_dir: ./.syncd/docs-2" in (tmp_path / "second.yaml").read_text()
    # A config inside the folder it mirrors keeps its state outside it.
    inside = syncd(tmp_path / "docs", "init", ".", "-c", "syncd.yaml")
    assert inside.returncode == 0, inside.stderr
    assert "state_dir: ./.syncd" not in (tmp_path / "docs" / "syncd.yaml").read_text()
    missing = syncd(tmp_path, "init", "./nope", "-c", "x.yaml")
    assert missing.returncode == 2 and "not a folder" in missing.stderr


def complete(shell_line: str, cwd: Path) -> list[str]:
    """What bash's completion offers for ``shell_line`` (the cursor at its end)."""
    words = shell_line.split(" ")
    script = (
        f"source <({sys.executable} -m syncd completion bash)\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_syncd\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    run = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                         env={**syncd_env(None), "PYTHONPATH": str(REPO)}, timeout=60,
                         check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return [w for w in run.stdout.splitlines() if w]


def test_bash_completes_the_parsers_commands_and_options(tmp_path: Path) -> None:
    (tmp_path / "proj.yaml").write_text("")
    assert complete("syncd rec", tmp_path) == ["reconcile"]
    assert set(complete("syncd re", tmp_path)) == {"reconcile", "rebind"}
    assert "--confirm-deletes" in complete("syncd reconcile --co", tmp_path)
    assert complete("syncd status -c pro", tmp_path) == ["proj.yaml"]
    assert set(complete("syncd map -c proj.yaml --format ", tmp_path)) == {
        "lines", "json", "fileid"}  # fmt: skip
    # Derived from the parser: every subcommand is offered.
    offered = set(complete("syncd ", tmp_path))
    parser_commands = {a for a in EXAMPLES} | {"emulate"}
    assert parser_commands <= offered


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_name_every_command(shell: str, tmp_path: Path) -> None:
    run = syncd(tmp_path, "completion", shell)
    assert run.returncode == 0, run.stderr
    for name in EXAMPLES:
        assert name in run.stdout


def test_every_command_has_examples_in_its_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and a.choices)
    for name, sp in sub.choices.items():
        if name == "emulate":
            continue
        assert name in EXAMPLES, name
        assert "examples:" in sp.format_help() and f"syncd {name}" in sp.format_help()
