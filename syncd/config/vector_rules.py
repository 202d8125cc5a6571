"""``vector_stores.rules``: which synced files are attached to which vector store.

Each rule is a mapping: ``globs`` (the files it selects, among the synced ones),
``store`` (a name: syncd creates the store once and records its id) or ``store_id`` (a
store that exists), ``chunking_strategy`` (``auto``, or ``{max_chunk_size_tokens,
chunk_overlap_tokens}`` for a static one) and ``attributes`` (up to 16 names, each a text
in which ``{path}``, ``{folder}``, ``{project}`` and ``{sha256}`` are replaced by the
file's). Every problem names its rule's key and line, as every other key's does.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Protocol

import yaml

from syncd.config.nodes import BAD, Absent, is_null, line_of


class Reader(Protocol):
    """What a rule's parsing asks of the config's reader."""

    def problem(self, line: int, key: str, message: str) -> None: ...
    def expand(self, node: yaml.ScalarNode, key: str) -> str | None: ...
    def glob_list(self, key: str, node: yaml.Node) -> tuple[str, ...] | Absent: ...

FIELDS = ("globs", "store", "store_id", "chunking_strategy", "attributes")
PLACEHOLDERS = ("path", "folder", "project", "sha256")
ATTRIBUTES_MAX = 16
ATTRIBUTE_KEY_MAX = 64
# file_search's bounds of a static chunking.
CHUNK_MIN, CHUNK_MAX = 100, 4096


@dataclass(frozen=True)
class VectorRule:
    globs: tuple[str, ...]
    # Exactly one of the two: a store syncd creates under this name, or one that exists.
    store: str | None = None
    store_id: str | None = None
    # (max_chunk_size_tokens, chunk_overlap_tokens) of a static chunking; None: auto.
    chunking: tuple[int, int] | None = None
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def target(self) -> str:
        """How the rule names its store: ``id:vs_…`` or ``name:docs``."""
        return f"id:{self.store_id}" if self.store_id else f"name:{self.store}"

    def chunking_strategy(self) -> dict[str, object] | None:
        if self.chunking is None:
            return None
        size, overlap = self.chunking
        return {"type": "static", "static": {"max_chunk_size_tokens": size,
                                             "chunk_overlap_tokens": overlap}}


def read_rules(r: Reader, key: str, node: yaml.Node) -> tuple[VectorRule, ...] | Absent:
    if not isinstance(node, yaml.SequenceNode):
        r.problem(line_of(node), key, "expected a list of {globs, store or store_id} rules")
        return BAD
    rules = [_rule(r, f"{key}[{i}]", item) for i, item in enumerate(node.value)]
    good = [rule for rule in rules if isinstance(rule, VectorRule)]
    return tuple(good) if len(good) == len(rules) else BAD


def _rule(r: Reader, where: str, item: yaml.Node) -> VectorRule | None:
    if not isinstance(item, yaml.MappingNode):
        r.problem(line_of(item), where, "expected a mapping with globs and store or store_id")
        return None
    fields: dict[str, yaml.Node] = {}
    ok = True
    for k, v in item.value:
        name = str(k.value)
        if name not in FIELDS:
            r.problem(line_of(k), f"{where}.{name}",
                      f"unknown key; expected one of {', '.join(FIELDS)}")
            ok = False
        elif not is_null(v):
            fields[name] = v
    globs = r.glob_list(f"{where}.globs", fields["globs"]) if "globs" in fields else None
    if globs is None:
        r.problem(line_of(item), f"{where}.globs", "required: a glob or a list of globs")
    names = {n: _text(r, f"{where}.{n}", fields[n]) for n in ("store", "store_id") if n in fields}
    if len(names) != 1:
        r.problem(line_of(item), f"{where}.store",
                  "give exactly one of store (a name syncd creates) and store_id")
        ok = False
    chunking = _chunking(r, f"{where}.chunking_strategy", fields.get("chunking_strategy"))
    attributes = _attributes(r, f"{where}.attributes", fields.get("attributes"))
    if not ok or not isinstance(globs, tuple) or None in names.values() \
            or isinstance(chunking, bool) or attributes is None:
        return None
    return VectorRule(globs, names.get("store"), names.get("store_id"), chunking, attributes)


def _text(r: Reader, where: str, node: yaml.Node) -> str | None:
    if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
        r.problem(line_of(node), where, "expected a non-empty text")
        return None
    return r.expand(node, where)


def _chunking(r: Reader, where: str, node: yaml.Node | None) -> tuple[int, int] | bool | None:
    """(size, overlap); None for auto (or left out); False when invalid."""
    if node is None or (isinstance(node, yaml.ScalarNode) and node.value == "auto"):
        return None
    values: dict[str, str] = {}
    if isinstance(node, yaml.MappingNode):
        values = {str(k.value): str(v.value) for k, v in node.value
                  if isinstance(v, yaml.ScalarNode)}
    try:
        size = int(values.pop("max_chunk_size_tokens"))
        overlap = int(values.pop("chunk_overlap_tokens"))
    except (KeyError, ValueError):
        size = overlap = -1
    if values or not CHUNK_MIN <= size <= CHUNK_MAX or not 0 <= overlap <= size // 2:
        r.problem(line_of(node), where,
                  f"expected auto, or max_chunk_size_tokens ({CHUNK_MIN}-{CHUNK_MAX}) and "
                  "chunk_overlap_tokens (at most half of it)")
        return False
    return size, overlap


def _attributes(r: Reader, where: str, node: yaml.Node | None
                ) -> tuple[tuple[str, str], ...] | None:
    """The attribute templates; None when invalid."""
    if node is None:
        return ()
    if not isinstance(node, yaml.MappingNode) or len(node.value) > ATTRIBUTES_MAX:
        r.problem(line_of(node), where, f"expected a mapping of at most {ATTRIBUTES_MAX} names")
        return None
    out: list[tuple[str, str]] = []
    ok = True
    for k, v in node.value:
        name, at = str(k.value), f"{where}.{k.value}"
        text = str(v.value) if isinstance(v, yaml.ScalarNode) else None
        why = template_problem(text) if text is not None else "expected a text"
        if len(name) > ATTRIBUTE_KEY_MAX:
            why = f"names are at most {ATTRIBUTE_KEY_MAX} characters"
        if why:
            r.problem(line_of(v), at, why)
            ok = False
        else:
            out.append((name, str(text)))
    return tuple(out) if ok else None


def template_problem(text: str) -> str | None:
    """Why an attribute's text is not a template of the known placeholders, or None."""
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(text)
                  if f is not None or spec or conv]
    except ValueError as exc:
        return f"invalid template {text!r}: {exc} (write {{{{ for a brace)"
    unknown = [f for f in fields if f not in PLACEHOLDERS]
    if unknown:
        return (f"unknown placeholder {{{unknown[0]}}}; expected "
                + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
    return None


def render(template: str, *, path: str, project: str, sha256: str) -> str:
    folder = path.rpartition("/")[0]
    return template.format(path=path, folder=folder, project=project, sha256=sha256)
