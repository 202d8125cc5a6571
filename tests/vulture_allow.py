"""What ``vulture syncd --min-confidence 60`` reports that is not dead code, each with
why it stays (read by ``tests/test_shape.py``: anything else it finds fails the suite).

This file is a list of names for vulture, never imported."""

# ruff: noqa
# mypy: ignore-errors
# fmt: off

_ = object()

# Fields of the provider's objects, parsed whole so a consumer (and `syncd batches`'
# JSON) sees every timestamp and size the provider sends.
in_progress_at, finalizing_at, completed_at, failed_at, expired_at  # api/models.Batch
cancelling_at, cancelled_at  # api/models.Batch
usage_bytes  # api/vector_calls.VectorFile
reserved_files, reserved_bytes  # engine/ledger.Usage: written to and read from Redis whole

# Called by the libraries we hook into, never by our own code.
_.auth_flow  # httpx.Auth (api/session)
_.should_exit  # uvicorn.Server (daemon/control, emulator/server)
_._add_all_callbacks, _.on_thread_start, _._inotify  # watchdog's inotify (daemon/inotify)
_.collect  # prometheus_client.Collector (daemon/metrics)
_.dispatch  # watchdog.FileSystemEventHandler (daemon/watch)
_.get_renderables  # rich.progress.Progress (progress)
daemon_threads, request_queue_size, server_version, sys_version, protocol_version
_.address_family, _.do_GET, _.do_HEAD, _.close_connection, _.log_message  # http.server

# Read by the import system, not by syncd: a stand-in module's spec (_startup).
_.__spec__

# The consumers' reader of the mapping: public API, documented in the README.
_.searchable_in, _.system_message  # mapping.Entry, mapping.Mapping

# Read by the tests to see a state only they look at (no status field shows it).
_.retrieve_vector_store, _.list_file_batch_files  # the emulator's routes, over HTTP
_.timing, _.overflowed  # daemon/settle.SettleQueue
_.fallback_reason  # daemon/watch.Watcher: why the native watch gave way to polling
_.rescans  # daemon/worker: how many full rescans the events asked for
