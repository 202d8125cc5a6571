"""Low-level retries of one API call (tenacity): what is retried, and how long to wait."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    stop_before_delay,
)
from tenacity.stop import stop_base

from syncd.api.errors import NetworkError, RetryableError
from syncd.api.options import RetryPolicy

log = structlog.get_logger(__name__)


def backoff_cap(policy: RetryPolicy, attempt: int) -> float:
    """Upper bound of the wait after failed attempt number ``attempt`` (1-based)."""
    exponent = min(max(attempt - 1, 0), 62)
    return float(min(policy.max_backoff, policy.initial_backoff * (2.0**exponent)))


def compute_wait(
    policy: RetryPolicy,
    attempt: int,
    error: BaseException | None,
    rng: Callable[[float, float], float] = random.uniform,
) -> float:
    """Wait before the next attempt.

    A provider hint (``Retry-After`` / ``retry-after-ms``) is obeyed as given;
    otherwise exponential backoff with full jitter, which spreads the retries of
    many clients that failed together.
    """
    hint = getattr(error, "retry_after", None)
    if isinstance(hint, int | float) and hint >= 0:
        return float(hint)
    return rng(0.0, backoff_cap(policy, attempt))


class _ConnectBudget(stop_base):
    """Stop once nothing could be sent (refused, DNS, TLS) for longer than ``seconds``;
    other failures are left to the rest of the policy."""

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds

    def __call__(self, state: RetryCallState) -> bool:
        if self._seconds is None or state.outcome is None:
            return False
        error = state.outcome.exception()
        if not (isinstance(error, NetworkError) and error.phase == "connect"):
            return False
        elapsed = state.seconds_since_start or 0.0
        return elapsed + (state.upcoming_sleep or 0.0) > self._seconds


class _Cancelled(stop_base):
    def __init__(self, cancelled: Callable[[], bool]) -> None:
        self._cancelled = cancelled

    def __call__(self, state: RetryCallState) -> bool:
        return self._cancelled()


def build_retrying(
    policy: RetryPolicy,
    *,
    call_class: str,
    operation: str,
    retry_on: tuple[type[BaseException], ...] = (RetryableError,),
    sleep: Callable[[float], None] = time.sleep,
    cancelled: Callable[[], bool] = lambda: False,
) -> Retrying:
    """A fresh tenacity controller for one call (they keep per-call statistics).
    ``sleep`` waits between attempts; once ``cancelled()``, nothing is retried."""

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return compute_wait(policy, state.attempt_number, error)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "api.retry",
            call_class=call_class,
            operation=operation,
            attempt=state.attempt_number,
            status=getattr(error, "status", None),
            error=type(error).__name__ if error else None,
            wait=round(state.upcoming_sleep, 3),
        )

    return Retrying(
        stop=stop_any(
            stop_after_attempt(policy.max_attempts),
            stop_before_delay(policy.max_elapsed),
            _ConnectBudget(policy.connect_elapsed),
            _Cancelled(cancelled),
        ),
        wait=wait,
        retry=retry_if_exception_type(retry_on),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
