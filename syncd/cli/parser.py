"""The command line: every command, its options and its examples (``--help``); the
shell completion scripts are derived from this parser too."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syncd import __version__
from syncd.cli import runs, views
from syncd.completion import SHELLS
from syncd.init import PROVIDER_NAMES

# Registers one subcommand with its handler and the common options; returns its parser.
Command = Callable[..., Any]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncd", description="Mirror a folder into the DashScope Files API."
    )
    p.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], text: str, *, config: bool = True
    ) -> Any:
        sp = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES[name]),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if config:
            sp.add_argument("-c", "--config", type=Path, required=True, metavar="FILE",
                            help="project YAML file")  # fmt: skip
        loud = sp.add_mutually_exclusive_group()
        loud.add_argument("-q", "--quiet", action="store_true",
                          help="errors only: no progress display, no info logs")  # fmt: skip
        loud.add_argument("-v", "--verbose", action="store_true",
                          help="debug logs, including one line per file")  # fmt: skip
        sp.add_argument("--log-format", choices=("json", "console"), default=None,
                        help="log lines as JSON or for people (default: JSON only under "
                        "systemd; overrides logging.format)")  # fmt: skip
        sp.set_defaults(handler=handler)
        return sp

    _run_commands(command)
    _view_commands(command)
    _setup_commands(command, p)
    sub.add_parser("emulate", help="serve the local Files API emulator (see emulate --help)")
    return p


def _run_commands(command: Command) -> None:
    """The commands that change things: reconcile, check-config, run, rebind."""
    r = command("reconcile", runs.reconcile, "one full pass: scan, list, plan, act, publish")
    r.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    r.add_argument("--json", action="store_true", help="machine-readable summary")
    r.add_argument("--max-delete", type=_max_delete, metavar="N|P%",
                   help="most remote deletes this run, a count or a share of tracked files "
                   "(overrides sync.max_delete; answers for deletes held by an earlier "
                   "refusal, weighing them under this cap)")  # fmt: skip
    r.add_argument("--confirm-deletes", action="store_true",
                   help="make the deletes an earlier refusal holds (syncd status lists "
                   "them); other deletes stay under max_delete")  # fmt: skip
    r.add_argument("--bwlimit", type=_bwlimit, metavar="SIZE",
                   help="upload bytes per second for this run, e.g. 20MB (overrides "
                   "limits.upload_bytes_per_s; shared with every process on the key)")  # fmt: skip
    r.add_argument(
        "--path",
        action="append",
        metavar="P",
        help="with a running daemon: sync only P (root-relative; repeatable)",
    )
    cc = command(
        "check-config",
        runs.check_config,
        "validate the configuration file and the folders, key and paths it names",
    )
    cc.add_argument(
        "--online", action="store_true", help="also authenticate and list one page of the remote"
    )
    command("run", runs.run, "the daemon: catch up, then watch and reconcile on schedule")
    command(
        "rebind",
        runs.rebind,
        "accept a deliberate change of root, endpoint or key for this project's state",
    )


def _view_commands(command: Command) -> None:
    """The commands that show: status, ls-local, ls-remote, log, id, map, cat."""
    s = command("status", views.status, "what is synced, what is not and why, quota usage; "
                "with PATHs, everything about those files")  # fmt: skip
    s.add_argument("paths", nargs="*", metavar="PATH",
                   help="explain these files: the rule, status and reason, remote copy, "
                   "what shares it, recent actions (relative to the root or to here, or "
                   "absolute)")  # fmt: skip
    s.add_argument(
        "--json",
        action="store_true",
        help='machine-readable; "source" says whether the running daemon ("daemon") '
        'or the state file ("state") answered',
    )
    s.add_argument("--skipped", action="store_const", dest="handler", const=views.skipped,
                   help="list every file the rules leave out, walking the folder again")
    ll = command("ls-local", views.ls_local, "every local file with the purpose the rules give "
                 "it, or the rule that leaves it out; contacts nothing, changes "
                 "nothing")  # fmt: skip
    ll.add_argument("--include", action="append", default=[], metavar="GLOB",
                    help="try these include globs instead of rules.include "
                    "(repeatable)")  # fmt: skip
    ll.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="also exclude GLOB (repeatable)")  # fmt: skip
    ll.add_argument("--purpose", action="append", default=[], type=_purpose_rule,
                    metavar="GLOB=PURPOSE",
                    help="give files matching GLOB this purpose, before the config's "
                    "rules (repeatable; skip leaves them out)")  # fmt: skip
    ll.add_argument("--json", action="store_true", help="one JSON object per line")
    ls = command("ls-remote", views.ls_remote, "remote files, marked ours or foreign")
    ls.add_argument("--json", action="store_true")
    lg = command("log", views.log, "what syncd did and why: uploads, deletes, refusals, "
                 "failures, newest last")  # fmt: skip
    lg.add_argument("paths", nargs="*", metavar="PATH",
                    help="only these files or folders (relative to the root or to here, "
                    "or absolute)")  # fmt: skip
    lg.add_argument("--since", type=_since, metavar="WHEN",
                    help="only entries since: a duration ago (30s, 10m, 2h, 7d) or an "
                    "ISO 8601 time")  # fmt: skip
    lg.add_argument("-n", "--lines", type=int, metavar="N", help="only the newest N entries")
    lg.add_argument("--json", action="store_true", help="one JSON object per line")
    i = command("id", views.file_ids, "print the file_id of each PATH from the mapping "
                "(relative to the root or to here, or absolute)")  # fmt: skip
    i.add_argument("paths", nargs="+", metavar="PATH")
    i.add_argument("--fileid", action="store_true",
                   help="print fileid://ID, as Qwen-Long takes it")  # fmt: skip
    m = command("map", views.show_map, "print the published mapping (path -> file_id)")
    m.add_argument("--under", metavar="DIR", help="only paths under DIR (root-relative)")
    m.add_argument("--format", choices=("lines", "json", "fileid"), default="lines",
                   help="lines: PATH<TAB>ID (default); json: the entries; "
                   "fileid: one fileid://ID per line")  # fmt: skip
    cat = command("cat", views.cat, "write a remote file's content to stdout (a file id, or a "
                  "synced path)")  # fmt: skip
    cat.add_argument("target", metavar="ID|PATH")


def _setup_commands(command: Command, parser: argparse.ArgumentParser) -> None:
    """The commands that need no config: init, completion."""
    init = command("init", runs.init, "write a commented config for a folder, ready to run",
                   config=False)  # fmt: skip
    init.add_argument("folder", type=Path, metavar="FOLDER", help="the folder to mirror")
    init.add_argument("-c", "--config", type=Path, default=Path("syncd.yaml"), metavar="FILE",
                      help="where to write it (default: ./syncd.yaml; never "
                      "overwritten)")  # fmt: skip
    init.add_argument("--provider", choices=PROVIDER_NAMES, default=PROVIDER_NAMES[0],
                      help="whose Files API (default: %(default)s)")  # fmt: skip
    init.add_argument("--project", help="the project's name (default: the folder's name)")
    comp = command("completion", lambda ns: views.completion(ns, parser),
                   "print a shell completion script", config=False)  # fmt: skip
    comp.add_argument("shell", choices=SHELLS)


# Shown by each command's --help.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "init": ("syncd init ./docs                      # writes ./syncd.yaml for ./docs",
             "syncd init ./docs -c docs.yaml --provider openai"),
    "check-config": ("syncd check-config -c syncd.yaml",
                     "syncd check-config -c syncd.yaml --online   # also asks the remote"),
    "reconcile": ("syncd reconcile -c syncd.yaml",
                  "syncd reconcile -c syncd.yaml --dry-run",
                  "syncd reconcile -c syncd.yaml --confirm-deletes   # make held deletes",
                  "syncd reconcile -c syncd.yaml --path notes/a.md   # through the daemon"),
    "status": ("syncd status -c syncd.yaml",
               "syncd status -c syncd.yaml notes/a.md     # everything about one file",
               "syncd status -c syncd.yaml --skipped      # every file the rules leave out",
               "syncd status -c syncd.yaml --json | jq .counts"),
    "run": ("syncd run -c syncd.yaml                 # in the foreground; Ctrl-C stops it",
            "systemctl enable --now syncd@docs       # as a service (see systemd/README.md)"),
    "log": ("syncd log -c syncd.yaml --since 1h",
            "syncd log -c syncd.yaml notes/          # one folder's history",
            "syncd log -c syncd.yaml --json -n 100"),
    "ls-local": ("syncd ls-local -c syncd.yaml",
                 "syncd ls-local -c syncd.yaml --exclude 'drafts/**' --purpose '*.jsonl=batch'"),
    "ls-remote": ("syncd ls-remote -c syncd.yaml", "syncd ls-remote -c syncd.yaml --json"),
    "rebind": ("mv ~/p2 ~/p2moved && $EDITOR ~/p2moved/syncd.yaml && "
               "syncd rebind -c ~/p2moved/syncd.yaml",),
    "id": ("syncd id -c syncd.yaml notes/a.md", "syncd id -c syncd.yaml --fileid *.md"),
    "cat": ("syncd cat -c syncd.yaml file-batch_output-1a2b > results.jsonl",
            "syncd cat -c syncd.yaml jobs/requests.jsonl | head"),
    "map": ("syncd map -c syncd.yaml --under notes", "syncd map -c syncd.yaml --format json"),
    "completion": ("source <(syncd completion bash)   # in ~/.bashrc",
                   "syncd completion zsh > ~/.zfunc/_syncd",
                   "syncd completion fish > ~/.config/fish/completions/syncd.fish"),
}  # fmt: skip


def _max_delete(text: str) -> Any:
    """``N`` or ``P%``, as ``sync.max_delete`` and the daemon's control API take it."""
    from syncd.daemon.control import parse_max_delete

    try:
        return parse_max_delete(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bwlimit(text: str) -> int:
    """A size per second, as ``limits.upload_bytes_per_s`` takes it (at least 1 KiB)."""
    from syncd.units import parse_size

    try:
        rate = parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 20MB or 512KiB, got {text!r}") \
            from None
    if rate < 1024:
        raise argparse.ArgumentTypeError(f"at least 1KiB per second, got {text!r}")
    return rate


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def _since(text: str) -> float:
    """``30s``, ``10m``, ``2h``, ``7d`` ago, or an ISO 8601 time (UTC unless it says)."""
    import datetime as dt
    import time

    t = text.strip()
    if t[:-1].replace(".", "", 1).isdigit() and t[-1:] in _UNITS:
        return time.time() - float(t[:-1]) * _UNITS[t[-1]]
    try:
        when = dt.datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith("Z") else t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 10m, 2h or 7d, or an ISO 8601 time, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def _purpose_rule(text: str) -> tuple[str, str]:
    glob, sep, purpose = text.rpartition("=")
    if not sep or not glob or not purpose:
        raise argparse.ArgumentTypeError(f"expected GLOB=PURPOSE such as '*.jsonl=batch', "
                                         f"got {text!r}")  # fmt: skip
    return glob, purpose
