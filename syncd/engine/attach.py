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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from syncd.api.errors import AmbiguousCreateError, APIError
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
from syncd.engine.model import Plan

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
    sent_before: Sequence[Sent] = (),
) -> Report:
    """One pass (see the module doc). ``owned``: every file id the sync state holds;
    ``sent_before``: batches sent earlier in the run (:class:`Early`), waited on too
    unless the listing shows their files processed."""
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
    running = [b for b in sent_before
               if any(statuses.get(b.store_id, {}).get(f) not in FINAL for f in b.file_ids)]
    batches = [*running, *_attach(client, store, config, plan, report, stopping)]
    unclear = _wait(client, store, batches, config, stopping)
    before = {(a.store_id, a.file_id): a.status for a in store.attachments()}
    # A store is listed again only when a batch of it did not complete cleanly: the
    # listing says which files failed, and why.
    for key in unclear:
        _observe(store, key, _listing(client, key), store.ours().get(key, set()), wanted[key])
    _summarize(store, report, before)
    return report


# Mid-run file batches go at most this often, the first this long after the run's first
# publish: each is a write paced with the uploads, so fewer cost the uploads less, and a
# short run (a daemon's sync of a few files) sends none and lists no store twice.
EARLY_EVERY_S = 5.0


class Early:
    """A run's attachments made while it uploads, so a long run's last batch is small and
    processing keeps pace with the uploads. Each call plans the files synced since the
    last one against each store's listing as this run first saw it (``cache``, kept up to
    date with what is sent) and sends the batches on a thread of its own (one in flight),
    so a slow provider never holds a publish back. It never detaches and never waits:
    the run's pass (:func:`step`) lists each store again, and does both."""

    def __init__(self, config: AttachConfig, store: AttachStore) -> None:
        self.config = config
        self.store = store
        self.seen: dict[str, str] = {}
        self.cache: dict[str, dict[str, str]] = {}
        self.created: list[str] = []
        self.attached: list[tuple[str, str, str]] = []
        self.sent: list[Sent] = []
        # When a call last sent (or, before any, was first made).
        self._last: float | None = None
        self._flight: Future[tuple[Report, list[Sent]]] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def offer(self, client: VectorRemote, files: Callable[[], Sequence[SyncedFile]],
              stopping: Callable[[], bool]) -> Report | None:
        """Send what the synced ``files`` (read only when it is time: a big tree's rows
        are not read at every publish) need that no earlier call sent; the report of the
        send that ended since, if any."""
        done = self._collect(block=False)
        clock = time.monotonic()
        if self._last is None:
            self._last = clock
        elif self._flight is None and clock - self._last >= EARLY_EVERY_S:
            self._offer(client, files(), stopping)
        return done

    def finish(self, client: VectorRemote, files: Sequence[SyncedFile],
               stopping: Callable[[], bool]) -> Report | None:
        """As the run's pass begins: a run that attached as it went sends the rest at
        once (its processing overlaps the pass's listing); every send waited for."""
        done = self._collect(block=True)
        if self.cache:
            self._offer(client, files, stopping)
        last = _merged(done, self._collect(block=True))
        self.close()
        return last

    def _offer(self, client: VectorRemote, files: Sequence[SyncedFile],
               stopping: Callable[[], bool]) -> None:
        fresh = [f for f in files if self.seen.get(f.path) != f.file_id]
        if fresh:
            self._send(client, fresh, stopping)
            self._last = time.monotonic()

    def _send(self, client: VectorRemote, fresh: list[SyncedFile],
              stopping: Callable[[], bool]) -> None:
        report = Report()
        resolved = _resolve(client, self.store, self.config, report, False)
        self.created += report.created
        wanted = wanted_by_store(self.config.rules, fresh, resolved, self.config.project)
        for key in wanted:
            if key not in self.cache:
                self.cache[key] = {f: v.status for f, v in _listing(client, key).items()}
        plan = plan_attach(wanted, {k: self.cache.get(k, {}) for k in wanted}, {},
                           max_delete=self.config.max_delete)
        self.seen.update((f.path, f.file_id) for f in fresh)
        if not plan.attach_count:
            return
        for key, wants in plan.attach.items():
            self.cache.setdefault(key, {}).update({w.file_id: "in_progress" for w in wants})
        plan.detach.clear()
        self._pool = self._pool or ThreadPoolExecutor(1, thread_name_prefix="syncd-attach")
        self._flight = self._pool.submit(
            lambda: (report, _attach(client, self.store, self.config, plan, report, stopping)))

    def _collect(self, block: bool) -> Report | None:
        flight = self._flight
        if flight is None or not (block or flight.done()):
            return None
        self._flight = None
        try:
            report, sent = flight.result()
        except APIError as exc:  # the run's pass lists the store and attaches what is not
            log.warning("vector store attach during the run failed", error=str(exc))
            return None
        self.attached += report.attached
        self.sent += sent
        return report

    def close(self) -> None:
        self._collect(block=True)
        if self._pool is not None:
            self._pool.shutdown()


