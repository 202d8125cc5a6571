"""YAML -> typed, validated configuration.

Every error names the file, the line and the dotted key, because a daemon that
refuses to start must say exactly what to fix. Unknown keys are errors: a typo
such as ``delete_remtoe`` would otherwise silently keep the default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import yaml

D = TypeVar("D")
V = TypeVar("V")

EMBEDDED = "embedded"

FILE_EXTRACT_EXTENSIONS = (
    "txt", "docx", "pdf", "xlsx", "epub", "mobi", "md", "csv", "json",
    "bmp", "png", "jpg", "jpeg", "gif",
)  # fmt: skip

DEFAULT_EXCLUDE = ("*.part", "*.tmp", "~$*", ".*", "**/.*/**")


class ConfigError(Exception):
    """Raised when the configuration file cannot be read or is invalid.
    The message names the file, line and key."""


@dataclass(frozen=True)
class PurposeRule:
    patterns: tuple[str, ...]
    purpose: Literal["file-extract", "batch", "skip"]


DEFAULT_PURPOSES = (
    PurposeRule(("*.jsonl",), "batch"),
    PurposeRule(tuple(f"*.{e}" for e in FILE_EXTRACT_EXTENSIONS), "file-extract"),
)


@dataclass(frozen=True)
class ApiConfig:
    base_url: str = EMBEDDED
    api_key_env: str | None = "DASHSCOPE_API_KEY"
    api_key_file: Path | None = None
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    write_timeout_s: float = 120.0
    embedded_port: int = 8765

    @property
    def embedded(self) -> bool:
        return self.base_url == EMBEDDED


@dataclass(frozen=True)
class LimitsConfig:
    upload_qps: float = 20.0
    read_qps: float = 20.0
    delete_qps: float = 10.0
    workers: int = 8
    max_files: int = 10_000
    max_bytes: int = 100 * 1024**3
    headroom_files: int = 0
    headroom_bytes: int = 0
    pacing_dir: Path | None = None


@dataclass(frozen=True)
class RulesConfig:
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    purposes: tuple[PurposeRule, ...] = DEFAULT_PURPOSES


@dataclass(frozen=True)
class MaxDelete:
    """A cap on deletes per run: an absolute count, or a share of tracked files."""

    count: int | None = None
    percent: float | None = 50.0

    def limit(self, tracked: int) -> int:
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return int(tracked * self.percent / 100)

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


@dataclass(frozen=True)
class SyncConfig:
    delete_remote: bool = True
    max_delete: MaxDelete = field(default_factory=MaxDelete)
    marker: str | None = None
    settle_s: float = 2.0
    max_settle_s: float = 60.0


@dataclass(frozen=True)
class WatchConfig:
    mode: Literal["auto", "inotify", "polling"] = "auto"
    poll_interval_s: float = 5.0


@dataclass(frozen=True)
class ReconcileConfig:
    interval_s: float | None = 3600.0
    cron: str | None = None


@dataclass(frozen=True)
class DaemonConfig:
    shutdown_timeout_s: float = 30.0
    max_pending: int = 20_000
    publish_interval_s: float = 2.0


@dataclass(frozen=True)
class LoggingConfig:
    format: Literal["auto", "json", "console"] = "auto"
    level: str = "info"


@dataclass(frozen=True)
class Config:
    project: str
    root: Path
    state_dir: Path
    mapping_file: Path
    source: Path | None = None
    api: ApiConfig = field(default_factory=ApiConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# ---------------------------------------------------------------- reading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_LEVELS = ("debug", "info", "warning", "error", "critical")


class _Node:
    """A YAML mapping with its location, read key by key; leftovers are unknown keys."""

    def __init__(self, node: yaml.MappingNode, where: str, source: str, base: Path) -> None:
        self._source = source
        self._where = where
        self._base = base
        self._node = node
        self._items: dict[str, yaml.Node] = {}
        self._keys: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in self._items:
                raise self._error(key_node, self._dotted(key), "duplicate key")
            self._items[key] = value_node
            self._keys[key] = key_node

    def _dotted(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _error(self, node: yaml.Node, key: str, message: str) -> ConfigError:
        line = node.start_mark.line + 1
        return ConfigError(f"{self._source}:{line}: {key}: {message}")

    def _scalar(self, key: str) -> tuple[yaml.Node, str] | None:
        node = self._items.pop(key, None)
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            return None
        if not isinstance(node, yaml.ScalarNode):
            raise self._error(node, self._dotted(key), "expected a single value")
        return node, self._interpolate(node, key, str(node.value))

    def _interpolate(self, node: yaml.Node, key: str, text: str) -> str:
        def sub(m: re.Match[str]) -> str:
            value = os.environ.get(m.group(1))
            if value is None:
                if m.group(2) is None:
                    raise self._error(
                        node, self._dotted(key), f"environment variable {m.group(1)} is not set"
                    )
                return m.group(2)
            return value

        return _VAR.sub(sub, text)

    def _convert(self, key: str, default: D, convert: Callable[[str], V], what: str) -> V | D:
        got = self._scalar(key)
        if got is None:
            return default
        node, text = got
        try:
            return convert(text)
        except (ValueError, TypeError) as exc:
            detail = f" ({exc})" if str(exc) and not str(exc).startswith("could not") else ""
            raise self._error(
                node, self._dotted(key), f"expected {what}, got {text!r}{detail}"
            ) from None

    def string(self, key: str, default: D) -> str | D:
        return self._convert(key, default, _nonempty, "a non-empty string")

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        def pick(text: str) -> str:
            if text.lower() not in choices:
                raise ValueError(f"one of {', '.join(choices)}")
            return text.lower()

        return self._convert(key, default, pick, f"one of {', '.join(choices)}")

    def number(self, key: str, default: D, *, minimum: float = 0.0) -> float | D:
        def conv(text: str) -> float:
            value = float(text)
            if value < minimum:
                raise ValueError(f"must be at least {minimum:g}")
            return value

        return self._convert(key, default, conv, "a number")

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        def conv(text: str) -> int:
            value = int(text)
            if value < minimum:
                raise ValueError(f"must be at least {minimum}")
            return value

        return self._convert(key, default, conv, "a whole number")

    def size(self, key: str, default: int) -> int:
        return self._convert(key, default, parse_size, "a size such as 500MB or 100GB")

    def boolean(self, key: str, default: bool) -> bool:
        def conv(text: str) -> bool:
            low = text.lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            raise ValueError("true or false")

        return self._convert(key, default, conv, "true or false")

    def path(self, key: str, default: Path | None) -> Path | None:
        return self._convert(key, default, lambda t: self._base / Path(t).expanduser(), "a path")

    def require(self, key: str) -> yaml.Node:
        if key not in self._items:
            raise ConfigError(
                f"{self._source}:{self._node.start_mark.line + 1}: {self._dotted(key)}: required"
            )
        return self._items[key]

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        node = self._items.pop(key, None)
        if node is None:
            return default
        if isinstance(node, yaml.ScalarNode) and not node.tag.endswith(":null"):
            return (self._interpolate(node, key, str(node.value)),)
        if not isinstance(node, yaml.SequenceNode):
            raise self._error(node, self._dotted(key), "expected a list of strings")
        out = []
        for item in node.value:
            if not isinstance(item, yaml.ScalarNode) or not str(item.value):
                raise self._error(item, self._dotted(key), "expected a list of strings")
            out.append(self._interpolate(item, key, str(item.value)))
        return tuple(out)

    def section(self, key: str) -> _Node:
        node = self._items.pop(key, None)
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            node = yaml.MappingNode("tag:yaml.org,2002:map", [], self._node.start_mark)
        if not isinstance(node, yaml.MappingNode):
            raise self._error(node, self._dotted(key), "expected a mapping")
        return _Node(node, self._dotted(key), self._source, self._base)

    def sequence(self, key: str) -> list[_Node] | None:
        node = self._items.pop(key, None)
        if node is None:
            return None
        if not isinstance(node, yaml.SequenceNode):
            raise self._error(node, self._dotted(key), "expected a list")
        out = []
        for i, item in enumerate(node.value):
            if not isinstance(item, yaml.MappingNode):
                raise self._error(item, f"{self._dotted(key)}[{i}]", "expected a mapping")
            out.append(_Node(item, f"{self._dotted(key)}[{i}]", self._source, self._base))
        return out

    def error(self, key: str, message: str) -> ConfigError:
        node = self._keys.get(key, self._node)
        return self._error(node, self._dotted(key), message)

    def done(self) -> None:
        for key in self._items:
            raise self._error(self._keys[key], self._dotted(key), "unknown key")


def _nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("empty")
    return text


def parse_size(text: str | int) -> int:
    """``500MB``/``100GB``/``1.5GiB``/plain bytes -> bytes (binary multiples)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError("not a size")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def _max_delete(text: str) -> MaxDelete:
    text = text.strip()
    if text.endswith("%"):
        pct = float(text[:-1])
        if not 0 <= pct <= 100:
            raise ValueError("a percentage from 0% to 100%")
        return MaxDelete(percent=pct)
    count = int(text)
    if count < 0:
        raise ValueError("must be at least 0")
    return MaxDelete(count=count, percent=None)


