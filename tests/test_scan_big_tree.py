"""Big trees: the scan costs what syncs. Files no rule selects are counted per rule (a few
examples each), never recorded; folders no candidate can be under are not entered; the
fast matching agrees with wcmatch, and pruning never hides a candidate."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from wcmatch import glob

from syncd.config import DEFAULT_EXCLUDE, DEFAULT_PURPOSES, PurposeRule, RulesConfig
from syncd.engine.model import Note
from syncd.engine.records import RecordTable
from syncd.engine.rules import Rules
from syncd.engine.scan import EXAMPLES, PRUNED, scan_paths, scan_root, walk_skipped
from syncd.engine.state import State
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import (
    fast_emulator,
    reconcile,
    remote_files,
    run_syncd,
    write_config,
)

FLAGS = glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB | glob.IGNORECASE

# ------------------------------------------------------------------ the rules


def _reference(config: RulesConfig, rel: str) -> str | None:
    """The purpose wcmatch gives ``rel`` by the documented rules, or None when skipped."""

    def matches(patterns: tuple[str, ...]) -> bool:
        anchored = [p if "/" in p else f"**/{p}" for p in patterns]
        return bool(patterns) and glob.compile(anchored, flags=FLAGS).match(rel)

    if not matches(config.include) or matches(config.exclude):
        return None
    for rule in config.purposes:
        if matches(rule.patterns):
            return None if rule.purpose == "skip" else rule.purpose
    return None


PATTERNS = ["**", "*", "*.txt", "*.TXT", "docs/**", "docs/*.md", "a/*/c/**", "**/b/*.pdf",
            "*.{md,csv}", "{docs,notes}/**", "{a,b/c}/*.json", "~$*", ".*", "**/.*/**",
            "build/**", "**/node_modules/**", "x?.md", "[ab]*.txt", "report", "*.tar.gz",
            "*.tmp", "a/b/**/*.md", "Docs/**"]  # fmt: skip
SEGMENTS = ["a", "b", "c", "docs", "Docs", "notes", "build", "node_modules", ".git", "x",
            "report", "deep"]  # fmt: skip
NAMES = ["f.txt", "F.TXT", "n.md", "xy.md", "a.csv", "b.pdf", "c.json", "~$d.docx", ".hidden",
         "r.tar.gz", "report", "t.tmp", "blob.bin", "noext", "ab.txt"]  # fmt: skip

configs = st.builds(
    lambda inc, exc, skip, pick: RulesConfig(
        include=tuple(inc),
        exclude=tuple(exc),
        purposes=(PurposeRule(tuple(skip), "skip"), PurposeRule(tuple(pick), "file-extract"))
        if skip
        else (PurposeRule(tuple(pick), "file-extract"),),
    ),
    st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3),
    st.lists(st.sampled_from(PATTERNS), max_size=3),
    st.lists(st.sampled_from(PATTERNS), max_size=2),
    st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3),
)
paths = st.builds(
    lambda dirs, name: "/".join([*dirs, name]),
    st.lists(st.sampled_from(SEGMENTS), max_size=4),
    st.sampled_from(NAMES),
)


@settings(max_examples=300, deadline=None)
@given(configs, st.lists(paths, min_size=1, max_size=20))
def test_verdict_agrees_with_wcmatch_and_pruning_never_hides_a_candidate(
    config: RulesConfig, rels: list[str]
) -> None:
    rules = Rules(config)
    for rel in rels:
        verdict = rules.verdict(rel)
        want = _reference(config, rel)
        got = None if isinstance(verdict, str) else verdict.purpose
        assert got == want, (rel, config, verdict)
        assert rules.is_candidate(rel) == (want is not None)
        if want is not None:
            parts = rel.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                assert rules.can_hold("/".join(parts[:depth])), (rel, depth, config)
            # Found by a walk (which applied the folder excludes already): same answer.
            assert rules.verdict(rel, walked=True) == verdict


def test_which_folders_are_pruned() -> None:
    config = RulesConfig(include=("docs/**", "notes/*.md"), exclude=("**/.*/**", "docs/tmp/**"))
    rules = Rules(config)
    assert rules.can_hold("docs") and rules.can_hold("docs/a/b") and rules.can_hold("notes")
    assert not rules.can_hold("photos")  # no include pattern reaches it
    assert not rules.can_hold("notes/sub")  # notes/*.md names files of notes/ only
    assert not rules.can_hold("docs/.git")  # excluded with everything below
    assert not rules.can_hold("docs/tmp")
    assert rules.can_hold("docs/tmpx")
    # A file pattern does not prune: `x` names files, not the folders holding them.
    loose = Rules(RulesConfig(exclude=("x", "*.tmp")))
    assert loose.can_hold("a") and loose.can_hold("x")
    # No purpose rule other than skip reaches into build/: nothing there can sync.
    only_docs = Rules(RulesConfig(purposes=(PurposeRule(("docs/**/*.pdf",), "file-extract"),)))
    assert only_docs.can_hold("docs/x") and not only_docs.can_hold("build")


# ------------------------------------------------------------------ the scan


def _tree(root: Path, folders: int, per_folder: int, docs: int) -> None:
    for d in range(folders):
        folder = root / f"data{d:03d}"
        folder.mkdir(parents=True)
        for i in range(per_folder):
            (folder / f"blob{i:04d}.bin").write_bytes(b"x")
    (root / "docs").mkdir(parents=True, exist_ok=True)
    for i in range(docs):
        (root / "docs" / f"doc{i:02d}.txt").write_text(f"document {i}\n")


def _plain_walk(top: Path) -> int:
    files, stack = 0, [str(top)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    entry.stat(follow_symlinks=False)
                    files += 1
    return files


PEAK_OF_SCAN = """
import sys, tracemalloc
from pathlib import Path
from syncd.config import RulesConfig
from syncd.engine.rules import Rules
from syncd.engine.scan import scan_root
from syncd.engine.records import RecordTable
rules = Rules(RulesConfig())
tracemalloc.start()
scan_root(Path(sys.argv[1]), rules, RecordTable())
print(tracemalloc.get_traced_memory()[1])
"""


def test_scan_costs_about_a_plain_walk_and_holds_only_candidates(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _tree(root, folders=20, per_folder=1000, docs=10)
    rules = Rules(RulesConfig())
    _plain_walk(root)  # the cache warm for both
    best_walk = best_scan = float("inf")
    for _ in range(3):  # best of three: a busy machine slows single runs
        started = time.perf_counter()
        _plain_walk(root)
        best_walk = min(best_walk, time.perf_counter() - started)
        started = time.perf_counter()
        scan = scan_root(root, rules, RecordTable())
        best_scan = min(best_scan, time.perf_counter() - started)
    assert best_scan <= 3 * best_walk + 0.2, (best_scan, best_walk)

    # 20,000 skipped files: counted, not held (one LocalFile each was ~1 KB). Measured in a
    # process of its own: tracemalloc counts every thread's allocations, and a test
    # worker may have others running.
    peak = int(subprocess.run(
        [sys.executable, "-c", PEAK_OF_SCAN, str(root)], capture_output=True, text=True,
        check=True, timeout=120,
    ).stdout)  # fmt: skip
    assert peak < 2_000_000, peak
    assert sorted(scan.files) == [f"docs/doc{i:02d}.txt" for i in range(10)]
    label = "unsupported extension .bin: no purpose rule matches"
    assert scan.skipped == {label: 20_000}
    assert len(scan.skipped_examples[label]) == EXAMPLES
    assert all(p.endswith(".bin") for p in scan.skipped_examples[label])
    assert (scan.folders, scan.entries, scan.hashed) == (22, 20_031, 10)


def test_left_out_files_are_counted_by_rule_and_listed_on_demand(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _tree(root, folders=2, per_folder=3, docs=2)
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "objects" / "a.txt").write_text("x")
    (root / "node_modules" / "pkg").mkdir(parents=True)
    (root / "node_modules" / "pkg" / "README.md").write_text("x")
    (root / "docs" / "draft.tmp").write_text("x")
    (root / "docs" / "app.log").write_text("x")
    config = RulesConfig(
        exclude=(*DEFAULT_EXCLUDE, "node_modules/**"),
        purposes=(PurposeRule(("*.log",), "skip"), *DEFAULT_PURPOSES),
    )
    rules = Rules(config)

    scan = scan_root(root, rules, RecordTable())

    assert sorted(scan.files) == ["docs/doc00.txt", "docs/doc01.txt"]
    assert scan.skipped == {
        "unsupported extension .bin: no purpose rule matches": 6,
        "excluded by rules.exclude *.tmp": 1,
        "skipped by a purpose rule: *.log": 1,
    }
    assert scan.pruned == 2  # .git and node_modules, not entered
    assert not scan.root_empty and not scan.errors
    listed = dict(walk_skipped(root, rules))
    assert listed[".git/"] == listed["node_modules/"] == PRUNED
    assert listed["docs/app.log"] == "skipped by a purpose rule: *.log"
    assert sum(1 for label in listed.values() if ".bin" in label) == 6
    assert len(listed) == 10

    # A targeted look at a left-out file counts it too, and records nothing.
    some = scan_paths(
        root, rules, RecordTable(), ["docs/app.log", "node_modules", "docs/doc00.txt"]
    )
    assert list(some.files) == ["docs/doc00.txt"]
    assert some.skipped == {"skipped by a purpose rule: *.log": 1} and some.pruned == 1


def test_only_hidden_or_temporary_files_is_an_empty_root(tmp_path: Path) -> None:
    """The delete guard's "root is empty": files left out by purpose show the disk is
    there; hidden and temporary files alone do not (as before)."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / ".DS_Store").write_text("x")
    (root / "sub" / "x.part").write_text("x")
    assert scan_root(root, Rules(RulesConfig()), RecordTable()).root_empty
    (root / "sub" / "photo.raw").write_text("x")
    assert not scan_root(root, Rules(RulesConfig()), RecordTable()).root_empty


