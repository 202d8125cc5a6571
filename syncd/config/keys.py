"""Every configuration key, declared once, as a field of the typed config.

A key is a field of its section's dataclass (``limits.upload_qps`` is
``LimitsConfig.upload_qps``) declared with ``key()``: its kind, default, doc, bounds or
choices and whether SIGHUP applies it. The top-level keys (``project``, ``root``, …) are
fields of ``Config`` declared with ``top()``. ``KEYS`` is read off these fields, and the
reader, the defaults, ``check-config``'s did-you-mean, reload (``reloadable_keys``,
``needs_restart``) and the README's key table (``table.markdown_table``) all come
from it.
"""

# key() and section() return dataclasses.field(), as a call of field() itself would.
# ruff: noqa: RUF009

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from syncd.api.providers import DEFAULT_PROVIDER, PROVIDERS, Provider
from syncd.config.values import DEFAULT_PURPOSES, EMBEDDED, MaxDelete, PurposeRule
from syncd.config.vector_rules import VectorRule

Kind = Literal[
    "string", "choice", "number", "integer", "size", "bool", "path", "url", "env_name",
    "globs", "purposes", "max_delete", "cron", "address", "store_url", "vector_rules",
]  # fmt: skip
WatchMode = Literal["auto", "inotify", "polling"]
LogFormat = Literal["auto", "json", "console"]

DEFAULT_KEY_ENV = PROVIDERS[DEFAULT_PROVIDER].key_env
DEFAULT_EXCLUDE = ("*.part", "*.tmp", "~$*", ".*", "**/.*/**")
_DAY = 86_400.0
_KEY = "syncd.key"  # the field metadata that holds a key's declaration
_SECTION = "syncd.section"  # the field metadata of Config that holds a section's class

T = TypeVar("T")


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
    # Left out, the value is this attribute of the provider's profile ("rates.upload");
    # ``default`` is the default provider's.
    by_provider: str | None = None
    # The default in words, where the value alone says too little.
    default_text: str | None = None


def key(
    kind: Kind,
    default: T,
    doc: str,
    *,
    reload: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    above: bool = False,
    choices: tuple[str, ...] = (),
    unset_ok: bool = False,
    by_provider: str | None = None,
    default_text: str | None = None,
) -> T:
    """A key of a section: the dataclass field, its declaration in the field's metadata."""
    declared = {
        "kind": kind, "default": default, "doc": doc, "reload": reload, "minimum": minimum,
        "maximum": maximum, "above": above, "choices": choices, "unset_ok": unset_ok,
        "by_provider": by_provider, "default_text": default_text,
    }  # fmt: skip
    return field(default=default, metadata={_KEY: declared})


def top(
    kind: Kind, doc: str, *, required: bool = False, default_text: str | None = None
) -> Mapping[str, Mapping[str, Any]]:
    """The metadata that declares a top-level key, a field of ``Config`` without a
    default: the loader always sets it."""
    declared = {"kind": kind, "default": None, "doc": doc, "required": required,
                "default_text": default_text}  # fmt: skip
    return {_KEY: declared}


def section(cls: type[T]) -> T:
    """A section of ``Config``: each of its fields is a key."""
    return field(default_factory=cls, metadata={_SECTION: cls})


# ---------------------------------------------------------------- the declarations


@dataclass(frozen=True)
class ApiConfig:
    """The remote: whose Files API, where, the key's source, timeouts."""

    # fmt: off
    provider: str = key("choice", DEFAULT_PROVIDER,
                        "whose Files API; it sets the defaults marked per provider",
                        choices=tuple(PROVIDERS))
    base_url: str = key("url", EMBEDDED,
                        "the provider's compatible-mode URL, or the built-in emulator")
    api_key_env: str | None = key("env_name", DEFAULT_KEY_ENV,
                                  "name of the variable holding the key", by_provider="key_env")
    api_key_file: Path | None = key("path", None, "file holding the key, instead of api_key_env",
                                    unset_ok=True)
    connect_timeout_s: float = key("number", 10.0, "seconds to connect",
                                   minimum=0, above=True, maximum=600)
    read_timeout_s: float = key("number", 120.0, "seconds per read of a response",
                                minimum=0, above=True, maximum=3600)
    write_timeout_s: float = key("number", 120.0, "seconds per write of a request",
                                 minimum=0, above=True, maximum=3600)
    embedded_port: int = key("integer", 8765, "port of the embedded emulator",
                             minimum=1, maximum=65535)
    list_page_size: int | None = key("integer", None, "files per list page",
                                     minimum=1, default_text="the provider's")
    # fmt: on

    @property
    def embedded(self) -> bool:
        return self.base_url == EMBEDDED

    @property
    def profile(self) -> Provider:
        """The provider profile, with the configured list page size."""
        return PROVIDERS[self.provider].with_page_size(self.list_page_size)


