"""Commands only: parse arguments, call into the engine or daemon, print, exit.

Exit codes: 0 converged; 1 some files not synced (each listed with its reason);
2 configuration, usage or authentication error; 3 deletion safety refused;
4 another syncd process holds the state directory; 5 the remote could not be reached.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from syncd import __version__, logs
from syncd.completion import SHELLS
from syncd.config import Config, ConfigError, load_config
from syncd.exitcodes import ExitCode
from syncd.init import PROVIDER_NAMES
from syncd.textsafe import visible
from syncd.units import human_bytes

EXIT_OK, EXIT_UNSYNCED, EXIT_USAGE = ExitCode.OK, ExitCode.UNSYNCED, ExitCode.USAGE
EXIT_LOCKED = ExitCode.LOCKED


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["emulate"]:
        from syncd.emulator.cli import main as emulate

        return emulate(args[1:])
    parser = _parser()
    ns = parser.parse_args(args)
    if not getattr(ns, "command", None):
        parser.print_help()
        return EXIT_USAGE
    level = "error" if ns.quiet else "debug" if ns.verbose else None
    logs.set_overrides(ns.log_format, level)
    # Until a command reads its config: the command line's choices, else the defaults.
    logs.configure()
    if argv is None:
        # This process is the command: what it imported lives until exit, so the
        # collector need not walk it again (at exit, that walk cost a one-off command
        # about 60 ms).
        gc.freeze()
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


def _parser() -> argparse.ArgumentParser:
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

    r = command("reconcile", _reconcile, "one full pass: scan, list, plan, act, publish")
    r.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    r.add_argument("--json", action="store_true", help="machine-readable summary")
    r.add_argument("--max-delete", type=_max_delete, metavar="N|P%",
                   help="most remote deletes this run, a count or a share of tracked files "
                   "(overrides sync.max_delete; answers for deletes held by an earlier "
                   "refusal, weighing them under this cap)")  # fmt: skip
    r.add_argument("--confirm-deletes", action="store_true",
                   help="make the deletes an earlier refusal holds (syncd status lists "
                   "them); other deletes stay under max_delete")  # fmt: skip
    r.add_argument(
        "--path",
        action="append",
        metavar="P",
        help="with a running daemon: sync only P (root-relative; repeatable)",
    )
    s = command("status", _status, "what is synced, what is not and why, quota usage; "
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
    s.add_argument("--skipped", action="store_const", dest="handler", const=_skipped,
                   help="list every file the rules leave out, walking the folder again")
    ll = command("ls-local", _ls_local, "every local file with the purpose the rules give "
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
    ls = command("ls-remote", _ls_remote, "remote files, marked ours or foreign")
    ls.add_argument("--json", action="store_true")
    cc = command(
        "check-config",
        _check_config,
        "validate the configuration file and the folders, key and paths it names",
    )
    cc.add_argument(
        "--online", action="store_true", help="also authenticate and list one page of the remote"
    )
    command("run", _run, "the daemon: catch up, then watch and reconcile on schedule")
    command(
        "rebind",
        _rebind,
        "accept a deliberate change of root, endpoint or key for this project's state",
    )
    lg = command("log", _log, "what syncd did and why: uploads, deletes, refusals, "
                 "failures, newest last")  # fmt: skip
    lg.add_argument("paths", nargs="*", metavar="PATH",
                    help="only these files or folders (relative to the root or to here, "
                    "or absolute)")  # fmt: skip
    lg.add_argument("--since", type=_since, metavar="WHEN",
                    help="only entries since: a duration ago (30s, 10m, 2h, 7d) or an "
                    "ISO 8601 time")  # fmt: skip
    lg.add_argument("-n", "--lines", type=int, metavar="N", help="only the newest N entries")
    lg.add_argument("--json", action="store_true", help="one JSON object per line")
    i = command("id", _id, "print the file_id of each PATH from the mapping (relative to "
                "the root or to here, or absolute)")  # fmt: skip
    i.add_argument("paths", nargs="+", metavar="PATH")
    i.add_argument("--fileid", action="store_true",
                   help="print fileid://ID, as Qwen-Long takes it")  # fmt: skip
    m = command("map", _map, "print the published mapping (path -> file_id)")
    m.add_argument("--under", metavar="DIR", help="only paths under DIR (root-relative)")
    m.add_argument("--format", choices=("lines", "json", "fileid"), default="lines",
                   help="lines: PATH<TAB>ID (default); json: the entries; "
                   "fileid: one fileid://ID per line")  # fmt: skip
    cat = command("cat", _cat, "write a remote file's content to stdout (a file id, or a "
                  "synced path)")  # fmt: skip
    cat.add_argument("target", metavar="ID|PATH")
    init = command("init", _init, "write a commented config for a folder, ready to run",
                   config=False)  # fmt: skip
    init.add_argument("folder", type=Path, metavar="FOLDER", help="the folder to mirror")
    init.add_argument("-c", "--config", type=Path, default=Path("syncd.yaml"), metavar="FILE",
                      help="where to write it (default: ./syncd.yaml; never "
                      "overwritten)")  # fmt: skip
    init.add_argument("--provider", choices=PROVIDER_NAMES, default=PROVIDER_NAMES[0],
                      help="whose Files API (default: %(default)s)")  # fmt: skip
    init.add_argument("--project", help="the project's name (default: the folder's name)")
    comp = command("completion", _completion, "print a shell completion script",
                   config=False)  # fmt: skip
    comp.add_argument("shell", choices=SHELLS)
    sub.add_parser("emulate", help="serve the local Files API emulator (see emulate --help)")
    return p


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


def _cat(ns: argparse.Namespace) -> int:
    """A remote file's bytes on stdout, all of them (size-checked) or none."""
    import shutil
    import tempfile
    from typing import BinaryIO, cast

    from syncd.api.errors import APIError, DownloadRefusedError, NotFoundError
    from syncd.bootstrap import connect
    from syncd.mapping import MappingError, UnknownPath, load
    from syncd.remote_problem import describe
    from syncd.userpath import OutsideRoot, root_relative

    config = _load(ns)
    try:  # a synced path names its id; anything else is taken for an id
        m = load(config.mapping_file)
        file_id = m[root_relative(config.root, ns.target, m)].file_id
    except (MappingError, UnknownPath, OutsideRoot):
        file_id = ns.target
    client, url, closers = connect(config, one_off=True)
    try:
        with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as spool:
            client.download(file_id, cast(BinaryIO, spool))
            spool.seek(0)
            shutil.copyfileobj(spool, sys.stdout.buffer, 1024 * 1024)
            sys.stdout.buffer.flush()
    except DownloadRefusedError as exc:  # one line, in the provider's words
        print(f"syncd: {visible(str(exc))}", file=sys.stderr)
        return EXIT_UNSYNCED
    except NotFoundError:
        print(f"syncd: no file {visible(file_id)} at {url}", file=sys.stderr)
        return EXIT_UNSYNCED
    except APIError as exc:
        problem = describe(config, url, exc)
        print(f"syncd: {problem or visible(str(exc))}", file=sys.stderr)
        return problem.exit_code if problem else EXIT_UNSYNCED
    finally:
        client.close()
        for close in closers:
            close()
    return EXIT_OK


