"""The consumer's side against a real sync: `syncd id`, `syncd map`, syncd.mapping.load."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd import mapping
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    fast_emulator,
    read_mapping,
    remote_files,
    run_syncd,
    syncd_env,
    write_config,
)
from tests.helpers_client import BATCH_LINE

TREE = {
    "notes/read me.md": "# 你好\n",
    "notes/todo.txt": "todo\n",
    "reports/q1.txt": "q1\n",
    "top.txt": "top\n",
}


@pytest.fixture
def synced(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> tuple[Path, EmulatorHandle]:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    for rel, text in TREE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, "utf-8")
    cfg = write_config(tmp_path, root, emu)
    run = run_syncd("reconcile", cfg, key=emu.api_key)
    assert run.returncode == 0, run.output
    return cfg, emu


def test_load_gives_typed_entries_that_match_the_remote(
    synced: tuple[Path, EmulatorHandle], tmp_path: Path
) -> None:
    _cfg, emu = synced
    m = mapping.load(tmp_path / "mapping.json")
    remote = remote_files(emu)
    assert sorted(m) == sorted(TREE) and len(m) == 4
    for rel, text in TREE.items():
        e = m[rel]
        assert isinstance(e, mapping.Entry)
        assert e.path == rel and e.purpose == "file-extract"
        assert e.bytes == len(text.encode()) == remote[e.file_id]["bytes"]
        assert e.fileid == f"fileid://{e.file_id}"
        assert len(e.sha256) == 64
    assert m["./notes/todo.txt"] == m["notes/todo.txt"]  # spelled as a shell would
    assert [e.path for e in m.under("notes")] == ["notes/read me.md", "notes/todo.txt"]
    assert m.project == "e2e" and m.base_url == emu.url

    with pytest.raises(mapping.UnknownPath) as caught:
        m["notes/missing.txt"]
    assert isinstance(caught.value, KeyError)
    assert "notes/missing.txt" in str(caught.value) and "not in the mapping" in str(caught.value)
    with pytest.raises(mapping.MappingError, match="no mapping at"):
        mapping.load(tmp_path / "nowhere.json")


def test_id_prints_ids_in_the_order_asked(
    synced: tuple[Path, EmulatorHandle], tmp_path: Path
) -> None:
    cfg, _emu = synced
    ids = {p: e["file_id"] for p, e in read_mapping(tmp_path / "mapping.json").items()}
    run = run_syncd("id", cfg, "top.txt", "notes/read me.md", key=None)
    assert run.returncode == 0, run.output
    assert run.stdout.splitlines() == [ids["top.txt"], ids["notes/read me.md"]]

    fileid = run_syncd("id", cfg, "--fileid", "reports/q1.txt", key=None)
    assert fileid.stdout.strip() == f"fileid://{ids['reports/q1.txt']}"

    # Line N of the output answers path N: an unknown path gets an empty line.
    partly = run_syncd("id", cfg, "nope.txt", "top.txt", key=None)
    assert partly.returncode == 1
    assert partly.stdout.splitlines() == ["", ids["top.txt"]]
    assert "nope.txt" in partly.stderr and "Traceback" not in partly.stderr


def test_map_formats_and_under(synced: tuple[Path, EmulatorHandle], tmp_path: Path) -> None:
    cfg, _emu = synced
    ids = {p: e["file_id"] for p, e in read_mapping(tmp_path / "mapping.json").items()}

    lines = run_syncd("map", cfg, key=None)
    assert lines.returncode == 0, lines.output
    assert [ln.split("\t") for ln in lines.stdout.splitlines()] == sorted(
        [p, i] for p, i in ids.items()
    )

    under = run_syncd("map", cfg, "--under", "notes/", "--format", "json", key=None)
    rows = json.loads(under.stdout)
    assert [r["path"] for r in rows] == ["notes/read me.md", "notes/todo.txt"]
    assert {r["file_id"] for r in rows} == {ids["notes/read me.md"], ids["notes/todo.txt"]}
    assert set(rows[0]) == {"path", "file_id", "purpose", "bytes", "sha256"}

    fileids = run_syncd("map", cfg, "--under", "reports", "--format", "fileid", key=None)
    assert fileids.stdout.splitlines() == [f"fileid://{ids['reports/q1.txt']}"]


def test_commands_before_any_sync_say_so(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    cfg = write_config(tmp_path, root, "http://127.0.0.1:9/compatible-mode/v1")
    run = run_syncd("id", cfg, "a.txt", key=None)
    assert run.returncode != 0
    assert "no mapping at" in run.stderr and "Traceback" not in run.stderr


# Prints which of these packages a command loaded, after running it as `syncd` would.
# (At exit: the command ends its process as soon as it has returned.)
_LOADED = """
import atexit, runpy, sys
def loaded():
    print("loaded:", *sorted({m for m in sys.modules if m.split(".")[0] in {"httpx", "rich",
          "click"} and sys.modules[m] is not None}), file=sys.stderr)
