"""The pacer's state in Redis: one budget per call class for every host on the key.

The provider's limits are per account, so hosts that share a key must share their
pacing. Each class's :class:`~syncd.api.pacing_state.ClassState` lives in one Redis
hash, ``syncd:<key fingerprint>:pacing:<class>`` (the fingerprint, never the key), as
the same JSON the file store keeps, with a version number.

An update is optimistic and atomic, in Lua on the server:

- ``READ`` returns the state, its version and Redis's ``TIME`` in one round trip.
  ``TIME`` is the common clock: host clocks differ, Redis's is one for all.
- the pacer's pure rules (:mod:`syncd.api.pacing_rules`: ``try_grant``,
  ``note_throttled``, ...) run here on that state and time, the same code as on one
  host;
- ``COMMIT`` writes the new state only if the version is still the one read (no
  other host changed it meanwhile), else returns the fresher state and time, and
  the rules run again on it. A deferral changes nothing and costs one round trip; a
  grant costs two. Two hosts can therefore never both take the last slot of a window.

The 429 back-off (rate, estimate, pause, evidence) is part of that state, so one
host's 429 slows every host.

Each grant also notes, in the same state, which budget it went to (a host's pacing
folder, named by :func:`~syncd.api.pacing_store.budget_id`; never a name or an
address), so every host knows which others paced lately.

Any Redis error (refused, timed out, authentication, a reply we cannot parse) is
:class:`~syncd.api.pacing_store.StoreUnavailable`: the pacer then serves from its
local store (see :class:`~syncd.api.pacing_failover.Failover`), starting from the
window it last read here (its grants and the other hosts') and at ``1 / fleet_size``
of the ceiling, or less when more hosts paced here lately. When Redis answers again,
the grants made meanwhile are added to the window here, and the share holds a little
longer, until the other hosts are back too.
Sockets time out after ``timeout`` seconds and are never retried by the client
itself, so an unreachable Redis costs one caller that long, never a stall.

The URL may carry a password (``redis://:PASSWORD@host:6379/0``) and TLS
(``rediss://``); a password file is used when the URL has none. Neither is ever
logged: :func:`describe` gives the URL without its credentials.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from syncd.api.byte_pacer import BUCKET
from syncd.api.models import CallClass
from syncd.api.pacer import Pacer
from syncd.api.pacing_failover import Failover
from syncd.api.pacing_state import CALL_CLASSES, MAX_STATE_BYTES, ClassState
from syncd.api.pacing_store import Held, StoreUnavailable

if TYPE_CHECKING:
    import redis

T = TypeVar("T")

SCHEMES = ("redis", "rediss", "unix")
# Idle pacing state decays towards the ceiling anyway; an hour-old one is dropped.
STATE_TTL_MS = 3_600_000
# Each failed commit means another host committed: N contenders settle in N rounds.
MAX_ROUNDS = 200

_READ = """
local t = redis.call('TIME')
local r = redis.call('HMGET', KEYS[1], 's', 'v')
return {t[1], t[2], r[1] or '', r[2] or '0'}
"""

_COMMIT = """
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v == ARGV[1] then
  redis.call('HSET', KEYS[1], 's', ARGV[2], 'v', tostring(tonumber(v) + 1))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1}
end
local t = redis.call('TIME')
return {0, t[1], t[2], redis.call('HGET', KEYS[1], 's') or '', v}
"""


def check_url(url: str) -> str | None:
    """Why ``url`` cannot name a Redis server, or None. Never quotes the URL (it may
    hold a password)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a URL"
    if parts.scheme not in SCHEMES:
        return "must be a redis://, rediss:// or unix:// URL"
    if parts.scheme != "unix" and not parts.hostname:
        return "names no host"
    if parts.scheme == "unix" and not parts.path:
        return "names no socket path"
    return None


