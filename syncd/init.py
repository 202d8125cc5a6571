"""``syncd init FOLDER``: a commented config for a folder, ready for ``check-config``
and a first ``reconcile`` against the embedded emulator.

The project is named after the folder; its state and mapping go to a folder of its
own beside the config (or under ``~/.local/state/syncd`` when that would be inside
the mirrored folder), never one another project already uses.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from syncd.api.providers import DEFAULT_PROVIDER, PROVIDERS

PROVIDER_NAMES: tuple[str, ...] = (
    DEFAULT_PROVIDER, *sorted(set(PROVIDERS) - {DEFAULT_PROVIDER}),
)  # fmt: skip

# Where each provider is reached when the embedded emulator (dashscope only) is not used.
_ENDPOINTS = {
    "openai": "https://api.openai.com/v1",
    "generic": "http://127.0.0.1:8000/v1",
}


class InitRefused(Exception):
    """Raised when the config cannot be written: it exists, or the folder does not."""


def write_config(
    folder: Path, config: Path, provider: str, project: str | None = None
) -> tuple[Path, str]:
    """Write the config; (its path, the project's name). Never overwrites."""
    if not folder.is_dir():
        raise InitRefused(f"{folder} is not a folder: create it first (mkdir -p {folder})")
    name = project or _name_of(folder.resolve())
    config = config if config.suffix in (".yaml", ".yml") else config / "syncd.yaml"
    base = config.resolve().parent
    state = _free_state_dir(base, folder.resolve(), name)
    text = _TEMPLATE.format(
        project=name,
        root=_written(folder.resolve(), base),
        state_dir=_written(state, base),
        api=_api_block(provider),
    )
    base.mkdir(parents=True, exist_ok=True)
    try:
        with open(config, "x", encoding="utf-8") as fh:  # "x": never over an existing file
            fh.write(text)
    except FileExistsError:
        raise InitRefused(f"{config} exists: not overwritten (give another path with -c)") from None
    return config, name


def _name_of(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-.")
    return name or "project"


def _free_state_dir(base: Path, root: Path, name: str) -> Path:
    """A state folder no other project holds: beside the config, unless that is inside
    the mirrored folder (syncd would upload its own state)."""
    parent = base / ".syncd"
    if parent == root or root in parent.parents:
        home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        parent = home / "syncd"
    candidate, n = parent / name, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = parent / f"{name}-{n}"
    return candidate


def _written(path: Path, base: Path) -> str:
    """A path as the config writes it: relative to the config's folder when below it."""
    try:
        rel = path.relative_to(base)
    except ValueError:
        return str(path)
    return "./" + rel.as_posix() if rel.parts else "."


def _api_block(provider: str) -> str:
    profile = PROVIDERS[provider]
    key = f"api_key_env: {profile.key_env}" if profile.key_env else "api_key_env: MY_API_KEY"
    if provider == DEFAULT_PROVIDER:
        return (
            "  # \"embedded\": the bundled emulator of the DashScope Files API, on 127.0.0.1.\n"
            "  # For the real service, one line:\n"
            "  #   base_url: https://dashscope-intl.aliyuncs.com/compatible-mode/v1\n"
            "  base_url: embedded\n"
            "  # The variable holding the key (the emulator needs none).\n"
            f"  # {key}\n"
        )
    return (
        f"  provider: {provider}\n"
        f"  base_url: {_ENDPOINTS[provider]}\n"
        "  # The variable holding the key (its name, never the key itself).\n"
        f"  {'# ' if not profile.key_env else ''}{key}\n"
    )


_TEMPLATE = """\
# syncd project configuration, written by `syncd init`. Every key is documented in
# config.example.yaml and in the README's configuration table. Relative paths are
# resolved from this file's folder.
#   syncd check-config -c THIS_FILE      # check it
#   syncd reconcile -c THIS_FILE         # one pass: upload, delete, publish the mapping
#   syncd run -c THIS_FILE               # the daemon: watch the folder

project: {project}

# The folder to mirror. syncd only reads it.
root: {root}

# This project's own state (SQLite), lock and the embedded emulator's data.
state_dir: {state_dir}
# The published path -> file_id mapping (default: state_dir/mapping.json).
# mapping_file: {state_dir}/mapping.json

api:
{api}
# Which files go, with which purpose (defaults: every file the provider takes, by
# extension; hidden and temporary files never). Try a rule first with
#   syncd ls-local -c THIS_FILE --exclude 'drafts/**'
# rules:
#   exclude: ["drafts/**", "*.bak"]
#   purposes:
#     - match: "*.jsonl"
#       purpose: batch

# Deletion safety: most remote deletes within 10 minutes, a count or a share.
# sync:
#   max_delete: 50%
"""
