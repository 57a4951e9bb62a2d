"""Running `wattlm serve`: checks before anything loads, the listening socket, the model loaded while
/health says "loading", and a graceful stop — on SIGTERM (or Ctrl-C) new requests get 503, running
ones finish within `drain_s`, the ledger is flushed and the process exits 0. A second Ctrl-C stops
at once (what is still running is recorded as cancelled)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from ..errors import InvalidInputError, WattlmError
from ..fileio import check_writable
from ..listen import bind, require_key_off_loopback
from .app import create_app
from .config import DEFAULT_LEDGER, ServeConfig
from .load import load, plan
from .service import Service

log = logging.getLogger("wattlm.serve")


def check(config: ServeConfig) -> None:
    """Everything about `config` that can be checked without loading the model."""
    require_key_off_loopback(config.host, config.resolved_api_key(), "host", "clients")
    check_writable(config.ledger or DEFAULT_LEDGER, "ledger")


def run(config: ServeConfig, *, on_ready: Callable[[Service], None] = lambda s: None, meter: Any = None) -> int:
    """Serve until a signal; returns the exit code (0 after a graceful stop)."""

    check(config)
    what = plan(config)
    sock = bind(config.host, config.port)
    service = Service(config, meter=meter, ledger_path=config.ledger or DEFAULT_LEDGER)
    server = _Server(
        uvicorn.Config(
            create_app(service), log_level="warning", access_log=False, timeout_graceful_shutdown=5, lifespan="off"
        ),
        service,
        config.drain_s,
    )
    failure: list[BaseException] = []

    def start() -> None:
        try:
            service.start(load(config, what))
        except BaseException as e:  # a failed load ends the server; the CLI says why
            failure.append(e)
            service.fail(str(e))
            server.should_exit = True
            return
        on_ready(service)

    loader = threading.Thread(target=start, name="wattlm-load", daemon=True)
    loader.start()
    try:
        server.run(sockets=[sock])
    finally:
        loader.join()
        service.drain(0)
        service.close()
        sock.close()
    if failure:
        e = failure[0]
        if isinstance(e, WattlmError):
            raise e
        raise InvalidInputError(f"could not load the model: {e}") from e
    return 0


class _Server(uvicorn.Server):
    """uvicorn's Server with wattlm's stop: drain first, and no re-raised signal at the end (uvicorn
    re-raises it, which would make the exit status 'killed by SIGTERM' instead of 0)."""

    def __init__(self, config: uvicorn.Config, service: Service, drain_s: float) -> None:
        super().__init__(config)
        self.service, self.drain_s = service, drain_s
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:
            # A second Ctrl-C stops at once. A second SIGTERM does not: `timeout`, systemd and
            # `kill -- -PGID` deliver SIGTERM to the server and to its process group, so one stop
            # request often arrives twice; the drain stays bounded by drain_s.
            if sig == signal.SIGINT:
                threading.Thread(target=self.service.drain, args=(0,), daemon=True).start()
                self.should_exit = True
            return
        self._draining = True
        print("wattlm serve: stopping — finishing the requests in flight", file=sys.stderr)

        def drain() -> None:
            self.service.drain(self.drain_s)
            self.should_exit = True

        threading.Thread(target=drain, name="wattlm-drain", daemon=True).start()
