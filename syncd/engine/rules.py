"""Which paths are ours to sync, and with which purpose.

Globs are gitignore-like: a pattern without ``/`` matches the name at any depth,
``**`` spans folders, ``{a,b}`` alternates. First purpose rule that matches wins.

A path is a *candidate* when it is included, not excluded, and a purpose rule other
than ``skip`` matches it: only candidates are stat'ed, hashed or recorded. Every
other path gets a *skip label* naming the rule that left it out, so a scan can
count them instead of storing them. Matching is one regex per group of patterns,
and patterns without ``/`` are matched against the name alone (a tree of a
million entries is matched a million times).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from wcmatch import glob

from syncd.config import PurposeRule, RulesConfig

_FLAGS = glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB | glob.IGNORECASE


# Without DOTGLOB, ``**`` does not cross hidden folders, so ``**/p`` would not be the
# same as "the name matches p": then every pattern is matched on the whole path.
_BY_NAME = bool(_FLAGS & glob.DOTGLOB)


def _anchor(patterns: Iterable[str]) -> list[str]:
    return [p if "/" in p else f"**/{p}" for p in patterns]


class _Matcher(Protocol):
    def fullmatch(self, text: str, /) -> object: ...


class _Wcmatch:
    """wcmatch's own matcher, for dialects whose patterns do not translate to one regex."""

    def __init__(self, patterns: list[str]) -> None:
        self._matcher = glob.compile(patterns, flags=_FLAGS)

    def fullmatch(self, text: str, /) -> bool:
        return bool(self._matcher.match(text))


def _regex(patterns: Sequence[str]) -> _Matcher | None:
    """One matcher for what ``glob.compile(patterns).match`` matches."""
    if not patterns:
        return None
    include, exclude = glob.translate(list(patterns), flags=_FLAGS)
    if exclude or not include:  # negated patterns (a NEGATE dialect)
        return _Wcmatch(list(patterns))
    return re.compile("|".join(f"(?:{r})" for r in include))


# Name patterns of these shapes are matched with string methods, not a regex: they are
# nearly all real rules (``*.pdf``, ``~$*``, ``.*``, ``**``), and each file of a big
# tree is matched against every group.
_LITERAL = re.compile(r"[A-Za-z0-9_.~$ -]*")
_FOLD = bool(_FLAGS & glob.IGNORECASE)


def _fold(name: str) -> str:
    return name.lower() if _FOLD else name


class _Names:
    """Name patterns split into the quick shapes and a regex for the rest."""

    def __init__(self, patterns: Sequence[str]) -> None:
        fold = _fold
        self.every = False
        suffixes: list[str] = []
        prefixes: list[str] = []
        exact: set[str] = set()
        rest: list[str] = []
        for p in patterns:
            if p in ("*", "**"):
                self.every = True
            elif p.startswith("*") and _LITERAL.fullmatch(p[1:]):
                suffixes.append(fold(p[1:]))
            elif p.endswith("*") and _LITERAL.fullmatch(p[:-1]):
                prefixes.append(fold(p[:-1]))
            elif _LITERAL.fullmatch(p):
                exact.add(fold(p))
            else:
                rest.append(p)
        self._suffixes = tuple(suffixes)
        self._prefixes = tuple(prefixes)
        self._exact = exact
        self._rest = _regex(rest)

    def match(self, name: str, folded: str) -> bool:
        """``folded``: the name as the dialect compares it (lower case when it ignores case)."""
        if self.every:
            return True
        if self._suffixes and folded.endswith(self._suffixes):
            return True
        if self._prefixes and folded.startswith(self._prefixes):
            return True
        if folded in self._exact:
            return True
        return self._rest is not None and bool(self._rest.fullmatch(name))


