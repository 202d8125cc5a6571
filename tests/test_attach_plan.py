"""The attach planner's promises, over generated trees, rules and store listings: applied,
a plan leaves each store holding exactly what its rules select plus what is not ours;
nothing foreign is ever detached; each id is attached once per store whatever number
of paths share it; over the cap no stray goes and each is counted as held."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.config import MaxDelete
from syncd.config.vector_rules import VectorRule
from syncd.engine.attach_plan import SyncedFile, plan_attach, wanted_by_store

RULES = (VectorRule(("a/**",), store_id="vs_a", attributes=(("f", "{folder}"),)),
         VectorRule(("b/**", "*.md"), store_id="vs_b"))
paths = st.sampled_from([f"{d}/{n}" for d in ("a", "b", "c", "a/x") for n in ("1.md", "2.txt")])
files = st.lists(st.tuples(paths, st.integers(0, 6)), max_size=12, unique_by=lambda t: t[0])
ids = st.sampled_from([f"file-{i}" for i in range(10)])
statuses = st.sampled_from(["completed", "in_progress", "failed", "cancelled"])
listings = st.dictionaries(st.sampled_from(["vs_a", "vs_b"]),
                           st.dictionaries(ids, statuses, max_size=8), max_size=2)


def synced(raw: list[tuple[str, int]]) -> list[SyncedFile]:
    # The same number is the same content (a shared id).
    return [SyncedFile(p, f"file-{n}", f"sha{n}") for p, n in raw]


@settings(max_examples=120, deadline=None)
@given(raw=files, listed=listings, foreign=st.sets(ids, max_size=4))
def test_applied_plan_converges_and_spares_foreign(
        raw: list[tuple[str, int]], listed: dict[str, dict[str, str]], foreign: set[str]) -> None:
    wanted = wanted_by_store(RULES, synced(raw), {}, "p")
    mine = {fid for _p, fid in ((p, f"file-{n}") for p, n in raw)}
    ours = {k: set(v) - foreign | (mine & set(v)) for k, v in listed.items()}
    plan = plan_attach(wanted, listed, ours, max_delete=MaxDelete(count=1000))
    for key in set(wanted) | set(listed):
        have = set(listed.get(key, {}))
        detached = plan.detach.get(key, [])
        attached = [w.file_id for w in plan.attach.get(key, [])]
        assert len(attached) == len(set(attached))
        assert not set(detached) - ours.get(key, set()), "only ours is detached"
        after = (have - set(detached)) | set(attached)
        theirs = have - ours.get(key, set())
        assert after == set(wanted.get(key, {})) | theirs
        assert not plan.held.get(key)


@settings(max_examples=100, deadline=None)
@given(raw=files, listed=listings, cap=st.integers(0, 3))
def test_over_the_cap_no_stray_goes(raw: list[tuple[str, int]],
                                    listed: dict[str, dict[str, str]], cap: int) -> None:
    wanted = wanted_by_store(RULES, synced(raw), {}, "p")
    ours = {k: set(v) for k, v in listed.items()}
    strays = sum(1 for k, v in listed.items() for f in v if f not in wanted.get(k, {}))
    plan = plan_attach(wanted, listed, ours, max_delete=MaxDelete(count=cap))
    gone = [f for k, v in plan.detach.items() for f in v if f not in wanted.get(k, {})]
    if strays > cap:
        assert gone == [] and plan.held_count == strays
    else:
        assert len(gone) == strays and plan.held_count == 0
    confirmed = plan_attach(wanted, listed, ours, max_delete=MaxDelete(count=cap),
                            confirmed=True)
    assert confirmed.held_count == 0


def test_shared_content_is_attached_once_with_the_first_path() -> None:
    raw = [SyncedFile("a/z.txt", "file-1", "s"), SyncedFile("a/x/y.txt", "file-1", "s")]
    wanted = wanted_by_store(RULES, raw, {}, "p")
    want = wanted["vs_a"]["file-1"]
    assert list(wanted["vs_a"]) == ["file-1"]
    assert want.path == "a/x/y.txt" and want.paths == ("a/x/y.txt", "a/z.txt")
    assert want.attributes == {"f": "a/x"}
