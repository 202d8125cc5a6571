"""The decision of when a returning root may be reconciled, with a fake clock."""

from __future__ import annotations

from pathlib import Path

from syncd.daemon.root_watch import RootReturn, Signature, tree_signature

SETTLE = 2.0


def sig(*entries: tuple[str, int, int]) -> Signature:
    return frozenset(entries)


A = sig(("a.txt", 1, 100))
AB = sig(("a.txt", 1, 100), ("b.txt", 2, 200))


def test_settled_only_after_two_agreeing_scans_settle_s_apart_and_no_event() -> None:
    gate = RootReturn(SETTLE, max_settle_s=60)
    assert gate.step(0.0, A, None) == SETTLE
    assert gate.step(1.0, A, None) == 1.0  # agree, but not yet settle_s apart
    assert gate.step(2.0, A, 1.5) == 1.5  # an event 0.5 s ago: quiet for settle_s first
    assert gate.step(3.5, A, 1.5) is None


def test_a_change_between_scans_starts_over() -> None:
    gate = RootReturn(SETTLE, max_settle_s=60)
    gate.step(0.0, A, None)
    assert gate.step(2.0, AB, None) == SETTLE
    assert gate.step(4.0, AB, None) is None


def test_a_size_or_mtime_change_counts_as_a_change() -> None:
    gate = RootReturn(SETTLE, max_settle_s=60)
    gate.step(0.0, A, None)
    assert gate.step(2.0, sig(("a.txt", 2, 100)), None) == SETTLE
    assert gate.step(4.0, sig(("a.txt", 2, 101)), None) == SETTLE


def test_gone_again_forgets_what_was_seen() -> None:
    gate = RootReturn(SETTLE, max_settle_s=60)
    gate.step(0.0, A, None)
    assert gate.step(2.0, None, None) == SETTLE
    assert gate.step(3.0, A, None) == SETTLE
    assert gate.step(5.0, A, None) is None


def test_after_max_settle_only_the_paths_must_agree() -> None:
    gate = RootReturn(SETTLE, max_settle_s=10)
    growing = [sig(("log.txt", n, n)) for n in range(10)]
    t = 0.0
    for s in growing[:5]:  # a file that never stops changing holds it back until max_settle_s
        assert gate.step(t, s, t) is not None
        t += 2.0
    # Past max_settle_s the last two scans, settle_s apart, name the same paths: enough.
    assert gate.step(t, growing[5], t) is None
    # ...but a path still appearing keeps it waiting.
    gate = RootReturn(SETTLE, max_settle_s=0)
    gate.step(0.0, A, None)
    assert gate.step(2.0, AB, None) == SETTLE


def test_tree_signature_sees_candidates_only_and_none_without_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert tree_signature(root, lambda _p: True, lambda _d: True) is None
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("aa")
    (root / "skip.part").write_text("x")
    signature = tree_signature(root, lambda p: not p.endswith(".part"), lambda _d: True)
    assert signature is not None
    assert {(path, size) for path, size, _mtime in signature} == {("sub/a.txt", 2)}
