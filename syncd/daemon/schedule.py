"""Periodic full reconcile, on an interval or a crontab schedule (APScheduler 3.x).

The job itself only raises the rescan flag; the worker thread runs the reconcile.
That keeps all engine calls on one thread (so shutdown has one thing to wait
for) and means a slow reconcile can never hold the scheduler's thread pool. The
job options still guard against APScheduler's pitfalls in case that changes:
``misfire_grace_time`` defaults to one second, which silently drops runs in a
busy process.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

if TYPE_CHECKING:
    from syncd.config import ReconcileConfig

log = structlog.get_logger("syncd.daemon")

JOB_ID = "reconcile"
MISFIRE_GRACE_S = 3600


class ScheduleError(ValueError):
    """The reconcile schedule in the configuration cannot be used."""


def build_trigger(reconcile: ReconcileConfig) -> Any | None:
    """The trigger for the configured schedule, or None when periodic reconcile is off.

    The first interval run is one interval after start, not at start: the daemon
    runs its catch-up reconcile explicitly before declaring itself ready.
    """
    if reconcile.cron and reconcile.interval_s:
        raise ScheduleError("reconcile: set interval_s or cron, not both")
    if reconcile.cron:
        try:
            return CronTrigger.from_crontab(reconcile.cron)
        except ValueError as exc:
            raise ScheduleError(f"reconcile.cron: {reconcile.cron!r} is not valid: {exc}") from exc
    if reconcile.interval_s:
        return IntervalTrigger(seconds=reconcile.interval_s)
    return None


def describe(reconcile: ReconcileConfig) -> str:
    if reconcile.cron:
        return f"cron {reconcile.cron!r}"
    if reconcile.interval_s:
        return f"every {reconcile.interval_s:g}s"
    return "off"


class ReconcileScheduler:
    def __init__(self, on_due: Callable[[], None]) -> None:
        self._on_due = on_due
        self._scheduler = BackgroundScheduler(
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": MISFIRE_GRACE_S,
            }
        )
        self._started = False

    def start(self, reconcile: ReconcileConfig) -> None:
        self.apply(reconcile)
        self._scheduler.start()
        self._started = True

    def apply(self, reconcile: ReconcileConfig) -> None:
        """Install or replace the schedule; raises ScheduleError and keeps the old one."""
        trigger = build_trigger(reconcile)
        if self._scheduler.get_job(JOB_ID) is not None:
            self._scheduler.remove_job(JOB_ID)
        if trigger is None:
            log.info("scheduled reconcile is off")
            return
        self._scheduler.add_job(
            self._fire,
            trigger=trigger,
            id=JOB_ID,
            name="scheduled reconcile",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=MISFIRE_GRACE_S,
            replace_existing=True,
        )
        log.info(
            "scheduled reconcile", schedule=describe(reconcile), next_at=self.next_run_time()
        )

    def next_run_time(self) -> datetime | None:
        job = self._scheduler.get_job(JOB_ID)
        if job is None:
            return None
        when = getattr(job, "next_run_time", None)
        if when is None:
            # Before the scheduler starts, the job's time is still pending.
            now = datetime.now(job.trigger.timezone) if hasattr(job.trigger, "timezone") else None
            when = job.trigger.get_next_fire_time(None, now) if now is not None else None
        return when if isinstance(when, datetime) else None

    def _fire(self) -> None:
        try:
            self._on_due()
        except Exception:
            log.exception("could not request the scheduled reconcile")

    def shutdown(self) -> None:
        if self._started:
            self._started = False
            self._scheduler.shutdown(wait=False)
