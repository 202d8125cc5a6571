"""What the running daemon counts, and its Prometheus exposition.

Everything is fed from one place, a :class:`Recorder`:

* every HTTP attempt of the engine's client, seen by an :class:`ObservedTransport`
  wrapped around the client's transport (:func:`instrument`): call class, outcome,
  and whether it was a retry;
* every engine run the worker finishes (:meth:`Recorder.run_finished`), with the
  settle queue's first-event times of the paths it published.

Gauges that describe the present (phase, queue, pacer, files by status, account
usage) are not stored here: they are read at scrape time from the same status
snapshot that the control socket answers (:mod:`syncd.daemon.control`), so the
metrics and ``syncd status`` cannot disagree.

Labels are low-cardinality by construction: call class (3), outcome (5), status
(a handful), phase, watch mode. Never a path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from syncd.daemon.phase import REPORTED

if TYPE_CHECKING:
    from syncd.daemon.page_data import Documents

CALL_CLASSES = ("upload", "read", "delete")
OUTCOMES = ("ok", "4xx", "429", "5xx", "network")
WATCH_MODES = ("inotify", "polling")

RECONCILE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def call_class(method: str) -> str:
    """The pacing class of a Files API request, from its method (see SPEC.md)."""
    if method == "POST":
        return "upload"
    if method == "DELETE":
        return "delete"
    return "read"


def outcome_of(status: int) -> str:
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    if status >= 400:
        return "4xx"
    return "ok"


def retryable(outcome: str) -> bool:
    return outcome in ("429", "5xx", "network")


class RunLike(Protocol):
    """The part of the engine's RunReport the recorder reads."""

    @property
    def exit_code(self) -> int: ...

    @property
    def errors(self) -> list[str]: ...

    @property
    def failed_paths(self) -> set[str]: ...


