"""Reading a file of the root: one descriptor, opened inside the root, never blocking.

The scan and the reads after it run in this process against real folders, links and
named pipes; tests/test_open_once.py runs the same promises end to end.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.config import PurposeRule, RulesConfig
from syncd.engine.localopen import (
    BROKEN,
    LINK_TO_FOLDER,
    LINKED_FOLDER,
    LOOP,
    NOT_REGULAR,
    OUTSIDE,
    Refused,
    open_in_root,
)
from syncd.engine.model import ScanResult
from syncd.engine.records import RecordTable
from syncd.engine.rules import Rules
from syncd.engine.scan import hash_scanned, scan_root

# A call that blocks on a pipe never returns; one that does not is done well within this.
PROMPT_S = 10.0


def promptly(fn: Callable[[], Any], release: Path | None = None) -> Any:
    """``fn()``'s result, or a failure if it has not returned within ``PROMPT_S``. A call
    stuck opening the pipe ``release`` is let go afterwards (its other end opened)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PROMPT_S)
    if thread.is_alive():
        if release is not None:
            with contextlib.suppress(OSError):
                os.close(os.open(release, os.O_WRONLY | os.O_NONBLOCK))
        raise AssertionError(f"still blocked after {PROMPT_S:.0f} s (a named pipe opened?)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A root with files, links inside and out, a loop, a pipe, and a secret outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub" / "deeper").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (root / "a.txt").write_text("a\n")
    (root / "sub" / "deeper" / "b.txt").write_text("b\n")
    links = {
        "rel.txt": "a.txt",
        "abs.txt": str(root / "a.txt"),
        "up.txt": "sub/../a.txt",
        "sub/parent.txt": "../a.txt",
        "sub/chain.txt": "../rel.txt",
        "via-linked-folder.txt": "linked/deeper/b.txt",
        "linked": "sub",
        "out-rel.txt": "../outside/secret.txt",
        "out-abs.txt": str(outside / "secret.txt"),
        "out-sneaky.txt": "sub/../../outside/secret.txt",
        "loop.txt": "loop.txt",
        "broken.txt": "missing.txt",
        "pipe-link.txt": "pipe",
        "outlinked": str(outside),
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    os.mkfifo(root / "pipe")
    return root


@pytest.mark.parametrize(
    ("rel", "target", "content"),
    [
        ("a.txt", "a.txt", b"a\n"),
        ("rel.txt", "a.txt", b"a\n"),
        ("abs.txt", "a.txt", b"a\n"),
        ("up.txt", "a.txt", b"a\n"),
        ("sub/parent.txt", "a.txt", b"a\n"),
        ("sub/chain.txt", "a.txt", b"a\n"),
        ("via-linked-folder.txt", "sub/deeper/b.txt", b"b\n"),
    ],
)
def test_links_that_stay_inside_the_root_are_followed(
    tree: Path, rel: str, target: str, content: bytes
) -> None:
    with open_in_root(tree, rel) as opened:
        assert opened.file.read() == content
        assert opened.target == target
        assert opened.linked == (rel != target)
        assert opened.stat.st_ino == (tree / target).stat().st_ino


@pytest.mark.parametrize(
    ("rel", "reason"),
    [
        ("out-rel.txt", OUTSIDE),
        ("out-abs.txt", OUTSIDE),
        ("out-sneaky.txt", OUTSIDE),
        ("loop.txt", LOOP),
        ("broken.txt", BROKEN),
        ("pipe", NOT_REGULAR),
        ("pipe-link.txt", NOT_REGULAR),
        ("outlinked/secret.txt", LINKED_FOLDER),
        ("linked/deeper/b.txt", LINKED_FOLDER),
    ],
)
def test_what_leaves_the_root_or_is_no_file_is_refused_at_once(
    tree: Path, rel: str, reason: str
) -> None:
    with pytest.raises(Refused) as refused:
        promptly(lambda: open_in_root(tree, rel), release=tree / "pipe")
    assert refused.value.reason == reason
    assert refused.value.status == "skipped"


def test_a_link_to_a_folder_says_so_and_a_missing_path_is_gone(tree: Path) -> None:
    with pytest.raises(Refused) as refused:
        open_in_root(tree, "linked")
    assert (refused.value.reason, refused.value.status) == (LINK_TO_FOLDER, "skipped")
    with pytest.raises(FileNotFoundError):
        open_in_root(tree, "nothing.txt")
    with pytest.raises(NotADirectoryError):
        open_in_root(tree, "a.txt/b.txt")


def test_the_file_opened_is_the_file_read_whatever_the_link_says_later(tree: Path) -> None:
    with open_in_root(tree, "rel.txt") as opened:
        (tree / "rel.txt").unlink()
        (tree / "rel.txt").symlink_to(tree.parent / "outside" / "secret.txt")
        assert opened.file.read() == b"a\n"
    with pytest.raises(Refused):
        open_in_root(tree, "rel.txt")


def test_target_ok_decides_for_links_only(tree: Path) -> None:
    seen: list[str] = []

    def no(target: str) -> str:
        seen.append(target)
        return f"not {target}"

    with pytest.raises(Refused) as refused:
        open_in_root(tree, "sub/chain.txt", target_ok=no)
    assert refused.value.reason == "not a.txt"
    with open_in_root(tree, "a.txt", target_ok=no) as opened:
        assert opened.file.read() == b"a\n"
    assert seen == ["a.txt"]


def _rules() -> Rules:
    return Rules(RulesConfig())


def test_the_scan_refuses_links_to_what_the_rules_leave_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / ".hidden").mkdir(parents=True)
    (root / ".hidden" / "key.txt").write_text("k\n")
    (root / ".env").write_text("TOKEN=1\n")
    (root / "draft.tmp").write_text("t\n")
    (root / "a.txt").write_text("a\n")
    (root / "x.txt").symlink_to(".env")
    (root / "y.txt").symlink_to(".hidden/key.txt")
    (root / "z.txt").symlink_to("draft.tmp")
    (root / "ok.txt").symlink_to("a.txt")

    scan = scan_root(root, _rules(), RecordTable())
    assert scan.files["ok.txt"].syncable
    for name, target in (("x.txt", ".env"), ("y.txt", ".hidden/key.txt"), ("z.txt", "draft.tmp")):
        local = scan.files[name]
        assert not local.syncable
        assert local.problem_status == "skipped"
        assert local.problem is not None and local.problem.startswith(f"symlink to {target}, ")


