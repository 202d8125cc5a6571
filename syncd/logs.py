"""structlog set-up: JSON lines under systemd (or when asked), console lines otherwise.

Every event passes a redaction step last, so a secret that slipped into an
event (an exception text, say, or a value nested in a field) is masked before it is
written, by the same rule as errors from the network (:mod:`syncd.api.scrub`: every
API key the process holds, in any spelling, and runs of its characters).

The daemon writes every upload, delete and refusal as one info line in every mode,
so it says the same on a terminal as in the journal. A one-off command, which ends
with a summary (and on a terminal shows a live bar with the names it handles), keeps
per-file lines at debug level on the console (``-v``); in JSON they stay at info.
Lines are written to whatever ``sys.stderr`` is at that moment, so a live progress
display that redirects stderr keeps them above itself instead of tearing it.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import os
import sys
import threading
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import structlog  # loaded without rich by the command: see syncd._startup

from syncd import events
from syncd.api import scrub

if TYPE_CHECKING:
    from syncd.config import LoggingConfig

# Set from the command line (-q, -v, --log-format); they win over the config file.
_override_format: str | None = None
_override_level: str | None = None
_every_file = False


# The handler configure() put on the root logger (replaced by the next call).
_handler: logging.Handler | None = None



def set_overrides(fmt: str | None = None, level: str | None = None) -> None:
    """Command-line choices, applied by every later :func:`configure`."""
    global _override_format, _override_level
    _override_format, _override_level = fmt, level


def show_every_file() -> None:
    """One info line per file on the console too (the daemon: it has no summary)."""
    global _every_file
    _every_file = True


def quiet() -> bool:
    """``-q`` was given: errors only, no progress display."""
    return _override_level == "error"


class _CurrentStderr:
    """A file that writes to ``sys.stderr`` as it is at each write (see the module doc)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _per_file_at_debug(debug: bool) -> Callable[..., MutableMapping[str, Any]]:
    def processor(
        _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        shown = debug or _every_file
        if not shown and event.get("event") in events.PER_FILE and event.get("level") == "info":
            raise structlog.DropEvent
        return event

    return processor


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="seconds") + "Z"
    return value


def _plain_values(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Values as a reader and a JSON parser want them: an exit code as its number, a
    time as ISO 8601 in UTC, never a Python repr."""
    for key, value in list(event.items()):
        event[key] = _plain(value)
    return event


def add_secret(value: str) -> None:
    """Mask ``value`` in every line from now on (values under 6 characters are not)."""
    scrub.register(value)


def _masked(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub.scrub(value)
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {_masked(k, depth + 1): _masked(v, depth + 1) for k, v in value.items()}
    if type(value) in (list, tuple, set, frozenset):
        return type(value)(_masked(v, depth + 1) for v in value)
    return value


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        event[key] = _masked(value)
    return event


def use_json(fmt: str) -> bool:
    if fmt != "auto":
        return fmt == "json"
    # Only the journal wants JSON by default: a redirected or piped run stays readable.
    return "INVOCATION_ID" in os.environ or "JOURNAL_STREAM" in os.environ


class RotatingFile:
    """A log file rotated by size (``name.1`` the newest of ``backups`` old ones) at
    line boundaries, and reopened on request (SIGHUP: logrotate moved it). Thread-safe:
    the worker, the scheduler and the main thread all log."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self._open()

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        return os.fdopen(fd, "a", encoding="utf-8", errors="replace")

    def write(self, text: str) -> int:
        with self._lock:
            if self._fh.tell() + len(text) > self.max_bytes and self._fh.tell() > 0:
                self._rotate()
            n = self._fh.write(text)
            self._fh.flush()
            return n

    def flush(self) -> None:
        with self._lock:
            self._fh.flush()

    def reopen(self) -> None:
        with self._lock:
            self._fh.close()
            self._fh = self._open()

    def _rotate(self) -> None:
        self._fh.close()
        if self.backups:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fh = self._open()


# The log file lines go to (logging.file), if any: reopened by reopen().
_file: RotatingFile | None = None


def reopen() -> None:
    """Reopen the log file (after logrotate moved it); nothing without one."""
    if _file is not None:
        _file.reopen()


def configure_from(config: LoggingConfig) -> None:
    """Configure as a project's ``logging`` section says."""
    configure(config.format, config.level, file=config.file, max_bytes=config.file_max_bytes,
              backups=config.file_backups)  # fmt: skip


def _renderer(fmt: str, *, colors: bool) -> Any:
    """The last step: one JSON object per line, or a console line for people."""
    if use_json(fmt):
        return structlog.processors.JSONRenderer(ensure_ascii=False)
    # Exceptions arrive as text (format_exc_info): no pretty formatter is wanted.
    return structlog.dev.ConsoleRenderer(
        colors=colors, exception_formatter=structlog.dev.plain_traceback
    )


def _foreign_handler(stream: TextIO, shared: list[Any], renderer: Any) -> logging.Handler:
    """Lines from watchdog, APScheduler, uvicorn and Python's warnings come out in the
    same format (one JSON object per line under systemd), redacted the same way."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    return handler


def configure(
    fmt: str = "auto",
    level: str = "info",
    *,
    file: Path | None = None,
    max_bytes: int = 10 * 1024**2,
    backups: int = 5,
) -> None:
    global _handler, _file
    fmt = _override_format or fmt
    level = _override_level or level
    numeric = getattr(logging, level.upper(), logging.INFO)
    stream: TextIO = _CurrentStderr()  # type: ignore[assignment]
    if file is not None:
        if _file is None or _file.path != file:
            _file = RotatingFile(file, max_bytes, backups)
        _file.max_bytes, _file.backups = max_bytes, backups
        stream = _file  # type: ignore[assignment]
        fmt = "console" if fmt == "auto" else fmt  # a file for people, as rclone's
    for noisy in ("httpx", "httpcore", "apscheduler", "uvicorn", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    # What every line goes through, syncd's own events and the standard library's alike.
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _plain_values,
        _redact,
    ]
    renderer = _renderer(fmt, colors=file is None and sys.stderr.isatty())
    own: list[Any] = [*shared]
    if not use_json(fmt):
        own.append(_per_file_at_debug(numeric <= logging.DEBUG))
    structlog.configure(
        processors=[*own, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = _foreign_handler(stream, shared, renderer)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler
    logging.captureWarnings(True)
