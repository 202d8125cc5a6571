"""The README's table of configuration keys, generated from their declarations
(``keys``): not imported by the config itself, only by whoever writes the docs.

``python -m syncd.config.table`` prints it; ``python -m tests.test_config_table`` writes
it into README.md, and the test of that name checks the README holds it as generated.
"""

from __future__ import annotations

from collections.abc import Mapping

from syncd.api.providers import PROVIDERS
from syncd.config.keys import KEYS, Key, provider_default
from syncd.units import size_text

_KIND_WORDS: Mapping[str, str] = {
    "string": "text", "number": "number", "integer": "whole number", "size": "size",
    "bool": "true/false", "path": "path", "url": "`embedded` or URL", "env_name": "variable name",
    "globs": "glob or list of globs", "purposes": "list of `{match, purpose}`",
    "vector_rules": "list of `{globs, store or store_id, ...}`",
    "max_delete": "count or %", "cron": "crontab line", "address": "HOST:PORT",
    "store_url": "redis URL",
}  # fmt: skip


def _number_text(n: float) -> str:
    return str(int(n)) if n == int(n) else f"{n:g}"


def _bound_text(k: Key, bound: float) -> str:
    return size_text(int(bound)) if k.kind == "size" else _number_text(bound)


def _type_text(k: Key) -> str:
    if k.kind == "choice":
        return "one of " + ", ".join(f"`{c}`" for c in k.choices)
    words = _KIND_WORDS[k.kind]
    low = None if k.minimum is None else _bound_text(k, k.minimum)
    high = None if k.maximum is None else _bound_text(k, k.maximum)
    if low is not None and high is not None:
        return f"{words}, {low} {'<' if k.above else '≤'} x ≤ {high}"
    if low is not None:
        return f"{words}, x {'>' if k.above else '≥'} {low}"
    return words if high is None else f"{words}, x ≤ {high}"


def _value_text(k: Key, value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if k.kind == "size" and isinstance(value, int):
        return f"`{size_text(value)}`"
    if isinstance(value, float):
        return f"`{_number_text(value)}`"
    if isinstance(value, tuple):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _default_text(k: Key) -> str:
    if k.required:
        return "required"
    if k.default_text is not None:
        return k.default_text
    if k.by_provider is None:
        return _value_text(k, k.default)
    return ", ".join(f"{name} {_value_text(k, provider_default(k, p))}"
                     for name, p in PROVIDERS.items())  # fmt: skip


def markdown_table() -> str:
    """The README's table of every key: name, type, default, SIGHUP, what it does."""
    rows = ["| key | type | default | SIGHUP | what it does |", "|---|---|---|---|---|"]
    for k in KEYS:
        cells = (f"`{k.name}`", _type_text(k), _default_text(k), "yes" if k.reload else "no",
                 k.doc)  # fmt: skip
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