class Recorder:
    """Thread-safe tallies of the daemon's activity since it started."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._lock = threading.Lock()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests: dict[tuple[str, str], int] = {
            (c, o): 0 for c in CALL_CLASSES for o in OUTCOMES
        }
        self.retries: dict[str, int] = dict.fromkeys(CALL_CLASSES, 0)
        self.upload_bytes = 0
        self.last_reconcile: dict[str, Any] | None = None
        self.last_success_at: float | None = None
        self.last_error: dict[str, Any] | None = None
        # Per thread: the last attempt (method, url, size) if it failed retryably. The
        # client's calls are synchronous, so the next attempt of the same request on
        # the same thread is its retry.
        self._local = threading.local()
        self.reconcile_seconds = Histogram(
            "syncd_reconcile_duration_seconds",
            "Duration of full reconciles (scan, listing, plan, execution, publish).",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.latency_seconds = Histogram(
            "syncd_event_to_mapping_seconds",
            "From the first filesystem event of a path to the mapping that reflects it.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    # ---- fed by the transport (any client thread)

    def attempt(self, method: str, url: str, size: str | None, outcome: str) -> None:
        cls = call_class(method)
        key = (method, url, size)
        retry = getattr(self._local, "failed", None) == key
        self._local.failed = key if retryable(outcome) else None
        with self._lock:
            self.requests[(cls, outcome)] += 1
            if retry:
                self.retries[cls] += 1

    # ---- fed by the worker

    def run_finished(
        self,
        kind: str,
        report: RunLike,
        *,
        duration_s: float,
        uploaded_bytes: int = 0,
        first_events: Mapping[str, float] | None = None,
        now: float | None = None,
    ) -> None:
        """One engine run ended. ``kind`` is "reconcile" or "sync"; ``first_events``
        maps the paths it was given to their first event (``time.monotonic``)."""
        at = time.time()
        errors = report.errors
        with self._lock:
            self.upload_bytes += uploaded_bytes
            if kind == "reconcile":
                self.last_reconcile = {
                    "at": at,
                    "duration_s": round(duration_s, 3),
                    "exit_code": report.exit_code,
                }
                if report.exit_code == 0:
                    self.last_success_at = at
            if errors:
                self._error_locked(errors[0], at)
        if kind == "reconcile":
            self.reconcile_seconds.observe(duration_s)
        if first_events:
            failed = report.failed_paths
            mono = time.monotonic() if now is None else now
            for path, first in first_events.items():
                if path not in failed:
                    self.latency_seconds.observe(max(0.0, mono - first))

    def error(self, message: str) -> None:
        with self._lock:
            self._error_locked(message, time.time())

    def _error_locked(self, message: str, at: float) -> None:
        last = self.last_error
        since = last["since"] if last and last["message"] == message else at
        self.last_error = {"message": message, "since": since, "at": at}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": {c: {o: self.requests[(c, o)] for o in OUTCOMES} for c in CALL_CLASSES},
                "retries": dict(self.retries),
                "upload_bytes": self.upload_bytes,
                "last_reconcile": self.last_reconcile,
                "last_success_at": self.last_success_at,
                "last_error": self.last_error,
            }


# ---------------------------------------------------------------- the client's side


class ObservedTransport(httpx.BaseTransport):
    """Passes every request on unchanged and tells the recorder how it went."""

    def __init__(self, inner: httpx.BaseTransport, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        size = request.headers.get("content-length")
        url = str(request.url)
        try:
            response = self._inner.handle_request(request)
        except httpx.TransportError:
            self._recorder.attempt(request.method, url, size, "network")
            raise
        self._recorder.attempt(request.method, url, size, outcome_of(response.status_code))
        return response

    def close(self) -> None:
        self._inner.close()


def instrument(client: object, recorder: Recorder) -> bool:
    """Wrap the transports of a ``FilesClient``'s httpx client; False if it has none.

    The one place that reaches into the client: it exposes no observer hook, and a
    transport sees every attempt, retries and network failures included.
    """
    http = getattr(client, "_http", None)
    if not isinstance(http, httpx.Client):
        return False
    inner = getattr(http, "_transport", None)
    if not isinstance(inner, httpx.BaseTransport):
        return False
    http._transport = ObservedTransport(inner, recorder)
    mounts: dict[Any, httpx.BaseTransport | None] = getattr(http, "_mounts", {})
    for pattern, transport in list(mounts.items()):
        if transport is not None:
            mounts[pattern] = ObservedTransport(transport, recorder)
    return True


# ---------------------------------------------------------------- exposition


class SnapshotCollector(Collector):
    """Exports the recorder's counters and the live status snapshot at scrape time."""

    def __init__(self, recorder: Recorder, status: Callable[[], Mapping[str, Any]]) -> None:
        self._recorder = recorder
        self._status = status

    def collect(self) -> Iterator[Metric]:
        tally = self._recorder.snapshot()
        requests = CounterMetricFamily(
            "syncd_api_requests",
            "Files API requests sent, by call class and outcome "
            "(ok, 4xx, 429, 5xx, network: no response).",
            labels=["call_class", "outcome"],
        )
        for cls, outcomes in tally["requests"].items():
            for outcome, n in outcomes.items():
                requests.add_metric([cls, outcome], n)
        yield requests
        retries = CounterMetricFamily(
            "syncd_api_retries", "Requests that were retries of a failed attempt.",
            labels=["call_class"],
        )  # fmt: skip
        for cls, n in tally["retries"].items():
            retries.add_metric([cls], n)
        yield retries
        yield CounterMetricFamily(
            "syncd_upload_bytes", "Bytes of files uploaded.", value=tally["upload_bytes"]
        )
        if tally["last_success_at"] is not None:
            yield GaugeMetricFamily(
                "syncd_last_successful_reconcile_timestamp_seconds",
                "When the last reconcile that converged (exit code 0) ended.",
                value=tally["last_success_at"],
            )
        yield from status_metrics(self._status())


def status_metrics(status: Mapping[str, Any]) -> Iterable[Metric]:
    """The gauges of one status snapshot (see :func:`syncd.daemon.control.snapshot`)."""
    yield from _daemon_metrics(status)
    yield from _pacer_metrics(status)
    yield from _batch_metrics(status)
    yield from _vector_metrics(status)
    yield from _quota_metrics(status)


