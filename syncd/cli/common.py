"""What the commands share: the exit codes, loading a config, opening a project for a
one-off run, reading the published mapping."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from syncd import logs
from syncd.config import Config, load_config
from syncd.exitcodes import ExitCode
from syncd.textsafe import visible

if TYPE_CHECKING:
    from syncd.api.errors import APIError

EXIT_OK, EXIT_UNSYNCED, EXIT_USAGE = ExitCode.OK, ExitCode.UNSYNCED, ExitCode.USAGE
EXIT_LOCKED = ExitCode.LOCKED


def load(ns: argparse.Namespace) -> Config:
    config = load_config(ns.config)
    logs.configure_from(config.logging)
    return config


def open_project(config: Config) -> Any:
    from syncd.api.client import FilesClient
    from syncd.bootstrap import open_syncer
    from syncd.engine.state import LockHeld
    from syncd.remote_problem import RemoteProblem, probe

    try:
        syncer = open_syncer(config, one_off=True)
    except LockHeld as exc:
        print(f"syncd: {exc}; try again when it has finished", file=sys.stderr)
        raise SystemExit(EXIT_LOCKED) from None
    except ValueError as exc:  # the API key could not be loaded
        print(f"syncd: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    try:
        # One page first: an unreachable or misaddressed remote is said plainly, with
        # its own exit code, before a run that would only count failures.
        if isinstance(syncer.client, FilesClient):
            probe(config, syncer.client, syncer.base_url)
    except RemoteProblem as exc:
        syncer.close()
        print(f"syncd: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    return syncer


def read_mapping(ns: argparse.Namespace) -> tuple[Config, Any]:
    from syncd import mapping

    config = load(ns)
    try:
        return config, mapping.load(config.mapping_file)
    except mapping.MappingError as exc:
        print(f"syncd: {visible(exc)}", file=sys.stderr)
        raise SystemExit(EXIT_UNSYNCED) from None


def remote_failure(config: Config, url: str, exc: APIError, otherwise: str) -> int:
    """Say why a call to the remote failed, in the words a person can act on (the URL,
    what to check) when the failure is one of those; the exit code that goes with it."""
    from syncd.remote_problem import describe

    problem = describe(config, url, exc)
    print(f"syncd: {problem or visible(otherwise)}", file=sys.stderr)
    return problem.exit_code if problem else EXIT_UNSYNCED
