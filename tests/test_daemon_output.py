"""Human output never passes a file name's control characters to the terminal; JSON
output keeps them exact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from syncd.textsafe import visible
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import fast_emulator, reconcile, run_syncd, write_config

CLEAR = "\x1b[2J"


def test_visible_escapes_controls_and_undecodable_bytes() -> None:
    assert visible(f"a{CLEAR}b\nc") == "a\\x1b[2Jb\\nc"
    assert visible("tab\there\r") == "tab\\there\\r"
    assert visible("\x7f\x9b") == "\\x7f\\x9b"
    # An undecodable byte, as os.fsdecode delivers it, shows as the byte itself.
    assert visible("bad-\udcff.txt") == "bad-\\xff.txt"
    assert visible("doc\u202etxt.exe") == "doc\\u202etxt.exe"
    assert visible("ordinary/名前 ü.md") == "ordinary/名前 ü.md"


def test_status_and_ls_remote_print_names_with_visible_escapes(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emulator = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    # Empty files are refused by the provider, so both stay in `syncd status`'s list.
    hostile = [f"clear{CLEAR}\nforged line.txt", "red\x1b[31m.txt"]
    for name in hostile:
        (root / name).write_bytes(b"")
    (root / "fine.txt").write_text("fine\n")
    # A foreign file whose name holds the same escapes, for ls-remote.
    response = httpx.post(
        f"{emulator.url}/files",
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        files={"file": (f"foreign{CLEAR}.txt", b"not ours\n")},
        data={"purpose": "file-extract"},
        timeout=30,
    )
    response.raise_for_status()
    config = write_config(tmp_path, root, emulator)
    first = reconcile(config, emulator.api_key)
    assert first.returncode == 1, first.output

    status = run_syncd("status", config, key=None)
    assert status.returncode == 1, status.output
    assert "\x1b" not in status.output, status.output
    assert "clear\\x1b[2J\\nforged line.txt" in status.stdout, status.stdout
    assert "red\\x1b[31m.txt" in status.stdout, status.stdout
    # The newline inside the name forged no line of its own.
    assert not any(line.startswith("forged line") for line in status.stdout.splitlines())

    exact = run_syncd("status", config, "--json", key=None)
    paths = {entry["path"] for entry in exact.json["not_synced"]}
    assert set(hostile) <= paths

    listing = run_syncd("ls-remote", config, key=emulator.api_key)
    assert listing.returncode == 0, listing.output
    assert "\x1b" not in listing.output, listing.output
    assert "foreign\\x1b[2J.txt" in listing.stdout, listing.stdout
    rows = run_syncd("ls-remote", config, "--json", key=emulator.api_key).json
    assert f"foreign{CLEAR}.txt" in {row["filename"] for row in rows}