# ------------------------------------------------------------------ end to end


def test_reconcile_records_only_candidates_and_summarizes_the_rest(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    _tree(root, folders=10, per_folder=200, docs=5)
    (root / "build" / "out").mkdir(parents=True)
    (root / "build" / "out" / "notes.txt").write_text("built, never synced")
    cfg = write_config(tmp_path, root, emu, rules={"exclude": [*DEFAULT_EXCLUDE, "build/**"]})
    # A record an earlier version kept for a skipped file: no remote id, so it goes.
    state = State(tmp_path / "state")
    state.note(Note("data000/blob0000.bin", "skipped", "unsupported extension .bin"))
    state.close()

    first = reconcile(cfg, emu.api_key)
    assert first.returncode == 0, first.output
    assert first.json["uploaded"] == 5
    assert sorted(f["filename"] for f in remote_files(emu).values()) == [
        f"doc{i:02d}.txt" for i in range(5)
    ]
    with sqlite3.connect(tmp_path / "state" / "state.sqlite3") as db:
        rows = sorted(r[0] for r in db.execute("SELECT path FROM files"))
    assert rows == [f"docs/doc{i:02d}.txt" for i in range(5)]  # 2,000 skipped: no row
    # The run names a few skipped files as examples.
    skipped = {e["path"]: e["reason"] for e in first.json["skipped"]}
    assert 0 < len(skipped) <= EXAMPLES
    assert all(p.endswith(".bin") and "unsupported extension .bin" in r for p, r in skipped.items())

    state = State(tmp_path / "state")
    try:
        summary = state.get_meta("scan")
    finally:
        state.close()
    assert summary["candidates"] == 5 and summary["pruned_folders"] == 1
    assert summary["skipped"][0]["rule"] == "unsupported extension .bin: no purpose rule matches"
    assert summary["skipped"][0]["files"] == 2000
    assert len(summary["skipped"][0]["examples"]) == EXAMPLES

    again = reconcile(cfg, emu.api_key)
    assert again.returncode == 0, again.output
    assert (again.json["uploaded"], again.json["deleted"], again.json["hashed"]) == (0, 0, 0)

    # The long form, walked again on demand: every left-out file, and the pruned folder.
    listing = run_syncd("status", cfg, "--skipped", key=None)
    assert listing.returncode == 0, listing.output
    lines = [line.split("\t") for line in listing.stdout.splitlines()]
    assert sum(1 for path, rule in lines if path.endswith(".bin") and ".bin" in rule) == 2000
    assert ["build/", PRUNED] in lines
    assert len(lines) == 2001
