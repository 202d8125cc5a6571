"""The attach step: each vector store converged to what ``vector_stores.rules`` select.

One pass: resolve each rule's store (by id; by name, the one recorded, else the one the
listing shows with our owner and name in its metadata, else created once), list every
store, plan (:mod:`syncd.engine.attach_plan`), detach what is ours and unwanted, attach
what is missing in file batches (an intent recorded before each is sent,
:mod:`syncd.engine.attach_store`), poll the batches until they end (or ``wait_s``), and
list once more to record each attachment's status and the provider's ``last_error``.
Calls are the client's, paced and retried per call class. A dry run lists and plans only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from syncd.api.errors import AmbiguousCreateError
from syncd.api.vector_calls import Attach, FileBatch, VectorFile, VectorStore
from syncd.config import Config, MaxDelete
from syncd.config.vector_rules import VectorRule
from syncd.engine.attach_plan import (
    NEW_PREFIX,
    AttachPlan,
    SyncedFile,
    plan_attach,
    wanted_by_store,
)
from syncd.engine.attach_store import AttachStore, summary

log = structlog.get_logger("syncd.engine.attach")

OWNER_KEY = "syncd_owner"
NAME_KEY = "syncd_store"
FINAL = frozenset({"completed", "failed", "cancelled"})


class VectorRemote(Protocol):
    def create_vector_store(self, name: str, metadata: Mapping[str, str],
                            chunking_strategy: Mapping[str, Any] | None = None
                            ) -> VectorStore: ...
    def list_vector_stores(self) -> Iterator[VectorStore]: ...
    def list_vector_files(self, store_id: str, status: str | None = None
                          ) -> Iterator[VectorFile]: ...
    def detach_file(self, store_id: str, file_id: str) -> bool: ...
    def create_file_batch(self, store_id: str, items: Sequence[Attach]) -> FileBatch: ...
    def retrieve_file_batch(self, store_id: str, batch_id: str) -> FileBatch: ...


@dataclass(frozen=True)
class AttachConfig:
    rules: tuple[VectorRule, ...]
    project: str
    owner: str
    max_delete: MaxDelete = field(default_factory=MaxDelete)
    # Files per file batch (the provider takes up to 2,000).
    batch_size: int = 2000
    poll_s: float = 0.25
    # How long a run waits for its batches to be processed; later runs record the rest.
    wait_s: float = 300.0


@dataclass
class Report:
    dry_run: bool = False
    created: list[str] = field(default_factory=list)
    # (store, path, file id) attached / detached (or, in a dry run, that would be).
    attached: list[tuple[str, str, str]] = field(default_factory=list)
    detached: list[tuple[str, str]] = field(default_factory=list)
    held: int = 0
    # (path, store, reason) of attachments the provider failed.
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    # Attachments of ours by status after the run.
    statuses: dict[str, int] = field(default_factory=dict)
    # (path, store, reason) of failures first seen in this run (the journal's rows).
    newly_failed: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Attachments of ours not yet processed (sent, or about to be)."""
        return sum(n for s, n in self.statuses.items() if s in ("in_progress", "intent"))

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "created": self.created,
                "attached": [{"store": s, "path": p, "file_id": f} for s, p, f in self.attached],
                "detached": [{"store": s, "file_id": f} for s, f in self.detached],
                "held": self.held, "statuses": self.statuses,
                "failed": [{"path": p, "store": s, "reason": r} for p, s, r in self.failed]}


def step(
    client: VectorRemote,
    store: AttachStore,
    config: AttachConfig,
    synced: Iterable[SyncedFile],
    owned: set[str],
    *,
    dry_run: bool = False,
    confirmed: bool = False,
    stopping: Callable[[], bool] = lambda: False,
) -> Report:
    """One pass (see the module doc). ``owned``: every file id the sync state holds."""
    report = Report(dry_run=dry_run)
    resolved = _resolve(client, store, config, report, dry_run)
    files = list(synced)
    wanted = wanted_by_store(config.rules, files, resolved, config.project)
    listed = {key: _listing(client, key) for key in wanted}
    recorded = store.ours()
    ours = {key: recorded.get(key, set()) | (owned & set(have)) for key, have in listed.items()}
    if not dry_run:
        for key, have in listed.items():
            _observe(store, key, have, recorded.get(key, set()), wanted[key])
    statuses = {k: {fid: f.status for fid, f in have.items()} for k, have in listed.items()}
    plan = plan_attach(wanted, statuses, ours, max_delete=config.max_delete, confirmed=confirmed)
    report.held = plan.held_count
    if plan.held_count:
        log.warning("vector store detaches held", count=plan.held_count,
                    cap=str(config.max_delete))
    if dry_run:
        report.attached = [(k, w.path, w.file_id) for k, ws in plan.attach.items() for w in ws]
        report.detached = [(k, f) for k, ids in plan.detach.items() for f in ids]
        return report
    _detach(client, store, plan, report, stopping)
    batches = _attach(client, store, config, plan, report, stopping)
    unclear = _wait(client, store, batches, config, stopping)
    before = {(a.store_id, a.file_id): a.status for a in store.attachments()}
    # A store is listed again only when a batch of it did not complete cleanly: the
    # listing says which files failed, and why.
    for key in unclear:
        _observe(store, key, _listing(client, key), store.ours().get(key, set()), wanted[key])
    _summarize(store, report, before)
    return report


