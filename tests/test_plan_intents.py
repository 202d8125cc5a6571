"""How the planner resolves uploads whose outcome was never recorded (pure, no I/O)."""

from __future__ import annotations

from syncd.api.adoption import UploadWindow, wire_name
from syncd.api.models import RemoteFile
from syncd.engine.model import Intent, LocalFile, LostCopy, Plan, Record, ScanResult
from syncd.engine.plan import Policy, StateView, plan
from syncd.engine.records import RecordTable

T0 = 1_700_000_000.0
# The provider-clock window an upload sent at T0 recorded (a 60 s read timeout).
W0 = UploadWindow.of_attempt(T0, T0 + 60, (-1.0, 1.0))


def intent(path: str, sha: str = "s1", at: float = T0, window: UploadWindow | None = W0) -> Intent:
    return Intent(path, path.rsplit("/", 1)[-1], 10, sha, at, window)


def local(path: str, sha: str = "s1", size: int = 10) -> LocalFile:
    return LocalFile(path, size, 1, 1, purpose="file-extract", sha256=sha)


def remote(fid: str, name: str, created: float, size: int = 10) -> RemoteFile:
    return RemoteFile(fid, size, int(created), name, "file-extract")


def run(
    files: dict[str, LocalFile],
    intents: list[Intent],
    listing: list[RemoteFile],
    claimed_elsewhere: frozenset[str] = frozenset(),
) -> Plan:
    view = StateView(RecordTable(), {i.path: i for i in intents}, set(), claimed_elsewhere)
    return plan(ScanResult(files=files), view, {f.id: f for f in listing}, Policy())


def test_a_look_alike_outside_the_upload_window_is_neither_adopted_nor_deleted() -> None:
    later = remote("file-fe-foreign", "x.txt", W0.latest + 1)
    p = run({"a/x.txt": local("a/x.txt")}, [intent("a/x.txt")], [later])
    assert p.adopts == [] and p.deletes == []
    assert [u.path for u in p.uploads] == ["a/x.txt"]
    assert p.clear_intents == ["a/x.txt"]


def test_oldest_intent_claims_the_earliest_match_and_extras_are_left_alone() -> None:
    first = intent("a/x.txt", "s1")
    second = intent("b/x.txt", "s2", T0 + 5, UploadWindow(W0.earliest + 5, W0.latest + 5))
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
    scan = ScanResult(files={"a/x.txt": local("a/x.txt", "new")}, errors=["b: Permission denied"])
    view = StateView(RecordTable(), {"a/x.txt": intent("a/x.txt", "old")}, set())
    listing = {"file-fe-1": remote("file-fe-1", "x.txt", T0 + 1)}
    p = plan(scan, view, listing, Policy())
    assert [(d.file_id, d.reason) for d in p.deletes] == [("file-fe-1", "orphan")]
    assert [u.path for u in p.uploads] == ["a/x.txt"]


def test_targeted_runs_leave_intents_to_the_executor() -> None:
    view = StateView(RecordTable(), {"a/x.txt": intent("a/x.txt")}, set())
    listing = {"file-fe-1": remote("file-fe-1", "x.txt", T0 + 1)}
    scan = ScanResult(files={"a/x.txt": local("a/x.txt")})
    p = plan(scan, view, listing, Policy(scope=frozenset({"a/x.txt"})))
    assert p.adopts == [] and p.clear_intents == []
    assert [u.path for u in p.uploads] == ["a/x.txt"]


def test_an_upload_whose_body_never_left_adopts_nothing() -> None:
    # Killed mid-upload: another tool's file of the same name and size appears later.
    foreign = remote("file-fe-foreign", "x.txt", T0 + 30)
    p = run({"a/x.txt": local("a/x.txt")}, [intent("a/x.txt", window=None)], [foreign])
    assert p.adopts == [] and p.deletes == []
    assert [u.path for u in p.uploads] == ["a/x.txt"]
    assert p.clear_intents == ["a/x.txt"]


def test_a_file_another_project_claimed_is_never_adopted() -> None:
    twin = remote("file-fe-twin", "x.txt", T0 + 1)
    ours = remote("file-fe-ours", "x.txt", T0 + 2)
    p = run({"a/x.txt": local("a/x.txt")}, [intent("a/x.txt")], [twin, ours], frozenset({twin.id}))
    assert [(a.path, a.file_id) for a in p.adopts] == [("a/x.txt", "file-fe-ours")]


def test_the_window_is_in_the_providers_clock() -> None:
    # The provider's clock runs 600 s behind ours; the window was measured that way.
    skewed = UploadWindow.of_attempt(T0, T0 + 60, (-600.5, -599.5))
    stored = remote("file-fe-1", "x.txt", T0 - 600)
    p = run({"a/x.txt": local("a/x.txt")}, [intent("a/x.txt", window=skewed)], [stored])
    assert [a.file_id for a in p.adopts] == ["file-fe-1"]
    p = run({"a/x.txt": local("a/x.txt")}, [intent("a/x.txt")], [stored])
    assert p.adopts == []


