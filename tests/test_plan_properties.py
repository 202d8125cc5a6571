"""Properties of the pure planner over random (scan, state, remote listing) triples.

A small simulator applies a plan the way the executor and state.py do (every call
succeeding), so planning again checks that one successful run converges.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from syncd.api.adoption import UploadWindow
from syncd.api.models import RemoteFile
from syncd.engine.model import Delete, Intent, LocalFile, Note, Plan, Record, ScanResult
from syncd.engine.plan import Policy, StateView, plan, tracked
from syncd.engine.records import RecordTable

PATHS = ("a.txt", "b.txt", "d/a.txt", "d/c.md", "e/b.txt", "x.jsonl", "d/y.pdf", "e/f/g.csv")
STATUSES = ("synced", "invalid", "skipped", "quota", "error", "changing", "pending")
VARIANTS = (0, 1, 2)
NOW = 1_700_000_000


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _sha(size: int, variant: int) -> str:
    """A content hash; equal hashes imply equal sizes, as real ones do."""
    return f"sha-{size}-{variant}"


def _purpose(path: str) -> str:
    return "batch" if path.endswith(".jsonl") else "file-extract"


@dataclass
class World:
    scan: ScanResult
    records: dict[str, Record]
    intents: dict[str, Intent]
    garbage: set[str]
    remote: dict[str, RemoteFile]
    # Ids the test created as belonging to nobody we know.
    foreign: set[str] = field(default_factory=set)

    def view(self) -> StateView:
        return StateView(self.table(), dict(self.intents), set(self.garbage))

    def table(self) -> RecordTable:
        return RecordTable.of(self.records.values())


@st.composite
def local_files(draw: st.DrawFn, path: str) -> LocalFile:
    size = draw(st.integers(0, 4))
    base = LocalFile(path, size, draw(st.integers(1, 3)), draw(st.integers(1, 3)),
                     purpose=_purpose(path))
    kind = draw(st.sampled_from(("ok",) * 5 + ("invalid", "skipped", "changing", "error")))
    if kind == "ok":
        return replace(base, sha256=_sha(size, draw(st.sampled_from(VARIANTS))))
    return replace(base, problem=f"{kind} because", problem_status=kind)  # type: ignore[arg-type]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    ids = itertools.count()

    def new_id(kind: str) -> str:
        return f"file-fe-{kind}{next(ids)}"

    local_paths = draw(st.sets(st.sampled_from(PATHS)))
    files = {p: draw(local_files(p)) for p in sorted(local_paths)}
    root_empty = not files and draw(st.booleans())
    errors = ["x: Permission denied"] if draw(st.integers(0, 9)) == 0 else []
    scan = ScanResult(files=files, errors=errors, root_empty=root_empty)

    remote: dict[str, RemoteFile] = {}

    def put_remote(fid: str, name: str, size: int, created: int) -> None:
        remote[fid] = RemoteFile(fid, size, created, name, "file-extract")

    records: dict[str, Record] = {}
    for path in sorted(draw(st.sets(st.sampled_from(PATHS)))):
        local = files.get(path)
        like_local = local is not None and local.sha256 is not None and draw(st.booleans())
        size = local.size if like_local and local else draw(st.integers(0, 4))
        sha = (local.sha256 if like_local and local
               else draw(st.sampled_from((*(_sha(size, v) for v in VARIANTS), None))))
        has_id = draw(st.booleans())
        fid = new_id("r") if has_id else None
        if fid is not None and draw(st.integers(0, 3)) > 0:  # usually still remote
            put_remote(fid, _name(path), size, NOW - 100)
        records[path] = Record(
            path,
            "synced" if like_local else draw(st.sampled_from(STATUSES)),
            file_id=fid,
            purpose=_purpose(path) if draw(st.integers(0, 5)) else "batch",
            remote_name=_name(path) if draw(st.integers(0, 5)) else "old-name.txt",
            size=size,
            mtime_ns=local.mtime_ns if like_local and local else draw(st.integers(1, 3)),
            inode=draw(st.integers(1, 3)),
            sha256=sha,
            reason=None if like_local else draw(st.sampled_from((None, "because"))),
        )

    garbage: set[str] = set()
    for _ in range(draw(st.integers(0, 3))):
        fid = new_id("g")
        garbage.add(fid)
        if draw(st.booleans()):
            put_remote(fid, "old.txt", 1, NOW - 50)

    intents: dict[str, Intent] = {}
    unsent_lookalikes: set[str] = set()
    intent_paths = st.sampled_from(sorted(local_paths) or PATHS) | st.sampled_from(PATHS)
    for path in sorted(draw(st.sets(intent_paths, max_size=3))):
        local = files.get(path)
        same = local is not None and local.sha256 is not None and draw(st.integers(0, 3)) > 0
        size = local.size if local and same else draw(st.integers(0, 4))
        sha = local.sha256 if local and same else _sha(size, 9)
        # An intent whose body never left has no window: nothing to adopt.
        sent = draw(st.integers(0, 4)) > 0
        window = UploadWindow(NOW - 12, NOW + 60) if sent else None
        intent = Intent(path, _name(path), size, sha, NOW - 10.5, window)
        intents[path] = intent
        # What the interrupted upload may have created: nothing, once, or more (lost replies).
        # Unsent, it created nothing: same-named files of those seconds are someone else's.
        for _ in range(draw(st.integers(0, 3))):
            fid = new_id("c" if sent else "x")
            put_remote(fid, intent.filename, size, draw(st.integers(NOW - 12, NOW)))
            if not sent:
                unsent_lookalikes.add(fid)

    foreign: set[str] = set(unsent_lookalikes)
    for _ in range(draw(st.integers(0, 4))):
        fid = new_id("x")
        foreign.add(fid)
        # Often named like one of ours; older than any intent (so not a candidate).
        name = _name(draw(st.sampled_from(PATHS)))
        put_remote(fid, name, draw(st.integers(0, 4)), draw(st.integers(NOW - 500, NOW - 13)))

    return World(scan, records, intents, garbage, remote, foreign)


def policies(world_size: int) -> st.SearchStrategy[Policy]:
    return st.builds(
        Policy,
        delete_remote=st.booleans(),
        dedupe=st.booleans(),
        max_delete=st.one_of(st.none(), st.integers(0, 6)),
        max_files=st.integers(world_size, world_size + 10),
        max_bytes=st.integers(0, 60),
        headroom_files=st.integers(0, 2),
        headroom_bytes=st.integers(0, 5),
    )


# ------------------------------------------------------------------ the simulator


class Sim:
    """State and remote after an executor run in which every call succeeds."""

    def __init__(self, w: World) -> None:
        self.records = dict(w.records)
        self.intents = dict(w.intents)
        self.garbage = set(w.garbage)
        self.remote = dict(w.remote)
        self._ids = itertools.count()

    def record_uploaded(self, local: LocalFile, remote: RemoteFile, replaces: str | None) -> bool:
        """Like State.record_uploaded: a replaced id no path holds any more is garbage."""
        self.records[local.path] = Record(
            local.path, "synced", remote.id, local.purpose, remote.filename or local.name,
            local.size, local.mtime_ns, local.inode, local.sha256,
            float(remote.created_at), None,
        )
        self.intents.pop(local.path, None)
        if replaces and replaces != remote.id and all(
            r.file_id != replaces for r in self.records.values()
        ):
            self.garbage.add(replaces)
            return True
        return False

    def record_deleted(self, file_id: str, path: str | None, forget_path: bool) -> None:
        self.remote.pop(file_id, None)  # a 404 counts as done
        self.garbage.discard(file_id)
        if forget_path and path is not None:
            rec = self.records.get(path)
            if rec is not None and rec.file_id == file_id:
                del self.records[path]
        for p, rec in list(self.records.items()):
            if rec.file_id == file_id:
                self.records[p] = replace(rec, file_id=None, uploaded_at=None)

    def note(self, n: Note) -> None:
        rec = self.records.get(n.path) or Record(n.path, n.status)
        local = n.local
        if n.status == "synced" and local is not None:
            rec = replace(rec, status="synced", reason=None, size=local.size,
                          mtime_ns=local.mtime_ns, inode=local.inode, sha256=local.sha256)
        elif n.status in ("invalid", "skipped") and local is not None:
            rec = replace(rec, status=n.status, reason=n.reason, size=local.size,
                          mtime_ns=local.mtime_ns, inode=local.inode, purpose=local.purpose,
                          sha256=None)
        else:
            rec = replace(rec, status=n.status, reason=n.reason)
        self.records[n.path] = rec

    def apply(self, p: Plan) -> None:
        for d in p.deletes:
            if d.reason == "orphan":
                self.garbage.add(d.file_id)
        before = dict(self.records)
        for a in p.adopts:
            rec = before.get(a.path)
            old = rec.file_id if rec and rec.file_id in self.remote else None
            self.record_uploaded(a.local, self.remote[a.file_id], old)
        for path in p.clear_intents:
            self.intents.pop(path, None)
        for n in p.notes:
            self.note(n)
        for f in p.forgets:
            self.records.pop(f.path, None)
        for path in p.detaches:
            self.records[path] = replace(self.records[path], file_id=None, uploaded_at=None)
        late = [] if p.deletes_first else list(p.deletes)
        for sh in p.shares:
            assert sh.file_id is not None
            if self.record_uploaded(sh.local, self.remote[sh.file_id], sh.replaces):
                late.append(Delete(sh.replaces or "", "replaced", sh.path))
        early = p.deletes if p.deletes_first else []
        for d in early:
            self.record_deleted(d.file_id, d.path, d.reason == "gone")
        for up in p.uploads:
            fid = f"file-fe-new{next(self._ids)}"
            remote = RemoteFile(fid, up.local.size, NOW + 60, up.local.name,
                                up.local.purpose or "")
            self.remote[fid] = remote
            for one in (up, *up.sharers):
                if self.record_uploaded(one.local, remote, one.replaces):
                    late.append(Delete(one.replaces or "", "replaced", one.path))
        for d in late:
            self.record_deleted(d.file_id, d.path, d.reason == "gone")

    def world(self, scan: ScanResult) -> World:
        return World(scan, self.records, self.intents, self.garbage, self.remote)


def _candidates(w: World) -> set[str]:
    """Ids an interrupted upload of ours may have created (the planner may adopt them)."""
    out = set()
    for intent in w.intents.values():
        for f in w.remote.values():
            if ((f.filename, f.bytes) == (intent.filename, intent.size)
                    and intent.window is not None and intent.window.covers(f.created_at)):
                out.add(f.id)
    return out


# Random examples, a new set each run: over runs they search far more than one fixed set
# would (a shared copy found only after thousands of examples was such a case).
SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ properties


@SETTINGS
@given(data=st.data())
def test_never_touches_a_foreign_file(data: st.DataObject) -> None:
    w = data.draw(worlds())
    policy = data.draw(policies(len(w.remote)))
    p = plan(w.scan, w.view(), w.remote, policy)
    ours = w.view().owned_ids() | _candidates(w)
    for d in p.deletes:
        assert d.file_id in ours, d
        assert d.file_id not in w.foreign or d.file_id in _candidates(w)
    for a in p.adopts:
        assert a.file_id in _candidates(w)
    for up in p.uploads:
        assert up.replaces is None or up.replaces in ours
    ids = [d.file_id for d in p.deletes]
    assert len(ids) == len(set(ids)), "one id deleted twice"


@SETTINGS
@given(data=st.data())
def test_one_successful_run_converges(data: st.DataObject) -> None:
    w = data.draw(worlds())
    w.scan.errors.clear()
    policy = Policy(delete_remote=data.draw(st.booleans()), dedupe=data.draw(st.booleans()),
                    max_delete=None)
    first = plan(w.scan, w.view(), w.remote, policy)
    assume(first.refused is None)
    assert not any(n.status == "quota" for n in first.notes)
    sim = Sim(w)
    sim.apply(first)
    after = sim.world(w.scan)
    second = plan(after.scan, after.view(), after.remote, policy)
    assert second.uploads == [] and second.adopts == [], second
    assert second.deletes == [], second
    assert second.forgets == []
    # The remote now holds each syncable local file under a recorded id, once.
    for path, local in w.scan.files.items():
        rec = after.records[path]
        if local.syncable:
            assert rec.file_id in after.remote and rec.status == "synced"
            f = after.remote[rec.file_id]
            assert f.bytes == local.size and rec.sha256 == local.sha256
            if not policy.dedupe:
                assert f.filename == local.name
    recorded = [r.file_id for r in after.records.values() if r.file_id]
    if not policy.dedupe:
        assert len(recorded) == len(set(recorded))
    # Paths share an id only when they hold the same content for the same purpose.
    holders: dict[str, set[tuple[str | None, str | None]]] = {}
    for r in after.records.values():
        if r.file_id:
            holders.setdefault(r.file_id, set()).add((r.sha256, r.purpose))
    assert all(len(v) == 1 for v in holders.values()), holders
    if policy.delete_remote:
        # Nothing of ours is left over: every remote id is recorded, belongs to others,
        # or is a look-alike of an interrupted upload that no intent claimed (it may be
        # someone else's file of the same name and size: it is left alone).
        claimed = {a.file_id for a in first.adopts} | {
            d.file_id for d in first.deletes if d.reason == "orphan"
        }
        unclaimed = _candidates(w) - claimed
        leftover = set(after.remote) - set(recorded) - w.foreign - unclaimed
        assert not leftover, leftover
        # Each intent claims at most one file.
        assert len(claimed) <= len(w.intents)
    assert after.garbage == set()
    event("has adopt" if first.adopts else "no adopt")
    event("has delete" if first.deletes else "no delete")
    event("has share" if first.shares or any(u.sharers for u in first.uploads) else "no share")


@SETTINGS
@given(data=st.data())
def test_a_vanished_or_suspicious_source_deletes_nothing_of_what_is_gone(
    data: st.DataObject,
) -> None:
    w = data.draw(worlds())
    policy = data.draw(policies(len(w.remote)))
    missing = data.draw(st.booleans())
    if missing:
        w.scan.root_ok = False
        w.scan.files.clear()
        w.scan.errors.append("root is not readable")
    p = plan(w.scan, w.view(), w.remote, policy)
    gone = [d for d in p.deletes if d.reason in ("gone", "stale")]
    if missing:
        assert p.halted and p.refused
        assert p.mutating == 0 and not p.adopts and not p.forgets
    # Giving up a record that still owns a remote copy is a delete of sorts, too.
    letting_go = [f for f in p.forgets if (r := w.records.get(f.path)) and r.file_id]
    if (w.scan.root_empty and tracked(w.table()) > 0) or w.scan.errors:
        assert gone == [] and letting_go == []
    if not missing and ((w.scan.root_empty and tracked(w.table()) > 0) or w.scan.errors):
        # A refusal is reported exactly when something was withheld.
        trusting = replace(w.scan, errors=[], root_empty=False)
        unguarded = plan(trusting, w.view(), w.remote, replace(policy, max_delete=None))
        withheld = [d for d in unguarded.deletes if d.reason in ("gone", "stale")]
        withheld += [f for f in unguarded.forgets if (r := w.records.get(f.path)) and r.file_id]
        assert bool(p.refused) == bool(withheld)
    if policy.max_delete is not None and len(gone) > 0:
        assert len(gone) <= policy.max_delete
    if policy.max_delete == 0:
        assert not [d for d in p.deletes if d.reason == "gone"]


@SETTINGS
@given(data=st.data())
def test_uploads_fit_the_quota(data: st.DataObject) -> None:
    w = data.draw(worlds())
    policy = data.draw(policies(0).map(lambda p: replace(p, max_files=p.max_files - 8)))
    p = plan(w.scan, w.view(), w.remote, policy)
    free_files = policy.max_files - policy.headroom_files - len(w.remote)
    free_bytes = policy.max_bytes - policy.headroom_bytes - sum(f.bytes for f in w.remote.values())
    if p.deletes_first:
        freed = {d.file_id for d in p.deletes if d.file_id in w.remote}
        free_files += len(freed)
        free_bytes += sum(w.remote[i].bytes for i in freed)
    assert len(p.uploads) <= max(free_files, 0)
    assert sum(u.local.size for u in p.uploads) <= max(free_bytes, 0)
    waiting = {n.path for n in p.notes if n.status == "quota"}
    assert not waiting & {u.path for u in p.uploads}
