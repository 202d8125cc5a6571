"""Commands only: parse arguments, call into the engine or daemon, print, exit.

Exit codes: 0 converged; 1 some files not synced (each listed with its reason);
2 configuration, usage or authentication error; 3 deletion safety refused;
4 another syncd process holds the state directory; 5 the remote could not be reached.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence

from syncd import logs
from syncd.cli.common import EXIT_OK, EXIT_UNSYNCED, EXIT_USAGE
from syncd.cli.parser import EXAMPLES, build_parser
from syncd.config import ConfigError
from syncd.exitcodes import ExitCode

__all__ = ["EXAMPLES", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["emulate"]:
        from syncd.emulator.cli import main as emulate

        return emulate(args[1:])
    parser = build_parser()
    ns = parser.parse_args(args)
    if not getattr(ns, "command", None):
        parser.print_help()
        return EXIT_USAGE
    level = "error" if ns.quiet else "debug" if ns.verbose else None
    logs.set_overrides(ns.log_format, level)
    # Until a command reads its config: the command line's choices, else the defaults.
    logs.configure()
    handler: Callable[[argparse.Namespace], int] = ns.handler
    try:
        return handler(ns)
    except ConfigError as exc:
        print(f"syncd: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`syncd status | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except sqlite3.Error as exc:
        # Typically a full disk under state_dir: the state is transactional, so the next
        # run resumes from the last committed step.
        print(f"syncd: state database error: {exc}{_space_hint(str(exc))}", file=sys.stderr)
        return EXIT_UNSYNCED
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"syncd: {exc.strerror or exc}{where}{_space_hint(str(exc))}", file=sys.stderr)
        return EXIT_UNSYNCED


def _space_hint(text: str) -> str:
    full = "full" in text.lower() or "no space" in text.lower()
    return " (free some space under state_dir, then run again)" if full else ""
