"""YAML -> typed, validated configuration.

Every key is described once, in ``KEYS``: its type, default, range or choices,
whether SIGHUP can apply it, and a one-line doc. The reader, the dataclass
defaults and the reload rules all come from that table.

Every error names the file, the line and the dotted key, and all errors of a file
are reported in one pass, because a daemon that refuses to start must say exactly
what to fix. Unknown keys are errors (with a "did you mean"): a typo such as
``delete_remtoe`` would otherwise silently keep the default.

Values taken from ``${VAR}`` are never echoed in messages, only the text as
written: a variable may hold a secret.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from wcmatch import glob

from syncd.api.providers import DEFAULT_PROVIDER, PROVIDERS, SKIP, Provider, PurposeSpec, SizeCap

EMBEDDED = "embedded"
DEFAULT_KEY_ENV = PROVIDERS[DEFAULT_PROVIDER].key_env

DEFAULT_EXCLUDE = ("*.part", "*.tmp", "~$*", ".*", "**/.*/**")


class ConfigError(Exception):
    """The configuration file cannot be read or is invalid.

    ``problems`` lists every problem found, each ``file:line: key: message``."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems:\n" + "\n".join(f"  {p}" for p in self.problems)


@dataclass(frozen=True)
class PurposeRule:
    patterns: tuple[str, ...]
    # One of the provider's purposes, or "skip".
    purpose: str
    # What the provider accepts for this purpose (its profile's checks), so whoever
    # holds the rule can check a file locally without knowing the provider.
    accepts: PurposeSpec = field(default_factory=PurposeSpec)


def with_checks(
    rules: Sequence[PurposeRule], provider: Provider, max_file_bytes: int | None = None
) -> tuple[PurposeRule, ...]:
    """The rules, each carrying what the provider accepts for its purpose, plus the
    project's own cap (``rules.max_file_bytes``)."""
    out = []
    for rule in rules:
        spec = provider.spec(rule.purpose)
        if max_file_bytes is not None:
            cap = SizeCap(max_file_bytes, "this project (rules.max_file_bytes)")
            spec = dataclasses.replace(spec, caps=(*spec.caps, cap))
        out.append(PurposeRule(rule.patterns, rule.purpose, spec))
    return tuple(out)


def default_purposes(provider: Provider) -> tuple[PurposeRule, ...]:
    rules = [PurposeRule(globs, purpose) for globs, purpose in provider.default_purposes]
    return with_checks(rules, provider)


DEFAULT_PURPOSES = default_purposes(PROVIDERS[DEFAULT_PROVIDER])


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


# ---------------------------------------------------------------- the keys

Kind = Literal[
    "string", "choice", "number", "integer", "size", "bool", "path", "url", "env_name",
    "globs", "purposes", "max_delete", "cron", "address", "store_url",
]  # fmt: skip

_DAY = 86_400.0


@dataclass(frozen=True)
class Key:
    """One configuration key: everything the reader, the defaults and reload need."""

    name: str  # dotted: "limits.upload_qps"
    kind: Kind
    default: Any
    doc: str
    reload: bool = False  # SIGHUP applies it without a restart
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # the minimum itself is excluded (rates and timeouts: > 0)
    choices: tuple[str, ...] = ()
    required: bool = False
    # A ${VAR} it names may be unset: the file holds a secret only some commands read
    # (systemd's ${CREDENTIALS_DIRECTORY} exists inside the unit only), so the command
    # that reads it says so, and an admin's `syncd status` runs.
    unset_ok: bool = False


