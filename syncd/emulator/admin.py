"""``/_emulator``: the loopback-only control API (health, stats, reset, every live file
and job, expiry, and the settings a test may switch mid-run)."""

from __future__ import annotations

import math
from typing import Any

from anyio import to_thread
from starlette.responses import Response

from . import errors
from .call import Call, read_json
from .core import AppCore
from .settings import CONTENT_DOWNLOAD, RATE_PROFILES, EmulatorSettings

ADMIN_PREFIX = "/_emulator"
LOOPBACK = ("127.", "::1", "::ffff:127.")


class AdminRoutes(AppCore):
    async def _admin(self, call: Call, sub: str) -> Response:
        client = call.scope.get("client")
        host = client[0] if client else ""
        if not (host == "::1" or host.startswith(LOOPBACK)):
            raise errors.ApiError(403, "The emulator control API is only served on loopback.")
        method = call.scope["method"]
        if sub == "/health" and method == "GET":
            return self._json(call, {"status": "ok"})
        if sub == "/stats" and method == "GET":
            snapshot = self.stats.snapshot()
            snapshot["accounts"] = await to_thread.run_sync(self._accounts_usage)
            snapshot["upload_body_bytes"] = self.link.received
            return self._json(call, snapshot)
        if sub == "/reset" and method == "POST":
            self.stats.reset()
            self.limiter.reset()
            return self._json(call, {"reset": True})
        if sub == "/files" and method == "GET":
            if self.batches.due():
                await to_thread.run_sync(self.batches.advance)
            live = await to_thread.run_sync(self.store.live_files)
            return self._json(call, {"accounts": {
                acc[:12]: [self._file_json(r) for r in records]
                for acc, records in sorted(live.items())}})
        if sub == "/batches" and method == "GET":
            if self.batches.due():
                await to_thread.run_sync(self.batches.advance)
            everything = await to_thread.run_sync(self.batches.everything)
            return self._json(call, {"accounts": {
                acc[:12]: batches for acc, batches in sorted(everything.items())}})
        if sub == "/expire" and method == "POST":
            body = await read_json(call.receive)
            ids = body.get("ids") if isinstance(body, dict) else None
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise errors.bad_request("Expected {\"ids\": [file ids]}.")
            return self._json(call, {"expired": await to_thread.run_sync(self.store.expire, ids)})
        if sub == "/config" and method in ("GET", "POST"):
            if method == "POST":
                body = await read_json(call.receive)
                self.apply_config(body)
            return self._json(call, self.config_view())
        raise errors.ApiError(404, f"Unknown path {ADMIN_PREFIX}{sub}.", code="not_found")

    def _accounts_usage(self) -> dict[str, dict[str, int]]:
        usage = self.store.all_usage()
        for account in self._accounts.values():
            usage.setdefault(account, (0, 0))
        return {acc[:12]: {"files": n, "bytes": b} for acc, (n, b) in sorted(usage.items())}

    def config_view(self) -> dict[str, Any]:
        s = self.settings
        return {
            "fault_5xx": s.fault_5xx, "fault_429": s.fault_429,
            "latency_ms": s.latency_ms, "jitter_ms": s.jitter_ms,
            "drop_before": s.drop_before, "drop_after_store": s.drop_after_store,
            "retry_after": s.retry_after, "rate_limit": s.rate_limit,
            "rate_profile": s.rate_profile, "rates": s.effective_rates(),
            "max_files": s.max_files, "max_bytes": s.max_bytes, "seed": s.seed,
            "fault_list_omit": s.fault_list_omit, "unknown_id_status": s.unknown_id_status,
            "clock_offset_s": s.clock_offset_s, "flavor": s.flavor,
            "fault_trickle_list": s.fault_trickle_list,
            "fault_trickle_upload": s.fault_trickle_upload,
            "fault_429_retry_after": s.fault_429_retry_after,
            "fault_reject_upload": s.fault_reject_upload, "fault_echo_auth": s.fault_echo_auth,
            "batch_step_s": s.batch_step_s, "batch_expire": s.batch_expire,
            "content_download": s.content_download,
            "fault_truncate_content": s.fault_truncate_content,
        }

    def apply_config(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise errors.bad_request("Config must be a JSON object.")
        with self._config_lock:
            _apply_config(self.settings, body)
            if "batch_step_s" in body:
                self.batches.step_changed()
            if "seed" in body:
                self.dice.reseed(self.settings.seed)


def _apply_config(s: EmulatorSettings, body: dict[str, Any]) -> None:
    """Validate everything first so a bad request changes nothing."""
    updates: dict[str, Any] = {}
    try:
        _numbers(body, updates)
        _switches(body, updates)
        _rates(body, updates)
        _choices(s, body, updates)
    except (TypeError, ValueError) as exc:
        raise errors.bad_request(f"Invalid config value: {exc}") from None
    for name, value in updates.items():
        setattr(s, name, value)


FRACTIONS_AND_DELAYS = ("fault_5xx", "fault_429", "latency_ms", "jitter_ms", "drop_before",
                        "drop_after_store", "fault_list_omit", "fault_reject_upload",
                        "batch_expire", "fault_truncate_content")


def _numbers(body: dict[str, Any], updates: dict[str, Any]) -> None:
    """Fractions (0-1), delays (>= 0 ms), rates and steps (finite, >= 0), counts."""
    for name in FRACTIONS_AND_DELAYS:
        if name in body:
            value = float(body[name])
            if value < 0 or (not name.endswith("_ms") and value > 1):
                raise ValueError(name)
            updates[name] = value
    for name in ("fault_trickle_list", "fault_trickle_upload", "batch_step_s"):
        if name in body:
            value = float(body[name])
            if not 0 <= value < math.inf:
                raise ValueError(name)
            updates[name] = value
    if "fault_429_retry_after" in body:
        raw = body["fault_429_retry_after"]
        if raw is not None and int(raw) < 0:
            raise ValueError("fault_429_retry_after")
        updates["fault_429_retry_after"] = None if raw is None else int(raw)
    for name in ("max_files", "max_bytes"):
        if name in body:
            updates[name] = int(body[name])
    if "seed" in body:
        updates["seed"] = None if body["seed"] is None else int(body["seed"])
    if "clock_offset_s" in body:
        offset = float(body["clock_offset_s"])
        if not math.isfinite(offset):
            raise ValueError("clock_offset_s")
        updates["clock_offset_s"] = offset


def _switches(body: dict[str, Any], updates: dict[str, Any]) -> None:
    for name in ("retry_after", "rate_limit", "fault_echo_auth"):
        if name in body:
            value = body[name]
            updates[name] = value if isinstance(value, bool) else str(value) == "on"


def _rates(body: dict[str, Any], updates: dict[str, Any]) -> None:
    if "rate_profile" in body:
        if body["rate_profile"] not in RATE_PROFILES:
            raise ValueError("rate_profile")
        updates["rate_profile"] = body["rate_profile"]
        # A new profile starts from its own defaults unless rates come with it.
        updates.update(upload_rate=None, read_rate=None, delete_rate=None)
    for cls, value in (body.get("rates") or {}).items():
        if cls not in ("upload", "read", "delete") or int(value) < 1:
            raise ValueError(f"rates.{cls}")
        updates[f"{cls}_rate"] = int(value)


def _choices(s: EmulatorSettings, body: dict[str, Any], updates: dict[str, Any]) -> None:
    if "unknown_id_status" in body:
        if int(body["unknown_id_status"]) not in (400, 404):
            raise ValueError("unknown_id_status must be 404 or 400")
        updates["unknown_id_status"] = int(body["unknown_id_status"])
    if "content_download" in body:
        if body["content_download"] not in CONTENT_DOWNLOAD:
            raise ValueError("content_download must be 'any' or 'provider'")
        updates["content_download"] = body["content_download"]
    # Ids, the URL prefix and stored files follow the flavour: it is fixed at start.
    if "flavor" in body and body["flavor"] != s.flavor:
        raise ValueError("flavor is fixed when the emulator starts")
