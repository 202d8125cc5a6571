"""Can a one-off command talk to the remote at all? If not, say why in words a person
can act on: the URL, what failed (nothing listening, a name that does not resolve, a
TLS handshake), and what to check; a 404 on the files path names the base_url the
provider expects; a 401 names where the key came from (variable or file, as written).

One-off commands fail fast here with their own exit code; the daemon never calls
this: it keeps retrying with its own backoff.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol

from syncd.api.errors import APIError, AuthenticationError, NetworkError, NotFoundError
from syncd.config import Config
from syncd.exitcodes import ExitCode

# The base_url each provider serves its Files API under (what a 404 hints at).
BASE_URL_HINTS = {
    "dashscope": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1 "
    "(DashScope serves the Files API under /compatible-mode/v1)",
    "openai": "https://api.openai.com/v1 (OpenAI serves the Files API under /v1)",
}


class ListsFiles(Protocol):
    def iter_files(self, *, page_size: int | None = None) -> Iterable[object]: ...


class RemoteProblem(Exception):
    """The remote cannot be used as configured; ``exit_code`` says which kind."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def key_source(config: Config) -> str:
    """Where the key came from, as the configuration wrote it (never the key)."""
    api = config.api
    env = api.api_key_env
    if env and os.environ.get(env, "").strip():
        return f"environment variable {env} (api.api_key_env)"
    if api.api_key_file is not None:
        shown = config.origin.shown("api.api_key_file", api.api_key_file)
        return f"file {shown} (api.api_key_file)"
    if api.embedded:
        return "the embedded emulator's built-in key"
    return f"environment variable {env} (api.api_key_env)" if env else "no key configured"


NO_KEY = "the server requires an API key and none is configured: set api.api_key_env or api.api_key_file"  # noqa: E501


def refusal(config: Config, status: int | None) -> tuple[str, str]:
    """What a refused key (401) means as configured: the configuration key to point at,
    and what to do. One wording for ``check-config --online`` and for a run. When the
    provider needs no key and none was sent, the server wants one: no key is wrong."""
    from syncd.bootstrap import load_key

    try:
        sent = load_key(config) is not None
    except ValueError:  # cannot happen once a request was made; say what was configured
        sent = True
    api = config.api
    said = f" (status {status})" if status is not None else ""
    if not sent and api.api_key_env:  # named, but the variable is unset or empty
        return "api.api_key_env", (
            f"the server requires an API key and {api.api_key_env} (api.api_key_env) is not "
            f"set{said}"
        )
    if not sent:
        return "api.provider", f"{NO_KEY}{said}"
    env_set = bool(api.api_key_env and os.environ.get(api.api_key_env, "").strip())
    from_file = api.api_key_file is not None and not env_set
    where = "api.api_key_file" if from_file else "api.api_key_env"
    return where, (
        f"the remote refused the key{said}, which came from {key_source(config)}: "
        "check it is the right key for this endpoint and region"
    )


def network_hint(error: str) -> str:
    """What to check, from the transport failure's text."""
    low = error.lower()
    if "refused" in low:
        return "nothing is listening there: is the server running, and are host and port right?"
    if (
        "name or service not known" in low
        or "nodename nor servname" in low
        or "name resolution" in low
        or "getaddrinfo" in low
        or "no address associated" in low
    ):
        return "the host name does not resolve: check its spelling in api.base_url, and DNS"
    if "ssl" in low or "tls" in low or "certificate" in low or "handshake" in low:
        return (
            "the TLS handshake failed: check http:// versus https:// in api.base_url, the "
            "server's certificate, and SSL_CERT_FILE if a private CA signs it"
        )
    if "timeout" in low or "timed out" in low:
        return (
            "no answer within api.connect_timeout_s: check the host, a firewall, or a proxy "
            "(HTTPS_PROXY)"
        )
    return "check api.base_url and the network path to it"


def describe(config: Config, base_url: str, exc: APIError) -> RemoteProblem | None:
    """The problem ``exc`` shows with the remote as configured, or None when it is not
    about reaching or using the remote at all (a 5xx, a 429: try again later)."""
    where = f"{config.origin.at('api.base_url')}"
    if isinstance(exc, NetworkError) and exc.phase == "connect":
        return RemoteProblem(
            f"cannot reach {base_url}: {exc.message}\n  {network_hint(exc.message)}\n"
            f"  (configured at {where})",
            ExitCode.UNREACHABLE,
        )
    if isinstance(exc, AuthenticationError):
        key, why = refusal(config, exc.status)
        return RemoteProblem(
            f"{base_url}: {why}\n  (configured at {config.origin.at(key)}; the server "
            f"said: {exc.message})",
            ExitCode.USAGE,
        )
    if isinstance(exc, NotFoundError):
        expected = BASE_URL_HINTS.get(config.api.profile.name)
        hint = (
            f"for provider {config.api.profile.name}, base_url should look like {expected}"
            if expected
            else "base_url should be the URL the server's /files path is under"
        )
        return RemoteProblem(
            f"{base_url}/files does not exist (status 404: {exc.message}); {hint}\n"
            f"  (configured at {where})",
            ExitCode.USAGE,
        )
    return None


def probe(config: Config, client: ListsFiles, base_url: str) -> None:
    """List one page; raise RemoteProblem if the remote cannot be used as configured."""
    try:
        next(iter(client.iter_files(page_size=1)), None)
    except APIError as exc:
        problem = describe(config, base_url, exc)
        if problem is not None:
            raise problem from None
        # Anything else (5xx, 429 after retries) the run itself reports and counts.