KEYS: tuple[Key, ...] = (
    Key("project", "string", None, "name of the project, written into the mapping", required=True),
    Key("root", "path", None, "the folder to mirror (only read)", required=True),
    Key("state_dir", "path", None, "state (SQLite), lock and embedded emulator data",
        required=True),
    Key("mapping_file", "path", None, "published path -> file_id map (state_dir/mapping.json)"),
    Key("api.provider", "choice", DEFAULT_PROVIDER, "whose Files API: dashscope, openai or generic",
        choices=tuple(PROVIDERS)),
    Key("api.base_url", "url", EMBEDDED, "'embedded' or the provider's compatible-mode URL"),
    Key("api.api_key_env", "env_name", DEFAULT_KEY_ENV, "name of the variable holding the key"),
    Key("api.api_key_file", "path", None, "file holding the key (systemd credentials)",
        unset_ok=True),
    Key("api.connect_timeout_s", "number", 10.0, "seconds to connect",
        minimum=0, above=True, maximum=600),
    Key("api.read_timeout_s", "number", 120.0, "seconds per read of a response",
        minimum=0, above=True, maximum=3600),
    Key("api.write_timeout_s", "number", 120.0, "seconds per write of a request",
        minimum=0, above=True, maximum=3600),
    Key("api.embedded_port", "integer", 8765, "port of the embedded emulator",
        minimum=1, maximum=65535),
    Key("api.list_page_size", "integer", None, "files per list page (the provider's default)",
        minimum=1),
    Key("limits.upload_qps", "number", 20.0, "uploads per second", minimum=0, above=True,
        maximum=10_000),
    Key("limits.read_qps", "number", 20.0, "retrieves and lists per second", minimum=0,
        above=True, maximum=10_000),
    Key("limits.delete_qps", "number", 10.0, "deletes per second", minimum=0, above=True,
        maximum=10_000),
    Key("limits.workers", "integer", 8, "parallel uploads/deletes", minimum=1, maximum=256),
    Key("limits.max_files", "integer", 10_000, "the account's file quota", minimum=1),
    Key("limits.max_bytes", "size", 100 * 1024**3, "the account's storage quota", minimum=1),
    Key("limits.headroom_files", "integer", 0, "files left free for other tools", minimum=0),
    Key("limits.headroom_bytes", "size", 0, "bytes left free for other tools", minimum=0),
    Key("limits.pacing_dir", "path", None, "folder of the shared pacing state"),
    Key("limits.shared", "store_url", None,
        "redis:// (or rediss://) URL of the store every host on the key shares"),
    Key("limits.shared_credential_file", "path", None,
        "file holding the password of limits.shared (when its URL has none)", unset_ok=True),
    Key("limits.fleet_size", "integer", 1,
        "hosts on the key: each gets 1/fleet_size while limits.shared is down",
        minimum=1, maximum=10_000),
    Key("rules.include", "globs", ("**",), "globs of files to sync", reload=True),
    Key("rules.exclude", "globs", DEFAULT_EXCLUDE, "globs of files never synced", reload=True),
    Key("rules.purposes", "purposes", DEFAULT_PURPOSES, "purpose by glob, first match wins",
        reload=True),
    Key("rules.max_file_bytes", "size", None, "files larger than this are not synced",
        reload=True, minimum=1),
    Key("sync.delete_remote", "bool", True, "delete the remote copy of a removed file"),
    Key("sync.max_delete", "max_delete", MaxDelete(), "most deletes per run: count or %"),
    Key("sync.marker", "string", None, "file that must exist in root, or nothing is done"),
    Key("sync.dedupe", "bool", True, "identical content of one purpose shares a remote file"),
    Key("sync.refresh_before_expiry_s", "number", 86_400.0,
        "re-upload a file of ours this long before the provider expires it", minimum=0,
        maximum=7 * _DAY),
    Key("sync.settle_s", "number", 2.0, "quiet seconds before a changed file is acted on",
        reload=True, minimum=0, maximum=_DAY),
    Key("sync.max_settle_s", "number", 60.0, "longest wait for a file that keeps changing",
        reload=True, minimum=0, maximum=_DAY),
    Key("watch.mode", "choice", "auto", "auto, inotify or polling", reload=True,
        choices=("auto", "inotify", "polling")),
    Key("watch.poll_interval_s", "number", 5.0, "seconds between polls", reload=True,
        minimum=0.1, maximum=3600),
    Key("reconcile.interval_s", "number", 3600.0, "seconds between full reconciles",
        reload=True, minimum=1, maximum=30 * _DAY),
    Key("reconcile.cron", "cron", None, "5-field crontab line instead of interval_s",
        reload=True),
    Key("daemon.shutdown_timeout_s", "number", 30.0, "seconds in-flight work may take on stop",
        reload=True, minimum=0, above=True, maximum=3600),
    Key("daemon.max_pending", "integer", 20_000, "queued changes before a rescan instead",
        reload=True, minimum=1, maximum=10_000_000),
    Key("daemon.publish_interval_s", "number", 2.0, "least seconds between mapping publishes",
        reload=True, minimum=0, maximum=3600),
    Key("daemon.metrics", "address", None, "HOST:PORT of the Prometheus metrics (off if unset)"),
    Key("logging.format", "choice", "auto", "auto, json or console", reload=True,
        choices=("auto", "json", "console")),
    Key("logging.level", "choice", "info", "debug, info, warning, error or critical",
        reload=True, choices=("debug", "info", "warning", "error", "critical")),
)  # fmt: skip

SCHEMA: Mapping[str, Key] = {k.name: k for k in KEYS}
SECTIONS = ("api", "limits", "rules", "sync", "watch", "reconcile", "daemon", "logging")
# The globs' dialect: validated here with the flags the rules are matched with.
GLOB_FLAGS = glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB | glob.IGNORECASE


def reloadable_keys() -> frozenset[str]:
    """Dotted keys a SIGHUP applies live; a change to any other needs a restart."""
    return frozenset(k.name for k in KEYS if k.reload)