def _merged(a: Report | None, b: Report | None) -> Report | None:
    if a is None or b is None:
        return a or b
    a.attached += b.attached
    return a


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
        self._early = Early(config, store)

    def early(self, client: VectorRemote, state: StateLike,
              listed: Callable[[], Container[str]], *, stopping: Callable[[], bool]) -> None:
        """Mid-run (each time the mapping is published): attach what was synced since
        (``listed``: what the remote holds, asked for only when something is sent)."""
        report = self._early.offer(client, lambda: _synced(state, listed()), stopping)
        if report is not None:
            state.journal_events(journal_rows(report))

    def run(self, client: VectorRemote, state: StateLike, listed: Container[str], *,
            dry_run: bool, confirmed: bool, stopping: Callable[[], bool],
            wait: bool = True, planned: Plan | None = None) -> Report:
        """A pass over what the state has synced and the remote holds (``listed``), or
        (a dry run) what the run's ``planned`` changes would leave synced; ``wait``: poll
        the batches sent until they end (else a later pass records them)."""
        config = self.config if wait else dataclasses.replace(self.config, wait_s=0.0)
        files = _synced(state, listed)
        if planned is not None:
            files = as_planned(files, planned)
        early = Early(self.config, self.store)
        if not dry_run:
            early, self._early = self._early, early
            last = early.finish(client, files, stopping)
            if last is not None:
                state.journal_events(journal_rows(last))
        report = step(client, self.store, config, files, state.owned_ids(),
                      dry_run=dry_run, confirmed=confirmed, stopping=stopping,
                      sent_before=early.sent)
        if not dry_run:
            state.journal_events(journal_rows(report))
        report.created = early.created + report.created
        report.attached = early.attached + report.attached
        return report

    def by_path(self) -> dict[str, dict[str, str]]:
        return self.store.by_path()

    def summary(self) -> dict[str, Any]:
        return summary(self.store)

    def close(self) -> None:
        self._early.close()
        self.store.close()


def _synced(state: StateLike, listed: Container[str]) -> list[SyncedFile]:
    """The synced files whose remote copy the listing shows."""
    return [SyncedFile(path, fid, sha or "") for path, fid, _p, _s, sha, _at
            in state.synced() if fid and fid in listed]


# What a dry run shows for a file the plan uploads: its id is not known yet.
TO_UPLOAD = "(to upload) "


def as_planned(files: Sequence[SyncedFile], plan: Plan) -> list[SyncedFile]:
    """The synced files as a run's ``plan`` will leave them, so a dry run lists the
    attachments the run would make and remove: a path it uploads holds a new id
    (``TO_UPLOAD`` and the path, shared by the paths that ride along), a path it points
    at an existing id (dedupe, adoption) that id, a path gone locally none."""
    by_path = {f.path: f for f in files}
    gone = [d.path for d in plan.deletes if d.path and d.reason in ("gone", "stale")]
    for path in [*gone, *plan.detaches, *(f.path for f in plan.forgets)]:
        by_path.pop(path, None)
    taken = [(s.path, s.file_id) for s in plan.shares] + [(a.path, a.file_id) for a in plan.adopts]
    for path, file_id in taken:
        if file_id:
            by_path[path] = SyncedFile(path, file_id, "")
    for up in plan.uploads:
        for path in (up.path, *(s.path for s in up.sharers)):
            by_path[path] = SyncedFile(path, TO_UPLOAD + up.path, "")
    return [by_path[p] for p in sorted(by_path)]


class StateLike(Protocol):
    def synced(self) -> Iterable[tuple[str, str, str | None, int, str | None, float | None]]: ...
    def owned_ids(self) -> set[str]: ...
    def journal_events(self, events: Iterable[tuple[Any, dict[str, Any]]]) -> None: ...


def open_for(config: Config, owner: str) -> Attacher | None:
    """The project's Attacher, or None when the config has no vector_stores.rules."""
    rules = config.vector_stores.rules
    if not rules:
        return None
    settings = AttachConfig(rules, config.project, owner, config.sync.max_delete)
    return Attacher(settings, AttachStore.open(config.state_dir))
