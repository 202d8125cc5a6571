"""Settings of the Files API client: timeouts, retry budget, pacing ceilings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from syncd.api.models import CallClass


@dataclass(frozen=True)
class Timeouts:
    """Per-phase HTTP timeouts in seconds."""

    connect: float = 10.0
    # A 150 MB upload on a slow link, or a provider parsing it before it answers.
    read: float = 120.0
    write: float = 120.0
    pool: float = 10.0
    # The whole response, from the request's last byte to the response's: httpx bounds
    # each read only, so a response trickling in a byte at a time would never time out.
    # None: twice ``read`` (the provider may take ``read`` before it answers at all).
    response: float | None = None

    @property
    def response_within(self) -> float:
        return self.response if self.response is not None else 2.0 * self.read


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the low-level retries of one call.

    ``max_attempts`` counts the first try. ``max_elapsed`` bounds the whole call,
    waits included: a retry whose wait would overrun it is not made.
    """

    max_attempts: int = 8
    max_elapsed: float = 300.0
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    # Bound on retrying a call that could not connect at all (refused, DNS, TLS);
    # None = as any other failure. One-off commands keep it short: a person waits.
    connect_elapsed: float | None = None
    # The longest provider hint (Retry-After) a call obeys by waiting, as the official
    # SDKs do. A longer one fails the call at once (RetryLaterError), and the client
    # sends nothing more of that class until the hint has passed.
    max_hint_wait: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if (
            self.max_elapsed < 0
            or self.initial_backoff < 0
            or self.max_backoff < 0
            or self.max_hint_wait < 0
        ):
            raise ValueError("retry durations must be >= 0")


@dataclass(frozen=True)
class Rates:
    """Ceilings per call class, in requests per second (seed page defaults)."""

    upload: float = 20.0
    read: float = 20.0  # retrieve + list + content
    delete: float = 10.0

    def __post_init__(self) -> None:
        for name in ("upload", "read", "delete"):
            if not getattr(self, name) > 0:
                raise ValueError(f"rate {name} must be > 0")

    def for_class(self, cls: CallClass) -> float:
        if cls == "upload":
            return self.upload
        if cls == "read":
            return self.read
        if cls == "delete":
            return self.delete
        raise ValueError(f"unknown call class {cls!r}")


@dataclass
class ClientOptions:
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rates: Rates = field(default_factory=Rates)
    # Directory for file-locked pacing buckets shared by every process of this user on
    # this host using the same key; None = in-process only. It must belong to this user
    # and not be writable by others (else PacingDirError); see
    # syncd.api.pacing.default_pacing_dir for the per-user default.
    pacing_dir: Path | None = None
    # Upper bound of pooled connections; more threads than this queue for a connection.
    max_connections: int = 64
    # How much wider than one second the pacer's window is: the seconds of jitter
    # (between our send and the provider's arrival stamp) absorbed before N + 1
    # requests could land in one provider window. Costs the same share of throughput.
    pacing_margin: float = 0.03
    # Cap on the bytes of upload bodies per second, shared as the request rates are
    # (by the processes on the pacing folder, and the hosts on limits.shared); None = none.
    upload_bytes_per_s: float | None = None
