"""Run-time settings of the emulator, shared by the CLI and in-process embedding."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Sizes follow the one rule of syncd.units (the emulator CLI's --max-bytes reads them).
from syncd.units import parse_size as parse_size

DEFAULT_API_KEY = "sk-emulator"
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_BYTES = 100 * 1024**3

# Per-class request ceilings (requests per sliding second). The seed page states 20 QPS for
# upload/retrieve/list and 10 QPS for delete; newer pages state upload 3 QPS and one shared
# 10 QPS budget for get+list+delete.
RATE_PROFILES: dict[str, dict[str, int]] = {
    "seed": {"upload": 20, "read": 20, "delete": 10},
    "newer": {"upload": 3, "read": 10, "delete": 10},
}

# Whose content downloads the emulator serves (see EmulatorSettings.content_download).
CONTENT_DOWNLOAD = ("any", "provider")


@dataclass
class EmulatorSettings:
    data_dir: Path = field(default_factory=lambda: Path("emulator-data"))
    api_keys: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8765
    max_files: int = DEFAULT_MAX_FILES
    max_bytes: int = DEFAULT_MAX_BYTES
    rate_profile: str = "seed"
    # None means "use the profile's value".
    upload_rate: int | None = None
    read_rate: int | None = None
    delete_rate: int | None = None
    rate_limit: bool = True
    retry_after: bool = False
    fault_5xx: float = 0.0
    fault_429: float = 0.0
    latency_ms: float = 0.0
    # Bytes per second at which upload bodies are read, over one link shared by every
    # connection (0: as fast as they come; see link.py).
    bandwidth: float = 0.0
    jitter_ms: float = 0.0
    drop_before: float = 0.0
    drop_after_store: float = 0.0
    # Fraction of the entries of each list page left out (the cursor still passes them).
    fault_list_omit: float = 0.0
    # 404 (OpenAI-shaped) or 400 with a bare {"detail": ...} body for unknown file ids.
    unknown_id_status: int = 404
    # Added to the emulator's clock: `created_at`, expiry and the `Date` header.
    clock_offset_s: float = 0.0
    # List and upload responses are sent at this many bytes per second (0: at once),
    # headers first.
    fault_trickle_list: float = 0.0
    fault_trickle_upload: float = 0.0
    # `Retry-After` of injected 429s (None: 1 with `retry_after`, else none).
    fault_429_retry_after: int | None = None
    # Fraction of uploads refused with a 400 once their body is read (nothing stored).
    fault_reject_upload: float = 0.0
    # Error bodies and headers echo the request's Authorization header, as some gateways do.
    fault_echo_auth: bool = False
    # Seconds each batch job spends in each status (validating, in_progress, finalizing,
    # cancelling) before it moves on.
    batch_step_s: float = 1.0
    # Seconds a file attached to a vector store stays in_progress before it is processed.
    vs_step_s: float = 1.0
    # Fraction of new batch jobs that expire (seeded) instead of completing.
    batch_expire: float = 0.0
    # "any": content of every file is served; "provider": only what the provider serves
    # (DashScope: batch output files; OpenAI: not assistants, vision or user_data files).
    content_download: str = "any"
    # Fraction of content responses cut off halfway (the connection is closed).
    fault_truncate_content: float = 0.0
    # "dashscope" or "openai"; fixed for the life of the server.
    flavor: str = "dashscope"
    seed: int | None = None
    log_level: str = "warning"

    def effective_api_keys(self) -> list[str]:
        return list(self.api_keys) if self.api_keys else [DEFAULT_API_KEY]

    def effective_rates(self) -> dict[str, int]:
        """Limit per request class.

        Under the ``newer`` profile read and delete share one bucket, so both report the same
        number: an explicit read rate wins, then an explicit delete rate, then the profile's.
        """
        rates = dict(RATE_PROFILES[self.rate_profile])
        if self.rate_profile == "newer":
            shared = self.read_rate or self.delete_rate or rates["read"]
            rates["read"] = rates["delete"] = shared
        else:
            if self.read_rate is not None:
                rates["read"] = self.read_rate
            if self.delete_rate is not None:
                rates["delete"] = self.delete_rate
        if self.upload_rate is not None:
            rates["upload"] = self.upload_rate
        return rates

    def buckets(self) -> dict[str, str]:
        """Map request class -> limiter bucket name."""
        if self.rate_profile == "newer":
            return {"upload": "upload", "read": "read+delete", "delete": "read+delete"}
        return {"upload": "upload", "read": "read", "delete": "delete"}