def _resolve(client: VectorRemote, store: AttachStore, config: AttachConfig,
             report: Report, dry_run: bool) -> dict[str, str]:
    """name -> store id of every rule's store made by name (created when missing)."""
    known = store.store_ids()
    missing = [r for r in config.rules if r.store and r.store not in known]
    if not missing:
        return known
    # Ours by name and owner in the metadata: made by an earlier run whose answer was lost.
    for vs in client.list_vector_stores():
        name = vs.meta(NAME_KEY)
        if vs.meta(OWNER_KEY) == config.owner and name and name not in known:
            store.bind_store(name, vs.id)
            known[name] = vs.id
    for rule in missing:
        name = rule.store
        assert name is not None
        if name in known or dry_run:
            continue
        store.intend_store(name)
        try:
            made = client.create_vector_store(name, {OWNER_KEY: config.owner, NAME_KEY: name},
                                              rule.chunking_strategy())
        except AmbiguousCreateError:
            found = [vs for vs in client.list_vector_stores()
                     if vs.meta(OWNER_KEY) == config.owner and vs.meta(NAME_KEY) == name]
            if not found:
                raise
            made = found[0]
        store.bind_store(name, made.id)
        known[name] = made.id
        report.created.append(name)
        log.info("vector store created", name=name, store_id=made.id)
    return known


def _listing(client: VectorRemote, key: str) -> dict[str, VectorFile]:
    if key.startswith(NEW_PREFIX):
        return {}
    return {f.id: f for f in client.list_vector_files(key)}


def _observe(store: AttachStore, key: str, have: Mapping[str, VectorFile],
             ours: set[str], wanted: Mapping[str, Any]) -> None:
    """Record the provider's status of ours; forget ours the store does not hold and no
    rule wants (an intent whose batch was never sent, or a detach already done)."""
    if key.startswith(NEW_PREFIX):
        return
    store.observed(key, [(f, have[f].status, have[f].last_error) for f in ours if f in have])
    store.forget(key, [f for f in ours if f not in have and f not in wanted])
    store.set_paths(key, [(f, w.paths) for f, w in wanted.items() if f in ours])


def _detach(client: VectorRemote, store: AttachStore, plan: AttachPlan, report: Report,
            stopping: Callable[[], bool]) -> None:
    for key, ids in plan.detach.items():
        for file_id in ids:
            if stopping():
                return
            client.detach_file(key, file_id)
            store.forget(key, [file_id])
            report.detached.append((key, file_id))


def _attach(client: VectorRemote, store: AttachStore, config: AttachConfig, plan: AttachPlan,
            report: Report, stopping: Callable[[], bool]) -> list[Sent]:
    """Send the plan's attachments in file batches; each batch sent."""
    sent: list[Sent] = []
    for key, wants in plan.attach.items():
        if key.startswith(NEW_PREFIX):
            continue
        for start in range(0, len(wants), config.batch_size):
            if stopping():
                return sent
            chunk = wants[start:start + config.batch_size]
            # Ours before it is sent: a crash or a lost answer leaves no stray.
            store.intend(key, [(w.file_id, w.paths) for w in chunk])
            batch = client.create_file_batch(
                key, [Attach(w.file_id, w.attributes, w.chunking) for w in chunk])
            store.sent(key, [w.file_id for w in chunk], batch.id)
            sent.append(Sent(key, batch.id, [w.file_id for w in chunk]))
            report.attached += [(key, w.path, w.file_id) for w in chunk]
    return sent


@dataclass(frozen=True)
class Sent:
    store_id: str
    batch_id: str
    file_ids: list[str]


