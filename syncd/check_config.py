"""``syncd check-config``: will a loaded configuration actually work on this host?

The loader checks what the file says; this checks the world it points at: the root
is a readable folder, the marker is there, the key can be loaded, syncd can write
its state and its mapping, neither belongs to another project, the metrics address
can be served, and (``online``) the remote accepts the key. The refusals a run would
make are made by the same functions the run calls, so they cannot drift. Each problem
is ``file:line: key: message`` like the loader's, and names paths as written when
they came from ``${VAR}`` (a variable may hold a secret).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from syncd.config import Config, is_loopback, parse_address


def preflight(config: Config, *, online: bool) -> list[str]:
    """Every problem found, in the order a person would fix them; empty when all is well."""
    problems = [*_root(config), *_writable(config), *_mapping_owner(config)]
    key_problem = _key(config)
    if key_problem:
        problems.append(key_problem)
        return problems
    problems.extend(_state_owner(config))
    if online and not problems:
        problems.extend(_online(config))
    return problems


def warnings(config: Config) -> list[str]:
    """What will work but deserves a second look, worded like the problems."""
    address = config.daemon.metrics
    if not config.daemon.metrics_public:
        return []
    if address is None or is_loopback(parse_address(address)[0]):
        return [_at(config, "daemon.metrics_public",
                    "is set, but daemon.metrics is not served beyond loopback: it changes "
                    "nothing")]  # fmt: skip
    return [
        _at(config, "daemon.metrics_public",
            f"the status page and the metrics at {address} show every file name and the "
            "daemon's state to whoever reaches that address (read only, no login): keep it "
            "behind a firewall or a proxy that asks who is there")
    ]  # fmt: skip


def _at(config: Config, key: str, message: str) -> str:
    return f"{config.origin.at(key)}: {message}"


def _root(config: Config) -> list[str]:
    root = config.root
    shown = config.origin.shown("root", root)
    if not root.exists():
        return [_at(config, "root", f"{shown} does not exist")]
    if not root.is_dir():
        return [_at(config, "root", f"{shown} is not a folder")]
    try:
        with os.scandir(root) as entries:
            next(entries, None)
    except OSError as exc:
        return [_at(config, "root", f"{shown} cannot be read: {exc.strerror or exc}")]
    marker = config.sync.marker
    if marker and not (root / marker).exists():
        return [
            _at(config, "sync.marker",
                f"{marker} is missing from the root: syncd does nothing until it exists")
        ]  # fmt: skip
    return []


def _can_write_in(folder: Path) -> str | None:
    """Why syncd cannot create files in ``folder`` (or create it), or None. Tried for
    real: ``os.access`` answers yes to root on read-only mounts."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return "is not a folder"
    try:
        fd, name = tempfile.mkstemp(prefix=".syncd-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return f"is not writable ({exc.strerror or exc})"
    return None


def _writable(config: Config) -> list[str]:
    out = []
    why = _can_write_in(config.state_dir)
    if why:
        out.append(_at(config, "state_dir", why))
    why = _can_write_in(config.mapping_file.parent)
    if why:
        out.append(_at(config, "mapping_file", f"its folder {why}"))
    return out


def _mapping_owner(config: Config) -> list[str]:
    """A mapping file another project publishes, refused as a run refuses it."""
    from syncd.engine.identity import Mismatch, check_mapping_file, owner

    try:
        mine = owner(config.state_dir, create=False)
        check_mapping_file(config.mapping_file, mine, config.project)
    except Mismatch as exc:
        return [_at(config, "mapping_file", str(exc))]
    return []


def _state_owner(config: Config) -> list[str]:
    """A state_dir bound to another project, endpoint, root or key, refused as a run
    refuses it. Only an existing state is read (and nothing is created); the key is
    the one the run would load, named by the fingerprint its client gives it."""
    from syncd.api.client import FilesClient
    from syncd.bootstrap import load_key
    from syncd.engine import identity
    from syncd.engine.state import State

    if not State.exists(config.state_dir):
        return []
    client = FilesClient(config.api.base_url, load_key(config), provider=config.api.profile)
    try:
        mine = identity.of_config(config, client.key_fingerprint)
    finally:
        client.close()
    state = State(config.state_dir)
    try:
        identity.check(state, mine)
    except identity.Mismatch as exc:
        return [_at(config, "state_dir", str(exc))]
    finally:
        state.close()
    return []


def _key(config: Config) -> str | None:
    from syncd.bootstrap import load_key

    api = config.api
    source = "api.api_key_file" if api.api_key_file is not None else "api.api_key_env"
    try:
        load_key(config)
    except ValueError as exc:  # names the variable or the file as written, never the key
        return _at(config, source, str(exc))
    return None


def _online(config: Config) -> list[str]:
    """Authenticate and list one page of the remote."""
    from syncd.api.errors import APIError, AuthenticationError
    from syncd.bootstrap import connect
    from syncd.remote_problem import refusal

    try:
        client, base_url, closers = connect(config)
    except (OSError, RuntimeError, ValueError) as exc:
        return [_at(config, "api.base_url", f"cannot start or reach the remote: {exc}")]
    try:
        next(iter(client.iter_files(page_size=1)), None)
    except AuthenticationError as exc:
        return [_at(config, *refusal(config, exc.status))]
    except APIError as exc:
        return [_at(config, "api.base_url", f"listing files at {base_url} failed: {exc}")]
    finally:
        client.close()
        for close in closers:
            close()
    return []