def value_of(config: Config, key: str) -> object:
    """The value of a dotted key in a loaded config."""
    obj: object = config
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys whose value differs between two configs, in table order."""
    return [k.name for k in KEYS if value_of(old, k.name) != value_of(new, k.name)]


def needs_restart(old: Config, new: Config) -> list[str]:
    """Dotted keys that differ between two configs but that a SIGHUP cannot apply."""
    live = reloadable_keys()
    return [name for name in changed_keys(old, new) if name not in live]


# Defaults as the dataclasses below take them (subscripts, so the table stays the one source).
_D: Mapping[str, Any] = {k.name: k.default for k in KEYS}


# ---------------------------------------------------------------- the typed config


@dataclass(frozen=True)
class ApiConfig:
    provider: str = _D["api.provider"]
    base_url: str = _D["api.base_url"]
    api_key_env: str | None = _D["api.api_key_env"]
    api_key_file: Path | None = _D["api.api_key_file"]
    connect_timeout_s: float = _D["api.connect_timeout_s"]
    read_timeout_s: float = _D["api.read_timeout_s"]
    write_timeout_s: float = _D["api.write_timeout_s"]
    embedded_port: int = _D["api.embedded_port"]
    list_page_size: int | None = _D["api.list_page_size"]

    @property
    def embedded(self) -> bool:
        return self.base_url == EMBEDDED

    @property
    def profile(self) -> Provider:
        """The provider profile, with the configured list page size."""
        return PROVIDERS[self.provider].with_page_size(self.list_page_size)


@dataclass(frozen=True)
class LimitsConfig:
    upload_qps: float = _D["limits.upload_qps"]
    read_qps: float = _D["limits.read_qps"]
    delete_qps: float = _D["limits.delete_qps"]
    workers: int = _D["limits.workers"]
    max_files: int = _D["limits.max_files"]
    max_bytes: int = _D["limits.max_bytes"]
    headroom_files: int = _D["limits.headroom_files"]
    headroom_bytes: int = _D["limits.headroom_bytes"]
    pacing_dir: Path | None = _D["limits.pacing_dir"]
    shared: str | None = _D["limits.shared"]
    shared_credential_file: Path | None = _D["limits.shared_credential_file"]
    fleet_size: int = _D["limits.fleet_size"]


@dataclass(frozen=True)
class RulesConfig:
    include: tuple[str, ...] = _D["rules.include"]
    exclude: tuple[str, ...] = _D["rules.exclude"]
    purposes: tuple[PurposeRule, ...] = _D["rules.purposes"]
    max_file_bytes: int | None = _D["rules.max_file_bytes"]


@dataclass(frozen=True)
class SyncConfig:
    delete_remote: bool = _D["sync.delete_remote"]
    max_delete: MaxDelete = _D["sync.max_delete"]
    marker: str | None = _D["sync.marker"]
    dedupe: bool = _D["sync.dedupe"]
    refresh_before_expiry_s: float = _D["sync.refresh_before_expiry_s"]
    settle_s: float = _D["sync.settle_s"]
    max_settle_s: float = _D["sync.max_settle_s"]


@dataclass(frozen=True)
class WatchConfig:
    mode: Literal["auto", "inotify", "polling"] = _D["watch.mode"]
    poll_interval_s: float = _D["watch.poll_interval_s"]


@dataclass(frozen=True)
class ReconcileConfig:
    interval_s: float | None = _D["reconcile.interval_s"]
    cron: str | None = _D["reconcile.cron"]


@dataclass(frozen=True)
class DaemonConfig:
    shutdown_timeout_s: float = _D["daemon.shutdown_timeout_s"]
    max_pending: int = _D["daemon.max_pending"]
    publish_interval_s: float = _D["daemon.publish_interval_s"]
    metrics: str | None = _D["daemon.metrics"]


@dataclass(frozen=True)
class LoggingConfig:
    format: Literal["auto", "json", "console"] = _D["logging.format"]
    level: str = _D["logging.level"]


_SECTION_TYPES: Mapping[str, type] = {
    "api": ApiConfig, "limits": LimitsConfig, "rules": RulesConfig, "sync": SyncConfig,
    "watch": WatchConfig, "reconcile": ReconcileConfig, "daemon": DaemonConfig,
    "logging": LoggingConfig,
}  # fmt: skip


@dataclass(frozen=True)
class Origin:
    """Where each key was written, so later checks (the preflight) can name file and line,
    and the text as written of values taken from ``${VAR}``, which are never echoed."""

    source: str = "<config>"
    lines: Mapping[str, int] = field(default_factory=dict)
    written: Mapping[str, str] = field(default_factory=dict)

    def at(self, key: str) -> str:
        """``file:line: key``; a key left to its default is placed at its section."""
        line = self.lines.get(key) or self.lines.get(key.rpartition(".")[0]) or 1
        return f"{self.source}:{line}: {key}"

    def shown(self, key: str, value: object) -> str:
        """The value as a message may show it: the written text when it was interpolated."""
        return self.written.get(key, str(value))


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
    origin: Origin = field(default_factory=Origin, compare=False, repr=False)


class WrittenPath(PosixPath):
    """A path that remembers the text it was written as (before ``${VAR}`` expansion),
    so that messages about it, such as ``ApiKey.load``'s, name it without the expansion."""

    as_written: str | None = None