def _wait(client: VectorRemote, store: AttachStore, batches: list[Sent],
          config: AttachConfig, stopping: Callable[[], bool]) -> set[str]:
    """Poll each batch until it ends, ``wait_s`` passes or the process stops. A batch
    whose every file completed is recorded so; the stores of the others are returned."""
    deadline = time.monotonic() + config.wait_s
    pending = list(batches)
    unclear: set[str] = set()
    while pending and not stopping() and time.monotonic() < deadline:
        still = []
        for sent in pending:
            batch = client.retrieve_file_batch(sent.store_id, sent.batch_id)
            if batch.status == "in_progress":
                still.append(sent)
            elif batch.status == "completed" and batch.file_counts.get("completed") == len(
                    sent.file_ids):
                store.observed(sent.store_id, [(f, "completed", None) for f in sent.file_ids])
            else:
                unclear.add(sent.store_id)
        pending = still
        if pending:
            time.sleep(config.poll_s)
    return unclear | {s.store_id for s in pending}


def _summarize(store: AttachStore, report: Report, before: Mapping[tuple[str, str], str]
               ) -> None:
    counts: dict[str, int] = {}
    for a in store.attachments():
        counts[a.status] = counts.get(a.status, 0) + 1
        if a.status != "failed":
            continue
        rows = [(path, a.store_id, a.last_error or "failed") for path in a.paths]
        report.failed += rows
        if before.get((a.store_id, a.file_id)) != "failed":
            report.newly_failed += rows
    report.statuses = counts


def journal_rows(report: Report) -> list[tuple[str, dict[str, Any]]]:
    """The journal's rows for what an attach step did."""
    rows: list[tuple[str, dict[str, Any]]] = [
        ("attached", {"path": p, "file_id": f, "reason": f"vector store {s}"})
        for s, p, f in report.attached]
    rows += [("detached", {"file_id": f, "reason": f"vector store {s}"})
             for s, f in report.detached]
    rows += [("attach_failed", {"path": p, "reason": f"vector store {s}: {why}"})
             for p, s, why in report.newly_failed]
    return rows


def lines(data: Mapping[str, Any] | None) -> list[str]:
    """A run's attach step as the outcome's text (``data``: Report.as_dict())."""
    if not data:
        return []
    dry = data.get("dry_run")
    verbs = ("would attach", "would detach") if dry else ("attached", "detached")
    out = [f"vector stores: {verbs[0]} {len(data['attached'])}, {verbs[1]} "
           f"{len(data['detached'])}, held {data['held']}"
           + ("" if dry else f", failed {len(data['failed'])}")]
    if data.get("created"):
        out.append(f"  created {', '.join(data['created'])}")
    if dry:
        out += [f"  attach  {a['path']} -> {a['store']}" for a in data["attached"]]
        out += [f"  detach  {d['file_id']} from {d['store']}" for d in data["detached"]]
    out += [f"  failed  {f['path']} in {f['store']}: {f['reason']}" for f in data["failed"]]
    return out


class Attacher:
    """The attach step of one project, with its record (the Syncer holds one when the
    config has vector_stores.rules)."""

    def __init__(self, config: AttachConfig, store: AttachStore) -> None:
        self.config = config
        self.store = store

    def run(self, client: VectorRemote, state: StateLike, listed: Container[str], *,
            dry_run: bool, confirmed: bool, stopping: Callable[[], bool],
            wait: bool = True) -> Report:
        """A pass over what the state has synced and the remote holds (``listed``);
        ``wait``: poll the batches sent until they end (else a later pass records them)."""
        synced = [SyncedFile(path, fid, sha or "") for path, fid, _p, _s, sha, _at
                  in state.synced() if fid and fid in listed]
        config = self.config if wait else dataclasses.replace(self.config, wait_s=0.0)
        report = step(client, self.store, config, synced, state.owned_ids(),
                      dry_run=dry_run, confirmed=confirmed, stopping=stopping)
        if not dry_run:
            state.journal_events(journal_rows(report))
        return report

    def by_path(self) -> dict[str, dict[str, str]]:
        return self.store.by_path()

    def summary(self) -> dict[str, Any]:
        return summary(self.store)

    def close(self) -> None:
        self.store.close()


class StateLike(Protocol):
    def synced(self) -> Sequence[tuple[str, str, str | None, int, str | None, float | None]]: ...
    def owned_ids(self) -> set[str]: ...
    def journal_events(self, events: Iterable[tuple[Any, dict[str, Any]]]) -> None: ...


def open_for(config: Config, owner: str) -> Attacher | None:
    """The project's Attacher, or None when the config has no vector_stores.rules."""
    rules = config.vector_stores.rules
    if not rules:
        return None
    settings = AttachConfig(rules, config.project, owner, config.sync.max_delete)
    return Attacher(settings, AttachStore.open(config.state_dir))
