"""What each vector store should hold, and the attachments to make and remove to get there.

Pure: :func:`plan_attach` decides from the synced files (path, file id, content hash), the
rules (``vector_stores.rules``) with the store each resolved to, each store's listing, and
which attached ids are ours. A rule selects synced files by glob; a store holds each
selected file id once, however many paths share that content (the attributes are
rendered for the first of those paths in path order, and ``paths`` counts them all).
What a store lacks is attached; what it holds that is ours and no rule selects any more is
detached, at most ``max_delete`` of them in a run (counted apart from file deletes; over
it, none, and the plan says how many are held); what is not ours is never touched. An
attachment the provider ``cancelled`` is detached and attached again. The store that
records attachments is :mod:`syncd.engine.attach_store`; the step that acts on the plan
is :mod:`syncd.engine.attach`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from wcmatch import glob

from syncd.config import GLOB_FLAGS, MaxDelete
from syncd.config.vector_rules import VectorRule, render

# A store no rule has resolved yet (to be created by name): its key in a plan.
NEW_PREFIX = "new:"
# Statuses of an attachment on the provider; ``cancelled`` is attached again.
RETRY_STATUSES = frozenset({"cancelled"})


@dataclass(frozen=True)
class SyncedFile:
    path: str
    file_id: str
    sha256: str


@dataclass(frozen=True)
class Want:
    """One file id a store should hold, with what it is attached with."""

    file_id: str
    path: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    chunking: Mapping[str, object] | None = None
    # Every path whose content this id holds, in path order.
    paths: tuple[str, ...] = ()


@dataclass
class AttachPlan:
    # store (its id, or NEW_PREFIX + name) -> what to attach / detach there.
    attach: dict[str, list[Want]] = field(default_factory=dict)
    detach: dict[str, list[str]] = field(default_factory=dict)
    # Detaches over the run's cap, not made (per store).
    held: dict[str, list[str]] = field(default_factory=dict)
    # store -> file id -> the paths it serves (what the mapping and status say).
    wanted: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def attach_count(self) -> int:
        return sum(len(v) for v in self.attach.values())

    @property
    def held_count(self) -> int:
        return sum(len(v) for v in self.held.values())


def store_key(rule: VectorRule, resolved: Mapping[str, str]) -> str:
    """The store a rule fills: its id, the id its name resolved to, or NEW_PREFIX+name."""
    if rule.store_id:
        return rule.store_id
    assert rule.store is not None
    return resolved.get(rule.store) or NEW_PREFIX + rule.store


def selects(rule: VectorRule, path: str) -> bool:
    return bool(glob.globmatch(path, list(rule.globs), flags=GLOB_FLAGS))


def wanted_by_store(
    rules: Iterable[VectorRule],
    synced: Iterable[SyncedFile],
    resolved: Mapping[str, str],
    project: str,
) -> dict[str, dict[str, Want]]:
    """store -> file id -> Want: what the rules select, each id once per store (the
    first rule and the first path, in path order, give its attributes)."""
    files = sorted(synced, key=lambda f: f.path)
    out: dict[str, dict[str, Want]] = {}
    holders: dict[tuple[str, str], list[str]] = {}
    for rule in rules:
        key = store_key(rule, resolved)
        wants = out.setdefault(key, {})
        for f in files:
            if not selects(rule, f.path):
                continue
            paths = holders.setdefault((key, f.file_id), [])
            if f.path not in paths:
                paths.append(f.path)
            if f.file_id in wants:
                continue
            attributes = {name: render(text, path=f.path, project=project, sha256=f.sha256)
                          for name, text in rule.attributes}
            wants[f.file_id] = Want(f.file_id, f.path, attributes, rule.chunking_strategy())
    for key, wants in out.items():
        for file_id, want in wants.items():
            held_by = tuple(holders[(key, file_id)])
            wants[file_id] = Want(want.file_id, want.path, want.attributes, want.chunking, held_by)
    return out


def plan_attach(
    wanted: Mapping[str, Mapping[str, Want]],
    listed: Mapping[str, Mapping[str, str]],
    ours: Mapping[str, Iterable[str]],
    *,
    max_delete: MaxDelete,
    confirmed: bool = False,
) -> AttachPlan:
    """The plan (see the module doc). ``listed``: store -> file id -> status, as listed
    (a new store lists nothing); ``ours``: store -> the ids we attached or own.
    ``confirmed``: a person answered for the detaches (no cap)."""
    plan = AttachPlan()
    stores = sorted(set(wanted) | set(listed))
    tracked = 0
    for key in stores:
        want = wanted.get(key, {})
        have = listed.get(key, {})
        mine = set(ours.get(key, ()))
        tracked += len(mine & set(have))
        plan.wanted[key] = {fid: w.paths for fid, w in want.items()}
        redo = [fid for fid, status in have.items() if fid in want and status in RETRY_STATUSES]
        attach = [w for fid, w in sorted(want.items()) if fid not in have or fid in redo]
        stray = sorted(fid for fid in have if fid in mine and fid not in want)
        if attach:
            plan.attach[key] = attach
        if stray or redo:
            plan.detach[key] = stray + sorted(redo)
    cap = max_delete.limit(tracked)
    strays = sum(len([f for f in v if f not in wanted.get(k, {})]) for k, v in plan.detach.items())
    if not confirmed and strays > cap:
        # Over the cap: no stray goes (a bad listing or a wrong rule looks like this);
        # re-attaching what the provider cancelled is not a removal, so it still runs.
        for key, ids in list(plan.detach.items()):
            held = [f for f in ids if f not in wanted.get(key, {})]
            plan.held[key] = held
            keep = [f for f in ids if f in wanted.get(key, {})]
            if keep:
                plan.detach[key] = keep
            else:
                del plan.detach[key]
    return plan
