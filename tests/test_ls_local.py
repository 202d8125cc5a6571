"""`syncd ls-local`: what the rules (and rules tried on the command line) would do with
every local file, without contacting the remote, and exactly what a reconcile then does."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    fast_emulator,
    read_mapping,
    reconcile,
    remote_files,
    run_syncd,
    write_config,
)
from tests.helpers import free_port


def tree(root: Path, n: int) -> None:
    for i in range(n):
        folder = root / ("drafts" if i % 10 == 0 else f"d{i % 7}")
        folder.mkdir(parents=True, exist_ok=True)
        ext = ("txt", "md", "exe", "jsonl")[i % 4]
        body = '{"bad"\n' if ext == "jsonl" and i % 8 == 3 else f"file {i}\n"
        if ext == "jsonl" and i % 8 != 3:
            body = json.dumps({"custom_id": f"r{i}", "method": "POST",
                               "url": "/v1/chat/completions",
                               "body": {"model": "qwen-plus", "messages": []}}) + "\n"  # fmt: skip
        (folder / f"f{i:04d}.{ext}").write_text(body)


def verdicts(cfg: Path, *args: str) -> dict[str, dict[str, object]]:
    run = run_syncd("ls-local", cfg, "--json", *args, key=None)
    assert run.returncode == 0, run.output
    return {v["path"]: v for v in map(json.loads, run.stdout.splitlines())}


def test_a_rule_tried_on_the_command_line_is_what_a_reconcile_then_does(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    root = tmp_path / "root"
    tree(root, 1000)
    # The remote is down (nothing listens there): ls-local needs none of it.
    down = write_config(tmp_path, root, f"http://127.0.0.1:{free_port()}/v1",
                        name="down.yaml")  # fmt: skip
    tried = verdicts(down, "--exclude", "drafts/**", "--purpose", "*.jsonl=batch")
    assert not (tmp_path / "state").exists(), "ls-local wrote a state"
    assert tried["drafts/"]["status"] == "left out"
    assert not any(p.startswith("drafts/f") for p in tried)
    selected = {p for p, v in tried.items() if v["status"] == "selected"}
    invalid = {p for p, v in tried.items() if v["status"] == "invalid"}
    left_out = {p for p, v in tried.items() if v["status"] == "left out"}
    assert all(tried[p]["purpose"] == "batch" for p in selected if p.endswith(".jsonl"))
    assert all(p.endswith(".exe") for p in left_out - {"drafts/"})
    assert invalid and all(p.endswith(".jsonl") for p in invalid)

    # The same rules written into the config: the reconcile uploads exactly the selected.
    emu = fast_emulator(emulator_factory)
    cfg = write_config(tmp_path, root, emu, rules={
        "exclude": ["drafts/**"],
        "purposes": [{"match": "*.jsonl", "purpose": "batch"},
                     {"match": ["*.txt", "*.md"], "purpose": "file-extract"}],
    })  # fmt: skip
    run = reconcile(cfg, emu.api_key)
    assert run.returncode == 1, run.output  # the invalid ones are not synced
    assert set(read_mapping(tmp_path / "mapping.json")) == selected
    assert len(remote_files(emu)) == len(selected)
    assert {n["path"] for n in run.json["not_synced"]} == invalid
    # The config now says what was tried.
    assert verdicts(cfg) == tried


def test_a_malformed_rule_or_unknown_purpose_is_a_usage_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    cfg = write_config(tmp_path, root, "http://127.0.0.1:9/v1")
    for args, words in ((["--include", "[abc"], "unclosed ["),
                        (["--purpose", "*.x=bogus"], "not one of"),
                        (["--purpose", "nothing"], "GLOB=PURPOSE")):  # fmt: skip
        run = run_syncd("ls-local", cfg, *args, key=None)
        assert run.returncode == 2 and words in run.stderr, run.output
