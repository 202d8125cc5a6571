"""Batch jobs over synced inputs, and their results pulled home.

One entry point, :func:`step`, called once per reconcile or poll:

1. **Finish what a crash or a lost answer left**: pulls half done (``pull.recover``),
   intents whose job we never heard of. An intent is recorded (committed) *before* its
   create call and travels in the job's metadata (``syncd_intent``, and on DashScope
   ``ds_name: "syncd:<intent>"`` too); a job is found again by listing batches and
   matching it, never created a second time while it may exist. Only when
   ``confirm_listings`` listings over at least ``confirm_s`` seconds have not shown it is
   it created again, with the same intent, and a duplicate that shows up later after all
   is cancelled.
2. **Follow our jobs** (retrieve each one not yet ended, or list batches when more than
   ``poll_retrieve_max`` run) and cancel those whose input changed since
   (``cancel_superseded``).
3. **Submit**: each synced input a ``SubmitRule`` selects, identified by its content
   (sha256) and the rule's endpoint, gets exactly one job, within the rule's
   ``max_per_day``.
4. **Pull** the provider-made files into the outbox (:mod:`syncd.engine.pull`).

The decisions are pure functions of the store, the known inputs and what the provider
listed: what to submit, defer, supersede and cancel, and how a job is named to be found
again, in :mod:`syncd.engine.batch_plan`; what to pull and under which name, in
``pull.plan_pull``. This module is the step: the calls, in order, and what each outcome
records. With ``dry_run`` the step lists (reads) but records, creates, cancels,
downloads and deletes nothing, and reports what it would do.

The store is a SQLite file of its own (:mod:`syncd.engine.batch_store`). The names of
all three are importable from here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import structlog

from syncd.api.errors import (
    AmbiguousCreateError,
    APIError,
    InvalidRequestError,
    NotFoundError,
)
from syncd.api.models import BATCH_TERMINAL, Batch, Downloaded, RemoteFile, RequestCounts
from syncd.engine.batch_plan import (
    AMBIGUOUS,
    GONE,
    INTENT,
    LOCAL_TERMINAL,
    REFUSED,
    BatchesConfig,
    Job,
    KnownInput,
    NewJob,
    SubmitPlan,
    SubmitRule,
    intent_of,
    job_metadata,
    plan_submit,
)
from syncd.engine.batch_store import STORE_NAME, BatchStore, summary
from syncd.engine.pull import (
    Attribution,
    Kind,
    PullConfig,
    PullOutcome,
    plan_pull,
    recover,
    remove_stale,
    result_name,
    run_pull,
)

log = structlog.get_logger(__name__)

# How far before an intent (our clock) its job may be stamped (the provider's clock).
CLOCK_SLACK_S = 3_600.0
# A job that was created more than once is watched for a late duplicate this long, with
# a listing at most every WATCH_EVERY_S.
WATCH_S = 3_600.0
WATCH_EVERY_S = 60.0


class BatchRemote(Protocol):
    """What a step needs of the client (``FilesClient`` is one)."""

    def iter_files(
        self, *, purpose: str | None = None, page_size: int | None = None
    ) -> Iterator[RemoteFile]: ...

    def list_batches(self, *, page_size: int = ...) -> Iterator[Batch]: ...

    def retrieve_batch(self, batch_id: str) -> Batch: ...

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str = ...,
        metadata: dict[str, str] | None = None,
    ) -> Batch: ...

    def cancel_batch(self, batch_id: str) -> Batch: ...

    def download(
        self, file_id: str, dest: BinaryIO, *, size: int | None = None, purpose: str | None = None
    ) -> Downloaded: ...

    def delete(self, file_id: str) -> None: ...


@dataclass(frozen=True)
class JobView:
    path: str
    status: str
    batch_id: str | None
    endpoint: str
    counts: RequestCounts
    superseded: bool = False
    reason: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None


@dataclass
class Report:
    """What a step did (or, in a dry run, would do)."""

    dry_run: bool = False
    submitted: list[tuple[str, str | None]] = field(default_factory=list)  # (path, batch id)
    adopted: list[tuple[str, str]] = field(default_factory=list)  # found again after a loss
    deferred: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    cancelled: list[tuple[str, str]] = field(default_factory=list)  # superseded (path, batch)
    duplicates: list[str] = field(default_factory=list)  # extra jobs of ours, cancelled
    pulled: list[tuple[str, str]] = field(default_factory=list)  # (file id, outbox name)
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)  # (id, name, why)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file id, why)
    deleted_remote: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # stale results replaced by a newer run
    errors: list[tuple[str, str]] = field(default_factory=list)  # (what, message)
    jobs: list[JobView] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``--json``)."""
        return asdict(self)

    @property
    def pending(self) -> bool:
        """Jobs still running or to be resolved: the caller should step again later."""
        return any(j.status not in BATCH_TERMINAL and j.status not in LOCAL_TERMINAL
                   for j in self.jobs)  # fmt: skip


