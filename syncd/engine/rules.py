"""Which paths are ours to sync, and with which purpose.

Globs are gitignore-like: a pattern without ``/`` matches the name at any depth,
``**`` spans folders, ``{a,b}`` alternates. First purpose rule that matches wins.
"""

from __future__ import annotations

from collections.abc import Iterable

from wcmatch import glob

from syncd.config import PurposeRule, RulesConfig

_FLAGS = glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB | glob.IGNORECASE


def _anchor(patterns: Iterable[str]) -> list[str]:
    return [p if "/" in p else f"**/{p}" for p in patterns]


class Rules:
    def __init__(self, config: RulesConfig) -> None:
        self._include = glob.compile(_anchor(config.include), flags=_FLAGS)
        self._exclude = (
            glob.compile(_anchor(config.exclude), flags=_FLAGS) if config.exclude else None
        )
        self._purposes = [
            (glob.compile(_anchor(rule.patterns), flags=_FLAGS), rule) for rule in config.purposes
        ]

    def is_candidate(self, rel_path: str) -> bool:
        """True when the path is included and not excluded (temporary names are excluded)."""
        if not self._include.match(rel_path):
            return False
        return not (self._exclude is not None and self._exclude.match(rel_path))

    def excludes_dir(self, rel_dir: str) -> bool:
        """True when nothing below this folder can be included (lets the scan prune it)."""
        return self._exclude is not None and self._exclude.match(rel_dir + "/x")

    def purpose(self, rel_path: str) -> PurposeRule | None:
        for matcher, rule in self._purposes:
            if matcher.match(rel_path):
                return rule
        return None
