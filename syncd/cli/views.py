"""The commands that look: status (and one file's story), log, ls-local, ls-remote, id,
map, cat, completion. None changes the state or the remote."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from syncd.cli.common import (
    EXIT_OK,
    EXIT_UNSYNCED,
    EXIT_USAGE,
    load,
    read_mapping,
    remote_failure,
)
from syncd.config import load_config
from syncd.textsafe import visible
from syncd.units import human_bytes


def status(ns: argparse.Namespace) -> int:
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


def log(ns: argparse.Namespace) -> int:
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


def ls_local(ns: argparse.Namespace) -> int:
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


def skipped(ns: argparse.Namespace) -> int:
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


def ls_remote(ns: argparse.Namespace) -> int:
    from syncd.api.errors import APIError
    from syncd.bootstrap import connect
    from syncd.engine.state import State

    config = load(ns)
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
        return remote_failure(config, url, exc, f"listing {url} failed: {exc}")
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


def file_ids(ns: argparse.Namespace) -> int:
    """Ids in the order asked, one line each; an unknown path gets an empty line (so
    line N still answers path N), is named on stderr and makes exit 1."""
    from syncd.mapping import NotForChat, UnknownPath
    from syncd.userpath import OutsideRoot, root_relative

    config, m = read_mapping(ns)
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


def show_map(ns: argparse.Namespace) -> int:
    from syncd.mapping import CHAT_PURPOSES

    _, m = read_mapping(ns)
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


def cat(ns: argparse.Namespace) -> int:
    """A remote file's bytes on stdout, all of them (size-checked) or none."""
    import shutil
    import tempfile
    from typing import BinaryIO, cast

    from syncd import mapping
    from syncd.api.errors import APIError, DownloadRefusedError, NotFoundError
    from syncd.bootstrap import connect
    from syncd.userpath import OutsideRoot, root_relative

    config = load(ns)
    try:  # a synced path names its id; anything else is taken for an id
        m = mapping.load(config.mapping_file)
        file_id = m[root_relative(config.root, ns.target, m)].file_id
    except (mapping.MappingError, OutsideRoot):  # UnknownPath is a MappingError
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
        return remote_failure(config, url, exc, str(exc))
    finally:
        client.close()
        for close in closers:
            close()
    return EXIT_OK


def completion(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from syncd.completion import script

    sys.stdout.write(script(parser, ns.shell))
    return EXIT_OK
