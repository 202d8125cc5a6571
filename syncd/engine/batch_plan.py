"""What batch jobs to have: which synced inputs get a job, which wait, which jobs are
superseded and cancelled, and how a job is named so it can be found again.

Pure: :func:`plan_submit` decides from the inputs known, the submit rules and the jobs
recorded, at a given ``now``; :func:`job_metadata` and :func:`intent_of` are the two
sides of a job's name (our intent in its metadata). The values they decide over live
here too: the configuration (:class:`SubmitRule`, :class:`BatchesConfig`), a synced
input (:class:`KnownInput`) and an intent with its job (:class:`Job`, and the local
statuses before and beside the provider's). The store that records jobs is
:mod:`syncd.engine.batch_store`; the step that acts on these decisions is
:mod:`syncd.engine.batches`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from wcmatch import glob

from syncd.api.models import BATCH_TERMINAL, Batch, RequestCounts
from syncd.engine.pull import PullConfig

# Metadata keys a job carries: our intent, and the content it was made for.
INTENT_KEY = "syncd_intent"
SHA_KEY = "syncd_sha256"
# DashScope's documented display-name key (<= 100 characters): "syncd:<intent>".
DS_NAME_KEY = "ds_name"
DS_DESCRIPTION_KEY = "ds_description"
DS_NAME_PREFIX = "syncd:"
DAY_S = 86_400.0
# Local statuses before the provider's: recorded, create not answered / answer lost.
INTENT = "intent"
AMBIGUOUS = "ambiguous"
# Local terminal statuses: the provider refused the create; the job vanished.
REFUSED = "refused"
GONE = "gone"
LOCAL_TERMINAL = frozenset({REFUSED, GONE})
_GLOB_FLAGS = glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB | glob.IGNORECASE


# ---- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitRule:
    """``batch:`` of a purpose rule: inputs it selects run as jobs on ``endpoint``."""

    patterns: tuple[str, ...]
    endpoint: str
    completion_window: str = "24h"
    # Jobs this rule may create in any 24 hours (intents counted when recorded).
    max_per_day: int = 100
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or ",".join(self.patterns)

    def matches(self, path: str) -> bool:
        anchored = [p if "/" in p else f"**/{p}" for p in self.patterns]
        return bool(glob.globmatch(path, anchored, flags=_GLOB_FLAGS))


@dataclass(frozen=True)
class BatchesConfig:
    pull: PullConfig | None = None
    submit: tuple[SubmitRule, ...] = ()
    # Cancel a job still running when its input changed (a new job runs for the new content).
    cancel_superseded: bool = True
    # An intent no listing shows is created again after this many listings spanning at
    # least confirm_s seconds (a listing may leave a job out).
    confirm_listings: int = 3
    confirm_s: float = 5.0
    # Pages of batches (100 each) one step may list.
    max_batch_pages: int = 10
    # Which metadata a job carries: our own keys (syncd_intent, syncd_sha256), and/or
    # DashScope's documented ds_name / ds_description ("syncd:<intent>", "syncd sha256=…").
    # Either finds a job again. Whether DashScope keeps keys other than its ds_* ones is
    # unconfirmed: with syncd_keys off, only those are sent.
    syncd_keys: bool = True
    ds_name: bool = True
    # More running jobs than this are followed by listing batches instead of one
    # retrieve each.
    poll_retrieve_max: int = 5


@dataclass(frozen=True)
class KnownInput:
    """A synced input: its remote id and content hash (None: unknown, the id stands in)."""

    file_id: str
    sha256: str | None = None

    @property
    def content(self) -> str:
        return self.sha256 or f"id:{self.file_id}"


@dataclass(frozen=True)
class Job:
    """One intent and, once known, its job."""

    intent: str
    path: str
    sha256: str
    input_file_id: str
    rule: str
    endpoint: str
    completion_window: str
    intended_at: float
    status: str = INTENT
    batch_id: str | None = None
    created_at: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: RequestCounts = field(default_factory=RequestCounts)
    superseded: bool = False
    cancel_sent: bool = False
    misses: int = 0
    first_miss: float | None = None
    attempts: int = 0
    reason: str | None = None
    last_attempt: float | None = None

    @property
    def bound(self) -> bool:
        return self.batch_id is not None

    @property
    def ended(self) -> bool:
        return self.status in BATCH_TERMINAL or self.status in LOCAL_TERMINAL

    @property
    def running(self) -> bool:
        """Bound to a job the provider has not finished."""
        return self.bound and not self.ended

    def as_batch(self) -> Batch:
        assert self.batch_id is not None
        return Batch(id=self.batch_id, status=self.status, endpoint=self.endpoint,
                     input_file_id=self.input_file_id, completion_window=self.completion_window,
                     created_at=self.created_at, output_file_id=self.output_file_id,
                     error_file_id=self.error_file_id, request_counts=self.counts)  # fmt: skip


# ---- deciding ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewJob:
    path: str
    content: str
    input_file_id: str
    rule: SubmitRule


@dataclass
class SubmitPlan:
    create: list[NewJob] = field(default_factory=list)
    deferred: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    supersede: list[Job] = field(default_factory=list)
    cancel: list[Job] = field(default_factory=list)


def rule_for(path: str, rules: Sequence[SubmitRule]) -> SubmitRule | None:
    for rule in rules:
        if rule.matches(path):
            return rule
    return None


def plan_submit(
    known: Mapping[str, KnownInput],
    rules: Sequence[SubmitRule],
    jobs: Sequence[Job],
    *,
    now: float,
    cancel_superseded: bool = True,
) -> SubmitPlan:
    """What jobs to create, defer (the daily cap), mark superseded and cancel.

    A content (sha256) and endpoint that any job, in any status, was made for gets no
    other: an unchanged file never runs twice, whatever its path, and a job that failed is
    not retried (editing the file runs it again). A job is superseded when the path it
    was made for holds other content now and no synced path holds its content."""
    plan = SubmitPlan()
    taken = {(j.sha256, j.endpoint) for j in jobs}
    day = Counter(j.rule for j in jobs if j.intended_at > now - DAY_S)
    for path in sorted(known):
        rule = rule_for(path, rules)
        if rule is None:
            continue
        key = (known[path].content, rule.endpoint)
        if key in taken:
            continue
        if day[rule.label] >= rule.max_per_day:
            why = (f"the rule's max_per_day ({rule.max_per_day}) is reached; it runs when"
                   " the day's count allows")
            plan.deferred.append((path, why))
            continue
        taken.add(key)
        day[rule.label] += 1
        plan.create.append(NewJob(path, known[path].content, known[path].file_id, rule))
    held = {k.content for k in known.values()}
    for job in jobs:
        current = known.get(job.path)
        if job.superseded or current is None or current.content == job.sha256:
            continue
        if job.sha256 not in held:
            plan.supersede.append(job)
    if cancel_superseded:
        superseded = {j.intent for j in plan.supersede}
        plan.cancel = [
            j for j in jobs
            if (j.superseded or j.intent in superseded) and j.running and not j.cancel_sent
        ]  # fmt: skip
    return plan


def intent_of(batch: Batch) -> str | None:
    """The intent a job was created for, by either key it carries."""
    intent = batch.meta(INTENT_KEY)
    if intent:
        return intent
    name = batch.meta(DS_NAME_KEY) or ""
    return name[len(DS_NAME_PREFIX):] or None if name.startswith(DS_NAME_PREFIX) else None


def job_metadata(job: Job, ds_name: bool = True, syncd_keys: bool = True) -> dict[str, str]:
    """The metadata a job of ``job``'s intent is created with (see BatchesConfig)."""
    meta: dict[str, str] = {}
    if syncd_keys or not ds_name:
        meta.update({INTENT_KEY: job.intent, SHA_KEY: job.sha256[:64]})
    if ds_name:
        meta[DS_NAME_KEY] = DS_NAME_PREFIX + job.intent
        meta[DS_DESCRIPTION_KEY] = f"syncd sha256={job.sha256[:64]}"
    return meta
