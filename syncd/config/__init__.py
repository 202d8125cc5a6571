"""YAML -> typed, validated configuration.

Every key is declared once, as a field of the typed config (``keys``): its type, default,
range or choices, whether SIGHUP can apply it, and a one-line doc. The reader, the
defaults, the reload rules and the README's key table all come from those declarations.

Every error names the file, the line and the dotted key, and all errors of a file
are reported in one pass, because a daemon that refuses to start must say exactly
what to fix. Unknown keys are errors (with a "did you mean"): a typo such as
``delete_remtoe`` would otherwise silently keep the default.

Values taken from ``${VAR}`` are never echoed in messages, only the text as
written: a variable may hold a secret.

The modules: ``keys`` (the declarations, the typed sections, ``KEYS`` and reload),
``values`` (one value of one key: sizes, numbers, URLs, globs, max_delete, cron),
``reader`` (the YAML walk, ``${VAR}``, problems with their line), ``checks`` (rules across
keys) and ``load`` (``load_config``: from a file to a ``Config``).
"""

from __future__ import annotations

from syncd.config.keys import (
    DEFAULT_EXCLUDE,
    DEFAULT_KEY_ENV,
    KEYS,
    SCHEMA,
    SECTIONS,
    ApiConfig,
    Config,
    DaemonConfig,
    JournalConfig,
    Key,
    Kind,
    LimitsConfig,
    LoggingConfig,
    Origin,
    ReconcileConfig,
    RulesConfig,
    SyncConfig,
    WatchConfig,
    changed_keys,
    needs_restart,
    reloadable_keys,
    value_of,
)
from syncd.config.load import ConfigError, load_config, parse_config
from syncd.config.reader import WrittenPath
from syncd.config.values import (
    DEFAULT_PURPOSES,
    EMBEDDED,
    GLOB_FLAGS,
    MaxDelete,
    PurposeRule,
    default_purposes,
    glob_problem,
    is_loopback,
    parse_address,
    parse_max_delete,
    with_checks,
)
from syncd.units import parse_size

__all__ = [
    "DEFAULT_EXCLUDE", "DEFAULT_KEY_ENV", "DEFAULT_PURPOSES", "EMBEDDED", "GLOB_FLAGS", "KEYS",
    "SCHEMA", "SECTIONS", "ApiConfig", "Config", "ConfigError", "DaemonConfig", "JournalConfig",
    "Key", "Kind", "LimitsConfig", "LoggingConfig", "MaxDelete", "Origin", "PurposeRule",
    "ReconcileConfig", "RulesConfig", "SyncConfig", "WatchConfig", "WrittenPath", "changed_keys",
    "default_purposes", "glob_problem", "is_loopback", "load_config", "needs_restart",
    "parse_address", "parse_config", "parse_max_delete", "parse_size", "reloadable_keys",
    "value_of", "with_checks",
]  # fmt: skip