def test_names_compare_as_they_travelled() -> None:
    name = 'say "hi"\n.txt'
    files = {name: local(name)}
    sent = Intent(name, wire_name(name), 10, "s1", T0, W0)
    stored = remote("file-fe-1", wire_name(name), T0 + 1)
    p = run(files, [sent], [stored])
    assert [a.file_id for a in p.adopts] == ["file-fe-1"]


def test_a_file_we_claimed_that_nothing_records_is_cleaned_up() -> None:
    # A crash between claiming an upload and recording it: the file is ours, no path
    # holds it and no intent will find it again.
    stray = remote("file-fe-stray", "x.txt", T0 + 1)
    held = remote("file-fe-held", "y.txt", T0 + 1)
    foreign = remote("file-fe-foreign", "x.txt", T0 + 1)
    rec = Record("y.txt", "synced", held.id, "file-extract", "y.txt", 10, 1, 1, "s1")
    files = {"y.txt": local("y.txt")}
    listing = {f.id: f for f in (stray, held, foreign)}
    view = StateView(RecordTable.of([rec]), {}, set(), frozenset(), frozenset({stray.id, held.id}))
    p = plan(ScanResult(files=files), view, listing, Policy())
    assert [(d.file_id, d.reason) for d in p.deletes] == [(stray.id, "stray")]
    targeted = plan(ScanResult(files=files), view, listing, Policy(scope=frozenset({"y.txt"})))
    assert targeted.deletes == []


def test_a_copy_shares_the_adopted_id_not_the_one_its_original_lets_go() -> None:
    # a/x.txt held file-fe-old; its re-upload's reply was lost and is adopted now. A new
    # copy of the same content must ride on the adopted id: the old one becomes garbage.
    old = Record("a/x.txt", "synced", "file-fe-old", "file-extract", "x.txt", 10, 1, 1, "s1")
    view = StateView(RecordTable.of([old]), {"a/x.txt": intent("a/x.txt")}, set())
    listing = {f.id: f for f in (remote("file-fe-old", "x.txt", T0 - 100),
                                 remote("file-fe-new", "x.txt", T0 + 1))}
    scan = ScanResult(files={"a/x.txt": local("a/x.txt"), "b/copy.txt": local("b/copy.txt")})
    p = plan(scan, view, listing, Policy(dedupe=True))
    assert [(a.path, a.file_id) for a in p.adopts] == [("a/x.txt", "file-fe-new")]
    assert [(s.path, s.file_id) for s in p.shares] == [("b/copy.txt", "file-fe-new")]
    assert [(d.file_id, d.reason) for d in p.deletes] == [("file-fe-old", "replaced")]


def test_copies_lost_attempts_may_have_stored_are_deleted_as_ours() -> None:
    # x.txt was sent three times; the third is recorded. Copies of the first two show in
    # the listing now, beside a look-alike another project claimed and one outside the
    # window; a lost copy noted two days ago is no longer looked for.
    window = UploadWindow(T0, T0 + 20)
    recorded = remote("file-fe-rec", "x.txt", T0 + 25)
    first, second = remote("file-fe-1", "x.txt", T0 + 1), remote("file-fe-2", "x.txt", T0 + 9)
    claimed = remote("file-fe-theirs", "x.txt", T0 + 5)
    later = remote("file-fe-later", "x.txt", T0 + 60)
    rec = Record("a/x.txt", "synced", recorded.id, "file-extract", "x.txt", 10, 1, 1, "s1")
    now = LostCopy(1, "a/x.txt", "x.txt", 10, window, T0 + 30, most=2)
    stale = LostCopy(2, "a/x.txt", "x.txt", 10, UploadWindow(T0 - 99, T0 - 90), T0 - 2 * 86_400)
    listing = {f.id: f for f in (recorded, first, second, claimed, later)}
    view = StateView(RecordTable.of([rec]), {}, set(), frozenset({claimed.id}), frozenset(),
                     [now, stale])  # fmt: skip
    p = plan(ScanResult(files={"a/x.txt": local("a/x.txt")}), view, listing, Policy(now=T0 + 60))
    assert sorted((d.file_id, d.reason) for d in p.deletes) == [
        ("file-fe-1", "orphan"), ("file-fe-2", "orphan")
    ]
    assert p.found_lost == {1: 2}
    assert p.clear_lost == [1, 2]  # both copies found; the other one looked for long enough
    assert p.uploads == [] and p.refused is None
    # No more than the attempts made: with one already found, only the earliest other.
    view = StateView(RecordTable.of([rec]), {}, set(), frozenset({claimed.id}), frozenset(),
                     [LostCopy(1, "a/x.txt", "x.txt", 10, window, T0 + 30, most=2, found=1)])
    p = plan(ScanResult(files={"a/x.txt": local("a/x.txt")}), view, listing, Policy(now=T0 + 60))
    assert [d.file_id for d in p.deletes] == ["file-fe-1"] and p.clear_lost == [1]
