"""How the planner resolves uploads whose outcome was never recorded (pure, no I/O)."""

from __future__ import annotations

from syncd.api.models import RemoteFile
from syncd.engine.model import Intent, LocalFile, Plan, ScanResult
from syncd.engine.plan import INTENT_WINDOW_S, Policy, StateView, plan

T0 = 1_700_000_000.0


def local(path: str, sha: str = "s1", size: int = 10) -> LocalFile:
    return LocalFile(path, size, 1, 1, purpose="file-extract", sha256=sha)


def remote(fid: str, name: str, created: float, size: int = 10) -> RemoteFile:
    return RemoteFile(fid, size, int(created), name, "file-extract")


def run(files: dict[str, LocalFile], intents: list[Intent], listing: list[RemoteFile]) -> Plan:
    view = StateView({}, {i.path: i for i in intents}, set())
    return plan(ScanResult(files=files), view, {f.id: f for f in listing}, Policy())


def test_a_look_alike_outside_the_upload_window_is_neither_adopted_nor_deleted() -> None:
    intent = Intent("a/x.txt", "x.txt", 10, "s1", T0)
    later = remote("file-fe-foreign", "x.txt", T0 + INTENT_WINDOW_S + 60)
    p = run({"a/x.txt": local("a/x.txt")}, [intent], [later])
    assert p.adopts == [] and p.deletes == []
    assert [u.path for u in p.uploads] == ["a/x.txt"]
    assert p.clear_intents == ["a/x.txt"]


def test_oldest_intent_claims_the_earliest_match_and_extras_are_left_alone() -> None:
    first = Intent("a/x.txt", "x.txt", 10, "s1", T0)
    second = Intent("b/x.txt", "x.txt", 10, "s2", T0 + 5)
    files = {"a/x.txt": local("a/x.txt", "s1"), "b/x.txt": local("b/x.txt", "s2")}
    listing = [
        remote("file-fe-1", "x.txt", T0 + 1),
        remote("file-fe-2", "x.txt", T0 + 6),
        remote("file-fe-3", "x.txt", T0 + 7),  # a look-alike: maybe another tool's
    ]
    p = run(files, [second, first], listing)
    assert {(a.path, a.file_id) for a in p.adopts} == {
        ("a/x.txt", "file-fe-1"),
        ("b/x.txt", "file-fe-2"),
    }
    assert p.deletes == [] and p.uploads == []


def test_a_stale_upload_of_ours_is_deleted_even_when_deletes_are_refused() -> None:
    intent = Intent("a/x.txt", "x.txt", 10, "old", T0)
    scan = ScanResult(files={"a/x.txt": local("a/x.txt", "new")}, errors=["b: Permission denied"])
    view = StateView({}, {"a/x.txt": intent}, set())
    listing = {"file-fe-1": remote("file-fe-1", "x.txt", T0 + 1)}
    p = plan(scan, view, listing, Policy())
    assert [(d.file_id, d.reason) for d in p.deletes] == [("file-fe-1", "orphan")]
    assert [u.path for u in p.uploads] == ["a/x.txt"]


def test_targeted_runs_leave_intents_to_the_executor() -> None:
    intent = Intent("a/x.txt", "x.txt", 10, "s1", T0)
    view = StateView({}, {"a/x.txt": intent}, set())
    listing = {"file-fe-1": remote("file-fe-1", "x.txt", T0 + 1)}
    scan = ScanResult(files={"a/x.txt": local("a/x.txt")})
    p = plan(scan, view, listing, Policy(scope=frozenset({"a/x.txt"})))
    assert p.adopts == [] and p.clear_intents == []
    assert [u.path for u in p.uploads] == ["a/x.txt"]
