"""structlog set-up: JSON lines under systemd or when not on a TTY, console otherwise.

Every event passes a redaction step last, so a secret that slipped into an
event (an exception text, say) is masked before it is written.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRETS: set[str] = set()


def add_secret(value: str) -> None:
    if len(value) >= 6:
        _SECRETS.add(value)


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _SECRETS:
        return event
    for key, value in list(event.items()):
        if isinstance(value, str):
            for secret in _SECRETS:
                if secret in value:
                    value = value.replace(secret, "***")
            event[key] = value
    return event


def use_json(fmt: str) -> bool:
    if fmt != "auto":
        return fmt == "json"
    under_systemd = "INVOCATION_ID" in os.environ or "JOURNAL_STREAM" in os.environ
    return under_systemd or not sys.stderr.isatty()


def configure(fmt: str = "auto", level: str = "info") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(name)s: %(message)s")
    logging.getLogger().setLevel(numeric)
    for noisy in ("httpx", "httpcore", "apscheduler", "uvicorn", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact,
    ]
    if use_json(fmt):
        processors.append(structlog.processors.JSONRenderer(ensure_ascii=False))
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