@dataclass(frozen=True)
class LimitsConfig:
    """What the account allows and how fast to use it, alone or shared between hosts."""

    # fmt: off
    upload_qps: float = key("number", 20.0, "uploads per second", minimum=0, above=True,
                            maximum=10_000, by_provider="rates.upload")
    read_qps: float = key("number", 20.0, "retrieves and lists per second", minimum=0,
                          above=True, maximum=10_000, by_provider="rates.read")
    delete_qps: float = key("number", 10.0, "deletes per second", minimum=0, above=True,
                            maximum=10_000, by_provider="rates.delete")
    workers: int = key("integer", 8, "parallel uploads/deletes", minimum=1, maximum=256)
    max_files: int = key("integer", 10_000, "the account's file quota", minimum=1,
                         by_provider="max_files")
    max_bytes: int = key("size", 100 * 1024**3, "the account's storage quota", minimum=1,
                         by_provider="max_bytes")
    headroom_files: int = key("integer", 0, "files left free for other tools", minimum=0)
    headroom_bytes: int = key("size", 0, "bytes left free for other tools", minimum=0)
    upload_bytes_per_s: int | None = key("size", None,
                                         "upload bytes per second, every worker and process "
                                         "on the key together (no cap if unset)",
                                         minimum=1024)
    pacing_dir: Path | None = key("path", None, "folder of the shared pacing state")
    shared: str | None = key("store_url", None,
                             "redis:// (or rediss://) URL of the store every host on the key "
                             "shares")
    shared_credential_file: Path | None = key(
        "path", None, "file holding the password of limits.shared (when its URL has none)",
        unset_ok=True)
    fleet_size: int = key("integer", 1,
                          "hosts on the key: each gets 1/fleet_size while limits.shared is down",
                          minimum=1, maximum=10_000)
    # fmt: on


@dataclass(frozen=True)
class RulesConfig:
    """Which files are synced, and each one's purpose."""

    # fmt: off
    include: tuple[str, ...] = key("globs", ("**",), "globs of files to sync", reload=True)
    exclude: tuple[str, ...] = key("globs", DEFAULT_EXCLUDE, "globs of files never synced",
                                   reload=True)
    purposes: tuple[PurposeRule, ...] = key(
        "purposes", DEFAULT_PURPOSES, "purpose by glob, first match wins", reload=True,
        default_text="the provider's (see Providers)")
    max_file_bytes: int | None = key("size", None, "files larger than this are not synced",
                                     reload=True, minimum=1)
    # fmt: on


@dataclass(frozen=True)
class SyncConfig:
    """How a run acts: deletes, the marker, dedupe, refresh, settling."""

    # fmt: off
    delete_remote: bool = key("bool", True, "delete the remote copy of a removed file")
    max_delete: MaxDelete = key("max_delete", MaxDelete(),
                                "most deletes per run: a count, or % of tracked files")
    marker: str | None = key("string", None, "file that must exist in root, or nothing is done")
    dedupe: bool = key("bool", True, "identical content of one purpose shares a remote file")
    refresh_before_expiry_s: float = key(
        "number", 86_400.0, "re-upload a file of ours this long before the provider expires it",
        minimum=0, maximum=7 * _DAY)
    settle_s: float = key("number", 2.0, "quiet seconds before a changed file is acted on",
                          reload=True, minimum=0, maximum=_DAY)
    max_settle_s: float = key("number", 60.0, "longest wait for a file that keeps changing",
                              reload=True, minimum=0, maximum=_DAY)
    # fmt: on


@dataclass(frozen=True)
class WatchConfig:
    """How the daemon sees changes."""

    # fmt: off
    mode: WatchMode = key("choice", "auto",
                          "how changes are seen (auto: inotify, polling at the watch limit)",
                          reload=True, choices=get_args(WatchMode))
    poll_interval_s: float = key("number", 5.0, "seconds between polls", reload=True,
                                 minimum=0.1, maximum=3600)
    # fmt: on


@dataclass(frozen=True)
class ReconcileConfig:
    """When the daemon runs a full reconcile."""

    # fmt: off
    interval_s: float | None = key("number", 3600.0, "seconds between full reconciles",
                                   reload=True, minimum=1, maximum=30 * _DAY)
    cron: str | None = key("cron", None, "5-field crontab line instead of interval_s",
                           reload=True)
    # fmt: on


@dataclass(frozen=True)
class DaemonConfig:
    """The daemon's queue, shutdown, publishing and metrics."""

    # fmt: off
    shutdown_timeout_s: float = key("number", 30.0, "seconds in-flight work may take on stop",
                                    reload=True, minimum=0, above=True, maximum=3600)
    max_pending: int = key("integer", 20_000, "queued changes before a rescan instead",
                           reload=True, minimum=1, maximum=10_000_000)
    publish_interval_s: float = key("number", 2.0, "least seconds between mapping publishes",
                                    reload=True, minimum=0, maximum=3600)
    metrics: str | None = key("address", None,
                              "HOST:PORT of the Prometheus metrics and the status page "
                              "(off if unset)")
    metrics_public: bool = key("bool", False,
                               "allow daemon.metrics on an address other than loopback "
                               "(the page shows file names to whoever reaches it)")
    # fmt: on


