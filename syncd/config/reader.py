"""The walk of one YAML file: every key found, read by its declaration, each problem
recorded with its ``file:line: key``, and ``${VAR}`` replaced, never echoed.

Unknown keys are problems with a "did you mean": a typo such as ``delete_remtoe`` would
otherwise silently keep the default. Nothing stops at the first problem: the loader
reports them all at once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PosixPath

import yaml

from syncd.config.keys import KEYS, SCHEMA, SECTIONS, Key
from syncd.config.nodes import BAD, Absent, is_null, line_of
from syncd.config.values import SCALARS, Invalid, PurposeRule, glob_problem, string
from syncd.config.vector_rules import read_rules

# ${NAME} or ${NAME:-default}; patterns are compiled on first use (re caches them).
VAR = r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}"
_RULE_FIELDS = ["match", "purpose"]


class WrittenPath(PosixPath):
    """A path that remembers the text it was written as (before ``${VAR}`` expansion),
    so that messages about it, such as ``ApiKey.load``'s, name it without the expansion."""

    as_written: str | None = None


def _did_you_mean(name: str, names: list[str]) -> str | None:
    import difflib  # only a config with a typo pays for it

    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return close[0] if close else None


class Reader:
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

    def line(self, key: str) -> int:
        """Where a key was written; a key left out is placed at its section, or line 1."""
        return self.lines.get(key) or self.lines.get(key.rpartition(".")[0]) or 1

    # ---- walking the mappings

    def walk(self, node: yaml.MappingNode, section: str) -> None:
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value)
            dotted = f"{section}.{name}" if section else name
            line = line_of(key_node)
            if name in seen:
                self.problem(line, dotted, f"duplicate key (first on line {seen[name]})")
                continue
            seen[name] = line
            if not section and name in SECTIONS:
                if is_null(value_node):
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
        close = _did_you_mean(name, list(leaves))
        if close:
            self.suggested.add(leaves[close])
            self.problem(line, dotted, f"unknown key; did you mean {close}?")
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
                self.refuse_secret(node, key, name, value)
                return ""
            if value is None:
                if fallback is None and key in SCHEMA and SCHEMA[key].unset_ok:
                    unset.append(name)
                    return m.group(0)  # a path that cannot exist; its reader names why
                if fallback is None:
                    failed = True
                    self.problem(line_of(node), key, f"environment variable {name} is not set")
                    return ""
                return fallback
            return value

        out = re.sub(VAR, sub, text)
        if failed:
            return None
        if unset:
            self.written[key] = f"{text} ({', '.join(unset)} not set)"
        elif out != text:
            self.written[key] = text
        return out

    def refuse_secret(self, node: yaml.Node, key: str, name: str, value: str | None) -> None:
        from_file = (value or "").strip() in self.key_file_secrets
        instead = (
            "it is read from api.api_key_file"
            if from_file
            else f"name the variable instead (api_key_env: {name})"
        )
        self.problem(
            line_of(node), key,
            f"${{{name}}} holds the API key, which must not be copied into the "
            f"configuration; {instead}",
        )  # fmt: skip

    def read(self, key: Key, node: yaml.Node, line: int) -> None:
        if is_null(node):
            if key.required:
                self.problem(line, key.name, "required, but empty")
                self.values[key.name] = BAD
            return
        if key.kind == "globs":
            self.values[key.name] = self.glob_list(key.name, node)
        elif key.kind == "purposes":
            self.values[key.name] = self.purposes(key.name, node)
        elif key.kind == "vector_rules":
            self.values[key.name] = read_rules(self, key.name, node)
        else:
            self.values[key.name] = self.read_one(key, node)

    def read_one(self, key: Key, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(line_of(node), key.name, "expected a single value, not a list or mapping")
            return BAD
        text = self.expand(node, key.name)
        if text is None:
            return BAD
        try:
            return self.convert(key, text)
        except Invalid as exc:
            got = f", got {node.value!r}" if exc.echo else ""
            self.problem(line_of(node), key.name, f"{exc}{got}")
            return BAD

    def convert(self, key: Key, text: str) -> object:
        if key.kind != "path":
            return SCALARS[key.kind](key, text)
        path = WrittenPath(self.base / Path(string(key, text)).expanduser())
        path.as_written = self.written.get(key.name)
        return path

    def glob_list(self, key: str, node: yaml.Node) -> tuple[str, ...] | Absent:
        items = [node] if isinstance(node, yaml.ScalarNode) else None
        if isinstance(node, yaml.SequenceNode):
            items = list(node.value)
        if items is None:
            self.problem(line_of(node), key, "expected a glob or a list of globs")
            return BAD
        out: list[str] = []
        ok = True
        for item in items:
            if not isinstance(item, yaml.ScalarNode) or is_null(item):
                self.problem(line_of(item), key, "expected a glob or a list of globs")
                ok = False
                continue
            text = self.expand(item, key)
            if text is None:
                ok = False
                continue
            why = glob_problem(text)
            if why is not None:
                self.problem(line_of(item), key, f"invalid glob {item.value!r}: {why}")
                ok = False
            out.append(text)
        return tuple(out) if ok else BAD

    def purposes(self, key: str, node: yaml.Node) -> tuple[PurposeRule, ...] | Absent:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(line_of(node), key, "expected a list of {match, purpose} rules")
            return BAD
        rules = [self.purpose_rule(f"{key}[{i}]", i, item) for i, item in enumerate(node.value)]
        good = [rule for rule in rules if isinstance(rule, PurposeRule)]
        return tuple(good) if len(good) == len(rules) else BAD

    def purpose_rule(self, where: str, i: int, item: yaml.Node) -> PurposeRule | Absent:
        if not isinstance(item, yaml.MappingNode):
            self.problem(line_of(item), where, "expected a mapping with match and purpose")
            return BAD
        fields = {str(k.value): (k, v) for k, v in item.value}
        ok = True
        meant: set[str] = set()
        for name, (k, _v) in fields.items():
            if name not in _RULE_FIELDS:
                close = _did_you_mean(name, _RULE_FIELDS)
                meant.update([close] if close else [])
                hint = f"; did you mean {close}?" if close else ""
                self.problem(line_of(k), f"{where}.{name}", f"unknown key{hint}")
                ok = False
        given = {n: v for n, (_k, v) in fields.items() if not is_null(v)}
        patterns: tuple[str, ...] | Absent = BAD
        if "match" in given:
            patterns = self.glob_list(f"{where}.match", given["match"])
        elif "match" not in meant:
            self.problem(line_of(item), f"{where}.match", "required: a glob or a list of globs")
        purpose: object = BAD
        if "purpose" in given:
            # Which purposes are allowed depends on api.provider: checked across keys.
            purpose = self.read_one(Key(f"{where}.purpose", "string", None, ""), given["purpose"])
            self.purpose_lines[i] = line_of(given["purpose"])
        elif "purpose" not in meant:
            self.problem(line_of(item), f"{where}.purpose",
                         "required: one of the provider's purposes, or skip")  # fmt: skip
        if not ok or isinstance(patterns, Absent) or isinstance(purpose, Absent):
            return BAD
        return PurposeRule(patterns, str(purpose))
