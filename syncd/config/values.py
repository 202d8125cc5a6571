"""One value of one key: the value types (a purpose rule, a delete cap) and the rule that
turns the text written for a key of each kind into its value, or says why it cannot.

A refusal is an ``Invalid`` whose message names what was expected; ``echo`` says whether
the reader may quote the text back (never for what may hold a secret: a URL with a
password, a key pasted where a variable name belongs).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from wcmatch import glob

from syncd.api.providers import DEFAULT_PROVIDER, PROVIDERS, Provider, PurposeSpec, SizeCap
from syncd.units import parse_size

EMBEDDED = "embedded"
# The globs' dialect: validated here with the flags the rules are matched with.
GLOB_FLAGS = glob.GLOBSTAR | glob.BRACE | glob.DOTGLOB | glob.IGNORECASE
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"  # compiled on first use (re caches it)
_NON_FINITE = ("inf", "infinity", "nan", ".inf", ".nan")
_STORE_SCHEMES = ("redis", "rediss", "unix")


class Invalid(ValueError):
    """A value that cannot be used; ``echo`` says whether the message may quote it."""

    def __init__(self, message: str, *, echo: bool = True) -> None:
        super().__init__(message)
        self.echo = echo


if TYPE_CHECKING:  # a name for the checker only: a Protocol class costs at every start
    from typing import Protocol

    class Bounds(Protocol):
        """What a key declares about its values (``keys.Key`` is one)."""

        @property
        def minimum(self) -> float | None: ...
        @property
        def maximum(self) -> float | None: ...
        @property
        def above(self) -> bool: ...
        @property
        def choices(self) -> tuple[str, ...]: ...


# ---------------------------------------------------------------- value types


@dataclass(frozen=True)
class PurposeRule:
    patterns: tuple[str, ...]
    # One of the provider's purposes, or "skip".
    purpose: str
    # What the provider accepts for this purpose (its profile's checks), so whoever
    # holds the rule can check a file locally without knowing the provider.
    accepts: PurposeSpec = field(default_factory=PurposeSpec)


def with_checks(
    rules: Sequence[PurposeRule], provider: Provider, max_file_bytes: int | None = None
) -> tuple[PurposeRule, ...]:
    """The rules, each carrying what the provider accepts for its purpose, plus the
    project's own cap (``rules.max_file_bytes``)."""
    out = []
    for rule in rules:
        spec = provider.spec(rule.purpose)
        if max_file_bytes is not None:
            cap = SizeCap(max_file_bytes, "this project (rules.max_file_bytes)")
            spec = dataclasses.replace(spec, caps=(*spec.caps, cap))
        out.append(PurposeRule(rule.patterns, rule.purpose, spec))
    return tuple(out)


def default_purposes(provider: Provider) -> tuple[PurposeRule, ...]:
    rules = [PurposeRule(globs, purpose) for globs, purpose in provider.default_purposes]
    return with_checks(rules, provider)


DEFAULT_PURPOSES = default_purposes(PROVIDERS[DEFAULT_PROVIDER])


@dataclass(frozen=True)
class MaxDelete:
    """A cap on deletes per run: an absolute count, or a share of tracked files."""

    count: int | None = None
    percent: float | None = 50.0

    def limit(self, tracked: int) -> int:
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return int(tracked * self.percent / 100)

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


def parse_max_delete(text: str) -> MaxDelete:
    """``N`` or ``P%``: the rule of ``sync.max_delete`` and of a one-run override."""
    text = text.strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            pct = math.nan
        if not 0 <= pct <= 100:  # also refuses nan
            raise Invalid("expected a percentage from 0% to 100%")
        return MaxDelete(percent=pct)
    try:
        count = int(text)
    except ValueError:
        raise Invalid("expected a count such as 100 or a percentage such as 50%") from None
    if count < 0:
        raise Invalid("must be at least 0")
    return MaxDelete(count=count, percent=None)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise Invalid("expected HOST:PORT such as 127.0.0.1:9464")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether a listener on ``host`` is reachable from this machine only."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def glob_problem(pattern: str) -> str | None:
    """Why a glob is malformed, or None. wcmatch reads an unclosed ``[`` or ``{`` as a
    literal character, so ``[abc`` would silently match only a file named ``[abc``."""
    if not pattern:
        return "an empty pattern"
    i, depth, n = 0, 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] not in "]/":
                j += 2 if pattern[j] == "\\" else 1
            if j >= n or pattern[j] != "]":
                return "unclosed [ (write \\[ for a literal bracket)"
            i = j + 1
            continue
        if c == "{":
            depth += 1
        elif c == "}" and depth:
            depth -= 1
        i += 1
    if depth:
        return "unclosed { (write \\{ for a literal brace)"
    try:
        glob.compile(pattern, flags=GLOB_FLAGS)
    except Exception as exc:  # wcmatch's own refusals, e.g. too many brace expansions
        return str(exc) or type(exc).__name__
    return None


