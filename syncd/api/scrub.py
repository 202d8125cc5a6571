"""Masking the API key in text that came from the network.

A provider, or a gateway or proxy in front of it, may echo the request's
``Authorization`` header in an error: in its message, code, type or request id, in a
nested field, in a header. Every such string passes through :func:`scrub` where a
response becomes an exception (``syncd.api._http`` and the constructor of every
``syncd.api.errors.APIError``), and every log line through the same function, so a
caller cannot forget it: nothing stored, logged or shown carries the key.

Each secret is masked in the spellings an echo may use: as sent (which covers
``Bearer <key>``), percent-encoded (either hex case), JSON- and HTML-escaped, in base64
and base64url (inside whatever else was encoded with it, ``Bearer <key>`` say), and in
any letter case. A secret of at least ``PARTIAL_FROM`` characters is also masked
wherever ``PARTIAL`` or more of its consecutive characters appear in any of those
spellings: a proxy that shows only the key's tail, or cuts the header short, gives
away no less than that. A shorter secret is masked whole only (in one of 15
characters, 8 would be most of it, and common words would match); one under
``SHORTEST`` characters is not masked at all (it would mask ordinary words).

Every :class:`~syncd.api.key.ApiKey` registers its value when it is created.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from urllib.parse import quote

MASK = "***"
# Runs of this many characters of a secret are masked ...
PARTIAL = 8
# ... in secrets at least this long.
PARTIAL_FROM = 16
# Shorter values are not registered: they would mask ordinary words.
SHORTEST = 6

_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(text: str) -> str:
    """ASCII letters in lower case; every other character kept, so indexes match."""
    return text.translate(_LOWER)


# html.escape(text, quote=True), without the html package (it loads its table of
# entities, which a masking of five characters does not need).
_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})


def _html_escaped(text: str) -> str:
    return text.translate(_HTML)


def spellings(secret: str) -> set[str]:
    """The ways an echo may write ``secret`` (case-folded)."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret, safe="-._~"),
        json.dumps(secret, ensure_ascii=True)[1:-1],
        json.dumps(secret, ensure_ascii=True)[1:-1].replace("/", "\\/"),
        _html_escaped(secret),
        *_base64_runs(secret),
    }
    return {_fold(form) for form in forms if form}


def _base64_runs(secret: str) -> list[str]:
    """The base64 characters that only ``secret``'s bytes decide, at each of the three
    offsets it may start at in what was encoded: a character that mixes in a bit of
    a byte before or after it is left out."""
    raw = secret.encode()
    runs = []
    for offset in range(3):
        # Character i holds bits 6i..6i+5 of the encoded bytes.
        first, end = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6
        text = base64.b64encode(b"\0" * offset + raw).decode()[first:end]
        runs += [text, text.replace("+", "-").replace("/", "_")]
    return runs


class Scrubber:
    """A set of secrets, and the masking of them in text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        # Every spelling to mask at any position (a lookahead, so overlapping runs of a
        # secret's characters are all found): its runs of PARTIAL characters, or the
        # whole of a short secret.
        self._pattern: re.Pattern[str] | None = None

    def add(self, secret: str) -> None:
        if len(secret) < SHORTEST or secret in self._secrets:
            return
        with self._lock:
            secrets = self._secrets | {secret}
            pieces: set[str] = set()
            for value in secrets:
                for form in spellings(value):
                    if len(value) >= PARTIAL_FROM and len(form) >= PARTIAL:
                        pieces.update(form[i : i + PARTIAL] for i in range(len(form) - PARTIAL + 1))
                    else:
                        pieces.add(form)
            ordered = sorted(pieces, key=lambda p: (-len(p), p))
            # Published as one reference each: a reader sees the old set or the new.
            self._pattern = re.compile("(?=(" + "|".join(map(re.escape, ordered)) + "))")
            self._secrets = frozenset(secrets)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets

    def scrub(self, text: str) -> str:
        """``text`` with every run that spells a secret, or part of one, replaced by
        ``***`` (adjacent runs become one)."""
        pattern = self._pattern
        if not text or pattern is None:
            return text
        hidden: bytearray | None = None
        for match in pattern.finditer(_fold(text)):
            if hidden is None:
                hidden = bytearray(len(text))
            start, end = match.start(), match.start() + len(match.group(1))
            hidden[start:end] = b"\x01" * (end - start)
        if hidden is None:
            return text
        out: list[str] = []
        for i, ch in enumerate(text):
            if not hidden[i]:
                out.append(ch)
            elif i == 0 or not hidden[i - 1]:
                out.append(MASK)
        return "".join(out)


_SECRETS = Scrubber()


def register(secret: str) -> None:
    """Mask ``secret`` in everything :func:`scrub` sees from now on, in this process."""
    _SECRETS.add(secret)


def scrub(text: str) -> str:
    """``text`` with every registered secret masked (see the module doc)."""
    return _SECRETS.scrub(text)


def holds_secret(text: str) -> bool:
    """Whether ``text`` holds a registered secret whole, as sent: a check cheap enough for
    every id and name of a listing, where masking would change what they name."""
    return any(secret in text for secret in _SECRETS.secrets)


def scrub_optional(text: str | None) -> str | None:
    return None if text is None else _SECRETS.scrub(text)
