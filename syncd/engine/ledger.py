"""The account's storage quota, shared by every host on the key.

The provider's quota (files and bytes) is per account. One host admits uploads
against its own last listing (``plan._fit_quota``); several hosts doing that at
once each see the same free space and together overrun it, and the provider then
refuses uploads after their bytes were sent. The ledger makes admission atomic
across hosts:

- ``reserve(files, bytes)`` before an upload takes a *lease* on that much of the
  account (usage + live leases must stay within the limits less headroom), or
  returns None: the file waits with status ``quota``;
- ``commit(reservation, file_id)`` on success turns the lease into usage;
  ``release(reservation)`` on failure drops it;
- a lease lives ``lease_s`` seconds and is renewed by a thread of the process
  holding it: a host that dies (SIGKILL, power) stops renewing, and its leases
  expire, freeing the space for the others;
- ``rebase(files, bytes, listed_from, listed_ids)`` after each listing resets the
  usage to the truth (every file of the account, foreign ones included), plus the
  commits made since the listing began that it did not show; ``begin_listing()``
  gives the ``listed_from`` mark (Redis's clock) to take just before listing;
- ``on_delete(bytes)`` after a confirmed delete gives the space back.

Deletes made while a listing ran are not subtracted again at rebase, and a file
committed while it was listed may count twice until the next listing: errors on
the safe side (an upload waits), never an overrun.

:class:`LocalLedger` is the single-host implementation: it admits everything (the
planner's check against the listing is the whole story there). :class:`RedisLedger`
keeps the ledger in Redis, atomically in Lua, on Redis's clock. When Redis is
unreachable it never blocks or raises: it admits against ``1 / fleet_size`` of the
free space it last saw, logs once, and reports ``mode == "fallback"``.

Where the engine calls it (one ledger per Syncer):

- ``Syncer._list_remote``: ``mark = ledger.begin_listing()`` before
  the listing (``client.iter_files()``), then ``ledger.rebase(len(files), sum(bytes), mark,
  {ids})`` with the listing;
- ``Executor._upload``: ``res = ledger.reserve(1, local.size)`` just before
  ``begin_intent`` (inside the name lock); None -> note ``quota`` with
  ``ledger.refusal(local.size)`` and return a failure that keeps no intent; after
  ``record_uploaded``: ``ledger.commit(res, remote.id)``; on any exception or
  failed result: ``ledger.release(res)``;
- ``Executor._deletes``: after ``record_deleted``: ``ledger.on_delete(bytes)``,
  the bytes of the deleted remote file (``RemoteView`` has them; 0 if unknown).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog

from syncd import events
from syncd.api.pacing import Failover
from syncd.api.pacing_redis import connect, describe
from syncd.units import human_bytes

if TYPE_CHECKING:
    import redis

log = structlog.get_logger("syncd.ledger")

Mode = Literal["local", "shared", "fallback"]

# Commits are kept this long for rebasing (longer than any listing takes).
COMMIT_KEEP_MS = 3_600_000


@dataclass(frozen=True)
class Quota:
    """The account's limits as this host may fill them (limits less headroom)."""

    max_files: int
    max_bytes: int

    @classmethod
    def of(cls, max_files: int, max_bytes: int, headroom_files: int, headroom_bytes: int) -> Quota:
        return cls(max(0, max_files - headroom_files), max(0, max_bytes - headroom_bytes))


@dataclass(frozen=True)
class Reservation:
    id: str
    files: int
    bytes: int
    # Taken from the fallback share while the shared ledger was unreachable.
    local: bool = False


def _reservation_id() -> str:
    # 128 random bits, as a uuid4 holds: ids of every host share one ledger.
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Usage:
    """The account as the ledger sees it: files and bytes stored, and in flight."""

    files: int
    bytes: int
    reserved_files: int = 0
    reserved_bytes: int = 0


class Ledger(Protocol):
    def reserve(self, files: int, nbytes: int) -> Reservation | None: ...
    def commit(self, reservation: Reservation, file_id: str) -> None: ...
    def release(self, reservation: Reservation) -> None: ...
    def begin_listing(self) -> float: ...
    def rebase(
        self, files: int, nbytes: int, listed_from: float, listed_ids: Collection[str]
    ) -> None: ...
    def on_delete(self, nbytes: int) -> None: ...
    def refusal(self, nbytes: int) -> str: ...
    @property
    def mode(self) -> Mode: ...
    def close(self) -> None: ...