def step(
    client: BatchRemote,
    store: BatchStore,
    config: BatchesConfig,
    known_inputs: Mapping[str, KnownInput],
    *,
    dry_run: bool = False,
    remote_files: Iterable[RemoteFile] | None = None,
    now: float | None = None,
) -> Report:
    """One pass (see the module doc). ``known_inputs``: root-relative path -> input, for
    the synced files of purpose batch. ``remote_files``: the account's listing when the
    caller has one (else the step lists the pull purposes itself). Failures of single calls
    are reported in ``Report.errors``; the next step carries on from the store."""
    at = time.time() if now is None else now
    report = Report(dry_run=dry_run)
    outcome = PullOutcome()
    if config.pull is not None and not dry_run:
        recover(store, config.pull.outbox, outcome)
    if not dry_run:
        _poll(client, store, config, report)
    jobs = store.jobs()
    pending = [j for j in jobs if not j.bound and j.status in (INTENT, AMBIGUOUS)]

    candidates: list[RemoteFile] = []
    attribution = Attribution()
    for job in jobs:
        if job.bound:
            attribution.add(job.as_batch())
    if config.pull is not None:
        candidates = _pull_candidates(client, store, config.pull, remote_files)
    unattributed = {r.id for r in candidates if r.id not in attribution.results}
    watch = _watching(store, jobs, at)

    listed: list[Batch] | None = None
    if pending or unattributed or watch:
        listed = _list_batches(client, config, pending, unattributed, watch, at, report)
        if listed is not None and watch:
            store.last_watch = at
    if listed is not None:
        for batch in listed:
            attribution.add(batch)
        if not dry_run:
            _resolve(client, store, config, pending, listed, at, report)
    elif pending:
        log.info("batches.resolve_deferred", intents=len(pending))

    _submit(client, store, config, known_inputs, at, dry_run, report)

    if config.pull is not None:
        _pull(client, store, config.pull, known_inputs, candidates, attribution, dry_run,
              outcome, report)  # fmt: skip
    report.jobs = [_view(j) for j in store.jobs()]
    return report


def _pull(
    client: BatchRemote,
    store: BatchStore,
    config: PullConfig,
    known_inputs: Mapping[str, KnownInput],
    candidates: Sequence[RemoteFile],
    attribution: Attribution,
    dry_run: bool,
    outcome: PullOutcome,
    report: Report,
) -> None:
    """The step's last part: pull what ``pull.plan_pull`` picks among ``candidates``
    (or, in a dry run, report it), and report what the pull did."""
    inputs = {j.input_file_id: j.path for j in store.jobs()}
    inputs.update({k.file_id: path for path, k in known_inputs.items()})
    current = {k.file_id for k in known_inputs.values()}
    items = plan_pull(candidates, attribution, inputs, store.pulled_ids(),
                      store.held_names(), config, current)  # fmt: skip
    if dry_run:
        report.pulled = [(i.file_id, i.name) for i in items]
    else:
        run_pull(client, store, config, items, outcome)
        report.pulled = [(p.file_id, p.name) for p in outcome.pulled]
        report.conflicts = [(p.file_id, p.name, p.conflict) for p in outcome.pulled
                            if p.conflict]  # fmt: skip
        report.refused = outcome.refused
        report.deleted_remote = outcome.deleted_remote
        report.removed = _prune_stale(store, config.outbox)
        report.errors += [(f"pull {fid}", msg) for fid, msg in outcome.errors]


def _prune_stale(store: BatchStore, outbox: Path) -> list[str]:
    """After an input's newest job completed: its results replace the older run's, so an
    older output or error file it has no counterpart of goes too (when unchanged)."""
    latest: dict[str, Job] = {}
    for job in store.jobs():
        latest[job.path] = job  # ordered by intended_at: the last one wins
    removed = []
    for path, job in latest.items():
        if job.status != "completed" or not job.bound:
            continue
        kinds: tuple[tuple[Kind, str | None], ...] = (
            ("output", job.output_file_id), ("errors", job.error_file_id))
        for kind, file_id in kinds:
            if file_id is None:
                gone = remove_stale(store, outbox, result_name(path, kind), job.as_batch())
                if gone is not None:
                    removed.append(gone)
    return removed


def _view(job: Job) -> JobView:
    return JobView(path=job.path, status=job.status, batch_id=job.batch_id,
                   endpoint=job.endpoint, counts=job.counts, superseded=job.superseded,
                   reason=job.reason, output_file_id=job.output_file_id,
                   error_file_id=job.error_file_id)  # fmt: skip