def describe(url: str) -> str:
    """The URL without user or password: fit for logs and status."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def connect(url: str, *, password_file: Path | None = None, timeout: float = 0.5) -> redis.Redis:
    """A client for ``url`` that fails fast: no client-side retries, ``timeout``
    seconds to connect and per reply. Connects lazily (a Redis that is down at start
    is a fallback, not an error)."""
    # Imported here: a tenth of a second of start-up, and only `limits.shared` needs it.
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    problem = check_url(url)
    if problem is not None:
        raise ValueError(f"limits.shared {problem}")
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "health_check_interval": 0,
    }
    if password_file is not None and urlsplit(url).password is None:
        try:
            options["password"] = password_file.read_text().strip()
        except OSError as exc:
            raise ValueError(
                f"limits.shared_credential_file cannot be read: {exc.strerror or exc}"
            ) from None
    client: redis.Redis = redis.Redis.from_url(url, **options)
    return client


def _time(secs: Any, micros: Any) -> float:
    return int(secs) + int(micros) / 1e6


def _parse(raw: bytes) -> ClassState:
    if not raw or len(raw) > MAX_STATE_BYTES:
        return ClassState()
    try:
        return ClassState.from_json(raw.decode())
    except (ValueError, TypeError, UnicodeDecodeError):
        return ClassState()  # a stranger's or a broken write: rebuilt, never obeyed


class RedisStore:
    """One class's pacing state in Redis (see the module doc)."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        from redis import RedisError  # loaded already: the client is redis's

        self._errors = (RedisError, ValueError, TypeError, IndexError)
        self._key = key
        self._read = client.register_script(_READ)
        self._commit = client.register_script(_COMMIT)

    def update(self, fn: Callable[[Held], T], clock: Callable[[], float]) -> T:
        try:
            secs, micros, raw, version = self._read(keys=[self._key])
            for _ in range(MAX_ROUNDS):
                state = _parse(raw)
                result = fn(Held(state, _time(secs, micros), clock="shared"))
                data = state.to_json().encode()
                if data == raw:
                    return result
                reply = self._commit(keys=[self._key], args=[version, data, STATE_TTL_MS])
                if int(reply[0]) == 1:
                    return result
                _, secs, micros, raw, version = reply
        except self._errors as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        raise StoreUnavailable(f"no commit after {MAX_ROUNDS} rounds of contention")

    def close(self) -> None:
        pass  # the connection belongs to whoever made the client


def stores(client: redis.Redis, key_fingerprint: str) -> Mapping[CallClass, RedisStore]:
    return {
        cls: RedisStore(client, f"syncd:{key_fingerprint}:pacing:{cls}") for cls in CALL_CLASSES
    }


def share_pacer(
    pacer: Pacer,
    client: redis.Redis,
    key_fingerprint: str,
    *,
    fleet_size: int,
    url: str = "",
    retry_s: float = 1.0,
) -> Failover:
    """Make ``pacer`` pace through Redis, falling back to its own stores at a share of
    the ceiling (``1 / fleet_size`` at most) while Redis is unreachable."""
    return pacer.share_through(
        stores(client, key_fingerprint),
        fleet_size=fleet_size,
        retry_s=retry_s,
        name=describe(url) if url else "redis",
        # The upload byte bucket, when there is one, beside the classes' state.
        bytes_shared=RedisStore(client, f"syncd:{key_fingerprint}:pacing:{BUCKET}"),
    )


def join(
    pacer: Pacer,
    url: str,
    key_fingerprint: str,
    *,
    fleet_size: int,
    password_file: Path | None = None,
) -> Callable[[], None]:
    """Wire ``limits.shared`` into a client's pacer; returns the closer of the connection.

    Raises ValueError (naming the config key, never the URL) for a URL that is not
    Redis's or an unreadable password file; an unreachable server is not an error."""
    client = connect(url, password_file=password_file)
    share_pacer(pacer, client, key_fingerprint, fleet_size=fleet_size, url=url)
    return client.close
