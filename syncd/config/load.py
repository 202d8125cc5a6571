"""From a file to a ``Config``: read, walk, check across keys, then fill in what the file
leaves out (the provider's defaults, the mapping beside the state) and build the typed
sections. Every problem of a file is raised at once, sorted by line."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from syncd.api.providers import PROVIDERS
from syncd.config.checks import Got, cross_checks
from syncd.config.keys import KEYS, SCHEMA, SECTION_TYPES, Config, Origin, provider_default
from syncd.config.nodes import Absent
from syncd.config.reader import VAR, Reader
from syncd.config.values import ENV_NAME, default_purposes, with_checks


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


def parse_config(text: str, *, source: str = "<config>", base: Path | None = None) -> Config:
    base = base or Path.cwd()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        # An unclosed [ or { is noticed lines later: say where it was opened.
        context, began = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and began is not None and mark is not None and began.line != mark.line:
            problem += f" ({context} at line {began.line + 1})"
        raise ConfigError(f"{source}:{line}invalid YAML: {problem}") from None
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{source}:1: the file must be a mapping of keys")

    key_vars = _key_vars(node)
    r = Reader(source, base, key_vars, _key_file_secrets(node, source, base, key_vars))
    r.walk(node, "")
    for key in KEYS:
        if key.required and key.name not in r.values and key.name not in r.suggested:
            r.problem(1, key.name, "required")

    def got(name: str) -> Any:
        """The valid value of a key (default when absent), None when it was invalid."""
        value = r.values.get(name, SCHEMA[name].default)
        return None if isinstance(value, Absent) else value

    cross_checks(r, got)
    if r.problems:
        r.problems.sort(key=lambda p: p[0])
        raise ConfigError([p for _line_no, p in r.problems])
    return _build(r, got, source)


def _api_values(node: yaml.MappingNode, name: str) -> list[yaml.ScalarNode]:
    """The scalar values written for ``api.<name>`` (each of a repeated key or section)."""
    return [
        v2
        for k, v in node.value
        if k.value == "api" and isinstance(v, yaml.MappingNode)
        for k2, v2 in v.value
        if k2.value == name and isinstance(v2, yaml.ScalarNode)
    ]


def _key_vars(node: yaml.MappingNode) -> frozenset[str]:
    """Variables that hold an API key: the default one, the one api_key_env names, and
    any it interpolates (``api_key_env: ${DASHSCOPE_API_KEY}`` is the classic slip)."""
    names = {p.key_env for p in PROVIDERS.values() if p.key_env}
    for v in _api_values(node, "api_key_env"):
        text = str(v.value)
        names.update([text] if re.match(ENV_NAME, text) else [])
        names.update(m.group(1) for m in re.finditer(VAR, text))
    return frozenset(names)


def _key_file_secrets(
    node: yaml.MappingNode, source: str, base: Path, key_vars: frozenset[str]
) -> frozenset[str]:
    """The keys the file(s) api_key_file names hold, read before the walk so that a value
    copying one through ``${VAR}`` is refused wherever it comes in the file. A path that
    cannot be read yields nothing here: loading the key says why."""
    found: set[str] = set()
    for v in _api_values(node, "api_key_file"):
        # A throwaway reader: the path is read as the walk reads it, its problems
        # are the walk's to report.
        path = Reader(source, base, key_vars).read_one(SCHEMA["api.api_key_file"], v)
        try:
            if isinstance(path, Path) and path.is_file():  # never a FIFO or a device
                found.add(path.read_text("utf-8").strip())
        except (OSError, UnicodeDecodeError):
            pass
    return frozenset(found - {""})


def _build(r: Reader, got: Got, source: str) -> Config:
    values: dict[str, Any] = {k.name: got(k.name) for k in KEYS}
    profile = PROVIDERS[values["api.provider"]]
    # What the config leaves out, the provider's profile says.
    for key in KEYS:
        if key.by_provider and key.name not in r.lines:
            values[key.name] = provider_default(key, profile)
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
    fields: dict[str, dict[str, Any]] = {name: {} for name in ("", *SECTION_TYPES)}
    for name, value in values.items():
        section, _, leaf = name.rpartition(".")
        fields[section][leaf] = value
    return Config(
        **fields[""],
        **{name: cls(**fields[name]) for name, cls in SECTION_TYPES.items()},
        source=Path(source) if source != "<config>" else None,
        origin=Origin(source, dict(r.lines), dict(r.written)),
    )