class _Swapping(Rules):
    """The real rules, that turn ``victim`` into a named pipe when the walk decides on
    ``trigger``: after the victim's stat, before anything reads it."""

    def __init__(self, victim: Path, trigger: str) -> None:
        super().__init__(RulesConfig())
        self._victim = victim
        self._trigger = trigger

    def verdict(self, rel_path: str, *, walked: bool = False) -> PurposeRule | str:
        if rel_path == self._trigger and self._victim.is_file():
            st = self._victim.stat()
            tmp = self._victim.with_name(".pipe")
            os.mkfifo(tmp)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.rename(tmp, self._victim)
        return super().verdict(rel_path, walked=walked)


def test_a_candidate_become_a_pipe_between_its_stat_and_its_hash_is_refused(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    # Two files of one size: the scan hashes both (their content could be shared).
    (root / "a.txt").write_text("same size\n")
    (root / "b.txt").write_text("same size\n")
    (root / "sub" / "c.txt").write_text("walked after the files above\n")

    rules = _Swapping(root / "a.txt", trigger="sub/c.txt")
    scan: ScanResult = promptly(
        lambda: scan_root(root, rules, RecordTable()), release=root / "a.txt"
    )
    a = scan.files["a.txt"]
    assert (a.problem, a.problem_status) == (NOT_REGULAR, "skipped")
    assert scan.files["b.txt"].sha256 is not None


def test_a_file_become_a_pipe_after_the_scan_is_not_hashed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.txt").write_bytes(b"x" * 1000)
    scan = scan_root(root, _rules(), RecordTable())
    local = scan.files["big.txt"]
    assert local.sha256 is None  # nothing shares its size: left to the upload
    st = (root / "big.txt").stat()
    (root / "big.txt").unlink()
    os.mkfifo(root / "big.txt")
    os.utime(root / "big.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(Refused) as refused:
        promptly(lambda: hash_scanned(root, local), release=root / "big.txt")
    assert (refused.value.reason, refused.value.status) == (NOT_REGULAR, "skipped")