def _poll(client: BatchRemote, store: BatchStore, config: BatchesConfig, report: Report) -> None:
    """Bring every running job of ours up to date: one retrieve each, or, with more of
    them than ``poll_retrieve_max``, listing pages (newest first) until all are seen,
    then a retrieve for any the listing did not show."""
    running = [j for j in store.jobs() if j.running and j.batch_id is not None]
    if len(running) > config.poll_retrieve_max:
        wanted = {j.batch_id: j for j in running}
        oldest = min(j.created_at for j in running)
        try:
            for i, batch in enumerate(client.list_batches()):
                job = wanted.pop(batch.id, None)
                if job is not None:
                    _update(store, job, batch)
                if not wanted or batch.created_at < oldest or (
                        i + 1 >= config.max_batch_pages * 100):
                    break
        except APIError as exc:
            report.errors.append(("list batches", str(exc)))
        running = list(wanted.values())
    for job in running:
        assert job.batch_id is not None
        try:
            batch = client.retrieve_batch(job.batch_id)
        except NotFoundError:
            store.mark(job.intent, GONE, "the provider no longer knows the job")
            continue
        except APIError as exc:
            report.errors.append((f"retrieve {job.batch_id}", str(exc)))
            continue
        _update(store, job, batch)


def _update(store: BatchStore, job: Job, batch: Batch) -> None:
    if batch.status != job.status or batch.request_counts != job.counts:
        log.info("batches.status", path=job.path, batch_id=batch.id, status=batch.status,
                 completed=batch.request_counts.completed,
                 failed=batch.request_counts.failed)  # fmt: skip
    store.bind(job.intent, batch)


def _pull_candidates(
    client: BatchRemote,
    store: BatchStore,
    config: PullConfig,
    remote_files: Iterable[RemoteFile] | None,
) -> list[RemoteFile]:
    done = store.pulled_ids()
    if remote_files is None:
        listing: list[RemoteFile] = []
        for purpose in config.purposes:
            listing += client.iter_files(purpose=purpose)
        remote_files = listing
    wanted = set(config.purposes)
    return [r for r in remote_files if r.purpose in wanted and r.id not in done]


def _watching(store: BatchStore, jobs: Sequence[Job], now: float) -> bool:
    """Whether a job created more than once lately may yet show a duplicate, and a
    listing for it is due."""
    recent = any(j.attempts > 1 and (j.last_attempt or 0) > now - WATCH_S for j in jobs)
    return recent and now - store.last_watch >= WATCH_EVERY_S


def _list_batches(
    client: BatchRemote,
    config: BatchesConfig,
    pending: Sequence[Job],
    unattributed: set[str],
    watch: bool,
    now: float,
    report: Report,
) -> list[Batch] | None:
    """Newest first, until every pending intent and unattributed result is accounted
    for, pages are older than the oldest intent (and the watch horizon), or the page
    budget is spent. None when the listing failed."""
    intents = {j.intent for j in pending}
    horizon = min([j.intended_at for j in pending] + ([now - WATCH_S] if watch else []),
                  default=now) - CLOCK_SLACK_S  # fmt: skip
    left = set(unattributed)
    out: list[Batch] = []
    per_page = 100
    try:
        for i, batch in enumerate(client.list_batches(page_size=per_page)):
            out.append(batch)
            intents.discard(intent_of(batch) or "")
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    left.discard(file_id)
            old = batch.created_at < horizon
            if (not left and (not intents or old) and (not watch or old)) or (
                    i + 1 >= config.max_batch_pages * per_page):
                break
    except APIError as exc:
        report.errors.append(("list batches", str(exc)))
        return None
    return out


def _resolve(
    client: BatchRemote,
    store: BatchStore,
    config: BatchesConfig,
    pending: Sequence[Job],
    listed: Sequence[Batch],
    now: float,
    report: Report,
) -> None:
    """Bind each pending intent to the job a listing shows for it; create it again once
    enough listings agree it is not there. Duplicates of any intent are cancelled."""
    ours: dict[str, list[Batch]] = {}
    for batch in listed:
        intent = intent_of(batch)
        if intent:
            ours.setdefault(intent, []).append(batch)
    by_intent = {j.intent: j for j in store.jobs()}
    for intent, batches in ours.items():
        job = by_intent.get(intent)
        if job is None:
            continue
        matching = sorted((b for b in batches if b.input_file_id == job.input_file_id),
                          key=lambda b: (b.created_at, b.id))  # fmt: skip
        if not matching:
            continue
        keep = job.batch_id if job.bound else matching[0].id
        if not job.bound:
            store.bind(intent, matching[0])
            report.adopted.append((job.path, matching[0].id))
            log.info("batches.adopted", path=job.path, batch_id=matching[0].id, intent=intent)
        for extra in matching:
            if extra.id != keep:
                _cancel_duplicate(client, store, intent, extra, report)
    for job in pending:
        if job.intent in ours and any(b.input_file_id == job.input_file_id
                                      for b in ours[job.intent]):  # fmt: skip
            continue
        after = store.missed(job.intent, now)
        if after is None:
            continue
        waited = now - (after.first_miss or now)
        if after.misses >= config.confirm_listings and waited >= config.confirm_s:
            log.info("batches.not_found", path=job.path, intent=job.intent,
                     listings=after.misses)  # fmt: skip
            _create(client, store, config, after, now, report)


