"""What a YAML node of the config says about itself: its line, whether it is null, and
the marker of a value found invalid. Below the reader and the parsers of structured keys
(``vector_rules``) alike, so neither imports the other."""

from __future__ import annotations

import yaml


class Absent:
    """A key whose value was invalid: its problem is recorded, its default is not used."""


BAD = Absent()


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1
