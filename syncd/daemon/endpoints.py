"""The daemon's two listeners: the control socket (always) and the metrics server with
the status page (when ``daemon.metrics`` is set). Neither is needed to sync: if one
cannot open, the daemon says so and goes on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from syncd.config import Config, parse_address
from syncd.daemon.control import ControlError, Controlled, ControlServer, socket_path
from syncd.daemon.metrics import MetricsServer, Recorder, build_registry
from syncd.daemon.page_data import Documents

log = structlog.get_logger("syncd.daemon")


class Endpoints:
    def __init__(self) -> None:
        self._control: ControlServer | None = None
        self._metrics: MetricsServer | None = None

    def open(self, daemon: Controlled, recorder: Recorder, status: Callable[[], dict[str, Any]],
             config: Callable[[], Config]) -> None:
        """``config``: the running configuration, as reloads change it."""
        path = socket_path(config().state_dir)
        try:
            self._control = ControlServer(daemon, path)
        except (OSError, ControlError) as exc:
            log.error("control socket unavailable; `syncd status` will read the state file",
                      path=str(path), error=str(exc))  # fmt: skip
        address = config().daemon.metrics
        if address:
            try:
                self._metrics = MetricsServer(
                    build_registry(recorder, status), parse_address(address),
                    Documents(config, status),
                )
                log.info("serving metrics", address=address, path="/metrics")
            except (OSError, ValueError) as exc:
                log.error("metrics unavailable", address=address, error=str(exc))

    def close(self) -> None:
        for endpoint in (self._control, self._metrics):
            if endpoint is not None:
                try:
                    endpoint.close()
                except Exception:
                    log.exception("could not close an endpoint")
        self._control = self._metrics = None