def _cancel_duplicate(
    client: BatchRemote, store: BatchStore, intent: str, batch: Batch, report: Report
) -> None:
    fresh = store.note_duplicate(batch.id, intent)
    cancelled = {b for b, _, done in store.duplicates() if done}
    if batch.terminal or batch.status == "cancelling" or batch.id in cancelled:
        return
    try:
        client.cancel_batch(batch.id)
    except InvalidRequestError:
        pass  # it ended meanwhile
    except APIError as exc:
        report.errors.append((f"cancel duplicate {batch.id}", str(exc)))
        return
    store.duplicate_cancelled(batch.id)
    report.duplicates.append(batch.id)
    log.warning("batches.duplicate_cancelled", batch_id=batch.id, intent=intent, first=fresh)


def _submit(
    client: BatchRemote,
    store: BatchStore,
    config: BatchesConfig,
    known: Mapping[str, KnownInput],
    now: float,
    dry_run: bool,
    report: Report,
) -> None:
    plan = plan_submit(known, config.submit, store.jobs(), now=now,
                       cancel_superseded=config.cancel_superseded)  # fmt: skip
    report.deferred += plan.deferred
    for job in plan.supersede:
        if not dry_run:
            store.supersede(job.intent)
    for job in plan.cancel:
        if dry_run:
            report.cancelled.append((job.path, job.batch_id or ""))
            continue
        assert job.batch_id is not None
        try:
            client.cancel_batch(job.batch_id)
        except InvalidRequestError:
            pass  # it ended meanwhile: nothing to cancel
        except APIError as exc:
            report.errors.append((f"cancel {job.batch_id}", str(exc)))
            continue
        store.cancel_sent(job.intent)
        report.cancelled.append((job.path, job.batch_id))
        log.info("batches.cancelled", path=job.path, batch_id=job.batch_id, why="superseded")
    for new in plan.create:
        if dry_run:
            report.submitted.append((new.path, None))
            continue
        job = store.add_intent(new.path, new.content, new.input_file_id, new.rule, now)
        _create(client, store, config, job, now, report)


def _create(
    client: BatchRemote,
    store: BatchStore,
    config: BatchesConfig,
    job: Job,
    now: float,
    report: Report,
) -> None:
    store.note_attempt(job.intent, now)
    metadata = job_metadata(job, config.ds_name, config.syncd_keys)
    try:
        batch = client.create_batch(job.input_file_id, job.endpoint, job.completion_window,
                                    metadata)  # fmt: skip
    except AmbiguousCreateError as exc:
        store.mark(job.intent, AMBIGUOUS, exc.message)
        report.errors.append((f"create for {job.path}", f"{exc} (looked for on the next step)"))
        log.warning("batches.create_ambiguous", path=job.path, intent=job.intent)
        return
    except NotFoundError as exc:
        _undo(store, job, report, f"the input is gone from the provider: {exc}")
        return
    except InvalidRequestError as exc:
        store.mark(job.intent, REFUSED, exc.message)
        report.errors.append((f"create for {job.path}", str(exc)))
        log.warning("batches.create_refused", path=job.path, reason=exc.message)
        return
    except APIError as exc:
        # Nothing was created (the client raises AmbiguousCreateError when it may have).
        _undo(store, job, report, str(exc))
        return
    store.bind(job.intent, batch)
    report.submitted.append((job.path, batch.id))
    log.info("batches.submitted", path=job.path, batch_id=batch.id, endpoint=job.endpoint)


def _undo(store: BatchStore, job: Job, report: Report, why: str) -> None:
    """A create that made no job: the intent goes, unless an earlier attempt may have
    made one (then it stays to be looked for)."""
    current = store.job(job.intent)
    if current is not None and current.attempts <= 1:
        store.drop_intent(job.intent)
    else:
        store.mark(job.intent, AMBIGUOUS, why)
    report.errors.append((f"create for {job.path}", why))


__all__ = [
    "AMBIGUOUS",
    "GONE",
    "INTENT",
    "LOCAL_TERMINAL",
    "REFUSED",
    "STORE_NAME",
    "BatchRemote",
    "BatchStore",
    "BatchesConfig",
    "Job",
    "JobView",
    "KnownInput",
    "NewJob",
    "PullConfig",
    "Report",
    "SubmitPlan",
    "SubmitRule",
    "intent_of",
    "job_metadata",
    "plan_submit",
    "step",
    "summary",
]
