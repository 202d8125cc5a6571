"""vector_stores.rules: read into typed rules, each mistake named with its key and line, and
refused for a provider without vector stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.config import ConfigError, parse_config
from syncd.config.vector_rules import VectorRule, render


def config(tmp_path: Path, provider: str, rules: str) -> str:
    return (f"project: p\nroot: {tmp_path / 'root'}\nstate_dir: {tmp_path / 'state'}\n"
            f"api:\n  provider: {provider}\n  base_url: http://127.0.0.1:9/v1\n"
            f"vector_stores:\n  rules:\n{rules}")


GOOD = """    - globs: ["docs/**"]
      store: docs
      attributes: {folder: "{folder}", where: "{project}:{path}", sha: "{sha256}"}
      chunking_strategy: {max_chunk_size_tokens: 800, chunk_overlap_tokens: 100}
    - globs: "*.md"
      store_id: vs_abc
"""


def test_rules_are_read(tmp_path: Path) -> None:
    rules = parse_config(config(tmp_path, "openai", GOOD)).vector_stores.rules
    assert rules == (
        VectorRule(("docs/**",), store="docs", chunking=(800, 100), attributes=(
            ("folder", "{folder}"), ("where", "{project}:{path}"), ("sha", "{sha256}"))),
        VectorRule(("*.md",), store_id="vs_abc"))
    assert rules[0].chunking_strategy() == {"type": "static", "static": {
        "max_chunk_size_tokens": 800, "chunk_overlap_tokens": 100}}
    assert render("{project}:{folder}", path="a/b/c.md", project="p", sha256="x") == "p:a/b"


def test_each_mistake_has_its_key_and_line(tmp_path: Path) -> None:
    bad = """    - globs: ["docs/**"]
      store: docs
      store_id: vs_x
      attributes: {f: "{nope}"}
      chunking_strategy: {max_chunk_size_tokens: 50, chunk_overlap_tokens: 10}
    - store: other
      colour: blue
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(config(tmp_path, "openai", bad))
    text = str(caught.value)
    for expected in (
        ":9: vector_stores.rules[0].store: give exactly one of store",
        ":12: vector_stores.rules[0].attributes.f: unknown placeholder {nope}",
        ":13: vector_stores.rules[0].chunking_strategy: expected auto",
        ":14: vector_stores.rules[1].globs: required",
        ":15: vector_stores.rules[1].colour: unknown key"):
        assert expected in text, text


def test_refused_for_dashscope(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(tmp_path, "dashscope", GOOD))
    assert ":8: vector_stores.rules: provider dashscope has no vector stores" in str(caught.value)
    assert parse_config(config(tmp_path, "generic", GOOD)).vector_stores.rules