class LocalLedger:
    """One host: admission is the planner's check against the listing; this admits all."""

    mode: Mode = "local"

    def reserve(self, files: int, nbytes: int) -> Reservation | None:
        return Reservation("local", files, nbytes, local=True)

    def commit(self, reservation: Reservation, file_id: str) -> None:
        pass

    def release(self, reservation: Reservation) -> None:
        pass

    def begin_listing(self) -> float:
        return 0.0

    def rebase(
        self, files: int, nbytes: int, listed_from: float, listed_ids: Collection[str]
    ) -> None:
        pass

    def on_delete(self, nbytes: int) -> None:
        pass

    def refusal(self, nbytes: int) -> str:
        return "account quota full"

    def close(self) -> None:
        pass


# KEYS of every script: usage, reserved, leases (zset id -> expiry ms), lease (hash
# id -> "files bytes"), commits (zset file_id -> ms), commit_bytes (hash file_id -> bytes).
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function expire()
  local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  for _, id in ipairs(dead) do
    local v = redis.call('HGET', KEYS[4], id)
    if v then
      local f, b = string.match(v, '(%d+) (%d+)')
      redis.call('HINCRBY', KEYS[2], 'files', -tonumber(f))
      redis.call('HINCRBY', KEYS[2], 'bytes', -tonumber(b))
      redis.call('HDEL', KEYS[4], id)
    end
  end
  if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now) end
end
local function num(key, field)
  return tonumber(redis.call('HGET', key, field) or '0')
end
"""

# ARGV: id, files, bytes, max_files, max_bytes, lease_ms, seed_files, seed_bytes
_RESERVE = (
    _PRELUDE
    + """
expire()
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'files', ARGV[7], 'bytes', ARGV[8])
end
local uf = num(KEYS[1], 'files') + num(KEYS[2], 'files')
local ub = num(KEYS[1], 'bytes') + num(KEYS[2], 'bytes')
local f, b = tonumber(ARGV[2]), tonumber(ARGV[3])
if uf + f > tonumber(ARGV[4]) or ub + b > tonumber(ARGV[5]) then
  return {0, uf, ub}
end
redis.call('HINCRBY', KEYS[2], 'files', f)
redis.call('HINCRBY', KEYS[2], 'bytes', b)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[1])
return {1, uf + f, ub + b}
"""
)

# ARGV: id (may be ''), file_id, files, bytes, keep_ms
_COMMIT = (
    _PRELUDE
    + """
expire()
if ARGV[1] ~= '' and redis.call('HDEL', KEYS[4], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[2], 'files', -tonumber(ARGV[3]))
  redis.call('HINCRBY', KEYS[2], 'bytes', -tonumber(ARGV[4]))
end
-- A file the last listing already showed (stored while its response was on the way)
-- is in the usage already: counting it again would refuse space that is free.
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('SISMEMBER', KEYS[7], ARGV[2]) == 0 then
  redis.call('HINCRBY', KEYS[1], 'files', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[4])
end
redis.call('ZADD', KEYS[5], now, ARGV[2])
redis.call('HSET', KEYS[6], ARGV[2], ARGV[4])
local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[5]))
for _, id in ipairs(old) do redis.call('HDEL', KEYS[6], id) end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[5])) end
return 1
"""
)

# ARGV: id
_RELEASE = (
    _PRELUDE
    + """
expire()
local v = redis.call('HGET', KEYS[4], ARGV[1])
if v then
  local f, b = string.match(v, '(%d+) (%d+)')
  redis.call('HINCRBY', KEYS[2], 'files', -tonumber(f))
  redis.call('HINCRBY', KEYS[2], 'bytes', -tonumber(b))
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return 1
"""
)

# ARGV: lease_ms, ids...
_RENEW = (
    _PRELUDE
    + """
expire()
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[4], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  end
end
return now
"""
)

# ARGV: files, bytes, listed_from_ms, every listed id...
_REBASE = (
    _PRELUDE
    + """
expire()
local seen = {}
redis.call('DEL', KEYS[7])
for i = 4, #ARGV do
  seen[ARGV[i]] = true
  redis.call('SADD', KEYS[7], ARGV[i])