# ---------------------------------------------------------------- one scalar, by kind


def _in_range(key: Bounds, value: float) -> float:
    if key.minimum is not None:
        if key.above and not value > key.minimum:
            raise Invalid(f"must be more than {key.minimum:g}")
        if value < key.minimum:
            raise Invalid(f"must be at least {key.minimum:g}")
    if key.maximum is not None and value > key.maximum:
        raise Invalid(f"must be at most {key.maximum:g}")
    return value


def _number(key: Bounds, text: str) -> float:
    if text.strip().lower().lstrip("+-") in _NON_FINITE:
        raise Invalid("must be a finite number")
    try:
        value = float(text)
    except ValueError:
        raise Invalid("expected a number") from None
    if not math.isfinite(value):
        raise Invalid("must be a finite number")
    return _in_range(key, value)


def _integer(key: Bounds, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise Invalid("expected a whole number") from None
    _in_range(key, value)
    return value


def _size(key: Bounds, text: str) -> int:
    try:
        value = parse_size(text)
    except ValueError:
        raise Invalid("expected a size such as 500MB or 100GB") from None
    _in_range(key, value)
    return value


def _bool(_key: Bounds, text: str) -> bool:
    low = text.lower()
    if low in ("true", "yes", "on", "1"):
        return True
    if low in ("false", "no", "off", "0"):
        return False
    raise Invalid("expected true or false")


def _url(_key: Bounds, text: str) -> str:
    url = text.strip().rstrip("/")
    if url != EMBEDDED and not re.match(r"^https?://[^/\s]+", url):
        raise Invalid("expected 'embedded' or an http(s) URL")
    if url != EMBEDDED:
        _host_and_port(url)
    return url


def _host_and_port(url: str) -> None:
    """A URL's host and port as a client will read them: a bad port or an unclosed
    ``[`` is found here, not at the first connection."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise Invalid(f"is not a usable URL ({exc})", echo=False) from None
    if port == 0:
        raise Invalid("is not a usable URL (port 0)", echo=False)


def _store_url(_key: Bounds, text: str) -> str:
    """``limits.shared``: a Redis URL. Never echoed: it may hold a password."""
    url = text.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in _STORE_SCHEMES:
        raise Invalid("must be a redis://, rediss:// or unix:// URL", echo=False)
    _host_and_port(url)
    parts = urlsplit(url)
    if scheme != "unix" and not parts.hostname:
        raise Invalid("names no host", echo=False)
    if scheme == "unix" and not parts.path:
        raise Invalid("names no socket path", echo=False)
    return url


def _env_name(_key: Bounds, text: str) -> str:
    if not re.match(ENV_NAME, text):
        # Never echoed: a key pasted here by mistake must not reach the journal.
        raise Invalid(
            "must be the name of an environment variable (letters, digits and _), "
            "not the key itself",
            echo=False,
        )
    return text


def string(_key: Bounds, text: str) -> str:
    if not text.strip():
        raise Invalid("expected a non-empty string")
    return text


def _cron(key: Bounds, text: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    text = string(key, text)
    try:
        CronTrigger.from_crontab(text)
    except ValueError as exc:
        raise Invalid(f"not a valid 5-field crontab line ({exc})") from None
    return text


def _choice(key: Bounds, text: str) -> str:
    if text.lower() not in key.choices:
        raise Invalid(f"expected one of {', '.join(key.choices)}")
    return text.lower()


def _address(_key: Bounds, text: str) -> str:
    parse_address(text)
    return text.strip()


# The scalar kinds, each read by one rule (paths, globs and purpose lists are the
# reader's: they need the config's folder or are lists).
SCALARS: Mapping[str, Callable[[Bounds, str], object]] = {
    "number": _number, "integer": _integer, "size": _size, "bool": _bool, "choice": _choice,
    "url": _url, "store_url": _store_url, "env_name": _env_name, "cron": _cron,
    "max_delete": lambda _key, text: parse_max_delete(text), "address": _address,
    "string": string,
}  # fmt: skip
