"""The API key: loaded from an env var or a file, never shown."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import NoReturn

from syncd.api import scrub

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ApiKey:
    """The API key. Its str/repr never shows the secret; ``reveal()`` does, for the header only.

    Creating one registers the value with :mod:`syncd.api.scrub`: from then on it is
    masked in every error and log line of the process, whoever echoes it. It cannot be
    pickled (the bytes would hold the value); a copy is the same object."""

    __slots__ = ("_fingerprint", "_value")

    def __init__(self, value: str) -> None:
        value = value.strip()
        if not value:
            raise ValueError("API key is empty")
        if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("API key contains whitespace or control characters")
        self._value = value
        self._fingerprint = hashlib.sha256(value.encode()).hexdigest()[:12]
        scrub.register(value)

    def reveal(self) -> str:
        return self._value

    def fingerprint(self) -> str:
        """Short stable hash of the key, to name shared pacing files without leaking it."""
        return self._fingerprint

    def __repr__(self) -> str:
        return f"ApiKey(fingerprint={self._fingerprint})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> NoReturn:
        raise TypeError("an API key is not pickled: load it again from its source")

    def __copy__(self) -> ApiKey:
        return self

    def __deepcopy__(self, _memo: object) -> ApiKey:
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    @classmethod
    def load(cls, *, env: str | None = None, file: Path | None = None) -> ApiKey:
        """From an env var name or a file (systemd credentials); raises ValueError
        naming the source, never the value. With both, the env var wins when set.

        A file is named as it was written in the configuration when the path says so
        (``as_written``): a path built from ``${VAR}`` may hold a secret by mistake."""
        if env is None and file is None:
            raise ValueError("no API key source given (env var or file)")
        if env is not None:
            if not _ENV_NAME.match(env):
                # Never echoed: this is most likely the key itself in place of a name.
                raise ValueError("API key env var: the name given is not a variable name")
            raw = os.environ.get(env)
            if raw is not None and raw.strip():
                try:
                    return cls(raw)
                except ValueError as exc:
                    raise ValueError(f"API key from env var {env}: {exc}") from None
            if file is None:
                raise ValueError(f"API key env var {_name_shown(env)} is not set or empty")
        assert file is not None
        shown = _path_shown(getattr(file, "as_written", None) or str(file))
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read API key file {shown}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"API key file {shown} is not UTF-8") from None
        try:
            return cls(text)
        except ValueError as exc:
            raise ValueError(f"API key from file {shown}: {exc}") from None


# A key pasted where its source belongs must not be echoed by the error that follows.
# Names people export are upper case, and key files have a folder or a suffix; a value
# that is neither is more likely the key itself, and is not shown.
_KEY_LIKE = 16


def _name_shown(env: str) -> str:
    if env == env.upper() or len(env) < _KEY_LIKE:
        return env
    return "(its name not shown: mixed case, it may be the key itself)"


def _path_shown(path: str) -> str:
    name = Path(path).name
    if "." in name or len(name) < _KEY_LIKE:
        return path
    return "(its path not shown: a bare name like this may be the key itself)"