atexit.register(loaded)
sys.argv = ["syncd", *sys.argv[1:]]
runpy.run_module("syncd", run_name="__main__", alter_sys=True)
"""


def test_reading_the_mapping_loads_no_http_stack(synced: tuple[Path, EmulatorHandle]) -> None:
    """`syncd id` and `syncd map` are called from scripts, once per lookup: they read a
    file and must not pay for the HTTP client, nor a run for the command-line and
    terminal packages it never uses off a terminal."""
    import subprocess
    import sys

    cfg, emu = synced
    env = syncd_env(emu.api_key)

    def loaded(*args: str) -> set[str]:
        run = subprocess.run([sys.executable, "-c", _LOADED, *args], capture_output=True,
                             text=True, env=env, timeout=60)  # fmt: skip
        assert run.returncode == 0, run.stderr
        last = [line for line in run.stderr.splitlines() if line.startswith("loaded:")][-1]
        return set(last.split()[1:])

    assert loaded("id", "-c", str(cfg), "top.txt") == set()
    assert loaded("map", "-c", str(cfg)) == set()
    after_run = loaded("reconcile", "-c", str(cfg))
    assert "httpx" in after_run  # it did talk to the remote
    assert not after_run & {"httpx._main", "click", "rich"}, after_run


_entry = st.fixed_dictionaries({
    "file_id": st.text(min_size=1, max_size=30),
    "purpose": st.sampled_from(["file-extract", "batch"]),
    "bytes": st.integers(min_value=0, max_value=2**40),
    "sha256": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    "uploaded_at": st.floats(min_value=0, max_value=4e9),
})  # fmt: skip


@given(files=st.dictionaries(st.text(min_size=1, max_size=40), _entry, max_size=20))
@settings(max_examples=200, deadline=None)
def test_the_written_mapping_reads_back_as_written(tmp_path_factory: pytest.TempPathFactory,
                                                   files: dict[str, dict[str, object]]) -> None:
    """Any path (quotes, newlines, any script) and entry survive the one-file-per-line
    layout; ``mapping.load`` and plain ``json`` read the same thing."""
    from syncd.engine.publish import Publisher

    head = {"project": "p", "owner": "o", "base_url": "u"}
    path = tmp_path_factory.mktemp("m") / "mapping.json"
    rows = [(p, e["file_id"], e["purpose"], e["bytes"], e["sha256"], e["uploaded_at"])
            for p, e in sorted(files.items())]  # fmt: skip
    assert Publisher(path).publish(lambda: rows, {r[1] for r in rows}, head, 1)
    data = json.loads(path.read_text("utf-8"))
    assert data["files"] == files and {k: data[k] for k in head} == head
    loaded = mapping.load(path)
    ids = sorted(e["file_id"] for e in files.values())
    assert sorted(e.file_id for e in loaded.under("")) == ids


def test_the_mapping_file_changes_only_when_what_it_says_does(
    synced: tuple[Path, EmulatorHandle], tmp_path: Path
) -> None:
    """A reader watching the file (inotify, a cache keyed on mtime) is woken by a new id,
    not by every run that found nothing to change."""
    cfg, emu = synced
    path = tmp_path / "mapping.json"
    before, text = path.stat(), path.read_text("utf-8")
    run = run_syncd("reconcile", cfg, key=emu.api_key)
    assert run.returncode == 0, run.output
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert path.read_text("utf-8") == text

    (tmp_path / "root" / "top.txt").write_text("top, edited\n", "utf-8")
    run = run_syncd("reconcile", cfg, key=emu.api_key)
    assert run.returncode == 0, run.output
    assert path.stat().st_ino != before.st_ino
    old_id = json.loads(text)["files"]["top.txt"]["file_id"]
    assert read_mapping(path)["top.txt"]["file_id"] != old_id


def test_a_batch_input_has_no_fileid_and_several_documents_make_one_system_message(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    (root / "b.md").write_text("# b\n")
    (root / "requests.jsonl").write_text(json.dumps({**BATCH_LINE, "custom_id": "r1"}) + "\n")
    cfg = write_config(tmp_path, root, emu)
    assert run_syncd("reconcile", cfg, key=emu.api_key).returncode == 0
    m = mapping.load(tmp_path / "mapping.json")
    assert m["requests.jsonl"].purpose == "batch"
    with pytest.raises(mapping.NotForChat, match="Batch job"):
        _ = m["requests.jsonl"].fileid
    assert m.system_message(["b.md", "a.txt"]) == f"{m['b.md'].fileid},{m['a.txt'].fileid}"
    with pytest.raises(mapping.NotForChat):
        m.system_message(["a.txt", "requests.jsonl"])

    refused = run_syncd("id", cfg, "--fileid", "requests.jsonl", "a.txt", key=None)
    assert refused.returncode == 1 and "purpose 'batch'" in refused.stderr
    assert refused.stdout.splitlines() == ["", m["a.txt"].fileid]  # line N answers path N
    assert run_syncd("id", cfg, "requests.jsonl", key=None).stdout.strip() == (
        m["requests.jsonl"].file_id)  # fmt: skip
    listed = run_syncd("map", cfg, "--format", "fileid", key=None).stdout.splitlines()
    assert sorted(listed) == sorted([m["a.txt"].fileid, m["b.md"].fileid])
