"""Low-level retries of one API call (tenacity): what is retried, and how long to wait.

A provider hint (``Retry-After`` / ``retry-after-ms``) is obeyed exactly, up to
``RetryPolicy.max_hint_wait``. A 429 asking for longer than that, or for longer than
the rest of the call's time budget, fails the call at once with
:class:`~syncd.api.errors.RetryLaterError` ("rate limited: retry after N s"), and
:class:`Holds` keeps the client from sending that class anything before the time.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    stop_before_delay,
)
from tenacity.stop import stop_base

from syncd.api.errors import (
    APIError,
    NetworkError,
    RateLimitedError,
    RetryableError,
    RetryLaterError,
)
from syncd.api.options import RetryPolicy

log = structlog.get_logger(__name__)

T = TypeVar("T")

# The longest a hint holds a call class back (a day): past it the client asks again.
MAX_HOLD = 86400.0


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
    hint = error.retry_after if isinstance(error, RetryableError) else None
    if hint is not None and hint >= 0:
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


class _HintTooLong(stop_base):
    """Stop when the provider's hint is longer than a call waits (the caller says
    when to come back, see :func:`retry_later`)."""

    def __init__(self, most: float) -> None:
        self._most = most

    def __call__(self, state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        hint = error.retry_after if isinstance(error, RetryableError) else None
        return hint is not None and hint > self._most


class _Cancelled(stop_base):
    def __init__(self, cancelled: Callable[[], bool]) -> None:
        self._cancelled = cancelled

    def __call__(self, state: RetryCallState) -> bool:
        return self._cancelled()


def _retryable(retry_on: tuple[type[BaseException], ...]) -> Callable[[BaseException], bool]:
    def check(error: BaseException) -> bool:
        return isinstance(error, retry_on) and not isinstance(error, RetryLaterError)

    return check


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
            status=error.status if isinstance(error, APIError) else None,
            error=type(error).__name__ if error else None,
            wait=round(state.upcoming_sleep, 3),
        )

    return Retrying(
        stop=stop_any(
            stop_after_attempt(policy.max_attempts),
            stop_before_delay(policy.max_elapsed),
            _ConnectBudget(policy.connect_elapsed),
            _HintTooLong(policy.max_hint_wait),
            _Cancelled(cancelled),
        ),
        wait=wait,
        retry=retry_if_exception(_retryable(retry_on)),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )


def run_call(
    policy: RetryPolicy,
    fn: Callable[[], T],
    *,
    call_class: str,
    operation: str,
    sleep: Callable[[float], None] = time.sleep,
    cancelled: Callable[[], bool] = lambda: False,
) -> T:
    """``fn`` under a fresh controller. A 429 whose hint the call could not wait out
    (past ``max_hint_wait`` or the rest of ``max_elapsed``) is raised as
    RetryLaterError; one that merely used up the attempts stays a RateLimitedError."""
    retrying = build_retrying(
        policy, call_class=call_class, operation=operation, sleep=sleep, cancelled=cancelled
    )
    try:
        result: T = retrying(fn)
    except RateLimitedError as exc:
        hint = exc.retry_after
        attempts = int(retrying.statistics.get("attempt_number", 0))
        if isinstance(exc, RetryLaterError) or hint is None or attempts >= policy.max_attempts:
            raise
        raise retry_later(exc, hint) from None
    return result


def retry_later(error: RateLimitedError | None, seconds: float) -> RetryLaterError:
    """The typed failure of a call that may not be sent, or retried, for ``seconds``."""
    said = f" (the provider said: {error.message})" if error is not None else ""
    return RetryLaterError(
        f"rate limited by the provider: retry after {math.ceil(seconds)} s{said}",
        status=429,
        code=error.code if error is not None else None,
        request_id=error.request_id if error is not None else None,
        retry_after=seconds,
    )


class Holds:
    """Per call class, the time before which the provider asked not to be sent more
    (the Retry-After of a 429), for every thread of this client. A call finding a hold
    waits it out when that is within ``max_hint_wait``, else fails with
    RetryLaterError, sending nothing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def left(self, call_class: str) -> float:
        with self._lock:
            return max(0.0, self._until.get(call_class, 0.0) - self._clock())

    def before_send(
        self, call_class: str, policy: RetryPolicy, sleep: Callable[[float], None]
    ) -> None:
        left = self.left(call_class)
        if left <= 0:
            return
        if left > policy.max_hint_wait:
            raise retry_later(None, left)
        sleep(left)

    def throttled(
        self, call_class: str, error: RateLimitedError, policy: RetryPolicy
    ) -> RateLimitedError:
        """Note a 429's hint; returns the error to raise for it."""
        hint = error.retry_after
        if hint is None or not math.isfinite(hint) or hint <= 0:
            return error
        with self._lock:
            until = self._clock() + min(hint, MAX_HOLD)
            self._until[call_class] = max(self._until.get(call_class, 0.0), until)
        if hint > policy.max_hint_wait:
            return retry_later(error, hint)
        return error