@dataclass(frozen=True)
class LoggingConfig:
    """Log lines: format and level."""

    # fmt: off
    format: LogFormat = key("choice", "auto",
                            "log lines (auto: JSON under systemd, console otherwise)",
                            reload=True, choices=get_args(LogFormat))
    level: str = key("choice", "info", "least level logged", reload=True,
                     choices=("debug", "info", "warning", "error", "critical"))
    file: Path | None = key("path", None,
                            "write log lines to this file, not stderr (reopened on SIGHUP)",
                            reload=True)
    file_max_bytes: int = key("size", 10 * 1024**2, "size at which logging.file is rotated",
                              reload=True, minimum=1024)
    file_backups: int = key("integer", 5, "rotated log files kept", reload=True, minimum=0,
                            maximum=1000)
    # fmt: on


@dataclass(frozen=True)
class PullSection:
    """Provider-made files (batch results) mirrored into a local outbox."""

    # fmt: off
    outbox: Path | None = key("path", None,
                              "folder provider-made files are pulled into (off if unset)")
    purposes: tuple[str, ...] = key("globs", ("batch_output",),
                                    "purposes of the remote files pulled")
    delete_remote_after_pull: bool = key(
        "bool", False, "delete a result of a job over our inputs once it is safe locally")
    # fmt: on


@dataclass(frozen=True)
class BatchSection:
    """Batch jobs over synced batch-purpose files: exactly one per content."""

    # fmt: off
    submit: tuple[str, ...] = key("globs", (),
                                  "globs of synced batch files that each run as a job")
    endpoint: str = key("string", "/v1/chat/completions", "the jobs' endpoint")
    completion_window: str = key("string", "24h", "the jobs' completion window")
    max_per_day: int = key("integer", 100, "jobs created in any 24 hours, at most",
                           minimum=1, maximum=100_000)
    cancel_superseded: bool = key("bool", True, "cancel a running job whose input changed")
    poll_interval_s: float = key("number", 30.0, "seconds between the daemon's job polls",
                                 reload=True, minimum=1, maximum=86_400)
    # fmt: on


@dataclass(frozen=True)
class VectorStoresSection:
    """Synced files attached to vector stores (openai and generic providers)."""

    # fmt: off
    rules: tuple[VectorRule, ...] = key(
        "vector_rules", (), "which synced files each vector store holds (see Vector stores)",
        default_text="none")
    # fmt: on


@dataclass(frozen=True)
class JournalConfig:
    """What syncd did, kept in the state (``syncd log``): its bounds."""

    # fmt: off
    max_entries: int = key("integer", 100_000, "journal entries kept (the oldest go first)",
                           minimum=100, maximum=10_000_000)
    max_age_days: float = key("number", 90.0, "days a journal entry is kept", minimum=0,
                              above=True, maximum=36_500)
    # fmt: on


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
    """One project's configuration: the top-level keys, then a section per topic."""

    # fmt: off
    project: str = field(metadata=top("string", "name of the project, written into the mapping",
                                      required=True))
    root: Path = field(metadata=top("path", "the folder to mirror (only read)", required=True))
    state_dir: Path = field(metadata=top("path", "state (SQLite), lock and embedded emulator data",
                                         required=True))
    mapping_file: Path = field(metadata=top("path", "where the path -> file_id map is published",
                                            default_text="state_dir/mapping.json"))
    # fmt: on
    source: Path | None = None
    api: ApiConfig = section(ApiConfig)
    limits: LimitsConfig = section(LimitsConfig)
    rules: RulesConfig = section(RulesConfig)
    sync: SyncConfig = section(SyncConfig)
    watch: WatchConfig = section(WatchConfig)
    reconcile: ReconcileConfig = section(ReconcileConfig)
    daemon: DaemonConfig = section(DaemonConfig)
    logging: LoggingConfig = section(LoggingConfig)
    journal: JournalConfig = section(JournalConfig)
    pull: PullSection = section(PullSection)
    batch: BatchSection = section(BatchSection)
    vector_stores: VectorStoresSection = section(VectorStoresSection)
    origin: Origin = field(default_factory=Origin, compare=False, repr=False)


# ---------------------------------------------------------------- KEYS, read off the fields


def _read_keys() -> tuple[tuple[Key, ...], dict[str, type]]:
    keys: list[Key] = []
    sections: dict[str, type] = {}
    for f in dataclasses.fields(Config):
        if _KEY in f.metadata:
            keys.append(Key(f.name, **f.metadata[_KEY]))
        elif _SECTION in f.metadata:
            sections[f.name] = cls = f.metadata[_SECTION]
            keys += [Key(f"{f.name}.{g.name}", **g.metadata[_KEY])
                     for g in dataclasses.fields(cls)]  # fmt: skip
    return tuple(keys), sections


KEYS, SECTION_TYPES = _read_keys()
SCHEMA: Mapping[str, Key] = {k.name: k for k in KEYS}
SECTIONS = tuple(SECTION_TYPES)


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


def provider_default(key: Key, provider: Provider) -> Any:
    """What a key left out of the file is for this provider."""
    return attrgetter(key.by_provider)(provider) if key.by_provider else key.default