def _daemon_metrics(status: Mapping[str, Any]) -> Iterable[Metric]:
    """Phase, reachability, queue, watch mode and files by status."""
    phase = GaugeMetricFamily(
        "syncd_phase", "What the daemon is doing (1 for the current phase).", labels=["phase"]
    )
    for name in REPORTED:
        phase.add_metric([name], 1.0 if status.get("phase") == name else 0.0)
    yield phase
    remote = status.get("remote") or {}
    yield GaugeMetricFamily(
        "syncd_remote_up", "1 while the provider answers, 0 while it is unreachable.",
        value=1.0 if remote.get("reachable", True) else 0.0,
    )  # fmt: skip
    yield GaugeMetricFamily(
        "syncd_queue_length", "Changed paths waiting to be synced.",
        value=float(status.get("queue", 0)),
    )  # fmt: skip
    watch = GaugeMetricFamily(
        "syncd_watch_mode", "How the folder is watched (1 for the mode in use).", labels=["mode"]
    )
    for mode in WATCH_MODES:
        watch.add_metric([mode], 1.0 if status.get("watch_mode") == mode else 0.0)
    yield watch
    files = GaugeMetricFamily(
        "syncd_files", "Files known to the state, by status.", labels=["status"]
    )
    for name, n in sorted((status.get("counts") or {}).items()):
        files.add_metric([name], float(n))
    yield files


def _pacer_metrics(status: Mapping[str, Any]) -> Iterable[Metric]:
    """Each call class's rate now and the limit as estimated."""
    rate = GaugeMetricFamily(
        "syncd_pacer_rate_per_second", "Requests per second the pacer allows now.",
        labels=["call_class"],
    )  # fmt: skip
    ceiling = GaugeMetricFamily(
        "syncd_pacer_ceiling_estimate_per_second",
        "The provider's rate limit as the pacer currently estimates it.",
        labels=["call_class"],
    )
    for cls, p in sorted((status.get("pacer") or {}).items()):
        rate.add_metric([cls], float(p["rate_per_s"]))
        ceiling.add_metric([cls], float(p["ceiling_estimate_per_s"]))
    yield rate
    yield ceiling


def _batch_metrics(status: Mapping[str, Any]) -> Iterable[Metric]:
    """Batch jobs by status, files pulled, conflict copies."""
    batches = status.get("batches")
    if batches:
        jobs = GaugeMetricFamily(
            "syncd_batch_jobs", "Batch jobs syncd made, by status.", labels=["status"]
        )
        for name, n in sorted(batches.get("jobs", {}).items()):
            jobs.add_metric([name], float(n))
        yield jobs
        yield GaugeMetricFamily(
            "syncd_pulled_files", "Provider-made files pulled into the outbox.",
            value=float(batches.get("pulled", 0)),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "syncd_pull_conflicts", "Pulled files kept as conflict copies (a local edit).",
            value=float(len(batches.get("conflicts", []))),
        )  # fmt: skip


def _vector_metrics(status: Mapping[str, Any]) -> Iterable[Metric]:
    """Attachments by the provider's status."""
    stores = status.get("vector_stores")
    if stores:
        attached = GaugeMetricFamily(
            "syncd_vector_attachments",
            "Files syncd attached to vector stores, by the provider's status.", labels=["status"])
        for name, n in sorted(stores.get("attachments", {}).items()):
            attached.add_metric([name], float(n))
        yield attached


def _quota_metrics(status: Mapping[str, Any]) -> Iterable[Metric]:
    """The account's usage and quota, files and bytes."""
    quota = status.get("quota") or {}
    for unit, what in (("files", "files"), ("bytes", "bytes")):
        used = quota.get(unit)
        if used is not None:
            yield GaugeMetricFamily(
                f"syncd_account_used_{unit}",
                f"The account's {what} on the remote (ours and others') as last listed.",
                value=float(used),
            )
        limit = quota.get(f"max_{unit}")
        if limit is not None:
            yield GaugeMetricFamily(
                f"syncd_account_limit_{unit}", f"The account's quota of {what}.",
                value=float(limit),
            )  # fmt: skip


def build_registry(
    recorder: Recorder, status: Callable[[], Mapping[str, Any]]
) -> CollectorRegistry:
    registry = recorder.registry
    registry.register(SnapshotCollector(recorder, status))
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """The daemon's HTTP listener on its own thread: ``/metrics`` always, and the
    status page with its JSON when given its ``documents`` (see :mod:`.page`)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        address: tuple[str, int],
        documents: Documents | None = None,
    ) -> None:
        from syncd.daemon.page import PageServer, serve

        self._server = PageServer(address, registry, documents)
        self._thread = serve(self._server)
        self.port: int = self._server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)
