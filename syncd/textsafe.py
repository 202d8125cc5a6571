"""Making untrusted text (file names, provider messages) safe to print to a terminal.

A file name may hold any byte but ``/`` and NUL: an ANSI escape can clear the
screen or recolour what follows, a newline can forge a line of output, a bidi
override can make ``txt.exe`` read as ``exe.txt``. Human output passes every such
string through :func:`visible`, which shows those characters as backslash
escapes; ``--json`` output is left exact.
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL; line and paragraph separators; bidi embeddings,
# overrides and isolates; surrogates (an undecodable byte arrives as U+DC80..U+DCFF
# through os.fsdecode, and a lone surrogate cannot even be written to a UTF-8 stream).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        # The byte the file name really holds (os.fsdecode's surrogateescape).
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def visible(text: object) -> str:
    """``text`` with every character that could control a terminal shown as an escape."""
    return _UNSAFE.sub(_escape, str(text))
