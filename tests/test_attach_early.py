"""Attachments keep pace with uploads: a long reconcile attaches the files it has synced
while it still uploads (a file batch at most every ``EARLY_EVERY_S``), so the store does
not wait for the last upload; the run's pass still converges the store exactly and
reports each attachment once. A short run (a few files) sends nothing mid-run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.engine import attach
from syncd.engine.report import RunReport
from syncd.engine.sync import Syncer
from tests.emulator_fixture import EmulatorHandle
from tests.helpers import wait_for
from tests.test_attach import mapping, selected, store_files, stores

Factory = Callable[..., EmulatorHandle]
FILES = 80
RULES = {"vector_stores": {"rules": [{"globs": ["docs/**"], "store": "docs"}]},
         "api": {"provider": "openai"}}


def test_a_long_run_attaches_while_it_uploads(emulator_factory: Factory, tmp_path: Path,
                                              syncer_on: Callable[..., Syncer],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attach, "EARLY_EVERY_S", 0.5)
    # 80 uploads at 20 per second: a run of about 4 s.
    emu = emulator_factory(flavor="openai", vs_step_s=0.2, upload_rate=20, read_rate=1000,
                           delete_rate=1000)
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    for i in range(FILES):
        (root / "docs" / f"f{i:03d}.md").write_text(f"# doc {i}\n", "utf-8")
    syncer = syncer_on(emu, root, **RULES, limits={"upload_qps": 20},
                       daemon={"publish_interval_s": 0.2})
    reports: list[RunReport] = []
    runner = threading.Thread(target=lambda: reports.append(syncer.reconcile()))
    runner.start()
    seen: list[tuple[int, int]] = []

    def attached_or_done() -> bool:
        uploads = int(emu.stats()["mutations"]["upload"])
        store_id = stores(emu).get("docs")
        seen.append((uploads, len(store_files(emu, store_id)) if store_id else 0))
        return seen[-1][1] > 0 or not runner.is_alive()

    wait_for(attached_or_done, timeout=120, interval=0.05, what="an attachment or the run's end")
    runner.join(timeout=120)
    uploads, attached_then = seen[-1]
    assert attached_then > 0 and uploads < FILES, seen[-5:]

    report = reports[0].attachments
    assert report is not None
    files = store_files(emu, stores(emu)["docs"])
    assert set(files) == selected(syncer, "docs/")
    assert {f["status"] for f in files.values()} == {"completed"}
    assert report.created == ["docs"]
    assert sorted(p for _s, p, _f in report.attached) == sorted(mapping(syncer))
    assert report.statuses == {"completed": FILES}
    again = syncer.reconcile(dry_run=True).attachments
    assert again is not None and (again.attached, again.detached) == ([], [])
