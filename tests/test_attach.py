"""Vector stores kept attached exactly, end to end (a Syncer against the openai-flavour
emulator over HTTP): 300 files under two rules fill two stores, edits, deletes and a move
converge by id, a foreign attachment stays, an unsupported file shows as failed with the
provider's reason, a dry run lists what it would attach and detach, and the mapping says
where each path is searchable."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from syncd.daemon import status
from syncd.daemon.metrics import status_metrics
from syncd.engine.attach import lines as attach_lines
from syncd.engine.sync import Syncer
from syncd.mapping import load as load_mapping
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import fast_emulator
from tests.helpers import wait_for
from tests.test_daemon_mustshow import RunningDaemon, fast_config, run_daemon

__all__ = ["run_daemon"]

Factory = Callable[..., EmulatorHandle]
RULES = {"vector_stores": {"rules": [
    {"globs": ["docs/**"], "store": "docs",
     "attributes": {"folder": "{folder}", "path": "{path}", "project": "{project}"}},
    {"globs": ["notes/**"], "store": "notes",
     "chunking_strategy": {"max_chunk_size_tokens": 400, "chunk_overlap_tokens": 100}},
]}, "api": {"provider": "openai"}}


def api(emu: EmulatorHandle) -> httpx.Client:
    return httpx.Client(base_url=emu.url, timeout=60,
                        headers={"Authorization": f"Bearer {emu.api_key}"})


def store_rows(emu: EmulatorHandle, store_id: str) -> list[dict[str, Any]]:
    """Every row of a store's file listing, page after page, as the provider lists it."""
    out: list[dict[str, Any]] = []
    after = None
    with api(emu) as http:
        while True:
            page = http.get(f"/vector_stores/{store_id}/files",
                            params={"limit": 100, **({"after": after} if after else {})}).json()
            out += page["data"]
            if not page["has_more"]:
                return out
            after = page["last_id"]


def store_files(emu: EmulatorHandle, store_id: str) -> dict[str, dict[str, Any]]:
    """Every attachment of a store, by file id."""
    return {f["id"]: f for f in store_rows(emu, store_id)}


def stores(emu: EmulatorHandle) -> dict[str, str]:
    with api(emu) as http:
        return {s["name"]: s["id"] for s in http.get("/vector_stores",
                                                      params={"limit": 100}).json()["data"]}


def mapping(syncer: Syncer) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = json.loads(
        syncer.config.mapping_file.read_text("utf-8"))["files"]
    return files


def selected(syncer: Syncer, prefix: str) -> set[str]:
    """The ids of the synced files a rule selects, as the mapping names them."""
    return {e["file_id"] for p, e in mapping(syncer).items() if p.startswith(prefix)}


def test_two_stores_converge_and_keep_foreign(emulator_factory: Factory, tmp_path: Path,
                                              syncer_on: Callable[..., Syncer]) -> None:
    emu = fast_emulator(emulator_factory, flavor="openai", vs_step_s=0.5)
    root = tmp_path / "root"
    for folder in ("docs/a", "docs/b", "notes"):
        (root / folder).mkdir(parents=True)
    for i in range(300):
        folder = ("docs/a", "docs/b", "notes")[i % 3] if i < 200 else "notes"
        (root / folder / f"f{i:03d}.md").write_text(f"# note {i}\n", "utf-8")
    (root / "docs/a/table.csv").write_text("a,b\n1,2\n", "utf-8")
    syncer = syncer_on(emu, root, **RULES)

    report = syncer.reconcile()
    assert report.attachments is not None, report.as_json()
    assert sorted(report.attachments.created) == ["docs", "notes"]
    assert len(report.attachments.attached) == 301
    ids = stores(emu)
    docs, notes = store_files(emu, ids["docs"]), store_files(emu, ids["notes"])
    assert set(docs) == selected(syncer, "docs/") and set(notes) == selected(syncer, "notes/")
    assert len(docs) + len(notes) == 301
    assert {f["status"] for fid, f in {**docs, **notes}.items()
            if fid != mapping(syncer)["docs/a/table.csv"]["file_id"]} == {"completed"}
    a_doc = mapping(syncer)["docs/b/f001.md"]
    assert docs[a_doc["file_id"]]["attributes"] == {
        "folder": "docs/b", "path": "docs/b/f001.md", "project": "e2e"}
    assert notes[mapping(syncer)["notes/f002.md"]["file_id"]]["chunking_strategy"]["static"][
        "max_chunk_size_tokens"] == 400
    # The unsupported file: failed with the provider's reason, in the run, mapping, status.
    csv_id = mapping(syncer)["docs/a/table.csv"]["file_id"]
    assert docs[csv_id]["status"] == "failed"
    assert [(p, why) for p, _s, why in report.attachments.failed] == [
        ("docs/a/table.csv", "unsupported_file: The file type .csv is not supported.")]
    assert mapping(syncer)["docs/a/table.csv"]["vector_stores"] == {ids["docs"]: "failed"}
    assert mapping(syncer)["notes/f002.md"]["vector_stores"] == {ids["notes"]: "completed"}
    summary = syncer.attacher.summary() if syncer.attacher else {}
    assert summary["attachments"] == {"completed": 300, "failed": 1}
    shown = status.from_state(syncer.config)
    assert shown is not None
    text = "\n".join(status.render(shown))
    assert f"vector stores: docs {ids['docs']}, notes {ids['notes']}; attachments " \
        "completed 300, failed 1" in text, text
    assert f"  failed  docs/a/table.csv in {ids['docs']}: unsupported_file: The file type " \
        ".csv is not supported." in text
    exposed = {(m.name, s.labels.get("status"), s.value)
               for m in status_metrics({"vector_stores": shown["vector_stores"]})
               for s in m.samples}
    assert ("syncd_vector_attachments", "failed", 1.0) in exposed
    consumer = load_mapping(syncer.config.mapping_file)
    assert consumer["notes/f002.md"].searchable_in == [ids["notes"]]
    assert consumer["docs/a/table.csv"].searchable_in == []

    # Someone else's file attached to our store: never ours to touch.
    with api(emu) as http:
        foreign = http.post("/files", data={"purpose": "assistants"},
                            files={"file": ("theirs.md", b"theirs")}).json()["id"]
        assert http.post(f"/vector_stores/{ids['docs']}/files",
                         json={"file_id": foreign}).status_code == 200
    # Edits, deletes and a move (docs -> notes).
    for i in (0, 3, 6):
        (root / "docs/a" / f"f{i:03d}.md").write_text(f"# edited {i}\n", "utf-8")
    for i in (200, 201, 202, 203):
        (root / "notes" / f"f{i:03d}.md").unlink()
    (root / "docs/b/f004.md").rename(root / "notes/moved.md")
    (root / "notes/new.md").write_text("new\n", "utf-8")
    dry = syncer.reconcile(dry_run=True).attachments
    assert dry is not None and dry.dry_run
    done = syncer.reconcile().attachments
    assert done is not None
    # The dry run named what the run then did, though the edited and new files were not
    # uploaded yet: each path attached to its store, and each id detached.
    assert sorted((s, p) for s, p, _f in dry.attached) == sorted(
        (s, p) for s, p, _f in done.attached)
    assert sorted(dry.detached) == sorted(done.detached) and len(done.detached) == 8
    docs, notes = store_files(emu, ids["docs"]), store_files(emu, ids["notes"])
    assert set(docs) == selected(syncer, "docs/") | {foreign}
    assert set(notes) == selected(syncer, "notes/")
    assert mapping(syncer)["notes/moved.md"]["vector_stores"] == {ids["notes"]: "completed"}
    assert "docs/b/f004.md" not in mapping(syncer)
    # Nothing left to do: a dry run lists no attachment to make or remove.
    again = syncer.reconcile(dry_run=True).attachments
    assert again is not None and (again.attached, again.detached) == ([], [])


