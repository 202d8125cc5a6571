"""Files a provider expires (OpenAI's batch files) stay present: refreshed before they
lapse, uploaded again if they did, and never mistaken for a listing gap."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import fast_emulator, read_mapping, reconcile, write_config

DAY = 86_400
LINE = {"custom_id": "r1", "method": "POST", "url": "/v1/responses",
        "body": {"model": "gpt-4o-mini", "input": "hi"}}


def test_a_file_about_to_expire_is_refreshed_and_a_lapsed_one_reuploaded(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory, flavor="openai")
    root = tmp_path / "root"
    root.mkdir()
    (root / "jobs.jsonl").write_text(json.dumps(LINE) + "\n")
    (root / "notes.md").write_text("# kept as it is\n")
    cfg = write_config(
        tmp_path, root, emu.url, api={"provider": "openai"},
        rules={"purposes": [{"match": "*.jsonl", "purpose": "batch"},
                            {"match": "**", "purpose": "assistants"}]},
    )
    key = emu.api_key
    run = reconcile(cfg, key)
    assert run.returncode == 0, run.stdout
    first = {p: m["file_id"] for p, m in read_mapping(tmp_path / "mapping.json").items()}
    expires = {f["id"]: f.get("expires_at") for f in emu.truth_files()}
    assert expires[first["jobs.jsonl"]] is not None and expires[first["notes.md"]] is None

    # The provider's clock moves on to half a day before the batch file lapses.
    emu.configure(clock_offset_s=30 * DAY - DAY / 2)
    run = reconcile(cfg, key)
    assert run.returncode == 0, run.output
    assert [u["kind"] for u in run.json["planned"]["upload"]] == ["refresh"]
    second = {p: m["file_id"] for p, m in read_mapping(tmp_path / "mapping.json").items()}
    assert second["jobs.jsonl"] != first["jobs.jsonl"]
    assert second["notes.md"] == first["notes.md"]
    assert first["jobs.jsonl"] not in {f["id"] for f in emu.truth_files()}
    # Fresh again: nothing more to do.
    run = reconcile(cfg, key)
    assert run.json["planned"]["upload"] == [] and run.json["planned"]["delete"] == []

    # Past its expiry (the provider dropped it): confirmed gone, uploaded again.
    emu.configure(clock_offset_s=61 * DAY)
    run = reconcile(cfg, key)
    assert run.returncode == 0, run.output
    third = {p: m["file_id"] for p, m in read_mapping(tmp_path / "mapping.json").items()}
    assert third["jobs.jsonl"] not in (first["jobs.jsonl"], second["jobs.jsonl"])
    assert third["notes.md"] == first["notes.md"]
    live = {f["id"] for f in emu.truth_files()}
    assert set(third.values()) == live