end
local f, b = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], ARGV[3], '+inf')) do
  if not seen[id] then
    f = f + 1
    b = b + tonumber(redis.call('HGET', KEYS[6], id) or '0')
  end
end
redis.call('HSET', KEYS[1], 'files', ARGV[1], 'bytes', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'files', f)
redis.call('HINCRBY', KEYS[1], 'bytes', b)
return {num(KEYS[1], 'files'), num(KEYS[1], 'bytes')}
"""
)

# ARGV: bytes
_DELETE = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HINCRBY', KEYS[1], 'files', -1) < 0 then
    redis.call('HSET', KEYS[1], 'files', 0)
  end
  if redis.call('HINCRBY', KEYS[1], 'bytes', -tonumber(ARGV[1])) < 0 then
    redis.call('HSET', KEYS[1], 'bytes', 0)
  end
end
return 1
"""
)

_USAGE = (
    _PRELUDE
    + """
expire()
return {redis.call('EXISTS', KEYS[1]), num(KEYS[1], 'files'), num(KEYS[1], 'bytes'),
        num(KEYS[2], 'files'), num(KEYS[2], 'bytes'), now}
"""
)




class RedisLedger:
    """The ledger in Redis under ``syncd:<key fingerprint>:ledger:*`` (see the module doc).

    Thread-safe. ``lease_s`` bounds how long a dead host's reservations hold space;
    live ones are renewed every ``lease_s / 3`` by a daemon thread.
    """

    def __init__(
        self,
        client: redis.Redis,
        key_fingerprint: str,
        quota: Quota,
        *,
        fleet_size: int,
        lease_s: float = 60.0,
        retry_s: float = 1.0,
        name: str = "redis",
        owns_client: bool = False,
    ) -> None:
        from redis import RedisError  # loaded already: the client is redis's

        self._redis_error = RedisError
        prefix = f"syncd:{key_fingerprint}:ledger"
        self._keys = [
            f"{prefix}:{k}"
            for k in ("usage", "reserved", "leases", "lease", "commits", "sizes", "listed")
        ]
        self._quota = quota
        self._lease_ms = max(1, int(lease_s * 1000))
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("reserve", _RESERVE),
                ("commit", _COMMIT),
                ("release", _RELEASE),
                ("renew", _RENEW),
                ("rebase", _REBASE),
                ("delete", _DELETE),
                ("usage", _USAGE),
            )
        }
        self._client = client
        self._owns_client = owns_client
        self._health = Failover(
            fleet_size, retry_s=retry_s, name=name,
            event_names=(events.LEDGER_UNAVAILABLE, events.LEDGER_RESTORED),
        )
        self._lock = threading.Lock()
        self._live: set[str] = set()
        # What this host last saw of the account: seeds a ledger Redis lost, and sizes
        # the fallback share.
        self._seen = Usage(0, 0)
        # The fallback budget: free space at the outage / fleet_size, less what was taken.
        self._spare: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="ledger-renew", daemon=True)
        self._renewer.start()

    # ---- plumbing

    @property
    def mode(self) -> Mode:
        return self._health.mode

    def _call(self, script: str, args: list[Any]) -> Any:
        """Run a script, or raise _Down (after noting the outage) when Redis is not there."""
        if not self._health.should_try():
            raise _Down
        try:
            result = self._scripts[script](keys=self._keys, args=args)
        except self._redis_error as exc:
            self._health.failed(exc)
            raise _Down from None
        if self._health.mode == "fallback":
            with self._lock:
                self._spare = None
        self._health.succeeded()
        return result

    def _quiet(self, script: str, args: list[Any]) -> Any:
        """``_call``, or None when Redis is unreachable."""
        try:
            return self._call(script, args)
        except _Down:
            return None

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._lease_ms / 3000):
            with self._lock:
                live = sorted(self._live)
            if live:
                self._quiet("renew", [self._lease_ms, *live])

    # ---- the API

    def reserve(self, files: int, nbytes: int) -> Reservation | None:
        rid = _reservation_id()
        seed = self._seen
        args = [
            rid,
            files,
            nbytes,
            self._quota.max_files,
            self._quota.max_bytes,
            self._lease_ms,
            seed.files,
            seed.bytes,
        ]
        try:
            granted, used_files, used_bytes = self._call("reserve", args)
        except _Down:
            return self._reserve_locally(files, nbytes)
        with self._lock:
            self._seen = Usage(int(used_files), int(used_bytes))
            if int(granted) != 1:
                return None
            self._live.add(rid)
        return Reservation(rid, files, nbytes)

    def _reserve_locally(self, files: int, nbytes: int) -> Reservation | None:
        with self._lock:
            if self._spare is None:
                share = self._health.share
                free_files = max(0, self._quota.max_files - self._seen.files)
                free_bytes = max(0, self._quota.max_bytes - self._seen.bytes)
                self._spare = (int(free_files * share), int(free_bytes * share))
            spare_files, spare_bytes = self._spare
            if files > spare_files or nbytes > spare_bytes:
                return None
            self._spare = (spare_files - files, spare_bytes - nbytes)
        return Reservation(_reservation_id(), files, nbytes, local=True)

    def commit(self, reservation: Reservation, file_id: str) -> None:
        with self._lock:
            self._live.discard(reservation.id)
            self._seen = Usage(
                self._seen.files + reservation.files, self._seen.bytes + reservation.bytes
            )
        rid = "" if reservation.local else reservation.id
        # Unreachable: the next listing's rebase counts the file.
        self._quiet("commit", [rid, file_id, reservation.files, reservation.bytes, COMMIT_KEEP_MS])

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            self._live.discard(reservation.id)
            if reservation.local and self._spare is not None:
                files, nbytes = self._spare
                self._spare = (files + reservation.files, nbytes + reservation.bytes)
        if not reservation.local:
            self._quiet("release", [reservation.id])  # unreachable: the lease expires

    def begin_listing(self) -> float:
        try:
            *_, now = self._call("usage", [])
        except _Down:
            return 0.0
        return float(now)

    def rebase(
        self, files: int, nbytes: int, listed_from: float, listed_ids: Collection[str]
    ) -> None:
        with self._lock:
            self._seen = Usage(files, nbytes)
            if self._spare is not None:
                self._spare = None  # resized from the fresh listing on the next reserve
        self._quiet("rebase", [files, nbytes, int(listed_from), *listed_ids])

    def on_delete(self, nbytes: int) -> None:
        with self._lock:
            self._seen = Usage(max(0, self._seen.files - 1), max(0, self._seen.bytes - nbytes))
        self._quiet("delete", [nbytes])

    def usage(self) -> Usage | None:
        """The shared view of the account (None while Redis is unreachable or unbased)."""
        try:
            based, files, nbytes, res_files, res_bytes, _now = self._call("usage", [])
        except _Down:
            return None
        if not based:
            return None
        return Usage(int(files), int(nbytes), int(res_files), int(res_bytes))

    def refusal(self, nbytes: int) -> str:
        seen = self._seen
        where = (
            "across the hosts on this key"
            if self.mode == "shared"
            else ("(shared ledger unreachable: this host's share of the free space is used up)")
        )
        return (
            f"account quota full {where}: {seen.files}/{self._quota.max_files} files, "
            f"{human_bytes(seen.bytes)} of {human_bytes(self._quota.max_bytes)} stored or "
            f"reserved; waits until space is freed ({human_bytes(nbytes)} needed)"
        )

    def close(self) -> None:
        self._stop.set()
        self._renewer.join(timeout=5)
        with self._lock:
            live = sorted(self._live)
            self._live.clear()
        for rid in live:  # what this process still holds goes back at once
            try:
                self._call("release", [rid])
            except _Down:
                break
        if self._owns_client:
            self._client.close()


def open_ledger(
    *,
    shared: str | None,
    key_fingerprint: str,
    quota: Quota,
    fleet_size: int,
    password_file: Path | None = None,
) -> Ledger:
    """The ledger ``limits.shared`` asks for: Redis's, or the single-host one."""
    if not shared:
        return LocalLedger()
    client = connect(shared, password_file=password_file)
    return RedisLedger(
        client,
        key_fingerprint,
        quota,
        fleet_size=fleet_size,
        name=describe(shared),
        owns_client=True,
    )


class _Down(Exception):
    """Redis is unreachable (noted in the health); the caller takes its fallback."""