def test_dry_run_lists_attachments_and_detaches(emulator_factory: Factory, tmp_path: Path,
                                                syncer_on: Callable[..., Syncer]) -> None:
    emu = fast_emulator(emulator_factory, flavor="openai", vs_step_s=0.2)
    root = tmp_path / "root"
    for folder in ("docs", "notes"):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            (root / folder / f"{folder}{i}.txt").write_text(f"{folder} {i}\n", "utf-8")
    syncer = syncer_on(emu, root, **RULES)
    syncer.reconcile()
    store_id = stores(emu)["docs"]
    missing = mapping(syncer)["docs/docs1.txt"]["file_id"]
    stray = mapping(syncer)["notes/notes0.txt"]["file_id"]
    with api(emu) as http:
        # One of ours detached by hand, and one of ours no docs rule selects attached.
        assert http.delete(f"/vector_stores/{store_id}/files/{missing}").status_code == 200
        assert http.post(f"/vector_stores/{store_id}/files",
                         json={"file_id": stray}).status_code == 200
    before = set(store_files(emu, store_id))
    dry = syncer.reconcile(dry_run=True).attachments
    assert dry is not None
    assert dry.attached == [(store_id, "docs/docs1.txt", missing)]
    assert dry.detached == [(store_id, stray)]
    text = "\n".join(attach_lines(dry.as_dict()))
    assert "would attach 1, would detach 1" in text
    assert f"attach  docs/docs1.txt -> {store_id}" in text
    assert f"detach  {stray} from {store_id}" in text
    assert set(store_files(emu, store_id)) == before
    syncer.reconcile()
    assert set(store_files(emu, store_id)) == selected(syncer, "docs/")


def test_the_daemon_attaches_what_it_syncs(emulator_factory: Factory, tmp_path: Path,
                                           run_daemon: Callable[..., RunningDaemon]) -> None:
    emu = fast_emulator(emulator_factory, flavor="openai", vs_step_s=0.5)
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "first.md").write_text("first\n", "utf-8")
    daemon = run_daemon(fast_config(tmp_path, root, emu, **RULES), emu.api_key)

    def searchable(path: str) -> bool:
        entry = daemon.mapping().get(path) or {}
        return "completed" in (entry.get("vector_stores") or {}).values()

    wait_for(lambda: searchable("docs/first.md"), timeout=60, what="first.md searchable")
    (root / "docs" / "dropped.md").write_text("dropped in\n", "utf-8")
    wait_for(lambda: searchable("docs/dropped.md"), timeout=60, what="dropped.md searchable")
    store_id = stores(emu)["docs"]
    gone = daemon.mapping()["docs/first.md"]["file_id"]
    (root / "docs" / "first.md").unlink()
    wait_for(lambda: gone not in store_files(emu, store_id), timeout=60, interval=0.2,
             what="first.md detached")
    assert set(store_files(emu, store_id)) == {daemon.mapping()["docs/dropped.md"]["file_id"]}