# ---------------------------------------------------------------- reading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_NON_FINITE = ("inf", "infinity", "nan", ".inf", ".nan")


class _Invalid(ValueError):
    """A value that cannot be used; ``echo`` says whether the message may quote it."""

    def __init__(self, message: str, *, echo: bool = True) -> None:
        super().__init__(message)
        self.echo = echo


def parse_size(text: str | int) -> int:
    """``500MB``/``100GB``/``1.5GiB``/plain bytes -> bytes (binary multiples)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError("not a size")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def glob_problem(pattern: str) -> str | None:
    """Why a glob is malformed, or None. wcmatch reads an unclosed ``[`` or ``{`` as a
    literal character, so ``[abc`` would silently match only a file named ``[abc``."""
    if not pattern:
        return "an empty pattern"
    i, depth, n = 0, 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] not in "]/":
                j += 2 if pattern[j] == "\\" else 1
            if j >= n or pattern[j] != "]":
                return "unclosed [ (write \\[ for a literal bracket)"
            i = j + 1
            continue
        if c == "{":
            depth += 1
        elif c == "}" and depth:
            depth -= 1
        i += 1
    if depth:
        return "unclosed { (write \\{ for a literal brace)"
    try:
        glob.compile(pattern, flags=GLOB_FLAGS)
    except Exception as exc:  # wcmatch's own refusals, e.g. too many brace expansions
        return str(exc) or type(exc).__name__
    return None


def parse_max_delete(text: str) -> MaxDelete:
    """``N`` or ``P%``: the rule of ``sync.max_delete`` and of a one-run override."""
    text = text.strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            pct = math.nan
        if not 0 <= pct <= 100:  # also refuses nan
            raise _Invalid("expected a percentage from 0% to 100%")
        return MaxDelete(percent=pct)
    try:
        count = int(text)
    except ValueError:
        raise _Invalid("expected a count such as 100 or a percentage such as 50%") from None
    if count < 0:
        raise _Invalid("must be at least 0")
    return MaxDelete(count=count, percent=None)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _Invalid("expected HOST:PORT such as 127.0.0.1:9464")
    return host, int(port_text)


def _in_range(key: Key, value: float) -> float:
    if key.minimum is not None:
        if key.above and not value > key.minimum:
            raise _Invalid(f"must be more than {key.minimum:g}")
        if value < key.minimum:
            raise _Invalid(f"must be at least {key.minimum:g}")
    if key.maximum is not None and value > key.maximum:
        raise _Invalid(f"must be at most {key.maximum:g}")
    return value


def _number(key: Key, text: str) -> float:
    if text.strip().lower().lstrip("+-") in _NON_FINITE:
        raise _Invalid("must be a finite number")
    try:
        value = float(text)
    except ValueError:
        raise _Invalid("expected a number") from None
    if not math.isfinite(value):
        raise _Invalid("must be a finite number")
    return _in_range(key, value)


def _integer(key: Key, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _Invalid("expected a whole number") from None
    _in_range(key, value)
    return value


def _size(key: Key, text: str) -> int:
    try:
        value = parse_size(text)
    except ValueError:
        raise _Invalid("expected a size such as 500MB or 100GB") from None
    _in_range(key, value)
    return value


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "yes", "on", "1"):
        return True
    if low in ("false", "no", "off", "0"):
        return False
    raise _Invalid("expected true or false")


def _url(text: str) -> str:
    url = text.strip().rstrip("/")
    if url != EMBEDDED and not re.match(r"^https?://[^/\s]+", url):
        raise _Invalid("expected 'embedded' or an http(s) URL")
    if url != EMBEDDED:
        _host_and_port(url)
    return url


def _host_and_port(url: str) -> None:
    """A URL's host and port as a client will read them: a bad port or an unclosed
    ``[`` is found here, not at the first connection."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise _Invalid(f"is not a usable URL ({exc})", echo=False) from None
    if port == 0:
        raise _Invalid("is not a usable URL (port 0)", echo=False)


_STORE_SCHEMES = ("redis", "rediss", "unix")


def _store_url(text: str) -> str:
    """``limits.shared``: a Redis URL. Never echoed: it may hold a password."""
    url = text.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in _STORE_SCHEMES:
        raise _Invalid("must be a redis://, rediss:// or unix:// URL", echo=False)
    _host_and_port(url)
    parts = urlsplit(url)
    if scheme != "unix" and not parts.hostname:
        raise _Invalid("names no host", echo=False)
    if scheme == "unix" and not parts.path:
        raise _Invalid("names no socket path", echo=False)
    return url


def _env_name(text: str) -> str:
    if not _ENV_NAME.match(text):
        # Never echoed: a key pasted here by mistake must not reach the journal.
        raise _Invalid(
            "must be the name of an environment variable (letters, digits and _), "
            "not the key itself",
            echo=False,
        )
    return text


def _cron(text: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(text)
    except ValueError as exc:
        raise _Invalid(f"not a valid 5-field crontab line ({exc})") from None
    return text


def _choice(key: Key, text: str) -> str:
    if text.lower() not in key.choices:
        raise _Invalid(f"expected one of {', '.join(key.choices)}")
    return text.lower()


def _string(text: str) -> str:
    if not text.strip():
        raise _Invalid("expected a non-empty string")
    return text


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Absent:
    """A key whose value was invalid: its problem is recorded, its default is not used."""


_BAD = _Absent()


class _Reader:
    def __init__(
        self,
        source: str,
        base: Path,
        key_vars: frozenset[str],
        key_file_secrets: frozenset[str] = frozenset(),
    ) -> None:
        self.source = source
        self.base = base
        self.problems: list[tuple[int, str]] = []
        self.values: dict[str, object] = {}
        self.lines: dict[str, int] = {}
        self.written: dict[str, str] = {}
        self.suggested: set[str] = set()
        # Line of each rules.purposes[i].purpose, so the provider check can name it.
        self.purpose_lines: dict[int, int] = {}
        # Variables holding an API key, and their values, and the key api_key_file holds:
        # interpolating any of them is refused, whichever source the key is read from.
        self.key_vars = key_vars
        self.key_file_secrets = key_file_secrets
        self.secrets = {v for n in key_vars if (v := os.environ.get(n, "").strip())}
        self.secrets |= key_file_secrets

    def problem(self, line: int, key: str, message: str) -> None:
        self.problems.append((line, f"{self.source}:{line}: {key}: {message}"))

    # ---- walking the mappings

    def walk(self, node: yaml.MappingNode, section: str) -> None:
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value)
            dotted = f"{section}.{name}" if section else name
            line = _line(key_node)
            if name in seen:
                self.problem(line, dotted, f"duplicate key (first on line {seen[name]})")
                continue
            seen[name] = line
            if not section and name in SECTIONS:
                if _is_null(value_node):
                    continue
                if not isinstance(value_node, yaml.MappingNode):
                    self.problem(line, dotted, "expected a mapping of keys")
                    continue
                self.lines[name] = line
                self.walk(value_node, name)
            elif dotted in SCHEMA:
                self.lines[dotted] = line
                self.read(SCHEMA[dotted], value_node, line)
            else:
                self.unknown(line, dotted, name, section)

    def unknown(self, line: int, dotted: str, name: str, section: str) -> None:
        here = [k.name for k in KEYS if k.name.rpartition(".")[0] == section]
        if not section:
            here += list(SECTIONS)
        leaves = {k.rpartition(".")[2]: k for k in here}
        import difflib  # only a config with a typo pays for it

        close = difflib.get_close_matches(name, list(leaves), n=1, cutoff=0.6)
        if close:
            self.suggested.add(leaves[close[0]])
            self.problem(line, dotted, f"unknown key; did you mean {close[0]}?")
            return
        elsewhere = [k.name for k in KEYS if k.name.rpartition(".")[2] == name]
        if elsewhere:
            self.problem(line, dotted, f"unknown key here; it belongs at {elsewhere[0]}")
            return
        self.problem(line, dotted, "unknown key")

    # ---- values

    def expand(self, node: yaml.ScalarNode, key: str) -> str | None:
        """``${VAR}`` and ``${VAR:-default}`` replaced; None (and a problem) when not."""
        text = str(node.value)
        failed = False
        unset: list[str] = []

        def sub(m: re.Match[str]) -> str:
            nonlocal failed
            name, fallback = m.group(1), m.group(2)
            value = os.environ.get(name)
            if name in self.key_vars or (value and value.strip() in self.secrets):
                failed = True
                from_file = (value or "").strip() in self.key_file_secrets
                instead = (
                    "it is read from api.api_key_file"
                    if from_file
                    else f"name the variable instead (api_key_env: {name})"
                )
                self.problem(
                    _line(node), key,
                    f"${{{name}}} holds the API key, which must not be copied into the "
                    f"configuration; {instead}",
                )  # fmt: skip
                return ""
            if value is None:
                if fallback is None and key in SCHEMA and SCHEMA[key].unset_ok:
                    unset.append(name)
                    return m.group(0)  # a path that cannot exist; its reader names why
                if fallback is None:
                    failed = True
                    self.problem(_line(node), key, f"environment variable {name} is not set")
                    return ""
                return fallback
            return value

        out = _VAR.sub(sub, text)
        if failed:
            return None
        if unset:
            self.written[key] = f"{text} ({', '.join(unset)} not set)"
        elif out != text:
            self.written[key] = text
        return out

    def read(self, key: Key, node: yaml.Node, line: int) -> None:
        if _is_null(node):
            if key.required:
                self.problem(line, key.name, "required, but empty")
                self.values[key.name] = _BAD
            return
        if key.kind == "globs":
            self.values[key.name] = self.glob_list(key.name, node)
        elif key.kind == "purposes":
            self.values[key.name] = self.purposes(key.name, node)
        else:
            self.values[key.name] = self.read_one(key, node)

    def read_one(self, key: Key, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(_line(node), key.name, "expected a single value, not a list or mapping")
            return _BAD
        return self.scalar(key, node)

    def scalar(self, key: Key, node: yaml.ScalarNode) -> object:
        text = self.expand(node, key.name)
        if text is None:
            return _BAD
        try:
            return self.convert(key, text)
        except _Invalid as exc:
            got = f", got {node.value!r}" if exc.echo else ""
            self.problem(_line(node), key.name, f"{exc}{got}")
            return _BAD

    def convert(self, key: Key, text: str) -> object:
        kind = key.kind
        if kind == "number":
            return _number(key, text)
        if kind == "integer":
            return _integer(key, text)
        if kind == "size":
            return _size(key, text)
        if kind == "bool":
            return _bool(text)
        if kind == "choice":
            return _choice(key, text)
        if kind == "url":
            return _url(text)
        if kind == "store_url":
            return _store_url(text)
        if kind == "env_name":
            return _env_name(text)
        if kind == "cron":
            return _cron(_string(text))
        if kind == "max_delete":
            return parse_max_delete(text)
        if kind == "address":
            parse_address(text)
            return text.strip()
        if kind == "path":
            path = WrittenPath(self.base / Path(_string(text)).expanduser())
            path.as_written = self.written.get(key.name)
            return path
        return _string(text)

    def glob_list(self, key: str, node: yaml.Node) -> tuple[str, ...] | _Absent:
        items = [node] if isinstance(node, yaml.ScalarNode) else None
        if isinstance(node, yaml.SequenceNode):
            items = list(node.value)
        if items is None:
            self.problem(_line(node), key, "expected a glob or a list of globs")
            return _BAD
        out: list[str] = []
        ok = True
        for item in items:
            if not isinstance(item, yaml.ScalarNode) or _is_null(item):
                self.problem(_line(item), key, "expected a glob or a list of globs")
                ok = False
                continue
            text = self.expand(item, key)
            if text is None:
                ok = False
                continue
            why = glob_problem(text)
            if why is not None:
                self.problem(_line(item), key, f"invalid glob {item.value!r}: {why}")
                ok = False
            out.append(text)
        return tuple(out) if ok else _BAD

    def purposes(self, key: str, node: yaml.Node) -> tuple[PurposeRule, ...] | _Absent:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(_line(node), key, "expected a list of {match, purpose} rules")
            return _BAD
        rules: list[PurposeRule] = []
        ok = True
        for i, item in enumerate(node.value):
            where = f"{key}[{i}]"
            if not isinstance(item, yaml.MappingNode):
                self.problem(_line(item), where, "expected a mapping with match and purpose")
                ok = False
                continue
            fields = {str(k.value): (k, v) for k, v in item.value}
            meant: set[str] = set()
            for name, (k, _v) in fields.items():
                if name not in ("match", "purpose"):
                    import difflib  # only a config with a typo pays for it

                    close = difflib.get_close_matches(name, ["match", "purpose"], n=1)
                    meant.update(close)
                    hint = f"; did you mean {close[0]}?" if close else ""
                    self.problem(_line(k), f"{where}.{name}", f"unknown key{hint}")
                    ok = False
            given = {n: v for n, (_k, v) in fields.items() if not _is_null(v)}
            patterns: tuple[str, ...] | _Absent = _BAD
            if "match" in given:
                patterns = self.glob_list(f"{where}.match", given["match"])
            elif "match" not in meant:
                self.problem(_line(item), f"{where}.match", "required: a glob or a list of globs")
            purpose: object = _BAD
            if "purpose" in given:
                # Which purposes are allowed depends on api.provider: checked across keys.
                text = Key(f"{where}.purpose", "string", None, "")
                purpose = self.read_one(text, given["purpose"])
                self.purpose_lines[i] = _line(given["purpose"])
            elif "purpose" not in meant:
                self.problem(_line(item), f"{where}.purpose",
                             "required: one of the provider's purposes, or skip")  # fmt: skip
            if isinstance(patterns, _Absent) or isinstance(purpose, _Absent):
                ok = False
                continue
            rules.append(PurposeRule(patterns, str(purpose)))
        return tuple(rules) if ok else _BAD


# ---------------------------------------------------------------- checks across keys


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _creatable(parent: Path) -> bool:
    """Whether a folder can be made in ``parent``: tried, then removed, because
    ``os.access`` says yes to root even on /proc or a read-only mount."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".syncd-probe-", dir=parent))
    except OSError:
        return False
    return True


def _folder_problem(path: Path, interpolated: bool) -> str | None:
    """Why a folder syncd must create or write into is unusable, or None."""
    if path.exists():
        return None if path.is_dir() else "is not a folder"
    parent = _nearest_existing(path)
    if parent.is_dir() and _creatable(parent):
        return None
    where = "a parent folder" if interpolated else str(parent)
    what = "is not a folder" if not parent.is_dir() else "is not writable"
    return f"cannot be created: {where} {what}"


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


def _cross_checks(r: _Reader, got: Callable[[str], Any]) -> None:
    def line(key: str) -> int:
        return r.lines.get(key) or r.lines.get(key.rpartition(".")[0]) or 1

    both = got("api.api_key_env") is not None and got("api.api_key_file") is not None
    if both and "api.api_key_env" in r.lines:
        r.problem(line("api.api_key_file"), "api.api_key_file",
                      "set api_key_env or api_key_file, not both")  # fmt: skip

    settle, max_settle = got("sync.settle_s"), got("sync.max_settle_s")
    if None not in (settle, max_settle) and "sync.max_settle_s" in r.lines and max_settle < settle:
        r.problem(line("sync.max_settle_s"), "sync.max_settle_s", "must be at least settle_s")

    if got("reconcile.cron") is not None and "reconcile.interval_s" in r.lines:
        r.problem(line("reconcile.cron"), "reconcile.cron", "set interval_s or cron, not both")

    _provider_checks(r, got, line)

    root = got("root")
    bad: set[str] = set()
    if root is not None:
        # Anything syncd writes inside the root would be uploaded by syncd in a loop.
        for key in ("state_dir", "mapping_file", "limits.pacing_dir"):
            path = got(key)
            if path is not None and _inside(path, root):
                bad.add(key)
                r.problem(
                    line(key), key,
                    "is inside root, so syncd would upload its own files in a loop; "
                    "move it out of the mirrored folder",
                )  # fmt: skip
    for key in ("state_dir", "limits.pacing_dir"):
        folder = got(key)
        why = None if folder is None or key in bad else _folder_problem(folder, key in r.written)
        if why:
            r.problem(line(key), key, why)
    mapping = got("mapping_file")
    if mapping is not None and "mapping_file" not in bad:
        if mapping.is_dir():
            r.problem(line("mapping_file"), "mapping_file", "is a folder; name a file")
        elif why := _folder_problem(mapping.parent, "mapping_file" in r.written):
            folder = "its folder" if "mapping_file" in r.written else str(mapping.parent)
            r.problem(line("mapping_file"), "mapping_file", f"{folder} {why}")


def _provider_checks(r: _Reader, got: Callable[[str], Any], line: Callable[[str], int]) -> None:
    """What api.provider allows: its purposes, its list page sizes, its endpoint."""
    name = got("api.provider")
    if name is None:
        return
    profile = PROVIDERS[name]
    # Left out, the purposes are the provider's defaults (see _build).
    written = got("rules.purposes") if "rules.purposes" in r.lines else ()
    for i, rule in enumerate(written or ()):
        if not profile.allows(rule.purpose):
            allowed = ", ".join([*profile.purposes, SKIP])
            r.problem(r.purpose_lines.get(i, line("rules.purposes")),
                      f"rules.purposes[{i}].purpose",
                      f"{rule.purpose!r} is not a purpose of provider {name}; expected one of "
                      f"{allowed} (or api.provider: generic for any)")  # fmt: skip
    size = got("api.list_page_size")
    if size is not None and size > profile.list_max_page_size:
        r.problem(line("api.list_page_size"), "api.list_page_size",
                  f"must be at most {profile.list_max_page_size} for provider {name}")
    if got("api.base_url") == EMBEDDED and name != DEFAULT_PROVIDER and "api.provider" in r.lines:
        r.problem(line("api.base_url"), "api.base_url",
                  f"the embedded emulator speaks {DEFAULT_PROVIDER} only; for {name} run "
                  f"`syncd emulate --flavor openai` and set base_url to its URL")  # fmt: skip


# ---------------------------------------------------------------- entry points


def load_config(path: Path) -> Config:
    """Read and validate one project's YAML file (raises ConfigError with every problem)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None
    return parse_config(text, source=str(path), base=path.resolve().parent)


def _key_vars(node: yaml.MappingNode) -> frozenset[str]:
    """Variables that hold an API key: the default one, the one api_key_env names, and
    any it interpolates (``api_key_env: ${DASHSCOPE_API_KEY}`` is the classic slip)."""
    names = {p.key_env for p in PROVIDERS.values() if p.key_env}
    for k, v in node.value:
        if k.value == "api" and isinstance(v, yaml.MappingNode):
            for k2, v2 in v.value:
                if k2.value == "api_key_env" and isinstance(v2, yaml.ScalarNode):
                    text = str(v2.value)
                    names.update([text] if _ENV_NAME.match(text) else [])
                    names.update(m.group(1) for m in _VAR.finditer(text))
    return frozenset(names)


def _key_file_secrets(
    node: yaml.MappingNode, source: str, base: Path, key_vars: frozenset[str]
) -> frozenset[str]:
    """The keys the file(s) api_key_file names hold, read before the walk so that a value
    copying one through ``${VAR}`` is refused wherever it comes in the file. A path that
    cannot be read yields nothing here: loading the key says why."""
    found: set[str] = set()
    for k, v in node.value:
        if k.value != "api" or not isinstance(v, yaml.MappingNode):
            continue
        for k2, v2 in v.value:
            if k2.value != "api_key_file" or not isinstance(v2, yaml.ScalarNode):
                continue
            # A throwaway reader: the path is read as the walk reads it, its problems
            # are the walk's to report.
            path = _Reader(source, base, key_vars).read_one(SCHEMA["api.api_key_file"], v2)
            try:
                if isinstance(path, Path) and path.is_file():  # never a FIFO or a device
                    found.add(path.read_text("utf-8").strip())
            except (OSError, UnicodeDecodeError):
                pass
    return frozenset(found - {""})


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

    key_vars = _key_vars(node)
    r = _Reader(source, base, key_vars, _key_file_secrets(node, source, base, key_vars))
    r.walk(node, "")
    for key in KEYS:
        if key.required and key.name not in r.values and key.name not in r.suggested:
            r.problem(1, key.name, "required")

    def got(name: str) -> Any:
        """The valid value of a key (default when absent), None when it was invalid."""
        value = r.values.get(name, SCHEMA[name].default)
        return None if isinstance(value, _Absent) else value

    _cross_checks(r, got)
    if r.problems:
        r.problems.sort(key=lambda p: p[0])
        raise ConfigError([p for _line_no, p in r.problems])
    return _build(r, got, source)


def _build(r: _Reader, got: Callable[[str], Any], source: str) -> Config:
    values: dict[str, Any] = {k.name: got(k.name) for k in KEYS}
    profile = PROVIDERS[values["api.provider"]]
    # What the config leaves out, the provider's profile says.
    for key, default in (
        ("api.api_key_env", profile.key_env),
        ("limits.upload_qps", profile.rates.upload),
        ("limits.read_qps", profile.rates.read),
        ("limits.delete_qps", profile.rates.delete),
        ("limits.max_files", profile.max_files),
        ("limits.max_bytes", profile.max_bytes),
    ):
        if key not in r.lines:
            values[key] = default
    given = values["rules.purposes"] if "rules.purposes" in r.lines else default_purposes(profile)
    values["rules.purposes"] = with_checks(given, profile, values["rules.max_file_bytes"])
    if values["mapping_file"] is None:
        values["mapping_file"] = values["state_dir"] / "mapping.json"
    if values["api.api_key_file"] is not None and "api.api_key_env" not in r.lines:
        values["api.api_key_env"] = None  # the file is the one source
    if "sync.max_settle_s" not in r.lines:
        values["sync.max_settle_s"] = max(values["sync.max_settle_s"], values["sync.settle_s"])
    if values["reconcile.cron"] is not None:
        values["reconcile.interval_s"] = None  # an explicit cron wins over the default interval
    sections = {
        name: cls(**{k.rpartition(".")[2]: v for k, v in values.items()
                     if k.rpartition(".")[0] == name})
        for name, cls in _SECTION_TYPES.items()
    }  # fmt: skip
    return Config(
        project=values["project"],
        root=values["root"],
        state_dir=values["state_dir"],
        mapping_file=values["mapping_file"],
        source=Path(source) if source != "<config>" else None,
        origin=Origin(source, dict(r.lines), dict(r.written)),
        **sections,
    )