def _init(ns: argparse.Namespace) -> int:
    from syncd.init import InitRefused, write_config

    try:
        written, project = write_config(ns.folder, ns.config, ns.provider, ns.project)
    except InitRefused as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{written}: project {project!r} for {ns.folder}")
    print(f"next: syncd check-config -c {written} && syncd reconcile -c {written}")
    return EXIT_OK


def _completion(ns: argparse.Namespace) -> int:
    from syncd.completion import script

    sys.stdout.write(script(_parser(), ns.shell))
    return EXIT_OK


def _max_delete(text: str) -> Any:
    """``N`` or ``P%``, as ``sync.max_delete`` and the daemon's control API take it."""
    from syncd.daemon.control import parse_max_delete

    try:
        return parse_max_delete(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _load(ns: argparse.Namespace) -> Config:
    config = load_config(ns.config)
    logs.configure_from(config.logging)
    return config


def _open(config: Config) -> Any:
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


# ---------------------------------------------------------------- commands


def _check_config(ns: argparse.Namespace) -> int:
    from syncd.check_config import preflight

    config = load_config(ns.config)
    # Retries and the emulator's chatter would bury the problems this command reports.
    logs.configure(config.logging.format, "error")
    problems = preflight(config, online=ns.online)
    for problem in problems:
        print(f"syncd: {problem}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    root = config.origin.shown("root", config.root)
    checked = "offline checks"
    if ns.online:
        from syncd.bootstrap import load_key

        keyless = load_key(config) is None
        checked = "the remote answered without a key" if keyless else "key accepted by the remote"
    print(f"{ns.config}: ok (project {config.project!r}, root {root}; {checked})")
    return EXIT_OK


def _rebind(ns: argparse.Namespace) -> int:
    from syncd.bootstrap import open_syncer
    from syncd.engine.state import LockHeld

    config = _load(ns)
    try:
        open_syncer(config, rebind=True).close()
    except LockHeld as exc:
        print(f"syncd: {exc}; stop it first", file=sys.stderr)
        return EXIT_LOCKED
    except ValueError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{config.state_dir}: now bound to project {config.project!r}, root {config.root}")
    return EXIT_OK


def _run(ns: argparse.Namespace) -> int:
    from syncd.daemon.service import run

    logs.show_every_file()  # the daemon says what it did, file by file, in every mode
    return run(ns.config)


def _reconcile(ns: argparse.Namespace) -> int:
    from syncd.daemon.control import (
        BadRequest,
        ControlError,
        NotRunning,
        dumps,
        start_reconcile,
    )
    from syncd.engine.scan import root_relative

    config = _load(ns)
    try:
        paths = [root_relative(p) for p in ns.path] if ns.path else None
    except ValueError as exc:
        root = config.origin.shown("root", config.root)
        print(f"syncd: --path {exc} ({root})", file=sys.stderr)
        return EXIT_USAGE
    live = sys.stderr.isatty() and not ns.json and not logs.quiet()
    progress = None
    try:
        # A running daemon holds the state: it runs the reconcile (same plan, same
        # safety) on its worker and answers with the outcome; on a terminal, with its
        # progress as it goes, for the bar a one-off run shows (a --path run has none).
        with start_reconcile(
            config.state_dir,
            dry_run=ns.dry_run,
            paths=paths,
            max_delete=ns.max_delete,
            confirm_deletes=ns.confirm_deletes,
            stream=live and paths is None,
        ) as run:
            if run.streaming:
                from syncd.progress import LiveProgress

                progress = LiveProgress()
            try:
                outcome = run.outcome(progress)
            finally:
                if progress:
                    progress.close()
    except NotRunning:
        outcome = None
    except BadRequest as exc:
        print(f"syncd: the running daemon refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ControlError as exc:
        print(f"syncd: the running daemon could not reconcile: {exc}", file=sys.stderr)
        return EXIT_UNSYNCED
    if outcome is not None:
        print(f"syncd: reconciled by the running daemon of {config.state_dir}", file=sys.stderr)
        if ns.json:
            print(dumps({**outcome, "source": "daemon"}))
        else:
            _print_outcome(outcome)
        return int(outcome.get("exit_code", EXIT_UNSYNCED))
    if ns.path:
        print("syncd: --path needs a running daemon; without one, reconcile the whole folder",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    syncer = _open(config)
    if live:
        from syncd.progress import LiveProgress

        progress = LiveProgress()
    try:
        report = syncer.reconcile(
            dry_run=ns.dry_run,
            progress=progress,
            max_delete=ns.max_delete,
            confirm_deletes=ns.confirm_deletes,
        )
    finally:
        if progress:
            progress.close()
        syncer.close()
    if ns.json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=1))
    else:
        _print_outcome(report.as_json())
    return int(report.exit_code)


def outcome_lines(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(stdout lines, stderr lines) of a reconcile outcome, from its JSON form: the same
    text whether this process ran it or the running daemon did."""
    out: list[str] = []
    planned = data.get("planned", {})
    if data.get("dry_run"):
        ups, adopts = planned.get("upload", []), planned.get("adopt", [])
        dels = planned.get("delete", [])
        refused = planned.get("refused_delete", [])
        held = f", {len(refused)} refused" if refused else ""
        out.append(f"plan (dry run): {len(ups)} upload(s), {len(adopts)} adoption(s), "
                   f"{len(dels)} delete(s){held}")  # fmt: skip
        out += [f"  upload  {u['kind']:<9} {visible(u['path'])} ({u['bytes']} bytes)"
                for u in ups]  # fmt: skip
        out += [f"  adopt   {visible(a['path'])} -> {visible(a['file_id'])}" for a in adopts]
        for sh in planned.get("share", []):
            on = sh.get("file_id")
            target = visible(on) if on else f"upload of {visible(sh['with'])}"
            out.append(f"  share   {visible(sh['path'])} -> {target}")
        out += [f"  delete  {d['reason']:<9} {visible(d['file_id'])} {visible(d['path'] or '')}"
                for d in dels]  # fmt: skip
        out += [f"  refuse  {d['reason']:<9} {visible(d['file_id'])} {visible(d['path'] or '')}"
                for d in refused]  # fmt: skip
        if data.get("refused"):
            out.append(f"  refused: {visible(data['refused'])}")
        out += [f"  {n['status']:<7} {visible(n['path'])}: {visible(n['reason'] or '')}"
                for n in data.get("notes", [])]  # fmt: skip
    else:
        sent = human_bytes(int(data.get("uploaded_bytes", 0)))
        out.append(f"uploaded {data.get('uploaded', 0)} ({sent}), "
                   f"adopted {data.get('adopted', 0)}, "
                   f"shared {data.get('shared', 0)}, deleted {data.get('deleted', 0)}, "
                   f"hashed {data.get('hashed', 0)} "
                   f"in {float(data.get('duration_s', 0.0)):.1f}s")  # fmt: skip
        unsynced = data.get("not_synced", [])
        if unsynced:
            out.append(f"{len(unsynced)} file(s) not synced:")
            out += [f"  {u['status']:<8} {visible(u['path'])}: {visible(u['reason'] or '')}"
                    for u in unsynced]  # fmt: skip
        by_rule = data.get("skipped_by_rule") or []
        if by_rule:
            total = sum(int(r["files"]) for r in by_rule)
            out.append(f"{total} file(s) skipped by {len(by_rule)} rule(s) "
                       "(syncd status lists them by rule)")  # fmt: skip
        elif data.get("skipped"):
            out.append(f"{len(data['skipped'])} file(s) skipped by the rules (see syncd status)")
        if data.get("mapping_file"):
            out.append(f"mapping: {visible(data['mapping_file'])}")
    out += _batch_lines(data.get("batches"))
    err = [f"error: {visible(e)}" for e in data.get("errors", [])]
    return out, err


def _batch_lines(batches: dict[str, Any] | None) -> list[str]:
    """What the batch step did, or in a dry run would do: jobs and pulled files."""
    if not batches:
        return []
    verb = ("would submit", "would pull") if batches.get("dry_run") else ("submitted", "pulled")
    out = [f"batches: {verb[0]} {len(batches['submitted'])} job(s), {verb[1]} "
           f"{len(batches['pulled'])} file(s)"]  # fmt: skip
    out += [f"  submit  {visible(path)}" for path, _ in batches["submitted"]]
    out += [f"  pull    {visible(name)} ({visible(fid)})" for fid, name in batches["pulled"]]
    out += [f"  defer   {visible(path)}: {visible(why)}" for path, why in batches["deferred"]]
    return out


def _print_outcome(data: dict[str, Any]) -> None:
    out, err = outcome_lines(data)
    print("\n".join(out))
    for line in err:
        print(line, file=sys.stderr)


def _status(ns: argparse.Namespace) -> int:
    from syncd.daemon.control import dumps
    from syncd.daemon.status import exit_code, gather, render

    # No key needed: the state file and the daemon's socket tell everything shown.
    config = load_config(ns.config)
    if ns.paths:
        from syncd.daemon.status import explain, render_explained

        answers = explain(config, ns.paths)
        if ns.json:
            print(dumps(answers))
        else:
            print("\n".join(render_explained(answers)))
        unsynced = [a for a in answers if a.get("error") or a.get("status") not in
                    ("synced", "skipped")]  # fmt: skip
        return EXIT_UNSYNCED if unsynced else EXIT_OK
    data, note = gather(config)
    if note:
        print(f"syncd: {note}", file=sys.stderr)
    if data is None:
        print(f"syncd: no state yet in {config.state_dir}: run `syncd reconcile` first",
              file=sys.stderr)  # fmt: skip
        return EXIT_UNSYNCED
    if ns.json:
        print(dumps(data))
    else:
        for line in render(data):
            print(line)
    return exit_code(data)


def _log(ns: argparse.Namespace) -> int:
    from syncd.engine.state import State
    from syncd.units import iso_utc
    from syncd.userpath import OutsideRoot, root_relative

    config = load_config(ns.config)
    if not State.exists(config.state_dir):
        print(f"syncd: no state yet in {config.state_dir}: nothing was done",
              file=sys.stderr)  # fmt: skip
        return EXIT_OK
    state = State(config.state_dir)
    try:
        known = state.records()
        try:
            paths = [root_relative(config.root, p, known) for p in ns.paths]
        except OutsideRoot as exc:
            print(f"syncd: {visible(exc)}", file=sys.stderr)
            return EXIT_USAGE
        entries = state.journal(paths, since=ns.since, limit=ns.lines)
    finally:
        state.close()
    for e in entries:
        row = {"at": iso_utc(e.at), "action": e.action, "path": e.path, "file_id": e.file_id,
               "bytes": e.bytes, "status": e.status, "reason": e.reason,
               "run": e.run, "run_kind": e.run_kind}  # fmt: skip
        if ns.json:
            print(json.dumps(row, ensure_ascii=False))
            continue
        parts = [iso_utc(e.at) or "", f"{e.action:<9}", visible(e.path or "-")]
        if e.file_id:
            parts.append(visible(e.file_id))
        if e.bytes is not None:
            parts.append(human_bytes(e.bytes))
        why = ": ".join(visible(x) for x in (e.status, e.reason) if x)
        if why:
            parts.append(why)
        if e.run_kind:
            parts.append(f"[{visible(e.run_kind)} #{e.run}]")
        print("  ".join(parts))
    return EXIT_OK


def _ls_local(ns: argparse.Namespace) -> int:
    from syncd.engine.preview import preview, with_overrides

    config = load_config(ns.config)
    try:
        rules = with_overrides(config, include=ns.include, exclude=ns.exclude,
                               purposes=ns.purpose)  # fmt: skip
        verdicts = list(preview(config.root, rules, marker=config.sync.marker))
    except ValueError as exc:  # a purpose the provider has not, or a glob that is not one
        print(f"syncd: {visible(exc)}", file=sys.stderr)
        return EXIT_USAGE
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
        if ns.json:
            print(json.dumps(dataclasses.asdict(v), ensure_ascii=False))
        elif v.status == "selected":
            print(f"{visible(v.path)}\t{v.purpose}")
        else:
            print(f"{visible(v.path)}\t{v.status}: {visible(v.reason or '')}")
    if not ns.json:
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        print(f"{len(verdicts)} file(s): {summary or 'none'}", file=sys.stderr)
    return EXIT_OK


def _skipped(ns: argparse.Namespace) -> int:
    """Every file the rules leave out, one per line with its rule (status keeps counts)."""
    from syncd.engine.rules import Rules
    from syncd.engine.scan import walk_skipped

    config = load_config(ns.config)
    for path, label in walk_skipped(config.root, Rules(config.rules)):
        if ns.json:
            print(json.dumps({"path": path, "rule": label}, ensure_ascii=False))
        else:
            print(f"{visible(path)}\t{visible(label)}")
    return EXIT_OK


def _ls_remote(ns: argparse.Namespace) -> int:
    from syncd.api.errors import APIError
    from syncd.bootstrap import connect
    from syncd.engine.state import State
    from syncd.remote_problem import describe

    config = _load(ns)
    state = State(config.state_dir)
    try:
        owned: dict[str, list[str]] = {}
        for r in state.records().values():
            if r.file_id:
                owned.setdefault(r.file_id, []).append(r.path)
        for fid in state.garbage():
            owned.setdefault(fid, []).append("(old version, to delete)")
    finally:
        state.close()
    client, url, closers = connect(config, one_off=True)
    try:
        files = client.list_files()
    except APIError as exc:
        problem = describe(config, url, exc)
        print(f"syncd: {problem or f'listing {url} failed: {exc}'}", file=sys.stderr)
        return problem.exit_code if problem else EXIT_UNSYNCED
    finally:
        client.close()
        for close in closers:
            close()
    rows = [
        {**{k: getattr(f, k) for k in ("id", "filename", "bytes", "created_at", "purpose")},
         "ours": f.id in owned, "paths": sorted(owned.get(f.id, []))}
        for f in files
    ]  # fmt: skip
    # Ids our state holds that the listing lacks: the listing is incomplete (a server
    # whose cursor skips entries), or they went away since the last run.
    unlisted = len(set(owned) - {f.id for f in files})
    if ns.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    else:
        print(f"{'whose':<7} {'file_id':<40} {'bytes':>12} {'remote name':<24} local path(s)")
        for row in rows:
            mark = "ours   " if row["ours"] else "foreign"
            print(f"{mark} {visible(row['id']):<40} {row['bytes']:>12} "
                  f"{visible(row['filename']):<24} "
                  + ", ".join(visible(p) for p in row["paths"]))  # fmt: skip
        print(f"{len(rows)} remote file(s), {sum(1 for r in rows if r['ours'])} ours")
    if unlisted:
        print(f"syncd: the listing lacks {unlisted} of the {len(owned)} remote files syncd "
              "holds: it is incomplete, or they went away since the last run "
              "(`syncd reconcile` asks for each)", file=sys.stderr)  # fmt: skip
        return EXIT_UNSYNCED
    return EXIT_OK


def _mapping(ns: argparse.Namespace) -> tuple[Config, Any]:
    from syncd.mapping import MappingError, load

    config = _load(ns)
    try:
        return config, load(config.mapping_file)
    except MappingError as exc:
        print(f"syncd: {visible(exc)}", file=sys.stderr)
        raise SystemExit(EXIT_UNSYNCED) from None


def _id(ns: argparse.Namespace) -> int:
    """Ids in the order asked, one line each; an unknown path gets an empty line (so
    line N still answers path N), is named on stderr and makes exit 1."""
    from syncd.mapping import NotForChat, UnknownPath
    from syncd.userpath import OutsideRoot, root_relative

    config, m = _mapping(ns)
    missing = 0
    for typed in ns.paths:
        try:
            entry = m[root_relative(config.root, typed, m)]
            print(entry.fileid if ns.fileid else entry.file_id)
        except (UnknownPath, OutsideRoot, NotForChat) as exc:
            print(f"syncd: {visible(exc)}", file=sys.stderr)
            print()
            missing += 1
    return EXIT_UNSYNCED if missing else EXIT_OK


def _map(ns: argparse.Namespace) -> int:
    from syncd.mapping import CHAT_PURPOSES

    _, m = _mapping(ns)
    entries = m.under(ns.under or "")
    if ns.format == "json":
        rows = [
            {k: getattr(e, k) for k in ("path", "file_id", "purpose", "bytes", "sha256")}
            for e in entries
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    elif ns.format == "fileid":
        # Only what a chat model reads: a batch input has no fileid.
        for e in entries:
            if e.purpose in CHAT_PURPOSES:
                print(e.fileid)
    else:
        for e in entries:
            print(f"{visible(e.path)}\t{e.file_id}")
    return EXIT_OK
