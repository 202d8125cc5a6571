"""Rules across keys, checked once every key is read: pairs that exclude each other,
what the provider allows, and folders syncd must write that it could not, or that lie
inside the mirrored root."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syncd.api.providers import DEFAULT_PROVIDER, PROVIDERS, SKIP
from syncd.config.reader import Reader
from syncd.config.values import EMBEDDED, is_loopback, parse_address

# The valid value of a key (its default when left out), None when it was invalid.
Got = Callable[[str], Any]


def cross_checks(r: Reader, got: Got) -> None:
    _pairs(r, got)
    _listener(r, got)
    _provider_checks(r, got)
    _path_checks(r, got)


def _pairs(r: Reader, got: Got) -> None:
    both = got("api.api_key_env") is not None and got("api.api_key_file") is not None
    if both and "api.api_key_env" in r.lines:
        r.problem(r.line("api.api_key_file"), "api.api_key_file",
                  "set api_key_env or api_key_file, not both")  # fmt: skip

    settle, max_settle = got("sync.settle_s"), got("sync.max_settle_s")
    if None not in (settle, max_settle) and "sync.max_settle_s" in r.lines and max_settle < settle:
        r.problem(r.line("sync.max_settle_s"), "sync.max_settle_s", "must be at least settle_s")

    if got("reconcile.cron") is not None and "reconcile.interval_s" in r.lines:
        r.problem(r.line("reconcile.cron"), "reconcile.cron", "set interval_s or cron, not both")


def _listener(r: Reader, got: Got) -> None:
    """The status page names every file: off loopback only when the config says so."""
    address = got("daemon.metrics")
    if address is None or got("daemon.metrics_public"):
        return
    host = parse_address(address)[0]
    if not is_loopback(host):
        r.problem(r.line("daemon.metrics"), "daemon.metrics",
                  f"{host} is not a loopback address: the status page and the metrics would "
                  "be served to the network; set daemon.metrics_public: true to mean it, "
                  "or use 127.0.0.1")  # fmt: skip


def _provider_checks(r: Reader, got: Got) -> None:
    """What api.provider allows: its purposes, its list page sizes, its endpoint."""
    name = got("api.provider")
    if name is None:
        return
    profile = PROVIDERS[name]
    # Left out, the purposes are the provider's defaults (see load._build).
    written = got("rules.purposes") if "rules.purposes" in r.lines else ()
    for i, rule in enumerate(written or ()):
        if not profile.allows(rule.purpose):
            allowed = ", ".join([*profile.purposes, SKIP])
            r.problem(r.purpose_lines.get(i, r.line("rules.purposes")),
                      f"rules.purposes[{i}].purpose",
                      f"{rule.purpose!r} is not a purpose of provider {name}; expected one of "
                      f"{allowed} (or api.provider: generic for any)")  # fmt: skip
    if got("vector_stores.rules") and not profile.vector_stores:
        r.problem(r.line("vector_stores.rules"), "vector_stores.rules",
                  f"provider {name} has no vector stores; they need api.provider: openai or "
                  "generic (a server with OpenAI's /vector_stores routes)")  # fmt: skip
    size = got("api.list_page_size")
    if size is not None and size > profile.list_max_page_size:
        r.problem(r.line("api.list_page_size"), "api.list_page_size",
                  f"must be at most {profile.list_max_page_size} for provider {name}")  # fmt: skip
    if got("api.base_url") == EMBEDDED and name != DEFAULT_PROVIDER and "api.provider" in r.lines:
        r.problem(r.line("api.base_url"), "api.base_url",
                  f"the embedded emulator speaks {DEFAULT_PROVIDER} only; for {name} run "
                  f"`syncd emulate --flavor openai` and set base_url to its URL")  # fmt: skip


def _path_checks(r: Reader, got: Got) -> None:
    root = got("root")
    bad: set[str] = set()
    outbox = got("pull.outbox")
    if root is not None and outbox is not None and _inside(root, outbox):
        r.problem(r.line("pull.outbox"), "pull.outbox",
                  "holds the root; pulled files must go outside the mirrored folder")  # fmt: skip
    if root is not None:
        # Anything syncd writes inside the root would be uploaded by syncd in a loop.
        for key in ("state_dir", "mapping_file", "limits.pacing_dir", "pull.outbox"):
            path = got(key)
            if path is not None and _inside(path, root):
                bad.add(key)
                r.problem(
                    r.line(key), key,
                    "is inside root, so syncd would upload its own files in a loop; "
                    "move it out of the mirrored folder",
                )  # fmt: skip
    for key in ("state_dir", "limits.pacing_dir"):
        folder = got(key)
        why = None if folder is None or key in bad else _folder_problem(folder, key in r.written)
        if why:
            r.problem(r.line(key), key, why)
    mapping = got("mapping_file")
    if mapping is not None and "mapping_file" not in bad:
        if mapping.is_dir():
            r.problem(r.line("mapping_file"), "mapping_file", "is a folder; name a file")
        elif why := _folder_problem(mapping.parent, "mapping_file" in r.written):
            folder = "its folder" if "mapping_file" in r.written else str(mapping.parent)
            r.problem(r.line("mapping_file"), "mapping_file", f"{folder} {why}")


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _creatable(parent: Path) -> bool:
    """Whether a folder can be made in ``parent``: tried, then removed, because
    ``os.access`` says yes to root even on /proc or a read-only mount."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".syncd-probe-", dir=parent))
    except OSError:
        return False
    return True


def _folder_problem(path: Path, interpolated: bool) -> str | None:
    """Why a folder syncd must create or write into is unusable, or None."""
    if path.exists():
        return None if path.is_dir() else "is not a folder"
    parent = _nearest_existing(path)
    if parent.is_dir() and _creatable(parent):
        return None
    where = "a parent folder" if interpolated else str(parent)
    what = "is not a folder" if not parent.is_dir() else "is not writable"
    return f"cannot be created: {where} {what}"


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False
