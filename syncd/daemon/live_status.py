"""The running daemon's status document (what the control socket answers, the metrics
export and the status page shows) and its one-line form for systemd's STATUS.

Built from the parts that know each piece: the worker (phase, reach, queue, watch), the
recorder (requests, errors, runs), the engine (counts, pacer, the account as listed,
batches, vector stores) and the supervisor's reload verdict. Nothing here changes them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from syncd.config import Config
from syncd.daemon.metrics import Recorder
from syncd.daemon.protocols import SyncerLike
from syncd.daemon.reload import Verdict
from syncd.daemon.schedule import ReconcileScheduler
from syncd.daemon.worker import Worker
from syncd.engine.remote import RemoteFiles, RemoteView
from syncd.units import iso_utc

log = structlog.get_logger("syncd.daemon")


@dataclass
class Sources:
    """Where the status reads from (the supervisor's parts, shared, never copied)."""

    config_path: Path
    syncer: SyncerLike
    worker: Worker
    recorder: Recorder
    scheduler: ReconcileScheduler
    started_at: float


def live_status(src: Sources, config: Config, pending: Verdict | None) -> dict[str, Any]:
    """The live status the control socket answers and the metrics export."""
    worker, syncer = src.worker, src.syncer
    reach = worker.reach
    tally = src.recorder.snapshot()
    try:
        counts = dict(syncer.stats())
    except Exception:  # the state is busy or closing: the last known counts will do
        counts = dict(worker.stats)
    last_error = _stamped(tally["last_error"], "at", "since")
    if pending is not None and (last_error is None or tally["last_error"]["at"] <= pending.at):
        # Newer than any error of the runs: what the operator must act on now.
        last_error = {"message": pending.message, "at": iso_utc(pending.at), "since": None}
    return {
        "source": "daemon",
        "alive": True,
        "pid": os.getpid(),
        "started_at": iso_utc(src.started_at),
        "uptime_s": round(time.time() - src.started_at, 1),
        "phase": worker.phase.reported(reach.down),
        "activity": worker.activity,
        "queue": len(worker.queue),
        "watch_mode": worker.watcher.kind,
        "remote": {
            "base_url": syncer.base_url,
            "reachable": not reach.down,
            "unreachable_since": iso_utc(reach.since),
        },
        "counts": counts,
        "last_reconcile": _stamped(tally["last_reconcile"], "at"),
        "last_success_at": iso_utc(tally["last_success_at"]),
        "last_error": last_error,
        "config": config_state(src.config_path, pending),
        "requests": tally["requests"],
        "retries": tally["retries"],
        "upload_bytes": tally["upload_bytes"],
        "pacer": pacer_state(syncer.client, tally["requests"]),
        "quota": quota_state(syncer.remote, config),
        "batches": _batches(syncer),
        "vector_stores": _vector_stores(syncer),
        "next_reconcile": _next_run(src.scheduler),
    }


def status_line(worker: Worker, pending: Verdict | None) -> str:
    """The one line systemd shows (``systemctl status``)."""
    stats = worker.stats
    synced = stats.get("synced", 0)
    failed = sum(stats.get(k, 0) for k in ("error", "invalid", "quota"))
    watching = worker.watcher.kind or "not yet"
    parts = [worker.reach.describe() or worker.activity, f"queue {len(worker.queue)}",
             f"synced {synced}"]  # fmt: skip
    if failed:
        parts.append(f"failed {failed}")
    parts.append(f"watching: {watching}")
    if pending is not None and pending.outcome == "restart":
        parts.append(f"restart needed to apply: {', '.join(pending.restart)}")
    elif pending is not None:
        parts.append("the configuration file is invalid; running the previous one")
    return "; ".join(parts)


def _batches(syncer: SyncerLike) -> dict[str, Any] | None:
    try:
        return syncer.batch_summary()
    except Exception:  # the store is busy or closing: the next scrape tells
        return None


def _vector_stores(syncer: SyncerLike) -> dict[str, Any] | None:
    attacher = syncer.attacher
    try:
        return attacher.summary() if attacher is not None else None
    except Exception:  # the store is busy or closing: the next scrape tells
        return None


def _next_run(scheduler: ReconcileScheduler) -> str | None:
    when = scheduler.next_run_time()
    return None if when is None else iso_utc(when.timestamp())


def _stamped(data: dict[str, Any] | None, *keys: str) -> dict[str, Any] | None:
    if data is None:
        return None
    return {**data, **{k: iso_utc(data.get(k)) for k in keys}}


def pacer_state(client: RemoteFiles | None, requests: dict[str, dict[str, int]]
                ) -> dict[str, Any]:  # fmt: skip
    """Per call class: the rate allowed now, the ceiling and the limit as estimated."""
    if client is None:
        return {}
    pacer, options = client.pacer, client.options
    out: dict[str, Any] = {}
    now = time.monotonic()
    for cls in ("upload", "read", "delete"):
        try:
            state = pacer.snapshot(cls)
            rate = pacer.current_rate(cls)
        except Exception:  # a shared pacing file being rewritten: skip this class
            log.debug("pacer state unavailable", call_class=cls, exc_info=True)
            continue
        ceiling = float(options.rates.for_class(cls))
        target = state.target
        out[cls] = {
            "rate_per_s": round(float(rate), 3),
            "ceiling_per_s": ceiling,
            "ceiling_estimate_per_s": round(float(target if target is not None else ceiling), 3),
            "paused": state.paused_until > now,
            "recent_429": len(state.refused),
            "throttled_total": requests.get(cls, {}).get("429", 0),
        }
    return out


def quota_state(remote: RemoteView | None, config: Config) -> dict[str, Any]:
    """The account's usage as last listed (ours and others' files) against its quota."""
    limits = {"max_files": config.limits.max_files, "max_bytes": config.limits.max_bytes}
    if remote is None or remote.listed_at is None:
        return {"files": None, "bytes": None, **limits, "listed_at": None}
    files = remote.snapshot().values()
    return {
        "files": len(files),
        "bytes": sum(int(f.bytes) for f in files),
        **limits,
        "listed_at": iso_utc(remote.listed_at),
    }


def config_state(path: Path, pending: Verdict | None) -> dict[str, Any]:
    """The configuration's side of the status: the file, and a reload not applied."""
    if pending is None:
        return {"path": str(path), "reload": "applied", "restart_needed": [], "message": None}
    return {
        "path": str(path),
        "reload": "restart needed" if pending.outcome == "restart" else "invalid",
        "restart_needed": list(pending.restart),
        "where": list(pending.where),
        "message": pending.message,
        "at": iso_utc(pending.at),
    }
