"""The configuration: one declaration per key, every error in one pass, values that used to
pass and then crash, self-reference, and `check-config` as a preflight."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.api.providers import DEFAULT_PROVIDER, PROVIDERS
from syncd.check_config import preflight
from syncd.config import (
    KEYS,
    SCHEMA,
    SECTIONS,
    ApiConfig,
    Config,
    ConfigError,
    DaemonConfig,
    JournalConfig,
    LimitsConfig,
    LoggingConfig,
    ReconcileConfig,
    RulesConfig,
    SyncConfig,
    WatchConfig,
    changed_keys,
    load_config,
    parse_config,
    reloadable_keys,
    value_of,
)
from syncd.config.keys import BatchSection, PullSection, VectorStoresSection, provider_default
from tests.emulator_fixture import EmulatorHandle
from tests.engine_helpers import KEY_ENV, fast_emulator, run_syncd, write_config

BASE = "project: p\nroot: ./root\nstate_dir: ./state\n"


def _write(tmp_path: Path, text: str | bytes, name: str = "syncd.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, "utf-8")
    return path


def _problems(tmp_path: Path, text: str | bytes) -> list[str]:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


# ------------------------------------------------------------------ one declaration per key


def test_every_field_of_the_typed_config_is_a_declared_key() -> None:
    sections = {
        "api": ApiConfig(), "limits": LimitsConfig(), "rules": RulesConfig(),
        "sync": SyncConfig(), "watch": WatchConfig(), "reconcile": ReconcileConfig(),
        "daemon": DaemonConfig(), "logging": LoggingConfig(), "journal": JournalConfig(),
        "pull": PullSection(), "batch": BatchSection(), "vector_stores": VectorStoresSection(),
    }  # fmt: skip
    assert tuple(sections) == SECTIONS
    fields = [f.name for f in dataclasses.fields(Config) if f.name in SCHEMA]
    for name, obj in sections.items():
        for f in dataclasses.fields(obj):
            key = SCHEMA[f"{name}.{f.name}"]
            assert getattr(obj, f.name) == key.default, key.name
            fields.append(key.name)
    assert fields == [k.name for k in KEYS]
    assert fields[:4] == ["project", "root", "state_dir", "mapping_file"]


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_keys_left_out_take_the_providers_defaults(tmp_path: Path, provider: str) -> None:
    profile = PROVIDERS[provider]
    url = "" if provider == DEFAULT_PROVIDER else "  base_url: http://h/v1\n"
    config = parse_config(f"{BASE}api:\n  provider: {provider}\n{url}", base=tmp_path)
    by_provider = [k for k in KEYS if k.by_provider]
    assert {k.name for k in by_provider} >= {"limits.upload_qps", "limits.max_bytes"}
    for key in by_provider:
        assert value_of(config, key.name) == provider_default(key, profile), key.name
        if provider == DEFAULT_PROVIDER:  # the declared default is the default provider's
            assert key.default == provider_default(key, profile), key.name


def test_a_file_with_only_required_keys_gets_every_default(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, BASE))
    for key in KEYS:
        if key.required or key.name == "mapping_file":
            continue
        section, _, leaf = key.name.rpartition(".")
        assert getattr(getattr(config, section), leaf) == key.default, key.name
    assert config.mapping_file == tmp_path / "state" / "mapping.json"


def test_reloadable_keys_are_the_live_sections() -> None:
    assert reloadable_keys() == {
        "sync.settle_s", "sync.max_settle_s", "watch.mode", "watch.poll_interval_s",
        "reconcile.interval_s", "reconcile.cron", "daemon.shutdown_timeout_s",
        "daemon.max_pending", "daemon.publish_interval_s", "logging.format", "logging.level",
        "logging.file", "logging.file_max_bytes", "logging.file_backups",
        "rules.include", "rules.exclude", "rules.purposes", "rules.max_file_bytes",
        "batch.poll_interval_s",
    }  # fmt: skip


def test_changed_keys_names_each_difference(tmp_path: Path) -> None:
    old = load_config(_write(tmp_path, BASE))
    new = parse_config(
        BASE + "limits:\n  upload_qps: 5\nsync:\n  settle_s: 3\n", base=tmp_path
    )
    assert changed_keys(old, new) == ["limits.upload_qps", "sync.settle_s"]
    assert [k for k in changed_keys(old, new) if k not in reloadable_keys()] == [
        "limits.upload_qps"
    ]


# ------------------------------------------------------------------ every error in one pass


def test_three_mistakes_three_errors_each_with_its_line(tmp_path: Path) -> None:
    text = (
        "project: p\n"  # 1
        "rooot: ./docs\n"  # 2
        "state_dir: ./state\n"  # 3
        "limits:\n"  # 4
        "  upload_qps: fast\n"  # 5
        "logging:\n"  # 6
        "  level: verbose\n"  # 7
    )
    problems = _problems(tmp_path, text)
    cfg = tmp_path / "syncd.yaml"
    assert problems == [
        f"{cfg}:2: rooot: unknown key; did you mean root?",
        f"{cfg}:5: limits.upload_qps: expected a number, got 'fast'",
        f"{cfg}:7: logging.level: expected one of debug, info, warning, error, critical, "
        "got 'verbose'",
    ]
    # The CLI prints them all and exits 2.
    run = run_syncd("check-config", cfg, key=None)
    assert run.returncode == 2
    for p in problems:
        assert p in run.stderr
    assert "Traceback" not in run.stderr


def test_misplaced_key_is_pointed_to_its_section(tmp_path: Path) -> None:
    problems = _problems(tmp_path, BASE + "upload_qps: 3\nsync:\n  delete_remtoe: false\n")
    assert problems[0].endswith("upload_qps: unknown key here; it belongs at limits.upload_qps")
    assert problems[1].endswith("sync.delete_remtoe: unknown key; did you mean delete_remote?")


def test_duplicate_keys_and_both_key_sources(tmp_path: Path) -> None:
    text = BASE + "api:\n  api_key_env: A\n  api_key_file: /k\nproject: q\n"
    problems = _problems(tmp_path, text)
    assert any(":6: api.api_key_file: set api_key_env or api_key_file, not both" in p
               for p in problems)  # fmt: skip
    assert any(":7: project: duplicate key (first on line 1)" in p for p in problems)


# ------------------------------------------------------------------ values that used to crash

CRASHERS = {
    "upload_qps inf": ("limits:\n  upload_qps: inf\n", 5, "limits.upload_qps", "finite"),
    "read_timeout nan": ("api:\n  read_timeout_s: nan\n", 5, "api.read_timeout_s", "finite"),
    "yaml .inf": ("daemon:\n  shutdown_timeout_s: .inf\n", 5, "daemon.shutdown_timeout_s",
                  "finite"),
    "interval inf": ("reconcile:\n  interval_s: inf\n", 5, "reconcile.interval_s", "finite"),
    "interval huge": ("reconcile:\n  interval_s: 1e12\n", 5, "reconcile.interval_s", "at most"),
    "port": ("api:\n  embedded_port: 99999\n", 5, "api.embedded_port", "at most 65535"),
    "port zero": ("api:\n  embedded_port: 0\n", 5, "api.embedded_port", "at least 1"),
    "rate zero": ("limits:\n  delete_qps: 0\n", 5, "limits.delete_qps", "more than 0"),
    "timeout zero": ("api:\n  connect_timeout_s: 0\n", 5, "api.connect_timeout_s", "more than 0"),
    "max_delete nan": ("sync:\n  max_delete: nan%\n", 5, "sync.max_delete", "percentage"),
    "include [": ("rules:\n  include: ['*.txt', '[abc']\n", 5, "rules.include", "unclosed ["),
    "exclude {": ("rules:\n  exclude: '{a,b'\n", 5, "rules.exclude", "unclosed {"),
    "purpose glob": ("rules:\n  purposes:\n    - match: ['*.md', 'x{y']\n      purpose: batch\n",
                     6, "rules.purposes[0].match", "unclosed {"),
    "mapping folder": ("mapping_file: .\n", 4, "mapping_file", "is a folder"),
    "state a file": ("", 3, "state_dir", "is not a folder"),
    "state uncreatable": ("", 3, "state_dir", "cannot be created"),
    "mapping in root": ("mapping_file: ./root/m.json\n", 4, "mapping_file", "inside root"),
    "state in root": ("", 3, "state_dir", "inside root"),
    "redis port": ("limits:\n  shared: redis://:pw@h:99999/0\n", 5, "limits.shared",
                   "not a usable URL"),
    "redis port abc": ("limits:\n  shared: redis://h:abc\n", 5, "limits.shared",
                       "not a usable URL"),
    "redis ipv6": ("limits:\n  shared: 'redis://[::1'\n", 5, "limits.shared", "IPv6"),
    "redis scheme": ("limits:\n  shared: http://h:6379\n", 5, "limits.shared", "redis://"),
    "base_url port": ("api:\n  base_url: http://127.0.0.1:70000/v1\n", 5, "api.base_url",
                      "not a usable URL"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CRASHERS))
def test_values_that_used_to_crash_are_config_errors(tmp_path: Path, case: str) -> None:
    extra, line, key, words = CRASHERS[case]
    base = BASE
    if case == "state a file":
        (tmp_path / "afile").write_text("x")
        base = "project: p\nroot: ./root\nstate_dir: ./afile/state\n"
    elif case == "state uncreatable":
        base = "project: p\nroot: ./root\nstate_dir: /proc/syncd-test/state\n"
    elif case == "state in root":
        base = "project: p\nroot: ./root\nstate_dir: ./root/.syncd\n"
    (tmp_path / "root").mkdir()
    cfg = _write(tmp_path, base + extra)
    run = run_syncd("check-config", cfg, key=None)
    assert run.returncode == 2, run.output
    assert "Traceback" not in run.stderr
    assert f"{cfg}:{line}: {key}: " in run.stderr, run.stderr
    assert words in run.stderr, run.stderr
    # The commands that used to crash on these stop at the same error.
    again = run_syncd("reconcile", cfg, key="sk-test")
    assert again.returncode == 2 and f"{cfg}:{line}: {key}: " in again.stderr, again.output


def test_non_utf8_file_is_a_clean_error(tmp_path: Path) -> None:
    cfg = _write(tmp_path, b"project: p\nroot: ./r\xe9sum\xe9\nstate_dir: ./s\n")
    run = run_syncd("check-config", cfg, key=None)
    assert run.returncode == 2
    assert f"{cfg}:2: not UTF-8" in run.stderr
    assert "Traceback" not in run.stderr


def test_valid_globs_are_accepted(tmp_path: Path) -> None:
    text = BASE + (
        "rules:\n  include: ['**', '*.{txt,md}', '[!~]*', 'a/**/b', '\\[lit', '[]x]']\n"
        "  exclude: ['{a,{b,c}}', '*]']\n"
    )
    config = load_config(_write(tmp_path, text))
    assert "*.{txt,md}" in config.rules.include


def test_explicit_cron_wins_over_the_default_interval(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, BASE + "reconcile:\n  cron: '*/5 * * * *'\n"))
    assert config.reconcile == ReconcileConfig(interval_s=None, cron="*/5 * * * *")
    problems = _problems(tmp_path, BASE + "reconcile:\n  interval_s: 60\n  cron: '* * * * *'\n")
    assert problems == [f"{tmp_path / 'syncd.yaml'}:6: reconcile.cron: set interval_s or cron, "
                        "not both"]  # fmt: skip


# ------------------------------------------------------------------ preflight


def _config(tmp_path: Path, extra: str = "") -> Config:
    return load_config(_write(tmp_path, BASE + extra))


def test_preflight_names_a_missing_root_and_marker(tmp_path: Path) -> None:
    config = _config(tmp_path, "sync:\n  marker: .mounted\n")
    cfg = tmp_path / "syncd.yaml"
    assert preflight(config, online=False) == [f"{cfg}:2: root: {tmp_path}/root does not exist"]
    (tmp_path / "root").mkdir()
    assert preflight(config, online=False) == [
        f"{cfg}:5: sync.marker: .mounted is missing from the root: syncd does nothing until "
        "it exists"
    ]
    (tmp_path / "root" / ".mounted").touch()
    assert preflight(config, online=False) == []
    run = run_syncd("check-config", cfg, key=None)
    assert run.returncode == 0 and "ok" in run.stdout, run.output


def test_preflight_checks_the_key_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "root").mkdir()
    monkeypatch.delenv(KEY_ENV, raising=False)
    remote = "api:\n  base_url: http://127.0.0.1:9/v1\n"
    config = _config(tmp_path, remote + f"  api_key_env: {KEY_ENV}\n")
    assert preflight(config, online=False) == [
        f"{tmp_path / 'syncd.yaml'}:6: api.api_key_env: API key env var {KEY_ENV} is not set "
        "or empty"
    ]
    monkeypatch.setenv(KEY_ENV, "sk-present")
    assert preflight(config, online=False) == []
    config = _config(tmp_path, remote + "  api_key_file: ./key\n")
    [problem] = preflight(config, online=False)
    assert ":6: api.api_key_file: cannot read API key file" in problem
    (tmp_path / "key").write_text("sk-from-file\n")
    assert preflight(config, online=False) == []
    # The embedded emulator needs no key.
    monkeypatch.delenv(KEY_ENV)
    assert preflight(_config(tmp_path), online=False) == []


def test_check_config_online_authenticates(
    tmp_path: Path, emulator_factory: Callable[..., EmulatorHandle]
) -> None:
    emu = fast_emulator(emulator_factory)
    root = tmp_path / "root"
    root.mkdir()
    cfg = write_config(tmp_path, root, emu)
    ok = run_syncd("check-config", cfg, "--online", key=emu.api_key)
    assert ok.returncode == 0, ok.output
    assert "key accepted" in ok.stdout
    wrong = run_syncd("check-config", cfg, "--online", key="sk-not-this-one")
    assert wrong.returncode == 2, wrong.output
    assert "api.api_key_env: the remote refused the key (status 401)" in wrong.stderr
    # Offline, a wrong key cannot be told from a right one: only its presence is checked.
    assert run_syncd("check-config", cfg, key="sk-not-this-one").returncode == 0


def test_values_a_run_would_refuse_are_config_errors_with_their_line(tmp_path: Path) -> None:
    text = BASE + "sync:\n  max_delete: abc%\ndaemon:\n  metrics: 0.0.0.0:99999\n"
    cfg = tmp_path / "syncd.yaml"
    assert _problems(tmp_path, text) == [
        f"{cfg}:5: sync.max_delete: expected a percentage from 0% to 100%, got 'abc%'",
        f"{cfg}:7: daemon.metrics: expected HOST:PORT such as 127.0.0.1:9464, "
        "got '0.0.0.0:99999'",
    ]


@pytest.mark.parametrize(
    ("text", "line", "opened"),
    [
        (BASE + "rules:\n  include: [a, b\n", 6, "while parsing a flow sequence at line 5"),
        ('project: "p\nroot: ./root\n', 3, "while scanning a quoted scalar at line 1"),
    ],
)
def test_an_unclosed_bracket_or_quote_names_the_line_it_was_opened_on(
    tmp_path: Path, text: str, line: int, opened: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="syncd.yaml", base=tmp_path)
    message = str(caught.value)
    assert message.startswith(f"syncd.yaml:{line}: invalid YAML: "), message
    assert message.endswith(f"({opened})"), message
