"""What a person sees: the live bar on a terminal, clean output on a pipe, -q/-v,
--log-format, --max-delete.

The terminal case runs `syncd reconcile` under script(1), which gives it a real pty,
and replays the capture through a small terminal model to get the final screen.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    build_flat_tree,
    fast_emulator,
    read_mapping,
    remote_files,
    run_syncd,
    syncd_cmd,
    syncd_env,
    write_config,
)

HUMAN_LOGS = {"logging": {"format": "auto", "level": "info"}}
_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def screen(raw: str) -> list[str]:
    """The lines a terminal shows after ``raw``: enough of a VT100 for what rich emits
    (CR, LF, cursor up/down, erase line, colours and cursor visibility ignored)."""
    lines: list[str] = [""]
    row = col = 0
    i = 0
    while i < len(raw):
        m = _CSI.match(raw, i)
        if m:
            arg, op = m.group(1), m.group(2)
            n = int(arg) if arg.isdigit() else 1
            if op == "A":
                row = max(0, row - n)
            elif op == "B":
                row += n
            elif op == "K":
                lines[row] = lines[row][:col] if arg in ("", "0") else ""
            elif op == "G":
                col = n - 1
            i = m.end()
            continue
        ch = raw[i]
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            col = 0
        elif ch == "\x1b" or ch < " ":
            continue
        else:
            while len(lines) <= row:
                lines.append("")
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1 :]
            col += 1
        while len(lines) <= row:
            lines.append("")
    return [line.rstrip() for line in lines if line.strip()]


def _human_env(key: str) -> dict[str, str]:
    env = syncd_env(key, COLUMNS="120", TERM="xterm-256color")
    for var in ("INVOCATION_ID", "JOURNAL_STREAM", "NO_COLOR"):
        env.pop(var, None)
    return env


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1)")
def test_terminal_run_shows_one_live_bar_and_a_summary(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    paths = build_flat_tree(root, 300)
    cfg = write_config(tmp_path, root, emu, **HUMAN_LOGS)
    capture = tmp_path / "out.log"
    command = shlex.join(syncd_cmd("reconcile", cfg))
    proc = subprocess.run(
        ["script", "-qec", command, str(capture)],
        env=_human_env(emu.api_key),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=180,
    )
    raw = capture.read_bytes().decode("utf-8", "replace")  # keep every \r
    assert proc.returncode == 0, raw
    assert len(read_mapping(tmp_path / "mapping.json")) == 300

    shown = screen(raw)
    bars = [line for line in shown if "━" in line]
    # One bar left on screen, complete, then the summary; nothing per file.
    assert len(bars) == 1, shown
    assert "300/300 files" in bars[0] and "100%" in bars[0], bars
    summary = [line for line in shown if line.startswith("uploaded ")]
    assert len(summary) == 1 and summary[0].startswith("uploaded 300 "), shown
    assert shown.index(bars[0]) < shown.index(summary[0])
    assert not [line for line in shown if any(p.rsplit("/", 1)[1] in line for p in paths)], shown
    assert len(shown) <= 5, shown  # script's two lines, the bar, the summary, the mapping
    assert any(line.startswith("mapping: ") for line in shown), shown
    # It was live: the bar was drawn more than once (it moved), in place.
    frames = set(re.findall(r"(\d+)(?:/\d+)? files", raw))
    assert len(frames) >= 2, frames


def test_piped_run_is_clean_and_parseable(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 20)
    cfg = write_config(tmp_path, root, emu, **HUMAN_LOGS)
    env = _human_env(emu.api_key)

    run = subprocess.run(syncd_cmd("reconcile", cfg, "--json"), env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["uploaded"] == 20
    # No JSON log lines mixed in, no progress display, no line per file.
    assert not [ln for ln in run.stderr.splitlines() if ln.lstrip().startswith("{")], run.stderr
    assert "━" not in run.stderr and "uploaded" not in run.stderr, run.stderr

    (root / "d0" / "new.txt").write_text("new\n")
    text = subprocess.run(syncd_cmd("reconcile", cfg), env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("uploaded 1 ("), text.stdout
    # The summary, and where the mapping was written.
    assert text.stdout.splitlines()[1:] == [f"mapping: {tmp_path / 'mapping.json'}"], text.stdout


def test_quiet_verbose_and_log_format(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    build_flat_tree(root, 5)
    cfg = write_config(tmp_path, root, emu, **HUMAN_LOGS)
    env = _human_env(emu.api_key)

    verbose = subprocess.run(syncd_cmd("reconcile", cfg, "-v"), env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert verbose.returncode == 0, verbose.stderr
    per_file = [ln for ln in verbose.stderr.splitlines() if " uploaded " in ln]
    assert len(per_file) == 5, verbose.stderr

    (root / "d0" / "more.txt").write_text("more\n")
    as_json = subprocess.run(syncd_cmd("reconcile", cfg, "--log-format", "json"), env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    events = [json.loads(ln) for ln in as_json.stderr.splitlines() if ln.startswith("{")]
    assert [e["path"] for e in events if e["event"] == "uploaded"] == ["d0/more.txt"]

    # Under systemd, JSON without being asked.
    (root / "d0" / "again.txt").write_text("again\n")
    journal = subprocess.run(syncd_cmd("reconcile", cfg), env={**env, "INVOCATION_ID": "x"},
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = [ln for ln in journal.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("{") for ln in lines), journal.stderr

    (root / "d0" / "quiet.txt").write_text("quiet\n")
    quiet = subprocess.run(syncd_cmd("reconcile", cfg, "-q"), env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert len(remote_files(emu)) == 8


def test_max_delete_overrides_the_config_for_one_run(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    paths = build_flat_tree(root, 10)
    cfg = write_config(tmp_path, root, emu, sync={"max_delete": 2})
    assert run_syncd("reconcile", cfg, key=emu.api_key).returncode == 0
    for p in paths[:4]:
        (root / p).unlink()

    refused = run_syncd("reconcile", cfg, "--dry-run", key=emu.api_key)
    assert refused.returncode == 3, refused.output
    assert "over max_delete (2)" in refused.output
    allowed = run_syncd("reconcile", cfg, "--dry-run", "--max-delete", "40%", key=emu.api_key)
    assert allowed.returncode == 0, allowed.output
    assert sum(1 for ln in allowed.stdout.splitlines() if ln.startswith("  delete ")) == 4
    assert len(remote_files(emu)) == 10  # a dry run

    bad = run_syncd("reconcile", cfg, "--max-delete", "lots", key=emu.api_key)
    assert bad.returncode == 2 and "--max-delete" in bad.stderr

    done = run_syncd("reconcile", cfg, "--max-delete", "4", key=emu.api_key)
    assert done.returncode == 0, done.output
    assert len(remote_files(emu)) == 6
    # The override was for that run only.
    for p in paths[4:7]:
        (root / p).unlink()
    assert run_syncd("reconcile", cfg, key=emu.api_key).returncode == 3


def test_dry_run_lists_the_deletes_it_refuses(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    paths = build_flat_tree(root, 10)
    cfg = write_config(tmp_path, root, emu, sync={"max_delete": 2})
    assert run_syncd("reconcile", cfg, key=emu.api_key).returncode == 0
    for p in paths[:4]:
        (root / p).unlink()
    dry = run_syncd("reconcile", cfg, "--dry-run", key=emu.api_key)
    assert dry.returncode == 3
    refused = [ln for ln in dry.stdout.splitlines() if ln.startswith("  refuse ")]
    assert sorted(ln.rsplit(" ", 1)[1] for ln in refused) == sorted(paths[:4]), dry.stdout
    as_json = run_syncd("reconcile", cfg, "--dry-run", "--json", key=emu.api_key).json
    assert sorted(d["path"] for d in as_json["planned"]["refused_delete"]) == sorted(paths[:4])

