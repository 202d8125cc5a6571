"""Program wiring, shared by the CLI and the daemon: load the key, build the client,
start the embedded emulator when asked, and open a project's Syncer.

The engine itself knows only the ``RemoteFiles`` protocol; this is the one place
that chooses the concrete client.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import structlog

from syncd import logs
from syncd.api.client import FilesClient
from syncd.api.guard import cancel_on_sigint
from syncd.api.key import ApiKey
from syncd.api.options import ClientOptions, Rates, RetryPolicy, Timeouts
from syncd.api.pacing import default_pacing_dir
from syncd.api.pacing_redis import join as share_pacing
from syncd.config import Config
from syncd.engine import identity
from syncd.engine.claims import Claims
from syncd.engine.ledger import Ledger, Quota, open_ledger
from syncd.engine.state import State, StateLock
from syncd.engine.sync import Syncer

log = structlog.get_logger("syncd.bootstrap")

EMBEDDED_KEY = "sk-emulator"


def load_key(config: Config) -> ApiKey | None:
    """The configured key; None for a provider that needs none when the config names no
    source (or its variable is unset). Raises ValueError naming the source, never the key.

    The embedded emulator always gets its own key, never one from the environment or a
    file: whatever answers on its loopback port (any local user can bind it first) is
    sent nothing worth taking."""
    api = config.api
    if api.embedded:
        return ApiKey(EMBEDDED_KEY)
    if not api.profile.key_required:
        unset = api.api_key_env is None or not os.environ.get(api.api_key_env, "").strip()
        if api.api_key_file is None and unset:
            return None
    return ApiKey.load(env=api.api_key_env, file=api.api_key_file)


# How long a one-off command retries a remote it cannot connect to (refused, DNS,
# TLS) before it says so; the daemon keeps retrying under its own backoff instead.
ONE_OFF_CONNECT_S = 1.0


def client_options(config: Config, *, one_off: bool = False) -> ClientOptions:
    limits = config.limits
    return ClientOptions(
        timeouts=Timeouts(
            connect=config.api.connect_timeout_s,
            read=config.api.read_timeout_s,
            write=config.api.write_timeout_s,
        ),
        rates=Rates(upload=limits.upload_qps, read=limits.read_qps, delete=limits.delete_qps),
        pacing_dir=limits.pacing_dir or default_pacing_dir(),
        upload_bytes_per_s=limits.upload_bytes_per_s,
        retry=RetryPolicy(connect_elapsed=ONE_OFF_CONNECT_S) if one_off else RetryPolicy(),
    )


def connect(
    config: Config, *, one_off: bool = True
) -> tuple[FilesClient, str, list[Callable[[], None]]]:
    """A client for the configured endpoint, starting the embedded emulator if asked.
    ``one_off``: a command a person waits for (short retries when nothing connects,
    and Ctrl-C cuts the client's calls short)."""
    key = load_key(config)
    if key is not None:
        # Every log line from here on masks the key, whichever command opened the client.
        logs.add_secret(key.reveal())
    closers: list[Callable[[], None]] = []
    base_url = config.api.base_url
    if config.api.embedded:
        from syncd.embedded import ensure_emulator

        port = config.api.embedded_port
        base_url, stop = ensure_emulator(
            config.state_dir / "emulator", port, ApiKey(EMBEDDED_KEY)
        )
        if stop is not None:
            closers.append(stop)
    options = client_options(config, one_off=one_off)
    client = FilesClient(base_url, key, options, provider=config.api.profile)
    if one_off:
        # Ctrl-C ends the calls on worker threads too, not only the main thread's.
        cancel_on_sigint(client.guard)
    return client, base_url, closers


def open_syncer(config: Config, *, rebind: bool = False, one_off: bool = False) -> Syncer:
    """Take the state lock and build a ready Syncer.

    Raises LockHeld when another process holds the state, identity.Mismatch when the
    state or the mapping file belongs to another project (unless ``rebind``)."""
    lock = StateLock(config.state_dir)
    lock.acquire()
    opened: list[Callable[[], None]] = [lock.release]
    try:
        client, base_url, closers = connect(config, one_off=one_off)
        opened[:0] = [client.close, *closers]
        if config.limits.shared:
            # Every host on the key paces through one Redis (README: several hosts).
            closers.append(
                share_pacing(
                    client.pacer,
                    config.limits.shared,
                    client.key_fingerprint,
                    fleet_size=config.limits.fleet_size,
                    password_file=config.limits.shared_credential_file,
                )
            )
            opened.insert(0, closers[-1])
        state = State(config.state_dir)
        opened.insert(0, state.close)
        pacing_dir = client.options.pacing_dir or config.state_dir
        claims = Claims(pacing_dir, client.key_fingerprint, identity.owner(config.state_dir))
        opened.insert(0, claims.close)
        # Before a rebind: a copy is refused, not bound.
        identity.check_home(claims, config.state_dir)
        _bound(config, state, client.key_fingerprint, rebind, claims.owner)
        claims.claim_all(sorted(state.owned_ids()))
        ledger = _ledger(config, client.key_fingerprint)
        closers.append(ledger.close)
    except BaseException:
        for close in opened:
            try:
                close()
            except Exception:  # the original error is the one worth reporting
                log.exception("close failed")
        raise
    return Syncer(
        config,
        client,
        state,
        claims,
        ledger=ledger,
        base_url=base_url,
        lock=lock,
        closers=closers,
    )


def _bound(config: Config, state: State, key_fingerprint: str, rebind: bool, owner: str) -> None:
    """Show the state and the mapping file to be this project's (or bind them to it anew
    with ``rebind``); raises identity.Mismatch."""
    mine = identity.of_config(config, key_fingerprint)
    if rebind:
        problem = identity.rebind_problem(state, config.root)
        if problem:
            raise identity.Mismatch(f"rebind refused: {problem}; the binding is unchanged")
        identity.record(state, mine)
    identity.check(state, mine)
    identity.check_mapping_file(config.mapping_file, owner, config.project)


def _ledger(config: Config, key_fingerprint: str) -> Ledger:
    """The account's quota as every host on the key sees it."""
    limits = config.limits
    return open_ledger(
        shared=limits.shared,
        key_fingerprint=key_fingerprint,
        quota=Quota.of(
            limits.max_files, limits.max_bytes, limits.headroom_files, limits.headroom_bytes
        ),
        fleet_size=limits.fleet_size,
        password_file=limits.shared_credential_file,
    )
