"""Request pacing: one adaptive limiter per call class, shared by threads and processes.

The provider counts requests per account in sliding one-second windows, per call
class. At the configured ceiling ``N`` per second the pacer mirrors that rule with
a wider window: at most ``N`` grants in any ``1 + margin`` seconds, where the grant
time recorded is the moment the grant was actually made (a thread that is not yet
allowed sleeps and asks again, so a late wake-up can only widen a gap). The
``N + 1``-th request then reaches the server more than one second after the first
as long as the delay between our grant and the server's arrival timestamp varies by
less than ``margin`` seconds. A quiet class may start with a burst, which buys the
margin back in throughput. A request is counted from when its headers actually leave;
until then (a connection being made can take longer than a window) every window
reckoned counts it as leaving at that moment, and a request that never leaves (no
connection, a cancelled call) gives its place back.

On top of that sits an adaptive pacer that tells two kinds of 429 apart:

- **We are too fast.** Every request carries the number of requests we sent in the
  one-second window it went out in, less those of them answered 429 (its *count*:
  what the provider surely counted). A success at count ``c`` proves the provider
  took ``c`` requests in a window (for ``proof_ttl`` seconds). A 429 at a count above
  that proof is *evidence* of a lower limit, until a later success at the same or a
  higher count disproves it. Three pieces of evidence within ``evidence_ttl`` (one,
  above a learned estimate) mean we are over the provider's rate: the rate drops (to
  the proven count when that pins the limit down, else by half), the class pauses
  (not when pinned down: the provider's window drains at that rate), and the
  estimate is remembered. A request sent before that verdict and accepted at a count
  that drew it proves the verdict wrong, and undoes it. Successes recover the rate
  up to the estimate quickly and probe above it only slowly after a quiet period.
- **The server sheds load.** A 429 at a count the provider has just accepted says
  nothing about our rate. It changes nothing here; the caller retries that one
  request with backoff (obeying Retry-After). A provider that throttles at random
  therefore costs the retries, not a ratcheting ceiling.

The rate never goes below ``min_rate`` (1/s, or the ceiling if that is lower). A
learned estimate decays with idle time: a state last used long ago returns towards
the configured ceiling (half the gap per ``idle_half_life`` seconds idle), so one
bad hour does not slow the next run.

The state of each class lives in a small JSON file in a private folder guarded by
``fcntl.flock`` on a separate lock file, so every process of this user on the host
using the same key paces and adapts together. Without a folder the state is in
memory, shared by the threads of one process. The folder must belong to this user
and must not be writable by group or others (it is created 0700); its files are
opened without following symlinks and replaced atomically (write a temporary file,
rename it over the old one). A state that cannot be parsed, or that is absurd
(non-finite or non-positive rates, times in the future, an endless pause), is
reset rather than obeyed. Times come from ``time.monotonic`` (CLOCK_MONOTONIC is
host-wide on Linux, so processes agree on it); state from before a reboot has times
in the future and is reset too.

Where the state lives is a small interface (:class:`StateStore`): one transaction
that yields a :class:`ClassState` under an exclusive lock and saves it afterwards.
The memory and file stores implement it, and so does a store shared between hosts:
Redis (:mod:`syncd.api.pacing_redis`), one budget per class for every host on the key,
with the local store as the fallback while it is unreachable.

Where each part lives, each module named for what it decides:

- :mod:`syncd.api.pacing_state`: what a class's state holds, the tuning, and which
  stored state is parsed at all;
- :mod:`syncd.api.pacing_rules`: the pure rules on a state and an injected clock
  reading (grant or wait, 429 evidence and verdicts, Retry-After holds, recovery,
  idle decay, the window inherited when the shared store is lost);
- :mod:`syncd.api.pacing_store`: the store interface, the memory and file stores, and
  the private folder's checks;
- :mod:`syncd.api.pacing_failover`: which store serves while a shared one comes and
  goes, and at what share of the ceiling;
- :mod:`syncd.api.pacer`: the :class:`Pacer` every client call goes through;
- :mod:`syncd.api.pacing_redis`: the store shared between hosts.

This module names them all, so ``from syncd.api.pacing import X`` finds any of them.
"""

from syncd.api.pacer import Pacer
from syncd.api.pacing_failover import Failover, FailoverStore
from syncd.api.pacing_rules import (
    Inheritance,
    Verdict,
    await_send,
    count_late,
    effective_rate,
    hosts_seen,
    inherit,
    is_implausible,
    merge_grants,
    net_count,
    note_host,
    note_sent,
    note_success,
    note_throttled,
    note_unsent,
    relax_idle,
    try_grant,
    window_count,
)
from syncd.api.pacing_state import (
    CALL_CLASSES,
    DEFAULT_MARGIN,
    FUTURE_SLACK,
    HOSTS_KEEP,
    MAX_HOSTS,
    MAX_RECENT,
    MAX_STATE_BYTES,
    REFUSED_KEEP,
    UNSENT_KEEP,
    WINDOW,
    AdaptiveTuning,
    ClassState,
)
from syncd.api.pacing_store import (
    FileStore,
    Held,
    MemoryStore,
    PacingDir,
    PacingDirError,
    Returning,
    StateStore,
    StoreUnavailable,
    budget_id,
    default_pacing_dir,
    dir_problem,
    file_problem,
)

__all__ = [
    "CALL_CLASSES",
    "DEFAULT_MARGIN",
    "FUTURE_SLACK",
    "HOSTS_KEEP",
    "MAX_HOSTS",
    "MAX_RECENT",
    "MAX_STATE_BYTES",
    "REFUSED_KEEP",
    "UNSENT_KEEP",
    "WINDOW",
    "AdaptiveTuning",
    "ClassState",
    "Failover",
    "FailoverStore",
    "FileStore",
    "Held",
    "Inheritance",
    "MemoryStore",
    "Pacer",
    "PacingDir",
    "PacingDirError",
    "Returning",
    "StateStore",
    "StoreUnavailable",
    "Verdict",
    "await_send",
    "budget_id",
    "count_late",
    "default_pacing_dir",
    "dir_problem",
    "effective_rate",
    "file_problem",
    "hosts_seen",
    "inherit",
    "is_implausible",
    "merge_grants",
    "net_count",
    "note_host",
    "note_sent",
    "note_success",
    "note_throttled",
    "note_unsent",
    "relax_idle",
    "try_grant",
    "window_count",
]