class _Globs:
    """A group of patterns matched as gitignore-like globs."""

    def __init__(self, patterns: Sequence[str], *, anchor: bool = True) -> None:
        self.patterns = tuple(patterns)
        names = [p for p in patterns if "/" not in p] if _BY_NAME and anchor else []
        paths = [p for p in patterns if p not in names]
        self._name = _Names(names) if names else None
        self._path = _regex(_anchor(paths) if anchor else paths)
        self._reach = [_segments(p) for p in (_anchor(patterns) if anchor else patterns)]
        self._each: list[_Globs] | None = None

    def match(self, rel: str, name: str | None = None, folded: str | None = None) -> bool:
        """Whether ``rel`` matches; ``name`` is its last part (and ``folded`` that part as
        the dialect compares it), when the caller has them."""
        if self._name is not None:
            name = rel.rpartition("/")[2] if name is None else name
            if self._name.match(name, _fold(name) if folded is None else folded):
                return True
        return self._path is not None and bool(self._path.fullmatch(rel))

    def which(self, rel: str) -> str:
        """The first pattern that matches (for labels; only called on a match)."""
        if self._each is None:
            self._each = [_Globs([p]) for p in self.patterns]
        return next((g.patterns[0] for g in self._each if g.match(rel)), self.patterns[0])

    def reaches_below(self, rel_dir: str) -> bool:
        """Whether any pattern could match a path inside this folder."""
        parts = rel_dir.split("/")
        return any(_reaches(segs, parts) for segs in self._reach)


def _segments(pattern: str) -> list[str] | None:
    """The pattern's folder levels; None when braces span levels (cannot be split)."""
    segs = pattern.split("/")
    if any(s.count("{") != s.count("}") for s in segs):
        return None
    return segs


def _reaches(segs: list[str] | None, parts: list[str]) -> bool:
    if segs is None:
        return True
    for i, part in enumerate(parts):
        if i < len(segs) and segs[i] == "**":
            return True
        if i >= len(segs) - 1:  # the pattern's last level names files, not this folder
            return False
        if not glob.globmatch(part, segs[i], flags=_FLAGS):
            return False
    return True


def _skip_label(name: str) -> str:
    dot = name.rfind(".")
    return _ext_label(name[dot + 1 :] if dot >= 0 else "(none)")


@functools.lru_cache(maxsize=1024)
def _ext_label(ext: str) -> str:
    return f"unsupported extension .{ext.lower()}: no purpose rule matches"


NOT_INCLUDED = "not matched by rules.include"
EXCLUDED = "excluded by rules.exclude"


class Rules:
    def __init__(self, config: RulesConfig) -> None:
        self._include = _Globs(config.include)
        self._exclude = _Globs(config.exclude)
        self._purposes = [(_Globs(rule.patterns), rule) for rule in config.purposes]
        # A folder is pruned when an exclude pattern ``P/**`` has P matching it.
        self._exclude_dirs = _Globs(
            [p[: -len("/**")] for p in _anchor(config.exclude) if p.endswith("/**")],
            anchor=False,
        )
        self._exclude_files = _Globs(
            [p for p in config.exclude if not _anchor([p])[0].endswith("/**")]
        )
        self._selecting = [g for g, rule in self._purposes if rule.purpose != "skip"]

    def is_candidate(self, rel_path: str) -> bool:
        """True when the path is included, not excluded (temporary names are excluded),
        and a purpose rule other than skip takes it."""
        return not isinstance(self.verdict(rel_path), str)

    def verdict(self, rel_path: str, *, walked: bool = False) -> PurposeRule | str:
        """The purpose rule of a candidate, or the label of the rule that leaves it out.

        Decided by the path alone: no disk access. ``walked``: the path was found by
        a walk that entered only folders :meth:`can_hold` accepted, so the exclude
        patterns ending in ``/**`` cannot match it and are not tried again.
        """
        name = rel_path.rpartition("/")[2]
        folded = _fold(name)
        if not self._include.match(rel_path, name, folded):
            return NOT_INCLUDED
        if (self._exclude_files if walked else self._exclude).match(rel_path, name, folded):
            return f"{EXCLUDED} {self._exclude.which(rel_path)}"
        for matcher, rule in self._purposes:
            if matcher.match(rel_path, name, folded):
                if rule.purpose == "skip":
                    return "skipped by a purpose rule: " + ", ".join(rule.patterns)
                return rule
        return _skip_label(name)

    def can_hold(self, rel_dir: str) -> bool:
        """False when no candidate can be below this folder: the scan does not enter it,
        the watcher does not watch it. Pruned: folders an exclude pattern ending in
        ``/**`` covers, and folders no include pattern or no non-skip purpose rule
        reaches into."""
        if self._exclude_dirs.patterns and self._exclude_dirs.match(rel_dir):
            return False
        if not self._include.reaches_below(rel_dir):
            return False
        return any(g.reaches_below(rel_dir) for g in self._selecting)

    def purpose(self, rel_path: str) -> PurposeRule | None:
        for matcher, rule in self._purposes:
            if matcher.match(rel_path):
                return rule
        return None
