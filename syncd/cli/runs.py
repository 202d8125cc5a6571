"""The commands that act: check-config, init, rebind, reconcile, run; and how a
reconcile's outcome is printed, the same whether this process or the daemon ran it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from syncd import logs
from syncd.cli.common import (
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_UNSYNCED,
    EXIT_USAGE,
    load,
    open_project,
)
from syncd.config import Config, load_config
from syncd.textsafe import visible
from syncd.units import human_bytes


def check_config(ns: argparse.Namespace) -> int:
    from syncd.check_config import preflight, warnings

    config = load_config(ns.config)
    # Retries and the emulator's chatter would bury the problems this command reports.
    logs.configure(config.logging.format, "error")
    problems = preflight(config, online=ns.online)
    for problem in problems:
        print(f"syncd: {problem}", file=sys.stderr)
    for warning in warnings(config):
        print(f"syncd: warning: {warning}", file=sys.stderr)
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


def init(ns: argparse.Namespace) -> int:
    from syncd.init import InitRefused, write_config

    try:
        written, project = write_config(ns.folder, ns.config, ns.provider, ns.project)
    except InitRefused as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{written}: project {project!r} for {ns.folder}")
    print(f"next: syncd check-config -c {written} && syncd reconcile -c {written}")
    return EXIT_OK


def rebind(ns: argparse.Namespace) -> int:
    from syncd.bootstrap import open_syncer
    from syncd.engine.state import LockHeld

    config = load(ns)
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


def run(ns: argparse.Namespace) -> int:
    from syncd.daemon.service import run

    logs.show_every_file()  # the daemon says what it did, file by file, in every mode
    return run(ns.config)


def reconcile(ns: argparse.Namespace) -> int:
    """One full pass: by the running daemon when one runs, else by this process."""
    from syncd.engine.scan import root_relative

    config = load(ns)
    if ns.bwlimit is not None:
        refusal = _bwlimit_refusal(config.state_dir)
        if refusal:
            print(f"syncd: {refusal}", file=sys.stderr)
            return EXIT_USAGE
        limits = dataclasses.replace(config.limits, upload_bytes_per_s=ns.bwlimit)
        config = dataclasses.replace(config, limits=limits)
    try:
        paths = [root_relative(p) for p in ns.path] if ns.path else None
    except ValueError as exc:
        root = config.origin.shown("root", config.root)
        print(f"syncd: --path {exc} ({root})", file=sys.stderr)
        return EXIT_USAGE
    live = sys.stderr.isatty() and not ns.json and not logs.quiet()
    code = _by_daemon(ns, config, paths, live)
    if code is not None:
        return code
    if ns.path:
        print("syncd: --path needs a running daemon; without one, reconcile the whole folder",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    return _one_off(ns, config, live)


def _by_daemon(ns: argparse.Namespace, config: Config, paths: list[str] | None, live: bool
               ) -> int | None:  # fmt: skip
    """The exit code of the reconcile a running daemon made; None when none runs.

    A running daemon holds the state: it runs the reconcile (same plan, same safety) on
    its worker and answers with the outcome; on a terminal, with its progress as it
    goes, for the bar a one-off run shows (a --path run has none)."""
    from syncd.daemon.control import BadRequest, ControlError, NotRunning, dumps, start_reconcile

    progress = None
    try:
        with start_reconcile(config.state_dir, dry_run=ns.dry_run, paths=paths,
                             max_delete=ns.max_delete, confirm_deletes=ns.confirm_deletes,
                             stream=live and paths is None) as run:  # fmt: skip
            if run.streaming:
                from syncd.progress import LiveProgress

                progress = LiveProgress()
            try:
                outcome = run.outcome(progress)
            finally:
                if progress:
                    progress.close()
    except NotRunning:
        return None
    except BadRequest as exc:
        print(f"syncd: the running daemon refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ControlError as exc:
        print(f"syncd: the running daemon could not reconcile: {exc}", file=sys.stderr)
        return EXIT_UNSYNCED
    print(f"syncd: reconciled by the running daemon of {config.state_dir}", file=sys.stderr)
    if ns.json:
        print(dumps({**outcome, "source": "daemon"}))
    else:
        print_outcome(outcome)
    return int(outcome.get("exit_code", EXIT_UNSYNCED))


def _one_off(ns: argparse.Namespace, config: Config, live: bool) -> int:
    """The reconcile made by this process, holding the state for its length."""
    syncer = open_project(config)
    progress = None
    if live:
        from syncd.progress import LiveProgress

        progress = LiveProgress()
    try:
        report = syncer.reconcile(dry_run=ns.dry_run, progress=progress,
                                  max_delete=ns.max_delete, confirm_deletes=ns.confirm_deletes)
    finally:
        if progress:
            progress.close()
        syncer.close()
    if ns.json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=1))
    else:
        print_outcome(report.as_json())
    return int(report.exit_code)


def _bwlimit_refusal(state_dir: Path) -> str | None:
    """Why ``--bwlimit`` cannot apply: a running daemon would run the reconcile, paced by
    its own configuration, so the cap asked for would not hold."""
    from syncd.daemon.control import ControlError, NotRunning, daemon_status

    try:
        daemon_status(state_dir)
    except NotRunning:
        return None
    except ControlError:
        pass  # one answers, if not well
    return ("--bwlimit applies to a run of this process, and the running daemon would run "
            "this one under its own limits.upload_bytes_per_s; stop it, or set that key")


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
    if data.get("attachments"):
        from syncd.engine.attach import lines

        out += [visible(line) for line in lines(data["attachments"])]
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


def print_outcome(data: dict[str, Any]) -> None:
    out, err = outcome_lines(data)
    print("\n".join(out))
    for line in err:
        print(line, file=sys.stderr)