def load_config(path: Path) -> Config:
    """Read and validate one project's YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, source=str(path), base=path.resolve().parent)


def parse_config(text: str, *, source: str = "<config>", base: Path | None = None) -> Config:
    base = base or Path.cwd()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{line}invalid YAML: {problem}") from None
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{source}:1: the file must be a mapping of keys")
    top = _Node(node, "", source, base)

    project = top.string("project", None)
    if project is None:
        top.require("project")
    root = top.path("root", None)
    if root is None:
        top.require("root")
    state_dir = top.path("state_dir", None)
    if state_dir is None:
        top.require("state_dir")
    assert project is not None and root is not None and state_dir is not None
    mapping_file = top.path("mapping_file", None) or state_dir / "mapping.json"

    api = _api(top.section("api"))
    limits = _limits(top.section("limits"))
    rules = _rules(top.section("rules"))
    sync = _sync(top.section("sync"))
    watch_node = top.section("watch")
    watch = WatchConfig(
        mode=watch_node.choice("mode", "auto", ("auto", "inotify", "polling")),  # type: ignore[arg-type]
        poll_interval_s=watch_node.number("poll_interval_s", 5.0, minimum=0.1),
    )
    watch_node.done()
    reconcile = _reconcile(top.section("reconcile"))
    daemon_node = top.section("daemon")
    daemon = DaemonConfig(
        shutdown_timeout_s=daemon_node.number("shutdown_timeout_s", 30.0),
        max_pending=daemon_node.integer("max_pending", 20_000, minimum=1),
        publish_interval_s=daemon_node.number("publish_interval_s", 2.0, minimum=0.0),
    )
    daemon_node.done()
    log_node = top.section("logging")
    logging_cfg = LoggingConfig(
        format=log_node.choice("format", "auto", ("auto", "json", "console")),  # type: ignore[arg-type]
        level=log_node.choice("level", "info", _LEVELS),
    )
    log_node.done()
    top.done()
    return Config(
        project=project,
        root=root,
        state_dir=state_dir,
        mapping_file=mapping_file,
        source=Path(source) if source != "<config>" else None,
        api=api,
        limits=limits,
        rules=rules,
        sync=sync,
        watch=watch,
        reconcile=reconcile,
        daemon=daemon,
        logging=logging_cfg,
    )


def _api(n: _Node) -> ApiConfig:
    base_url = n.string("base_url", EMBEDDED).rstrip("/")
    if base_url != EMBEDDED and not re.match(r"^https?://", base_url):
        raise n.error("base_url", f"expected 'embedded' or an http(s) URL, got {base_url!r}")
    key_env = n.string("api_key_env", None)
    key_file = n.path("api_key_file", None)
    if key_env is not None and key_file is not None:
        raise n.error("api_key_file", "set api_key_env or api_key_file, not both")
    cfg = ApiConfig(
        base_url=base_url,
        api_key_env=key_env if key_file is None else None,
        api_key_file=key_file,
        connect_timeout_s=n.number("connect_timeout_s", 10.0, minimum=0.1),
        read_timeout_s=n.number("read_timeout_s", 120.0, minimum=0.1),
        write_timeout_s=n.number("write_timeout_s", 120.0, minimum=0.1),
        embedded_port=n.integer("embedded_port", 8765, minimum=1),
    )
    if key_env is None and key_file is None:
        cfg = ApiConfig(**{**cfg.__dict__, "api_key_env": "DASHSCOPE_API_KEY"})
    n.done()
    return cfg


def _limits(n: _Node) -> LimitsConfig:
    cfg = LimitsConfig(
        upload_qps=n.number("upload_qps", 20.0, minimum=0.1),
        read_qps=n.number("read_qps", 20.0, minimum=0.1),
        delete_qps=n.number("delete_qps", 10.0, minimum=0.1),
        workers=n.integer("workers", 8, minimum=1),
        max_files=n.integer("max_files", 10_000, minimum=1),
        max_bytes=n.size("max_bytes", 100 * 1024**3),
        headroom_files=n.integer("headroom_files", 0),
        headroom_bytes=n.size("headroom_bytes", 0),
        pacing_dir=n.path("pacing_dir", None),
    )
    n.done()
    return cfg


def _rules(n: _Node) -> RulesConfig:
    include = n.strings("include", ("**",))
    exclude = n.strings("exclude", DEFAULT_EXCLUDE)
    items = n.sequence("purposes")
    purposes: tuple[PurposeRule, ...] = DEFAULT_PURPOSES
    if items is not None:
        rules = []
        for item in items:
            patterns = item.strings("match", ())
            if not patterns:
                raise item.error("match", "required: one glob or a list of globs")
            purpose = item.choice("purpose", "", ("file-extract", "batch", "skip"))
            if not purpose:
                raise item.error("purpose", "required: file-extract, batch or skip")
            item.done()
            rules.append(PurposeRule(patterns, purpose))  # type: ignore[arg-type]
        purposes = tuple(rules)
    n.done()
    return RulesConfig(include=include, exclude=exclude, purposes=purposes)


def _sync(n: _Node) -> SyncConfig:
    settle = n.number("settle_s", 2.0)
    cfg = SyncConfig(
        delete_remote=n.boolean("delete_remote", True),
        max_delete=n._convert("max_delete", MaxDelete(), _max_delete, "a count or a percentage"),
        marker=n.string("marker", None),
        settle_s=settle,
        max_settle_s=n.number("max_settle_s", max(60.0, settle)),
    )
    if cfg.max_settle_s < cfg.settle_s:
        raise n.error("max_settle_s", "must be at least settle_s")
    n.done()
    return cfg


def _reconcile(n: _Node) -> ReconcileConfig:
    interval = n.number("interval_s", None, minimum=1.0)
    cron = n.string("cron", None)
    if cron is not None:
        if interval is not None:
            raise n.error("cron", "set interval_s or cron, not both")
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(cron)
        except ValueError as exc:
            raise n.error("cron", f"not a valid 5-field crontab line: {exc}") from None
        n.done()
        return ReconcileConfig(interval_s=None, cron=cron)
    n.done()
    return ReconcileConfig(interval_s=interval if interval is not None else 3600.0)
